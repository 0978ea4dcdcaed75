-- When payments last asked the provider about an attempt on its own (not prompted by a webhook):
-- the reconciler looks at attempts whose news may have been lost, least recently checked first.
ALTER TABLE payments ADD COLUMN reconciled_at timestamptz;
