-- Refunds service: read model of orders, refunds and their seats, the audit trail.
-- Every table here is tenant-scoped and protected by row-level security keyed on app.tenant_id
-- (tenant_visible(), the shared functions.sql): a transaction that did not set it, or set another tenant, sees no row.

-- What refunds knows of each order, from orders.events (amounts, seats, buyer, paid or not).
CREATE TABLE orders_view (
    order_id      uuid PRIMARY KEY,
    tenant_id     text        NOT NULL,
    event_id      uuid        NOT NULL,
    buyer_id      text        NOT NULL,
    buyer_email   text        NOT NULL DEFAULT '',
    buyer_locale  text        NOT NULL DEFAULT 'en',
    event_title   text        NOT NULL DEFAULT '',
    quantity      integer     NOT NULL,
    total_amount  bigint      NOT NULL,
    currency      char(3)     NOT NULL,
    seat_ids      uuid[]      NOT NULL,            -- in seat order: seat i gets share i of the amount
    status        text        NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'PAID', 'CANCELLED')),
    paid_amount   bigint      NOT NULL DEFAULT 0,
    transaction_id text,
    paid_at       timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refunds (
    id                  uuid PRIMARY KEY,
    order_id            uuid        NOT NULL REFERENCES orders_view (order_id),
    tenant_id           text        NOT NULL,
    -- 'order': money of the order's payment (guarded against over-refund);
    -- 'rejected_payment': a payment the order never kept (late or duplicate), returned in full
    kind                text        NOT NULL DEFAULT 'order' CHECK (kind IN ('order', 'rejected_payment')),
    payment_id          uuid,
    status              text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'queued', 'processing', 'refunded', 'failed', 'canceled')),
    amount              bigint      NOT NULL CHECK (amount > 0),
    currency            char(3)     NOT NULL,
    reason              text        NOT NULL CHECK (reason IN ('organizer', 'admin', 'user', 'other')),
    note                text,
    internal_note       text,
    requested_by        text        NOT NULL,
    provider            text,
    provider_refund_id  text,
    failure_code        text,
    failure_message     text,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    refunded_at         timestamptz
);
CREATE INDEX refunds_order ON refunds (order_id, created_at);
-- a rejected payment is returned once, however often it is reported
CREATE UNIQUE INDEX refunds_rejected_payment ON refunds (payment_id) WHERE kind = 'rejected_payment';

-- The seats a refund voids, each with its share of the amount.
CREATE TABLE refund_items (
    refund_id uuid   NOT NULL REFERENCES refunds (id),
    seat_id   uuid   NOT NULL,
    tenant_id text   NOT NULL,
    amount    bigint NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (refund_id, seat_id)
);
CREATE INDEX refund_items_seat ON refund_items (seat_id);

-- Every state change of every refund: who, why, provider ids, amounts.
CREATE TABLE refund_audit (
    id          bigserial PRIMARY KEY,
    refund_id   uuid        NOT NULL REFERENCES refunds (id),
    order_id    uuid        NOT NULL,
    tenant_id   text        NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    from_status text,
    to_status   text,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_audit_refund ON refund_audit (refund_id, id);

ALTER TABLE orders_view ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders_view FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON orders_view
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE refunds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refunds
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE refund_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE refund_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refund_items
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE refund_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE refund_audit FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refund_audit
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
