// The harness's SSE parser against OpenAI stream captures (LF and CRLF framing, comments) and the
// edge cases of the SSE spec, fed whole and byte by byte. Needs no Worker build.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SSEParser, parseSSE, sse, sseJson } from "./harness.mjs";

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/openai");
const fixture = (name) => fs.readFileSync(path.join(FIXTURES, name), "utf8");

function pieces(text, size) {
  const out = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

function feed(text, size) {
  const p = new SSEParser();
  return pieces(text, size).flatMap((c) => p.push(c));
}

test("OpenAI capture (LF): every chunk, usage last, [DONE] at the end", () => {
  const events = parseSSE(fixture("stream_text_usage.sse"));
  const json = sseJson(events);
  assert.equal(json.at(-1), "[DONE]");
  const chunks = json.slice(0, -1);
  assert.ok(chunks.every((c) => c.object === "chat.completion.chunk"));
  assert.deepEqual(chunks.at(-1).choices, []);
  assert.equal(chunks.at(-1).usage.total_tokens, 29);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  assert.equal(text, "Hello! How can I help you today?");
});

test("CRLF framing and comment lines give the same events as LF", () => {
  const lf = parseSSE(fixture("stream_text_usage.sse")).map((e) => e.data);
  const crlf = parseSSE(fixture("stream_crlf_comments.sse"));
  assert.ok(crlf.length > 3);
  assert.equal(crlf.at(-1).data, "[DONE]");
  assert.ok(crlf.some((e) => e.comments.includes("keep-alive")), "a comment line is seen, not taken for data");
  for (const e of crlf) if (e.data !== "[DONE]") JSON.parse(e.data);
  // the CRLF capture is the LF one reframed (plus comments): same data, where both have it
  const lfText = sseJson(parseSSE(fixture("stream_text_usage.sse"))).slice(0, -1).map((c) => c.choices[0]?.delta?.content ?? "").join("");
  const crText = sseJson(crlf).slice(0, -1).map((c) => c.choices?.[0]?.delta?.content ?? "").join("");
  assert.equal(crText, lfText);
  assert.ok(lf.length > 0);
});

test("split anywhere, even between CR and LF, the events are the same", () => {
  for (const name of ["stream_text_usage.sse", "stream_crlf_comments.sse", "stream_tool_calls.sse"]) {
    const text = fixture(name);
    const whole = parseSSE(text).map((e) => e.data);
    for (const size of [1, 2, 3, 7, 64]) assert.deepEqual(feed(text, size).map((e) => e.data), whole, `${name} in ${size}-char pieces`);
  }
});

test("spec edge cases", () => {
  const ev = parseSSE("data:a\ndata: b\n\n: c\nevent: x\ndata\nid: 7\nretry: 10\n\ndata: tail-without-blank-line");
  assert.deepEqual(ev.map((e) => [e.event, e.data]), [["message", "a\nb"], ["x", ""]]);
  assert.equal(ev[1].id, "7");
  assert.equal(ev[1].retry, 10);
  assert.deepEqual(parseSSE("data: 1\r\rdata: 2\r\n\r\n").map((e) => e.data), ["1", "2"]);
  assert.deepEqual(parseSSE("\n\n: only a comment\n\n"), []);
});

test("sse() reads a ReadableStream of bytes", async () => {
  const bytes = new TextEncoder().encode("data: {\"x\":\"é\"}\r\n\r\ndata: [DONE]\r\n\r\n");
  const stream = new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += 3) c.enqueue(bytes.slice(i, i + 3)); // splits the é
      c.close();
    },
  });
  assert.deepEqual(sseJson(await sse(stream)), [{ x: "é" }, "[DONE]"]);
});
