-- What organizers look for in their lists, and what keeps those lists fast at 100,000
-- registrations per event.
--
-- Registrations carry the registrant's display name (the token's ``name``), so that a list can
-- be searched by name as well as e-mail address. purchase_seats() and register_free_seat() take
-- it as a last parameter: these are new overloads, and the previous ones stay for API processes
-- of the release before (a rolling deploy) until a later migration drops them.
ALTER TABLE registrations ADD COLUMN name text NOT NULL DEFAULT '';

-- Cursor pages of an event's registrations, in (created_at, id) order, with or without a status
-- filter: an index seek to the page's start, never an offset scan. The first replaces the index
-- without the id.
CREATE INDEX registrations_event_page ON registrations (event_id, created_at, id);
DROP INDEX registrations_event;
CREATE INDEX registrations_event_status ON registrations (event_id, status, created_at, id);
-- "e-mail or name contains" has no index of its own: row-level security lets a query use an
-- index only through leakproof operators, and LIKE is not one, so a trigram index would never
-- be used; the search filters the event's rows (measured in bench/registration_lists.py).
-- Row-level security reads the transaction's scope once per statement (shared migration 0007).
SELECT tenant_policies_read_scope_once();

-- A cell of an exported CSV: text a spreadsheet would run as a formula (it starts with =, +, -,
-- @, TAB or CR) gets a leading apostrophe, as OWASP advises against CSV injection.
CREATE FUNCTION csv_cell(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN left(t, 1) IN ('=', '+', '-', '@', E'\t', E'\r') THEN '''' || t ELSE t END
$$;

-- A tenant's events by start, its templates by creation.
CREATE INDEX events_tenant_starts ON events (tenant_id, starts_at, id);
DROP INDEX events_tenant;
CREATE INDEX event_templates_tenant_created ON event_templates (tenant_id, created_at, id);
DROP INDEX event_templates_tenant;
-- A buyer's orders, newest first, in cursor pages.
CREATE INDEX orders_buyer_created ON orders (buyer_id, created_at DESC, id DESC);

-- An event's catalog history (the event, its ticket types, its tenant's policies): a partial
-- index, so the audit rows every purchase writes cost nothing more.
CREATE INDEX audit_log_catalog ON audit_log (tenant_id, entity, entity_id, id)
    WHERE entity IN ('event', 'ticket_type', 'tenant');

CREATE FUNCTION purchase_seats(
    p_order_id uuid, p_tenant text, p_event uuid, p_tt uuid, p_quantity integer, p_buyer text,
    p_email text, p_locale text, p_total bigint, p_currency text, p_expires timestamptz,
    p_created timestamptz, p_seat_ids uuid[], p_reg_id uuid, p_policy jsonb, p_policy_source text,
    p_invite_ids uuid[], p_invite_seats uuid[], p_tokens text[],
    p_ob_event_id uuid, p_ob_topic text, p_ob_key text, p_ob_type text, p_ob_source text,
    p_ob_subject text, p_ob_time timestamptz, p_ob_schema text, p_ob_traceparent text, p_ob_data jsonb,
    p_actor text, p_au_entity text[], p_au_entity_id text[], p_au_action text[], p_au_to text[],
    p_au_details jsonb[],
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer, p_idem_body jsonb,
    p_catalog_version bigint, p_name text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_unpaid_limit integer;
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
                               name, locale, status, cancellation_policy, policy_source, created_at,
                               updated_at)
    VALUES (p_reg_id, p_tenant, p_event, p_tt, p_order_id, p_seat_ids[1], p_buyer, p_email, p_name,
            p_locale, 'PENDING_PAYMENT', p_policy, p_policy_source, p_created, p_created);
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
    WHERE id = p_tt AND catalog_version = p_catalog_version
      AND current_quantity + p_quantity <= max_quantity
    RETURNING max_unpaid_per_buyer INTO v_unpaid_limit;
    IF NOT FOUND THEN
        PERFORM catalog_moved_or_sold_out(p_tt, p_catalog_version, 'not enough seats left');
    END IF;
    -- counted under the row lock just taken, on a snapshot taken after it: every other purchase
    -- of this ticket type (this buyer's included) has committed or waits, so two at once cannot
    -- both slip under the limit
    IF (SELECT sum(quantity) FROM orders
        WHERE ticket_type_id = p_tt AND buyer_id = p_buyer AND status = 'PENDING') > v_unpaid_limit
    THEN
        RAISE EXCEPTION 'at most % unpaid seats of this ticket type per buyer', v_unpaid_limit
            USING ERRCODE = 'TK003';
    END IF;
END
$$;

CREATE FUNCTION register_free_seat(
    p_reg_id uuid, p_tenant text, p_event uuid, p_tt uuid, p_user text, p_email text, p_locale text,
    p_status text, p_policy jsonb, p_policy_source text, p_created timestamptz,
    p_actor text, p_au_entity text[], p_au_entity_id text[], p_au_action text[], p_au_to text[],
    p_au_details jsonb[],
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer, p_idem_body jsonb,
    p_catalog_version bigint, p_name text
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    INSERT INTO registrations (id, tenant_id, event_id, ticket_type_id, user_id, email, name, locale,
                               status, cancellation_policy, policy_source, created_at, updated_at)
    VALUES (p_reg_id, p_tenant, p_event, p_tt, p_user, p_email, p_name, p_locale, p_status, p_policy,
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
    WHERE id = p_tt AND catalog_version = p_catalog_version AND current_quantity + 1 <= max_quantity;
    IF NOT FOUND THEN
        PERFORM catalog_moved_or_sold_out(p_tt, p_catalog_version, 'no seats left');
    END IF;
END
$$;
