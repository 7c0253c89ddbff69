-- Every admin change, appended; the API offers no way to change or delete a row.
-- before/after are the admin API's own views of the object: secrets never appear in them.
CREATE TABLE audit_log (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  at          INTEGER NOT NULL,
  actor       TEXT NOT NULL,
  action      TEXT NOT NULL,
  target_type TEXT NOT NULL,
  target_id   TEXT NOT NULL,
  tenant_id   TEXT,
  before      TEXT,
  after       TEXT,
  client_ip   TEXT,
  request_id  TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target_id, at);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at);
