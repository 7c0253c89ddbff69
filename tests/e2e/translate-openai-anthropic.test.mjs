// OpenAI clients (the openai SDK) on an Anthropic channel: the relay translates the request to
// Anthropic's Messages API (fake-anthropic.mjs checks it as the real API would) and the reply and
// stream back to OpenAI's shapes; fidelity headers, strict mode and upstream errors.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, sdk, sse, sseJson, requestId, assertOpenAIError, assertNowhere, UPSTREAM_KEY } from "./harness.mjs";
import {
  startFakeAnthropic,
  ANTHROPIC_VERSION,
  TEXT,
  USAGE,
  STREAM_TEXT_PIECES,
  STREAM_USAGE,
  TOOLS_TEXT,
  TOOL_USES,
  THINKING,
  THINKING_TEXT,
  RETRY_AFTER,
  totalInput,
} from "./fake-anthropic.mjs";
import { assembleOpenAIChunks } from "./anthropic-client.mjs";

const PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city.",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

describe("OpenAI client → Anthropic upstream", () => {
  let relay, fake, s, client;
  before(async () => {
    fake = await startFakeAnthropic();
    relay = await startRelay();
    s = await relay.seed({
      provider: "anthropic",
      upstreamBaseUrl: fake.baseUrl,
      models: {
        "claude-pub": "claude-up",
        "claude-tools": "tools",
        "claude-thinking": "thinking",
        "claude-broken": "stream-error",
      },
    });
    client = await sdk(relay, s.key);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));

  function assertUpstreamHeaders(up) {
    assert.equal(up.method, "POST");
    assert.equal(up.path, "/v1/messages");
    assert.equal(up.headers["x-api-key"], UPSTREAM_KEY, "the channel's key goes in x-api-key");
    assert.equal(up.headers["anthropic-version"], ANTHROPIC_VERSION);
    assert.equal(up.headers.authorization, undefined, "no Authorization header to Anthropic");
    assert.ok(!JSON.stringify(up.headers).includes(s.key), "the relay key is never sent upstream");
    assert.match(up.headers["content-type"] ?? "", /application\/json/);
    assert.equal(up.invalid, undefined, `the fake Anthropic API accepted the body: ${up.invalid}`);
  }

  it("non-stream text: content, finish_reason, upstream model, usage with cached tokens counted once", async () => {
    const marker = marked();
    const { data: reply, response } = await client.chat.completions
      .create({
        model: "claude-pub",
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: `Say hello (${marker})` },
        ],
      })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.model, "claude-up", "the response names the upstream model that served it");
    assert.equal(reply.choices.length, 1);
    assert.equal(reply.choices[0].message.role, "assistant");
    assert.equal(reply.choices[0].message.content, TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assert.equal(reply.usage.prompt_tokens, totalInput(USAGE), "prompt = input + cache read + cache write");
    assert.equal(reply.usage.completion_tokens, USAGE.output_tokens);
    assert.equal(reply.usage.total_tokens, totalInput(USAGE) + USAGE.output_tokens);
    assert.equal(reply.usage.prompt_tokens_details?.cached_tokens, USAGE.cache_read_input_tokens);
    assert.equal(response.headers.get("x-relay-dropped"), null, "nothing dropped from a plain request");

    const up = await upstreamOf(marker);
    assertUpstreamHeaders(up);
    assert.equal(up.body.model, "claude-up");
    assert.equal(up.body.system, "Be brief.", "the system message is hoisted to `system`");
    assert.ok(!up.body.messages.some((m) => m.role === "system"), "no system role among messages");
    assert.equal(up.body.max_tokens, 4096, "max_tokens (required by Anthropic) defaults to 4096");
    assert.equal(up.body.stream, undefined);
    assert.deepEqual(up.body.messages, [{ role: "user", content: [{ type: "text", text: `Say hello (${marker})` }] }]);

    const row = await relay.usageRow(requestId(response));
    assert.match(row.endpoint, /chat\/completions|chat\.completions/, "recorded as the OpenAI endpoint the client called");
    assert.equal(row.prompt_tokens, totalInput(USAGE));
    assert.equal(row.completion_tokens, USAGE.output_tokens);
    assert.equal(row.total_tokens, totalInput(USAGE) + USAGE.output_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("request translation: max_tokens, sampling, stop, tools → input_schema, tool round trip, image data URL → base64", async () => {
    const marker = marked();
    const reply = await client.chat.completions.create({
      model: "claude-pub",
      max_completion_tokens: 321,
      temperature: 0.5,
      top_p: 0.9,
      stop: ["END"],
      user: "user-42",
      tools: [WEATHER_TOOL],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      messages: [
        { role: "developer", content: "You are terse." },
        {
          role: "user",
          content: [
            { type: "text", text: `What is in this image and what is the weather? (${marker})` },
            { type: "image_url", image_url: { url: `data:image/png;base64,${PNG_B64}` } },
          ],
        },
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "call_abc123", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }],
        },
        { role: "tool", tool_call_id: "call_abc123", content: "sunny, 21°C" },
      ],
    });
    assert.equal(reply.choices[0].message.content, TEXT);

    const up = await upstreamOf(marker);
    assertUpstreamHeaders(up);
    const b = up.body;
    assert.equal(b.system, "You are terse.", "developer messages are hoisted like system ones");
    assert.equal(b.max_tokens, 321);
    assert.equal(b.temperature, 0.5);
    assert.equal(b.top_p, 0.9);
    assert.deepEqual(b.stop_sequences, ["END"]);
    assert.deepEqual(b.metadata, { user_id: "user-42" });
    assert.deepEqual(b.tools, [
      {
        name: "get_weather",
        description: "Current weather in a city.",
        input_schema: WEATHER_TOOL.function.parameters,
      },
    ]);
    assert.deepEqual(b.tool_choice, { type: "tool", name: "get_weather" });
    assert.deepEqual(b.messages, [
      {
        role: "user",
        content: [
          { type: "text", text: `What is in this image and what is the weather? (${marker})` },
          { type: "image", source: { type: "base64", media_type: "image/png", data: PNG_B64 } },
        ],
      },
      { role: "assistant", content: [{ type: "tool_use", id: "call_abc123", name: "get_weather", input: { city: "Paris" } }] },
      { role: "user", content: [{ type: "tool_result", tool_use_id: "call_abc123", content: "sunny, 21°C" }] },
    ]);
    for (const k of ["seed", "n", "user", "stop", "max_completion_tokens", "stream_options", "parallel_tool_calls"]) {
      assert.ok(!(k in b), `no OpenAI-only field ${k} in the Anthropic body`);
    }
  });

  it("alternation: consecutive user messages merge into one turn; parallel tool results share one user turn before the text", async () => {
    const marker = marked();
    const r = await relay.callJson("/v1/chat/completions", {
      key: s.key,
      body: {
        model: "claude-pub",
        tools: [WEATHER_TOOL],
        messages: [
          { role: "user", content: "First part." },
          { role: "user", content: `Second part (${marker}).` },
          {
            role: "assistant",
            content: "Checking both.",
            tool_calls: [
              { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
              { id: "call_2", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
            ],
          },
          { role: "tool", tool_call_id: "call_1", content: "sunny" },
          { role: "tool", tool_call_id: "call_2", content: "snow" },
          { role: "user", content: "And tomorrow?" },
        ],
      },
    });
    assert.equal(r.status, 200, r.text);
    const up = await upstreamOf(marker);
    assertUpstreamHeaders(up);
    assert.deepEqual(up.body.messages, [
      {
        role: "user",
        content: [
          { type: "text", text: "First part." },
          { type: "text", text: `Second part (${marker}).` },
        ],
      },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Checking both." },
          { type: "tool_use", id: "call_1", name: "get_weather", input: { city: "Paris" } },
          { type: "tool_use", id: "call_2", name: "get_weather", input: { city: "Oslo" } },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "call_1", content: "sunny" },
          { type: "tool_result", tool_use_id: "call_2", content: "snow" },
          { type: "text", text: "And tomorrow?" },
        ],
      },
    ]);
  });

  it("non-stream tool_use reply → tool_calls with ids, names and JSON arguments; finish_reason tool_calls", async () => {
    const marker = marked();
    const reply = await client.chat.completions.create({
      model: "claude-tools",
      tools: [WEATHER_TOOL],
      messages: [{ role: "user", content: `Weather and time? (${marker})` }],
    });
    const m = reply.choices[0].message;
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.equal(m.content, TOOLS_TEXT);
    assert.equal(m.tool_calls.length, TOOL_USES.length);
    m.tool_calls.forEach((tc, i) => {
      assert.equal(tc.id, TOOL_USES[i].id);
      assert.equal(tc.type, "function");
      assert.equal(tc.function.name, TOOL_USES[i].name);
      assert.deepEqual(JSON.parse(tc.function.arguments), TOOL_USES[i].input);
    });
    assertUpstreamHeaders(await upstreamOf(marker));
  });

  it("stream with tools: text chunks, tool_calls deltas (index/id/name/arguments), finish_reason, final usage chunk", async () => {
    const marker = marked();
    const stream = await client.chat.completions.create({
      model: "claude-tools",
      tools: [WEATHER_TOOL],
      messages: [{ role: "user", content: `Weather and time? (${marker})` }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.length >= 2 + TOOL_USES.length, `several chunks (${chunks.length})`);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.role, "assistant");
    assert.equal(got.content, TOOLS_TEXT);
    assert.equal(got.calls.length, TOOL_USES.length, JSON.stringify(got.calls));
    got.calls.forEach((call, i) => {
      assert.equal(call.id, TOOL_USES[i].id, `tool call ${i} id`);
      assert.equal(call.name, TOOL_USES[i].name, `tool call ${i} name`);
      assert.equal(call.arguments, TOOL_USES[i].fragments.join(""), `tool call ${i} arguments, reassembled`);
      assert.deepEqual(JSON.parse(call.arguments), TOOL_USES[i].input);
    });
    assert.equal(got.finish, "tool_calls");
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null, "usage is null on every chunk but the last (include_usage)");
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], "the usage chunk has no choices");
    assert.equal(last.usage.prompt_tokens, totalInput(STREAM_USAGE));
    assert.equal(last.usage.completion_tokens, STREAM_USAGE.output_tokens);
    assert.equal(last.usage.total_tokens, totalInput(STREAM_USAGE) + STREAM_USAGE.output_tokens);
    assert.equal(last.usage.prompt_tokens_details?.cached_tokens, STREAM_USAGE.cache_read_input_tokens);
    for (const c of chunks) assert.equal(c.model, "tools", "every chunk names the upstream model");

    const up = await upstreamOf(marker);
    assertUpstreamHeaders(up);
    assert.equal(up.body.stream, true);
    assert.equal(up.body.stream_options, undefined, "no stream_options to Anthropic");
  });

  it("stream without include_usage: no usage chunk for the client, ends with [DONE], the row has the real counts", async () => {
    const marker = marked();
    const res = await relay.call("/v1/chat/completions", {
      key: s.key,
      body: { model: "claude-pub", stream: true, messages: [{ role: "user", content: `Hi (${marker})` }] },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const id = requestId(res);
    const events = await sse(res);
    assert.equal(events.at(-1).data, "[DONE]");
    const chunks = sseJson(events).slice(0, -1);
    for (const c of chunks) {
      assert.ok(!("usage" in c) || c.usage === null, `no usage for a client that did not ask: ${JSON.stringify(c)}`);
      assert.ok(c.choices.length > 0, "no usage-only chunk");
    }
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.content, STREAM_TEXT_PIECES.join(""), "multi-byte text survives chunk splits");
    assert.equal(got.finish, "stop");
    const row = await relay.usageRow(id);
    assert.equal(row.stream, 1);
    assert.equal(row.status, 200);
    assert.equal(row.prompt_tokens, totalInput(STREAM_USAGE));
    assert.equal(row.completion_tokens, STREAM_USAGE.output_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("thinking: non-stream reasoning_content, stream reasoning deltas", async () => {
    const reply = await client.chat.completions.create({ model: "claude-thinking", messages: [{ role: "user", content: "27 * 453?" }] });
    assert.equal(reply.choices[0].message.content, THINKING_TEXT);
    assert.equal(reply.choices[0].message.reasoning_content, THINKING);
    const stream = await client.chat.completions.create({ model: "claude-thinking", messages: [{ role: "user", content: "27 * 453?" }], stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.reasoning, THINKING);
    assert.equal(got.content, THINKING_TEXT);
    assert.equal(got.finish, "stop");
  });

  it("seed cannot be carried: 200 with x-relay-dropped naming it, and it is not sent", async () => {
    const marker = marked();
    const r = await relay.callJson("/v1/chat/completions", {
      key: s.key,
      body: { model: "claude-pub", seed: 42, messages: [{ role: "user", content: `Hi (${marker})` }] },
    });
    assert.equal(r.status, 200, r.text);
    const dropped = (r.headers.get("x-relay-dropped") ?? "").split(",").map((f) => f.trim());
    assert.ok(dropped.includes("seed"), `x-relay-dropped lists seed: ${r.headers.get("x-relay-dropped")}`);
    const up = await upstreamOf(marker);
    assertUpstreamHeaders(up);
    assert.ok(!("seed" in up.body), "seed is not sent to Anthropic");
  });

  it("stream: x-relay-dropped is on the stream response too", async () => {
    const res = await relay.call("/v1/chat/completions", {
      key: s.key,
      body: { model: "claude-pub", seed: 7, stream: true, messages: [{ role: "user", content: "Hi" }] },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("x-relay-dropped") ?? "", /\bseed\b/);
    await res.text();
  });

  it("strict mode: a field that cannot be carried is a 400 unsupported_parameter naming it, and nothing goes upstream", async () => {
    const marker = marked();
    const r = await relay.callJson("/v1/chat/completions", {
      key: s.key,
      headers: { "x-relay-strict": "true" },
      body: { model: "claude-pub", seed: 42, messages: [{ role: "user", content: `Hi (${marker})` }] },
    });
    assertOpenAIError(r, { status: 400, code: "unsupported_parameter", param: "seed", type: "invalid_request_error" });
    // Strict mode with nothing to drop goes through.
    const ok = await relay.callJson("/v1/chat/completions", {
      key: s.key,
      headers: { "x-relay-strict": "true" },
      body: { model: "claude-pub", messages: [{ role: "user", content: `Hi again (${marker})` }] },
    });
    assert.equal(ok.status, 200, ok.text);
    await upstreamOf(`Hi again (${marker})`);
    assert.equal(fake.find((x) => x.rawBody.includes(`Hi (${marker})`)).length, 0, "the refused request never reached the upstream");
  });

  it("the client's anthropic-beta header is not forwarded for an OpenAI client", async () => {
    const marker = marked();
    const r = await relay.callJson("/v1/chat/completions", {
      key: s.key,
      headers: { "anthropic-beta": "prompt-caching-2024-07-31" },
      body: { model: "claude-pub", messages: [{ role: "user", content: `Hi (${marker})` }] },
    });
    assert.equal(r.status, 200, r.text);
    const up = await upstreamOf(marker);
    assert.equal(up.headers["anthropic-beta"], undefined);
  });

  it("upstream 529 overloaded → 503 upstream_overloaded for an OpenAI client", async () => {
    fake.next("err-529");
    // x-relay-retries: 0 — one attempt, so the upstream's answer reaches the client as is.
    const r = await relay.callJson("/v1/chat/completions", { key: s.key, headers: { "x-relay-retries": "0" }, body: { model: "claude-pub", messages: [{ role: "user", content: "Hi" }] } });
    assertOpenAIError(r, { status: 503, code: "upstream_overloaded" });
  });

  it("upstream 429 → 429 upstream_rate_limited with Retry-After", async () => {
    fake.next("err-429");
    const r = await relay.callJson("/v1/chat/completions", { key: s.key, body: { model: "claude-pub", messages: [{ role: "user", content: "Hi" }] } });
    assertOpenAIError(r, { status: 429, code: "upstream_rate_limited" });
    assert.equal(r.headers.get("retry-after"), RETRY_AFTER);
  });

  it("upstream 400 invalid_request_error → 400 upstream_invalid_request keeping Anthropic's message", async () => {
    fake.next("err-400");
    const r = await relay.callJson("/v1/chat/completions", { key: s.key, body: { model: "claude-pub", messages: [{ role: "user", content: "Hi" }] } });
    const e = assertOpenAIError(r, { status: 400, code: "upstream_invalid_request" });
    assert.match(e.message, /err-400 was asked for/);
  });

  it("upstream 401 → 502 upstream_auth_failed, and the upstream key appears nowhere (even when the upstream quotes it)", async () => {
    for (const scenario of ["err-401", "err-401-key"]) {
      fake.next(scenario);
      const marker = marked();
      const r = await relay.callJson("/v1/chat/completions", {
        key: s.key,
        body: { model: "claude-pub", messages: [{ role: "user", content: `Hi (${marker})` }] },
      });
      assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
      assertNowhere(r, [UPSTREAM_KEY, UPSTREAM_KEY.slice(0, 12), "x-api-key"], `${scenario} response`);
      const up = await upstreamOf(marker);
      assert.equal(up.scenario, scenario);
      assert.equal(up.headers["x-api-key"], UPSTREAM_KEY);
    }
  });

  it("an error event mid-stream ends the OpenAI stream with an in-band error (the SDK throws)", async () => {
    const stream = await client.chat.completions.create({ model: "claude-broken", messages: [{ role: "user", content: "Tell a story" }], stream: true });
    let text = "";
    await assert.rejects(
      (async () => {
        for await (const c of stream) text += c.choices?.[0]?.delta?.content ?? "";
      })(),
      (err) => {
        assert.match(String(err.message ?? err), /overloaded|upstream/i);
        return true;
      },
    );
    assert.equal(text, "Once upon", "what came before the error still reached the client");
  });
});
