-- What the refunds service's runtime role may do (see the shared grants.sql for how this file is
-- applied). Refund items and the refunds' audit trail are only ever appended to.
GRANT SELECT, INSERT, UPDATE ON orders_view, refunds TO ${runtime};
GRANT SELECT, INSERT ON refund_items, refund_audit TO ${runtime};
GRANT USAGE ON SEQUENCE refund_audit_id_seq TO ${runtime};
