# syntax=docker/dockerfile:1.7
#
# One image for the whole ticketing platform, built from the repository root:
#
#     docker build -t ticketing .
#
# It holds the uv workspace (shared package, the four services, the local-stack tools) in one
# virtual environment; the container's command picks the service and the role, e.g.
#
#     python -m orders api | worker | migrate | outbox replay --since 15m
#
# (docker-compose.yml and deploy/k8s/ set that command). Without one it prints a short help.

ARG PYTHON_IMAGE=python:3.11-slim
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
# - copy, not hard-link, out of the cache mount (it is a different file system).
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /app

# Layer 1, third-party dependencies only. It depends on nothing but the lock and the members'
# pyproject.toml files, so it is rebuilt only when dependencies change, not on every code edit.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/orders/pyproject.toml services/orders/pyproject.toml
COPY services/payments/pyproject.toml services/payments/pyproject.toml
COPY services/refunds/pyproject.toml services/refunds/pyproject.toml
COPY services/notifications/pyproject.toml services/notifications/pyproject.toml
COPY deploy/local/pyproject.toml deploy/local/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# Layer 2, the workspace members themselves. They stay installed in place (editable, uv's
# default) rather than as wheels because the services find their SQL migrations next to their
# source tree (services/<svc>/migrations, outside the package), so the runtime image keeps the
# /app tree as it is in the repository.
COPY shared/ shared/
COPY services/ services/
COPY deploy/local/ deploy/local/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
 && python -m compileall -q shared/src services deploy/local/src

# ---------------------------------------------------------------------------------------------
# runtime: the interpreter, the venv and the sources; no uv, no build tools, not root
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

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

# Owned by root and read-only to the app user: the code cannot modify itself.
COPY --from=build /app /app

ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# APIs 8001-8004, workers 8011-8014, sandboxes 8101 (WeChat Pay) and 8102 (Mollie),
# mail sink HTTP 8103 and SMTP 1025. Documentation only; nothing is published by default.
EXPOSE 8001 8002 8003 8004 8011 8012 8013 8014 8101 8102 8103 1025

CMD ["python", "-c", "print('''ticketing: choose what to run with the container command, e.g.\n\n  python -m orders api            HTTP API            (orders 8001, payments 8002, refunds 8003, notifications 8004)\n  python -m orders worker         consumers, outbox relay, schedulers (8011-8014)\n  python -m orders migrate        apply pending migrations (safe to run concurrently)\n  python -m orders outbox replay --since 15m\n\n  services: orders, payments, refunds, notifications\n  local-stack tools: python -m ticketing_local.keys --out /keys\n                     python -m ticketing_local.compose_secrets --keys /keys --out /secrets\n                     python -m ticketing_local.mailsink --host 0.0.0.0 --smtp-port 1025 --http-port 8103\n                     python -m ticketing_local.sandbox.wechat | ticketing_local.sandbox.mollie\n\nSettings come from environment variables (ORDERS_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, ...).''')"]
