-- Row-level security reads the transaction's scope once per statement (tenant_policies_read_scope_once(), the shared functions.sql).
SELECT tenant_policies_read_scope_once();
