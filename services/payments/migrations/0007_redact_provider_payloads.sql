-- What the providers told us is kept without the payer's personal data from now on (the
-- payments domain's redact()): the notifications recorded before lose it here too, wherever in
-- the payload the field is (the same names as PERSONAL_FIELDS in payments.domain).
CREATE FUNCTION pg_temp.redacted(value jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'object' THEN coalesce((
            SELECT jsonb_object_agg(e.key, CASE
                WHEN e.key IN ('openid', 'sub_openid', 'sp_openid', 'payer_client_ip', 'device_id',
                               'user_received_account', 'consumerName', 'consumerAccount',
                               'consumerBic', 'cardHolder', 'cardNumber', 'cardFingerprint',
                               'billingEmail', 'billingAddress', 'shippingAddress', 'bankAccount',
                               'bankBic', 'iban', 'bic')
                     AND jsonb_typeof(e.value) <> 'null'
                THEN '"[redacted]"'::jsonb
                ELSE pg_temp.redacted(e.value) END)
            FROM jsonb_each(value) AS e), '{}'::jsonb)
        WHEN 'array' THEN coalesce((
            SELECT jsonb_agg(pg_temp.redacted(a.value) ORDER BY a.n)
            FROM jsonb_array_elements(value) WITH ORDINALITY AS a(value, n)), '[]'::jsonb)
        ELSE value
    END
$$;

UPDATE provider_notifications SET payload = pg_temp.redacted(payload)
WHERE payload IS DISTINCT FROM pg_temp.redacted(payload);
