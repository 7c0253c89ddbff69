// OpenAI clients (the openai SDK) on a Gemini channel: the request becomes a generateContent /
// streamGenerateContent?alt=sse call (fake-gemini.mjs checks it as the real API would), replies
// and streams come back in OpenAI's shapes: text, functionCall → tool_calls, safety blocks →
// content_filter, usageMetadata (cached and thought tokens) → usage, Google errors → relay errors.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, sdk, requestId, assertOpenAIError, assertNowhere, UPSTREAM_KEY } from "./harness.mjs";
import { startFakeGemini, TEXT, STREAM_PIECES, OPENAI_USAGE, FUNCTION_CALLS, SAFETY_TEXT } from "./fake-gemini.mjs";
import { assembleOpenAIChunks, anthropicFetch, anthropicJson, anthropicStream, assertAnthropicMessage, assertAnthropicError } from "./anthropic-client.mjs";

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city.",
    parameters: {
      $schema: "http://json-schema.org/draft-07/schema#",
      type: "object",
      properties: { location: { type: "string", format: "uri" }, unit: { type: ["string", "null"], enum: ["celsius", "fahrenheit"] } },
      required: ["location"],
      additionalProperties: false,
    },
  },
};

describe("OpenAI client → Gemini upstream", () => {
  let relay, fake, s, client;
  before(async () => {
    fake = await startFakeGemini();
    relay = await startRelay();
    s = await relay.seed({
      provider: "gemini",
      upstreamBaseUrl: fake.baseUrl,
      models: { "gem-pub": "gemini-up", "gem-fc": "fc", "gem-safety": "safety", "gem-safety2": "safety-candidate" },
    });
    client = await sdk(relay, s.key);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));

  function assertUpstream(up, { model, stream }) {
    assert.equal(up.method, "POST");
    assert.equal(up.path, `/v1beta/models/${model}:${stream ? "streamGenerateContent" : "generateContent"}`);
    if (stream) assert.equal(up.query.alt, "sse", "streams ask for SSE");
    assert.equal(up.headers["x-goog-api-key"], UPSTREAM_KEY, "the channel key goes in x-goog-api-key");
    assert.equal(up.query.key, undefined, "the key is not put in the URL");
    assert.equal(up.headers.authorization, undefined);
    assert.ok(!JSON.stringify(up.headers).includes(s.key), "the relay key is never sent upstream");
    assert.equal(up.invalid, undefined, `the fake Gemini API accepted the body: ${up.invalid}`);
  }

  function assertUsage(u) {
    assert.equal(u.prompt_tokens, OPENAI_USAGE.prompt_tokens, "prompt includes cached tokens once");
    assert.equal(u.completion_tokens, OPENAI_USAGE.completion_tokens, "completion = candidates + thoughts");
    assert.equal(u.total_tokens, OPENAI_USAGE.total_tokens);
    assert.equal(u.prompt_tokens_details?.cached_tokens, OPENAI_USAGE.cached_tokens);
    assert.equal(u.completion_tokens_details?.reasoning_tokens, OPENAI_USAGE.reasoning_tokens);
  }

  it("non-stream text: path, key header, body translated; content, finish_reason, model, usage", async () => {
    const marker = marked();
    const { data: reply, response } = await client.chat.completions
      .create({
        model: "gem-pub",
        max_tokens: 200,
        temperature: 0.3,
        stop: ["END"],
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: `Capital of Wyoming? (${marker})` },
        ],
      })
      .withResponse();
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.model, "gemini-up", "the response names the upstream model");
    assert.equal(reply.choices[0].message.role, "assistant");
    assert.equal(reply.choices[0].message.content, TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assertUsage(reply.usage);

    const up = await upstreamOf(marker);
    assertUpstream(up, { model: "gemini-up", stream: false });
    assert.deepEqual(up.body.systemInstruction, { parts: [{ text: "Be brief." }] });
    assert.deepEqual(up.body.contents, [{ role: "user", parts: [{ text: `Capital of Wyoming? (${marker})` }] }]);
    assert.equal(up.body.generationConfig.maxOutputTokens, 200);
    assert.equal(up.body.generationConfig.temperature, 0.3);
    assert.deepEqual(up.body.generationConfig.stopSequences, ["END"]);
    assert.ok(!("model" in up.body) && !("messages" in up.body), "no OpenAI fields in the Gemini body");

    const row = await relay.usageRow(requestId(response));
    assert.equal(row.upstream_model, "gemini-up");
    assert.equal(row.prompt_tokens, OPENAI_USAGE.prompt_tokens, "cached tokens counted once");
    assert.equal(row.completion_tokens, OPENAI_USAGE.completion_tokens);
    assert.equal(row.total_tokens, OPENAI_USAGE.total_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("stream text: streamGenerateContent?alt=sse; chunks, finish_reason, usage chunk with cached tokens", async () => {
    const marker = marked();
    const stream = await client.chat.completions.create({
      model: "gem-pub",
      messages: [{ role: "user", content: `Capital of Wyoming? (${marker})` }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.role, "assistant");
    assert.equal(got.content, STREAM_PIECES.join(""), "text (multi-byte included) survives CRLF framing and splits");
    assert.equal(got.finish, "stop");
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assertUsage(last.usage);
    for (const c of chunks) assert.equal(c.model, "gemini-up");
    assertUpstream(await upstreamOf(marker), { model: "gemini-up", stream: true });
  });

  it("functionCall → tool_calls (non-stream): ids, names, JSON arguments, finish_reason tool_calls; tools → functionDeclarations", async () => {
    const marker = marked();
    const { data: reply, response } = await client.chat.completions
      .create({ model: "gem-fc", tools: [WEATHER_TOOL], tool_choice: "required", messages: [{ role: "user", content: `Weather in Paris and Tokyo? (${marker})` }] })
      .withResponse();
    const m = reply.choices[0].message;
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.equal(m.tool_calls.length, FUNCTION_CALLS.length);
    const ids = new Set();
    m.tool_calls.forEach((tc, i) => {
      assert.equal(tc.type, "function");
      assert.ok(tc.id, "each call has an id");
      ids.add(tc.id);
      assert.equal(tc.function.name, FUNCTION_CALLS[i].name);
      assert.deepEqual(JSON.parse(tc.function.arguments), FUNCTION_CALLS[i].args);
    });
    assert.equal(ids.size, FUNCTION_CALLS.length, "ids are distinct");
    assertUsage(reply.usage);

    const up = await upstreamOf(marker);
    assertUpstream(up, { model: "fc", stream: false });
    const decls = up.body.tools?.[0]?.functionDeclarations;
    assert.equal(decls?.length, 1);
    assert.equal(decls[0].name, "get_weather");
    assert.equal(decls[0].description, "Current weather in a city.");
    assert.deepEqual(decls[0].parameters.required, ["location"]);
    assert.ok(!JSON.stringify(decls[0].parameters).includes("additionalProperties"), "JSON Schema cleaned to Gemini's subset");
    assert.deepEqual(up.body.toolConfig, { functionCallingConfig: { mode: "ANY" } });
    assert.ok(
      (response.headers.get("x-relay-approximated") ?? "").includes("tools.parameters"),
      `a lossy schema clean is reported: ${response.headers.get("x-relay-approximated")}`,
    );
  });

  it("functionCall → tool_calls (stream): index/id/name/arguments per call, finish_reason tool_calls", async () => {
    const stream = await client.chat.completions.create({
      model: "gem-fc",
      tools: [WEATHER_TOOL],
      messages: [{ role: "user", content: "Weather in Paris and Tokyo?" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.calls.length, FUNCTION_CALLS.length, JSON.stringify(got.calls));
    assert.equal(new Set(got.calls.map((c) => c.id)).size, FUNCTION_CALLS.length, "distinct ids");
    got.calls.forEach((c, i) => {
      assert.equal(c.name, FUNCTION_CALLS[i].name);
      assert.deepEqual(JSON.parse(c.arguments), FUNCTION_CALLS[i].args);
    });
    assert.equal(got.finish, "tool_calls");
    assertUsage(chunks.at(-1).usage);
  });

  it("tool round trip: assistant tool_calls → functionCall, tool results → functionResponse named after the call", async () => {
    const marker = marked();
    await client.chat.completions.create({
      model: "gem-pub",
      tools: [WEATHER_TOOL],
      messages: [
        { role: "user", content: `Weather in Paris? (${marker})` },
        { role: "assistant", content: null, tool_calls: [{ id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"location":"Paris"}' } }] },
        { role: "tool", tool_call_id: "call_0", content: '{"temp_c":21}' },
      ],
    });
    const up = await upstreamOf(marker);
    assertUpstream(up, { model: "gemini-up", stream: false });
    assert.deepEqual(
      up.body.contents.map((c) => c.role),
      ["user", "model", "user"],
    );
    assert.deepEqual(up.body.contents[1].parts, [{ functionCall: { name: "get_weather", args: { location: "Paris" } } }]);
    assert.deepEqual(up.body.contents[2].parts, [{ functionResponse: { name: "get_weather", response: { temp_c: 21 } } }]);
  });

  it("safety: a blocked prompt → finish_reason content_filter (non-stream and stream)", async () => {
    const reply = await client.chat.completions.create({ model: "gem-safety", messages: [{ role: "user", content: "something bad" }] });
    assert.equal(reply.choices[0].finish_reason, "content_filter");
    const stream = await client.chat.completions.create({ model: "gem-safety", messages: [{ role: "user", content: "something bad" }], stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(assembleOpenAIChunks(chunks).finish, "content_filter");
  });

  it("safety: a candidate stopped with finishReason SAFETY → content_filter, partial text kept", async () => {
    const reply = await client.chat.completions.create({ model: "gem-safety2", messages: [{ role: "user", content: "something risky" }] });
    assert.equal(reply.choices[0].finish_reason, "content_filter");
    assert.equal(reply.choices[0].message.content, SAFETY_TEXT);
    const stream = await client.chat.completions.create({ model: "gem-safety2", messages: [{ role: "user", content: "something risky" }], stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.finish, "content_filter");
    assert.equal(got.content, SAFETY_TEXT);
  });

  it("an Anthropic client on the Gemini channel: tool_use blocks from functionCalls, text and usage; Anthropic-shaped errors", async () => {
    const tools = [{ name: "get_weather", description: "Weather.", input_schema: { type: "object", properties: { location: { type: "string" } }, required: ["location"] } }];
    const marker = marked();
    const res = await anthropicFetch(relay, "/v1/messages", {
      key: s.key,
      headers: { "anthropic-beta": "fine-grained-tool-streaming-2025-05-14" },
      body: { model: "gem-fc", max_tokens: 100, stream: true, system: "Be brief.", tools, messages: [{ role: "user", content: `Weather? (${marker})` }] },
    });
    assert.equal(res.status, 200);
    const { message } = await anthropicStream(res);
    assert.equal(message.stop_reason, "tool_use");
    const uses = message.content.filter((b) => b.type === "tool_use");
    assert.deepEqual(uses.map((b) => [b.name, b.input]), FUNCTION_CALLS.map((fc) => [fc.name, fc.args]));
    for (const b of uses) assert.match(b.id, /^[a-zA-Z0-9_-]+$/, "tool ids an Anthropic client can send back");
    assert.equal(message.usage.output_tokens, OPENAI_USAGE.completion_tokens);
    assert.equal(message.usage.cache_read_input_tokens, OPENAI_USAGE.cached_tokens);
    assert.equal(message.usage.input_tokens, OPENAI_USAGE.prompt_tokens - OPENAI_USAGE.cached_tokens, "input_tokens exclude cache reads");
    const up = await upstreamOf(marker);
    assertUpstream(up, { model: "fc", stream: true });
    assert.equal(up.headers["anthropic-beta"], undefined, "anthropic-beta goes to Anthropic upstreams only");
    assert.deepEqual(up.body.systemInstruction, { parts: [{ text: "Be brief." }] });

    const whole = await anthropicJson(relay, "/v1/messages", {
      key: s.key,
      body: { model: "gem-pub", max_tokens: 100, messages: [{ role: "user", content: "Capital of Wyoming?" }] },
    });
    assert.equal(whole.status, 200, whole.text);
    assertAnthropicMessage(whole.json);
    assert.deepEqual(whole.json.content, [{ type: "text", text: TEXT }]);
    assert.equal(whole.json.stop_reason, "end_turn");
    assert.equal(whole.json.model, "gemini-up");

    fake.next("err-429");
    const limited = await anthropicJson(relay, "/v1/messages", {
      key: s.key,
      headers: { "x-relay-retries": "0" },
      body: { model: "gem-pub", max_tokens: 100, messages: [{ role: "user", content: "Hi" }] },
    });
    assertAnthropicError(limited, { status: 429, type: "rate_limit_error" });
  });

  it("Gemini errors: 429 RESOURCE_EXHAUSTED → 429, 503 UNAVAILABLE → 503 upstream_overloaded, 400 → 400 with the message, 403 → 502", async () => {
    // x-relay-retries: 0 — one attempt, so each upstream error reaches the client mapped.
    const ask = () => relay.callJson("/v1/chat/completions", { key: s.key, headers: { "x-relay-retries": "0" }, body: { model: "gem-pub", messages: [{ role: "user", content: "Hi" }] } });
    fake.next("err-429");
    assertOpenAIError(await ask(), { status: 429, code: "upstream_rate_limited" });
    fake.next("err-503");
    assertOpenAIError(await ask(), { status: 503, code: "upstream_overloaded" });
    fake.next("err-400");
    const e = assertOpenAIError(await ask(), { status: 400, code: "upstream_invalid_request" });
    assert.match(e.message, /err-400 was asked for/);
    fake.next("err-403");
    const r = await ask();
    assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
    assertNowhere(r, [UPSTREAM_KEY], "403 response");
  });
});
