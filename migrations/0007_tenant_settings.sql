-- Per-region tenants: the Durable Object jurisdiction ('eu', 'fedramp') its limiters live in;
-- NULL = anywhere. Fixed at creation.
ALTER TABLE tenants ADD COLUMN jurisdiction TEXT;
-- Tenant options as JSON (src/config.rs `TenantSettings`): lease mode, budget.
ALTER TABLE tenants ADD COLUMN settings TEXT;
-- Where a channel's upstream runs (src/routing.rs region names); NULL = unknown.
ALTER TABLE channels ADD COLUMN region TEXT;
-- What a request cost, in micro-units of the tenant's currency (src/pricing.rs).
ALTER TABLE usage ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
