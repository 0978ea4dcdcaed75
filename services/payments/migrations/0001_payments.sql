-- Payments service: read model of orders, payment attempts, provider notifications, fee ledger,
-- and provider tasks (calls to the provider that must happen, with retries, after a commit).

-- What payments knows of each order, from orders.events (never from a request).
CREATE TABLE orders_view (
    order_id      uuid PRIMARY KEY,
    tenant_id     text        NOT NULL,
    buyer_id      text        NOT NULL,
    buyer_email   text        NOT NULL DEFAULT '',
    buyer_locale  text        NOT NULL DEFAULT 'en',
    total_amount  bigint      NOT NULL,
    currency      char(3)     NOT NULL,
    expires_at    timestamptz NOT NULL,
    event_title   text        NOT NULL DEFAULT '',
    status        text        NOT NULL DEFAULT 'PENDING',
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    id                      uuid PRIMARY KEY,
    order_id                uuid        NOT NULL REFERENCES orders_view (order_id),
    provider                text        NOT NULL CHECK (provider IN ('wechatpay', 'mollie')),
    payment_method          text        NOT NULL,
    out_trade_no            text        NOT NULL,
    status                  text        NOT NULL DEFAULT 'CREATED'
                            CHECK (status IN ('CREATED', 'SUCCEEDED', 'CLOSED', 'FAILED', 'REJECTED')),
    amount                  bigint      NOT NULL,
    currency                char(3)     NOT NULL,
    code_url                text,
    prepay_id               text,
    checkout_url            text,
    provider_payment_id     text,
    transaction_id          text,
    paid_at                 timestamptz,
    transaction_fee         bigint      NOT NULL DEFAULT 0,
    app_fee                 bigint      NOT NULL DEFAULT 0,
    failure_reason          text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, out_trade_no)
);
CREATE INDEX payments_order ON payments (order_id);

-- Every verified provider notification, once per provider notification id.
CREATE TABLE provider_notifications (
    provider        text        NOT NULL,
    notification_id text        NOT NULL,
    event_type      text        NOT NULL,
    reference       text        NOT NULL,
    payload         jsonb       NOT NULL,
    outcome         text        NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, notification_id)
);

-- Calls to a provider decided in a transaction and made after it (close an order, execute a
-- refund), claimed by workers with SKIP LOCKED and retried with backoff.
CREATE TABLE provider_tasks (
    id              uuid PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('close', 'refund')),
    provider        text        NOT NULL,
    reference       text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status          text        NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DONE', 'FAILED')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    UNIQUE (kind, provider, reference)
);
CREATE INDEX provider_tasks_due ON provider_tasks (next_attempt_at) WHERE status = 'PENDING';
