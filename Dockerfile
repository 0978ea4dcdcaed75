# syntax=docker/dockerfile:1.7
#
# The ticketing platform's images, built from the repository root:
#
#     docker build -t ticketing .                   production: the four services, nothing else
#     docker build --target dev -t ticketing:dev .  + the local stack's tools (docker-compose)
#
# The production image holds the uv workspace's shipped members (the shared package and the four
# services) in one virtual environment; the container's command picks the service and the role:
#
#     python -m orders api | worker | migrate | outbox replay --since 15m
#
# (deploy/k8s/ sets that command). The `dev` target adds the dev-only `ticketing-local` package
# (the dev key generator, the provider sandboxes, the mail sink, the embedded broker's wheel),
# which docker-compose.yml runs beside the services. Without a command either prints a short help.

ARG PYTHON_IMAGE=python:3.13-slim
# Pinned: uv.lock is read with --frozen, so the builder's uv must understand the lock's format.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------------------------
# build: resolve nothing, install exactly what uv.lock says into /app/.venv
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

COPY --from=uv /uv /uvx /usr/local/bin/

# - the venv lives where the runtime stage expects it, built with the image's own interpreter;
# - dependencies are byte-compiled once here (the runtime user cannot write __pycache__);
# - copy, not hard-link, out of the cache mount (it is a different file system);
# - no dependency group (`dev`, `local`): the shipped members and their dependencies only.
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_DEFAULT_GROUPS=1

WORKDIR /app

# Layer 1, third-party dependencies only. It depends on nothing but the lock and the members'
# pyproject.toml files (uv reads every member's, installed or not), so it is rebuilt only when
# dependencies change, not on every code edit.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/orders/pyproject.toml services/orders/pyproject.toml
COPY services/payments/pyproject.toml services/payments/pyproject.toml
COPY services/refunds/pyproject.toml services/refunds/pyproject.toml
COPY services/notifications/pyproject.toml services/notifications/pyproject.toml
COPY deploy/local/pyproject.toml deploy/local/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-install-workspace

# Layer 2, the shipped members themselves. They stay installed in place (editable, uv's default)
# rather than as wheels because the services find their SQL migrations next to their source tree
# (services/<svc>/migrations, outside the package), so the image keeps the /app tree as it is in
# the repository.
COPY shared/ shared/
COPY services/ services/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen \
 && python -m compileall -q shared/src services

# ---------------------------------------------------------------------------------------------
# build-dev: the same venv plus the dev-only local stack (group `local`)
# ---------------------------------------------------------------------------------------------
FROM build AS build-dev
COPY deploy/local/ deploy/local/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --group local \
 && python -m compileall -q deploy/local/src

# ---------------------------------------------------------------------------------------------
# base: the interpreter and an unprivileged user; no uv, no build tools
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it and volumes can be shared.
# /keys and /secrets/* are created here, owned by that user: a fresh named volume mounted on one
# (docker-compose's `keys`, per-service, per-migrate-job, `kafka-secrets` and `postgres-secrets`
# volumes) takes this ownership, so the one-shot key generator can write into it.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
 && mkdir -p /keys /secrets/orders /secrets/payments /secrets/refunds /secrets/notifications \
        /secrets/orders-migrate /secrets/payments-migrate /secrets/refunds-migrate \
        /secrets/notifications-migrate /secrets/kafka /secrets/postgres \
 && chown -R app:app /keys /secrets

ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# ---------------------------------------------------------------------------------------------
# dev: what docker-compose.yml runs (the services and the local stack's tools)
# ---------------------------------------------------------------------------------------------
FROM base AS dev

# Owned by root and read-only to the app user: the code cannot modify itself.
COPY --from=build-dev /app /app

# APIs 8001-8004, workers 8011-8014, sandboxes 8101 (WeChat Pay) and 8102 (Mollie),
# mail sink HTTP 8103 and SMTP 1025. Documentation only; nothing is published by default.
EXPOSE 8001 8002 8003 8004 8011 8012 8013 8014 8101 8102 8103 1025

CMD ["python", "-c", "print('''ticketing (dev): the services as in production, and the local stack's tools:\n\n  python -m ticketing_local.keys --out /keys\n  python -m ticketing_local.compose_secrets --keys /keys --out /secrets\n  python -m ticketing_local.mailsink --host 0.0.0.0 --smtp-port 1025 --http-port 8103\n  python -m ticketing_local.sandbox.wechat | ticketing_local.sandbox.mollie''')"]

# ---------------------------------------------------------------------------------------------
# runtime (the default target): the four services, nothing else
# ---------------------------------------------------------------------------------------------
FROM base AS runtime

# Owned by root and read-only to the app user: the code cannot modify itself.
COPY --from=build /app /app

# APIs 8001-8004, workers 8011-8014. Documentation only; nothing is published by default.
EXPOSE 8001 8002 8003 8004 8011 8012 8013 8014

CMD ["python", "-c", "print('''ticketing: choose what to run with the container command, e.g.\n\n  python -m orders api            HTTP API            (orders 8001, payments 8002, refunds 8003, notifications 8004)\n  python -m orders worker         consumers, outbox relay, schedulers (8011-8014)\n  python -m orders migrate        apply pending migrations (safe to run concurrently)\n  python -m orders outbox replay --since 15m\n\n  services: orders, payments, refunds, notifications\n\nSettings come from environment variables (ORDERS_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, ...).''')"]
