-- Invite tokens are no longer stored (orders.service.invite_links): a token is derived from its
-- invite's id with a keyed HMAC and checked on redemption, and the invite is then found by its
-- id. The token column keeps only a SHA-256 digest of the token, which reveals nothing: tokens
-- issued before (random ones, already e-mailed) are found by that digest, so their links keep
-- working. This replaces every token stored in clear by its digest.
UPDATE invites SET token = encode(sha256(convert_to(token, 'UTF8')), 'hex')
WHERE token !~ '^[0-9a-f]{64}$';
COMMENT ON COLUMN invites.token IS 'SHA-256 (hex) of the invite''s token; never the token itself';
