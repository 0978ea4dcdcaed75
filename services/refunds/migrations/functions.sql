-- The refunds service's functions: the one definition of each, re-created on every migration run
-- before the numbered migrations (ticketing_shared.db.migrate), so a change is an edit here,
-- never a copy in a new migration. Change a function's arguments or result by dropping the old
-- signature first (DROP FUNCTION IF EXISTS ...), and drop one no longer used.

-- A buyer's request names an order, not a tenant: scope the transaction to the tenant of that
-- order (none when there is no such order), so that the order's own buyer can read its refunds.
-- Whether the caller may see them is the service's decision, made on the order it finds.
CREATE OR REPLACE FUNCTION scope_to_order(p_order uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    PERFORM set_config('app.tenant_id', '*', true);
    SELECT tenant_id INTO t FROM orders_view WHERE order_id = p_order;
    PERFORM set_config('app.tenant_id', coalesce(t, ''), true);
    RETURN t;
END
$$;
