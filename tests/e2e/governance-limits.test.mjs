// Governance: rate limits, concurrency and calendar quotas enforced by the Limiter Durable Object
// (src/limits.rs, src/edge/limiter.rs). Every relayed request reserves its worst case (prompt
// estimate + max_tokens, or 4096 without one) at the key's limiter — and the tenant's, when the
// tenant has limits — before it goes upstream, and settles to its real total when its usage row
// is written (0 for an upstream failure, the tokens produced so far for a client that left).
//
// Synchronisation: slow-stream / drip-stream upstreams hold requests open until fake.release();
// settlement runs in waitUntil, so only it is awaited by bounded polling of GET …/limits.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, assertOpenAIError, requestId, sse, sseEvents, within, pollUntil } from "./harness.mjs";
import { startFakeOpenAI, CHAT_USAGE } from "./fake-openai.mjs";

const PERIOD_FIELDS = ["start_ms", "end_ms", "requests", "tokens", "cost_micros"];

/** Asserts the shape of GET /admin/{keys,tenants}/{id}/limits. */
function assertLimitsShape(json, where) {
  const w = `${where}: ${JSON.stringify(json)}`;
  assert.ok(json && typeof json === "object" && "limits" in json && "usage" in json, w);
  const u = json.usage;
  assert.equal(typeof u.revoked, "boolean", `usage.revoked ${w}`);
  assert.ok(Number.isInteger(u.in_flight) && u.in_flight >= 0, `usage.in_flight ${w}`);
  for (const p of ["day", "week", "month"]) {
    for (const f of PERIOD_FIELDS) assert.ok(Number.isInteger(u[p]?.[f]), `usage.${p}.${f} ${w}`);
    assert.ok(u[p].start_ms <= Date.now() + 5_000 && Date.now() - 5_000 < u[p].end_ms, `usage.${p} covers now ${w}`);
  }
  assert.ok(u.rate && typeof u.rate === "object", `usage.rate ${w}`);
}

/** Asserts a 429 from a limiter: code, type, message naming limit and scope, Retry-After ≥ 1. */
function assertRefusal(r, { code, scope, limit }) {
  const type = code === "insufficient_quota" ? "insufficient_quota" : "rate_limit_error";
  const e = assertOpenAIError(r, { status: 429, code, type });
  const what = code === "insufficient_quota" ? "quota" : "limit";
  assert.ok(
    e.message.includes(`The ${scope}'s ${what} of ${limit} has been reached.`),
    `message names the ${scope}'s ${limit} ${what}: ${e.message}`,
  );
  const ra = r.headers.get("retry-after");
  assert.match(ra ?? "", /^\d+$/, `Retry-After is whole seconds: ${ra}`);
  assert.ok(Number(ra) >= 1, `Retry-After ≥ 1: ${ra}`);
  return { e, retryAfter: Number(ra) };
}

