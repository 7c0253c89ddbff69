// A fake Anthropic Messages API for the end-to-end tests: POST /v1/messages (non-stream and
// `stream: true` SSE) and POST /v1/messages/count_tokens, on 127.0.0.1 (port 0), speaking the
// real wire format (shapes from Anthropic's API reference and tests/fixtures/anthropic/).
//
//   const fake = await startFakeAnthropic();
//   channel: { provider: "anthropic", base_url: fake.baseUrl }   // http://127.0.0.1:PORT/v1
//
// It checks a request the way the real API does, so a relay that sends something Anthropic would
// refuse gets the same 400 invalid_request_error: `x-api-key` and `anthropic-version` headers;
// `model`, `max_tokens` (≥ 1) and non-empty `messages`; user/assistant roles that alternate and
// start with the user; no empty text blocks; every tool_result answering a tool_use of the
// assistant turn just before; tool ids of [a-zA-Z0-9_-]; tools with an object `input_schema`;
// temperature and top_p in [0, 1]; no top-level field the API does not know ("Extra inputs are
// not permitted"). count_tokens refuses generation parameters (max_tokens, stream, temperature…).
//
// Scenario of a request: queued with fake.next(...), else the request's `model` when it names a
// scenario, else "ok". Replies and streams are the recorded ones of tests/fixtures/anthropic/,
// with a fresh message id, the request's model and the usage below set in them. Scenarios:
//   ok           reply_text.json (TEXT); stream: stream_text.sse (STREAM_TEXT_PIECES)
//   tools        stream: stream_tool_use.sse — text (TOOLS_TEXT) then two tool_use blocks
//                (TOOL_USES) whose input arrives as input_json_delta fragments, the first ""
//                as Anthropic sends; non-stream: the same blocks as one message
//   thinking     stream: stream_thinking.sse — a thinking block (THINKING, signature SIGNATURE)
//                then a text block (THINKING_TEXT); non-stream: the same blocks as one message
//   stream-error (stream) stream_error.sse: message_start, a text block's first delta, then an
//                `error` event (overloaded_error) and the end of the stream; non-stream: like err-529
//   err-400      400 invalid_request_error
//   err-401      401 authentication_error "invalid x-api-key"
//   err-401-key  401 authentication_error whose message quotes the x-api-key in full (a careless
//                upstream): the relay must scrub it
//   err-429      429 rate_limit_error with `retry-after: 7` and anthropic-ratelimit-* headers
//   err-500      500 api_error
//   err-529      529 error_overloaded_529.json ("Overloaded")
// Every response carries a `request-id` header; error bodies carry `request_id`, as Anthropic's.
// Usage is fixed so tests can check what the relay reported and recorded (Anthropic's
// input_tokens excludes cache reads and writes, which are listed beside it):
//   non-stream:  USAGE         (reply_text.json's: input 21, cache write 188, cache read 1800,
//                output 12)
//   stream:      STREAM_USAGE  (message_start: input 25, cache write 100, cache read 1000,
//                output 1; message_delta: the same input fields and output 15) — the recorded
//                streams each carry their own usage, none with a cache write, so every stream
//                gets this one instead
// count_tokens answers {"input_tokens": COUNT_TOKENS}.

import { startFakeServer, sendJson, startSse, writeSplit, fakeId, fixtureJson, fixtureSse } from "./fake-common.mjs";

const REPLY_TEXT = fixtureJson("anthropic/reply_text.json");
const STREAM_TEXT = fixtureSse("anthropic/stream_text.sse");
const STREAM_TOOL_USE = fixtureSse("anthropic/stream_tool_use.sse");
const STREAM_THINKING = fixtureSse("anthropic/stream_thinking.sse");
const STREAM_ERROR = fixtureSse("anthropic/stream_error.sse");
const ERROR_OVERLOADED = fixtureJson("anthropic/error_overloaded_529.json");

/** The `field` of every content_block_delta of `type` in a recorded stream, in order. */
const deltas = (events, type, field) =>
  events.filter((e) => e.event === "content_block_delta" && e.data.delta.type === type).map((e) => e.data.delta[field]);

