// The long SSE stream of the bench's memory row, shared by the fake upstream (which writes it)
// and bench/bench.mjs (which checks that it arrived whole): `count` small chat.completion.chunk
// events, each with the same `PIECE` of content, then a usage event and `data: [DONE]`.

export const PIECE = "0123456789abcdef";

const base = { id: "chatcmpl-long", object: "chat.completion.chunk", created: 1741570283, model: "gpt-bench", system_fingerprint: "fp_bench" };

export const EVENT = `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content: PIECE }, logprobs: null, finish_reason: null }] })}\n\n`;
export const FIRST = `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] })}\n\n`;

/** How many content events make about `bytes` bytes of stream. */
export function eventCount(bytes) {
  return Math.max(1, Math.ceil(bytes / Buffer.byteLength(EVENT)));
}

/** The tail: finish_reason, usage, [DONE]. */
export function tail(count) {
  return (
    `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }] })}\n\n` +
    `data: ${JSON.stringify({ ...base, choices: [], usage: { prompt_tokens: 9, completion_tokens: count, total_tokens: count + 9 } })}\n\n` +
    "data: [DONE]\n\n"
  );
}
