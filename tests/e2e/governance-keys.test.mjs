// Governance: key revocation (enforced by the key's Limiter Durable Object as well as D1), key
// rotation with a grace period, and admin validation of `limits` and `rules` on tenants and keys.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, assertOpenAIError, pollUntil } from "./harness.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";

describe("governance: revocation, rotation and validation", () => {
  let relay, fake, s;
  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "k-ok": "gpt-ok" } });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const chat = (key) =>
    relay.callJson("/v1/chat/completions", { key, body: { model: "k-ok", messages: [{ role: "user", content: `hi ${randomUUID()}` }] } });
  const models = (key) => relay.callJson("/v1/models", { key });

  describe("revocation", () => {
    it("POST /admin/keys/{id}/revoke → the next request gets 401 key_revoked", async () => {
      const k = await relay.newKey(s.tenantId);
      assert.equal((await chat(k.key)).status, 200);
      const r = await relay.adminOk("POST", `/admin/keys/${k.id}/revoke`, undefined, [200]);
      assert.equal(r.status, "revoked");
      assert.ok(Number.isInteger(r.revoked_at), `revoked_at: ${r.revoked_at}`);
      assertOpenAIError(await chat(k.key), { status: 401, code: "key_revoked" });
      assertOpenAIError(await models(k.key), { status: 401, code: "key_revoked" });
      const lim = await relay.adminOk("GET", `/admin/keys/${k.id}/limits`, undefined, [200]);
      assert.equal(lim.usage.revoked, true, "the key's limiter knows it is revoked");
    });

    it("a strict tenant's key is refused by its Durable Object even where D1 (a stale cache) still says active", async () => {
      // Strict tenants consult the key's limiter on every request, so revocation there holds
      // everywhere at once; others rely on the cached grant (within CONFIG_CACHE_TTL_MS).
      const strict = await relay.adminOk("POST", "/admin/tenants", { name: "gov-strict", models: null, strict_limits: true }, [201]);
      const k = await relay.newKey(strict.id);
      assert.equal((await chat(k.key)).status, 200);
      await relay.adminOk("POST", `/admin/keys/${k.id}/revoke`, undefined, [200]);
      // Put D1 back to "active" behind the relay's back: what another isolate with a cached
      // grant would still believe. Only the limiter can refuse the key now.
      const db = await relay.db();
      await db.prepare("UPDATE api_keys SET status = 'active', revoked_at = NULL WHERE id = ?").bind(k.id).run();
      const marker = `revoked-do-${randomUUID()}`;
      const r = await relay.callJson("/v1/chat/completions", {
        key: k.key,
        body: { model: "k-ok", messages: [{ role: "user", content: marker }] },
      });
      assertOpenAIError(r, { status: 401, code: "key_revoked" });
      assert.equal(fake.find((q) => q.rawBody.includes(marker)).length, 0, "nothing went upstream");
    });
  });

  describe("rotation", () => {
    it("grace_seconds n: 201 with the new plaintext; the old key works until now + n, then 401 key_expired", async () => {
      const GRACE = 4;
      const old = await relay.newKey(s.tenantId);
      assert.equal((await chat(old.key)).status, 200);
      const t0 = Date.now();
      const r = await relay.admin("POST", `/admin/keys/${old.id}/rotate`, { grace_seconds: GRACE });
      const t1 = Date.now();
      assert.equal(r.status, 201, r.text);
      const fresh = r.json;
      assert.match(fresh.key ?? "", /^sk-/, "the new key's plaintext is shown");
      assert.notEqual(fresh.key, old.key);
      assert.notEqual(fresh.id, old.id);
      assert.equal(fresh.tenant_id, old.tenant_id);
      assert.equal(fresh.status, "active");
      assert.ok(fresh.replaces && typeof fresh.replaces === "object", `replaces: ${r.text}`);
      assert.equal(fresh.replaces.id, old.id);
      assert.equal(fresh.replaces.replaced_by, fresh.id);
      assert.ok(!("key" in fresh.replaces) && !("key_hash" in fresh.replaces), "the old key's secret is not shown");
      const exp = fresh.replaces.expires_at;
      assert.ok(exp >= t0 + GRACE * 1000 - 5 && exp <= t1 + GRACE * 1000 + 5, `expires_at ${exp} = now + ${GRACE}s (${t0}..${t1})`);
      const got = await relay.adminOk("GET", `/admin/keys/${old.id}`, undefined, [200]);
      assert.equal(got.expires_at, exp);
      assert.equal(got.replaced_by, fresh.id);

      assert.equal((await chat(fresh.key)).status, 200, "the new key works");
      const during = await chat(old.key);
      assert.ok(Date.now() < exp, "still inside the grace period (the machine was not too slow)");
      assert.equal(during.status, 200, `the old key works during the grace period: ${during.text}`);

      // Expiry is a time-based effect: bounded polling until the old key is refused.
      const refused = await pollUntil(() => models(old.key), (x) => x.status !== 200, {
        timeoutMs: GRACE * 1000 + 10_000,
        intervalMs: 100,
        what: "old key refused after its grace period",
      });
      const at = Date.now();
      assertOpenAIError(refused, { status: 401, code: "key_expired" });
      assert.ok(at >= exp - 50, `not refused before expires_at (${at} vs ${exp})`);
      assertOpenAIError(await chat(old.key), { status: 401, code: "key_expired" });
      assert.equal((await chat(fresh.key)).status, 200, "the new key still works");
    });

    it("grace_seconds 0: the old key stops at once", async () => {
      const old = await relay.newKey(s.tenantId);
      assert.equal((await chat(old.key)).status, 200);
      const r = await relay.admin("POST", `/admin/keys/${old.id}/rotate`, { grace_seconds: 0 });
      assert.equal(r.status, 201, r.text);
      assert.ok(r.json.replaces.expires_at <= Date.now());
      assertOpenAIError(await chat(old.key), { status: 401, code: "key_expired" });
      assertOpenAIError(await models(old.key), { status: 401, code: "key_expired" });
      assert.equal((await chat(r.json.key)).status, 200);
    });

    it("rotating a revoked key → 400", async () => {
      const k = await relay.newKey(s.tenantId);
      await relay.adminOk("POST", `/admin/keys/${k.id}/revoke`, undefined, [200]);
      const before = await relay.adminOk("GET", `/admin/tenants/${s.tenantId}/keys`, undefined, [200]);
      const r = await relay.admin("POST", `/admin/keys/${k.id}/rotate`, { grace_seconds: 60 });
      assertOpenAIError(r, { status: 400 });
      assert.ok(!("key" in r.json), "no new key is shown");
      const after = await relay.adminOk("GET", `/admin/tenants/${s.tenantId}/keys`, undefined, [200]);
      assert.equal(after.data.length, before.data.length, "no key was created");
      const got = await relay.adminOk("GET", `/admin/keys/${k.id}`, undefined, [200]);
      assert.equal(got.replaced_by ?? null, null, "the revoked key names no replacement");
      assert.equal(got.status, "revoked");
    });
  });

  describe("validation of limits and rules", () => {
    // Each bad body on each of the four routes that take limits and rules.
    const cases = [
      ["limits.rpm 0", { limits: { rpm: 0 } }, "limits.rpm"],
      // JSON.stringify writes 1e15 as the integer 1000000000000000.
      ["limits.day.tokens 1e15", { limits: { day: { tokens: 1e15 } } }, "limits.day.tokens"],
      ["rules.ip_allow /33", { rules: { ip_allow: ["10.0.0.0/33"] } }, "rules.ip_allow[0]"],
    ];
    let tenantId, keyId;
    before(async () => {
      tenantId = (await relay.adminOk("POST", "/admin/tenants", { name: "gov-validate", limits: { rpm: 5 } }, [201])).id;
      keyId = (await relay.newKey(tenantId, { limits: { rpm: 7 } })).id;
    });
    const routes = () => [
      ["POST /admin/tenants", "POST", "/admin/tenants", { name: "bad" }],
      ["PATCH /admin/tenants/{id}", "PATCH", `/admin/tenants/${tenantId}`, {}],
      ["POST /admin/tenants/{id}/keys", "POST", `/admin/tenants/${tenantId}/keys`, { name: "bad" }],
      ["PATCH /admin/keys/{id}", "PATCH", `/admin/keys/${keyId}`, {}],
    ];

    for (const [what, bad, param] of cases) {
      it(`${what} → 400 naming ${param} on every route`, async () => {
        for (const [route, method, path, base] of routes()) {
          const r = await relay.admin(method, path, { ...base, ...bad });
          const e = assertOpenAIError(r, { status: 400 });
          assert.equal(e.param, param, `${route}: ${r.text}`);
          assert.ok(e.message.includes(param), `${route}: the message names ${param}: ${e.message}`);
        }
        // Nothing changed: the tenant and key keep their limits, no key or tenant was added.
        assert.deepEqual((await relay.adminOk("GET", `/admin/tenants/${tenantId}`, undefined, [200])).limits, { rpm: 5 });
        assert.deepEqual((await relay.adminOk("GET", `/admin/keys/${keyId}`, undefined, [200])).limits, { rpm: 7 });
        const keys = await relay.adminOk("GET", `/admin/tenants/${tenantId}/keys`, undefined, [200]);
        assert.equal(keys.data.length, 1);
        const tenants = await relay.adminOk("GET", "/admin/tenants", undefined, [200]);
        assert.ok(!tenants.data.some((t) => t.name === "bad"), "no tenant was created");
      });
    }

    it("an unknown limits field (rmp) → 400 naming it on every route", async () => {
      for (const [route, method, path, base] of routes()) {
        const r = await relay.admin(method, path, { ...base, limits: { rmp: 5 } });
        const e = assertOpenAIError(r, { status: 400 });
        assert.ok(e.param === "limits" || e.param === "limits.rmp", `${route}: param ${e.param}`);
        assert.ok(`${e.param} ${e.message}`.includes("rmp"), `${route}: names the field rmp: ${r.text}`);
      }
    });

    it("an unknown field inside a quota (limits.day.reqests) → 400 naming it", async () => {
      // A misspelt quota accepted silently would leave the key unlimited (as a misspelt rule
      // would leave it open, which rules refuse by name).
      for (const [route, method, path, base] of routes()) {
        const named = "name" in base ? { name: "bad-quota" } : {};
        const r = await relay.admin(method, path, { ...named, limits: { day: { reqests: 5 } } });
        const e = assertOpenAIError(r, { status: 400 });
        assert.ok(`${e.param} ${e.message}`.includes("reqests"), `${route}: names the field reqests: ${r.text}`);
      }
    });

    it("valid limits and rules are stored and shown back", async () => {
      const limits = { rpm: 60, tpm: 100000, burst_requests: 0, concurrency: 4, day: { requests: 5, tokens: 1000 }, week: { requests: 50 }, month: { tokens: 100000 }, utc_offset_minutes: 60 };
      const rules = { ip_allow: ["10.0.0.0/8"], countries_allow: ["DE"], countries_deny: ["KP"], windows: [{ days: [1, 2, 3, 4, 5], start: "09:00", end: "17:00", utc_offset_minutes: 60 }] };
      const k = await relay.admin("PATCH", `/admin/keys/${keyId}`, { limits, rules });
      assert.equal(k.status, 200, k.text);
      const got = await relay.adminOk("GET", `/admin/keys/${keyId}`, undefined, [200]);
      for (const [f, v] of Object.entries(limits)) {
        if (f !== "burst_requests") assert.deepEqual(got.limits[f], v, `limits.${f}`);
      }
      assert.deepEqual(got.rules, rules);
      const lim = await relay.adminOk("GET", `/admin/keys/${keyId}/limits`, undefined, [200]);
      assert.deepEqual(lim.limits, got.limits);
      const t = await relay.admin("PATCH", `/admin/tenants/${tenantId}`, { limits: { month: { requests: 10 } }, rules: { countries_deny: ["kp"] } });
      assert.equal(t.status, 200, t.text);
      assert.deepEqual(t.json.limits, { month: { requests: 10 } });
      assert.deepEqual(t.json.rules, { countries_deny: ["KP"] });
    });
  });
});