export const ANTHROPIC_VERSION = "2023-06-01";
export const TEXT = REPLY_TEXT.content[0].text;
const { input_tokens, cache_creation_input_tokens, cache_read_input_tokens, output_tokens } = REPLY_TEXT.usage;
export const USAGE = { input_tokens, cache_creation_input_tokens, cache_read_input_tokens, output_tokens };
export const STREAM_TEXT_PIECES = deltas(STREAM_TEXT, "text_delta", "text");
export const STREAM_USAGE = { input_tokens: 25, cache_creation_input_tokens: 100, cache_read_input_tokens: 1000, output_tokens: 15 };
/** All input tokens of a usage object, as OpenAI counts them (cached ones included, once). */
export const totalInput = (u) => u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens;
export const TOOLS_TEXT = deltas(STREAM_TOOL_USE, "text_delta", "text").join("");
export const TOOL_USES = STREAM_TOOL_USE.filter((e) => e.event === "content_block_start" && e.data.content_block.type === "tool_use").map((start) => {
  const { index, content_block: block } = start.data;
  const fragments = STREAM_TOOL_USE.filter((e) => e.event === "content_block_delta" && e.data.index === index).map((e) => e.data.delta.partial_json);
  return { id: block.id, name: block.name, input: JSON.parse(fragments.join("")), fragments };
});
export const THINKING_PIECES = deltas(STREAM_THINKING, "thinking_delta", "thinking");
export const THINKING = THINKING_PIECES.join("");
export const SIGNATURE = deltas(STREAM_THINKING, "signature_delta", "signature").join("");
export const THINKING_TEXT = deltas(STREAM_THINKING, "text_delta", "text").join("");
export const COUNT_TOKENS = 1234;
export const RETRY_AFTER = "7";

const SCENARIOS = new Set([
  "ok",
  "tools",
  "thinking",
  "stream-error",
  "err-400",
  "err-401",
  "err-401-key",
  "err-429",
  "err-500",
  "err-529",
]);

/** Top-level fields of a Messages request Anthropic knows. */
const MESSAGE_FIELDS = new Set([
  "model",
  "messages",
  "max_tokens",
  "system",
  "metadata",
  "stop_sequences",
  "stream",
  "temperature",
  "top_k",
  "top_p",
  "tools",
  "tool_choice",
  "thinking",
  "service_tier",
  "container",
  "mcp_servers",
  "context_management",
  "output_config",
]);
/** Top-level fields of a count_tokens request. */
const COUNT_FIELDS = new Set(["model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers", "context_management", "output_config"]);

class InvalidRequest extends Error {}
const fail = (message) => {
  throw new InvalidRequest(message);
};

function errorBody(type, message) {
  return { type: "error", error: { type, message }, request_id: fakeId("req_") };
}

function sendError(res, status, type, message, headers = {}) {
  sendJson(res, status, errorBody(type, message), { "request-id": fakeId("req_"), ...headers });
}

