-- The ledger's remaining fields (README "Usage"): where the counts come from as billing sees it,
-- token details, the inbound API, the Cloudflare colo and the upstream key's fingerprint.
ALTER TABLE usage ADD COLUMN provenance TEXT NOT NULL DEFAULT 'not_billed';
ALTER TABLE usage ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN inbound TEXT;
ALTER TABLE usage ADD COLUMN colo TEXT;
ALTER TABLE usage ADD COLUMN upstream_key TEXT;
CREATE INDEX usage_time ON usage (created_at);
