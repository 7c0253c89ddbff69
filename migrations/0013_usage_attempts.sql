-- One row per upstream attempt of a request that needed more than one (retries, fallbacks,
-- hedges), linked to its usage row by request_id. outcome: served | failed | cancelled.
CREATE TABLE usage_attempts (
  request_id     TEXT NOT NULL,
  n              INTEGER NOT NULL,
  channel_id     TEXT,
  upstream_model TEXT,
  upstream_key   TEXT,
  status         INTEGER,
  error_code     TEXT,
  outcome        TEXT NOT NULL,
  at             INTEGER NOT NULL,
  PRIMARY KEY (request_id, n)
);
