-- The catalog a purchase is priced from, versioned, so that the API may keep it in memory.
--
-- A purchase reads its ticket type, event and tenant (price tiers, cancellation policies, the
-- event's start and currency) before it writes. The API keeps that read per ticket type and
-- passes the ticket type's catalog_version to purchase_seats()/register_free_seat(), whose
-- inventory UPDATE takes the seats only while that version is current. Every change of what the
-- read holds bumps the version (the triggers below: a ticket type's own columns, its event's,
-- its tenant's policies), so a purchase is always priced from the catalog as it stands when its
-- seats are taken; one priced from an older copy fails with SQLSTATE TK002, writes nothing, and
-- the API reads the catalog again. The inventory UPDATE itself lists none of these columns, so
-- the triggers cost a flash sale nothing.

ALTER TABLE ticket_types ADD COLUMN catalog_version bigint NOT NULL DEFAULT 1;

CREATE FUNCTION ticket_type_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.catalog_version := OLD.catalog_version + 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER catalog_version
    BEFORE UPDATE OF event_id, tenant_id, name, max_quantity, price_tiers, organizer_registration,
                     use_tenant_cancellation_policy, cancellation_policy
    ON ticket_types FOR EACH ROW EXECUTE FUNCTION ticket_type_catalog_changed();

CREATE FUNCTION event_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ticket_types SET catalog_version = catalog_version + 1 WHERE event_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER catalog_version
    AFTER UPDATE OF tenant_id, title, starts_at, require_approval, currency, status
    ON events FOR EACH ROW EXECUTE FUNCTION event_catalog_changed();

CREATE FUNCTION tenant_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- only the ticket types that take the tenant's policy (the others keep their own)
    UPDATE ticket_types SET catalog_version = catalog_version + 1
    WHERE tenant_id = NEW.id AND use_tenant_cancellation_policy;
    RETURN NULL;
END
$$;
CREATE TRIGGER catalog_version
    AFTER INSERT OR UPDATE OF cancellation_policies
    ON tenants FOR EACH ROW EXECUTE FUNCTION tenant_catalog_changed();

-- Why a purchase's inventory UPDATE found no row: the catalog moved on (TK002: read it again and
-- retry) or the seats ran out (TK001). Either way the purchase's statement rolls back whole.
CREATE FUNCTION catalog_moved_or_sold_out(p_tt uuid, p_catalog_version bigint, p_message text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ticket_types WHERE id = p_tt AND catalog_version = p_catalog_version) THEN
        RAISE EXCEPTION '%', p_message USING ERRCODE = 'TK001';
    END IF;
    RAISE EXCEPTION 'the ticket type changed since it was read' USING ERRCODE = 'TK002';
END
$$;

-- As in 0004, plus the catalog version their inventory UPDATE requires: new overloads. The 0004
-- signatures stay, for API processes of the previous release during a rolling deploy (they read
-- the catalog afresh for every purchase); a later migration drops them.
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
    p_catalog_version bigint
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
    WHERE id = p_tt AND catalog_version = p_catalog_version
      AND current_quantity + p_quantity <= max_quantity;
    IF NOT FOUND THEN
        PERFORM catalog_moved_or_sold_out(p_tt, p_catalog_version, 'not enough seats left');
    END IF;
END
$$;

CREATE FUNCTION register_free_seat(
    p_reg_id uuid, p_tenant text, p_event uuid, p_tt uuid, p_user text, p_email text, p_locale text,
    p_status text, p_policy jsonb, p_policy_source text, p_created timestamptz,
    p_actor text, p_au_entity text[], p_au_entity_id text[], p_au_action text[], p_au_to text[],
    p_au_details jsonb[],
    p_idem_scope text, p_idem_key text, p_idem_hash text, p_idem_status integer, p_idem_body jsonb,
    p_catalog_version bigint
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
    WHERE id = p_tt AND catalog_version = p_catalog_version AND current_quantity + 1 <= max_quantity;
    IF NOT FOUND THEN
        PERFORM catalog_moved_or_sold_out(p_tt, p_catalog_version, 'no seats left');
    END IF;
END
$$;
