-- Upstream attempts behind a request (retries, fallbacks and hedges included), and whether a
-- hedge raced: a cancelled attempt is visible here even though it produced nothing billed.
ALTER TABLE usage ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN hedged INTEGER NOT NULL DEFAULT 0;
