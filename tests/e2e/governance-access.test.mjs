// Governance: access rules of keys and tenants (src/rules.rs) — client address from the
// CF-Connecting-IP request header, country from request.cf.country, time windows — refuse with
// 403 access_denied on every relay route: OpenAI-shaped on /v1/chat/completions and /v1/models,
// Anthropic-shaped on /v1/messages. Refused requests go nowhere: not upstream, not to the limiter.
//
// How the client's address and country reach the Worker under Miniflare (verified, Miniflare 4):
// - request.cf comes from `mf.dispatchFetch(url, { cf: {...} })` (or an `MF-CF-Blob` header over
//   plain HTTP); the harness's default cf says country "US".
// - A CF-Connecting-IP header the client sends survives Miniflare's entry worker, over plain HTTP
//   and through dispatchFetch alike: the entry worker fills the header in from the socket's address
//   (127.0.0.1) only when it is absent. (What Miniflare strips is CF-Connecting-IP on the Worker's
//   OUTGOING fetches.) So an IP allowlist is tested with that header, and a request without it is
//   seen as coming from 127.0.0.1.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, assertOpenAIError } from "./harness.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";
import { assertAnthropicError, CLIENT_ANTHROPIC_VERSION } from "./anthropic-client.mjs";

const ROUTES = ["chat", "messages", "models"];

