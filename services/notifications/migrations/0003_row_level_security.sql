-- Row-level security on the deliveries (recipients' addresses and the mails themselves), keyed
-- like every tenant table (the shared tenant_visible()). A delivery carries the tenant of the
-- event that queued it: the consumers write it in the transaction their inbox claim scoped to
-- that event's tenant; the sender, which works for every tenant, reads under the all-tenants
-- scope. Deliveries queued before this migration have none: only the all-tenants scope sees them.
ALTER TABLE deliveries ADD COLUMN tenant_id text;

ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deliveries
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
