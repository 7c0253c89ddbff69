// A fake Cohere Chat API v2 for the end-to-end tests, on 127.0.0.1 (port 0):
//   POST /v2/chat   (non-stream JSON, or `"stream": true` SSE: `event: <type>` + `data: {…}`)
//   channel: { provider: "cohere", base_url: fake.baseUrl }   // http://127.0.0.1:PORT/v2
//
// It checks a request the way the real API does, answering 400 {"id","message":"invalid
// request: …"} otherwise: `Authorization: Bearer <key>` (none → 401 "no api key supplied"; a key
// other than the fake's → 401 "invalid api token"); only v2 chat's fields; a `model`; non-empty
// `messages` with roles system/user/assistant/tool; assistant turns with content or tool_calls;
// tool turns with a tool_call_id answering an earlier call and content; tools of type function
// with a name and object parameters; tool_choice REQUIRED/NONE; sampling parameters in range
// (temperature in [0, 1], p in [0.01, 0.99], k in [0, 500], penalties in [0, 1], at most 5 stop_sequences).
//
// Scenario: queued with fake.next(...), else the model when it names one, else "ok". Replies and
// streams are the recorded ones of tests/fixtures/cohere/, with fresh ids and USAGE set in them:
//   ok       reply_text.json (TEXT); stream: stream_text.sse — content-start, content-delta per
//            STREAM_PIECES, content-end
//   tools    stream: stream_tool_call.sse — tool-plan-delta… (TOOL_PLAN), then tool-call-start /
//            tool-call-delta… / tool-call-end per call (TOOL_CALLS), finish_reason TOOL_CALL;
//            non-stream: reply_tool_call.json carrying the stream's tool_plan and tool_calls (the
//            two recordings name different calls; the tests expect the same ones either way)
//   err-400  400 invalid request;  err-401  401 invalid api token;
//   err-429  429 Trial key limit (error_rate_limit_429.json);  err-500  500 internal server error
// Usage (in replies and in the stream's message-end): USAGE, reply_text.json's — billed_units
// input 5 / output 26, tokens input 71 / output 26, cached_tokens 64 — an OpenAI client should see
// prompt 71 (cached 64), completion 26, total 97 (Cohere's `tokens` count what the model read,
// billed_units only what is billed). The other recordings' usage lacks the cached tokens the
// tests look for, so it is replaced.

import { startFakeServer, sendJson, startSse, writeSplit, fixtureJson, fixtureSse } from "./fake-common.mjs";
import crypto from "node:crypto";

const REPLY_TEXT = fixtureJson("cohere/reply_text.json");
const REPLY_TOOL_CALL = fixtureJson("cohere/reply_tool_call.json");
const STREAM_TEXT = fixtureSse("cohere/stream_text.sse");
const STREAM_TOOL_CALL = fixtureSse("cohere/stream_tool_call.sse");
const ERROR_RATE_LIMIT = fixtureJson("cohere/error_rate_limit_429.json");

const ofEvent = (events, type) => events.filter((e) => e.event === type).map((e) => e.data);

export const TEXT = REPLY_TEXT.message.content[0].text;
export const STREAM_PIECES = ofEvent(STREAM_TEXT, "content-delta").map((d) => d.delta.message.content.text);
export const TOOL_PLAN = ofEvent(STREAM_TOOL_CALL, "tool-plan-delta")
  .map((d) => d.delta.message.tool_plan)
  .join("");
export const TOOL_CALLS = ofEvent(STREAM_TOOL_CALL, "tool-call-start").map(({ index, delta }) => {
  const { id, function: fn } = delta.message.tool_calls;
  const fragments = ofEvent(STREAM_TOOL_CALL, "tool-call-delta")
    .filter((d) => d.index === index)
    .map((d) => d.delta.message.tool_calls.function.arguments);
  return { id, name: fn.name, arguments: fragments.join(""), fragments };
});
export const USAGE = REPLY_TEXT.usage;
export const OPENAI_USAGE = { prompt_tokens: 71, completion_tokens: 26, total_tokens: 97, cached_tokens: 64 };

const SCENARIOS = new Set(["ok", "tools", "err-400", "err-401", "err-429", "err-500"]);
const FIELDS = new Set([
  "model",
  "messages",
  "tools",
  "strict_tools",
  "documents",
  "citation_options",
  "response_format",
  "safety_mode",
  "max_tokens",
  "stop_sequences",
  "temperature",
  "seed",
  "frequency_penalty",
  "presence_penalty",
  "k",
  "p",
  "logprobs",
  "tool_choice",
  "thinking",
  "stream",
  "priority",
]);

class Invalid extends Error {}
const fail = (m) => {
  throw new Invalid(`invalid request: ${m}`);
};
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const newId = () => crypto.randomUUID();

function sendError(res, status, message) {
  sendJson(res, status, { id: newId(), message });
}

