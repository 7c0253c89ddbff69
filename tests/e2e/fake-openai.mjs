// A fake OpenAI upstream for the end-to-end tests: a node `http` server on 127.0.0.1 (port 0)
// that speaks OpenAI's wire format and records every request it gets.
//
//   const fake = await startFakeOpenAI();
//   fake.baseUrl          // "http://127.0.0.1:PORT/v1" — use as a channel's base_url
//   fake.requests         // [{ method, path, headers, rawBody, body }] in arrival order
//   fake.next("err-500")  // queue a scenario for the next request (FIFO, one per request)
//   fake.release()        // let every `slow-stream` that is waiting go on
//   await fake.waitForRequest(pred, ms)   // resolves with the first recorded request matching pred
//   await fake.close()    // destroys open sockets (hanging requests included) and stops the server
//
// Routes: POST /v1/chat/completions (non-stream and SSE), POST /v1/completions (non-stream and
// SSE), POST /v1/embeddings (float or base64 `encoding_format`). Anything else: 404 in OpenAI's
// error shape. A request without `Authorization: Bearer <non-empty>` gets OpenAI's 401
// `missing_api_key`-style error.
//
// Scenario of a request: the head of the `next()` queue if any, else the request's `model`
// (which the relay has rewritten to the channel's upstream model), else "ok".
//   ok           a normal answer (any model name not listed below)
//   err-400      400 invalid_request_error, param "messages", code null, message mentions "err-400"
//   err-400-key  400 invalid_request_error whose message quotes the Authorization key in full
//                (a careless upstream): the relay must scrub it
//   err-401      401 tests/fixtures/openai/error_invalid_api_key_401.json ("Incorrect API key
//                provided: <masked key>. …"), with the request's key masked like OpenAI does
//                (first 8 chars, asterisks, last 4)
//   err-429      429 tests/fixtures/openai/error_rate_limit_exceeded_429.json with
//                `retry-after: 7` and x-ratelimit-* headers
//   err-500      500 server_error
//   hang         never answers (the socket stays open until the client or close() ends it)
//   slow-stream  (stream only) sends the role chunk and the first content chunk, then waits until
//                the test calls fake.release(), then sends the rest. Non-stream: waits, then answers.
//   drip-stream  (chat stream only) sends the role chunk and the first content chunk, then one more
//                content chunk (" drip") per fake.release(), and never ends (until the socket
//                closes): for "the client went away" tests, where only a write can tell the relay.
// Token counts are fixed so tests can check what the relay recorded:
//   chat non-stream: prompt 13, completion 7, total 20
//   chat stream:     prompt 17, completion = number of content chunks (CHAT_STREAM_PIECES.length)
//   completions:     prompt 5, completion 3;  embeddings: prompt = total = 4 per input
// The answers are this fake's own, not reply_text.json / stream_text_usage.sse: tests look for
// "fake" in the text, and work prices and budgets out of these counts.
// The usage chunk of a stream (`"choices":[]`) is sent only when the request had
// `stream_options.include_usage: true`; then every other chunk carries `"usage":null`, as
// OpenAI documents. Otherwise chunks have no `usage` field at all.

import http from "node:http";
import { EventEmitter } from "node:events";
import { fixtureJson } from "./fake-common.mjs";

const ERROR_INVALID_API_KEY = fixtureJson("openai/error_invalid_api_key_401.json");
const ERROR_RATE_LIMIT = fixtureJson("openai/error_rate_limit_exceeded_429.json");

export const CHAT_TEXT = "Hello from the fake upstream.";
export const CHAT_USAGE = { prompt_tokens: 13, completion_tokens: 7, total_tokens: 20 };
export const CHAT_STREAM_PIECES = ["Hello", " from", " the", " fake", " stream", "."];
export const CHAT_STREAM_USAGE = {
  prompt_tokens: 17,
  completion_tokens: CHAT_STREAM_PIECES.length,
  total_tokens: 17 + CHAT_STREAM_PIECES.length,
};
export const COMPLETION_USAGE = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
export const EMBEDDING_DIM = 8;
export const RETRY_AFTER = "7";

const SCENARIOS = new Set(["ok", "err-400", "err-400-key", "err-401", "err-429", "err-500", "hang", "slow-stream", "drip-stream"]);

/** OpenAI's way of showing a key in "Incorrect API key provided: …". */
export function maskKey(key) {
  if (key.length <= 12) return "*".repeat(key.length);
  return `${key.slice(0, 8)}${"*".repeat(Math.max(4, key.length - 12))}${key.slice(-4)}`;
}

function withDetails(u) {
  return {
    ...u,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

let idCounter = 0;
const nextId = (p) => `${p}-fake${Date.now().toString(36)}${(idCounter++).toString(36)}`;
const now = () => Math.floor(Date.now() / 1000);

function sendJson(res, status, obj, headers = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "x-request-id": `req_fake_${idCounter++}`,
    "openai-processing-ms": "12",
    ...headers,
  });
  res.end(body);
}

