-- Opt-in body logging (a tenant's settings.log_bodies): the request and the reply as the
-- client exchanged them, redacted (secrets, emails, card numbers) and cut at 64 KiB each.
CREATE TABLE request_bodies (
  request_id  TEXT PRIMARY KEY,
  tenant_id   TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  request     TEXT,
  response    TEXT
);
CREATE INDEX request_bodies_tenant_time ON request_bodies (tenant_id, created_at);
