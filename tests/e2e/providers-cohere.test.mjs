// Cohere channels end to end: OpenAI clients (the openai SDK) and an Anthropic client against
// fake-cohere.mjs (Chat API v2: POST {base}/chat, Bearer key, typed SSE stream events). Covers the
// URL and key, the v2 body (sampling parameters renamed and clamped into Cohere's ranges), text and
// tool calls (tool_plan → reasoning) both non-stream and stream, usage (`tokens` preferred over
// billed_units, cached tokens) in replies and usage rows, and Cohere errors.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, sdk, requestId, assertOpenAIError, assertNowhere, adminUsageRow, UPSTREAM_KEY } from "./harness.mjs";
import { startFakeCohere, TEXT, STREAM_PIECES, TOOL_PLAN, TOOL_CALLS, OPENAI_USAGE } from "./fake-cohere.mjs";
import { assembleOpenAIChunks, anthropicJson, anthropicFetch, anthropicStream, assertAnthropicMessage, assertAnthropicError } from "./anthropic-client.mjs";

const MODEL = "command-a-03-2025";
const WRONG_KEY = "co-wrong-key-0123456789abcdefWRONG";
const WEATHER_TOOL = {
  type: "function",
  function: { name: "get_weather", description: "Weather in a city.", parameters: { type: "object", properties: { location: { type: "string" } }, required: ["location"] } },
};

