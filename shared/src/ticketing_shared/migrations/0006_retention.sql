-- The worker prunes old inbox claims and idempotency keys (ticketing_shared.retention) by the
-- time they were written. Both tables are appended to in time order, so a BRIN index finds the
-- old end at the cost of a few pages, and costs the inserts next to nothing.
CREATE INDEX inbox_processed_at ON inbox USING brin (processed_at);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys USING brin (created_at);
