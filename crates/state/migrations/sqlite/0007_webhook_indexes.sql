-- Schema version 7 (SQLite): the due deliveries indexed as what they are, the pending ones.
-- Append-only: never edit this file once released; add 0008_*.sql here AND in ../postgres/.

-- Claims, the backlog gauge, the leases of a node and the deliveries of an enabled endpoint all
-- ask for pending deliveries (of a destination). An index of the pending ones alone serves them
-- all and stays as small as the backlog, where the two it replaces held every delivery kept for
-- the retention and cost a write each.
DROP INDEX bridgehead_webhook_deliveries_due;
DROP INDEX bridgehead_webhook_deliveries_claim;
CREATE INDEX bridgehead_webhook_deliveries_pending
    ON bridgehead_webhook_deliveries (destination, next_attempt_at) WHERE state = 'pending';