describe("Cohere channels", () => {
  let relay, fake, s, bad, client;
  before(async () => {
    fake = await startFakeCohere({ key: UPSTREAM_KEY });
    relay = await startRelay();
    s = await relay.seed({ provider: "cohere", upstreamBaseUrl: fake.baseUrl, models: { "co-pub": MODEL, "co-tools": "tools", "co-429": "err-429", "co-400": "err-400" } });
    bad = await relay.seed({ provider: "cohere", upstreamBaseUrl: fake.baseUrl, apiKeys: [WRONG_KEY], models: { "co-badkey": MODEL } });
    client = await sdk(relay, s.key);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));

  function assertUpstream(up, { model = MODEL, stream }) {
    assert.equal(up.method, "POST");
    assert.equal(up.path, "/v2/chat");
    assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
    assert.ok(!JSON.stringify(up.headers).includes(s.key), "the relay key is never sent upstream");
    assert.equal(up.body.model, model);
    assert.equal(up.body.stream, stream);
    assert.equal(up.invalid, undefined, `the fake Cohere API accepted the body: ${up.invalid}`);
  }

  function assertUsage(u) {
    assert.equal(u.prompt_tokens, OPENAI_USAGE.prompt_tokens, "tokens.input_tokens, not billed_units");
    assert.equal(u.completion_tokens, OPENAI_USAGE.completion_tokens);
    assert.equal(u.total_tokens, OPENAI_USAGE.total_tokens);
    assert.equal(u.prompt_tokens_details?.cached_tokens, OPENAI_USAGE.cached_tokens);
  }

  async function assertRow(id, stream) {
    const row = await adminUsageRow(relay, id, { keyId: s.keyId });
    assert.deepEqual(
      [row.status, row.stream, row.upstream_model, row.prompt_tokens, row.completion_tokens, row.total_tokens, row.usage_source],
      [200, stream, MODEL, OPENAI_USAGE.prompt_tokens, OPENAI_USAGE.completion_tokens, OPENAI_USAGE.total_tokens, "reported"],
    );
  }

  it("OpenAI client, non-stream: POST {base}/chat with the Bearer key, v2 body; text, finish_reason, usage, usage row", async () => {
    const marker = marked();
    const { data: reply, response } = await client.chat.completions
      .create({
        model: "co-pub",
        max_tokens: 64,
        temperature: 0.4,
        top_p: 0.5,
        stop: ["END"],
        seed: 7,
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: `What are LLMs? (${marker})` },
        ],
      })
      .withResponse();
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.model, MODEL);
    assert.equal(reply.choices[0].message.content, TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assertUsage(reply.usage);
    const up = await upstreamOf(marker);
    assertUpstream(up, { stream: false });
    assert.deepEqual(up.body.messages, [
      { role: "system", content: "Be brief." },
      { role: "user", content: `What are LLMs? (${marker})` },
    ]);
    assert.deepEqual([up.body.max_tokens, up.body.temperature, up.body.p, up.body.seed], [64, 0.4, 0.5, 7]);
    assert.deepEqual(up.body.stop_sequences, ["END"]);
    assert.ok(!("top_p" in up.body) && !("stop" in up.body), "OpenAI names are not sent");
    await assertRow(requestId(response), false);
  });

  it("OpenAI client, stream: message-start / content-delta / message-end → chunks, finish_reason, usage chunk, usage row", async () => {
    const marker = marked();
    const { data: stream, response } = await client.chat.completions
      .create({ model: "co-pub", messages: [{ role: "user", content: `What are LLMs? (${marker})` }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.role, "assistant");
    assert.equal(got.content, STREAM_PIECES.join(""));
    assert.equal(got.finish, "stop");
    assert.deepEqual(chunks.at(-1).choices, []);
    assertUsage(chunks.at(-1).usage);
    assertUpstream(await upstreamOf(marker), { stream: true });
    await assertRow(requestId(response), true);
  });

  it("OpenAI client, stream without include_usage: no usage chunk, but the usage row has Cohere's counts", async () => {
    const marker = marked();
    const { data: stream, response } = await client.chat.completions
      .create({ model: "co-pub", messages: [{ role: "user", content: marker }], stream: true })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.every((c) => !c.usage), "no usage for a client that did not ask");
    assert.equal(assembleOpenAIChunks(chunks).content, STREAM_PIECES.join(""));
    await assertRow(requestId(response), true);
  });

  it("OpenAI client, tools (non-stream): tool_calls with Cohere's ids, tool_plan kept apart from content; tools and tool_choice → v2", async () => {
    const marker = marked();
    const reply = await client.chat.completions.create({
      model: "co-tools",
      tools: [WEATHER_TOOL],
      tool_choice: "required",
      messages: [{ role: "user", content: `Weather in Paris and Tokyo? (${marker})` }],
    });
    const m = reply.choices[0].message;
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.deepEqual(
      m.tool_calls.map((t) => [t.id, t.type, t.function.name, JSON.parse(t.function.arguments)]),
      TOOL_CALLS.map((c) => [c.id, "function", c.name, JSON.parse(c.arguments)]),
    );
    assert.ok(!(m.content ?? "").includes(TOOL_PLAN), "the tool plan is not answer text");
    assertUsage(reply.usage);
    const up = await upstreamOf(marker);
    assertUpstream(up, { model: "tools", stream: false });
    assert.deepEqual(up.body.tools, [{ type: "function", function: WEATHER_TOOL.function }]);
    assert.equal(up.body.tool_choice, "REQUIRED");
  });

  it("OpenAI client, tools (stream): tool-call-start / tool-call-delta → indexed tool_call deltas", async () => {
    const stream = await client.chat.completions.create({
      model: "co-tools",
      tools: [WEATHER_TOOL],
      messages: [{ role: "user", content: "Weather in Paris and Tokyo?" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.deepEqual(
      got.calls.map((c) => [c.id, c.name, JSON.parse(c.arguments)]),
      TOOL_CALLS.map((c) => [c.id, c.name, JSON.parse(c.arguments)]),
    );
    assert.equal(got.finish, "tool_calls");
    assert.ok(!got.content.includes(TOOL_PLAN), "the tool plan is not answer text");
    assertUsage(chunks.at(-1).usage);
  });

  it("OpenAI client, tool round trip: assistant tool_calls and tool results → Cohere's assistant/tool messages", async () => {
    const marker = marked();
    await client.chat.completions.create({
      model: "co-pub",
      tools: [WEATHER_TOOL],
      messages: [
        { role: "user", content: `Weather in Paris? (${marker})` },
        { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"location":"Paris"}' } }] },
        { role: "tool", tool_call_id: "call_1", content: '{"temp_c":21}' },
      ],
    });
    const up = await upstreamOf(marker);
    assertUpstream(up, { stream: false });
    assert.deepEqual(up.body.messages.slice(1), [
      { role: "assistant", tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"location":"Paris"}' } }] },
      { role: "tool", tool_call_id: "call_1", content: '{"temp_c":21}' },
    ]);
  });

  it("sampling outside Cohere's ranges is clamped and reported (x-relay-approximated), not refused upstream", async () => {
    const marker = marked();
    const { response } = await client.chat.completions
      .create({ model: "co-pub", temperature: 1.7, top_p: 1, messages: [{ role: "user", content: marker }] })
      .withResponse();
    const approx = response.headers.get("x-relay-approximated") ?? "";
    assert.ok(approx.includes("temperature") && approx.includes("top_p"), `approximated: ${approx}`);
    const up = await upstreamOf(marker);
    assertUpstream(up, { stream: false });
    assert.deepEqual([up.body.temperature, up.body.p], [1, 0.99]);
  });

  it("Anthropic client: non-stream and stream through Cohere; text, end_turn, usage", async () => {
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, body: { model: "co-pub", max_tokens: 50, messages: [{ role: "user", content: "What are LLMs?" }] } });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.deepEqual(r.json.content, [{ type: "text", text: TEXT }]);
    assert.equal(r.json.stop_reason, "end_turn");
    assert.equal(r.json.usage.output_tokens, OPENAI_USAGE.completion_tokens);
    const res = await anthropicFetch(relay, "/v1/messages", { key: s.key, body: { model: "co-pub", max_tokens: 50, stream: true, messages: [{ role: "user", content: "What are LLMs?" }] } });
    assert.equal(res.status, 200);
    const { message } = await anthropicStream(res);
    assert.deepEqual(message.content, [{ type: "text", text: STREAM_PIECES.join("") }]);
    assert.equal(message.stop_reason, "end_turn");
  });

  it("Cohere errors: 429 → 429 upstream_rate_limited; 400 → 400 with Cohere's message; 401 (wrong key) → 502, the key nowhere", async () => {
    const ask = (key, model) => relay.callJson("/v1/chat/completions", { key, body: { model, messages: [{ role: "user", content: "Hi" }] } });
    assertOpenAIError(await ask(s.key, "co-429"), { status: 429, code: "upstream_rate_limited" });
    const e = assertOpenAIError(await ask(s.key, "co-400"), { status: 400, code: "upstream_invalid_request" });
    assert.match(e.message, /err-400 was asked for/);
    const r = await ask(bad.key, "co-badkey");
    assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
    assertNowhere(r, [WRONG_KEY], "401 response");
    const a = await anthropicJson(relay, "/v1/messages", { key: s.key, body: { model: "co-429", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] } });
    assertAnthropicError(a, { status: 429, type: "rate_limit_error" });
  });
});
