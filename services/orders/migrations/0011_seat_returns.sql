-- A buyer gives back a gift seat nobody redeemed yet: its invite is held (no one may redeem it)
-- from the request until the refund settles (seat and invite VOID) or fails (held no more).
ALTER TABLE invites ADD COLUMN return_requested_at timestamptz;
