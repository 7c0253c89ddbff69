// Azure OpenAI channels end to end: OpenAI clients (the openai SDK) against fake-azure.mjs. The
// upstream model is the deployment: POST {base}/openai/deployments/{deployment}/chat/completions
// ?api-version=<options.api_version, default 2024-10-21> with the key in `api-key`; replies and
// streams are OpenAI's format with Azure's additions (content-filter annotations, a first stream
// chunk with empty choices), passed through. Also usage rows, Azure errors, and an Anthropic client.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, sdk, requestId, assertOpenAIError, assertNowhere, adminUsageRow, sse, UPSTREAM_KEY } from "./harness.mjs";
import { startFakeAzure, MODEL, TEXT, STREAM_PIECES, USAGE, STREAM_USAGE, RETRY_AFTER } from "./fake-azure.mjs";
import { assembleOpenAIChunks, anthropicJson, anthropicFetch, anthropicStream, assertAnthropicMessage } from "./anthropic-client.mjs";

const DEPLOYMENT = "my-gpt4o";
const WRONG_KEY = "az-wrong-key-0123456789abcdefWRONG";

describe("Azure OpenAI channels", () => {
  let relay, fake, s, preview, bad, client;
  before(async () => {
    fake = await startFakeAzure({ key: UPSTREAM_KEY, deployments: [DEPLOYMENT] });
    relay = await startRelay();
    s = await relay.seed({ provider: "azure", upstreamBaseUrl: fake.baseUrl, models: { "az-pub": DEPLOYMENT, "az-429": "err-429", "az-400": "err-400", "az-500": "err-500", "az-missing": "no-such-deployment" } });
    preview = await relay.seed({ provider: "azure", upstreamBaseUrl: fake.baseUrl, options: { api_version: "2025-01-01-preview" }, models: { "az-preview": DEPLOYMENT } });
    bad = await relay.seed({ provider: "azure", upstreamBaseUrl: fake.baseUrl, apiKeys: [WRONG_KEY], models: { "az-badkey": DEPLOYMENT } });
    client = await sdk(relay, s.key);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));

  function assertUpstream(up, { apiVersion = "2024-10-21", deployment = DEPLOYMENT } = {}) {
    assert.equal(up.method, "POST");
    assert.equal(up.path, `/openai/deployments/${deployment}/chat/completions`);
    assert.deepEqual(up.query, { "api-version": apiVersion });
    assert.equal(up.headers["api-key"], UPSTREAM_KEY, "the key goes in api-key");
    assert.equal(up.headers.authorization, undefined, "no Authorization header for Azure");
    assert.ok(!JSON.stringify(up.headers).includes(s.key), "the relay key is never sent upstream");
  }

  /** Azure's first stream chunk carries prompt filter results and nothing else; set it apart. */
  const split = (chunks) => ({
    filters: chunks.filter((c) => c.object === "" && Array.isArray(c.prompt_filter_results)),
    rest: chunks.filter((c) => !(c.object === "" && Array.isArray(c.prompt_filter_results))),
  });

  it("non-stream: deployment URL, api-version 2024-10-21, api-key; the reply passes through; usage row", async () => {
    const marker = marked();
    const { data: reply, response } = await client.chat.completions
      .create({ model: "az-pub", max_tokens: 50, messages: [{ role: "user", content: `Hello? (${marker})` }] })
      .withResponse();
    assert.equal(reply.choices[0].message.content, TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assert.equal(reply.model, MODEL, "Azure's own model name comes back");
    assert.ok(Array.isArray(reply.prompt_filter_results), "Azure's additions pass through");
    assert.deepEqual(reply.usage, USAGE);
    const up = await upstreamOf(marker);
    assertUpstream(up);
    assert.equal(up.body.max_tokens, 50);
    assert.deepEqual(up.body.messages, [{ role: "user", content: `Hello? (${marker})` }]);
    const row = await adminUsageRow(relay, requestId(response), { keyId: s.keyId });
    assert.deepEqual(
      [row.status, row.stream, row.upstream_model, row.prompt_tokens, row.completion_tokens, row.total_tokens, row.usage_source],
      [200, false, DEPLOYMENT, USAGE.prompt_tokens, USAGE.completion_tokens, USAGE.total_tokens, "reported"],
    );
  });

  it("stream with include_usage: Azure's chunks (filter chunk first) and its usage chunk; usage row", async () => {
    const marker = marked();
    const { data: stream, response } = await client.chat.completions
      .create({ model: "az-pub", messages: [{ role: "user", content: marker }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const { filters, rest } = split(chunks);
    assert.equal(filters.length, 1, "Azure's prompt-filter chunk is relayed");
    const got = assembleOpenAIChunks(rest);
    assert.equal(got.content, STREAM_PIECES.join(""));
    assert.equal(got.finish, "stop");
    assert.deepEqual(rest.at(-1).choices, []);
    assert.deepEqual(rest.at(-1).usage, STREAM_USAGE);
    const up = await upstreamOf(marker);
    assertUpstream(up);
    assert.equal(up.body.stream, true);
    const row = await adminUsageRow(relay, requestId(response), { keyId: s.keyId });
    assert.deepEqual([row.status, row.stream, row.prompt_tokens, row.completion_tokens, row.usage_source], [200, true, STREAM_USAGE.prompt_tokens, STREAM_USAGE.completion_tokens, "reported"]);
  });

  it("stream without include_usage: the relay asks Azure for usage, strips it for the client, records it", async () => {
    const marker = marked();
    const res = await relay.call("/v1/chat/completions", { key: s.key, body: { model: "az-pub", messages: [{ role: "user", content: marker }], stream: true } });
    assert.equal(res.status, 200);
    const events = await sse(res);
    assert.equal(events.at(-1).data, "[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
    assert.ok(chunks.every((c) => !c.usage), `no usage for a client that did not ask: ${JSON.stringify(chunks.filter((c) => c.usage))}`);
    assert.equal(assembleOpenAIChunks(split(chunks).rest).content, STREAM_PIECES.join(""));
    const up = await upstreamOf(marker);
    assert.deepEqual(up.body.stream_options, { include_usage: true }, "usage asked for on the client's behalf");
    const row = await adminUsageRow(relay, requestId(res), { keyId: s.keyId });
    assert.deepEqual([row.prompt_tokens, row.completion_tokens, row.usage_source], [STREAM_USAGE.prompt_tokens, STREAM_USAGE.completion_tokens, "reported"]);
  });

  it("options.api_version is sent as api-version", async () => {
    const marker = marked();
    const c = await sdk(relay, preview.key);
    const reply = await c.chat.completions.create({ model: "az-preview", messages: [{ role: "user", content: marker }] });
    assert.equal(reply.choices[0].message.content, TEXT);
    assertUpstream(await upstreamOf(marker), { apiVersion: "2025-01-01-preview" });
  });

  it("an Anthropic client on an Azure channel: Messages translated to chat completions and back (non-stream and stream)", async () => {
    const marker = marked();
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, body: { model: "az-pub", max_tokens: 40, system: "Be brief.", messages: [{ role: "user", content: marker }] } });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.deepEqual(r.json.content, [{ type: "text", text: TEXT }]);
    assert.equal(r.json.usage.input_tokens, USAGE.prompt_tokens);
    assert.equal(r.json.usage.output_tokens, USAGE.completion_tokens);
    const up = await upstreamOf(marker);
    assertUpstream(up);
    assert.deepEqual(up.body.messages, [{ role: "system", content: "Be brief." }, { role: "user", content: marker }]);

    const res = await anthropicFetch(relay, "/v1/messages", { key: s.key, body: { model: "az-pub", max_tokens: 40, stream: true, messages: [{ role: "user", content: "Hi" }] } });
    assert.equal(res.status, 200);
    const { message } = await anthropicStream(res);
    assert.equal(message.model, DEPLOYMENT, "Azure's empty-model filter chunk does not name the message");
    assert.deepEqual(message.content, [{ type: "text", text: STREAM_PIECES.join("") }]);
    assert.equal(message.stop_reason, "end_turn");
    assert.equal(message.usage.output_tokens, STREAM_USAGE.completion_tokens);
  });

  it("Azure errors: 429 → 429 with Retry-After; 400 content_filter → 400 with the message; 500 → 502; unknown deployment (404) → 502 upstream_error; wrong key → 502, the key nowhere", async () => {
    const ask = (key, model) => relay.callJson("/v1/chat/completions", { key, body: { model, messages: [{ role: "user", content: "Hi" }] } });
    const limited = await ask(s.key, "az-429");
    assertOpenAIError(limited, { status: 429, code: "upstream_rate_limited" });
    assert.equal(limited.headers.get("retry-after"), RETRY_AFTER, "Retry-After passed on");
    const filtered = assertOpenAIError(await ask(s.key, "az-400"), { status: 400, code: "upstream_invalid_request" });
    assert.match(filtered.message, /content management policy/);
    assertOpenAIError(await ask(s.key, "az-500"), { status: 502, code: "upstream_error" });
    assertOpenAIError(await ask(s.key, "az-missing"), { status: 502, code: "upstream_error" });
    assert.equal(fake.find((x) => x.deployment === "no-such-deployment").length, 1, "the 404 came from the deployment lookup");
    const r = await ask(bad.key, "az-badkey");
    assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
    assertNowhere(r, [WRONG_KEY], "401 response");
  });
});
