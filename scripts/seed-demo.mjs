// Seeds local D1 and KV with a demo tenant, a key whose plaintext is DEMO_API_KEY (from
// .dev.vars), a channel on the built-in mock provider, and the model `demo` mapped onto it.
// Local development only: `npm run dev` runs it; nothing on the deploy path does.
// Idempotent: rows are upserted under fixed ids, and the model map is merged, not replaced.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const vars = Object.fromEntries(
  readFileSync(".dev.vars", "utf8")
    .split("\n")
    .filter((l) => /^[A-Z_]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1).trim()]),
);
const key = vars.DEMO_API_KEY;
if (!key) throw new Error(".dev.vars has no DEMO_API_KEY");

const hash = createHash("sha256").update(key).digest("hex");
const now = Date.now();
const q = (s) => `'${String(s).replaceAll("'", "''")}'`;
const sql = `
INSERT INTO tenants (id, name, status, models, created_at, updated_at)
  VALUES ('ten_demo', 'Demo tenant', 'active', NULL, ${now}, ${now})
  ON CONFLICT (id) DO UPDATE SET status = 'active';
INSERT INTO api_keys (id, tenant_id, name, key_hash, prefix, status, models, created_at)
  VALUES ('key_demo', 'ten_demo', 'demo key', ${q(hash)}, ${q(key.slice(0, 10))}, 'active', NULL, ${now})
  ON CONFLICT (id) DO UPDATE SET key_hash = excluded.key_hash, prefix = excluded.prefix,
    status = 'active', revoked_at = NULL, expires_at = NULL;
INSERT INTO channels (id, name, provider, base_url, api_keys, models, status, created_at, updated_at)
  VALUES ('ch_demo', 'Built-in mock', 'mock', '', '[]', '["mock-1"]', 'active', ${now}, ${now})
  ON CONFLICT (id) DO UPDATE SET status = 'active';
`;

const wrangler = (args) =>
  execFileSync("wrangler", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

wrangler(["d1", "execute", "DB", "--local", "--command", sql.replace(/\n\s*/g, " ")]);

let map = {};
try {
  map = JSON.parse(wrangler(["kv", "key", "get", "model_map", "--binding", "MODEL_MAP", "--local", "--text"]));
} catch {
  // No map yet (or not JSON): start a new one.
}
if (!map.demo) {
  map.demo = { channel_id: "ch_demo", upstream_model: "mock-1", created: Math.floor(now / 1000) };
  wrangler(["kv", "key", "put", "model_map", JSON.stringify(map), "--binding", "MODEL_MAP", "--local"]);
}
console.error("[dev] demo tenant ten_demo, key key_demo (DEMO_API_KEY), channel ch_demo, model `demo` are ready");
