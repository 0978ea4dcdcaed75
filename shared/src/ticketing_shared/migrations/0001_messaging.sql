-- Transactional outbox: written in the business transaction, published by the relay in id order.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    topic         text        NOT NULL,
    key           text        NOT NULL,
    ce_type       text        NOT NULL,
    ce_source     text        NOT NULL,
    ce_subject    text        NOT NULL,
    ce_time       timestamptz NOT NULL,
    dataschema    text        NOT NULL,
    traceparent   text,
    data          jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
)
-- a queue table: every row is updated once (published) and the relay polls its pending tail many
-- times a second, so dead versions must be vacuumed away continuously, not at 20 % of the table
WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000);
-- The relay's hot query reads only the unpublished tail.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_created_at ON outbox (created_at);

-- Idempotent consumers: one row per (consumer, event) in the same transaction as the effects.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    ce_type      text        NOT NULL,
    ce_subject   text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_subject ON inbox (consumer, ce_subject, seq);

-- Idempotency-Key replay for creating POSTs: same key + same body = the first response.
CREATE TABLE idempotency_keys (
    scope           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    text        NOT NULL,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Messages that exhausted their retries, as the consumer saw them (the DLQ topic has them too).
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer    text        NOT NULL,
    event_id    text,
    ce_type     text,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
