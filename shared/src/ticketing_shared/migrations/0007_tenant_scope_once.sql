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
CREATE FUNCTION tenant_policies_read_scope_once() RETURNS integer LANGUAGE plpgsql AS $$
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
