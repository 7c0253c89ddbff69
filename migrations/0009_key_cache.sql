-- Response cache opt-in per key: default TTL in seconds of cached replies; NULL = off.
ALTER TABLE api_keys ADD COLUMN cache_ttl_s INTEGER;
