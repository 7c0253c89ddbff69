// Anthropic clients on the built-in mock channel (valid Anthropic shapes, non-stream and
// stream), /v1/messages/count_tokens where the relay must estimate (mock and OpenAI channels),
// and the relay's own errors on the Anthropic routes, which must be Anthropic-shaped.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, requestId } from "./harness.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";
import { anthropicFetch, anthropicJson, anthropicStream, assertAnthropicError, assertAnthropicMessage } from "./anthropic-client.mjs";

describe("Anthropic client → mock channel; count_tokens estimates; Anthropic-shaped errors", () => {
  let relay, fake, s, o;
  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({ provider: "mock", models: ["mock-1"] });
    o = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "claude-on-openai": "gpt-count" } });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const body = (extra = {}) => ({
    model: "mock-1",
    max_tokens: 256,
    system: [{ type: "text", text: "You are a test.", cache_control: { type: "ephemeral" } }],
    messages: [{ role: "user", content: [{ type: "text", text: "Ping from the Anthropic suite" }] }],
    ...extra,
  });

  it("non-stream: a valid Anthropic Message from the mock, and a usage row with endpoint messages", async () => {
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, body: body() });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get("content-type") ?? "", /application\/json/);
    assertAnthropicMessage(r.json);
    assert.equal(r.json.model, "mock-1");
    assert.equal(r.json.content.length, 1);
    assert.equal(r.json.content[0].type, "text");
    assert.match(r.json.content[0].text, /mock provider.*Ping from the Anthropic suite/);
    assert.equal(r.json.stop_reason, "end_turn");
    assert.equal(r.json.stop_sequence, null);
    assert.ok(r.json.usage.input_tokens > 0, "input_tokens > 0");
    assert.ok(r.json.usage.output_tokens > 0, "output_tokens > 0");

    const row = await relay.usageRow(requestId(r));
    assert.equal(row.endpoint, "messages");
    assert.equal(row.model, "mock-1");
    assert.equal(row.status, 200);
    assert.equal(row.stream, 0);
    assert.equal(row.prompt_tokens, r.json.usage.input_tokens + r.json.usage.cache_read_input_tokens + r.json.usage.cache_creation_input_tokens);
    assert.equal(row.completion_tokens, r.json.usage.output_tokens);
  });

  it("stream: the Anthropic event sequence with the same text as the non-stream reply", async () => {
    const whole = await anthropicJson(relay, "/v1/messages", { key: s.key, body: body() });
    const res = await anthropicFetch(relay, "/v1/messages", { key: s.key, body: body({ stream: true }) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const id = requestId(res);
    const { message, names, deltas } = await anthropicStream(res);
    const seq = names.filter((n) => n !== "ping");
    assert.deepEqual(seq.slice(0, 2), ["message_start", "content_block_start"]);
    assert.deepEqual(seq.slice(-3), ["content_block_stop", "message_delta", "message_stop"]);
    assert.ok(deltas >= 2, `the text arrives in several deltas (${deltas})`);
    assert.equal(message.model, "mock-1");
    assert.equal(message.content.length, 1);
    assert.equal(message.content[0].text, whole.json.content[0].text, "deterministic: stream text = non-stream text");
    assert.equal(message.stop_reason, "end_turn");
    assert.ok(message.usage.output_tokens > 0, "message_delta usage.output_tokens > 0");
    const row = await relay.usageRow(id);
    assert.equal(row.endpoint, "messages");
    assert.equal(row.stream, 1);
    assert.equal(row.status, 200);
    assert.ok(row.completion_tokens > 0);
  });

  it("reply ids are Anthropic message ids (msg_…) in both the non-stream reply and the stream", async () => {
    const whole = await anthropicJson(relay, "/v1/messages", { key: s.key, body: body() });
    const { message } = await anthropicStream(await anthropicFetch(relay, "/v1/messages", { key: s.key, body: body({ stream: true }) }));
    assert.match(message.id, /^msg_/, "stream id");
    assert.match(whole.json.id, /^msg_/, `non-stream id: ${whole.json.id}`);
  });

  it("count_tokens on the mock channel: the relay's estimate, > 0, growing with the prompt", async () => {
    const small = await anthropicJson(relay, "/v1/messages/count_tokens", {
      key: s.key,
      body: { model: "mock-1", messages: [{ role: "user", content: "Hi" }] },
    });
    assert.equal(small.status, 200, small.text);
    assert.deepEqual(Object.keys(small.json), ["input_tokens"]);
    assert.ok(Number.isInteger(small.json.input_tokens) && small.json.input_tokens > 0, small.text);
    const big = await anthropicJson(relay, "/v1/messages/count_tokens", {
      key: s.key,
      body: {
        model: "mock-1",
        system: "You are a careful assistant. ".repeat(20),
        messages: [{ role: "user", content: "Explain the relay in detail, please. ".repeat(50) }],
        tools: [{ name: "lookup", description: "Look something up.", input_schema: { type: "object", properties: { q: { type: "string" } } } }],
      },
    });
    assert.equal(big.status, 200, big.text);
    assert.ok(big.json.input_tokens > small.json.input_tokens * 10, `${big.json.input_tokens} ≫ ${small.json.input_tokens}`);
  });

  it("count_tokens on an OpenAI channel: estimated by the relay, nothing sent upstream", async () => {
    const marker = `marker-${randomUUID()}`;
    const r = await anthropicJson(relay, "/v1/messages/count_tokens", {
      key: o.key,
      body: { model: "claude-on-openai", messages: [{ role: "user", content: `How many tokens is this? (${marker})` }] },
    });
    assert.equal(r.status, 200, r.text);
    assert.ok(Number.isInteger(r.json.input_tokens) && r.json.input_tokens > 0, r.text);
    assert.equal(fake.find((x) => x.rawBody.includes(marker)).length, 0, "the OpenAI upstream is not asked");
  });

  it("missing key → 401 authentication_error; wrong key → 401 authentication_error", async () => {
    for (const path of ["/v1/messages", "/v1/messages/count_tokens"]) {
      const none = await anthropicJson(relay, path, { key: null, body: body() });
      assertAnthropicError(none, { status: 401, type: "authentication_error" });
      const wrong = await anthropicJson(relay, path, { key: "sk-er-not-a-real-key-0123456789abcdef", body: body() });
      assertAnthropicError(wrong, { status: 401, type: "authentication_error" });
    }
  });

  it("unknown model → 404 not_found_error", async () => {
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, body: body({ model: "claude-nope" }) });
    const e = assertAnthropicError(r, { status: 404, type: "not_found_error" });
    assert.match(e.message, /claude-nope/);
    const c = await anthropicJson(relay, "/v1/messages/count_tokens", { key: s.key, body: { model: "claude-nope", messages: [{ role: "user", content: "Hi" }] } });
    assertAnthropicError(c, { status: 404, type: "not_found_error" });
  });

  it("bad JSON, missing messages, a bad block → 400 invalid_request_error", async () => {
    assertAnthropicError(await anthropicJson(relay, "/v1/messages", { key: s.key, body: '{"model": "mock-1", "messages": [' }), {
      status: 400,
      type: "invalid_request_error",
    });
    assertAnthropicError(await anthropicJson(relay, "/v1/messages", { key: s.key, body: { model: "mock-1", max_tokens: 10 } }), {
      status: 400,
      type: "invalid_request_error",
    });
    const bad = await anthropicJson(relay, "/v1/messages", {
      key: s.key,
      body: body({ messages: [{ role: "user", content: [{ type: "text" }] }] }),
    });
    const e = assertAnthropicError(bad, { status: 400, type: "invalid_request_error" });
    assert.match(e.message, /messages\[0\]\.content\[0\]\.text/, "the message names the field");
    assertAnthropicError(await anthropicJson(relay, "/v1/messages/count_tokens", { key: s.key, body: "not json" }), {
      status: 400,
      type: "invalid_request_error",
    });
  });

  it("wrong method on /v1/messages → 405, Anthropic-shaped", async () => {
    const res = await fetch(`${relay.url}/v1/messages`, { headers: { "x-api-key": s.key, "anthropic-version": "2023-06-01" } });
    const text = await res.text();
    const r = { status: res.status, headers: res.headers, text, json: JSON.parse(text) };
    assertAnthropicError(r, { status: 405, type: "invalid_request_error" });
    assert.match(res.headers.get("allow") ?? "", /POST/);
  });
});
