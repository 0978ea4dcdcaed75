-- Refunds the provider accepted and has not settled yet: while an order has one, it shows
-- REFUND_PENDING; when the last one settles, fails or is canceled it returns to PAID,
-- PARTIALLY_REFUNDED or REFUNDED.
CREATE TABLE refunds_in_flight (
    refund_id uuid PRIMARY KEY,
    order_id  uuid        NOT NULL REFERENCES orders (id),
    tenant_id text        NOT NULL,
    status    text        NOT NULL,
    amount    bigint      NOT NULL,
    since     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_in_flight_order ON refunds_in_flight (order_id);
