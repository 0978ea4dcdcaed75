-- Refund execution at the provider: one row per refund the refunds service asked for, keyed by
-- its id (which is also WeChat's out_refund_no, as 32 hex digits, and Mollie's Idempotency-Key).
CREATE TABLE provider_refunds (
    refund_id          uuid PRIMARY KEY,
    order_id           uuid        NOT NULL,
    tenant_id          text        NOT NULL,
    payment_id         uuid        NOT NULL REFERENCES payments (id),
    provider           text        NOT NULL,
    out_refund_no      text        NOT NULL,
    amount             bigint      NOT NULL CHECK (amount > 0),
    currency           char(3)     NOT NULL,
    note               text,
    status             text        NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'queued', 'processing', 'refunded', 'failed', 'canceled')),
    provider_refund_id text,
    failure_code       text,
    failure_message    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    settled_at         timestamptz,
    UNIQUE (provider, out_refund_no)
);
CREATE INDEX provider_refunds_payment ON provider_refunds (payment_id);

-- a refund withdrawn before it reached the provider
ALTER TABLE provider_tasks DROP CONSTRAINT provider_tasks_status_check;
ALTER TABLE provider_tasks ADD CONSTRAINT provider_tasks_status_check
    CHECK (status IN ('PENDING', 'DONE', 'FAILED', 'CANCELLED'));
