#!/usr/bin/env bash
# The broker's start in docker-compose: the admin password (generated at run time into the
# kafka-secrets volume) goes into a JAAS file, then the image's own start script runs.
#
# The admin authenticates with SASL/PLAIN on the INTERNAL and CONTROLLER listeners (the broker
# to itself, the setup job, the health check): PLAIN's users are the JAAS file's `user_*`
# entries, so the admin exists before the first start. The services use SCRAM-SHA-512 on the
# CLIENT listener; their users are created by the setup job (deploy/compose/kafka-setup.sh).
# The JAAS file, not a property: the image drops environment values that contain "=".
set -euo pipefail

secrets=${KAFKA_SECRETS_DIR:-/run/kafka-secrets}
admin_password=$(cat "$secrets/admin-password")
jaas=/tmp/kafka-server-jaas.conf

umask 077
cat > "$jaas" <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
    username="admin" password="$admin_password" user_admin="$admin_password";
  org.apache.kafka.common.security.scram.ScramLoginModule required;
};
JAAS
# for the health check (and `docker compose exec kafka` by hand): the admin on INTERNAL
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_password";
PROPS

export KAFKA_OPTS="${KAFKA_OPTS:+$KAFKA_OPTS }-Djava.security.auth.login.config=$jaas"
exec /etc/kafka/docker/run
