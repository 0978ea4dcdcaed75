-- E-mail deliveries: the notifications service's own outbox towards SMTP.
-- One row per (event, template, recipient): a redelivered event cannot send twice.
CREATE TABLE deliveries (
    id              uuid        PRIMARY KEY,
    event_id        uuid        NOT NULL,
    template        text        NOT NULL,
    recipient       text        NOT NULL,
    locale          text        NOT NULL,
    order_id        uuid,
    subject         text        NOT NULL,
    body_text       text        NOT NULL,
    body_html       text,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (event_id, template, recipient)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_order ON deliveries (order_id);
