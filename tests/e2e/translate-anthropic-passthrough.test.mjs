// Anthropic clients on an Anthropic channel: the body passes through with only `model`
// rewritten (fields the relay does not know intact, anthropic-beta forwarded), replies and
// streams come back byte for byte, usage rows count cache reads and writes once, errors stay
// Anthropic-shaped, and /v1/messages/count_tokens is forwarded to the channel.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { startRelay, ROOT, requestId, assertNowhere, UPSTREAM_KEY } from "./harness.mjs";
import {
  startFakeAnthropic,
  ANTHROPIC_VERSION,
  TEXT,
  USAGE,
  STREAM_TEXT_PIECES,
  STREAM_USAGE,
  TOOL_USES,
  THINKING,
  SIGNATURE,
  THINKING_TEXT,
  COUNT_TOKENS,
  RETRY_AFTER,
  totalInput,
} from "./fake-anthropic.mjs";
import { anthropicFetch, anthropicJson, anthropicStream, assertAnthropicError, assertAnthropicMessage } from "./anthropic-client.mjs";

const BETA = "prompt-caching-2024-07-31,context-management-2025-06-27";
const fixture = () => JSON.parse(fs.readFileSync(path.join(ROOT, "tests/fixtures/anthropic/request_claude_code.json"), "utf8"));

/** The Claude Code fixture (system blocks with cache_control, thinking, tools incl. a server
 *  tool, context_management…) addressed to `model`, marked, plus fields the relay does not know. */
function passBody(model, marker, extra = {}) {
  const body = fixture();
  body.model = model;
  body.messages.at(-1).content.at(-1).text += ` (${marker})`;
  body.service_tier = "auto";
  body.container = "container_011CSHoEeqs5C35K2UUqR7Fy";
  return { ...body, ...extra };
}

