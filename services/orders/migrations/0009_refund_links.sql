-- A registration cancelled by a settled refund names that refund, so that the buyer, the guest
-- and the organizer can see which refund ended it (and what it paid back).
ALTER TABLE registrations ADD COLUMN refund_id uuid;
