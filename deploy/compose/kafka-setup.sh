#!/usr/bin/env bash
# docker-compose's `kafka-setup` job, once the broker is healthy: the topics, one SCRAM user per
# service (its password from the kafka-secrets volume, made at run time), and the ACLs. The
# broker refuses whatever no ACL allows (allow.everyone.if.no.acl.found=false), so each service
# may only:
#   - write its own events topic,
#   - read the topics it consumes, and write their .dlq twins (a consumer dead-letters a record
#     into the DLQ of the topic it read),
#   - use its own consumer group (the group id is the service's name).
# No service may create topics: the services' ensure_topics then logs that the operator (this
# job) provisions them. Idempotent: runs at every `docker compose up`.
set -euo pipefail

bin=${KAFKA_BIN:-/opt/kafka/bin}
secrets=${KAFKA_SECRETS_DIR:-/run/kafka-secrets}
bootstrap=${KAFKA_ADMIN_BOOTSTRAP:-kafka:9094}
partitions=${KAFKA_TOPIC_PARTITIONS:-6}

config=$(mktemp)
trap 'rm -f "$config"' EXIT
cat > "$config" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$(cat "$secrets/admin-password")";
PROPS

for topic in orders.events payments.events refunds.events; do
    for name in "$topic" "$topic.dlq"; do
        "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$config" \
            --create --if-not-exists --topic "$name" \
            --partitions "$partitions" --replication-factor 1
    done
done

acl() {
    "$bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --command-config "$config" --add "$@"
}

# grant SERVICE "TOPICS IT WRITES" "TOPICS IT CONSUMES"
grant() {
    local user=$1 writes=$2 reads=$3 topic
    "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --command-config "$config" \
        --alter --entity-type users --entity-name "$user" \
        --add-config "SCRAM-SHA-512=[iterations=8192,password=$(cat "$secrets/users/$user")]"
    for topic in $writes; do
        acl --allow-principal "User:$user" --operation Write --operation Describe --topic "$topic"
    done
    for topic in $reads; do
        acl --allow-principal "User:$user" --operation Read --operation Describe --topic "$topic"
        acl --allow-principal "User:$user" --operation Write --operation Describe \
            --topic "$topic.dlq"
    done
    acl --allow-principal "User:$user" --operation Read --group "$user"
}

#     service        writes             consumes (each service's consumers.py)
grant orders         "orders.events"    "payments.events refunds.events"
grant payments       "payments.events"  "orders.events refunds.events"
grant refunds        "refunds.events"   "orders.events payments.events"
grant notifications  ""                 "orders.events refunds.events"

echo "kafka-setup: topics, SCRAM users and ACLs in place"
