-- What the payments service's runtime role may do (see the shared grants.sql for how this file is
-- applied).
GRANT SELECT, INSERT, UPDATE ON orders_view, payments, provider_refunds, provider_tasks
    TO ${runtime};
-- notifications are pruned once past their retention
GRANT SELECT, INSERT, DELETE ON provider_notifications TO ${runtime};
