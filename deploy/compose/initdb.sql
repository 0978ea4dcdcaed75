-- docker-compose only: run once by the postgres image on an empty data volume
-- (/docker-entrypoint-initdb.d). To run it again: `docker compose down -v`.
--
-- One database per service (DESIGN section 2: no service reads another's tables), each owned by
-- a login role of the same name that can connect to its own database only. The services do not
-- connect as the superuser, so they run with the privileges they would have in production and
-- row-level security is not bypassed by superuser rights.
-- Dev-only passwords (the role's name); nothing here is published outside the compose network.

CREATE ROLE orders        LOGIN PASSWORD 'orders';
CREATE ROLE payments      LOGIN PASSWORD 'payments';
CREATE ROLE refunds       LOGIN PASSWORD 'refunds';
CREATE ROLE notifications LOGIN PASSWORD 'notifications';

CREATE DATABASE orders        OWNER orders;
CREATE DATABASE payments      OWNER payments;
CREATE DATABASE refunds       OWNER refunds;
CREATE DATABASE notifications OWNER notifications;

-- New databases let every role connect by default (PUBLIC has CONNECT): take it away, so each
-- service can reach its own database and no other.
REVOKE ALL ON DATABASE orders        FROM PUBLIC;
REVOKE ALL ON DATABASE payments      FROM PUBLIC;
REVOKE ALL ON DATABASE refunds       FROM PUBLIC;
REVOKE ALL ON DATABASE notifications FROM PUBLIC;
