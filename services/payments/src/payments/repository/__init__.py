"""All SQL of the payments service, by subject; callers use it as ``repo.<function>``."""

from .orders import (
    get_order,
    insert_orders,
    order_paid,
    scope_to_order,
    set_order_status,
)
from .payments import (
    current_attempt,
    due_for_reconcile,
    get_payment,
    insert_payment,
    list_payments,
    lock_payment,
    mark_paid,
    open_payments,
    record_notification,
    update_payment,
)
from .refunds import (
    get_refund,
    insert_refund,
    move_refund,
    open_refunds,
    refundable_payment,
)
from .tasks import (
    add_task,
    cancel_task,
    claim_tasks,
    finish_task,
)

__all__ = [
    "add_task",
    "cancel_task",
    "claim_tasks",
    "current_attempt",
    "due_for_reconcile",
    "finish_task",
    "get_order",
    "get_payment",
    "get_refund",
    "insert_orders",
    "insert_payment",
    "insert_refund",
    "list_payments",
    "lock_payment",
    "mark_paid",
    "move_refund",
    "open_payments",
    "open_refunds",
    "order_paid",
    "record_notification",
    "refundable_payment",
    "scope_to_order",
    "set_order_status",
    "update_payment",
]
