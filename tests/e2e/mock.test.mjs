// The built-in mock provider, set up like the demo: channel {"provider":"mock","base_url":"",
// "api_keys":[],"models":["mock-1"]} and model map demo → mock-1, used through the OpenAI SDK.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, sdk, sse, sseJson, requestId, chatBody } from "./harness.mjs";

describe("mock provider (demo setup)", () => {
  let relay, s, client;
  before(async () => {
    relay = await startRelay();
    s = await relay.seed({ provider: "mock", upstreamBaseUrl: "", apiKeys: [], models: { demo: "mock-1" }, channelModels: ["mock-1"] });
    client = await sdk(relay, s.key);
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  it("non-stream: content and non-zero usage", async () => {
    const reply = await client.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "Hi" }] });
    assert.equal(reply.object, "chat.completion");
    assert.equal(typeof reply.id, "string");
    assert.equal(reply.choices.length, 1);
    assert.equal(reply.choices[0].message.role, "assistant");
    assert.equal(typeof reply.choices[0].message.content, "string");
    assert.ok(reply.choices[0].message.content.length > 0, "content non-empty");
    assert.ok(reply.choices[0].finish_reason, "finish_reason set");
    assert.ok(reply.usage.prompt_tokens > 0, "prompt_tokens > 0");
    assert.ok(reply.usage.completion_tokens > 0, "completion_tokens > 0");
    assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
  });

  it("stream with include_usage: several content chunks, then a usage chunk", async () => {
    const stream = await client.chat.completions.create({
      model: "demo",
      messages: [{ role: "user", content: "Tell me something" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const content = chunks.filter((c) => c.choices?.[0]?.delta?.content);
    assert.ok(content.length >= 2, `several content chunks (got ${content.length})`);
    for (const c of chunks) assert.equal(c.object, "chat.completion.chunk");
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], "the usage chunk has choices: []");
    assert.ok(last.usage.prompt_tokens > 0 && last.usage.completion_tokens > 0, "non-zero usage");
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
    assert.equal(chunks.filter((c) => c.usage).length, 1, "exactly one chunk carries usage");
    assert.ok(chunks.some((c) => c.choices?.[0]?.finish_reason), "a chunk has a finish_reason");
  });

  it("stream without include_usage: no usage chunk", async () => {
    const stream = await client.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "Hi" }], stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.filter((c) => c.choices?.[0]?.delta?.content).length >= 2);
    assert.ok(!chunks.some((c) => c.usage), "no chunk carries usage");
    assert.ok(!chunks.some((c) => Array.isArray(c.choices) && c.choices.length === 0), "no empty-choices chunk");
  });

  it("raw SSE: text/event-stream, JSON events, data: [DONE] last", async () => {
    const res = await relay.call("/v1/chat/completions", { key: s.key, body: chatBody("demo", { stream: true }) });
    assert.equal(res.status, 200);
    requestId(res);
    assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
    const events = await sse(res);
    assert.ok(events.length >= 3);
    assert.equal(events.at(-1).data, "[DONE]");
    assert.equal(events.filter((e) => e.data === "[DONE]").length, 1);
    const json = sseJson(events).slice(0, -1);
    assert.ok(json.every((c) => c.object === "chat.completion.chunk"));
  });

  it("the usage row matches what the client was told", async () => {
    const res = await relay.call("/v1/chat/completions", { key: s.key, body: chatBody("demo") });
    assert.equal(res.status, 200);
    const id = requestId(res);
    const reply = await res.json();
    const row = await relay.usageRow(id);
    assert.equal(row.tenant_id, s.tenantId);
    assert.equal(row.key_id, s.keyId);
    assert.equal(row.model, "demo");
    assert.equal(row.upstream_model, "mock-1");
    assert.equal(row.channel_id, s.channelId);
    assert.equal(row.status, 200);
    assert.equal(row.stream, 0);
    assert.equal(row.prompt_tokens, reply.usage.prompt_tokens);
    assert.equal(row.completion_tokens, reply.usage.completion_tokens);
    assert.equal(row.total_tokens, reply.usage.total_tokens);
  });
});
