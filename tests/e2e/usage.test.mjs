// Usage rows (README "Usage"): one row per authenticated request, keyed by x-request-id, with the
// right tenant/key/model/channel/status/tokens/timings; none for requests refused before
// authentication; readable through GET /admin/usage.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, sse, sseEvents, requestId, within, chatBody } from "./harness.mjs";
import { startFakeOpenAI, CHAT_USAGE, CHAT_STREAM_USAGE } from "./fake-openai.mjs";

describe("usage rows", () => {
  let relay, fake, s;
  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "pub-chat": "gpt-up", "pub-drip": "drip-stream" } });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const chat = (key, body) => relay.call("/v1/chat/completions", { key, body });

  function assertCommon(row, t0, { tenant = s } = {}) {
    assert.equal(row.tenant_id, tenant.tenantId);
    assert.equal(row.key_id, tenant.keyId);
    assert.ok(Number.isInteger(row.latency_ms) && row.latency_ms >= 0, `latency_ms ${row.latency_ms}`);
    assert.ok(row.created_at >= t0 - 5_000 && row.created_at <= Date.now() + 5_000, `created_at ${row.created_at} is Unix ms of now`);
  }

  it("non-stream: one row with the request id, model, channel, status and reported tokens", async () => {
    const t0 = Date.now();
    const res = await chat(s.key, chatBody("pub-chat"));
    assert.equal(res.status, 200);
    const id = requestId(res);
    await res.text();
    const row = await relay.usageRow(id);
    assertCommon(row, t0);
    assert.match(row.endpoint, /chat\/completions|chat\.completions/);
    assert.equal(row.model, "pub-chat");
    assert.equal(row.upstream_model, "gpt-up");
    assert.equal(row.channel_id, s.channelId);
    assert.equal(row.stream, 0);
    assert.equal(row.status, 200);
    assert.equal(row.error_code, null);
    assert.equal(row.prompt_tokens, CHAT_USAGE.prompt_tokens);
    assert.equal(row.completion_tokens, CHAT_USAGE.completion_tokens);
    assert.equal(row.total_tokens, CHAT_USAGE.total_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("stream: stream=1, ttfb_ms set and ≤ latency_ms, reported tokens", async () => {
    const t0 = Date.now();
    const res = await chat(s.key, chatBody("pub-chat", { stream: true }));
    assert.equal(res.status, 200);
    const id = requestId(res);
    const events = await sse(res);
    assert.equal(events.at(-1).data, "[DONE]");
    const row = await relay.usageRow(id);
    assertCommon(row, t0);
    assert.equal(row.stream, 1);
    assert.equal(row.status, 200);
    assert.ok(Number.isInteger(row.ttfb_ms) && row.ttfb_ms >= 0, `ttfb_ms ${row.ttfb_ms}`);
    assert.ok(row.ttfb_ms <= row.latency_ms, `ttfb_ms ${row.ttfb_ms} ≤ latency_ms ${row.latency_ms}`);
    assert.equal(row.prompt_tokens, CHAT_STREAM_USAGE.prompt_tokens);
    assert.equal(row.completion_tokens, CHAT_STREAM_USAGE.completion_tokens);
    assert.equal(row.total_tokens, CHAT_STREAM_USAGE.total_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("exactly one row per request, and the row ids are the x-request-ids", async () => {
    const t = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "pub-count": "gpt-count" } });
    const ids = [];
    const bodies = [
      chatBody("pub-count"),
      chatBody("pub-count", { stream: true }),
      chatBody("pub-count", { stream: true, stream_options: { include_usage: true } }),
      { model: "pub-count" }, // 400
      chatBody("no-such-model"), // 404
      chatBody("pub-count"),
    ];
    for (const body of bodies) {
      const res = await chat(t.key, body);
      ids.push(requestId(res));
      await res.arrayBuffer();
    }
    assert.equal(new Set(ids).size, ids.length, "request ids are unique");
    for (const id of ids) await relay.usageRow(id);
    const rows = await relay.usageRows("tenant_id = ?", t.tenantId);
    assert.deepEqual(rows.map((r) => r.request_id).sort(), [...ids].sort(), "one row per request, no more");
  });

  it("authenticated requests the relay refuses are recorded with status, error_code and zero tokens", async () => {
    const cases = [
      [{ model: "pub-chat" }, 400, "missing_required_parameter"],
      ['{"model":', 400, "invalid_json"],
      [chatBody("no-such-model"), 404, "model_not_found"],
    ];
    for (const [body, status, code] of cases) {
      const res = await chat(s.key, body);
      assert.equal(res.status, status);
      const row = await relay.usageRow(requestId(res));
      assert.equal(row.status, status);
      assert.equal(row.error_code, code);
      assert.equal(row.tenant_id, s.tenantId);
      assert.equal(row.key_id, s.keyId);
      assert.equal(row.prompt_tokens, 0);
      assert.equal(row.completion_tokens, 0);
      assert.equal(row.total_tokens, 0);
      assert.equal(row.usage_source, "none");
    }
  });

  it("requests refused before authentication write nothing", async () => {
    const k = await relay.newKey(s.tenantId);
    await relay.adminOk("POST", `/admin/keys/${k.id}/revoke`, undefined, [200, 204]);
    const refused = [];
    for (const key of [undefined, "sk-er-unknown-key-0000000000000000", k.key]) {
      const res = await chat(key, chatBody("pub-chat"));
      assert.equal(res.status, 401);
      refused.push(requestId(res));
    }
    // a later authenticated request's row appearing bounds the wait for the refused ones
    const res = await chat(s.key, chatBody("pub-chat"));
    await relay.usageRow(requestId(res));
    const db = await relay.db();
    for (const id of refused) {
      const row = await db.prepare("SELECT request_id FROM usage WHERE request_id = ?").bind(id).first();
      assert.equal(row, null, `no usage row for refused request ${id}`);
    }
  });

  it("GET /admin/usage lists a tenant's rows newest first, filters by key, honours limit", async () => {
    const t = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "pub-admin": "gpt-admin" } });
    const k2 = await relay.newKey(t.tenantId);
    const ids = [];
    for (const key of [t.key, k2.key, t.key]) {
      const res = await chat(key, chatBody("pub-admin"));
      ids.push(requestId(res));
      await res.arrayBuffer();
    }
    for (const id of ids) await relay.usageRow(id);

    const all = await relay.adminOk("GET", `/admin/usage?tenant_id=${t.tenantId}`, undefined, [200]);
    assert.equal(all.object, "list");
    assert.deepEqual(all.data.map((r) => r.request_id).sort(), [...ids].sort());
    for (let i = 1; i < all.data.length; i++) assert.ok(all.data[i - 1].created_at >= all.data[i].created_at, "newest first");
    const first = all.data.find((r) => r.request_id === ids[0]);
    assert.equal(first.tenant_id, t.tenantId);
    assert.equal(first.key_id, t.keyId);
    assert.equal(first.model, "pub-admin");
    assert.equal(first.upstream_model, "gpt-admin");
    assert.equal(first.channel_id, t.channelId);
    assert.equal(first.status, 200);
    assert.equal(first.prompt_tokens, CHAT_USAGE.prompt_tokens);
    assert.equal(first.completion_tokens, CHAT_USAGE.completion_tokens);

    const byKey = await relay.adminOk("GET", `/admin/usage?key_id=${k2.id}`, undefined, [200]);
    assert.deepEqual(byKey.data.map((r) => r.request_id), [ids[1]]);

    const one = await relay.adminOk("GET", `/admin/usage?tenant_id=${t.tenantId}&limit=1`, undefined, [200]);
    assert.equal(one.data.length, 1);
    assert.equal(one.data[0].request_id, all.data[0].request_id);
  });

  it("a stream the client abandons is still recorded, with the tokens produced so far", async () => {
    // drip-stream: the upstream sends one chunk per fake.release() and never ends, so the relay
    // learns that the client left only when a write fails, and the stream never completes.
    const marker = `marker-${randomUUID()}`;
    const ac = new AbortController();
    const res = await relay.call("/v1/chat/completions", {
      key: s.key,
      body: { model: "pub-drip", messages: [{ role: "user", content: marker }], stream: true },
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    const id = requestId(res);
    const it = sseEvents(res);
    try {
      let got = false;
      while (!got) {
        const { value, done } = await within(it.next(), 10_000, "first chunk");
        assert.ok(!done);
        got = !!JSON.parse(value.data).choices?.[0]?.delta?.content;
      }
      await fake.waitForRequest((r) => r.rawBody.includes(marker));
      await it.return();
      ac.abort(); // the client goes away while the upstream is still producing
      // each poll lets the upstream send one more chunk, which the relay fails to deliver
      const row = await relay.usageRow(id, { timeoutMs: 15_000, onPoll: () => fake.release() });
      assert.equal(row.stream, 1);
      assert.equal(row.tenant_id, s.tenantId);
      assert.equal(row.model, "pub-drip");
      assert.ok(row.completion_tokens >= 1, `completion tokens so far: ${row.completion_tokens}`);
      assert.equal(row.usage_source, "estimated", "the upstream never reported usage");
      assert.equal(row.provenance, "partial", "the client left before the end");
    } finally {
      fake.release();
    }
  });
});