function sendOverloaded(res) {
  sendJson(res, 529, { ...ERROR_OVERLOADED, request_id: fakeId("req_") }, { "request-id": fakeId("req_") });
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const TOOL_ID = /^[a-zA-Z0-9_-]+$/;

function checkUnit(body, field) {
  if (body[field] === undefined) return;
  if (typeof body[field] !== "number" || body[field] < 0 || body[field] > 1) fail(`${field}: Input should be less than or equal to 1`);
}

/** Validates a Messages (or count_tokens) body like the real API; throws InvalidRequest. */
export function validateMessagesBody(body, { count = false, midSystem = false } = {}) {
  if (!isObject(body)) fail("There was an issue with the request body: it is not a JSON object.");
  const known = count ? COUNT_FIELDS : MESSAGE_FIELDS;
  for (const k of Object.keys(body)) if (!known.has(k)) fail(`${k}: Extra inputs are not permitted`);
  if (typeof body.model !== "string" || !body.model) fail("model: Field required");
  if (!count) {
    if (body.max_tokens === undefined) fail("max_tokens: Field required");
    if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) fail("max_tokens: Input should be a valid integer greater than or equal to 1");
    if (body.stream !== undefined && typeof body.stream !== "boolean") fail("stream: Input should be a valid boolean");
    checkUnit(body, "temperature");
    checkUnit(body, "top_p");
  }
  if (body.system !== undefined) {
    if (Array.isArray(body.system)) {
      body.system.forEach((b, i) => {
        if (!isObject(b) || b.type !== "text" || typeof b.text !== "string") fail(`system.${i}: Input tag does not match the expected tag 'text'`);
        if (!b.text) fail(`system.${i}: text content blocks must be non-empty`);
      });
    } else if (typeof body.system !== "string") fail("system: Input should be a valid string or list of text blocks");
  }
  if (!Array.isArray(body.messages)) fail("messages: Field required");
  if (body.messages.length === 0) fail("messages: at least one message is required");
  let prevToolUses = new Set();
  // With the beta `mid-conversation-system-2026-04-07` a system message may stand between
  // turns (text only); the user/assistant turns around it must still alternate.
  let prevTurn = null;
  body.messages.forEach((m, i) => {
    if (!isObject(m)) fail(`messages.${i}: Input should be a valid dictionary`);
    const system = m.role === "system" && midSystem;
    if (m.role !== "user" && m.role !== "assistant" && !system) fail(`messages.${i}.role: Input should be 'user' or 'assistant'`);
    if (i === 0 && m.role !== "user") fail("messages: first message must use the \"user\" role");
    if (system) {
      const texts = typeof m.content === "string" ? [m] : m.content;
      if (!Array.isArray(texts) || texts.some((b) => !isObject(b) || (b.type !== undefined && b.type !== "text"))) fail(`messages.${i}.content: system messages take text only`);
      return;
    }
    if (prevTurn === m.role) {
      fail(`messages: roles must alternate between "user" and "assistant", but found multiple "${m.role}" roles in a row`);
    }
    prevTurn = m.role;
    const toolUses = new Set();
    if (typeof m.content === "string") {
      if (!m.content && !(i === body.messages.length - 1 && m.role === "assistant")) fail(`messages.${i}: all messages must have non-empty content`);
    } else if (Array.isArray(m.content)) {
      if (m.content.length === 0) fail(`messages.${i}: all messages must have non-empty content`);
      m.content.forEach((b, j) => {
        const where = `messages.${i}.content.${j}`;
        if (!isObject(b) || typeof b.type !== "string") fail(`${where}: Input should be a valid content block`);
        switch (b.type) {
          case "text":
            if (typeof b.text !== "string" || !b.text) fail(`${where}: text content blocks must be non-empty`);
            break;
          case "image":
            if (m.role !== "user") fail(`${where}: image blocks are only allowed in user messages`);
            if (!isObject(b.source)) fail(`${where}.source: Field required`);
            if (b.source.type === "base64") {
              if (!/^image\/(jpeg|png|gif|webp)$/.test(b.source.media_type ?? "")) fail(`${where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`);
              if (typeof b.source.data !== "string" || !b.source.data || b.source.data.startsWith("data:")) fail(`${where}.source.data: invalid base64 data`);
            } else if (b.source.type === "url") {
              if (typeof b.source.url !== "string") fail(`${where}.source.url: Field required`);
            } else if (b.source.type !== "file") fail(`${where}.source.type: Input tag '${b.source.type}' is not allowed`);
            break;
          case "tool_use":
            if (m.role !== "assistant") fail(`${where}: tool_use blocks are only allowed in assistant messages`);
            if (typeof b.id !== "string" || !TOOL_ID.test(b.id)) fail(`${where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'`);
            if (typeof b.name !== "string" || !b.name) fail(`${where}.name: Field required`);
            if (!isObject(b.input)) fail(`${where}.input: Input should be a valid dictionary`);
            toolUses.add(b.id);
            break;
          case "tool_result":
            if (m.role !== "user") fail(`${where}: tool_result blocks are only allowed in user messages`);
            if (typeof b.tool_use_id !== "string" || !TOOL_ID.test(b.tool_use_id)) fail(`${where}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'`);
            if (!prevToolUses.has(b.tool_use_id)) {
              fail(`${where}: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${b.tool_use_id}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`);
            }
            if (b.content !== undefined && typeof b.content !== "string" && !Array.isArray(b.content)) fail(`${where}.content: Input should be a valid string or list`);
            break;
          case "thinking":
            if (m.role !== "assistant") fail(`${where}: thinking blocks are only allowed in assistant messages`);
            if (typeof b.signature !== "string" || !b.signature) fail(`${where}.signature: Field required`);
            break;
          case "redacted_thinking":
          case "document":
          case "search_result":
          case "server_tool_use":
          case "web_search_tool_result":
          case "container_upload":
            break;
          default:
            fail(`${where}: Input tag '${b.type}' found using 'type' does not match any of the expected tags`);
        }
      });
    } else fail(`messages.${i}.content: Input should be a valid string or list`);
    prevToolUses = toolUses;
  });
  if (body.tools !== undefined) {
    if (!Array.isArray(body.tools)) fail("tools: Input should be a valid list");
    body.tools.forEach((t, i) => {
      if (!isObject(t) || typeof t.name !== "string" || !t.name) fail(`tools.${i}.name: Field required`);
      if (t.type === undefined || t.type === "custom") {
        if (!isObject(t.input_schema) || t.input_schema.type !== "object") fail(`tools.${i}.custom.input_schema: Input should be an object schema`);
      }
    });
  }
  if (body.tool_choice !== undefined) {
    if (!isObject(body.tool_choice) || !["auto", "any", "tool", "none"].includes(body.tool_choice.type)) fail("tool_choice: Input tag does not match any of the expected tags");
    if (!body.tools?.length) fail("tool_choice may only be specified while providing tools");
  }
}

function message(model, content, stopReason, usage) {
  return {
    id: fakeId("msg_"),
    type: "message",
    role: "assistant",
    model,
    content,
    stop_reason: stopReason,
    stop_sequence: null,
    usage: { ...usage, service_tier: "standard" },
  };
}