describe("governance: access rules", () => {
  let relay, fake, s;
  let seq = 0;
  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    // Strict, so the key's limiter counts each admitted request as it happens.
    s = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "a-ok": "gpt-ok" }, tenant: { strict_limits: true } });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  /** A key with these rules (and a generous request quota, to see what reached the limiter). */
  async function keyWith(rules, tenantId = s.tenantId) {
    return relay.adminOk(
      "POST",
      `/admin/tenants/${tenantId}/keys`,
      { name: `acc-${++seq}`, models: null, expires_at: null, limits: { day: { requests: 1000 } }, ...(rules ? { rules } : {}) },
      [201],
    );
  }

  /**
   * One request on `route` through mf.dispatchFetch with request.cf.country = country and, when
   * given, a CF-Connecting-IP header. Returns { status, headers, text, json, marker }.
   */
  async function send(route, key, { country = "DE", ip, http = false } = {}) {
    const marker = `acc-${randomUUID()}`;
    const headers = {};
    if (ip !== undefined) headers["cf-connecting-ip"] = ip;
    let path, init;
    if (route === "models") {
      path = "/v1/models";
      headers.authorization = `Bearer ${key}`;
      init = { method: "GET", headers };
    } else if (route === "chat") {
      path = "/v1/chat/completions";
      headers.authorization = `Bearer ${key}`;
      headers["content-type"] = "application/json";
      init = { method: "POST", headers, body: JSON.stringify({ model: "a-ok", messages: [{ role: "user", content: marker }] }) };
    } else {
      path = "/v1/messages";
      headers["x-api-key"] = key;
      headers["anthropic-version"] = CLIENT_ANTHROPIC_VERSION;
      headers["content-type"] = "application/json";
      init = { method: "POST", headers, body: JSON.stringify({ model: "a-ok", max_tokens: 64, messages: [{ role: "user", content: marker }] }) };
    }
    let res;
    if (http) {
      // Plain HTTP: request.cf through Miniflare's MF-CF-Blob header.
      init.headers = { ...headers, "MF-CF-Blob": JSON.stringify({ country }) };
      res = await fetch(relay.url + path, init);
    } else {
      res = await relay.mf.dispatchFetch(relay.url + path, { ...init, cf: { country } });
    }
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json, marker };
  }

  const reachedUpstream = (marker) => fake.find((r) => r.rawBody.includes(marker)).length > 0;

  /** Asserts a 403 access_denied in the route's format, naming the reason. */
  function assertDenied(route, r, reason) {
    if (route === "messages") {
      const e = assertAnthropicError(r, { status: 403, type: "permission_error" });
      assert.ok(e.message.includes(reason), `messages: ${e.message}`);
    } else {
      const e = assertOpenAIError(r, { status: 403, code: "access_denied", type: "permission_error" });
      assert.ok(e.message.includes(reason), `${route}: ${e.message}`);
    }
    assert.ok(!reachedUpstream(r.marker), `${route}: a denied request never goes upstream`);
  }
  function assertAllowed(route, r) {
    assert.equal(r.status, 200, `${route}: ${r.text}`);
    if (route === "models") assert.ok(r.json.data.some((m) => m.id === "a-ok"), r.text);
    else assert.ok(reachedUpstream(r.marker), `${route}: relayed`);
  }
  const requestsAt = async (keyId) => (await relay.adminOk("GET", `/admin/keys/${keyId}/limits`, undefined, [200])).usage.day.requests;

  it("countries_deny (request.cf.country): KP → 403 on every route, DE passes; denials never reach the limiter", async () => {
    const k = await keyWith({ countries_deny: ["KP"] });
    for (const route of ROUTES) assertDenied(route, await send(route, k.key, { country: "KP" }), "from this country");
    for (const route of ROUTES) assertAllowed(route, await send(route, k.key, { country: "DE" }));
    assert.equal(await requestsAt(k.id), 2, "only the two admitted relayed requests were counted");
    // The same through plain HTTP with Miniflare's MF-CF-Blob header.
    assertDenied("chat", await send("chat", k.key, { country: "KP", http: true }), "from this country");
    assertAllowed("chat", await send("chat", k.key, { country: "DE", http: true }));
  });

  it("countries_allow: FR → 403, DE passes", async () => {
    const k = await keyWith({ countries_allow: ["DE"] });
    for (const route of ROUTES) assertDenied(route, await send(route, k.key, { country: "FR" }), "from this country");
    for (const route of ROUTES) assertAllowed(route, await send(route, k.key, { country: "DE" }));
  });

  it("a tenant's rules apply to all its keys", async () => {
    const tenant = await relay.adminOk("POST", "/admin/tenants", { name: "acc-tenant", models: null, rules: { countries_deny: ["KP"] } }, [201]);
    const k = await keyWith(null, tenant.id);
    for (const route of ROUTES) assertDenied(route, await send(route, k.key, { country: "KP" }), "from this country");
    for (const route of ROUTES) assertAllowed(route, await send(route, k.key, { country: "DE" }));
    // Lifting the rule by PATCH takes effect at once.
    await relay.adminOk("PATCH", `/admin/tenants/${tenant.id}`, { rules: {} }, [200]);
    assertAllowed("chat", await send("chat", k.key, { country: "KP" }));
  });

  it("ip_allow (CF-Connecting-IP): inside the ranges passes, outside → 403, no header = 127.0.0.1 → 403", async () => {
    const k = await keyWith({ ip_allow: ["10.0.0.0/8", "2001:db8::/32"] });
    for (const route of ROUTES) {
      assertAllowed(route, await send(route, k.key, { ip: "10.1.2.3" }));
      assertAllowed(route, await send(route, k.key, { ip: "2001:db8::5" }));
      assertDenied(route, await send(route, k.key, { ip: "11.0.0.1" }), "from this address");
      assertDenied(route, await send(route, k.key, { ip: "2001:db9::1" }), "from this address");
      assertDenied(route, await send(route, k.key, {}), "from this address");
    }
    // Over plain HTTP too: the client's header is what the Worker sees.
    assertAllowed("chat", await send("chat", k.key, { ip: "10.9.9.9", http: true }));
    assertDenied("chat", await send("chat", k.key, { ip: "192.168.0.1", http: true }), "from this address");
    assertDenied("chat", await send("chat", k.key, { http: true }), "from this address");
  });

  it("a time window that excludes now → 403 at this time on every route; one that includes now passes", async () => {
    // Windows in UTC+1 (utc_offset_minutes 60), at least an hour away from now, so the test does
    // not depend on the minute it runs at.
    const offset = 60;
    const localHour = new Date(Date.now() + offset * 60_000).getUTCHours();
    const hh = (h) => `${String(((h % 24) + 24) % 24).padStart(2, "0")}:00`;
    const excluding = await keyWith({ windows: [{ start: hh(localHour + 2), end: hh(localHour + 3), utc_offset_minutes: offset }] });
    for (const route of ROUTES) assertDenied(route, await send(route, excluding.key), "at this time");
    const including = await keyWith({ windows: [{ start: hh(localHour - 1), end: hh(localHour + 2), utc_offset_minutes: offset }] });
    for (const route of ROUTES) assertAllowed(route, await send(route, including.key));
    // Days: the same hours on every weekday but the window's start day → 403; that day only → passes.
    const today = ((new Date(Date.now() + offset * 60_000).getUTCDay() + 6) % 7) + 1; // ISO weekday
    const w = (days) => ({ windows: [{ days, start: hh(localHour - 1), end: hh(localHour + 2), utc_offset_minutes: offset }] });
    // (A window belongs to its start day; starting an hour ago, it began today unless local
    // midnight passed within the last hour: then it began yesterday.)
    const startDay = localHour === 0 ? ((today + 5) % 7) + 1 : today;
    const other = await keyWith(w([1, 2, 3, 4, 5, 6, 7].filter((d) => d !== startDay)));
    assertDenied("chat", await send("chat", other.key), "at this time");
    const same = await keyWith(w([startDay]));
    assertAllowed("chat", await send("chat", same.key));
  });
});
