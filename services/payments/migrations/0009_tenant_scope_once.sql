-- Row-level security reads the transaction's scope once per statement (shared migration 0007).
SELECT tenant_policies_read_scope_once();
