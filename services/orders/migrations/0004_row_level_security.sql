-- Row-level security on the tenant-scoped tables (docs/security.md), keyed on the transaction-local
-- app.tenant_id (see the shared tenant_visible()). Every transaction of the service scopes itself:
--   * staff use cases: the tenants the caller holds a role in ('*' for a platform admin);
--   * use cases on one resource reachable by a buyer (an order, a registration, an invite):
--     the resource's own tenant, resolved by scope_to() below;
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

-- Scope the current transaction to the tenant of one resource, named by kind and id; returns that
-- tenant (NULL, and a scope that sees nothing, when there is no such resource). Only this lookup
-- runs unscoped; everything after it in the transaction sees that one tenant's rows.
CREATE FUNCTION scope_to(p_kind text, p_id text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    PERFORM set_config('app.tenant_id', '*', true);
    CASE p_kind
        WHEN 'order' THEN SELECT tenant_id INTO t FROM orders WHERE id = p_id::uuid;
        WHEN 'registration' THEN SELECT tenant_id INTO t FROM registrations WHERE id = p_id::uuid;
        WHEN 'invite' THEN SELECT tenant_id INTO t FROM invites WHERE token = p_id;
        ELSE RAISE EXCEPTION 'unknown resource kind %', p_kind;
    END CASE;
    PERFORM set_config('app.tenant_id', coalesce(t, ''), true);
    RETURN t;
END
$$;

-- Scope the current transaction to the tenants a person bought or registered in.
CREATE FUNCTION scope_to_user(p_user text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    PERFORM set_config('app.tenant_id', '*', true);
    SELECT string_agg(DISTINCT x.tenant_id, ',') INTO t
    FROM (SELECT tenant_id FROM orders WHERE buyer_id = p_user
          UNION SELECT tenant_id FROM registrations WHERE user_id = p_user) AS x;
    PERFORM set_config('app.tenant_id', coalesce(t, ''), true);
    RETURN t;
END
$$;

-- The purchases scope themselves: each is one self-committing statement.
CREATE OR REPLACE FUNCTION purchase_seats(
    p_order_id uuid, p_tenant text, p_event uuid, p_tt uuid, p_quantity integer, p_buyer text,
    p_email text, p_locale text, p_total bigint, p_currency text, p_expires timestamptz,
    p_created timestamptz, p_seat_ids uuid[], p_reg_id uuid, p_policy jsonb, p_policy_source text,
    p_invite_ids uuid[], p_invite_seats uuid[], p_tokens text[],
    p_ob_event_id uuid, p_ob_topic text, p_ob_key text, p_ob_type text, p_ob_source text,
    p_ob_subject text, p_ob_time timestamptz, p_ob_schema text, p_ob_traceparent text, p_ob_data jsonb,
    p_actor text, p_au_entity text[], p_au_entity_id text[], p_au_action text[], p_au_to text[],
    p_au_details jsonb[],
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer, p_idem_body jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    INSERT INTO orders (id, tenant_id, event_id, ticket_type_id, buyer_id, buyer_email, buyer_locale,
                        status, quantity, total_amount, currency, expires_at, created_at, updated_at)
    VALUES (p_order_id, p_tenant, p_event, p_tt, p_buyer, p_email, p_locale, 'PENDING', p_quantity,
            p_total, p_currency, p_expires, p_created, p_created);
    INSERT INTO seats (id, order_id, tenant_id, ticket_type_id, position)
    SELECT x.sid, p_order_id, p_tenant, p_tt, x.pos
    FROM unnest(p_seat_ids) WITH ORDINALITY AS x(sid, pos);
    INSERT INTO registrations (id, tenant_id, event_id, ticket_type_id, order_id, seat_id, user_id, email,
                               locale, status, cancellation_policy, policy_source, created_at, updated_at)
    VALUES (p_reg_id, p_tenant, p_event, p_tt, p_order_id, p_seat_ids[1], p_buyer, p_email, p_locale,
            'PENDING_PAYMENT', p_policy, p_policy_source, p_created, p_created);
    INSERT INTO invites (id, order_id, seat_id, tenant_id, token, status, created_at, updated_at)
    SELECT x.iid, p_order_id, x.sid, p_tenant, x.tok, 'LOCKED', p_created, p_created
    FROM unnest(p_invite_ids, p_invite_seats, p_tokens) AS x(iid, sid, tok);
    INSERT INTO outbox (event_id, topic, key, ce_type, ce_source, ce_subject, ce_time, dataschema,
                        traceparent, data)
    VALUES (p_ob_event_id, p_ob_topic, p_ob_key, p_ob_type, p_ob_source, p_ob_subject, p_ob_time,
            p_ob_schema, p_ob_traceparent, p_ob_data);
    INSERT INTO audit_log (tenant_id, order_id, entity, entity_id, actor, action, to_status, details)
    SELECT p_tenant, p_order_id, x.entity, x.entity_id, p_actor, x.action, x.to_status, x.details
    FROM unnest(p_au_entity, p_au_entity_id, p_au_action, p_au_to, p_au_details)
         AS x(entity, entity_id, action, to_status, details);
    IF p_idem_scope IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body)
        VALUES (p_idem_scope, p_idem_key, p_idem_hash, p_idem_status, p_idem_body);
    END IF;
    -- last: the hot row, locked from here to the commit that ends this statement
    UPDATE ticket_types SET current_quantity = current_quantity + p_quantity, updated_at = now()
    WHERE id = p_tt AND current_quantity + p_quantity <= max_quantity;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not enough seats left' USING ERRCODE = 'TK001';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION register_free_seat(
    p_reg_id uuid, p_tenant text, p_event uuid, p_tt uuid, p_user text, p_email text, p_locale text,
    p_status text, p_policy jsonb, p_policy_source text, p_created timestamptz,
    p_actor text, p_au_entity text[], p_au_entity_id text[], p_au_action text[], p_au_to text[],
    p_au_details jsonb[],
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer, p_idem_body jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    INSERT INTO registrations (id, tenant_id, event_id, ticket_type_id, user_id, email, locale, status,
                               cancellation_policy, policy_source, created_at, updated_at)
    VALUES (p_reg_id, p_tenant, p_event, p_tt, p_user, p_email, p_locale, p_status, p_policy,
            p_policy_source, p_created, p_created);
    INSERT INTO audit_log (tenant_id, order_id, entity, entity_id, actor, action, to_status, details)
    SELECT p_tenant, NULL, x.entity, x.entity_id, p_actor, x.action, x.to_status, x.details
    FROM unnest(p_au_entity, p_au_entity_id, p_au_action, p_au_to, p_au_details)
         AS x(entity, entity_id, action, to_status, details);
    IF p_idem_scope IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body)
        VALUES (p_idem_scope, p_idem_key, p_idem_hash, p_idem_status, p_idem_body);
    END IF;
    UPDATE ticket_types SET current_quantity = current_quantity + 1, updated_at = now()
    WHERE id = p_tt AND current_quantity + 1 <= max_quantity;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no seats left' USING ERRCODE = 'TK001';
    END IF;
END
$$;
