// Admin round trips (README "Administration"): what a GET shows, PUT or PATCHed back unchanged,
// is accepted and changes nothing. Read-only fields (ids, timestamps, counts, fingerprints,
// `created`, `source`…) are ignored, or refused only when they would change something fixed;
// a misspelt field is still a 400 naming it.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, assertOpenAIError, UPSTREAM_KEY } from "./harness.mjs";

/** `value` without `updated_at`, which every write may move. */
function stable(value) {
  const { updated_at: _, ...rest } = value;
  return rest;
}

describe("admin round trips: GET → PUT/PATCH the same body → 200, unchanged", () => {
  let relay, channel;
  before(async () => {
    relay = await startRelay();
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  /** GETs `path`, writes what it showed back with `method`, and GETs it again. */
  async function roundTrip(method, path, writePath = path) {
    const shown = await relay.adminOk("GET", path, undefined, [200]);
    const w = await relay.admin(method, writePath, shown);
    assert.equal(w.status, 200, `${method} ${writePath} of its own GET: ${w.text}`);
    const again = await relay.adminOk("GET", path, undefined, [200]);
    return { shown, written: w.json, again };
  }

  it("channels: GET /admin/channels/{id} → PATCH; the write-only upstream keys stay", async () => {
    channel = await relay.adminOk("POST", "/admin/channels", {
      name: "rt-openai",
      provider: "openai",
      base_url: "https://api.example.com/v1",
      api_keys: [UPSTREAM_KEY, "sk-up-second-key"],
      models: ["up-a", "up-b", "up-mini"],
      timeout_ms: 20_000,
      total_timeout_ms: 90_000,
      region: "eu-west",
      breaker: { min_requests: 20, cooldown_ms: 5_000 },
    }, [201]);
    const { shown, written, again } = await roundTrip("PATCH", `/admin/channels/${channel.id}`);
    assert.equal(shown.api_key_count, 2);
    assert.equal(shown.key_fingerprints.length, 2);
    assert.deepEqual(stable(written), stable(shown));
    assert.deepEqual(stable(again), stable(shown));
    assert.ok(!JSON.stringify(again).includes(UPSTREAM_KEY), "the upstream key never comes back");
  });

  it("the model map: one entry (GET /admin/model-map/{m} → PUT), then the whole map (GET → PUT)", async () => {
    await relay.adminOk("PUT", "/admin/model-map/rt-mini", { channel_id: channel.id, upstream_model: "up-mini" }, [200]);
    await relay.adminOk("PUT", "/admin/model-map/org/rt-routed", {
      hedge_ms: 1500,
      routes: [
        { channel_id: channel.id, upstream_model: "up-a", priority: 1, weight: 3 },
        { channel_id: channel.id, upstream_model: "up-b" },
      ],
    }, [200]);
    for (const model of ["rt-mini", "org/rt-routed"]) {
      const { shown, written, again } = await roundTrip("PUT", `/admin/model-map/${model}`);
      assert.equal(typeof shown.created, "number", JSON.stringify(shown));
      assert.deepEqual(written, shown);
      assert.deepEqual(again, shown, "created is kept: the routes did not change");
    }
    const { shown, again } = await roundTrip("PUT", "/admin/model-map");
    assert.deepEqual(Object.keys(shown).sort(), ["org/rt-routed", "rt-mini"]);
    assert.deepEqual(again, shown);
  });

  it("model groups: GET /admin/model-groups/{g} → PUT", async () => {
    await relay.adminOk("PUT", "/admin/model-groups/rt-cheap", { models: ["rt-mini"], price_multiplier_ppm: 800_000 }, [200]);
    await relay.adminOk("PUT", "/admin/model-groups/rt-plain", { models: ["rt-mini", "org/rt-routed"] }, [200]);
    for (const group of ["rt-cheap", "rt-plain"]) {
      const { shown, written, again } = await roundTrip("PUT", `/admin/model-groups/${group}`);
      assert.equal(shown.name, group);
      assert.deepEqual(written, shown);
      assert.deepEqual(again, shown);
    }
  });

  it("prices: GET /admin/prices/{m} → PUT", async () => {
    await relay.adminOk("PUT", "/admin/prices/org/rt-routed", {
      input: 3_000_000, output: 12_000_000, cache_read: 300_000, request: 10,
    }, [200]);
    const { shown, again } = await roundTrip("PUT", "/admin/prices/org/rt-routed");
    assert.equal(shown.source, "custom");
    assert.deepEqual(again, shown);
  });

  let tenant;
  it("tenants: GET /admin/tenants/{id} → PATCH, settings and jurisdiction included", async () => {
    tenant = await relay.adminOk("POST", "/admin/tenants", {
      name: "rt-tenant",
      models: ["@rt-cheap", "org/rt-routed"],
      limits: { rpm: 600, burst_requests: 10, day: { requests: 10_000 } },
      rules: { countries_deny: ["KP"], windows: [{ days: [1, 2, 3, 4, 5], start: "08:00", end: "18:00" }] },
      jurisdiction: "eu",
      lease_ms: 2000,
      budget: { soft_micros: 5_000_000, hard_micros: 10_000_000, on_hard: "downgrade", fallback_model: "rt-mini" },
      price_multiplier_ppm: 1_500_000,
      log_bodies: true,
    }, [201]);
    const { shown, written, again } = await roundTrip("PATCH", `/admin/tenants/${tenant.id}`);
    assert.equal(shown.jurisdiction, "eu");
    assert.deepEqual(stable(written), stable(shown));
    assert.deepEqual(stable(again), stable(shown));
  });

  it("keys: GET /admin/keys/{id} → PATCH", async () => {
    const created = await relay.adminOk("POST", `/admin/tenants/${tenant.id}/keys`, {
      name: "rt-key",
      models: ["@rt-cheap"],
      limits: { concurrency: 4 },
      rules: { ip_allow: ["10.0.0.0/8"] },
      expires_at: Date.now() + 86_400_000,
      cache_ttl_s: 300,
    }, [201]);
    const { shown, written, again } = await roundTrip("PATCH", `/admin/keys/${created.id}`);
    assert.equal(shown.prefix, created.prefix);
    assert.equal(shown.key, undefined, "no plaintext");
    assert.deepEqual(written, shown);
    assert.deepEqual(again, shown);
  });

  it("a read-only field that would change something fixed is a 400 naming it; the rest are ignored", async () => {
    const t = await relay.adminOk("GET", `/admin/tenants/${tenant.id}`, undefined, [200]);
    assertOpenAIError(await relay.admin("PATCH", `/admin/tenants/${tenant.id}`, { ...t, id: "ten_other" }), { status: 400, param: "id" });
    assertOpenAIError(await relay.admin("PATCH", `/admin/tenants/${tenant.id}`, { ...t, jurisdiction: null }), { status: 400, param: "jurisdiction" });
    const stale = await relay.admin("PATCH", `/admin/tenants/${tenant.id}`, { ...t, created_at: 1, updated_at: 2, name: "rt-renamed" });
    assert.equal(stale.status, 200, stale.text);
    assert.equal(stale.json.name, "rt-renamed");
    assert.equal(stale.json.created_at, t.created_at, "timestamps are the relay's");

    const [k] = (await relay.adminOk("GET", `/admin/tenants/${tenant.id}/keys`, undefined, [200])).data;
    assertOpenAIError(await relay.admin("PATCH", `/admin/keys/${k.id}`, { ...k, status: "revoked" }), { status: 400, param: "status" });
    assertOpenAIError(await relay.admin("PATCH", `/admin/keys/${k.id}`, { ...k, tenant_id: "ten_other" }), { status: 400, param: "tenant_id" });
    assert.equal((await relay.adminOk("GET", `/admin/keys/${k.id}`, undefined, [200])).status, "active");

    const c = await relay.adminOk("GET", `/admin/channels/${channel.id}`, undefined, [200]);
    const counted = await relay.admin("PATCH", `/admin/channels/${channel.id}`, { ...c, api_key_count: 0, key_fingerprints: [] });
    assert.equal(counted.status, 200, counted.text);
    assert.equal(counted.json.api_key_count, 2, "counts follow from the keys, not the body");

    assertOpenAIError(await relay.admin("PUT", "/admin/model-groups/rt-cheap", { name: "rt-other", models: ["rt-mini"] }), { status: 400, param: "name" });
    const p = await relay.adminOk("GET", "/admin/prices/org/rt-routed", undefined, [200]);
    assertOpenAIError(await relay.admin("PUT", "/admin/prices/org/rt-routed", { ...p, model: "other" }), { status: 400, param: "model" });
    const e = await relay.adminOk("GET", "/admin/model-map/org/rt-routed", undefined, [200]);
    assertOpenAIError(await relay.admin("PUT", "/admin/model-map/org/rt-routed", { ...e, upstream_model: "up-b" }), { status: 400, param: "routes" });
  });

  it("a misspelt field is still refused, naming it", async () => {
    const t = await relay.adminOk("GET", `/admin/tenants/${tenant.id}`, undefined, [200]);
    assertOpenAIError(await relay.admin("PATCH", `/admin/tenants/${tenant.id}`, { ...t, lease_msec: 10 }), { status: 400, param: "lease_msec" });
    const c = await relay.adminOk("GET", `/admin/channels/${channel.id}`, undefined, [200]);
    assertOpenAIError(await relay.admin("PATCH", `/admin/channels/${channel.id}`, { ...c, api_key: "k" }), { status: 400, param: "api_key" });
    const e = await relay.adminOk("GET", "/admin/model-map/rt-mini", undefined, [200]);
    assertOpenAIError(await relay.admin("PUT", "/admin/model-map/rt-mini", { ...e, creatd: 1 }), { status: 400, param: "creatd" });
    const p = await relay.adminOk("GET", "/admin/prices/org/rt-routed", undefined, [200]);
    assertOpenAIError(await relay.admin("PUT", "/admin/prices/org/rt-routed", { ...p, sauce: "x" }), { status: 400, param: "sauce" });
  });
});
