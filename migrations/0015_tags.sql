-- Cost-allocation tags (src/ledger/tags.rs). On each usage row, the request's tags in canonical
-- form: sorted, comma-separated, one value per name ('app:web,team:search'); '' for none. Filter
-- with instr(',' || tags || ',', ',team:search,') > 0 (not LIKE: '_' is a wildcard there and
-- may appear in a tag).
ALTER TABLE usage ADD COLUMN tags TEXT NOT NULL DEFAULT '';
-- On each key: its own tags, and the patterns of tags its requests may add with the
-- x-relay-tags header ('env:*', 'feature:checkout'); JSON arrays of strings, NULL = none.
ALTER TABLE api_keys ADD COLUMN tags TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_request_tags TEXT;
