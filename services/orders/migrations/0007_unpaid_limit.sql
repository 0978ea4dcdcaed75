-- Abuse limit: one buyer may hold at most max_unpaid_per_buyer unpaid seats of a ticket type
-- (default 10, set per ticket type). Beyond it the purchase fails with SQLSTATE TK003, checked
-- inside the purchase's own statement, so it costs no round trip and two purchases at once
-- cannot both pass it: they take the ticket type's row lock in turn.
ALTER TABLE ticket_types ADD COLUMN max_unpaid_per_buyer integer NOT NULL DEFAULT 10
    CHECK (max_unpaid_per_buyer BETWEEN 1 AND 10000);
-- one order of a ticket type's largest tier must always be possible (orders.domain.unpaid_limit)
UPDATE ticket_types SET max_unpaid_per_buyer = GREATEST(10, (
    SELECT max((t ->> 'quantity')::int) FROM jsonb_array_elements(price_tiers) AS t))
WHERE jsonb_typeof(price_tiers) = 'array' AND jsonb_array_length(price_tiers) > 0;

-- The overloads migration 0005 kept for API processes of the release before it are gone: no
-- process of that release is left, and a purchase must never skip this limit.
DROP FUNCTION purchase_seats(uuid, text, uuid, uuid, integer, text, text, text, bigint, text,
    timestamptz, timestamptz, uuid[], uuid, jsonb, text, uuid[], uuid[], text[], uuid, text, text,
    text, text, text, timestamptz, text, text, jsonb, text, text[], text[], text[], text[],
    jsonb[], text, text, text, integer, jsonb);
DROP FUNCTION register_free_seat(uuid, text, uuid, uuid, text, text, text, text, jsonb, text,
    timestamptz, text, text[], text[], text[], text[], jsonb[], text, text, text, integer, jsonb);

-- As in 0005, with the limit checked after the seats are taken.
CREATE OR REPLACE FUNCTION purchase_seats(
    p_order_id uuid, p_tenant text, p_event uuid, p_tt uuid, p_quantity integer, p_buyer text,
    p_email text, p_locale text, p_total bigint, p_currency text, p_expires timestamptz,
    p_created timestamptz, p_seat_ids uuid[], p_reg_id uuid, p_policy jsonb, p_policy_source text,
    p_invite_ids uuid[], p_invite_seats uuid[], p_tokens text[],
    p_ob_event_id uuid, p_ob_topic text, p_ob_key text, p_ob_type text, p_ob_source text,
    p_ob_subject text, p_ob_time timestamptz, p_ob_schema text, p_ob_traceparent text, p_ob_data jsonb,
    p_actor text, p_au_entity text[], p_au_entity_id text[], p_au_action text[], p_au_to text[],
    p_au_details jsonb[],
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer, p_idem_body jsonb,
    p_catalog_version bigint
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
