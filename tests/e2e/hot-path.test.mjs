// The hot path waits on no storage in the steady state, and says so: every relay response
// carries a W3C Server-Timing header naming each wait (limiter, d1, kv, health, upstream,
// cache) and ttfb. A warm request — its key, model map and channel read within
// CONFIG_CACHE_TTL_MS — names none of the relay's storage, for a key without limits and for a
// key with quotas (lease mode, the default); a strict tenant's requests wait on their limiter.
// Changes made behind this isolate's back (as another isolate's admin change would be) reach
// it through the background refresh within the TTL.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, assertOpenAIError, pollUntil } from "./harness.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";

const STORAGE = ["limiter", "d1", "kv", "health", "cache"];

/** Server-Timing as {name: {dur, desc}}. */
function serverTiming(r) {
  const h = r.headers.get("server-timing");
  assert.ok(h, "the response carries Server-Timing");
  const out = {};
  for (const entry of h.split(",")) {
    const [name, ...params] = entry.trim().split(";");
    const p = Object.fromEntries(params.map((x) => x.split("=")));
    assert.match(p.dur ?? "", /^\d+(\.\d+)?$/, `${name} has a duration: ${h}`);
    out[name] = p;
  }
  return out;
}

const storageWaits = (t) => STORAGE.filter((w) => w in t);

describe("hot path: storage waits and Server-Timing", () => {
  let relay, fake, s;
  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "hot-ok": "gpt-ok" } });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const chat = (key, extra = {}) =>
    relay.callJson("/v1/chat/completions", { key, body: { model: "hot-ok", max_tokens: 10, messages: [{ role: "user", content: `hot ${randomUUID()}` }], ...extra } });

  it("a key without limits: the first request reads its grant and config, a warm one waits on nothing of the relay's", async () => {
    const k = await relay.newKey(s.tenantId);
    const first = await chat(k.key);
    assert.equal(first.status, 200, first.text);
    assert.ok("d1" in serverTiming(first), `the key's grant was read: ${first.headers.get("server-timing")}`);
    const warm = await chat(k.key);
    assert.equal(warm.status, 200, warm.text);
    const t = serverTiming(warm);
    assert.deepEqual(storageWaits(t), [], `no storage wait: ${warm.headers.get("server-timing")}`);
    assert.ok("upstream" in t && "ttfb" in t, warm.headers.get("server-timing"));
    const streamed = await chat(k.key, { stream: true });
    assert.deepEqual(storageWaits(serverTiming(streamed)), [], streamed.headers.get("server-timing"));
  });

  it("a key with quotas on a default tenant: leased, so warm requests wait on no limiter", async () => {
    const tenant = await relay.adminOk("POST", "/admin/tenants", { name: `hot-${randomUUID()}`, models: null, limits: { day: { requests: 100_000 } } }, [201]);
    const k = await relay.newKey(tenant.id, { limits: { day: { tokens: 10_000_000 }, rpm: 100_000 } });
    const first = await chat(k.key);
    assert.equal(first.status, 200, first.text);
    assert.ok("limiter" in serverTiming(first), `the first request takes the leases: ${first.headers.get("server-timing")}`);
    for (let i = 0; i < 3; i++) {
      const warm = await chat(k.key);
      assert.equal(warm.status, 200, warm.text);
      assert.deepEqual(storageWaits(serverTiming(warm)), [], `warm request ${i}: ${warm.headers.get("server-timing")}`);
      assert.match(warm.headers.get("x-ratelimit-limit-requests") ?? "", /^\d+$/, "rate headers still come from the lease");
    }
  });

  it("a strict tenant decides each request at its limiters, and the wait is named", async () => {
    const tenant = await relay.adminOk("POST", "/admin/tenants", { name: `hot-strict-${randomUUID()}`, models: null, strict_limits: true }, [201]);
    const k = await relay.newKey(tenant.id, { limits: { rpm: 1000 } });
    await chat(k.key);
    const warm = await chat(k.key);
    assert.equal(warm.status, 200, warm.text);
    const t = serverTiming(warm);
    assert.deepEqual(storageWaits(t), ["limiter"], warm.headers.get("server-timing"));
  });

  it("errors carry Server-Timing too", async () => {
    const r = await chat("sk-er-not-a-key-0123456789abcdefghijklmnopqrstuv");
    assert.equal(r.status, 401);
    assert.ok("d1" in serverTiming(r), "the unknown key was looked up");
    const k = await relay.newKey(s.tenantId);
    const bad = await relay.callJson("/v1/chat/completions", { key: k.key, body: { model: "nope", messages: [{ role: "user", content: "x" }] } });
    assert.equal(bad.status, 404);
    assert.ok(serverTiming(bad).ttfb);
  });

  it("a change behind this isolate's back (another isolate's revocation) reaches it within the config TTL", async () => {
    const k = await relay.newKey(s.tenantId);
    assert.equal((await chat(k.key)).status, 200);
    // Revoked in D1 directly: this isolate was not told, as when another isolate made the change.
    const db = await relay.db();
    await db.prepare("UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE id = ?").bind(Date.now(), k.id).run();
    const refused = await pollUntil(() => chat(k.key), (r) => r.status === 401, { what: "the revocation seen", timeoutMs: 5_000 });
    assertOpenAIError(refused, { status: 401, code: "key_revoked" });
    // Through the admin API the isolate that made the change sees it at once.
    const k2 = await relay.newKey(s.tenantId);
    assert.equal((await chat(k2.key)).status, 200);
    await relay.adminOk("POST", `/admin/keys/${k2.id}/revoke`, undefined, [200]);
    assertOpenAIError(await chat(k2.key), { status: 401, code: "key_revoked" });
  });
});
