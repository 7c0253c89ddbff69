-- The relay core: tenants, their keys, upstream channels and one usage row per request.
-- Times are Unix milliseconds (UTC). JSON columns hold arrays of strings.

CREATE TABLE tenants (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  -- JSON array of public model names this tenant may use; NULL = every mapped model.
  models      TEXT,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
  id          TEXT PRIMARY KEY,
  tenant_id   TEXT NOT NULL REFERENCES tenants (id),
  name        TEXT NOT NULL DEFAULT '',
  -- SHA-256 of the plaintext key, lowercase hex. The plaintext is never stored.
  key_hash    TEXT NOT NULL UNIQUE,
  -- The first characters of the key, to tell keys apart in listings and logs.
  prefix      TEXT NOT NULL,
  status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  -- JSON array narrowing the tenant's models for this key; NULL = the tenant's set.
  models      TEXT,
  expires_at  INTEGER,
  created_at  INTEGER NOT NULL,
  revoked_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE channels (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  provider    TEXT NOT NULL,
  base_url    TEXT NOT NULL,
  -- JSON array of upstream API keys. Never returned by the admin API, never logged.
  api_keys    TEXT NOT NULL DEFAULT '[]',
  -- JSON array of upstream model names this channel serves.
  models      TEXT NOT NULL DEFAULT '[]',
  status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  -- Time to wait for the upstream's response headers; NULL = the UPSTREAM_TIMEOUT_MS default.
  timeout_ms  INTEGER,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);

-- One row per request that got past authentication (see README "Usage").
CREATE TABLE usage (
  request_id        TEXT PRIMARY KEY,
  created_at        INTEGER NOT NULL,
  tenant_id         TEXT NOT NULL,
  key_id            TEXT NOT NULL,
  endpoint          TEXT NOT NULL,
  model             TEXT,
  upstream_model    TEXT,
  channel_id        TEXT,
  stream            INTEGER NOT NULL DEFAULT 0,
  status            INTEGER NOT NULL,
  error_code        TEXT,
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  total_tokens      INTEGER NOT NULL DEFAULT 0,
  -- 'reported' by the upstream, 'estimated' by the relay, 'none' when nothing was produced.
  usage_source      TEXT NOT NULL DEFAULT 'none',
  latency_ms        INTEGER NOT NULL,
  ttfb_ms           INTEGER
);
CREATE INDEX usage_tenant_time ON usage (tenant_id, created_at);
CREATE INDEX usage_key_time ON usage (key_id, created_at);
