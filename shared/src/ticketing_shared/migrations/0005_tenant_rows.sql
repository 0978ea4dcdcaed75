-- Row-level security on the tables every service has: the outbox, the inbox, the idempotency
-- keys and the dead letters hold tenants' data too (events with buyers' e-mails, full
-- responses). Keyed like the services' own tables (tenant_visible(), functions.sql):
--   * outbox: the tenant its event names (every event's data carries tenant_id), set by a
--     trigger on insert, whoever writes the row (a plain column: adding it rewrites nothing, so
--     purchases are not held up while this runs; rows written before have none). The relay,
--     which publishes every tenant's events by design, reads under the all-tenants scope;
--   * inbox: the tenant of the event claimed (the consumer's claim scopes its transaction to the
--     tenants of its batch first);
--   * idempotency keys: the tenant of what the request created; by default the transaction's own
--     scope, which is one tenant wherever a key is written (the purchase statement scopes itself
--     to the ticket type's tenant). Rows from before this migration have none: only the
--     all-tenants scope sees them, and idempotency_lookup() (functions.sql), which reads one
--     caller's key;
--   * dead letters: the tenant of the message when it can be read (NULL when not: only the
--     all-tenants scope sees those).
ALTER TABLE outbox ADD COLUMN tenant_id text;
CREATE TRIGGER outbox_tenant BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_tenant();
ALTER TABLE inbox ADD COLUMN tenant_id text;
ALTER TABLE idempotency_keys
    ADD COLUMN tenant_id text DEFAULT nullif(current_setting('app.tenant_id', true), '');
ALTER TABLE dead_letters ADD COLUMN tenant_id text;

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE inbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inbox
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_letters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON dead_letters
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
