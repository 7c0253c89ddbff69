// The admin API (README "Administration"): tenants, keys, channels and the model map. Key
// plaintext is shown once; key hashes and upstream keys never come back.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startRelay, assertOpenAIError, chatBody, UPSTREAM_KEY } from "./harness.mjs";

/** The entry for `name` in a GET /admin/model-map reply, whatever the wrapping. */
function mapEntry(json, name) {
  if (json && Array.isArray(json.data)) return json.data.find((e) => (e.model ?? e.name ?? e.id) === name);
  const doc = json?.model_map ?? json;
  return doc?.[name];
}
function mapNames(json) {
  if (json && Array.isArray(json.data)) return json.data.map((e) => e.model ?? e.name ?? e.id).sort();
  return Object.keys(json?.model_map ?? json ?? {}).sort();
}

describe("admin API", () => {
  let relay;
  before(async () => {
    relay = await startRelay();
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  describe("tenants", () => {
    let tenant;
    it("create → 201 with an id, the name, status active and the models", async () => {
      const r = await relay.admin("POST", "/admin/tenants", { name: "acme", models: ["demo"] });
      assert.equal(r.status, 201, r.text);
      tenant = r.json;
      assert.match(tenant.id, /^ten_/);
      assert.equal(tenant.name, "acme");
      assert.equal(tenant.status, "active");
      assert.deepEqual(tenant.models, ["demo"]);
    });

    it("list and get", async () => {
      const list = await relay.adminOk("GET", "/admin/tenants", undefined, [200]);
      assert.equal(list.object, "list");
      assert.ok(list.data.some((t) => t.id === tenant.id && t.name === "acme"));
      const got = await relay.adminOk("GET", `/admin/tenants/${tenant.id}`, undefined, [200]);
      assert.equal(got.id, tenant.id);
      assert.equal(got.name, "acme");
      assert.deepEqual(got.models, ["demo"]);
    });

    it("PATCH name and models: null", async () => {
      const r = await relay.admin("PATCH", `/admin/tenants/${tenant.id}`, { name: "acme-eu", models: null });
      assert.equal(r.status, 200, r.text);
      const got = await relay.adminOk("GET", `/admin/tenants/${tenant.id}`, undefined, [200]);
      assert.equal(got.name, "acme-eu");
      assert.equal(got.models, null);
    });

    it("disable and enable", async () => {
      await relay.adminOk("POST", `/admin/tenants/${tenant.id}/disable`, undefined, [200, 204]);
      assert.equal((await relay.adminOk("GET", `/admin/tenants/${tenant.id}`, undefined, [200])).status, "disabled");
      await relay.adminOk("POST", `/admin/tenants/${tenant.id}/enable`, undefined, [200, 204]);
      assert.equal((await relay.adminOk("GET", `/admin/tenants/${tenant.id}`, undefined, [200])).status, "active");
    });

    it("unknown tenant → 404; invalid bodies → 400", async () => {
      assertOpenAIError(await relay.admin("GET", "/admin/tenants/ten_doesnotexist"), { status: 404 });
      assertOpenAIError(await relay.admin("POST", "/admin/tenants", {}), { status: 400 });
      assertOpenAIError(await relay.admin("POST", "/admin/tenants", "{nope"), { status: 400 });
      assertOpenAIError(await relay.admin("POST", "/admin/tenants", { name: "x", models: "demo" }), { status: 400 });
    });
  });

  describe("keys", () => {
    let tenant, created;
    before(async () => {
      tenant = await relay.adminOk("POST", "/admin/tenants", { name: "keys-tenant", models: null }, [201]);
    });

    it("create → 201 with the plaintext key, once", async () => {
      const r = await relay.admin("POST", `/admin/tenants/${tenant.id}/keys`, { name: "ci", models: ["demo"], expires_at: null });
      assert.equal(r.status, 201, r.text);
      created = r.json;
      assert.match(created.id, /^key_/);
      assert.match(created.key, /^sk-er-/);
      assert.equal(typeof created.prefix, "string");
      assert.ok(created.prefix.length >= 6 && created.prefix.length < created.key.length, `prefix ${created.prefix}`);
      assert.ok(created.key.startsWith(created.prefix), "prefix is the start of the key");
      assert.ok(created.key.length >= 32, "a key long enough to be unguessable");
      assert.equal(created.key_hash, undefined, "no hash in the reply");
      assert.deepEqual(created.models, ["demo"]);
      assert.equal(created.status, "active");
    });

    it("only the SHA-256 of the key is stored", async () => {
      const db = await relay.db();
      const row = await db.prepare("SELECT * FROM api_keys WHERE id = ?").bind(created.id).first();
      assert.equal(row.key_hash, createHash("sha256").update(created.key).digest("hex"));
      assert.ok(!JSON.stringify(row).includes(created.key), "no plaintext in the row");
    });

    it("list and get never include the key or its hash", async () => {
      const list = await relay.admin("GET", `/admin/tenants/${tenant.id}/keys`);
      assert.equal(list.status, 200, list.text);
      assert.equal(list.json.object, "list");
      const mine = list.json.data.find((k) => k.id === created.id);
      assert.ok(mine, "the key is listed");
      assert.equal(mine.prefix, created.prefix);
      const got = await relay.admin("GET", `/admin/keys/${created.id}`);
      assert.equal(got.status, 200, got.text);
      assert.equal(got.json.id, created.id);
      assert.equal(got.json.tenant_id, tenant.id);
      const hash = createHash("sha256").update(created.key).digest("hex");
      for (const r of [list, got]) {
        assert.ok(!r.text.includes(created.key), "no plaintext");
        assert.ok(!r.text.includes(hash), "no hash");
        assert.ok(!r.text.includes('"key_hash"'), "no key_hash field");
        assert.ok(!/"key"\s*:/.test(r.text), "no key field");
      }
    });

    it("revoke", async () => {
      const r = await relay.admin("POST", `/admin/keys/${created.id}/revoke`);
      assert.ok([200, 204].includes(r.status), r.text);
      const got = await relay.adminOk("GET", `/admin/keys/${created.id}`, undefined, [200]);
      assert.equal(got.status, "revoked");
      assert.equal(typeof got.revoked_at, "number");
      assert.ok(!JSON.stringify(got).includes(created.key));
    });

    it("keys for an unknown tenant → 404; unknown key → 404", async () => {
      assertOpenAIError(await relay.admin("POST", "/admin/tenants/ten_nope/keys", { name: "x" }), { status: 404 });
      assertOpenAIError(await relay.admin("GET", "/admin/keys/key_nope"), { status: 404 });
    });
  });

  describe("channels and the model map", () => {
    let ch;
    const body = {
      name: "openai",
      provider: "openai",
      base_url: "http://127.0.0.1:9/v1",
      api_keys: [UPSTREAM_KEY],
      models: ["gpt-4o-mini", "gpt-4o"],
      timeout_ms: 30000,
    };

    it("create: replies show api_key_count, never a key", async () => {
      const r = await relay.admin("POST", "/admin/channels", body);
      assert.ok([200, 201].includes(r.status), r.text);
      ch = r.json;
      assert.match(ch.id, /^ch_/);
      assert.equal(ch.provider, "openai");
      assert.equal(ch.base_url, body.base_url);
      assert.deepEqual(ch.models, body.models);
      assert.equal(ch.timeout_ms, 30000);
      assert.equal(ch.api_key_count, 1);
      assert.equal(ch.api_keys, undefined);
      assert.ok(!r.text.includes(UPSTREAM_KEY));
    });

    it("list and get never include api_keys", async () => {
      const list = await relay.admin("GET", "/admin/channels");
      assert.equal(list.status, 200);
      assert.equal(list.json.object, "list");
      assert.ok(list.json.data.some((c) => c.id === ch.id));
      const got = await relay.admin("GET", `/admin/channels/${ch.id}`);
      assert.equal(got.status, 200);
      for (const r of [list, got]) {
        assert.ok(!r.text.includes(UPSTREAM_KEY), "no upstream key");
        assert.ok(!r.text.includes('"api_keys"'), "no api_keys field");
      }
      assert.equal(got.json.api_key_count, 1);
    });

    it("PATCH api_keys and status", async () => {
      const r = await relay.admin("PATCH", `/admin/channels/${ch.id}`, { api_keys: ["sk-new-1", "sk-new-2"], status: "disabled" });
      assert.equal(r.status, 200, r.text);
      assert.ok(!r.text.includes("sk-new-1"));
      const got = await relay.adminOk("GET", `/admin/channels/${ch.id}`, undefined, [200]);
      assert.equal(got.api_key_count, 2);
      assert.equal(got.status, "disabled");
      await relay.adminOk("PATCH", `/admin/channels/${ch.id}`, { status: "active" }, [200]);
    });

    it("invalid channels → 400", async () => {
      assertOpenAIError(await relay.admin("POST", "/admin/channels", { ...body, provider: "nope" }), { status: 400 });
      assertOpenAIError(await relay.admin("POST", "/admin/channels", { name: "x" }), { status: 400 });
    });

    it("model-map entry pointing at a missing channel → 400", async () => {
      const r = await relay.admin("PUT", "/admin/model-map/gpt-4o-mini", { channel_id: "ch_doesnotexist", upstream_model: "gpt-4o-mini" });
      assertOpenAIError(r, { status: 400 });
      assert.equal(mapEntry((await relay.admin("GET", "/admin/model-map")).json, "gpt-4o-mini"), undefined, "nothing written");
    });

    it("model-map entry for a model the channel does not serve → 400", async () => {
      const r = await relay.admin("PUT", "/admin/model-map/x", { channel_id: ch.id, upstream_model: "not-served" });
      assertOpenAIError(r, { status: 400 });
    });

    it("PUT, GET and use a model-map entry", async () => {
      const r = await relay.admin("PUT", "/admin/model-map/gpt-4o-mini", { channel_id: ch.id, upstream_model: "gpt-4o-mini" });
      assert.ok([200, 201, 204].includes(r.status), r.text);
      const map = await relay.adminOk("GET", "/admin/model-map", undefined, [200]);
      const e = mapEntry(map, "gpt-4o-mini");
      assert.equal(e?.channel_id, ch.id, JSON.stringify(map));
      assert.equal(e?.upstream_model, "gpt-4o-mini");
    });

    it("DELETE of a channel the model map uses → 409; after unmapping it goes", async () => {
      assertOpenAIError(await relay.admin("DELETE", `/admin/channels/${ch.id}`), { status: 409 });
      assert.equal((await relay.admin("GET", `/admin/channels/${ch.id}`)).status, 200, "still there");
      const d = await relay.admin("DELETE", "/admin/model-map/gpt-4o-mini");
      assert.ok([200, 204].includes(d.status), d.text);
      assert.equal(mapEntry((await relay.admin("GET", "/admin/model-map")).json, "gpt-4o-mini"), undefined);
      const del = await relay.admin("DELETE", `/admin/channels/${ch.id}`);
      assert.ok([200, 204].includes(del.status), del.text);
      assertOpenAIError(await relay.admin("GET", `/admin/channels/${ch.id}`), { status: 404 });
    });

    it("model-map changes take effect at once for requests", async () => {
      const s = await relay.seed({ provider: "mock", models: { "live-a": "mock-1" } });
      const ok = await relay.callJson("/v1/chat/completions", { key: s.key, body: chatBody("live-a") });
      assert.equal(ok.status, 200, ok.text);
      await relay.adminOk("DELETE", "/admin/model-map/live-a", undefined, [200, 204]);
      const gone = await relay.callJson("/v1/chat/completions", { key: s.key, body: chatBody("live-a") });
      assertOpenAIError(gone, { status: 404, code: "model_not_found" });
    });

    it("PUT the whole map replaces it; a bad entry rejects all of it", async () => {
      const c = await relay.adminOk("POST", "/admin/channels", { name: "m", provider: "mock", base_url: "", api_keys: [], models: ["mock-1"] }, [200, 201]);
      const doc = { demo: { channel_id: c.id, upstream_model: "mock-1" }, "demo-b": { channel_id: c.id, upstream_model: "mock-1" } };
      const r = await relay.admin("PUT", "/admin/model-map", doc);
      assert.ok([200, 204].includes(r.status), r.text);
      assert.deepEqual(mapNames((await relay.admin("GET", "/admin/model-map")).json), ["demo", "demo-b"]);
      const bad = await relay.admin("PUT", "/admin/model-map", { only: { channel_id: "ch_missing", upstream_model: "x" } });
      assertOpenAIError(bad, { status: 400 });
      assert.deepEqual(mapNames((await relay.admin("GET", "/admin/model-map")).json), ["demo", "demo-b"], "unchanged");
    });
  });
});
