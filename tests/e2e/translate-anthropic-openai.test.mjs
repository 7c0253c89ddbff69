// Anthropic-format clients (raw fetch, as Claude Code calls: x-api-key, anthropic-version,
// anthropic-beta, system blocks with cache_control, tools, stream) on OpenAI-format channels:
// fake-openai.mjs for text, fake-openai-tools.mjs for tool-call deltas. The client must get
// Anthropic's shapes and event sequence; the upstream a proper OpenAI body.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { startRelay, ROOT, requestId, UPSTREAM_KEY } from "./harness.mjs";
import { startFakeOpenAI, CHAT_TEXT, CHAT_USAGE, CHAT_STREAM_PIECES, CHAT_STREAM_USAGE } from "./fake-openai.mjs";
import { startFakeOpenAITools, TOOL_TEXT, TOOL_CALLS, TOOL_USAGE } from "./fake-openai-tools.mjs";
import { anthropicFetch, anthropicJson, anthropicStream, assertAnthropicMessage } from "./anthropic-client.mjs";

const BETA = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14";
const fixture = () => JSON.parse(fs.readFileSync(path.join(ROOT, "tests/fixtures/anthropic/request_claude_code.json"), "utf8"));

/** The Claude Code fixture, addressed to `model`, its last user text carrying `marker`. */
function claudeCodeRequest(model, marker, extra = {}) {
  const body = fixture();
  body.model = model;
  const last = body.messages.at(-1).content.at(-1);
  last.text = `${last.text} (${marker})`;
  return { ...body, ...extra };
}

const fields = (h) => (h ?? "").split(",").map((f) => f.trim()).filter(Boolean);

