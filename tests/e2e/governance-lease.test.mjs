// Governance, lease mode (governance/limits/lease.rs, edge/objects/limiter.rs) — the default: an
// isolate takes capacity from the key's limiter in one call and decides later requests on its
// own (`lease_ms` sets the lease's length, 2 s unless the tenant chooses). These tests show the lease is taken (the limiter holds more than the one request made),
// that it never admits beyond a quota even under 64-way concurrency, and that what a lease did
// not use goes back to the limiter when it is returned.
//
// Synchronisation: settlement runs in waitUntil; it is awaited by bounded polling of
// GET /admin/keys/{id}/limits, never by sleeping.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, assertOpenAIError, pollUntil } from "./harness.mjs";
import { startFakeOpenAI, CHAT_USAGE } from "./fake-openai.mjs";

describe("governance: lease mode", () => {
  let relay, fake;
  let seq = 0;

  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "l-ok": "gpt-ok" } });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  async function leasedKey({ leaseMs = 60_000, keyLimits } = {}) {
    const tenant = await relay.adminOk("POST", "/admin/tenants", { name: `lease-${++seq}`, models: null, lease_ms: leaseMs }, [201]);
    assert.equal(tenant.lease_ms, leaseMs, "the tenant shows its lease length");
    const body = { name: `lease-key-${seq}`, models: null, expires_at: null };
    if (keyLimits) body.limits = keyLimits;
    const key = await relay.adminOk("POST", `/admin/tenants/${tenant.id}/keys`, body, [201]);
    return { tenant, key };
  }
  const keyLimits = (id) => relay.adminOk("GET", `/admin/keys/${id}/limits`, undefined, [200]);
  const chat = (key, marker) =>
    relay.callJson("/v1/chat/completions", { key, body: { model: "l-ok", max_tokens: 10, messages: [{ role: "user", content: marker }] } });
  const upstreamHits = (marker) => fake.find((r) => r.rawBody.includes(marker)).length;

  it("one request takes a lease of several: the limiter holds more than it was asked for", async () => {
    const { key } = await leasedKey({ keyLimits: { day: { requests: 1000 } } });
    const r = await chat(key.key, `lease-one-${randomUUID()}`);
    assert.equal(r.status, 200, r.text);
    const held = await keyLimits(key.id);
    // A lease of at least 8 requests was taken from the limiter, and it is still out (held
    // like a reservation) although the only request made has finished.
    assert.ok(held.usage.day.requests >= 8, `leased requests counted: ${JSON.stringify(held.usage.day)}`);
    assert.equal(held.usage.in_flight, 1, "the lease is held at the limiter");
    // The next requests are admitted from it: the limiter's count does not move.
    for (let i = 0; i < 3; i++) assert.equal((await chat(key.key, `lease-more-${i}`)).status, 200);
    const after = await keyLimits(key.id);
    assert.equal(after.usage.day.requests, held.usage.day.requests, "decided in the isolate, not at the limiter");
  });

  it("exactness: day.requests = 10 admits exactly 10 of 64 concurrent requests in lease mode", async () => {
    const N = 10;
    const { key } = await leasedKey({ keyLimits: { day: { requests: N } } });
    const marker = `lease-exact-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 64 }, () => chat(key.key, marker)));
    const ok = results.filter((r) => r.status === 200);
    assert.equal(ok.length, N, `admitted: ${results.map((r) => r.status).join(",")}`);
    for (const r of results.filter((r) => r.status !== 200)) {
      const e = assertOpenAIError(r, { status: 429, code: "insufficient_quota", type: "insufficient_quota" });
      assert.match(e.message, /requests per day/);
    }
    assert.equal(upstreamHits(marker), N, "refused requests never reach the upstream");
    assert.ok((await keyLimits(key.id)).usage.day.requests <= N, "never more than the quota leased");
  });

  it("a finished lease is returned: what it did not use is given back, what it used is recorded", async () => {
    // A lease of 100 ms: after it ends, the next settled request returns it.
    const { key } = await leasedKey({ leaseMs: 100, keyLimits: { day: { requests: 1000, tokens: 1_000_000 } } });
    const first = await chat(key.key, `lease-return-1-${randomUUID()}`);
    assert.equal(first.status, 200, first.text);
    const leased = await keyLimits(key.id);
    assert.ok(leased.usage.day.requests >= 8, JSON.stringify(leased.usage.day));
    // Once the lease has expired, a request takes a second lease, and its settlement returns
    // the first: the limiter then holds one lease (the second) and, of the first, only the
    // one request it served. Without the return it would hold both leases in full.
    const l = await pollUntil(
      async () => {
        const r = await chat(key.key, `lease-return-n-${randomUUID()}`);
        assert.equal(r.status, 200, r.text);
        return keyLimits(key.id);
      },
      (l) => l.usage.in_flight === 1 && l.usage.day.requests > leased.usage.day.requests,
      { what: "a second lease taken and the first returned", timeoutMs: 15_000 },
    );
    assert.ok(
      l.usage.day.requests < 2 * leased.usage.day.requests,
      `the unused part of the first lease came back: ${JSON.stringify(l.usage.day)} after ${JSON.stringify(leased.usage.day)}`,
    );
    assert.ok(l.usage.day.tokens >= CHAT_USAGE.total_tokens, "what the first lease used is recorded");
  });

  it("a key with a concurrency limit is decided at the limiter, lease mode or not", async () => {
    const { key } = await leasedKey({ keyLimits: { concurrency: 5 } });
    const r = await chat(key.key, `lease-conc-${randomUUID()}`);
    assert.equal(r.status, 200, r.text);
    const l = await pollUntil(() => keyLimits(key.id), (l) => l.usage.in_flight === 0, { what: "settled" });
    assert.equal(l.usage.day.requests, 1, "one request, no lease");
  });

  it("bad lease_ms is a 400 naming the field", async () => {
    for (const lease_ms of [5, 10_000_000, -1, "2s"]) {
      const r = await relay.admin("POST", "/admin/tenants", { name: "bad-lease", lease_ms });
      assertOpenAIError(r, { status: 400, param: "lease_ms" });
    }
  });

  /** Sequential requests until the first refusal; returns how many were served. */
  async function serveUntilRefused(key, max = 100) {
    for (let n = 0; n < max; n++) {
      const r = await chat(key, `seq-${randomUUID()}`);
      if (r.status === 429) {
        assertOpenAIError(r, { status: 429, code: "insufficient_quota" });
        return n;
      }
      assert.equal(r.status, 200, r.text);
    }
    return max;
  }

  it("a tenant with no lease_ms is in lease mode by default; strict_limits decides each request at the limiter", async () => {
    const plain = await relay.adminOk("POST", "/admin/tenants", { name: `default-${++seq}`, models: null }, [201]);
    const key = await relay.adminOk("POST", `/admin/tenants/${plain.id}/keys`, { name: "d", models: null, expires_at: null, limits: { day: { requests: 1000 } } }, [201]);
    assert.equal((await chat(key.key, `default-${randomUUID()}`)).status, 200);
    assert.ok((await keyLimits(key.id)).usage.day.requests >= 8, "a lease of several requests was taken");
    const strict = await relay.adminOk("POST", "/admin/tenants", { name: `strict-${++seq}`, models: null, strict_limits: true }, [201]);
    assert.equal(strict.strict_limits, true, "the tenant shows it");
    const skey = await relay.adminOk("POST", `/admin/tenants/${strict.id}/keys`, { name: "s", models: null, expires_at: null, limits: { day: { requests: 1000 } } }, [201]);
    assert.equal((await chat(skey.key, `strict-${randomUUID()}`)).status, 200);
    const l = await pollUntil(() => keyLimits(skey.id), (l) => l.usage.in_flight === 0, { what: "settled at the limiter" });
    assert.equal(l.usage.day.requests, 1, "one request, one decision");
    assertOpenAIError(await relay.admin("PATCH", `/admin/tenants/${strict.id}`, { strict_limits: "yes" }), { status: 400, param: "strict_limits" });
  });

  it("no quota is stranded: a leased key serves as many sequential requests as a strict one", async () => {
    // day.tokens = 400 and requests of a fixed size: the strict key serves exactly what fits;
    // the leased key must serve the same, although leases hold a share of what remains and
    // expire unreturned while every later request is refused.
    const limits = { day: { tokens: 400 } };
    const strictTenant = await relay.adminOk("POST", "/admin/tenants", { name: `strand-s-${++seq}`, models: null, strict_limits: true }, [201]);
    const strictKey = await relay.adminOk("POST", `/admin/tenants/${strictTenant.id}/keys`, { name: "s", models: null, expires_at: null, limits }, [201]);
    const { key: leased } = await leasedKey({ leaseMs: 2000, keyLimits: limits });
    const strictServed = await serveUntilRefused(strictKey.key);
    assert.ok(strictServed > 3, `the strict key served ${strictServed}`);
    const leasedServed = await serveUntilRefused(leased.key);
    assert.equal(leasedServed, strictServed, "the leased key serves as many as the strict one");
    // And the quota it used is what those requests used, once its leases are back.
    const used = (await pollUntil(() => keyLimits(leased.id), (l) => l.usage.in_flight === 0, { what: "leases returned", timeoutMs: 15_000, onPoll: () => chat(leased.key, "nudge") })).usage.day.tokens;
    assert.equal(used, strictServed * CHAT_USAGE.total_tokens);
  });
});
