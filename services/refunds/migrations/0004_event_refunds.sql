-- An event's refunds, for its organizer: its orders by event.
CREATE INDEX orders_view_event ON orders_view (event_id);

-- Row-level security reads the transaction's scope once per statement (tenant_policies_read_scope_once(), the shared functions.sql).
SELECT tenant_policies_read_scope_once();
