// A fast fake OpenAI upstream for the benchmark, run as its own process (bench/lib.mjs starts it
// pinned to the load generator's core): fixed small replies, keep-alive. It prints
// {"port": N} on stdout once listening, and exits when its stdin closes (its parent is gone) or
// on SIGTERM.
//
//   /v1/chat/completions          a small completion, or a 12-event stream when "stream":true
//   /flaky/v1/...                 every other request fails with a 500 (the resilience rows)
//   /long/<bytes>/v1/...          a stream of ~<bytes> bytes of small events (the memory row),
//                                 written as fast as the reader takes it (bench/longstream.mjs)
import http from "node:http";
import { EVENT, FIRST, eventCount, tail } from "./longstream.mjs";

const completion = JSON.stringify({
  id: "chatcmpl-bench",
  object: "chat.completion",
  created: 1741570283,
  model: "gpt-bench",
  choices: [{ index: 0, message: { role: "assistant", content: "Hello! How can I help you today?", refusal: null }, logprobs: null, finish_reason: "stop" }],
  usage: { prompt_tokens: 9, completion_tokens: 9, total_tokens: 18, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } },
  system_fingerprint: "fp_bench",
});
const pieces = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"];
function streamBody(includeUsage) {
  const base = { id: "chatcmpl-bench", object: "chat.completion.chunk", created: 1741570283, model: "gpt-bench", system_fingerprint: "fp_bench" };
  const u = includeUsage ? { usage: null } : {};
  const ev = (o) => `data: ${JSON.stringify(o)}\n\n`;
  let s = ev({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }], ...u });
  for (const p of pieces) s += ev({ ...base, choices: [{ index: 0, delta: { content: p }, logprobs: null, finish_reason: null }], ...u });
  s += ev({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }], ...u });
  if (includeUsage) s += ev({ ...base, choices: [], usage: { prompt_tokens: 9, completion_tokens: 9, total_tokens: 18 } });
  return s + "data: [DONE]\n\n";
}
const streamWith = streamBody(true);
const streamWithout = streamBody(false);

// Under /flaky/, every other request fails with a 500 (the resilience rows of the bench).
const failure = JSON.stringify({ error: { message: "The server had an error while processing your request.", type: "server_error", param: null, code: null } });
let flakyCount = 0;

/** Writes `count` events in batches, waiting for 'drain' whenever the socket is full. */
function longStream(res, count) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const BATCH = 32; // 32 small events (~6 KB) per write: small chunks, few syscalls
  const batch = EVENT.repeat(BATCH);
  let sent = 0;
  res.write(FIRST);
  const pump = () => {
    while (sent < count) {
      const n = Math.min(BATCH, count - sent);
      sent += n;
      if (!res.write(n === BATCH ? batch : EVENT.repeat(n))) {
        res.once("drain", pump);
        return;
      }
    }
    res.end(tail(count));
  };
  res.on("close", () => (sent = count)); // the reader went away: stop
  pump();
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString();
    if (req.url.startsWith("/flaky/") && flakyCount++ % 2 === 0) {
      res.writeHead(500, { "content-type": "application/json", "content-length": Buffer.byteLength(failure) });
      res.end(failure);
      return;
    }
    const long = /^\/long\/(\d+)\//.exec(req.url);
    if (long) return longStream(res, eventCount(Number(long[1])));
    // cheap checks instead of JSON.parse: this server must not be the bottleneck
    if (raw.includes('"stream":true')) {
      const body = raw.includes('"include_usage":true') ? streamWith : streamWithout;
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      // three writes, like an upstream producing tokens over time
      const third = Math.floor(body.length / 3);
      res.write(body.slice(0, third));
      res.write(body.slice(third, 2 * third));
      res.end(body.slice(2 * third));
    } else {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(completion) });
      res.end(completion);
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n"));

const quit = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.stdin.on("end", quit);
process.stdin.on("error", quit);
process.stdin.resume();
process.on("SIGTERM", quit);
process.on("SIGINT", quit);
