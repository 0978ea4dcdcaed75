-- What the providers told us is kept without the payer's personal data from now on (the
-- payments domain's redact()): the notifications recorded before lose it here too. The paths
-- are those the providers use: WeChat Pay's payer openid and the account a refund went back to;
-- Mollie's payment details (consumer name, account and BIC; card holder and number), kept under
-- "payment" in our snapshot of a webhook.
CREATE FUNCTION pg_temp.redacted(d jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(jsonb_object_agg(e.key, CASE
               WHEN e.key IN ('openid', 'consumerName', 'consumerAccount', 'consumerBic',
                              'cardHolder', 'cardNumber', 'cardFingerprint', 'bankAccount',
                              'bankBic', 'billingEmail', 'user_received_account')
               THEN '"[redacted]"'::jsonb ELSE e.value END), '{}'::jsonb)
    FROM jsonb_each(d) AS e
$$;

UPDATE provider_notifications SET payload = pg_temp.redacted(payload)
WHERE jsonb_typeof(payload) = 'object' AND payload ? 'user_received_account';
UPDATE provider_notifications SET payload = jsonb_set(payload, '{payer}', pg_temp.redacted(payload -> 'payer'))
WHERE jsonb_typeof(payload -> 'payer') = 'object';
UPDATE provider_notifications
SET payload = jsonb_set(payload, '{payment,details}', pg_temp.redacted(payload #> '{payment,details}'))
WHERE jsonb_typeof(payload #> '{payment,details}') = 'object';
