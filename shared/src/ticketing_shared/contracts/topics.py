"""Topic names. Each has a ``.dlq`` twin for messages that exhausted their retries."""

ORDERS_EVENTS = "orders.events"
PAYMENTS_EVENTS = "payments.events"
REFUNDS_EVENTS = "refunds.events"

ALL_TOPICS = (ORDERS_EVENTS, PAYMENTS_EVENTS, REFUNDS_EVENTS)


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"
