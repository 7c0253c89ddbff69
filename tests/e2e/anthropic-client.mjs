// Helpers for the translation tests: an Anthropic-format client (raw fetch, the way Anthropic's
// SDK calls: x-api-key + anthropic-version), an assembler that rebuilds a Message from the SSE
// events of a stream while checking the protocol's invariants (as the SDK's accumulator relies
// on them), the same for OpenAI chat chunks, and the shape assertion of Anthropic errors.

import assert from "node:assert/strict";
import { sse } from "./harness.mjs";

export const CLIENT_ANTHROPIC_VERSION = "2023-06-01";

/** fetch() to an Anthropic route of the relay; body objects are sent as JSON. */
export function anthropicFetch(relay, path, { key, body, headers = {}, version = CLIENT_ANTHROPIC_VERSION } = {}) {
  const h = { "content-type": "application/json", ...headers };
  if (key !== undefined && key !== null) h["x-api-key"] = key;
  if (version) h["anthropic-version"] = version;
  const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  return fetch(relay.url + path, { method: "POST", headers: h, body: payload });
}

/** anthropicFetch() + the whole body: { status, headers, text, json }. */
export async function anthropicJson(relay, path, opts) {
  const res = await anthropicFetch(relay, path, opts);
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** Asserts Anthropic's error shape {"type":"error","error":{"type","message"}} and the given status/type. */
export function assertAnthropicError(r, { status, type } = {}) {
  const where = `(${r.status} ${r.text ?? ""})`;
  if (status !== undefined) assert.equal(r.status, status, `status ${where}`);
  assert.match(r.headers.get("content-type") ?? "", /application\/json/, `content-type ${where}`);
  assert.ok(r.json && typeof r.json === "object", `JSON body ${where}`);
  assert.equal(r.json.type, "error", `top-level type "error" ${where}`);
  const e = r.json.error;
  assert.ok(e && typeof e === "object", `error object ${where}`);
  assert.equal(typeof e.type, "string", `error.type string ${where}`);
  assert.equal(typeof e.message, "string", `error.message string ${where}`);
  assert.ok(e.message.length > 0, `error.message non-empty ${where}`);
  assert.ok(!("code" in r.json), `no OpenAI-style top-level fields ${where}`);
  if (type !== undefined) assert.equal(e.type, type, `error.type ${where}`);
  return e;
}

/** A valid Anthropic Message (non-stream reply) shape. */
export function assertAnthropicMessage(m, where = "message") {
  const w = `${where}: ${JSON.stringify(m)}`;
  assert.equal(m.type, "message", w);
  assert.equal(m.role, "assistant", w);
  assert.ok(typeof m.id === "string" && m.id.length > 0, `id ${w}`); // the msg_ prefix is asserted apart
  assert.equal(typeof m.model, "string", w);
  assert.ok(Array.isArray(m.content), w);
  assert.ok(["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"].includes(m.stop_reason), `stop_reason ${w}`);
  assert.ok("stop_sequence" in m, `stop_sequence present ${w}`);
  for (const k of ["input_tokens", "output_tokens"]) assert.ok(Number.isInteger(m.usage?.[k]) && m.usage[k] >= 0, `usage.${k} ${w}`);
  for (const b of m.content) {
    if (b.type === "text") assert.equal(typeof b.text, "string", w);
    else if (b.type === "tool_use") {
      assert.match(b.id, /^[a-zA-Z0-9_-]+$/, w);
      assert.equal(typeof b.name, "string", w);
      assert.ok(b.input && typeof b.input === "object" && !Array.isArray(b.input), `tool_use input object ${w}`);
    } else if (b.type === "thinking") {
      assert.equal(typeof b.thinking, "string", w);
      assert.equal(typeof b.signature, "string", w);
    } else assert.fail(`unexpected block type ${b.type} ${w}`);
  }
}

/**
 * Reads an Anthropic SSE stream (Response, stream or text) and rebuilds the Message, checking:
 * every event's SSE name equals its data's type; message_start first, message_stop last (or an
 * `error` event ends it); blocks start at index 0 and count up, one open at a time, each
 * started before its deltas and stopped once; delta kinds match their block; message_delta
 * events (one or more) only after every block stopped, carrying the stop_reason. Returns
 * { message, events, names, error, deltas }.
 */
export async function anthropicStream(body) {
  const raw = await sse(body);
  const events = raw.map((e) => {
    const data = JSON.parse(e.data);
    assert.equal(e.event, data.type, `SSE event name ${e.event} matches data.type ${data.type}`);
    return data;
  });
  const names = events.map((e) => e.type);
  const seq = names.filter((n) => n !== "ping");
  assert.ok(seq.length > 0, "the stream has events");
  assert.equal(seq[0], "message_start", `first event is message_start: ${names}`);
  const errorAt = seq.indexOf("error");
  if (errorAt >= 0) assert.equal(errorAt, seq.length - 1, `an error event ends the stream: ${names}`);
  else assert.equal(seq.at(-1), "message_stop", `last event is message_stop: ${names}`);
  assert.equal(seq.filter((n) => n === "message_start").length, 1, `one message_start: ${names}`);

  let message;
  let open = null; // index of the open block
  const stopped = new Set();
  let deltas = 0;
  let error;
  for (const e of events) {
    switch (e.type) {
      case "message_start":
        message = structuredClone(e.message);
        assert.equal(message.type, "message");
        assert.equal(message.role, "assistant");
        assert.deepEqual(message.content, [], "message_start content is empty");
        message.usage ??= {};
        break;
      case "content_block_start": {
        assert.equal(open, null, `block ${e.index} starts while ${open} is open: ${names}`);
        assert.equal(e.index, message.content.length, `blocks are numbered from 0 in order: ${names}`);
        const b = structuredClone(e.content_block);
        if (b.type === "tool_use") {
          assert.deepEqual(b.input, {}, "a tool_use block starts with input {}");
          b._json = "";
        }
        message.content.push(b);
        open = e.index;
        break;
      }
      case "content_block_delta": {
        assert.equal(e.index, open, `delta for block ${e.index} while ${open} is open`);
        const b = message.content[e.index];
        const d = e.delta;
        deltas++;
        if (d.type === "text_delta") {
          assert.equal(b.type, "text", "text_delta in a text block");
          b.text += d.text;
        } else if (d.type === "input_json_delta") {
          assert.equal(b.type, "tool_use", "input_json_delta in a tool_use block");
          b._json += d.partial_json;
        } else if (d.type === "thinking_delta") {
          assert.equal(b.type, "thinking", "thinking_delta in a thinking block");
          b.thinking += d.thinking;
        } else if (d.type === "signature_delta") {
          assert.equal(b.type, "thinking", "signature_delta in a thinking block");
          b.signature = (b.signature ?? "") + d.signature;
        } else assert.fail(`unknown delta type ${d.type}`);
        break;
      }
      case "content_block_stop": {
        assert.equal(e.index, open, `stop of block ${e.index} while ${open} is open`);
        assert.ok(!stopped.has(e.index), `block ${e.index} stopped once`);
        stopped.add(e.index);
        const b = message.content[e.index];
        if (b.type === "tool_use") {
          b.input = b._json === "" ? {} : JSON.parse(b._json);
          delete b._json;
        }
        open = null;
        break;
      }
      case "message_delta":
        assert.equal(open, null, "message_delta after every block stopped");
        Object.assign(message, e.delta);
        Object.assign(message.usage, e.usage ?? {});
        break;
      case "message_stop":
      case "ping":
        break;
      case "error":
        error = e.error;
        break;
      default:
        assert.fail(`unknown event type ${e.type}`);
    }
  }
  if (!error) {
    assert.equal(open, null, "no block left open");
    assert.equal(stopped.size, message.content.length, "every block stopped");
    assert.ok(seq.filter((n) => n === "message_delta").length >= 1, `a message_delta: ${names}`);
    assert.equal(typeof message.stop_reason, "string", "a message_delta carried the stop_reason");
  }
  return { message, events, names, error, deltas };
}

/**
 * Reassembles OpenAI chat.completion.chunk objects the way the SDK's accumulator does: content,
 * reasoning, tool calls by index (id/type/name from their first delta, arguments concatenated),
 * the finish reason and the usage chunk. Checks each tool call's first delta carries its id and
 * name, and later ones do not change them.
 */
export function assembleOpenAIChunks(chunks) {
  let content = "";
  let reasoning = "";
  let role;
  let finish = null;
  let usage = null;
  const calls = [];
  const ids = new Set();
  for (const c of chunks) {
    assert.equal(c.object, "chat.completion.chunk", JSON.stringify(c));
    ids.add(c.id);
    if (c.usage) usage = c.usage;
    for (const choice of c.choices ?? []) {
      assert.equal(choice.index, 0);
      const d = choice.delta ?? {};
      if (d.role) role = d.role;
      if (typeof d.content === "string") content += d.content;
      if (typeof d.reasoning_content === "string") reasoning += d.reasoning_content;
      for (const tc of d.tool_calls ?? []) {
        assert.ok(Number.isInteger(tc.index), `tool call delta has an index: ${JSON.stringify(tc)}`);
        let call = calls[tc.index];
        if (!call) {
          assert.ok(tc.id, `the first delta of tool call ${tc.index} has its id: ${JSON.stringify(tc)}`);
          assert.equal(tc.type, "function", `the first delta of tool call ${tc.index} has type function`);
          assert.ok(tc.function?.name, `the first delta of tool call ${tc.index} has its name`);
          call = calls[tc.index] = { id: tc.id, type: "function", name: tc.function.name, arguments: "" };
        } else {
          if (tc.id) assert.equal(tc.id, call.id, `tool call ${tc.index} keeps its id`);
          if (tc.function?.name) assert.equal(tc.function.name, call.name, `tool call ${tc.index} keeps its name`);
        }
        call.arguments += tc.function?.arguments ?? "";
      }
      if (choice.finish_reason) {
        assert.equal(finish, null, "one finish_reason");
        finish = choice.finish_reason;
      }
    }
  }
  assert.equal(ids.size, 1, "every chunk has the same id");
  assert.ok(!calls.includes(undefined), `tool call indices are dense from 0: ${JSON.stringify(calls)}`);
  return { role, content, reasoning, calls, finish, usage };
}
