-- Every outbox write of this service wakes its relay at commit (see the shared outbox_wake()):
-- they are few and none of them is on a hot row, so the relay need not poll.
CREATE TRIGGER outbox_wake AFTER INSERT ON outbox REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();