describe("Anthropic client → Anthropic upstream (pass-through)", () => {
  let relay, fake, s;
  before(async () => {
    fake = await startFakeAnthropic();
    relay = await startRelay();
    s = await relay.seed({
      provider: "anthropic",
      upstreamBaseUrl: fake.baseUrl,
      models: { "claude-pass": "claude-up-pass", "claude-pass-tools": "tools", "claude-pass-thinking": "thinking" },
    });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));

  function assertUpstream(up, sent, upstreamModel) {
    assert.equal(up.path, "/v1/messages");
    assert.equal(up.invalid, undefined, `the fake Anthropic API accepted the body: ${up.invalid}`);
    assert.deepEqual(up.body, { ...sent, model: upstreamModel }, "the body arrives with only model changed");
    assert.equal(up.headers["x-api-key"], UPSTREAM_KEY, "the channel key replaces the client's");
    assert.equal(up.headers["anthropic-version"], ANTHROPIC_VERSION);
    assert.equal(up.headers["anthropic-beta"], BETA, "anthropic-beta is forwarded between Anthropic ends");
    assert.equal(up.headers.authorization, undefined);
    assert.ok(!JSON.stringify(up.headers).includes(s.key), "the relay key is never sent upstream");
  }

  it("non-stream: body through with only model changed, reply byte for byte, usage row = input + cache read + cache write", async () => {
    const marker = marked();
    const sent = passBody("claude-pass", marker, { stream: false });
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, headers: { "anthropic-beta": BETA }, body: sent });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get("x-relay-dropped"), null, "nothing is dropped on a pass-through");
    assert.equal(r.headers.get("x-relay-approximated"), null);
    const up = await upstreamOf(marker);
    assertUpstream(up, sent, "claude-up-pass");
    assert.equal(r.text, up.sentText(), "the reply is the upstream's, unchanged");
    assertAnthropicMessage(r.json);
    assert.equal(r.json.model, "claude-up-pass");
    assert.deepEqual(r.json.content, [{ type: "text", text: TEXT }]);

    const row = await relay.usageRow(requestId(r));
    assert.equal(row.endpoint, "messages");
    assert.equal(row.model, "claude-pass");
    assert.equal(row.upstream_model, "claude-up-pass");
    assert.equal(row.channel_id, s.channelId);
    assert.equal(row.stream, 0);
    assert.equal(row.status, 200);
    assert.equal(row.prompt_tokens, totalInput(USAGE), "input + cache_read + cache_creation");
    assert.equal(row.completion_tokens, USAGE.output_tokens);
    assert.equal(row.total_tokens, totalInput(USAGE) + USAGE.output_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("stream: the upstream's SSE bytes relayed unchanged; usage row from message_start + message_delta", async () => {
    const marker = marked();
    const sent = passBody("claude-pass", marker);
    assert.equal(sent.stream, true);
    const res = await anthropicFetch(relay, "/v1/messages", { key: s.key, headers: { "anthropic-beta": BETA }, body: sent });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const id = requestId(res);
    const bytes = Buffer.from(await res.arrayBuffer());
    const up = await upstreamOf(marker);
    assertUpstream(up, sent, "claude-up-pass");
    assert.equal(bytes.toString("utf8"), up.sentText(), "the stream is relayed byte for byte");
    assert.ok(bytes.equals(up.sentBytes()));
    const { message } = await anthropicStream(bytes.toString("utf8"));
    assert.equal(message.content[0].text, STREAM_TEXT_PIECES.join(""));

    const row = await relay.usageRow(id);
    assert.equal(row.endpoint, "messages");
    assert.equal(row.stream, 1);
    assert.equal(row.status, 200);
    assert.equal(row.prompt_tokens, totalInput(STREAM_USAGE), "input + cache_read + cache_creation");
    assert.equal(row.completion_tokens, STREAM_USAGE.output_tokens);
    assert.equal(row.total_tokens, totalInput(STREAM_USAGE) + STREAM_USAGE.output_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("stream with tool_use (input_json_delta) and thinking (signature_delta) blocks: relayed unchanged", async () => {
    for (const [model, check] of [
      [
        "claude-pass-tools",
        (m) => {
          assert.equal(m.stop_reason, "tool_use");
          assert.deepEqual(
            m.content.filter((b) => b.type === "tool_use"),
            TOOL_USES.map((t) => ({ type: "tool_use", id: t.id, name: t.name, input: t.input })),
          );
        },
      ],
      [
        "claude-pass-thinking",
        (m) => {
          assert.deepEqual(m.content, [
            { type: "thinking", thinking: THINKING, signature: SIGNATURE },
            { type: "text", text: THINKING_TEXT },
          ]);
        },
      ],
    ]) {
      const marker = marked();
      const res = await anthropicFetch(relay, "/v1/messages", { key: s.key, headers: { "anthropic-beta": BETA }, body: passBody(model, marker) });
      assert.equal(res.status, 200);
      const text = await res.text();
      const up = await upstreamOf(marker);
      assert.equal(text, up.sentText(), `${model}: relayed byte for byte`);
      const { message } = await anthropicStream(text);
      check(message);
    }
  });

  it("upstream 529 → 529 overloaded_error (Anthropic-shaped) for an Anthropic client", async () => {
    fake.next("err-529");
    // x-relay-retries: 0 — one attempt, so the upstream's answer reaches the client as is.
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, headers: { "x-relay-retries": "0" }, body: passBody("claude-pass", marked(), { stream: false }) });
    assertAnthropicError(r, { status: 529, type: "overloaded_error" });
  });

  it("upstream 429 → 429 rate_limit_error with Retry-After", async () => {
    fake.next("err-429");
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, body: passBody("claude-pass", marked(), { stream: false }) });
    assertAnthropicError(r, { status: 429, type: "rate_limit_error" });
    assert.equal(r.headers.get("retry-after"), RETRY_AFTER);
  });

  it("upstream 400 → 400 invalid_request_error keeping the upstream's message", async () => {
    fake.next("err-400");
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, body: passBody("claude-pass", marked(), { stream: false }) });
    const e = assertAnthropicError(r, { status: 400, type: "invalid_request_error" });
    assert.match(e.message, /err-400 was asked for/);
  });

  it("upstream 401 → 502, Anthropic-shaped, the upstream key nowhere", async () => {
    fake.next("err-401-key");
    const r = await anthropicJson(relay, "/v1/messages", { key: s.key, body: passBody("claude-pass", marked(), { stream: false }) });
    assertAnthropicError(r, { status: 502 });
    assertNowhere(r, [UPSTREAM_KEY, UPSTREAM_KEY.slice(0, 12)], "401 response");
  });

  it("count_tokens is forwarded to the channel: model rewritten, generation parameters removed, its answer returned", async () => {
    const marker = marked();
    const sent = {
      model: "claude-pass",
      system: [{ type: "text", text: "You are terse.", cache_control: { type: "ephemeral" } }],
      messages: [{ role: "user", content: `Count me (${marker})` }],
      tools: fixture().tools.slice(0, 2),
    };
    const r = await anthropicJson(relay, "/v1/messages/count_tokens", { key: s.key, body: sent });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { input_tokens: COUNT_TOKENS });
    const up = await upstreamOf(marker);
    assert.equal(up.path, "/v1/messages/count_tokens");
    assert.equal(up.invalid, undefined, `the fake accepted the count_tokens body: ${up.invalid}`);
    assert.deepEqual(up.body, { ...sent, model: "claude-up-pass" });
    assert.equal(up.headers["x-api-key"], UPSTREAM_KEY);
    assert.equal(up.headers["anthropic-version"], ANTHROPIC_VERSION);

    // A Messages body (with max_tokens, stream, temperature) is trimmed to what the counter takes.
    const marker2 = marked();
    const r2 = await anthropicJson(relay, "/v1/messages/count_tokens", {
      key: s.key,
      body: { ...sent, messages: [{ role: "user", content: `Count me too (${marker2})` }], max_tokens: 1024, stream: true, temperature: 0.2 },
    });
    assert.equal(r2.status, 200, r2.text);
    assert.deepEqual(r2.json, { input_tokens: COUNT_TOKENS });
    const up2 = await upstreamOf(marker2);
    for (const k of ["max_tokens", "stream", "temperature"]) assert.ok(!(k in up2.body), `${k} not sent to count_tokens`);
  });
});
