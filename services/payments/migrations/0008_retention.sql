-- The worker prunes the provider notifications it recorded once they are old enough
-- (PAYMENTS_NOTIFICATION_RETENTION_DAYS): by the time they were received, in time order.
CREATE INDEX provider_notifications_received_at ON provider_notifications USING brin (received_at);
