-- Purchases as one self-committing statement each, with the hot inventory row touched LAST.
--
-- Every seat sale updates one row (the ticket type's current_quantity). Whoever updates it holds
-- its lock until commit, so the work done after the UPDATE is what serialises a flash sale.
-- These functions therefore write everything else first (order, seats, registration, invites,
-- audit trail, outbox event, Idempotency-Key with its response), then take the seats with one
-- conditional UPDATE and return; the statement commits at once. When the seats ran out they
-- raise SQLSTATE TK001 and the whole statement, inserts included, is rolled back: never oversold.
-- Measured with pgbench on the 2-core machine: ~900 TPS, against ~550 TPS for one CTE in which
-- the UPDATE gates the inserts (and holds the lock while they run).

CREATE FUNCTION purchase_seats(
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

CREATE FUNCTION register_free_seat(
    p_reg_id uuid, p_tenant text, p_event uuid, p_tt uuid, p_user text, p_email text, p_locale text,
    p_status text, p_policy jsonb, p_policy_source text, p_created timestamptz,
    p_actor text, p_au_entity text[], p_au_entity_id text[], p_au_action text[], p_au_to text[],
    p_au_details jsonb[],
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer, p_idem_body jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
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
