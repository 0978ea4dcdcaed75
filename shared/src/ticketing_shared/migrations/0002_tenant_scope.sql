-- Row-level security key of tenant-scoped tables (docs/security.md): the transaction-local setting
-- app.tenant_id, set by ticketing_shared.db.set_tenant() from the caller's verified roles or from
-- the event being applied. It holds one tenant id, several separated by commas (a person on the
-- staff of several tenants), or '*' (a platform admin, or a job that spans tenants by design).
-- Unset (or empty) means no tenant: such a query sees no rows and can write none.
-- Tables opt in with:
--   ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;
--   CREATE POLICY tenant_isolation ON t USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
-- FORCE makes the policies bind the table's owner, which is the role the service connects as.
CREATE FUNCTION tenant_visible(tenant text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        current_setting('app.tenant_id', true) = '*'
        OR tenant = ANY (string_to_array(current_setting('app.tenant_id', true), ',')),
        false)
$$;
