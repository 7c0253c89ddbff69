-- Limits per key and per tenant (JSON, see src/limits.rs `Limits`), enforced by one Durable
-- Object per key and per tenant. NULL = unlimited.
ALTER TABLE api_keys ADD COLUMN limits TEXT;
ALTER TABLE tenants ADD COLUMN limits TEXT;
-- Rotation: the key that replaced this one (its own expires_at is the grace deadline).
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
