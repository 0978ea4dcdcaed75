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

CREATE TRIGGER catalog_version
    BEFORE UPDATE OF event_id, tenant_id, name, max_quantity, price_tiers, organizer_registration,
                     use_tenant_cancellation_policy, cancellation_policy
    ON ticket_types FOR EACH ROW EXECUTE FUNCTION ticket_type_catalog_changed();

CREATE TRIGGER catalog_version
    AFTER UPDATE OF tenant_id, title, starts_at, require_approval, currency, status
    ON events FOR EACH ROW EXECUTE FUNCTION event_catalog_changed();

CREATE TRIGGER catalog_version
    AFTER INSERT OR UPDATE OF cancellation_policies
    ON tenants FOR EACH ROW EXECUTE FUNCTION tenant_catalog_changed();