function sendError(res, status, message, type, param = null, code = null, headers = {}) {
  sendJson(res, status, { error: { message, type, param, code } }, headers);
}

function bearer(req) {
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
  return m ? m[1].trim() : "";
}

export async function startFakeOpenAI() {
  const events = new EventEmitter();
  const requests = [];
  const queue = [];
  const pending = new Set(); // resolvers of hanging handlers, run on close()
  let gate = deferred();
  let closed = false;

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const rawBody = Buffer.concat(chunks).toString("utf8");
      let body = null;
      try {
        body = rawBody ? JSON.parse(rawBody) : null;
      } catch {
        body = undefined; // not JSON
      }
      const path = new URL(req.url, "http://x").pathname;
      const rec = { method: req.method, path, url: req.url, headers: { ...req.headers }, rawBody, body };
      // Resolves when the connection of this request closes (e.g. the relay aborted it).
      rec.closed = new Promise((r) => res.on("close", r));
      requests.push(rec);
      events.emit("request", rec);
      handle(req, res, rec).catch((err) => {
        if (!res.headersSent) sendError(res, 500, `fake upstream crashed: ${err.message}`, "server_error");
        else res.destroy();
      });
    });
  });
  server.keepAliveTimeout = 30_000;

  async function handle(req, res, rec) {
    const { method, path, body } = rec;
    const routes = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];
    if (!routes.includes(path)) {
      return sendError(res, 404, `Invalid URL (${method} ${path})`, "invalid_request_error");
    }
    if (method !== "POST") {
      return sendError(res, 405, `Invalid method for URL (${method} ${path})`, "invalid_request_error");
    }
    const key = bearer(req);
    if (!key) {
      return sendError(
        res,
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        "invalid_request_error",
      );
    }
    if (body === undefined || body === null || typeof body !== "object") {
      return sendError(
        res,
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
        "invalid_request_error",
      );
    }
    const queued = queue.shift();
    const scenario = queued ?? (SCENARIOS.has(body.model) ? body.model : "ok");
    rec.scenario = scenario;

    switch (scenario) {
      case "err-400":
        return sendError(res, 400, "Invalid 'messages': err-400 was asked for by the test.", "invalid_request_error", "messages", null);
      case "err-400-key":
        return sendError(res, 400, `Invalid request made with key ${key}: err-400-key.`, "invalid_request_error", null, null);
      case "err-401": {
        const message = ERROR_INVALID_API_KEY.error.message.replace(/(?<=provided: )\S+(?=\. )/, maskKey(key));
        return sendJson(res, 401, { error: { ...ERROR_INVALID_API_KEY.error, message } });
      }
      case "err-429":
        return sendJson(res, 429, ERROR_RATE_LIMIT, {
          "retry-after": RETRY_AFTER,
          "x-ratelimit-limit-requests": "3",
          "x-ratelimit-remaining-requests": "0",
          "x-ratelimit-reset-requests": "7s",
        });
      case "err-500":
        return sendError(
          res,
          500,
          "The server had an error while processing your request. Sorry about that!",
          "server_error",
        );
      case "hang":
        return new Promise((resolve) => {
          pending.add(resolve);
          res.on("close", () => {
            pending.delete(resolve);
            resolve();
          });
        });
    }

    const slow = scenario === "slow-stream" || scenario === "drip-stream";
    if (path === "/v1/chat/completions") return chat(res, body, slow, scenario === "drip-stream");
    if (path === "/v1/completions") return completions(res, body, slow);
    return embeddings(res, body, slow);
  }

  // Waits for release() (or for close()/the client going away). Returns false when the
  // response cannot be continued.
  async function waitGate(res, g) {
    let onClose;
    const gone = new Promise((r) => {
      onClose = () => r(false);
      res.on("close", onClose);
      pending.add(onClose);
    });
    const ok = await Promise.race([g.promise.then(() => true), gone]);
    res.off("close", onClose);
    pending.delete(onClose);
    return ok && !res.destroyed;
  }

  async function chat(res, body, slow, drip = false) {
    const id = nextId("chatcmpl");
    const created = now();
    const model = body.model;
    if (!body.stream) {
      if (slow && !(await waitGate(res, gate))) return;
      return sendJson(res, 200, {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: CHAT_TEXT, refusal: null, annotations: [] },
            logprobs: null,
            finish_reason: "stop",
          },
        ],
        usage: withDetails(CHAT_USAGE),
        service_tier: "default",
        system_fingerprint: "fp_fake0001",
      });
    }
    const includeUsage = body.stream_options?.include_usage === true;
    const base = { id, object: "chat.completion.chunk", created, model, service_tier: "default", system_fingerprint: "fp_fake0001" };
    const chunk = (choices, extra = {}) =>
      `data: ${JSON.stringify({ ...base, choices, ...(includeUsage ? { usage: null } : {}), ...extra })}\n\n`;
    const delta = (d, finish = null) => [{ index: 0, delta: d, logprobs: null, finish_reason: finish }];

    startSse(res);
    const myGate = gate; // captured before the first chunk goes out: release() opens this one
    res.write(chunk(delta({ role: "assistant", content: "", refusal: null })));
    res.write(chunk(delta({ content: CHAT_STREAM_PIECES[0] })));
    if (drip) {
      for (let g = myGate; !res.destroyed; ) {
        if (!(await waitGate(res, g))) return;
        g = gate; // release() has replaced it: the next drip waits for the next release()
        if (!res.destroyed) res.write(chunk(delta({ content: " drip" })));
      }
      return;
    }
    if (slow && !(await waitGate(res, myGate))) return;
    for (const piece of CHAT_STREAM_PIECES.slice(1)) res.write(chunk(delta({ content: piece })));
    res.write(chunk(delta({}, "stop")));
    if (includeUsage) res.write(chunk([], { usage: withDetails(CHAT_STREAM_USAGE) }));
    res.end("data: [DONE]\n\n");
  }

  async function completions(res, body, slow) {
    const id = nextId("cmpl");
    const created = now();
    const model = body.model;
    if (!body.stream) {
      if (slow && !(await waitGate(res, gate))) return;
      return sendJson(res, 200, {
        id,
        object: "text_completion",
        created,
        model,
        system_fingerprint: "fp_fake0001",
        choices: [{ text: " fake completion", index: 0, logprobs: null, finish_reason: "stop" }],
        usage: withDetails(COMPLETION_USAGE),
      });
    }
    const includeUsage = body.stream_options?.include_usage === true;
    const base = { id, object: "text_completion", created, model, system_fingerprint: "fp_fake0001" };
    const chunk = (choices, extra = {}) =>
      `data: ${JSON.stringify({ ...base, choices, ...(includeUsage ? { usage: null } : {}), ...extra })}\n\n`;
    startSse(res);
    const myGate = gate;
    res.write(chunk([{ text: " fake", index: 0, logprobs: null, finish_reason: null }]));
    if (slow && !(await waitGate(res, myGate))) return;
    res.write(chunk([{ text: " completion", index: 0, logprobs: null, finish_reason: null }]));
    res.write(chunk([{ text: "", index: 0, logprobs: null, finish_reason: "stop" }]));
    if (includeUsage) res.write(chunk([], { usage: COMPLETION_USAGE }));
    res.end("data: [DONE]\n\n");
  }

  async function embeddings(res, body, slow) {
    if (slow && !(await waitGate(res, gate))) return;
    const inputs = Array.isArray(body.input) ? body.input : [body.input];
    const data = inputs.map((_, index) => {
      const vec = Array.from({ length: EMBEDDING_DIM }, (_, i) => (index + 1) * 0.125 - i * 0.0625);
      const embedding =
        body.encoding_format === "base64" ? Buffer.from(new Float32Array(vec).buffer).toString("base64") : vec;
      return { object: "embedding", index, embedding };
    });
    const n = 4 * inputs.length;
    sendJson(res, 200, { object: "list", data, model: body.model, usage: { prompt_tokens: n, total_tokens: n } });
  }

  function startSse(res) {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-request-id": `req_fake_${idCounter++}`,
    });
    res.flushHeaders();
  }

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = server.address().port;

  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    /** Queue scenarios for the next requests, one per request. */
    next(...scenarios) {
      for (const s of scenarios) {
        if (!SCENARIOS.has(s)) throw new Error(`unknown scenario ${s}`);
        queue.push(s);
      }
    },
    /** Lets every slow-stream currently waiting go on; later ones wait for the next release(). */
    release() {
      const g = gate;
      gate = deferred();
      g.resolve();
    },
    /** Requests recorded so far that match pred. */
    find(pred) {
      return requests.filter(pred);
    },
    /** Resolves with the first request (already recorded or future) matching pred; rejects after ms. */
    waitForRequest(pred, ms = 10_000) {
      const found = requests.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          events.off("request", on);
          reject(new Error(`fake upstream: no matching request within ${ms} ms`));
        }, ms);
        const on = (rec) => {
          if (!pred(rec)) return;
          clearTimeout(timer);
          events.off("request", on);
          resolve(rec);
        };
        events.on("request", on);
      });
    },
    reset() {
      requests.length = 0;
      queue.length = 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      gate.resolve();
      for (const r of pending) r(false);
      pending.clear();
      const done = new Promise((r) => server.close(() => r()));
      server.closeAllConnections();
      await done;
    },
  };
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

/** A port on 127.0.0.1 that nothing listens on (bound, then closed). */
export async function closedPort() {
  const s = http.createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}
