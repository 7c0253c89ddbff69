// Routing and resilience (src/routing.rs, src/health.rs, src/edge/relay.rs, src/edge/health.rs):
// a public model resolves to several routes (channel + upstream model, priority, weight); the
// relay tries them by priority, geography and weight, retries what is worth retrying, skips
// channels whose circuit breaker is open (shared through one ChannelHealth Durable Object per
// channel), cools down pool keys that got 429 and disables those that got 401/403.
//
// Upstreams: fake OpenAI servers on 127.0.0.1 (their scenario follows the upstream model name,
// e.g. err-500, or a queue), a closed port for "down", and a small key-aware fake below.
// Synchronisation: waits are bounded polls of HTTP answers (pollUntil), never sleeps.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { randomUUID, createHmac } from "node:crypto";
import { startRelay, assertOpenAIError, pollUntil, within, sse, WEBHOOK_SECRET } from "./harness.mjs";
import { startFakeOpenAI, closedPort } from "./fake-openai.mjs";
import { startWebhookListener } from "./fake-webhook.mjs";

/** An OpenAI-like upstream that answers by key: `sk-cool` → 429 (Retry-After 30), `sk-bad` → 401. */
async function startKeyAwareUpstream() {
  const seen = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const key = (req.headers.authorization ?? "").replace(/^Bearer /, "");
      seen.push(key);
      const json = (status, obj, headers = {}) => {
        res.writeHead(status, { "content-type": "application/json", ...headers });
        res.end(JSON.stringify(obj));
      };
      if (key === "sk-cool") {
        return json(429, { error: { message: "Rate limit reached", type: "requests", param: null, code: "rate_limit_exceeded" } }, { "retry-after": "30" });
      }
      if (key === "sk-bad") {
        return json(401, { error: { message: "Incorrect API key provided", type: "invalid_request_error", param: null, code: "invalid_api_key" } });
      }
      const model = JSON.parse(body || "{}").model ?? "x";
      json(200, {
        id: `chatcmpl-${seen.length}`,
        object: "chat.completion",
        created: 1,
        model,
        choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
        usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
      });
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { baseUrl: `http://127.0.0.1:${server.address().port}/v1`, seen, close: () => new Promise((r) => server.close(r)) };
}

const QUICK_BREAKER = { window_ms: 10_000, min_requests: 4, failure_percent: 50, cooldown_ms: 500, max_cooldown_ms: 4_000 };

