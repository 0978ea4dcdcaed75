-- The relay refreshes the outbox's statistics as it churns (see ticketing_shared.outbox), but
-- ANALYZE is for the table's owner only, and services run as a role that owns nothing. This
-- function runs it with its owner's rights, and only the runtime role may call it (grants.sql).
CREATE FUNCTION outbox_analyze() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    ANALYZE public.outbox;
END
$$;
REVOKE EXECUTE ON FUNCTION outbox_analyze() FROM PUBLIC;
