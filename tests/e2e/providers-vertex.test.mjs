// Vertex AI channels end to end against fake-vertex.mjs: service-account key files (RSA keys made
// here with node crypto) exchanged for access tokens at the file's token_uri (the fake verifies the
// RS256 JWT and its claims), tokens cached, then Gemini (`vertex`) and Anthropic
// (`vertex-anthropic`, rawPredict / streamRawPredict) calls with `Authorization: Bearer <token>`.
// OpenAI clients (the openai SDK) on both; Anthropic clients (raw fetch) on vertex-anthropic,
// where the body passes through with `model` removed and `anthropic_version` added.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto, { randomUUID } from "node:crypto";
import { startRelay, sdk, requestId, assertOpenAIError, assertNowhere, adminUsageRow } from "./harness.mjs";
import {
  startFakeVertex,
  SCOPE,
  VERTEX_ANTHROPIC_VERSION,
  GEMINI_TEXT,
  GEMINI_PIECES,
  GEMINI_USAGE,
  FUNCTION_CALLS,
  CLAUDE_TEXT,
  CLAUDE_PIECES,
  CLAUDE_USAGE,
  CLAUDE_STREAM_USAGE,
  CLAUDE_TOOL_USES,
} from "./fake-vertex.mjs";
import { assembleOpenAIChunks, anthropicJson, anthropicFetch, anthropicStream, assertAnthropicMessage, assertAnthropicError } from "./anthropic-client.mjs";

const GEMINI_MODEL = "gemini-2.5-pro";
const CLAUDE_MODEL = "claude-sonnet-4@20250514";

