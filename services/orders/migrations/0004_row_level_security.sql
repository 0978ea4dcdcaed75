-- Row-level security on the tenant-scoped tables (docs/security.md), keyed on the transaction-local
-- app.tenant_id (see the shared tenant_visible()). Every transaction of the service scopes itself:
--   * staff use cases: the tenants the caller holds a role in ('*' for a platform admin);
--   * use cases on one resource reachable by a buyer (an order, a registration, an invite):
--     the resource's own tenant, resolved by scope_to() (functions.sql);
--   * "my orders": the tenants the caller bought or registered in (scope_to_user());
--   * purchases: purchase_seats()/register_free_seat() scope themselves to the ticket type's tenant;
--   * consumers: the tenant the event names; the expiry job: all tenants ('*').
-- A query without a scope sees no row and can write none, whatever the application checked.
-- The published catalog stays readable by anyone (events not in draft, ticket types, tenants'
-- cancellation policies); writing it needs the tenant's scope.

-- settled refunds carry their tenant too (backfilled before the policies exist)
ALTER TABLE applied_refunds ADD COLUMN tenant_id text;
UPDATE applied_refunds a SET tenant_id = o.tenant_id FROM orders o WHERE o.id = a.order_id;
ALTER TABLE applied_refunds ALTER COLUMN tenant_id SET NOT NULL;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY catalog_read ON tenants FOR SELECT USING (true);
CREATE POLICY tenant_isolation ON tenants USING (tenant_visible(id)) WITH CHECK (tenant_visible(id));

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY catalog_read ON events FOR SELECT USING (status <> 'draft');
CREATE POLICY tenant_isolation ON events
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE ticket_types ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket_types FORCE ROW LEVEL SECURITY;
CREATE POLICY catalog_read ON ticket_types FOR SELECT USING (true);
CREATE POLICY tenant_isolation ON ticket_types
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE event_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_templates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON event_templates
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON orders
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE seats ENABLE ROW LEVEL SECURITY;
ALTER TABLE seats FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON seats
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE registrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE registrations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON registrations
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE invites ENABLE ROW LEVEL SECURITY;
ALTER TABLE invites FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invites
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE refunds_in_flight ENABLE ROW LEVEL SECURITY;
ALTER TABLE refunds_in_flight FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refunds_in_flight
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE applied_refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE applied_refunds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON applied_refunds
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
