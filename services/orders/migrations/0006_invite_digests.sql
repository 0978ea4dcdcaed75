-- Invite tokens are no longer stored (orders.service.invite_links): a token is derived from its
-- invite's id with a keyed HMAC and checked on redemption, and the invite is then found by its
-- id. The token column keeps only a SHA-256 digest of the token, which reveals nothing: tokens
-- issued before (random ones, already e-mailed) are found by that digest, so their links keep
-- working. This replaces every token stored in clear by its digest.
UPDATE invites SET token = encode(sha256(convert_to(token, 'UTF8')), 'hex')
WHERE token !~ '^[0-9a-f]{64}$';
COMMENT ON COLUMN invites.token IS 'SHA-256 (hex) of the invite''s token; never the token itself';

-- scope_to() learns to find an invite by its id ('invite_id'); 'invite' now takes a digest.
CREATE OR REPLACE FUNCTION scope_to(p_kind text, p_id text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    PERFORM set_config('app.tenant_id', '*', true);
    CASE p_kind
        WHEN 'order' THEN SELECT tenant_id INTO t FROM orders WHERE id = p_id::uuid;
        WHEN 'registration' THEN SELECT tenant_id INTO t FROM registrations WHERE id = p_id::uuid;
        WHEN 'invite' THEN SELECT tenant_id INTO t FROM invites WHERE token = p_id;
        WHEN 'invite_id' THEN SELECT tenant_id INTO t FROM invites WHERE id = p_id::uuid;
        ELSE RAISE EXCEPTION 'unknown resource kind %', p_kind;
    END CASE;
    PERFORM set_config('app.tenant_id', coalesce(t, ''), true);
    RETURN t;
END
$$;