describe("Anthropic client → OpenAI upstream", () => {
  let relay, fake, tools, s;
  before(async () => {
    fake = await startFakeOpenAI();
    tools = await startFakeOpenAITools();
    relay = await startRelay();
    s = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "claude-via-openai": "gpt-up" } });
    const t = await relay.seed({ upstreamBaseUrl: tools.baseUrl, models: { "claude-tools-via-openai": "gpt-tools-up" } });
    s.toolsKey = t.key; // seed() makes a tenant and key per channel
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await tools?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const marked = () => `marker-${randomUUID()}`;

  /** What every OpenAI-format upstream request made for an Anthropic client must be. */
  function assertProperOpenAIRequest(up, { stream }) {
    assert.equal(up.method, "POST");
    assert.equal(up.path, "/v1/chat/completions");
    assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_KEY}`, "the channel key as a Bearer token");
    for (const h of ["anthropic-beta", "anthropic-version", "x-api-key"]) {
      assert.equal(up.headers[h], undefined, `no ${h} header to an OpenAI upstream`);
    }
    assert.ok(!up.rawBody.includes("cache_control"), `no cache_control anywhere in the body: ${up.rawBody}`);
    const b = up.body;
    for (const k of ["system", "thinking", "metadata", "stop_sequences", "top_k", "context_management", "max_completion_tokens"]) {
      assert.ok(!(k in b), `no Anthropic field ${k} in the OpenAI body`);
    }
    assert.ok(Array.isArray(b.messages) && b.messages.length > 0);
    for (const m of b.messages) assert.ok(["system", "user", "assistant", "tool"].includes(m.role), `OpenAI role ${m.role}`);
    if (stream) {
      assert.equal(b.stream, true);
      assert.deepEqual(b.stream_options, { include_usage: true }, "the relay asks for usage");
    } else assert.ok(!b.stream, "no stream for a non-stream request");
  }

  it("Claude-Code-like stream: Anthropic SSE sequence for the client, a proper OpenAI body upstream", async () => {
    const marker = marked();
    const res = await anthropicFetch(relay, "/v1/messages", {
      key: s.key,
      headers: { "anthropic-beta": BETA },
      body: claudeCodeRequest("claude-via-openai", marker),
    });
    assert.equal(res.status, 200, res.status === 200 ? "" : await res.clone().text());
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const id = requestId(res);
    const dropped = fields(res.headers.get("x-relay-dropped"));
    for (const f of ["context_management", "tools.web_search_20250305"]) {
      assert.ok(dropped.includes(f), `x-relay-dropped lists ${f}: ${res.headers.get("x-relay-dropped")}`);
    }
    assert.ok(!dropped.includes("cache_control"), "cache_control is a cost hint, never reported");
    assert.ok(fields(res.headers.get("x-relay-approximated")).includes("thinking.budget_tokens"), `approximated: ${res.headers.get("x-relay-approximated")}`);

    const { message, names } = await anthropicStream(res);
    const seq = names.filter((n) => n !== "ping");
    assert.deepEqual(
      seq,
      [
        "message_start",
        "content_block_start",
        ...CHAT_STREAM_PIECES.map(() => "content_block_delta"),
        "content_block_stop",
        "message_delta",
        "message_stop",
      ],
      "the Anthropic event sequence",
    );
    assert.match(message.id, /^msg_/);
    assert.equal(message.model, "gpt-up", "message_start names the upstream model");
    assert.deepEqual(message.content, [{ type: "text", text: CHAT_STREAM_PIECES.join("") }]);
    assert.equal(message.stop_reason, "end_turn");
    assert.equal(message.usage.output_tokens, CHAT_STREAM_USAGE.completion_tokens, "message_delta usage.output_tokens");
    assert.equal(message.usage.input_tokens, CHAT_STREAM_USAGE.prompt_tokens, "message_delta usage.input_tokens");

    const up = await fake.waitForRequest((r) => r.rawBody.includes(marker));
    assertProperOpenAIRequest(up, { stream: true });
    const b = up.body;
    assert.equal(b.model, "gpt-up");
    assert.deepEqual(
      b.messages.slice(0, 2),
      [
        { role: "system", content: "You are Claude Code, Anthropic's official CLI for Claude." },
        { role: "system", content: "You are an interactive CLI tool that helps users with software engineering tasks." },
      ],
      "system blocks become system messages, first",
    );
    assert.ok(!b.messages.slice(2).some((m) => m.role === "system"), "no system message after the first ones");
    const rest = b.messages.slice(2);
    assert.deepEqual(rest.map((m) => m.role), ["user", "assistant", "tool", "tool", "user"]);
    const [user1, assistant, tool1, tool2, user2] = rest;
    const text = (c) => (typeof c === "string" ? c : c.map((p) => p.text).join("\n"));
    assert.match(text(user1.content), /What does src\/main\.rs do\?/);
    assert.match(text(assistant.content), /Let me read it\./);
    assert.deepEqual(
      assistant.tool_calls.map((c) => ({ id: c.id, type: c.type, name: c.function.name, args: JSON.parse(c.function.arguments) })),
      [
        { id: "toolu_01Xb3uX6YxgC7ZhRrSkPbW6J", type: "function", name: "Read", args: { file_path: "/repo/src/main.rs" } },
        { id: "toolu_01Qm8kcWgbWyZ7dXs2LpUo9N", type: "function", name: "Bash", args: { command: "wc -l src/main.rs", description: "Count lines" } },
      ],
    );
    assert.equal(tool1.tool_call_id, "toolu_01Xb3uX6YxgC7ZhRrSkPbW6J");
    assert.match(tool1.content, /fn main\(\)/);
    assert.equal(tool2.tool_call_id, "toolu_01Qm8kcWgbWyZ7dXs2LpUo9N");
    assert.match(tool2.content, /No such file/);
    assert.match(text(user2.content), new RegExp(`Also, keep it short\\. \\(${marker}\\)`));
    assert.deepEqual(
      b.tools.map((t) => t.type),
      ["function", "function"],
      "client tools as functions; the server tool (web_search) is not sent",
    );
    assert.deepEqual(b.tools.map((t) => t.function.name), ["Read", "Bash"]);
    assert.deepEqual(b.tools[0].function.parameters.required, ["file_path"], "input_schema → parameters");
    assert.equal(b.tools[1].function.description, "Executes a given bash command.");
    assert.equal(b.max_tokens, 32000);
    assert.equal(b.user, "user_2f1c0e_account_7d0e_session_9a41", "metadata.user_id → user");

    const row = await relay.usageRow(id);
    assert.equal(row.endpoint, "messages");
    assert.equal(row.model, "claude-via-openai");
    assert.equal(row.upstream_model, "gpt-up");
    assert.equal(row.stream, 1);
    assert.equal(row.prompt_tokens, CHAT_STREAM_USAGE.prompt_tokens);
    assert.equal(row.completion_tokens, CHAT_STREAM_USAGE.completion_tokens);
    const listed = await relay.adminOk("GET", `/admin/usage?tenant_id=${s.tenantId}&limit=50`);
    const mine = listed.data.find((r) => r.request_id === id);
    assert.ok(mine, "the row is listed by GET /admin/usage");
    assert.equal(mine.endpoint, "messages");
  });

  it("stream: tool_use blocks assembled from OpenAI tool_call deltas; stop_reason tool_use; usage", async () => {
    const marker = marked();
    const res = await anthropicFetch(relay, "/v1/messages", {
      key: s.toolsKey,
      headers: { "anthropic-beta": BETA },
      body: claudeCodeRequest("claude-tools-via-openai", marker),
    });
    assert.equal(res.status, 200, res.status === 200 ? "" : await res.clone().text());
    const { message, events } = await anthropicStream(res);
    assert.equal(message.model, "gpt-tools-up");
    assert.deepEqual(message.content, [
      { type: "text", text: TOOL_TEXT },
      ...TOOL_CALLS.map((c) => ({ type: "tool_use", id: c.id, name: c.name, input: c.input })),
    ]);
    const toolDeltas = events.filter((e) => e.type === "content_block_delta" && e.delta.type === "input_json_delta");
    assert.ok(toolDeltas.length >= TOOL_CALLS.length, "tool input arrives as input_json_delta events");
    assert.equal(message.stop_reason, "tool_use");
    assert.equal(message.usage.output_tokens, TOOL_USAGE.completion_tokens);
    const cached = TOOL_USAGE.prompt_tokens_details.cached_tokens;
    assert.equal(message.usage.input_tokens, TOOL_USAGE.prompt_tokens - cached, "Anthropic input_tokens exclude cache reads");
    assert.equal(message.usage.cache_read_input_tokens, cached);
    const up = await tools.waitForRequest((r) => r.rawBody.includes(marker));
    assertProperOpenAIRequest(up, { stream: true });
  });

  it("non-stream: an Anthropic Message from an OpenAI completion; a proper OpenAI body upstream", async () => {
    const marker = marked();
    const r = await anthropicJson(relay, "/v1/messages", {
      key: s.key,
      headers: { "anthropic-beta": BETA },
      body: claudeCodeRequest("claude-via-openai", marker, { stream: false }),
    });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get("content-type") ?? "", /application\/json/);
    assertAnthropicMessage(r.json);
    assert.equal(r.json.model, "gpt-up");
    assert.deepEqual(r.json.content, [{ type: "text", text: CHAT_TEXT }]);
    assert.equal(r.json.stop_reason, "end_turn");
    assert.equal(r.json.stop_sequence, null);
    assert.equal(r.json.usage.input_tokens, CHAT_USAGE.prompt_tokens);
    assert.equal(r.json.usage.output_tokens, CHAT_USAGE.completion_tokens);
    const up = await fake.waitForRequest((x) => x.rawBody.includes(marker));
    assertProperOpenAIRequest(up, { stream: false });
    assert.equal(up.body.messages[0].role, "system");
    const row = await relay.usageRow(requestId(r));
    assert.equal(row.endpoint, "messages");
    assert.equal(row.stream, 0);
    assert.equal(row.prompt_tokens, CHAT_USAGE.prompt_tokens);
    assert.equal(row.completion_tokens, CHAT_USAGE.completion_tokens);
  });

  it("non-stream with tool calls: text and tool_use blocks with parsed input; stop_reason tool_use; cache reads apart", async () => {
    const marker = marked();
    const r = await anthropicJson(relay, "/v1/messages", {
      key: s.toolsKey,
      body: claudeCodeRequest("claude-tools-via-openai", marker, { stream: false }),
    });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.deepEqual(r.json.content, [
      { type: "text", text: TOOL_TEXT },
      ...TOOL_CALLS.map((c) => ({ type: "tool_use", id: c.id, name: c.name, input: c.input })),
    ]);
    assert.equal(r.json.stop_reason, "tool_use");
    const cached = TOOL_USAGE.prompt_tokens_details.cached_tokens;
    assert.equal(r.json.usage.input_tokens, TOOL_USAGE.prompt_tokens - cached);
    assert.equal(r.json.usage.cache_read_input_tokens, cached);
    assert.equal(r.json.usage.output_tokens, TOOL_USAGE.completion_tokens);
    const row = await relay.usageRow(requestId(r));
    assert.equal(row.prompt_tokens, TOOL_USAGE.prompt_tokens, "cached tokens counted once");
    assert.equal(row.total_tokens, TOOL_USAGE.total_tokens);
  });

  it("reply ids are Anthropic message ids (msg_…), non-stream as in the stream, never the upstream's chatcmpl id", async () => {
    const body = { model: "claude-via-openai", max_tokens: 20, messages: [{ role: "user", content: "Hi" }] };
    const whole = await anthropicJson(relay, "/v1/messages", { key: s.key, body });
    assert.equal(whole.status, 200, whole.text);
    const streamed = await anthropicStream(await anthropicFetch(relay, "/v1/messages", { key: s.key, body: { ...body, stream: true } }));
    assert.match(streamed.message.id, /^msg_/, "stream message_start id");
    assert.match(whole.json.id, /^msg_/, `non-stream id: ${whole.json.id}`);
  });

  it("a simple request with the key as a Bearer token and a string system prompt", async () => {
    const marker = marked();
    const res = await fetch(`${relay.url}/v1/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${s.key}`, "anthropic-version": "2023-06-01", "content-type": "application/json" },
      body: JSON.stringify({
        model: "claude-via-openai",
        max_tokens: 50,
        system: "Answer in French.",
        messages: [{ role: "user", content: `Bonjour (${marker})` }],
      }),
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assertAnthropicMessage(JSON.parse(text));
    const up = await fake.waitForRequest((r) => r.rawBody.includes(marker));
    assert.deepEqual(up.body.messages, [
      { role: "system", content: "Answer in French." },
      { role: "user", content: `Bonjour (${marker})` },
    ]);
    assert.equal(up.body.max_tokens, 50);
  });
});