describe("governance: limits, quotas and reservations", () => {
  let relay, fake;
  let seq = 0;

  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    // One channel and model map for the whole file; every test makes its own tenant and key.
    await relay.seed({
      upstreamBaseUrl: fake.baseUrl,
      models: { "g-ok": "gpt-ok", "g-slow": "slow-stream", "g-drip": "drip-stream", "g-500": "err-500" },
    });
  }, { timeout: 60_000 });
  after(async () => {
    fake?.release();
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  /** A new tenant (optionally with limits) and one key (optionally with limits). The tenant is
   *  strict: every request is decided at the limiter, so what the limiter holds is what one
   *  request reserved and settled (lease mode, the default, is governance-lease.test.mjs). */
  async function tenantAndKey({ tenantLimits, keyLimits } = {}) {
    const n = ++seq;
    const tenantBody = { name: `gov-tenant-${n}`, models: null, strict_limits: true };
    if (tenantLimits) tenantBody.limits = tenantLimits;
    const tenant = await relay.adminOk("POST", "/admin/tenants", tenantBody, [201]);
    const key = await newKey(tenant.id, keyLimits);
    return { tenant, key };
  }
  async function newKey(tenantId, limits) {
    const body = { name: `gov-key-${++seq}`, models: null, expires_at: null };
    if (limits) body.limits = limits;
    return relay.adminOk("POST", `/admin/tenants/${tenantId}/keys`, body, [201]);
  }

  const keyLimits = (id) => relay.adminOk("GET", `/admin/keys/${id}/limits`, undefined, [200]);
  const tenantLimits = (id) => relay.adminOk("GET", `/admin/tenants/${id}/limits`, undefined, [200]);
  /** Polls a limiter until nothing is in flight (every reservation settled). */
  const settled = (get, id, opts = {}) =>
    pollUntil(() => get(id), (j) => j.usage.in_flight === 0, { what: `in_flight 0 at ${id}`, ...opts });

  const chatBody = (model, marker, extra = {}) => ({ model, messages: [{ role: "user", content: marker }], ...extra });
  const upstreamHits = (marker) => fake.find((r) => r.rawBody.includes(marker)).length;

  it("exactness: day.requests = 10 admits exactly 10 of 64 concurrent requests", async () => {
    const N = 10;
    const { key } = await tenantAndKey({ keyLimits: { day: { requests: N } } });
    const marker = `exact-req-${randomUUID()}`;
    const results = await Promise.all(
      Array.from({ length: 64 }, () => relay.callJson("/v1/chat/completions", { key: key.key, body: chatBody("g-ok", marker) })),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status !== 200);
    assert.equal(ok.length, N, `admitted: statuses ${results.map((r) => r.status).join(",")}`);
    assert.equal(refused.length, 64 - N);
    for (const r of refused) assertRefusal(r, { code: "insufficient_quota", scope: "key", limit: "requests per day" });
    assert.equal(upstreamHits(marker), N, "refused requests never reach the upstream");

    const now = await keyLimits(key.id);
    assertLimitsShape(now, "key limits");
    assert.deepEqual(now.limits, { day: { requests: N } });
    assert.equal(now.usage.day.requests, N, "the limiter counted exactly N requests");
    const done = await settled(keyLimits, key.id);
    assert.equal(done.usage.day.requests, N);
    assert.equal(done.usage.day.tokens, N * CHAT_USAGE.total_tokens, "each settled to its reported total");
  });

  it("exactness: a token quota admits floor(T / worst case) requests while they overlap; settled usage ≤ T", async () => {
    const T = 1000;
    const m = 300;
    const K = 8;
    const { key } = await tenantAndKey({ keyLimits: { day: { tokens: T } } });
    const marker = `exact-tok-${randomUUID().slice(0, 8)}`;
    // slow-stream: the upstream sends its first chunks and then holds every stream open until
    // fake.release(), so all K reservations overlap.
    const responses = await Promise.all(
      Array.from({ length: K }, () =>
        relay.call("/v1/chat/completions", { key: key.key, body: chatBody("g-slow", marker, { stream: true, max_tokens: m }) }),
      ),
    );
    const admitted = responses.filter((r) => r.status === 200);
    const refused = responses.filter((r) => r.status !== 200);
    try {
      // While every admitted request is still open: the limiter holds each one's worst case.
      const held = await keyLimits(key.id);
      assert.equal(held.usage.in_flight, admitted.length, "in flight = admitted, all held open");
      assert.equal(held.usage.day.requests, admitted.length);
      assert.ok(admitted.length >= 1, "at least one request fits the quota");
      assert.equal(held.usage.day.tokens % admitted.length, 0, `equal reservations: ${held.usage.day.tokens}`);
      const worst = held.usage.day.tokens / admitted.length;
      const promptBytes = marker.length;
      assert.ok(
        worst > m && worst <= m + Math.ceil((promptBytes + 16) / 4),
        `worst case = prompt estimate + max_tokens (${m}): ${worst}`,
      );
      assert.equal(admitted.length, Math.floor(T / worst), `admitted = floor(${T} / ${worst})`);
      assert.ok(held.usage.day.tokens <= T, "reservations never exceed the quota");
      for (const res of refused) {
        const text = await res.text();
        const r = { status: res.status, headers: res.headers, text, json: JSON.parse(text) };
        assertRefusal(r, { code: "insufficient_quota", scope: "key", limit: "tokens per day" });
      }
      assert.equal(refused.length, K - admitted.length);
    } finally {
      fake.release();
    }
    const ids = [];
    for (const res of admitted) {
      ids.push(requestId(res));
      const events = await within(sse(res), 15_000, "stream end");
      assert.equal(events.at(-1)?.data, "[DONE]");
    }
    const done = await settled(keyLimits, key.id);
    assert.equal(done.usage.day.requests, admitted.length);
    assert.ok(done.usage.day.tokens > 0 && done.usage.day.tokens <= T, `settled tokens ≤ T: ${done.usage.day.tokens}`);
    let rowTotal = 0;
    for (const id of ids) rowTotal += (await relay.usageRow(id)).total_tokens;
    assert.equal(done.usage.day.tokens, rowTotal, "settled to the usage rows' totals");
  });

  it("concurrency 2: a third overlapping request gets 429 rate_limit_exceeded; after release a new one passes", async () => {
    const { key } = await tenantAndKey({ keyLimits: { concurrency: 2 } });
    const marker = `conc-${randomUUID()}`;
    const body = chatBody("g-slow", marker, { stream: true });
    const open = [];
    try {
      for (let i = 0; i < 2; i++) {
        const res = await relay.call("/v1/chat/completions", { key: key.key, body });
        assert.equal(res.status, 200, `request ${i + 1} admitted`);
        open.push(res);
      }
      const third = await relay.callJson("/v1/chat/completions", { key: key.key, body });
      assertRefusal(third, { code: "rate_limit_exceeded", scope: "key", limit: "concurrent requests" });
      assert.equal(upstreamHits(marker), 2, "the refused request never went upstream");
      assert.equal((await keyLimits(key.id)).usage.in_flight, 2);
    } finally {
      fake.release();
    }
    for (const res of open) await within(sse(res), 15_000, "stream end");
    await settled(keyLimits, key.id);
    const again = await relay.callJson("/v1/chat/completions", { key: key.key, body: chatBody("g-ok", marker) });
    assert.equal(again.status, 200, again.text);
  });

  it("rpm 3: x-ratelimit-* on admitted responses; the 4th gets 429 with Retry-After and remaining 0", async () => {
    const { key } = await tenantAndKey({ keyLimits: { rpm: 3, tpm: 100_000 } });
    const marker = `rpm-${randomUUID()}`;
    for (let i = 0; i < 3; i++) {
      const r = await relay.callJson("/v1/chat/completions", { key: key.key, body: chatBody("g-ok", marker) });
      assert.equal(r.status, 200, r.text);
      const h = (n) => r.headers.get(n);
      assert.equal(h("x-ratelimit-limit-requests"), "3", `request ${i + 1}`);
      assert.equal(h("x-ratelimit-remaining-requests"), String(2 - i), `request ${i + 1}`);
      assert.match(h("x-ratelimit-reset-requests") ?? "", /^(\d+ms|(\d+h)?(\d+m)?\d+s)$/, `reset-requests of request ${i + 1}`);
      assert.equal(h("x-ratelimit-limit-tokens"), "100000");
      assert.match(h("x-ratelimit-remaining-tokens") ?? "", /^\d+$/);
      assert.ok(Number(h("x-ratelimit-remaining-tokens")) < 100_000, "the reservation is taken from the token bucket");
      assert.match(h("x-ratelimit-reset-tokens") ?? "", /^(\d+ms|(\d+h)?(\d+m)?\d+s)$/);
    }
    const fourth = await relay.callJson("/v1/chat/completions", { key: key.key, body: chatBody("g-ok", marker) });
    const { retryAfter } = assertRefusal(fourth, { code: "rate_limit_exceeded", scope: "key", limit: "requests per minute" });
    assert.ok(retryAfter <= 20, `one request refills every 20 s at 3 rpm: Retry-After ${retryAfter}`);
    assert.equal(fourth.headers.get("x-ratelimit-limit-requests"), "3");
    assert.equal(fourth.headers.get("x-ratelimit-remaining-requests"), "0");
    assert.match(fourth.headers.get("x-ratelimit-reset-requests") ?? "", /^(\d+ms|(\d+h)?(\d+m)?\d+s)$/);
    assert.equal(fourth.headers.get("x-ratelimit-limit-tokens"), "100000");
    assert.match(fourth.headers.get("x-ratelimit-remaining-tokens") ?? "", /^\d+$/);
    assert.ok(fourth.headers.get("x-ratelimit-reset-tokens"));
    assert.equal(upstreamHits(marker), 3);
  });

  it("reserve before upstream, settle to the real total; a failing upstream settles to 0", async () => {
    const { key } = await tenantAndKey({ keyLimits: { day: { tokens: 1_000_000 } } });
    // Held at the upstream (slow-stream, non-stream: it answers after fake.release()).
    const marker = `hold-${randomUUID()}`;
    const pending = relay.callJson("/v1/chat/completions", { key: key.key, body: chatBody("g-slow", marker, { max_tokens: 500 }) });
    try {
      await fake.waitForRequest((r) => r.rawBody.includes(marker));
      const held = await keyLimits(key.id);
      assert.equal(held.usage.in_flight, 1, "reserved while the upstream works");
      assert.ok(held.usage.day.tokens > 500, `the worst case is held: ${held.usage.day.tokens}`);
    } finally {
      fake.release();
    }
    const ok = await within(pending, 15_000, "held request");
    assert.equal(ok.status, 200, ok.text);
    let done = await settled(keyLimits, key.id);
    assert.equal(done.usage.day.tokens, CHAT_USAGE.total_tokens, "settled to the reported total");

    const failMarker = `fail-${randomUUID()}`;
    const failed = await relay.callJson("/v1/chat/completions", { key: key.key, body: chatBody("g-500", failMarker) });
    assert.ok(failed.status >= 500, `upstream 500 → relay ${failed.status}: ${failed.text}`);
    // The relay retries a 5xx (3 attempts by default, all on the one channel here): each attempt
    // went upstream, and the request is still one request, settled at zero.
    assert.equal(upstreamHits(failMarker), 3, "the failing request went upstream, retried");
    done = await settled(keyLimits, key.id);
    assert.equal(done.usage.day.requests, 2, "the failed request still counts as a request");
    assert.equal(done.usage.day.tokens, CHAT_USAGE.total_tokens, "the failed request's reservation settled to 0");
  });

  it("client disconnect mid-stream: settles to the tokens produced so far (> 0, < reservation)", async () => {
    const { key } = await tenantAndKey({ keyLimits: { day: { tokens: 1_000_000 } } });
    const marker = `drip-${randomUUID()}`;
    const ac = new AbortController();
    const res = await relay.call("/v1/chat/completions", {
      key: key.key,
      body: chatBody("g-drip", marker, { stream: true, max_tokens: 1000 }),
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    const id = requestId(res);
    let reserved;
    const events = sseEvents(res);
    try {
      for (let got = false; !got; ) {
        const { value, done } = await within(events.next(), 10_000, "first content chunk");
        assert.ok(!done, "stream ended before its first content chunk");
        got = !!JSON.parse(value.data).choices?.[0]?.delta?.content;
      }
      const held = await keyLimits(key.id);
      assert.equal(held.usage.in_flight, 1);
      reserved = held.usage.day.tokens;
      assert.ok(reserved > 1000, `reservation = prompt estimate + max_tokens: ${reserved}`);
      await events.return();
      ac.abort();
      // drip-stream never ends: each poll lets it send one more chunk, whose failed delivery
      // tells the relay that the client left.
      const done = await settled(keyLimits, key.id, { timeoutMs: 15_000, onPoll: () => fake.release() });
      const tokens = done.usage.day.tokens;
      assert.ok(tokens > 0 && tokens < reserved, `settled ${tokens}: > 0 and < reserved ${reserved}`);
      const row = await relay.usageRow(id);
      assert.equal(tokens, row.total_tokens, "settled to the usage row's total");
    } finally {
      fake.release();
    }
  });

  it("tenant limits sit above keys: 3 requests a day across two keys; a tenant refusal costs the key nothing", async () => {
    // The keys have generous limits of their own, so their limiters count what they hold (a
    // key without limits is consulted only for revocation and counts nothing).
    const keyQuota = { day: { requests: 1000 } };
    const { tenant, key: a } = await tenantAndKey({ tenantLimits: { day: { requests: 3 } }, keyLimits: keyQuota });
    const b = await newKey(tenant.id, keyQuota);
    const marker = `tenant-${randomUUID()}`;
    const send = (k) => relay.callJson("/v1/chat/completions", { key: k.key, body: chatBody("g-ok", marker) });
    for (const k of [a, b, a]) {
      const r = await send(k);
      assert.equal(r.status, 200, r.text);
    }
    const before = { a: (await keyLimits(a.id)).usage.day.requests, b: (await keyLimits(b.id)).usage.day.requests };
    assert.deepEqual(before, { a: 2, b: 1 });

    const fourth = await send(b);
    assertRefusal(fourth, { code: "insufficient_quota", scope: "tenant", limit: "requests per day" });
    const fifth = await send(a);
    assertRefusal(fifth, { code: "insufficient_quota", scope: "tenant", limit: "requests per day" });
    assert.equal(upstreamHits(marker), 3);

    const t = await tenantLimits(tenant.id);
    assertLimitsShape(t, "tenant limits");
    assert.deepEqual(t.limits, { day: { requests: 3 } });
    assert.equal(t.usage.day.requests, 3);
    const after = { a: await settled(keyLimits, a.id), b: await settled(keyLimits, b.id) };
    assert.deepEqual(
      { a: after.a.usage.day.requests, b: after.b.usage.day.requests },
      before,
      "requests refused by the tenant's limiter leave the keys' request counts unchanged",
    );
    assert.equal(after.a.usage.day.tokens, 2 * CHAT_USAGE.total_tokens);
    assert.equal(after.b.usage.day.tokens, 1 * CHAT_USAGE.total_tokens);
  });
});
