-- Row-level security on every payments table, keyed like every tenant table (the shared
-- tenant_visible()). Which scope each path runs under:
--   * a buyer's or staff's request on an order: that order's tenant, found by scope_to_order() (functions.sql);
--   * consumers: the tenants of the events they apply (their inbox claim scopes the transaction);
--   * provider callbacks (WeChat Pay notifications, Mollie webhooks) and the worker's jobs
--     (provider tasks, reconciliation): all tenants, on connections kept for that
--     (ticketing_shared.db.create_pool(all_tenants=True)): they find their rows by a provider's
--     reference, and the row names its tenant.
-- Every table gets the tenant of the order it belongs to (backfilled below).

ALTER TABLE payments ADD COLUMN tenant_id text;
UPDATE payments p SET tenant_id = o.tenant_id FROM orders_view o WHERE o.order_id = p.order_id;
ALTER TABLE payments ALTER COLUMN tenant_id SET NOT NULL;

-- a notification about nothing of ours (a foreign merchant, an unknown reference) has none
ALTER TABLE provider_notifications ADD COLUMN tenant_id text;
UPDATE provider_notifications n SET tenant_id = p.tenant_id FROM payments p
WHERE n.provider = p.provider AND n.reference IN (p.out_trade_no, p.provider_payment_id);
UPDATE provider_notifications n SET tenant_id = r.tenant_id FROM provider_refunds r
WHERE n.tenant_id IS NULL AND n.provider = r.provider AND n.reference = r.out_refund_no;

ALTER TABLE provider_tasks ADD COLUMN tenant_id text;
UPDATE provider_tasks t SET tenant_id = p.tenant_id FROM payments p
WHERE t.kind = 'close' AND t.provider = p.provider AND t.reference = p.out_trade_no;
UPDATE provider_tasks t SET tenant_id = r.tenant_id FROM provider_refunds r
WHERE t.kind <> 'close' AND t.provider = r.provider AND t.reference = r.out_refund_no;

ALTER TABLE orders_view ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders_view FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON orders_view
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON payments
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE provider_refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE provider_refunds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON provider_refunds
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE provider_notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE provider_notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON provider_notifications
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE provider_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE provider_tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON provider_tasks
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
