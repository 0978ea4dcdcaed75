-- Abuse limit: one buyer may hold at most max_unpaid_per_buyer unpaid seats of a ticket type
-- (default 10, set per ticket type). Beyond it the purchase fails with SQLSTATE TK003, checked
-- inside the purchase's own statement, so it costs no round trip and two purchases at once
-- cannot both pass it: they take the ticket type's row lock in turn.
ALTER TABLE ticket_types ADD COLUMN max_unpaid_per_buyer integer NOT NULL DEFAULT 10
    CHECK (max_unpaid_per_buyer BETWEEN 1 AND 10000);
-- one order of a ticket type's largest tier must always be possible (orders.domain.unpaid_limit)
UPDATE ticket_types SET max_unpaid_per_buyer = GREATEST(10, (
    SELECT max((t ->> 'quantity')::int) FROM jsonb_array_elements(price_tiers) AS t))
WHERE jsonb_typeof(price_tiers) = 'array' AND jsonb_array_length(price_tiers) > 0;
