-- The relay's wake-up, for the services whose every outbox write may NOTIFY (all but orders).
-- A service opts in with a statement-level trigger on its outbox:
--   CREATE TRIGGER outbox_wake AFTER INSERT ON outbox REFERENCING NEW TABLE AS added
--       FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();
-- Its relay LISTENs on the channel and, seeing the trigger, polls only as a safety net. NOTIFY
-- serializes the commits of the transactions that send it (one lock for the whole cluster), so
-- the orders service, whose purchases commit hundreds of times a second on one hot row, keeps
-- polling instead (docs/reliability.md, docs/architecture.md).
CREATE FUNCTION outbox_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added) THEN
        PERFORM pg_notify('outbox_wake', '');
    END IF;
    RETURN NULL;
END
$$;
