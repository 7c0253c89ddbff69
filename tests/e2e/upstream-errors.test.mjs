// Upstream failures as the client sees them: README "Errors" (4xx upstream_invalid_request, 429
// upstream_rate_limited, 502 upstream_auth_failed / upstream_error / upstream_unreachable, 503
// channel_unavailable, 504 upstream_timeout), and that no upstream key ever leaks.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, requestId, assertOpenAIError, assertNowhere, within, chatBody, UPSTREAM_KEY } from "./harness.mjs";
import { startFakeOpenAI, closedPort, maskKey, RETRY_AFTER } from "./fake-openai.mjs";

describe("upstream errors", () => {
  let relay, fake, s, slowChannel, deadChannel;
  const secrets = [UPSTREAM_KEY, maskKey(UPSTREAM_KEY)];

  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({
      upstreamBaseUrl: fake.baseUrl,
      models: ["err-500", "err-429", "err-401", "err-400", "err-400-key", "gpt-ok"],
    });
    slowChannel = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "pub-hang": "hang" }, timeoutMs: 300 });
    deadChannel = await relay.seed({ upstreamBaseUrl: `http://127.0.0.1:${await closedPort()}/v1`, models: { "pub-dead": "gpt-dead" } });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const chat = (key, model, extra) => relay.callJson("/v1/chat/completions", { key, body: chatBody(model, extra) });

  for (const stream of [false, true]) {
    const tag = stream ? " (stream request)" : "";

    it(`upstream 500 → 502 upstream_error${tag}`, async () => {
      const r = await chat(s.key, "err-500", { stream });
      assertOpenAIError(r, { status: 502, code: "upstream_error" });
      requestId(r);
      assertNowhere(r, secrets);
    });

    it(`upstream 429 → 429 upstream_rate_limited with Retry-After${tag}`, async () => {
      const r = await chat(s.key, "err-429", { stream });
      assertOpenAIError(r, { status: 429, code: "upstream_rate_limited" });
      assert.equal(r.headers.get("retry-after"), RETRY_AFTER);
      assertNowhere(r, secrets);
    });

    it(`upstream 401 → 502 upstream_auth_failed; the upstream key appears nowhere${tag}`, async () => {
      const r = await chat(s.key, "err-401", { stream });
      assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
      assertNowhere(r, secrets);
      assertNowhere(r, ["Incorrect API key provided"], "response (the upstream's message stays in the server log)");
      const up = fake.find((q) => q.body?.model === "err-401").at(-1);
      assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_KEY}`, "the fake did see the key (so the check above means something)");
    });
  }

  it("upstream 400 → 400 upstream_invalid_request with the upstream's message", async () => {
    const r = await chat(s.key, "err-400");
    const e = assertOpenAIError(r, { status: 400, code: "upstream_invalid_request" });
    assert.match(e.message, /err-400 was asked for by the test/);
    assertNowhere(r, secrets);
  });

  it("an upstream 400 whose message quotes the upstream key: kept, with the key scrubbed", async () => {
    const r = await chat(s.key, "err-400-key");
    const e = assertOpenAIError(r, { status: 400, code: "upstream_invalid_request" });
    assert.match(e.message, /err-400-key/, "the rest of the upstream message is kept");
    assertNowhere(r, secrets);
  });

  it("unreachable upstream (closed port) → 502 upstream_unreachable", async () => {
    const r = await within(chat(deadChannel.key, "pub-dead"), 30_000, "answer for an unreachable upstream");
    assertOpenAIError(r, { status: 502, code: "upstream_unreachable" });
    requestId(r);
  });

  it("upstream that never answers, channel timeout_ms 300 → 504 upstream_timeout", async () => {
    const t0 = Date.now();
    const r = await within(chat(slowChannel.key, "pub-hang"), 20_000, "answer for a hanging upstream with timeout_ms 300");
    const elapsed = Date.now() - t0;
    assertOpenAIError(r, { status: 504, code: "upstream_timeout" });
    assert.ok(elapsed >= 250, `waited for the timeout (${elapsed} ms)`);
    const up = fake.find((q) => q.body?.model === "hang");
    assert.ok(up.length >= 1, "the request did reach the upstream");
  });

  it("a stream whose upstream never answers → 504 upstream_timeout too", async () => {
    const r = await within(chat(slowChannel.key, "pub-hang", { stream: true }), 20_000, "answer for a hanging stream");
    assertOpenAIError(r, { status: 504, code: "upstream_timeout" });
  });

  it("usage rows record upstream failures with their status and error_code", async () => {
    const r = await chat(s.key, "err-500");
    const row = await relay.usageRow(requestId(r));
    assert.equal(row.status, 502);
    assert.equal(row.error_code, "upstream_error");
    assert.equal(row.tenant_id, s.tenantId);
    assert.equal(row.channel_id, s.channelId);
    assert.equal(row.prompt_tokens + row.completion_tokens, 0);
    const r2 = await chat(s.key, "err-429");
    const row2 = await relay.usageRow(requestId(r2));
    assert.equal(row2.status, 429);
    assert.equal(row2.error_code, "upstream_rate_limited");
  });

  it("a disabled channel → 503 channel_unavailable, without calling the upstream", async () => {
    const c = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "pub-off": "gpt-off" } });
    const ok = await chat(c.key, "pub-off");
    assert.equal(ok.status, 200, ok.text);
    await relay.adminOk("PATCH", `/admin/channels/${c.channelId}`, { status: "disabled" }, [200]);
    const before = fake.find((q) => q.body?.model === "gpt-off").length;
    const r = await chat(c.key, "pub-off");
    assertOpenAIError(r, { status: 503, code: "channel_unavailable" });
    assert.equal(fake.find((q) => q.body?.model === "gpt-off").length, before, "no upstream call");
  });

  it("an OpenAI channel without upstream keys → 503 channel_unavailable", async () => {
    const c = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "pub-nokey": "gpt-nokey" }, apiKeys: [] });
    const r = await chat(c.key, "pub-nokey");
    assertOpenAIError(r, { status: 503, code: "channel_unavailable" });
    assert.equal(fake.find((q) => q.body?.model === "gpt-nokey").length, 0, "no upstream call");
  });
});