describe("routing: candidates, retries, breakers, key pools, geography", () => {
  let relay, a, b, c, keyed, down, key, alerts;
  const ch = {};

  before(async () => {
    [a, b, c, keyed] = await Promise.all([startFakeOpenAI(), startFakeOpenAI(), startFakeOpenAI(), startKeyAwareUpstream()]);
    down = `http://127.0.0.1:${await closedPort()}/v1`;
    alerts = await startWebhookListener();
    relay = await startRelay({ vars: { ALERT_WEBHOOK_URL: alerts.url } });
    const s = await relay.seed({ upstreamBaseUrl: a.baseUrl, models: { "plain": "gpt-plain" } });
    key = s.key;
    const channel = (name, base_url, extra = {}) =>
      relay.adminOk("POST", "/admin/channels", { name, provider: "openai", base_url, api_keys: ["sk-up"], ...extra }, [201]);
    ch.a = await channel("a-us", a.baseUrl, { region: "us-east" });
    ch.b = await channel("b-eu", b.baseUrl, { region: "eu-central" });
    ch.c = await channel("c-flaky", c.baseUrl, { breaker: QUICK_BREAKER });
    ch.down = await channel("down", down, { region: "us-east", breaker: QUICK_BREAKER });
    ch.pool = await channel("pool", keyed.baseUrl, { api_keys: ["sk-cool", "sk-good", "sk-bad"] });
    ch.total = await channel("total", a.baseUrl, { total_timeout_ms: 300, timeout_ms: 60_000 });
    ch.idle = await channel("idle", a.baseUrl, { timeout_ms: 300 });
    const map = (model, routes) => relay.adminOk("PUT", `/admin/model-map/${model}`, { routes });
    await map("r-failover", [
      { channel_id: ch.down.id, upstream_model: "gpt-x" },
      { channel_id: ch.a.id, upstream_model: "gpt-x" },
    ]);
    await map("r-breaker", [
      { channel_id: ch.c.id, upstream_model: "gpt-c", priority: 10 },
      { channel_id: ch.a.id, upstream_model: "gpt-c", priority: 0 },
    ]);
    await map("r-geo", [
      { channel_id: ch.a.id, upstream_model: "gpt-geo" },
      { channel_id: ch.b.id, upstream_model: "gpt-geo" },
    ]);
    await map("r-fallback", [
      { channel_id: ch.a.id, upstream_model: "err-500", priority: 1 },
      { channel_id: ch.b.id, upstream_model: "gpt-small", priority: 0 },
    ]);
    await map("r-4xx", [
      { channel_id: ch.a.id, upstream_model: "err-400", priority: 1 },
      { channel_id: ch.b.id, upstream_model: "gpt-small", priority: 0 },
    ]);
    await map("r-pool", [{ channel_id: ch.pool.id, upstream_model: "gpt-pool" }]);
    await map("r-total", [{ channel_id: ch.total.id, upstream_model: "slow-stream" }]);
    await map("r-idle", [{ channel_id: ch.idle.id, upstream_model: "slow-stream" }]);
    await relay.adminOk("PUT", "/admin/model-map/r-hedge", {
      hedge_ms: 200,
      routes: [
        { channel_id: ch.c.id, upstream_model: "hang", priority: 10 },
        { channel_id: ch.b.id, upstream_model: "gpt-hedge", priority: 0 },
      ],
    });
    await map("r-all-down", [
      { channel_id: ch.a.id, upstream_model: "err-500" },
      { channel_id: ch.b.id, upstream_model: "err-500" },
    ]);
  }, { timeout: 60_000 });
  after(async () => {
    await Promise.all([a, b, c].map((f) => f?.close()));
    await keyed?.close();
    await alerts?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const chat = (model, { headers = {}, marker = randomUUID() } = {}) =>
    relay.callJson("/v1/chat/completions", { key, headers, body: { model, messages: [{ role: "user", content: marker }] } });
  const health = (id) => relay.adminOk("GET", `/admin/channels/${id}/health`);

  it("one of two upstreams down: all of 200 requests succeed, served by the live one", async () => {
    const results = [];
    for (let i = 0; i < 10; i++) {
      results.push(...(await Promise.all(Array.from({ length: 20 }, () => chat("r-failover")))));
    }
    const failed = results.filter((r) => r.status !== 200);
    assert.equal(failed.length, 0, `failures: ${failed.map((r) => r.text).slice(0, 3).join(" | ")}`);
    assert.ok(results.every((r) => r.headers.get("x-relay-channel") === ch.a.id));
    // The dead channel's breaker opened, so most requests never tried it.
    const h = await pollUntil(() => health(ch.down.id), (h) => h.breakers["gpt-x"] && h.breakers["gpt-x"].state !== "closed", {
      what: "the dead channel's breaker open",
    });
    assert.ok(["open", "half_open"].includes(h.breakers["gpt-x"].state), JSON.stringify(h));
    const retried = results.filter((r) => r.headers.get("x-relay-attempts") !== "1").length;
    assert.ok(retried < 100, `only requests before the breaker opened paid a retry: ${retried}`);
    // The operator hears of it: a signed circuit_breaker.opened alert for the dead channel.
    const alert = await within(
      alerts.find((x) => x.json.type === "circuit_breaker.opened" && x.json.channel_id === ch.down.id),
      10_000,
      "the breaker alert",
    );
    assert.equal(alert.json.upstream_model, "gpt-x");
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(alert.headers["x-relay-signature"] ?? "");
    assert.ok(m, "signed");
    assert.equal(m[2], createHmac("sha256", WEBHOOK_SECRET).update(`${m[1]}.${alert.body}`).digest("hex"));
  });

  it("an open breaker stops traffic to the failing upstream, and a probe restores it", async () => {
    c.next("err-500", "err-500", "err-500", "err-500");
    // Each of the first requests fails at c (priority 10) and is served by a.
    for (let i = 0; i < 4; i++) {
      const r = await chat("r-breaker");
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get("x-relay-channel"), ch.a.id);
      assert.equal(r.headers.get("x-relay-attempts"), "2");
    }
    const hitsWhenOpened = c.find((r) => r.body?.model === "gpt-c").length;
    assert.equal(hitsWhenOpened, 4);
    const open = await health(ch.c.id);
    assert.equal(open.breakers["gpt-c"].state, "open", JSON.stringify(open));
    // Open: c gets nothing; a serves at the first attempt.
    const during = await chat("r-breaker");
    assert.equal(during.status, 200);
    if (during.headers.get("x-relay-channel") === ch.a.id) {
      assert.equal(during.headers.get("x-relay-attempts"), "1", "the open channel is not tried");
    }
    // After the cool-down one probe goes to c; it succeeds (the queue is empty) and closes it.
    const served = await pollUntil(() => chat("r-breaker"), (r) => r.headers.get("x-relay-channel") === ch.c.id, {
      what: "a probe served by the recovered channel",
      timeoutMs: 15_000,
    });
    assert.equal(served.status, 200);
    const closed = await pollUntil(() => health(ch.c.id), (h) => h.breakers["gpt-c"]?.state === "closed", { what: "breaker closed" });
    assert.equal(closed.breakers["gpt-c"].consecutive_opens, 0);
    const after = await chat("r-breaker");
    assert.equal(after.headers.get("x-relay-channel"), ch.c.id, "the higher priority serves again");
  });

  it("a pool key that gets 429 cools down, one that gets 401 is disabled, the others serve", async () => {
    const results = [];
    for (let i = 0; i < 12; i++) results.push(await chat("r-pool"));
    assert.ok(results.every((r) => r.status === 200), results.map((r) => r.status).join(","));
    assert.ok(keyed.seen.filter((k) => k === "sk-cool").length <= 1, `sk-cool tried once at most: ${keyed.seen}`);
    assert.ok(keyed.seen.filter((k) => k === "sk-bad").length <= 1, `sk-bad tried once at most: ${keyed.seen}`);
    assert.ok(keyed.seen.filter((k) => k === "sk-good").length >= 12);
    const [cool, good, bad] = ch.pool.key_fingerprints;
    const h = await pollUntil(
      () => health(ch.pool.id),
      (h) => h.keys.length === (keyed.seen.includes("sk-cool") ? 1 : 0) + (keyed.seen.includes("sk-bad") ? 1 : 0),
      { what: "key states reported" },
    );
    const state = (fp) => h.keys.find((k) => k.fingerprint === fp)?.state ?? "ok";
    if (keyed.seen.includes("sk-cool")) assert.equal(state(cool), "cooling");
    if (keyed.seen.includes("sk-bad")) assert.equal(state(bad), "disabled");
    assert.equal(state(good), "ok");
    assert.ok(JSON.stringify(h).indexOf("sk-") === -1, "keys appear only as fingerprints");
    // An operator re-enables the disabled key.
    const en = await relay.adminOk("POST", `/admin/channels/${ch.pool.id}/keys/${bad}/enable`);
    assert.equal(en.enabled, true);
    const again = await health(ch.pool.id);
    assert.notEqual(again.keys.find((k) => k.fingerprint === bad)?.state, "disabled");
  });

  it("geography: a caller in Germany is served from eu-central, one in the US from us-east", async () => {
    const viaCountry = async (country) => {
      const res = await fetch(relay.url + "/v1/chat/completions", {
        method: "POST",
        headers: {
          authorization: `Bearer ${key}`,
          "content-type": "application/json",
          "MF-CF-Blob": JSON.stringify({ country }),
        },
        body: JSON.stringify({ model: "r-geo", messages: [{ role: "user", content: "hi" }] }),
      });
      await res.text();
      return res;
    };
    for (let i = 0; i < 8; i++) {
      const de = await viaCountry("DE");
      assert.equal(de.status, 200);
      assert.equal(de.headers.get("x-relay-channel"), ch.b.id);
      assert.match(de.headers.get("x-relay-region") ?? "", /^eu-central/);
      const us = await viaCountry("US");
      assert.equal(us.headers.get("x-relay-channel"), ch.a.id);
      assert.match(us.headers.get("x-relay-region") ?? "", /^us-east/);
    }
  });

  it("hedging: a first attempt without headers after hedge_ms races the next route; the fast one wins, the slow one is cut", async () => {
    const marker = `hedge-${randomUUID()}`;
    const r = await chat("r-hedge", { marker });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get("x-relay-hedged"), "true");
    assert.equal(r.headers.get("x-relay-channel"), ch.b.id);
    assert.equal(r.json.model, "gpt-hedge");
    assert.equal(r.headers.get("x-relay-attempts"), "2");
    const slow = c.find((q) => q.rawBody.includes(marker));
    assert.equal(slow.length, 1, "the first route was tried");
    await within(slow[0].closed, 10_000, "the losing attempt's connection closed");
    const row = await relay.usageRow(r.headers.get("x-request-id"));
    assert.equal(row.channel_id, ch.b.id);
    assert.equal(row.upstream_model, "gpt-hedge");
    assert.equal(row.attempts, 2, "the cancelled attempt is on the record");
    assert.equal(row.hedged, 1);
    const entry = await relay.adminOk("GET", `/admin/usage/${r.headers.get("x-request-id")}`);
    const log = Object.fromEntries(entry.attempt_log.map((a) => [a.outcome, a]));
    assert.equal(entry.attempt_log.length, 2);
    assert.equal(log.served.channel_id, ch.b.id);
    assert.equal(log.cancelled.channel_id, ch.c.id);
    assert.equal(log.cancelled.upstream_model, "hang");
    // Without hedge_ms nothing races: a plain entry answers from its one route.
    assertOpenAIError(await relay.admin("PUT", "/admin/model-map/bad-hedge", { channel_id: ch.a.id, upstream_model: "x", hedge_ms: 5 }), {
      status: 400,
      param: "hedge_ms",
    });
  });

  for (const [model, what] of [
    ["r-total", "total timeout (total_timeout_ms) ends a stream that runs too long"],
    ["r-idle", "timeout between chunks (timeout_ms) ends a stream that pauses too long"],
  ]) {
    it(`a channel's ${what}, with an error event, and the row records it`, async () => {
      const res = await relay.call("/v1/chat/completions", {
        key,
        body: { model, stream: true, messages: [{ role: "user", content: "hi" }] },
      });
      assert.equal(res.status, 200);
      // slow-stream sends two chunks and then waits for a release that never comes.
      const events = await within(sse(res.body), 10_000, "the stream ended by the relay");
      const last = JSON.parse(events.filter((e) => e.data !== "[DONE]").at(-1).data);
      assert.equal(last.error?.code, "upstream_stream_broken", JSON.stringify(last));
      assert.ok(events.length >= 3, "the chunks sent before the pause reached the client");
      const row = await relay.usageRow(res.headers.get("x-request-id"));
      assert.equal(row.status, 502);
    });
  }

  it("timeouts are checked: total_timeout_ms must be positive", async () => {
    assert.equal(ch.total.total_timeout_ms, 300);
    assertOpenAIError(
      await relay.admin("PATCH", `/admin/channels/${ch.total.id}`, { total_timeout_ms: 0 }),
      { status: 400, param: "total_timeout_ms" },
    );
  });

  it("a fallback to another model serves when the first fails, and the reply names it", async () => {
    const r = await chat("r-fallback");
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.model, "gpt-small", "the model field reports what served it");
    assert.equal(r.headers.get("x-relay-channel"), ch.b.id);
    const row = await relay.usageRow(r.headers.get("x-request-id"));
    assert.equal(row.upstream_model, "gpt-small");
    assert.equal(row.channel_id, ch.b.id);
  });

  it("the caller's own 4xx is never retried elsewhere", async () => {
    const marker = `no-retry-${randomUUID()}`;
    const r = await chat("r-4xx", { marker });
    assertOpenAIError(r, { status: 400, code: "upstream_invalid_request" });
    assert.equal(b.find((q) => q.rawBody.includes(marker)).length, 0, "the fallback was not tried");
  });

  it("the retry budget bounds attempts when everything fails; x-relay-retries: 0 fails fast", async () => {
    const marker = `all-down-${randomUUID()}`;
    const r = await chat("r-all-down", { marker });
    assertOpenAIError(r, { status: 502, code: "upstream_error" });
    const hits = a.find((q) => q.rawBody.includes(marker)).length + b.find((q) => q.rawBody.includes(marker)).length;
    assert.equal(hits, 3, "three attempts in all");
    const row = await relay.usageRow(r.headers.get("x-request-id"));
    assert.equal(row.attempts, 3);
    assert.equal(row.status, 502);
    const entry = await relay.adminOk("GET", `/admin/usage/${r.headers.get("x-request-id")}`);
    assert.deepEqual(entry.attempt_log.map((a) => [a.n, a.outcome, a.status]), [
      [1, "failed", 500],
      [2, "failed", 500],
      [3, "failed", 500],
    ]);
    assertOpenAIError(await relay.admin("GET", "/admin/usage/req_nope"), { status: 404 });
    const fast = `fast-${randomUUID()}`;
    assertOpenAIError(await chat("r-all-down", { marker: fast, headers: { "x-relay-retries": "0" } }), { status: 502 });
    assert.equal(a.find((q) => q.rawBody.includes(fast)).length + b.find((q) => q.rawBody.includes(fast)).length, 1);
  });

  it("a plain entry is one route; bad routes and breaker settings are 400s naming the field", async () => {
    assert.equal((await chat("plain")).status, 200);
    const bad = async (body, param) =>
      assertOpenAIError(await relay.admin("PUT", "/admin/model-map/bad", body), { status: 400, param });
    await bad({ routes: [] }, "routes");
    await bad({ routes: [{ channel_id: ch.a.id, upstream_model: "m" }, { channel_id: "ch_nope", upstream_model: "m" }] }, "routes[1].channel_id");
    await bad({ routes: [{ channel_id: ch.a.id, upstream_model: "m", weight: -1 }] }, "routes[0].weight");
    await bad({ routes: [{ channel_id: ch.a.id, upstream_model: "m" }], channel_id: ch.a.id }, "routes");
    const r = await relay.admin("POST", "/admin/channels", {
      name: "x", provider: "openai", base_url: a.baseUrl, api_keys: ["k"], breaker: { failure_percent: 0 },
    });
    assertOpenAIError(r, { status: 400, param: "breaker.failure_percent" });
    // A channel a route uses cannot be deleted.
    assertOpenAIError(await relay.admin("DELETE", `/admin/channels/${ch.b.id}`), { status: 409 });
  });
});
