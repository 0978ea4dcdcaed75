#!/usr/bin/env bash
# docker-compose only: run once by the postgres image on an empty data volume
# (/docker-entrypoint-initdb.d), as the superuser over the temporary server's Unix socket. To run
# it again: `docker compose down -v` (which forgets all data; the keys job then makes new
# passwords).
#
# One database per service (DESIGN section 2: no service reads another's tables), and two login
# roles, neither a superuser nor able to bypass row-level security, create databases or roles:
#   <service>_owner  owns the database, and so the tables its migrations create; only the
#                    <service>-migrate job connects as it
#   <service>        what the service's API and worker connect as: it owns nothing and may do
#                    what the migrations' grants.sql files grant it (the services refuse to start
#                    as a role that owns the database or its tables, so the row-level security
#                    policies bind them)
# No other role may connect to the database (PUBLIC loses CONNECT).
#
# The passwords were made at run time by the `keys` job (ticketing_local.compose_secrets) into
# the postgres-secrets volume, mounted only here and in that job: one file per role, roles/<role>.
# They reach psql through its environment (\getenv), not its command line.
#
# The reference for a deployment's database administrator too (deploy/k8s/README.md): the same
# statements create the roles on a managed PostgreSQL.
set -euo pipefail

secrets=${POSTGRES_SECRETS_DIR:-/run/postgres-secrets}

password() {
    local file=$secrets/roles/$1
    if [[ ! -s $file ]]; then
        echo "initdb: no password for role $1 in $file" >&2
        exit 1
    fi
    cat "$file"
}

for service in orders payments refunds notifications; do
    owner=${service}_owner
    owner_password=$(password "$owner")
    runtime_password=$(password "$service")
    OWNER_PASSWORD=$owner_password RUNTIME_PASSWORD=$runtime_password \
        psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -v database="$service" -v owner="$owner" -v runtime="$service" <<'SQL'
\getenv owner_password OWNER_PASSWORD
\getenv runtime_password RUNTIME_PASSWORD
CREATE ROLE :"owner" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
    PASSWORD :'owner_password';
CREATE ROLE :"runtime" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
    PASSWORD :'runtime_password';
CREATE DATABASE :"database" OWNER :"owner";
-- new databases let every role connect (PUBLIC has CONNECT): only these two may
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"runtime";
SQL
done

echo "initdb: databases orders, payments, refunds, notifications with their owner and runtime roles"
