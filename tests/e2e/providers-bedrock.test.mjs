// Bedrock channels end to end: OpenAI clients (the openai SDK) and Anthropic clients (raw fetch on
// /v1/messages) against fake-bedrock.mjs, which verifies every request's SigV4 signature itself
// and answers Converse JSON or binary event streams. Covers the URL (model id with ':' → %3A),
// the signature (path signed double-encoded), the Converse body, text and tool calls both ways,
// usage (Bedrock's inputTokens exclude cache reads) in replies and usage rows, session tokens,
// upstream errors (429, a wrong secret → 403 → 502 with the secret nowhere), and channel checks.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { startRelay, sdk, requestId, assertOpenAIError, assertNowhere, adminUsageRow, sse, ROOT } from "./harness.mjs";
import {
  startFakeBedrock,
  verifySigV4,
  canonicalUri,
  decodeFrames,
  encodeFrame,
  crc32,
  REGION,
  TEXT,
  STREAM_PIECES,
  TOOLS_TEXT,
  TOOL_USES,
  USAGE,
  OPENAI_USAGE,
  THROTTLE_MESSAGE,
} from "./fake-bedrock.mjs";
import { assembleOpenAIChunks, anthropicJson, anthropicFetch, anthropicStream, assertAnthropicMessage, assertAnthropicError } from "./anthropic-client.mjs";

const AKID = "AKIAFAKEEXAMPLE7Q2ZX";
const SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFAKESECRETkey";
const TEMP_AKID = "ASIAFAKETEMPORARY123";
const TEMP_SECRET = "tEmPoRaRy/SeCrEt+0123456789abcdefGHIJKLMN";
const TEMP_TOKEN = "IQoJb3JpZ2luX2VjEFAKE//////////wEaCXVzLWVhc3QtMSJHMEUCIQDfakeSessionToken==";
const WRONG_SECRET = "ThisIsNotTheSecretAtAll/0123456789ABCDEFGH";
const MODEL = "anthropic.claude-3-haiku-20240307-v1:0";
const TOOLS_MODEL = "tools.anthropic.claude-3-haiku-20240307-v1:0";

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city.",
    parameters: { type: "object", properties: { location: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } }, required: ["location"] },
  },
};

