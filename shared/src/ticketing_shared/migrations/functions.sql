-- The functions of the tables every service has: the one definition of each, re-created on every
-- migration run before the numbered migrations (ticketing_shared.db.migrate), so a change is an
-- edit here, never a copy in a new migration. Change a function's arguments or result by
-- dropping the old signature first (DROP FUNCTION IF EXISTS ...), and drop one no longer used.

-- Row-level security key of tenant-scoped tables (docs/security.md): the transaction-local setting
-- app.tenant_id, set by ticketing_shared.db.set_tenant() from the caller's verified roles or from
-- the event being applied. It holds one tenant id, several separated by commas (a person on the
-- staff of several tenants), or '*' (a platform admin, or a job that spans tenants by design).
-- Unset (or empty) means no tenant: such a query sees no rows and can write none.
-- Tables opt in with:
--   ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;
--   CREATE POLICY tenant_isolation ON t USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
-- FORCE makes the policies bind the table's owner, which is the role the service connects as.
CREATE OR REPLACE FUNCTION tenant_visible(tenant text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        current_setting('app.tenant_id', true) = '*'
        OR tenant = ANY (string_to_array(current_setting('app.tenant_id', true), ',')),
        false)
$$;

-- Row-level security that reads the transaction's scope once per statement, not once per row.
--
-- A policy USING (tenant_visible(tenant_id)) is inlined into each query as an expression that
-- calls current_setting() twice and splits a string for every row it filters: reading an
-- event's 100,000 registrations spent most of its time there. Written with scalar sub-selects,
-- the same test becomes two InitPlans, evaluated once per statement, and a per-row array
-- membership check. (Putting the sub-selects inside tenant_visible() would not do: a SQL
-- function holding them is no longer inlined, and is then called for every row.)
--
-- tenant_policies_read_scope_once() rewrites the USING clause of every tenant_isolation policy
-- of the current schema that is plain tenant_visible(<column>); each service's migrations call
-- it once their policies exist. WITH CHECK (what a write may claim) stays as it is.
CREATE OR REPLACE FUNCTION tenant_policies_read_scope_once() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    p record;
    col text;
    changed integer := 0;
BEGIN
    FOR p IN SELECT tablename, policyname, qual FROM pg_policies
             WHERE schemaname = current_schema() AND policyname = 'tenant_isolation'
    LOOP
        col := substring(p.qual FROM '^tenant_visible\((\w+)\)$');
        CONTINUE WHEN col IS NULL;
        EXECUTE format(
            'ALTER POLICY %I ON %I USING (coalesce('
            '(SELECT current_setting(''app.tenant_id'', true)) = ''*'' OR '
            '%I = ANY ((SELECT string_to_array(current_setting(''app.tenant_id'', true), '',''))::text[]),'
            ' false))',
            p.policyname, p.tablename, col);
        changed := changed + 1;
    END LOOP;
    RETURN changed;
END
$$;

-- The relay's wake-up, for the services whose every outbox write may NOTIFY (all but orders).
-- A service opts in with a statement-level trigger on its outbox:
--   CREATE TRIGGER outbox_wake AFTER INSERT ON outbox REFERENCING NEW TABLE AS added
--       FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();
-- Its relay LISTENs on the channel and, seeing the trigger, polls only as a safety net. NOTIFY
-- serializes the commits of the transactions that send it (one lock for the whole cluster), so
-- the orders service, whose purchases commit hundreds of times a second on one hot row, keeps
-- polling instead (docs/reliability.md, docs/architecture.md).
CREATE OR REPLACE FUNCTION outbox_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added) THEN
        PERFORM pg_notify('outbox_wake', '');
    END IF;
    RETURN NULL;
END
$$;

-- The relay refreshes the outbox's statistics as it churns (see ticketing_shared.outbox), but
-- ANALYZE is for the table's owner only, and services run as a role that owns nothing. This
-- function runs it with its owner's rights, and only the runtime role may call it (grants.sql).
CREATE OR REPLACE FUNCTION outbox_analyze() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    ANALYZE public.outbox;
END
$$;
REVOKE EXECUTE ON FUNCTION outbox_analyze() FROM PUBLIC;

-- Each outbox row's tenant, from its event (0005_tenant_rows.sql).
CREATE OR REPLACE FUNCTION outbox_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tenant_id := NEW.data ->> 'tenant_id';
    RETURN NEW;
END
$$;

-- A request's earlier response, whatever the transaction's scope: the key's scope names the
-- caller (ticketing_shared.idempotency), so this reads nothing but that caller's own key. A
-- replay may come before the request's tenant is known (a purchase refused before its ticket
-- type is found). The transaction's scope is left as it was.
CREATE OR REPLACE FUNCTION idempotency_lookup(p_scope text, p_key text)
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
