-- Access rules per key and per tenant (JSON, see src/rules.rs `AccessRules`): IP/CIDR
-- allowlist, country allow/deny lists, time windows. NULL = no rules.
ALTER TABLE api_keys ADD COLUMN rules TEXT;
ALTER TABLE tenants ADD COLUMN rules TEXT;
