# The commands the README names. Each installs what it needs on a fresh machine.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:/usr/sbin:$(PATH)
UV := uv run --frozen --quiet

.PHONY: up down status test fuzz chaos token lint bootstrap openapi

bootstrap:
	@scripts/bootstrap.sh

## Start the embedded stack in the background; returns once every part is healthy.
up: bootstrap
	@$(UV) python -m ticketing_local up

## Stop everything `make up` started, and nothing else.
down:
	@$(UV) python -m ticketing_local down

status:
	@$(UV) python -m ticketing_local status

## Run the test suite (starts its own PostgreSQL, broker and SMTP sink on free ports).
test: bootstrap
	@$(UV) pytest $(PYTEST_ARGS)

## Fuzz every operation of every API far longer than `make test` does (random, not repeatable):
## make fuzz EXAMPLES=1000
fuzz: bootstrap
	@FUZZ_EXAMPLES=$(or $(EXAMPLES),300) FUZZ_RANDOM=1 $(UV) pytest tests/security/test_api_fuzz.py $(PYTEST_ARGS)

## Load a fresh stack for DURATION seconds while killing every process, then check the
## invariants (not part of make test): make chaos DURATION=240
chaos: bootstrap
	@$(UV) python chaos/run.py --seconds $(or $(DURATION),150)

## Print a dev JWT: make token SUB=alice ROLES=t1:admin EMAIL=alice@example.test LOCALE=en
token: bootstrap
	@$(UV) python -m ticketing_local token --sub "$(or $(SUB),demo-user)" --roles "$(ROLES)" \
		--email "$(EMAIL)" --locale "$(or $(LOCALE),en)" $(if $(OPENID),--openid "$(OPENID)") \
		$(if $(filter 1 true yes,$(PLATFORM_ADMIN)),--platform-admin)

lint: bootstrap
	@$(UV) ruff check . && $(UV) ruff format --check . && $(UV) mypy && $(UV) lint-imports

## Regenerate the gateway's merged OpenAPI document (deploy/gateway/docs/openapi.json) from the
## services' code; a test fails while the committed one is stale.
openapi: bootstrap
	@$(UV) python -m ticketing_local.openapi
