-- Schema version 7 (PostgreSQL): one index fewer on webhook deliveries.
-- Append-only: never edit this file once released; add 0008_*.sql here AND in ../sqlite/.

-- Every query on due deliveries names the destination (the claim), and the backlog groups by
-- destination: bridgehead_webhook_deliveries_claim (destination, state, next_attempt_at) serves
-- them all, and this one only cost a write per delivery.
DROP INDEX bridgehead_webhook_deliveries_due;
