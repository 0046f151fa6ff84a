# Two stages: wheels are built with the full toolchain, the runtime image only installs them.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md ./
COPY participation_grpc ./participation_grpc
# The SQL sits beside the package in the repository; the wheel installs it as participation_grpc.sql.
COPY sql ./sql
# The project's wheel and a wheel of every dependency of the server (the [server] extra, no dev).
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels '.[server]'

FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRPC_PORT=50051
COPY --from=build /wheels /tmp/wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels 'participation-grpc[server]' \
 && rm -rf /tmp/wheels \
 && groupadd --system --gid 10001 participation \
 && useradd --system --uid 10001 --gid participation --no-create-home --shell /usr/sbin/nologin participation
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 50051
# grpc.health.v1 on the service's own port: NOT_SERVING while the database is unreachable.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD \
    python -c "import os, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; \
s = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + os.environ.get('GRPC_PORT', '50051'))); \
raise SystemExit(s.Check(h.HealthCheckRequest(), timeout=2).status != h.HealthCheckResponse.SERVING)"
# Exec form: the service is PID 1 and receives SIGTERM itself (drains, then exits 0).
CMD ["participation-grpc", "serve"]
