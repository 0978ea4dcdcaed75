-- Row-level security on the tables every service has: the outbox, the inbox, the idempotency
-- keys and the dead letters hold tenants' data too (events with buyers' e-mails, full
-- responses). Keyed like the services' own tables (tenant_visible(), migration 0002):
--   * outbox: the tenant its event names (every event's data carries tenant_id), set by a
--     trigger on insert, whoever writes the row (a plain column: adding it rewrites nothing, so
--     purchases are not held up while this runs; rows written before have none). The relay,
--     which publishes every tenant's events by design, reads under the all-tenants scope;
--   * inbox: the tenant of the event claimed (the consumer's claim scopes its transaction to the
--     tenants of its batch first);
--   * idempotency keys: the tenant of what the request created; by default the transaction's own
--     scope, which is one tenant wherever a key is written (the purchase statement scopes itself
--     to the ticket type's tenant). Rows from before this migration have none: only the
--     all-tenants scope sees them, and idempotency_lookup() below, which reads one caller's key;
--   * dead letters: the tenant of the message when it can be read (NULL when not: only the
--     all-tenants scope sees those).
ALTER TABLE outbox ADD COLUMN tenant_id text;
CREATE FUNCTION outbox_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tenant_id := NEW.data ->> 'tenant_id';
    RETURN NEW;
END
$$;
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

-- A request's earlier response, whatever the transaction's scope: the key's scope names the
-- caller (ticketing_shared.idempotency), so this reads nothing but that caller's own key. A
-- replay may come before the request's tenant is known (a purchase refused before its ticket
-- type is found). The transaction's scope is left as it was.
CREATE FUNCTION idempotency_lookup(p_scope text, p_key text)
RETURNS TABLE (request_hash text, response_status integer, response_body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    previous text := coalesce(current_setting('app.tenant_id', true), '');
BEGIN
    PERFORM set_config('app.tenant_id', '*', true);
    RETURN QUERY
        SELECT k.request_hash, k.response_status, k.response_body
        FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
    PERFORM set_config('app.tenant_id', previous, true);
END
$$;
