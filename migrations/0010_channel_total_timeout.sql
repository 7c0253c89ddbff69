-- Longest a whole exchange with a channel may take, stream included, in ms; NULL = no limit
-- beyond timeout_ms between chunks.
ALTER TABLE channels ADD COLUMN total_timeout_ms INTEGER;
