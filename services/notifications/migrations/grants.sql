-- What the notifications service's runtime role may do (see the shared grants.sql for how this
-- file is applied).
GRANT SELECT, INSERT, UPDATE ON deliveries TO ${runtime};
