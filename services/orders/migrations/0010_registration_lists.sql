-- What organizers look for in their lists, and what keeps those lists fast at 100,000
-- registrations per event.
--
-- Registrations carry the registrant's display name (the token's ``name``), so that a list can
-- be searched by name as well as e-mail address (written by purchase_seats() and
-- register_free_seat(), functions.sql).
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
-- Row-level security reads the transaction's scope once per statement (tenant_policies_read_scope_once(), the shared functions.sql).
SELECT tenant_policies_read_scope_once();

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
