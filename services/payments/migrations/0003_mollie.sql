-- Mollie: its payments are found by their tr_ id (webhooks name nothing else), and a refund it
-- has accepted but not yet paid out can be withdrawn (a task, since it is a provider call).
CREATE UNIQUE INDEX payments_provider_payment ON payments (provider, provider_payment_id)
    WHERE provider_payment_id IS NOT NULL;

ALTER TABLE provider_tasks DROP CONSTRAINT provider_tasks_kind_check;
ALTER TABLE provider_tasks ADD CONSTRAINT provider_tasks_kind_check
    CHECK (kind IN ('close', 'refund', 'cancel_refund'));
