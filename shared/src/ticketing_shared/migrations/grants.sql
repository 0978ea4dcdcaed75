-- What a service's runtime role may do with the tables every service has. Applied by the owner
-- role after every migration run (ticketing_shared.db.migrate), after all of the role's
-- privileges were taken back, so these lines are the whole of them; ${runtime} is the role.
-- No DDL, no TRUNCATE, no ownership: row-level security binds the role and it cannot switch the
-- policies off. DELETE only where rows are pruned.
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO ${runtime};
GRANT SELECT, INSERT, DELETE ON inbox TO ${runtime};
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO ${runtime};
GRANT SELECT, INSERT ON dead_letters TO ${runtime};
GRANT EXECUTE ON FUNCTION outbox_analyze() TO ${runtime};
