-- Orders service: catalog, inventory, orders, seats, registrations, invites, audit.

CREATE TABLE tenants (
    id                     text PRIMARY KEY,
    cancellation_policies  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE event_templates (
    id               uuid PRIMARY KEY,
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    title            text        NOT NULL,
    require_approval boolean     NOT NULL DEFAULT false,
    currency         char(3)     NOT NULL,
    ticket_types     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_templates_tenant ON event_templates (tenant_id);

CREATE TABLE events (
    id               uuid PRIMARY KEY,
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    template_id      uuid        REFERENCES event_templates (id),
    title            text        NOT NULL,
    starts_at        timestamptz NOT NULL,
    require_approval boolean     NOT NULL DEFAULT false,
    currency         char(3)     NOT NULL,
    status           text        NOT NULL DEFAULT 'published' CHECK (status IN ('draft', 'published', 'cancelled')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant ON events (tenant_id);

-- current_quantity is the inventory: only ever changed by one conditional UPDATE.
CREATE TABLE ticket_types (
    id                             uuid PRIMARY KEY,
    event_id                       uuid        NOT NULL REFERENCES events (id),
    tenant_id                      text        NOT NULL,
    name                           text        NOT NULL,
    max_quantity                   integer     NOT NULL CHECK (max_quantity >= 0),
    current_quantity               integer     NOT NULL DEFAULT 0,
    price_tiers                    jsonb       NOT NULL,
    organizer_registration         boolean     NOT NULL DEFAULT false,
    use_tenant_cancellation_policy boolean     NOT NULL DEFAULT true,
    cancellation_policy            jsonb,
    created_at                     timestamptz NOT NULL DEFAULT now(),
    updated_at                     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inventory_bounds CHECK (current_quantity >= 0 AND current_quantity <= max_quantity)
);
CREATE INDEX ticket_types_event ON ticket_types (event_id);

CREATE TABLE orders (
    id                  uuid PRIMARY KEY,
    tenant_id           text        NOT NULL,
    event_id            uuid        NOT NULL REFERENCES events (id),
    -- no foreign key to ticket_types on purpose: every purchase updates that one hot row, and the
    -- KEY SHARE lock a foreign-key check takes on it from each concurrent purchase turns into
    -- MultiXacts the UPDATE must wade through (measured: ~2x slower flash sales). Ticket types
    -- are never deleted, and orders are only written by purchase_seats() (functions.sql).
    ticket_type_id      uuid        NOT NULL,
    buyer_id            text        NOT NULL,
    buyer_email         text        NOT NULL DEFAULT '',
    buyer_locale        text        NOT NULL DEFAULT 'en',
    status              text        NOT NULL CHECK (status IN ('PENDING', 'PAID', 'REFUND_PENDING',
                                        'PARTIALLY_REFUNDED', 'REFUNDED', 'CANCELLED')),
    quantity            integer     NOT NULL CHECK (quantity >= 1),
    total_amount        bigint      NOT NULL CHECK (total_amount >= 0),
    refunded_amount     bigint      NOT NULL DEFAULT 0,
    currency            char(3)     NOT NULL,
    expires_at          timestamptz NOT NULL,
    paid_at             timestamptz,
    transaction_id      text,
    payment_id          uuid,
    payment_provider    text,
    payment_method      text,
    transaction_fee     bigint      NOT NULL DEFAULT 0,
    app_fee             bigint      NOT NULL DEFAULT 0,
    cancelled_at        timestamptz,
    cancellation_reason text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refund_bounds CHECK (refunded_amount >= 0 AND refunded_amount <= total_amount)
);
CREATE INDEX orders_buyer ON orders (buyer_id, event_id);
CREATE INDEX orders_expiry ON orders (expires_at) WHERE status = 'PENDING';
CREATE INDEX orders_event ON orders (event_id);

CREATE TABLE seats (
    id             uuid PRIMARY KEY,
    order_id       uuid        NOT NULL REFERENCES orders (id),
    tenant_id      text        NOT NULL,
    ticket_type_id uuid        NOT NULL,
    position       integer     NOT NULL,
    status         text        NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'VOID')),
    voided_at      timestamptz,
    UNIQUE (order_id, position)
);

CREATE TABLE registrations (
    id                        uuid PRIMARY KEY,
    tenant_id                 text        NOT NULL,
    event_id                  uuid        NOT NULL REFERENCES events (id),
    ticket_type_id            uuid        NOT NULL,  -- no FK: see orders.ticket_type_id
    order_id                  uuid        REFERENCES orders (id),
    seat_id                   uuid        REFERENCES seats (id),
    user_id                   text        NOT NULL,
    email                     text        NOT NULL DEFAULT '',
    locale                    text        NOT NULL DEFAULT 'en',
    status                    text        NOT NULL CHECK (status IN ('PENDING_PAYMENT', 'PENDING',
                                              'APPROVED', 'REJECTED', 'CANCELLED')),
    cancellation_policy       jsonb       NOT NULL,
    policy_source             text        NOT NULL CHECK (policy_source IN ('tenant', 'option')),
    cancellation_requested_at timestamptz,
    cancelled_at              timestamptz,
    cancellation_reason       text CHECK (cancellation_reason IN ('user', 'admin', 'organizer',
                                              'payment_abandoned', 'other')),
    cancellation_reason_note  text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registrations_event ON registrations (event_id, created_at);
CREATE INDEX registrations_order ON registrations (order_id);
CREATE INDEX registrations_user ON registrations (user_id);
-- a seat holds at most one live registration
CREATE UNIQUE INDEX registrations_one_per_seat ON registrations (seat_id)
    WHERE seat_id IS NOT NULL AND status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED');

CREATE TABLE invites (
    id              uuid PRIMARY KEY,
    order_id        uuid        NOT NULL REFERENCES orders (id),
    seat_id         uuid        NOT NULL REFERENCES seats (id),
    tenant_id       text        NOT NULL,
    token           text        NOT NULL UNIQUE,
    status          text        NOT NULL CHECK (status IN ('LOCKED', 'OPEN', 'REDEEMED', 'VOID')),
    registration_id uuid        REFERENCES registrations (id),
    redeemed_by     text,
    redeemed_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invites_order ON invites (order_id);

-- Every state change, written in the transaction of the change.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text        NOT NULL,
    order_id    uuid,
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    from_status text,
    to_status   text,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_log_order ON audit_log (order_id, id);

-- one live free registration per person and ticket type (a double click registers once)
CREATE UNIQUE INDEX registrations_one_free_per_user ON registrations (ticket_type_id, user_id)
    WHERE order_id IS NULL AND status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED');

-- settled refunds already applied to their order: a refund told twice (even under a new event
-- id) is applied once
CREATE TABLE applied_refunds (
    refund_id  uuid PRIMARY KEY,
    order_id   uuid        NOT NULL REFERENCES orders (id),
    amount     bigint      NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