export function validateChatBody(body) {
  if (!isObject(body)) fail("body must be a JSON object");
  for (const k of Object.keys(body)) if (!FIELDS.has(k)) fail(`unknown field: parameter '${k}' is not a valid field`);
  if (typeof body.model !== "string" || !body.model) fail("model must be specified");
  if (!Array.isArray(body.messages) || body.messages.length === 0) fail("messages must not be empty");
  const calls = new Set();
  body.messages.forEach((m, i) => {
    if (!isObject(m)) fail(`messages[${i}] must be an object`);
    switch (m.role) {
      case "system":
      case "user":
        if (typeof m.content === "string") {
          if (!m.content) fail(`messages[${i}].content must not be empty`);
        } else if (!Array.isArray(m.content) || m.content.length === 0) fail(`messages[${i}].content must be a string or a non-empty list`);
        break;
      case "assistant":
        if (m.content === undefined && !m.tool_calls?.length && !m.tool_plan) fail(`messages[${i}]: an assistant message needs content or tool_calls`);
        for (const c of m.tool_calls ?? []) {
          if (typeof c.id !== "string" || c.type !== "function" || typeof c.function?.name !== "string") fail(`messages[${i}].tool_calls: id, type "function" and function.name are required`);
          try {
            JSON.parse(c.function.arguments);
          } catch {
            fail(`messages[${i}].tool_calls: function.arguments must be a JSON string`);
          }
          calls.add(c.id);
        }
        break;
      case "tool":
        if (typeof m.tool_call_id !== "string" || !calls.has(m.tool_call_id)) fail(`messages[${i}].tool_call_id ${m.tool_call_id} matches no tool call`);
        if (m.content === undefined || m.content === "" || (Array.isArray(m.content) && !m.content.length)) fail(`messages[${i}].content must not be empty`);
        break;
      default:
        fail(`messages[${i}].role must be one of system, user, assistant, tool (got ${JSON.stringify(m.role)})`);
    }
  });
  for (const [i, t] of (body.tools ?? []).entries()) {
    if (t.type !== "function" || typeof t.function?.name !== "string" || !isObject(t.function.parameters)) fail(`tools[${i}] must be {type: "function", function: {name, parameters}}`);
  }
  if (body.tool_choice !== undefined && !["REQUIRED", "NONE"].includes(body.tool_choice)) fail(`tool_choice must be REQUIRED or NONE, got ${JSON.stringify(body.tool_choice)}`);
  if (body.tool_choice !== undefined && !body.tools?.length) fail("tool_choice requires tools");
  const range = (k, lo, hi) => {
    if (body[k] !== undefined && !(typeof body[k] === "number" && body[k] >= lo && body[k] <= hi)) fail(`${k} must be between ${lo} and ${hi}`);
  };
  range("temperature", 0, 1);
  if (body.stop_sequences !== undefined && (!Array.isArray(body.stop_sequences) || body.stop_sequences.length > 5)) fail("stop_sequences: at most 5");
  range("p", 0.01, 0.99);
  range("k", 0, 500);
  range("frequency_penalty", 0, 1);
  range("presence_penalty", 0, 1);
  if (body.max_tokens !== undefined && (!Number.isInteger(body.max_tokens) || body.max_tokens < 1)) fail("max_tokens must be a positive integer");
  if (body.stream !== undefined && typeof body.stream !== "boolean") fail("stream must be a boolean");
}

/** key: the one API key this Cohere accepts. */
export async function startFakeCohere({ key } = {}) {
  const fake = await startFakeServer({
    name: "fake Cohere",
    scenarios: SCENARIOS,
    scenarioOf: (rec) => (SCENARIOS.has(rec.body?.model) ? rec.body.model : "ok"),
    handle,
  });

  async function handle(req, res, rec) {
    if (rec.path !== "/v2/chat") return sendError(res, 404, `Not Found: ${rec.method} ${rec.path}`);
    if (rec.method !== "POST") return sendError(res, 405, "Method Not Allowed");
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
    if (!auth) return sendError(res, 401, "no api key supplied");
    if (key !== undefined && auth[1] !== key) return sendError(res, 401, "invalid api token");
    if (rec.body === undefined || rec.body === null) return sendError(res, 400, "invalid request: body is not valid JSON");
    try {
      validateChatBody(rec.body);
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      rec.invalid = e.message;
      return sendError(res, 400, e.message);
    }
    switch (rec.scenario) {
      case "err-400":
        return sendError(res, 400, "invalid request: err-400 was asked for by the test");
      case "err-401":
        return sendError(res, 401, "invalid api token");
      case "err-429":
        return sendJson(res, 429, { ...ERROR_RATE_LIMIT, id: newId() });
      case "err-500":
        return sendError(res, 500, "internal server error, this has been reported to our developers");
    }
    const headers = { "x-api-warning": "fake", "num_tokens": String(USAGE.tokens.input_tokens + USAGE.tokens.output_tokens) };
    if (rec.body.stream === true) return streamReply(res, rec.scenario, headers);
    return sendJson(res, 200, wholeReply(rec.scenario), headers);
  }

  return { ...fake, baseUrl: `${fake.origin}/v2` };
}

function wholeReply(scenario) {
  if (scenario === "tools") {
    const tool_calls = TOOL_CALLS.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } }));
    return { ...REPLY_TOOL_CALL, id: newId(), message: { ...REPLY_TOOL_CALL.message, tool_plan: TOOL_PLAN, tool_calls }, usage: structuredClone(USAGE) };
  }
  return { ...structuredClone(REPLY_TEXT), id: newId() };
}

const sseEvent = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/** A recorded stream, as recorded but for message-start's id and message-end's usage. */
function streamReply(res, scenario, headers) {
  startSse(res, headers);
  for (const e of scenario === "tools" ? STREAM_TOOL_CALL : STREAM_TEXT) {
    if (e.event === "message-start") res.write(sseEvent("message-start", { ...e.data, id: newId() }));
    else if (e.event === "message-end") res.write(sseEvent("message-end", { delta: { ...e.data.delta, usage: structuredClone(USAGE) } }));
    else if (e.event.endsWith("-delta")) writeSplit(res, e.raw);
    else res.write(e.raw);
  }
  res.end();
}
