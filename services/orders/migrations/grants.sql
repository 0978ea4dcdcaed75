-- What the orders service's runtime role may do (see the shared grants.sql for how this file is
-- applied). The catalog, orders, seats, registrations and invites are read and changed; the audit
-- trail is only ever appended to; refunds in flight are forgotten once settled.
GRANT SELECT, INSERT, UPDATE ON tenants, event_templates, events, ticket_types, orders, seats,
    registrations, invites, applied_refunds TO ${runtime};
GRANT SELECT, INSERT ON audit_log TO ${runtime};
GRANT SELECT, INSERT, UPDATE, DELETE ON refunds_in_flight TO ${runtime};