describe("fake Bedrock self-checks (no relay): its SigV4 verifier and event-stream codec follow AWS", () => {
  const suite = { credentials: { AKIDEXAMPLE: { secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" } }, region: "us-east-1", service: "service", nowMs: Date.UTC(2015, 7, 30, 12, 36, 0) };
  const auth = (sig) => `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=${sig}`;
  const headers = (sig) => ({ host: "example.amazonaws.com", "x-amz-date": "20150830T123600Z", authorization: auth(sig) });

  it("accepts AWS's signature test-suite vectors and rejects a changed one", () => {
    // aws-sig-v4-test-suite: get-vanilla, post-vanilla, get-vanilla-query-order-key-case.
    const cases = [
      ["GET", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"],
      ["POST", "/", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"],
      ["GET", "/?Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"],
    ];
    for (const [method, url, sig] of cases) {
      const v = verifySigV4({ ...suite, method, url, headers: headers(sig), body: Buffer.alloc(0) });
      assert.ok(v.ok, `${method} ${url}: ${v.message}`);
      const bad = verifySigV4({ ...suite, method, url, headers: headers(sig.replace(/^./, (c) => (c === "0" ? "1" : "0"))), body: Buffer.alloc(0) });
      assert.equal(bad.ok, false);
      assert.equal(bad.status, 403);
      assert.match(bad.message, /signature we calculated does not match/);
    }
    const stale = verifySigV4({ ...suite, nowMs: suite.nowMs + 16 * 60_000, method: "GET", url: "/", headers: headers(cases[0][2]), body: Buffer.alloc(0) });
    assert.match(stale.message, /Signature expired/);
  });

  it("signs a Bedrock path double-encoded, as AWS printed it in a SignatureDoesNotMatch reply", () => {
    assert.equal(canonicalUri("/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream"), "/model/us.anthropic.claude-sonnet-4-20250514-v1%253A0/converse-stream");
    assert.equal(canonicalUri("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.x/converse"), "/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A123%253Ainference-profile%252Fus.x/converse");
  });

  it("reads the repository's recorded Bedrock event streams (both CRCs checked) and round-trips its own frames", () => {
    assert.equal(crc32(Buffer.from("123456789")).toString(16), "cbf43926", "CRC-32/IEEE check value");
    const dir = path.join(ROOT, "tests/fixtures/bedrock");
    const text = decodeFrames(fs.readFileSync(path.join(dir, "stream_text.bin")));
    assert.deepEqual(text.map((f) => f.headers[":event-type"]), ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]);
    for (const f of text) {
      assert.equal(f.headers[":message-type"], "event");
      assert.equal(f.headers[":content-type"], "application/json");
      JSON.parse(f.payload.toString("utf8"));
    }
    const exc = decodeFrames(fs.readFileSync(path.join(dir, "stream_exception.bin")));
    assert.equal(exc.at(-1).headers[":message-type"], "exception");
    const mine = encodeFrame([[":event-type", "metadata"], [":message-type", "event"]], { usage: USAGE });
    assert.deepEqual(JSON.parse(decodeFrames(mine)[0].payload), { usage: USAGE });
    const corrupt = Buffer.from(mine);
    corrupt[corrupt.length - 6] ^= 1;
    assert.throws(() => decodeFrames(corrupt), /CRC/);
  });
});

describe("Bedrock channels", () => {
  let relay, fake, s, temp, wrong, client;
  before(async () => {
    fake = await startFakeBedrock({ credentials: { [AKID]: { secret: SECRET }, [TEMP_AKID]: { secret: TEMP_SECRET, token: TEMP_TOKEN } } });
    relay = await startRelay();
    const models = { "bed-claude": MODEL, "bed-tools": TOOLS_MODEL, "bed-429": "err-429.anthropic.claude-v1:0", "bed-exc": "stream-exception.anthropic.claude-v1:0" };
    s = await relay.seed({ provider: "bedrock", upstreamBaseUrl: fake.baseUrl, apiKeys: [`${AKID}:${SECRET}`], options: { region: REGION }, models });
    temp = await relay.seed({ provider: "bedrock", upstreamBaseUrl: fake.baseUrl, apiKeys: [`${TEMP_AKID}:${TEMP_SECRET}:${TEMP_TOKEN}`], options: { region: REGION }, models: { "bed-temp": MODEL } });
    wrong = await relay.seed({ provider: "bedrock", upstreamBaseUrl: fake.baseUrl, apiKeys: [`${AKID}:${WRONG_SECRET}`], options: { region: REGION }, models: { "bed-wrong": MODEL } });
    client = await sdk(relay, s.key);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));

  /** The request reached the fake signed correctly, at the Converse URL for `modelId`. */
  function assertSigned(up, { modelId = MODEL, stream, akid = AKID, secrets = [SECRET] }) {
    assert.equal(up.method, "POST");
    const encoded = modelId.replace(/:/g, "%3A");
    assert.equal(up.url, `/model/${encoded}/${stream ? "converse-stream" : "converse"}`, "the model id is one path segment, ':' as %3A");
    assert.equal(up.modelId, modelId);
    assert.ok(up.sigv4.ok, `the fake verified the SigV4 signature: ${up.sigv4.message}`);
    assert.ok(up.sigv4.canonicalRequest.split("\n")[1].includes(encoded.replace(/%/g, "%25")), `path signed double-encoded: ${up.sigv4.canonicalRequest}`);
    const amzDate = up.headers["x-amz-date"];
    assert.match(up.headers.authorization, new RegExp(`^AWS4-HMAC-SHA256 Credential=${akid}/${amzDate.slice(0, 8)}/${REGION}/bedrock/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$`));
    for (const h of ["host", "x-amz-date", "content-type"]) assert.ok(up.sigv4.signedHeaders.includes(h), `${h} is signed: ${up.sigv4.signedHeaders}`);
    assert.equal(up.headers["content-type"], "application/json");
    if (stream) assert.equal(up.headers.accept, "application/vnd.amazon.eventstream", "ConverseStream answers in event-stream framing");
    const headerText = JSON.stringify(up.headers);
    for (const secret of secrets) assert.ok(!headerText.includes(secret), "the secret never travels");
    assert.ok(!headerText.includes(s.key), "the relay key is never sent upstream");
    assert.equal(up.invalid, undefined, `the fake Converse API accepted the body: ${up.invalid}`);
  }

  function assertUsage(u) {
    assert.equal(u.prompt_tokens, OPENAI_USAGE.prompt_tokens, "prompt = inputTokens + cache reads");
    assert.equal(u.completion_tokens, OPENAI_USAGE.completion_tokens);
    assert.equal(u.total_tokens, OPENAI_USAGE.total_tokens);
    assert.equal(u.prompt_tokens_details?.cached_tokens, OPENAI_USAGE.cached_tokens);
  }

  async function assertUsageRow(id, { keyId = s.keyId, stream } = {}) {
    const row = await adminUsageRow(relay, id, { keyId });
    assert.equal(row.status, 200);
    assert.equal(row.stream, Boolean(stream));
    assert.equal(row.upstream_model, MODEL);
    assert.equal(row.prompt_tokens, OPENAI_USAGE.prompt_tokens);
    assert.equal(row.completion_tokens, OPENAI_USAGE.completion_tokens);
    assert.equal(row.total_tokens, OPENAI_USAGE.total_tokens);
    assert.equal(row.usage_source, "reported");
    return row;
  }

  it("OpenAI client, non-stream: signed POST /model/{id}/converse, Converse body; text, finish_reason, usage, usage row", async () => {
    const marker = marked();
    const { data: reply, response } = await client.chat.completions
      .create({
        model: "bed-claude",
        max_tokens: 300,
        temperature: 0.2,
        stop: ["END"],
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: `Capital of Wyoming? (${marker})` },
        ],
      })
      .withResponse();
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.model, MODEL, "the reply names the upstream model");
    assert.equal(reply.choices[0].message.role, "assistant");
    assert.equal(reply.choices[0].message.content, TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assertUsage(reply.usage);

    const up = await upstreamOf(marker);
    assertSigned(up, { stream: false });
    assert.deepEqual(up.body.system, [{ text: "Be brief." }]);
    assert.deepEqual(up.body.messages, [{ role: "user", content: [{ text: `Capital of Wyoming? (${marker})` }] }]);
    assert.equal(up.body.inferenceConfig.maxTokens, 300);
    assert.equal(up.body.inferenceConfig.temperature, 0.2);
    assert.deepEqual(up.body.inferenceConfig.stopSequences, ["END"]);
    assert.ok(!("model" in up.body) && !("stream" in up.body), "model and stream are in the path, not the body");
    await assertUsageRow(requestId(response));
  });

  it("OpenAI client, stream: /converse-stream event frames cut anywhere → chunks, finish_reason, usage chunk, usage row", async () => {
    const marker = marked();
    const { data: stream, response } = await client.chat.completions
      .create({ model: "bed-claude", messages: [{ role: "user", content: `Capital? (${marker})` }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.role, "assistant");
    assert.equal(got.content, STREAM_PIECES.join(""), "multi-byte text survives frames split mid-character");
    assert.equal(got.finish, "stop");
    assert.deepEqual(chunks.at(-1).choices, []);
    assertUsage(chunks.at(-1).usage);
    for (const c of chunks) assert.equal(c.model, MODEL);
    assertSigned(await upstreamOf(marker), { stream: true });
    await assertUsageRow(requestId(response), { stream: true });
  });

  it("OpenAI client, tools (non-stream): toolUse → tool_calls; tools → toolConfig.toolSpec; tool_choice required → any", async () => {
    const marker = marked();
    const reply = await client.chat.completions.create({
      model: "bed-tools",
      tools: [WEATHER_TOOL],
      tool_choice: "required",
      messages: [{ role: "user", content: `Weather in Paris and Tokyo? (${marker})` }],
    });
    const m = reply.choices[0].message;
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.equal(m.content, TOOLS_TEXT);
    assert.equal(m.tool_calls?.length, TOOL_USES.length, JSON.stringify(m));
    m.tool_calls.forEach((tc, i) => {
      assert.equal(tc.type, "function");
      assert.equal(tc.id, TOOL_USES[i].toolUseId);
      assert.equal(tc.function.name, TOOL_USES[i].name);
      assert.deepEqual(JSON.parse(tc.function.arguments), TOOL_USES[i].input);
    });
    assertUsage(reply.usage);
    const up = await upstreamOf(marker);
    assertSigned(up, { modelId: TOOLS_MODEL, stream: false });
    assert.deepEqual(up.body.toolConfig.tools, [
      { toolSpec: { name: "get_weather", description: "Current weather in a city.", inputSchema: { json: WEATHER_TOOL.function.parameters } } },
    ]);
    assert.deepEqual(up.body.toolConfig.toolChoice, { any: {} });
  });

  it("OpenAI client, tools (stream): contentBlockStart/toolUse deltas → indexed tool_call deltas with ids, names, arguments", async () => {
    const stream = await client.chat.completions.create({
      model: "bed-tools",
      tools: [WEATHER_TOOL],
      messages: [{ role: "user", content: "Weather in Paris and Tokyo?" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.content, TOOLS_TEXT);
    assert.equal(got.calls.length, TOOL_USES.length, JSON.stringify(got.calls));
    got.calls.forEach((c, i) => {
      assert.equal(c.id, TOOL_USES[i].toolUseId);
      assert.equal(c.name, TOOL_USES[i].name);
      assert.deepEqual(JSON.parse(c.arguments), TOOL_USES[i].input);
    });
    assert.equal(got.finish, "tool_calls");
    assertUsage(chunks.at(-1).usage);
  });

  it("OpenAI client, tool round trip: assistant tool_calls → toolUse, tool messages → one user turn of toolResults, toolConfig kept", async () => {
    const marker = marked();
    await client.chat.completions.create({
      model: "bed-claude",
      tools: [WEATHER_TOOL],
      messages: [
        { role: "user", content: `Weather in Paris and Tokyo? (${marker})` },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_paris", type: "function", function: { name: "get_weather", arguments: '{"location":"Paris"}' } },
            { id: "call_tokyo", type: "function", function: { name: "get_weather", arguments: '{"location":"Tokyo"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_paris", content: '{"temp_c":21}' },
        { role: "tool", tool_call_id: "call_tokyo", content: '{"temp_c":18}' },
      ],
    });
    const up = await upstreamOf(marker);
    assertSigned(up, { stream: false });
    assert.deepEqual(up.body.messages.map((m) => m.role), ["user", "assistant", "user"]);
    assert.deepEqual(up.body.messages[1].content, [
      { toolUse: { toolUseId: "call_paris", name: "get_weather", input: { location: "Paris" } } },
      { toolUse: { toolUseId: "call_tokyo", name: "get_weather", input: { location: "Tokyo" } } },
    ]);
    const results = up.body.messages[2].content.map((b) => b.toolResult);
    assert.deepEqual(results.map((r) => r?.toolUseId), ["call_paris", "call_tokyo"]);
    assert.ok(up.body.toolConfig?.tools?.length === 1, "toolConfig travels with a history holding tool blocks");
  });

  it("Anthropic client, non-stream: Messages → Converse; text, end_turn, usage split as Anthropic counts it", async () => {
    const marker = marked();
    const r = await anthropicJson(relay, "/v1/messages", {
      key: s.key,
      body: { model: "bed-claude", max_tokens: 200, system: "Be brief.", messages: [{ role: "user", content: `Capital of Wyoming? (${marker})` }] },
    });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.match(r.json.id, /^msg_/);
    assert.equal(r.json.model, MODEL);
    assert.deepEqual(r.json.content, [{ type: "text", text: TEXT }]);
    assert.equal(r.json.stop_reason, "end_turn");
    assert.equal(r.json.usage.input_tokens, USAGE.inputTokens, "input_tokens exclude cache reads, as Bedrock's do");
    assert.equal(r.json.usage.cache_read_input_tokens, USAGE.cacheReadInputTokens);
    assert.equal(r.json.usage.output_tokens, USAGE.outputTokens);
    const up = await upstreamOf(marker);
    assertSigned(up, { stream: false });
    assert.deepEqual(up.body.system, [{ text: "Be brief." }]);
    assert.equal(up.body.inferenceConfig.maxTokens, 200);
    await assertUsageRow(requestId(r));
  });

  it("Anthropic client, stream with tools: event stream → text and tool_use blocks, stop_reason tool_use, usage", async () => {
    const marker = marked();
    const tools = [{ name: "get_weather", description: "Weather.", input_schema: WEATHER_TOOL.function.parameters }];
    const res = await anthropicFetch(relay, "/v1/messages", {
      key: s.key,
      body: { model: "bed-tools", max_tokens: 200, stream: true, tools, tool_choice: { type: "any" }, messages: [{ role: "user", content: `Weather? (${marker})` }] },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const { message } = await anthropicStream(res);
    assert.equal(message.stop_reason, "tool_use");
    assert.deepEqual(message.content.filter((b) => b.type === "text").map((b) => b.text), [TOOLS_TEXT]);
    const uses = message.content.filter((b) => b.type === "tool_use");
    assert.deepEqual(uses.map((b) => [b.id, b.name, b.input]), TOOL_USES.map((t) => [t.toolUseId, t.name, t.input]));
    assert.equal(message.usage.output_tokens, USAGE.outputTokens);
    const up = await upstreamOf(marker);
    assertSigned(up, { modelId: TOOLS_MODEL, stream: true });
    assert.deepEqual(up.body.toolConfig.toolChoice, { any: {} });
    assert.deepEqual(up.body.toolConfig.tools[0].toolSpec.inputSchema, { json: WEATHER_TOOL.function.parameters });
  });

  it("temporary credentials (ID:SECRET:TOKEN): x-amz-security-token sent and signed, the request accepted", async () => {
    const marker = marked();
    const c = await sdk(relay, temp.key);
    const reply = await c.chat.completions.create({ model: "bed-temp", messages: [{ role: "user", content: marker }] });
    assert.equal(reply.choices[0].message.content, TEXT);
    const up = await upstreamOf(marker);
    assertSigned(up, { stream: false, akid: TEMP_AKID, secrets: [TEMP_SECRET] });
    assert.equal(up.headers["x-amz-security-token"], TEMP_TOKEN);
    assert.ok(up.sigv4.signedHeaders.includes("x-amz-security-token"));
  });

  it("Bedrock 429 ThrottlingException → 429 upstream_rate_limited (OpenAI) / rate_limit_error (Anthropic)", async () => {
    const r = await relay.callJson("/v1/chat/completions", { key: s.key, body: { model: "bed-429", messages: [{ role: "user", content: "Hi" }] } });
    assertOpenAIError(r, { status: 429, code: "upstream_rate_limited", type: "rate_limit_error" });
    const up = fake.find((x) => x.modelId === "err-429.anthropic.claude-v1:0").at(-1);
    assert.ok(up?.sigv4.ok, "the 429 came after a valid signature");
    const a = await anthropicJson(relay, "/v1/messages", { key: s.key, body: { model: "bed-429", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] } });
    assertAnthropicError(a, { status: 429, type: "rate_limit_error" });
    const row = await adminUsageRow(relay, requestId(r), { keyId: s.keyId });
    assert.equal(row.status, 429);
    assert.equal(row.error_code, "upstream_rate_limited");
  });

  it("a wrong secret: the fake's SigV4 check answers 403 → 502 upstream_auth_failed; the secret appears nowhere", async () => {
    const marker = marked();
    const r = await relay.callJson("/v1/chat/completions", { key: wrong.key, body: { model: "bed-wrong", messages: [{ role: "user", content: marker }] } });
    assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
    assertNowhere(r, [WRONG_SECRET, `${AKID}:${WRONG_SECRET}`, SECRET], "auth-failure response");
    const up = await upstreamOf(marker);
    assert.equal(up.sigv4.ok, false);
    assert.equal(up.sigv4.type, "InvalidSignatureException", "refused for its signature, not for anything else");
    assert.match(up.sentText(), /signature we calculated does not match/);
    const a = await anthropicJson(relay, "/v1/messages", { key: wrong.key, body: { model: "bed-wrong", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] } });
    assert.equal(a.status, 502, a.text);
    assertAnthropicError(a, { status: 502 });
    assertNowhere(a, [WRONG_SECRET], "Anthropic auth-failure response");
  });

  /** A stream of bed-exc (messageStart, "Once upon", then a throttlingException frame), read whole. */
  async function exceptionStream() {
    const res = await relay.call("/v1/chat/completions", { key: s.key, body: { model: "bed-exc", stream: true, messages: [{ role: "user", content: "Tell a story" }] } });
    assert.equal(res.status, 200);
    const datas = (await sse(res)).map((e) => e.data);
    const chunks = datas.filter((d) => d !== "[DONE]").map((d) => JSON.parse(d));
    return { res, datas, chunks, errors: chunks.filter((c) => c.error) };
  }

  it("an exception frame mid-stream (throttlingException): the text so far, then an error event ends the stream (OpenAI and Anthropic clients)", async () => {
    const { datas, chunks, errors } = await exceptionStream();
    const content = chunks.flatMap((c) => c.choices ?? []).map((ch) => ch.delta?.content ?? "").join("");
    assert.equal(content, "Once upon", "the text produced before the exception reaches the client");
    assert.equal(errors.length, 1, `one error event: ${datas.join(" | ")}`);
    assert.equal(chunks.at(-1), errors[0], "the error event is the last one");
    assert.match(errors[0].error.message, /Too many tokens/, "the upstream's message");
    assert.equal(errors[0].error.type, "upstream_error");
    assert.ok(!datas.includes("[DONE]"), "a failed stream does not end with [DONE]");

    const a = await anthropicFetch(relay, "/v1/messages", { key: s.key, body: { model: "bed-exc", max_tokens: 50, stream: true, messages: [{ role: "user", content: "Tell a story" }] } });
    assert.equal(a.status, 200);
    const { message, error } = await anthropicStream(a);
    assert.equal(message.content[0]?.text, "Once upon");
    assert.equal(error?.type, "rate_limit_error", `a throttlingException is Anthropic's rate_limit_error: ${JSON.stringify(error)}`);
    assert.match(error.message, /Too many tokens/);
  });

  it("an exception frame mid-stream: the error event carries a documented code (README: upstream_stream_broken)", async () => {
    const { errors } = await exceptionStream();
    // README's error table lists every stable code; for "a stream broke off after it started: the
    // client's stream ends with this error event" it names 502 upstream_stream_broken.
    assert.equal(errors.at(-1)?.error.code, "upstream_stream_broken", `error codes: ${errors.map((e) => e.error.code)}`);
  });

  it("an exception frame mid-stream: the usage row records the failed stream, not a success", async () => {
    const { res } = await exceptionStream();
    const row = await adminUsageRow(relay, requestId(res), { keyId: s.keyId });
    assert.equal(row.completion_tokens > 0, true, "the tokens produced so far are counted");
    assert.deepEqual([row.status, row.error_code], [502, "upstream_stream_broken"], `row: ${JSON.stringify(row)}`);
  });

  it("channel checks: bedrock needs options.region and ID:SECRET keys; the refusal never echoes the key", async () => {
    const body = { name: "bedrock-bad", provider: "bedrock", base_url: fake.baseUrl, models: [MODEL] };
    const noRegion = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [`${AKID}:${SECRET}`] });
    assertOpenAIError(noRegion, { status: 400, param: "options.region", code: "missing_required_parameter" });
    for (const badKey of ["AKIAONLYANIDNOSECRET", `${AKID}:`, `:${SECRET}`, `${AKID}:${SECRET}:`]) {
      const r = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [badKey], options: { region: REGION } });
      assertOpenAIError(r, { status: 400, param: "api_keys[0]" });
      assertNowhere(r, [SECRET, "AKIAONLYANIDNOSECRET"].filter((x) => badKey.includes(x)), `refusal of ${badKey}`);
    }
    const second = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [`${AKID}:${SECRET}`, "nocolon"], options: { region: REGION } });
    assertOpenAIError(second, { status: 400, param: "api_keys[1]" });
    const unknownOption = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [`${AKID}:${SECRET}`], options: { region: REGION, project: "x" } });
    assertOpenAIError(unknownOption, { status: 400, param: "options.project" });
    const ok = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [`${TEMP_AKID}:${TEMP_SECRET}:${TEMP_TOKEN}`], options: { region: REGION } });
    assert.ok([200, 201].includes(ok.status), ok.text);
    assertNowhere(ok, [TEMP_SECRET, TEMP_TOKEN], "created channel");
  });
});
