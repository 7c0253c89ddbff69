-- Circuit-breaker settings of a channel (JSON, src/routing.rs `BreakerConfig`); NULL = defaults.
ALTER TABLE channels ADD COLUMN breaker TEXT;