const sseEvent = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

export async function startFakeAnthropic() {
  const fake = await startFakeServer({
    name: "fake Anthropic",
    scenarios: SCENARIOS,
    scenarioOf: (rec) => (SCENARIOS.has(rec.body?.model) ? rec.body.model : "ok"),
    handle,
  });

  async function handle(req, res, rec) {
    const { method, path, body } = rec;
    const routes = ["/v1/messages", "/v1/messages/count_tokens"];
    if (!routes.includes(path)) return sendError(res, 404, "not_found_error", `Not Found (${method} ${path})`);
    if (method !== "POST") return sendError(res, 405, "invalid_request_error", `Method Not Allowed (${method} ${path})`);
    const key = req.headers["x-api-key"];
    if (!key) return sendError(res, 401, "authentication_error", "x-api-key header is required");
    if (!req.headers["anthropic-version"]) return sendError(res, 400, "invalid_request_error", "anthropic-version: header is required");
    if (body === undefined || body === null) {
      return sendError(res, 400, "invalid_request_error", "There was an issue with the request body: it is not valid JSON.");
    }
    const count = path === "/v1/messages/count_tokens";
    try {
      const midSystem = (req.headers["anthropic-beta"] ?? "").split(",").map((b) => b.trim()).includes("mid-conversation-system-2026-04-07");
      validateMessagesBody(body, { count, midSystem });
    } catch (e) {
      if (!(e instanceof InvalidRequest)) throw e;
      rec.invalid = e.message;
      return sendError(res, 400, "invalid_request_error", e.message);
    }
    const stream = !count && body.stream === true;
    switch (rec.scenario) {
      case "err-400":
        return sendError(res, 400, "invalid_request_error", "messages.0.content: err-400 was asked for by the test");
      case "err-401":
        return sendError(res, 401, "authentication_error", "invalid x-api-key");
      case "err-401-key":
        return sendError(res, 401, "authentication_error", `invalid x-api-key: ${key}`);
      case "err-429":
        return sendError(
          res,
          429,
          "rate_limit_error",
          "This request would exceed the rate limit for your organization of 50 requests per minute.",
          {
            "retry-after": RETRY_AFTER,
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": new Date(Date.now() + 7000).toISOString(),
          },
        );
      case "err-500":
        return sendError(res, 500, "api_error", "Internal server error");
      case "err-529":
        return sendOverloaded(res);
      case "stream-error":
        if (!stream) return sendOverloaded(res);
    }
    if (count) return sendJson(res, 200, { input_tokens: COUNT_TOKENS }, { "request-id": fakeId("req_") });
    if (stream) return streamReply(res, body.model, rec.scenario);
    return sendJson(res, 200, wholeReply(body.model, rec.scenario), { "request-id": fakeId("req_") });
  }

  return { ...fake, baseUrl: `${fake.origin}/v1` };
}

// The recorded tool and thinking replies (reply_tool_use.json, reply_thinking.json) hold other
// blocks than the recorded streams, and the tests expect the same blocks whichever way they ask:
// so these two replies are the streams' blocks, as one message.
function wholeReply(model, scenario) {
  switch (scenario) {
    case "tools":
      return message(
        model,
        [
          { type: "text", text: TOOLS_TEXT },
          ...TOOL_USES.map((t) => ({ type: "tool_use", id: t.id, name: t.name, input: t.input })),
        ],
        "tool_use",
        USAGE,
      );
    case "thinking":
      return message(
        model,
        [
          { type: "thinking", thinking: THINKING, signature: SIGNATURE },
          { type: "text", text: THINKING_TEXT },
        ],
        "end_turn",
        USAGE,
      );
    default:
      return { ...REPLY_TEXT, id: fakeId("msg_"), model };
  }
}

const STREAMS = { tools: STREAM_TOOL_USE, thinking: STREAM_THINKING, "stream-error": STREAM_ERROR };

/** A recorded stream, as recorded but for message_start (id, model, usage) and message_delta (usage). */
function streamReply(res, model, scenario) {
  startSse(res, { "request-id": fakeId("req_") });
  for (const e of STREAMS[scenario] ?? STREAM_TEXT) {
    if (e.event === "message_start") {
      res.write(sseEvent("message_start", { message: { ...e.data.message, id: fakeId("msg_"), model, usage: { ...STREAM_USAGE, output_tokens: 1 } } }));
    } else if (e.event === "message_delta") res.write(sseEvent("message_delta", { ...e.data, usage: { ...STREAM_USAGE } }));
    else if (e.event === "content_block_delta") writeSplit(res, e.raw);
    else res.write(e.raw);
  }
  res.end();
}
