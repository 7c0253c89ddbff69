-- Tenant-scoped admin tokens: each manages only its own tenant's keys, usage, limits and
-- audit rows. Only the SHA-256 of a token is stored.
CREATE TABLE tenant_tokens (
  id          TEXT PRIMARY KEY,
  tenant_id   TEXT NOT NULL REFERENCES tenants (id),
  name        TEXT NOT NULL DEFAULT '',
  token_hash  TEXT NOT NULL UNIQUE,
  prefix      TEXT NOT NULL,
  status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  created_at  INTEGER NOT NULL,
  revoked_at  INTEGER
);
CREATE INDEX tenant_tokens_tenant ON tenant_tokens (tenant_id);