describe("Vertex AI channels", () => {
  let relay, fake, sa, s, sc, client, claudeClient;
  before(async () => {
    fake = await startFakeVertex();
    relay = await startRelay();
    sa = fake.createServiceAccount("relay");
    assert.equal(sa.email, "relay@p.iam.gserviceaccount.com");
    const options = { project: fake.project, region: fake.region };
    s = await relay.seed({
      provider: "vertex",
      upstreamBaseUrl: fake.baseUrl,
      apiKeys: [sa.keyFileText],
      options,
      models: { "vx-gem": GEMINI_MODEL, "vx-gem-tools": "tools", "vx-gem-429": "err-429" },
    });
    sc = await relay.seed({
      provider: "vertex-anthropic",
      upstreamBaseUrl: fake.baseUrl,
      apiKeys: [sa.keyFileText],
      options,
      models: { "vx-claude": CLAUDE_MODEL, "vx-claude-tools": "tools", "vx-claude-429": "err-429" },
    });
    client = await sdk(relay, s.key);
    claudeClient = await sdk(relay, sc.key);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));
  const pemBody = (pem) => pem.split("\n").filter((l) => l && !l.startsWith("-----"))[2];

  /** Reached the fake with a token it issued for `account`, at the right place, nothing secret sent. */
  function assertVertexCall(up, { publisher, model, method, account = sa, relayKey }) {
    assert.equal(up.method, "POST");
    assert.equal(up.path, `/v1/projects/${fake.project}/locations/${fake.region}/publishers/${publisher}/models/${encodeURIComponent(model)}:${method}`);
    assert.equal(up.model, model);
    assert.match(up.headers.authorization ?? "", /^Bearer ya29\./);
    assert.equal(up.tokenOwner, account.email, "the token was issued to the channel's service account");
    assert.equal(up.headers["x-goog-api-key"], undefined);
    assert.equal(up.query.key, undefined);
    const everything = JSON.stringify(up.headers) + up.url + up.rawBody;
    assert.ok(!everything.includes(pemBody(account.privateKey)), "the private key never travels");
    assert.ok(!everything.includes("private_key"), "nor the key file");
    if (relayKey) assert.ok(!everything.includes(relayKey), "the relay key is never sent upstream");
    assert.equal(up.invalid, undefined, `the fake Vertex AI accepted the body: ${up.invalid}`);
  }

  it("the first request exchanges a JWT signed with the key file's private key at its token_uri (claims as Google wants)", async () => {
    await client.chat.completions.create({ model: "vx-gem", messages: [{ role: "user", content: "Hi" }] });
    const exchanges = fake.tokensFor(sa.email, { okOnly: false });
    assert.ok(exchanges.length >= 1, "the token endpoint was called");
    assert.ok(exchanges.every((t) => t.ok), `every exchange accepted: ${JSON.stringify(exchanges.filter((t) => !t.ok))}`);
    const c = exchanges[0].claims;
    assert.equal(c.iss, sa.email);
    assert.equal(c.aud, fake.tokenUri);
    assert.equal(c.scope, SCOPE);
    assert.equal(c.exp - c.iat, 3600);
    const token = fake.find((r) => r.path === "/token")[0];
    assert.match(token.headers["content-type"], /^application\/x-www-form-urlencoded/);
    assert.equal(new URLSearchParams(token.rawBody).get("grant_type"), "urn:ietf:params:oauth:grant-type:jwt-bearer");
  });

  it("vertex, OpenAI client, non-stream: …/publishers/google/models/{m}:generateContent with the Bearer token; text, usage, usage row", async () => {
    const marker = marked();
    const { data: reply, response } = await client.chat.completions
      .create({ model: "vx-gem", max_tokens: 100, messages: [{ role: "system", content: "Be brief." }, { role: "user", content: `Capital? (${marker})` }] })
      .withResponse();
    assert.equal(reply.choices[0].message.content, GEMINI_TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assert.equal(reply.model, GEMINI_MODEL);
    assert.deepEqual(
      [reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens],
      [GEMINI_USAGE.promptTokenCount, GEMINI_USAGE.candidatesTokenCount, GEMINI_USAGE.totalTokenCount],
    );
    const up = await upstreamOf(marker);
    assertVertexCall(up, { publisher: "google", model: GEMINI_MODEL, method: "generateContent", relayKey: s.key });
    assert.deepEqual(up.body.systemInstruction, { parts: [{ text: "Be brief." }] });
    assert.deepEqual(up.body.contents, [{ role: "user", parts: [{ text: `Capital? (${marker})` }] }]);
    assert.equal(up.body.generationConfig?.maxOutputTokens, 100);
    const row = await adminUsageRow(relay, requestId(response), { keyId: s.keyId });
    assert.deepEqual([row.status, row.prompt_tokens, row.completion_tokens, row.total_tokens, row.usage_source], [200, 30, 8, 38, "reported"]);
    assert.equal(row.upstream_model, GEMINI_MODEL);
  });

  it("vertex, OpenAI client, stream: :streamGenerateContent?alt=sse → chunks, finish_reason, usage chunk, usage row", async () => {
    const marker = marked();
    const { data: stream, response } = await client.chat.completions
      .create({ model: "vx-gem", messages: [{ role: "user", content: `Capital? (${marker})` }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.content, GEMINI_PIECES.join(""));
    assert.equal(got.finish, "stop");
    assert.equal(chunks.at(-1).usage?.total_tokens, GEMINI_USAGE.totalTokenCount);
    const up = await upstreamOf(marker);
    assertVertexCall(up, { publisher: "google", model: GEMINI_MODEL, method: "streamGenerateContent" });
    assert.equal(up.query.alt, "sse");
    const row = await adminUsageRow(relay, requestId(response), { keyId: s.keyId });
    assert.deepEqual([row.status, row.stream, row.prompt_tokens, row.completion_tokens], [200, true, 30, 8]);
  });

  it("vertex, OpenAI client, tools: functionCall parts → tool_calls", async () => {
    const reply = await client.chat.completions.create({
      model: "vx-gem-tools",
      tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { location: { type: "string" } } } } }],
      messages: [{ role: "user", content: "Weather and time in Paris?" }],
    });
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.deepEqual(
      reply.choices[0].message.tool_calls.map((t) => [t.function.name, JSON.parse(t.function.arguments)]),
      FUNCTION_CALLS.map((f) => [f.name, f.args]),
    );
  });

  it("vertex-anthropic, OpenAI client, non-stream: …/publishers/anthropic/models/{m}:rawPredict, Anthropic body without model, anthropic_version vertex-2023-10-16", async () => {
    const marker = marked();
    const { data: reply, response } = await claudeClient.chat.completions
      .create({ model: "vx-claude", max_tokens: 100, messages: [{ role: "system", content: "Be brief." }, { role: "user", content: `Capital? (${marker})` }] })
      .withResponse();
    assert.equal(reply.choices[0].message.content, CLAUDE_TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assert.deepEqual([reply.usage.prompt_tokens, reply.usage.completion_tokens], [CLAUDE_USAGE.input_tokens, CLAUDE_USAGE.output_tokens]);
    const up = await upstreamOf(marker);
    assertVertexCall(up, { publisher: "anthropic", model: CLAUDE_MODEL, method: "rawPredict", relayKey: sc.key });
    assert.ok(up.url.includes("claude-sonnet-4%4020250514:rawPredict"), `'@' travels percent-encoded: ${up.url}`);
    assert.equal(up.body.anthropic_version, VERTEX_ANTHROPIC_VERSION);
    assert.ok(!("model" in up.body), "Vertex takes the model from the URL");
    assert.equal(up.headers["anthropic-version"], undefined, "the version goes in the body, not a header");
    assert.equal(up.headers["x-api-key"], undefined);
    assert.equal(up.body.max_tokens, 100);
    assert.equal(up.body.system, "Be brief.");
    const row = await adminUsageRow(relay, requestId(response), { keyId: sc.keyId });
    assert.deepEqual([row.status, row.prompt_tokens, row.completion_tokens, row.usage_source], [200, 40, 9, "reported"]);
    assert.equal(row.upstream_model, CLAUDE_MODEL);
  });

  it("vertex-anthropic, OpenAI client, stream: :streamRawPredict with stream true → chunks, usage chunk, usage row", async () => {
    const marker = marked();
    const { data: stream, response } = await claudeClient.chat.completions
      .create({ model: "vx-claude", messages: [{ role: "user", content: `Capital? (${marker})` }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const got = assembleOpenAIChunks(chunks);
    assert.equal(got.content, CLAUDE_PIECES.join(""));
    assert.equal(got.finish, "stop");
    assert.deepEqual([chunks.at(-1).usage?.prompt_tokens, chunks.at(-1).usage?.completion_tokens], [CLAUDE_STREAM_USAGE.input_tokens, CLAUDE_STREAM_USAGE.output_tokens]);
    const up = await upstreamOf(marker);
    assertVertexCall(up, { publisher: "anthropic", model: CLAUDE_MODEL, method: "streamRawPredict" });
    assert.equal(up.body.stream, true);
    const row = await adminUsageRow(relay, requestId(response), { keyId: sc.keyId });
    assert.deepEqual([row.status, row.stream, row.prompt_tokens, row.completion_tokens], [200, true, 44, 11]);
  });

  it("vertex-anthropic, Anthropic client, non-stream: the body passes through (model out, anthropic_version in, anthropic-beta forwarded), the reply unchanged", async () => {
    const marker = marked();
    const body = {
      model: "vx-claude",
      max_tokens: 120,
      system: [{ type: "text", text: "Be brief.", cache_control: { type: "ephemeral" } }],
      metadata: { user_id: "u-1" },
      messages: [{ role: "user", content: [{ type: "text", text: `Capital? (${marker})` }] }],
    };
    const r = await anthropicJson(relay, "/v1/messages", { key: sc.key, body, headers: { "anthropic-beta": "prompt-caching-2024-07-31" } });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.deepEqual(r.json.content, [{ type: "text", text: CLAUDE_TEXT }]);
    const up = await upstreamOf(marker);
    assertVertexCall(up, { publisher: "anthropic", model: CLAUDE_MODEL, method: "rawPredict", relayKey: sc.key });
    const { model: _m, ...rest } = body;
    assert.deepEqual(up.body, { ...rest, anthropic_version: VERTEX_ANTHROPIC_VERSION }, "everything but model passes through");
    assert.equal(up.headers["anthropic-beta"], "prompt-caching-2024-07-31");
    assert.equal(r.text, up.sentText(), "the reply is relayed byte for byte");
    const row = await adminUsageRow(relay, requestId(r), { keyId: sc.keyId });
    assert.deepEqual([row.status, row.prompt_tokens, row.completion_tokens], [200, 40, 9]);
  });

  it("vertex-anthropic, Anthropic client, stream with tools: streamRawPredict SSE relayed byte for byte; tool_use blocks", async () => {
    const marker = marked();
    const tools = [
      { name: "get_weather", input_schema: { type: "object", properties: { location: { type: "string" } } } },
      { name: "get_time", input_schema: { type: "object", properties: { timezone: { type: "string" } } } },
    ];
    const res = await anthropicFetch(relay, "/v1/messages", {
      key: sc.key,
      body: { model: "vx-claude-tools", max_tokens: 100, stream: true, tools, messages: [{ role: "user", content: `Weather and time? (${marker})` }] },
    });
    assert.equal(res.status, 200);
    const text = await res.text();
    const { message } = await anthropicStream(text);
    assert.equal(message.stop_reason, "tool_use");
    assert.deepEqual(
      message.content.filter((b) => b.type === "tool_use").map((b) => [b.id, b.name, b.input]),
      CLAUDE_TOOL_USES.map((t) => [t.id, t.name, t.input]),
    );
    const up = await upstreamOf(marker);
    assertVertexCall(up, { publisher: "anthropic", model: "tools", method: "streamRawPredict" });
    assert.equal(text, up.sentText(), "the stream is relayed byte for byte");
  });

  it("Vertex 429 RESOURCE_EXHAUSTED → 429 upstream_rate_limited (both publishers) / rate_limit_error (Anthropic client)", async () => {
    const ask = (key, model) => relay.callJson("/v1/chat/completions", { key, body: { model, messages: [{ role: "user", content: "Hi" }] } });
    assertOpenAIError(await ask(s.key, "vx-gem-429"), { status: 429, code: "upstream_rate_limited" });
    assertOpenAIError(await ask(sc.key, "vx-claude-429"), { status: 429, code: "upstream_rate_limited" });
    const a = await anthropicJson(relay, "/v1/messages", { key: sc.key, body: { model: "vx-claude-429", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] } });
    assertAnthropicError(a, { status: 429, type: "rate_limit_error" });
  });

  it("tokens are cached: after the first exchange, many requests (sequential and concurrent, both publishers) reuse one token", async () => {
    const acct = fake.createServiceAccount("cache-check");
    const options = { project: fake.project, region: fake.region };
    const g = await relay.seed({ provider: "vertex", upstreamBaseUrl: fake.baseUrl, apiKeys: [acct.keyFileText], options, models: { "vx-cache-gem": "cache-gem" } });
    const c = await relay.seed({ provider: "vertex-anthropic", upstreamBaseUrl: fake.baseUrl, apiKeys: [acct.keyFileText], options, models: { "vx-cache-claude": "cache-claude" } });
    const ask = (key, model) => relay.callJson("/v1/chat/completions", { key, body: { model, messages: [{ role: "user", content: "Hi" }] } });
    const first = await ask(g.key, "vx-cache-gem");
    assert.equal(first.status, 200, first.text);
    assert.equal(fake.tokensFor(acct.email).length, 1, "one exchange for the first request");
    for (let i = 0; i < 4; i++) assert.equal((await ask(i % 2 ? c.key : g.key, i % 2 ? "vx-cache-claude" : "vx-cache-gem")).status, 200);
    const many = await Promise.all(Array.from({ length: 10 }, (_, i) => ask(i % 2 ? c.key : g.key, i % 2 ? "vx-cache-claude" : "vx-cache-gem")));
    for (const r of many) assert.equal(r.status, 200, r.text);
    assert.equal(fake.tokensFor(acct.email, { okOnly: false }).length, 1, "the token endpoint was called once for 15 requests");
    const used = new Set(fake.find((r) => r.tokenOwner === acct.email).map((r) => r.token));
    assert.equal(used.size, 1, "every upstream call carried the same token");
    assert.equal([...used][0], fake.tokensFor(acct.email)[0].token);
    assert.equal(fake.find((r) => r.tokenOwner === acct.email).length, 15);
  });

  // The Workers runtime cancels a request that waits on I/O another request started, so the
  // relay cannot make concurrent cold-cache requests share one token exchange: each may fetch.
  // What must hold is that all succeed and that the cache serves every request after them.
  it("a burst on a cold cache succeeds, and the cache then serves every request", async () => {
    const acct = fake.createServiceAccount("cold-burst");
    const g = await relay.seed({ provider: "vertex", upstreamBaseUrl: fake.baseUrl, apiKeys: [acct.keyFileText], options: { project: fake.project, region: fake.region }, models: { "vx-cold": "cold" } });
    const ask = () => relay.callJson("/v1/chat/completions", { key: g.key, body: { model: "vx-cold", messages: [{ role: "user", content: "Hi" }] } });
    const replies = await Promise.all(Array.from({ length: 8 }, ask));
    for (const r of replies) assert.equal(r.status, 200, r.text);
    const burst = fake.tokensFor(acct.email, { okOnly: false }).length;
    assert.ok(burst >= 1 && burst <= 8, `between 1 and 8 exchanges for the burst, got ${burst}`);
    for (let i = 0; i < 4; i++) assert.equal((await ask()).status, 200);
    assert.equal(fake.tokensFor(acct.email, { okOnly: false }).length, burst, "no exchange after the burst: the cache serves");
  });

  it("a token that expires within five minutes is not reused: each request exchanges again", async () => {
    const acct = fake.createServiceAccount("short-lived", { expiresIn: 120 });
    const g = await relay.seed({ provider: "vertex", upstreamBaseUrl: fake.baseUrl, apiKeys: [acct.keyFileText], options: { project: fake.project, region: fake.region }, models: { "vx-short": "short" } });
    for (let i = 0; i < 3; i++) {
      const r = await relay.callJson("/v1/chat/completions", { key: g.key, body: { model: "vx-short", messages: [{ role: "user", content: "Hi" }] } });
      assert.equal(r.status, 200, r.text);
    }
    assert.equal(fake.tokensFor(acct.email).length, 3, "renewed every time: 120 s is inside the 5-minute renewal margin");
  });

  it("a key file the token endpoint refuses (unknown account; key not matching the registered one) → 502 upstream_auth_failed, no key material in the reply", async () => {
    const options = { project: fake.project, region: fake.region };
    const unknown = fake.createServiceAccount("never-registered", { register: false });
    const rotated = fake.createServiceAccount("rotated");
    const other = crypto.generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } });
    fake.registerKey(rotated.email, other.publicKey);
    for (const [acct, why] of [
      [unknown, "Invalid grant: account not found"],
      [rotated, "Invalid JWT Signature."],
    ]) {
      const t = await relay.seed({ provider: "vertex", upstreamBaseUrl: fake.baseUrl, apiKeys: [acct.keyFileText], options, models: { [`vx-bad-${acct.email.split("@")[0]}`]: GEMINI_MODEL } });
      const model = `vx-bad-${acct.email.split("@")[0]}`;
      const r = await relay.callJson("/v1/chat/completions", { key: t.key, body: { model, messages: [{ role: "user", content: "Hi" }] } });
      assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
      assertNowhere(r, [pemBody(acct.privateKey), "PRIVATE KEY", acct.keyFile.private_key_id], `${acct.email} refusal`);
      const refused = fake.tokenRequests.filter((x) => x.email === acct.email);
      assert.ok(refused.length >= 1 && refused.every((x) => !x.ok), `the token endpoint refused ${acct.email}`);
      assert.equal(refused[0].description, why);
      assert.equal(fake.find((x) => x.tokenOwner === acct.email).length, 0, "no prediction call without a token");
      const row = await adminUsageRow(relay, requestId(r), { keyId: t.keyId });
      assert.deepEqual([row.status, row.error_code], [502, "upstream_auth_failed"]);
    }
  });

  it("a token Vertex does not accept (401 UNAUTHENTICATED) → 502 upstream_auth_failed, the token nowhere in the reply", async () => {
    const acct = fake.createServiceAccount("revoked");
    const g = await relay.seed({ provider: "vertex", upstreamBaseUrl: fake.baseUrl, apiKeys: [acct.keyFileText], options: { project: fake.project, region: fake.region }, models: { "vx-revoked": GEMINI_MODEL } });
    const ok = await relay.callJson("/v1/chat/completions", { key: g.key, body: { model: "vx-revoked", messages: [{ role: "user", content: "Hi" }] } });
    assert.equal(ok.status, 200, ok.text);
    const token = fake.tokensFor(acct.email)[0].token;
    fake.issued.delete(token); // revoked on Google's side
    const r = await relay.callJson("/v1/chat/completions", { key: g.key, body: { model: "vx-revoked", messages: [{ role: "user", content: "Hi" }] } });
    assertOpenAIError(r, { status: 502, code: "upstream_auth_failed" });
    assertNowhere(r, [token], "401 response");
  });

  it("channel checks: vertex keys must be service-account key files, options.project and options.region are required; refusals echo no key", async () => {
    const body = { name: "vx-bad", provider: "vertex", base_url: fake.baseUrl, models: [GEMINI_MODEL], options: { project: fake.project, region: fake.region } };
    const secretish = "AIzaSyFAKE-not-a-key-file-0123456789";
    const notFile = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [secretish] });
    assertOpenAIError(notFile, { status: 400, param: "api_keys[0]" });
    assertNowhere(notFile, [secretish], "refusal");
    const noPem = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [JSON.stringify({ ...sa.keyFile, private_key: "not a pem" })] });
    assertOpenAIError(noPem, { status: 400, param: "api_keys[0]" });
    const user = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [JSON.stringify({ ...sa.keyFile, type: "authorized_user" })] });
    assertOpenAIError(user, { status: 400, param: "api_keys[0]" });
    assertNowhere(user, [pemBody(sa.privateKey)], "refusal of a key file");
    const second = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [sa.keyFileText, "{}"] });
    assertOpenAIError(second, { status: 400, param: "api_keys[1]" });
    const anth = await relay.admin("POST", "/admin/channels", { ...body, provider: "vertex-anthropic", api_keys: ["sk-ant-not-a-file"] });
    assertOpenAIError(anth, { status: 400, param: "api_keys[0]" });
    for (const missing of ["project", "region"]) {
      const { [missing]: _, ...opts } = body.options;
      const r = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [sa.keyFileText], options: opts });
      assertOpenAIError(r, { status: 400, param: `options.${missing}`, code: "missing_required_parameter" });
    }
    const ok = await relay.admin("POST", "/admin/channels", { ...body, api_keys: [sa.keyFileText] });
    assert.ok([200, 201].includes(ok.status), ok.text);
    assertNowhere(ok, [pemBody(sa.privateKey)], "created channel");
  });
});
