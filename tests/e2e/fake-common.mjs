// What every fake upstream of the translation tests shares (fake-anthropic.mjs, fake-gemini.mjs,
// fake-openai-tools.mjs): a node http server on 127.0.0.1 (port 0) that records each request
// (method, path, query, headers, raw and parsed body), picks a scenario per request (queued with
// next(), else derived from the request, e.g. from its model), and lets tests wait for a request.
// Each record also keeps what the fake sent back (`rec.sent`, the exact response bytes), so a
// test can check that a pass-through relayed them unchanged. The fakes answer with the recorded
// payloads of tests/fixtures/<provider>/ where one fits (fixture(), fixtureJson(), fixtureSse()),
// so the relay's host tests and its end-to-end tests read the same wire bytes.
//
//   const fake = await startFakeServer({ scenarios, scenarioOf, handle });
//   fake.next("err-529");                       // the next request gets this scenario
//   const up = await fake.waitForRequest((r) => r.rawBody.includes(marker));
//   await fake.close();

import http from "node:http";
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";

/**
 * scenarios: Set of valid scenario names; scenarioOf(rec): the scenario of a request when none
 * is queued; handle(req, res, rec): answers it (rec.scenario is set). Returns the fake's handle.
 */
export async function startFakeServer({ scenarios, scenarioOf, handle, name = "fake upstream" }) {
  const events = new EventEmitter();
  const requests = [];
  const queue = [];
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
      const url = new URL(req.url, "http://x");
      const rec = {
        method: req.method,
        path: url.pathname,
        url: req.url,
        query: Object.fromEntries(url.searchParams),
        headers: { ...req.headers },
        rawBody,
        body,
        sent: [],
      };
      recordWrites(res, rec);
      const queued = queue.shift();
      rec.scenario = queued ?? scenarioOf(rec);
      requests.push(rec);
      events.emit("request", rec);
      Promise.resolve()
        .then(() => handle(req, res, rec))
        .catch((err) => {
          if (!res.headersSent) {
            res.writeHead(500, { "content-type": "text/plain" });
            res.end(`${name} crashed: ${err.stack ?? err}`);
          } else res.destroy();
        });
    });
  });
  server.keepAliveTimeout = 30_000;

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = server.address().port;

  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    requests,
    /** Queue scenarios for the next requests, one per request. */
    next(...names) {
      for (const s of names) {
        if (!scenarios.has(s)) throw new Error(`${name}: unknown scenario ${s}`);
        queue.push(s);
      }
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
          reject(new Error(`${name}: no matching request within ${ms} ms`));
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
      const done = new Promise((r) => server.close(() => r()));
      server.closeAllConnections();
      await done;
    },
  };
}

/** Keeps a copy of every body byte written to res in rec.sent (Buffers); rec.sentText() joins them. */
function recordWrites(res, rec) {
  const write = res.write.bind(res);
  const end = res.end.bind(res);
  const keep = (chunk, encoding) => {
    if (chunk === undefined || chunk === null || typeof chunk === "function") return;
    rec.sent.push(Buffer.isBuffer(chunk) ? Buffer.from(chunk) : Buffer.from(chunk, typeof encoding === "string" ? encoding : "utf8"));
  };
  res.write = (chunk, encoding, cb) => {
    keep(chunk, encoding);
    return write(chunk, encoding, cb);
  };
  res.end = (chunk, encoding, cb) => {
    keep(chunk, encoding);
    return end(chunk, encoding, cb);
  };
  rec.sentBytes = () => Buffer.concat(rec.sent);
  rec.sentText = () => Buffer.concat(rec.sent).toString("utf8");
}

export function sendJson(res, status, obj, headers = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

export function startSse(res, headers = {}) {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    connection: "keep-alive",
    ...headers,
  });
  res.flushHeaders();
}

/**
 * Writes text as two network writes split at the middle byte (possibly inside a multi-byte
 * UTF-8 character or an SSE line): a relay must not care where the network cuts its input.
 */
export function writeSplit(res, text) {
  const buf = Buffer.from(text, "utf8");
  if (buf.length < 2) return res.write(buf);
  const mid = Math.floor(buf.length / 2);
  res.write(buf.subarray(0, mid));
  return res.write(buf.subarray(mid));
}

let idCounter = 0;
/** A unique-enough id with a prefix, e.g. fakeId("msg_"). */
export function fakeId(prefix) {
  return `${prefix}fake${Date.now().toString(36)}${(idCounter++).toString(36).padStart(4, "0")}`;
}

/** The bytes of tests/fixtures/<path>. Fakes call this at module load, once per fixture. */
export function fixture(path) {
  return readFileSync(new URL(`../fixtures/${path}`, import.meta.url));
}

export const fixtureJson = (path) => JSON.parse(fixture(path).toString("utf8"));

/**
 * The events of an SSE fixture, in order: { event, data, raw } — data parsed as JSON (or the
 * text, e.g. "[DONE]"), raw the event exactly as recorded with its closing blank line, so a fake
 * can send it unchanged or re-encode only the events it must alter.
 */
export function fixtureSse(path) {
  const text = fixture(path).toString("utf8");
  const eol = text.includes("\r\n") ? "\r\n" : "\n";
  return text
    .split(/\r?\n\r?\n/)
    .filter((block) => block.trim())
    .map((block) => {
      let event;
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      const joined = data.join("\n");
      let parsed;
      try {
        parsed = JSON.parse(joined);
      } catch {
        parsed = joined;
      }
      return { event, data: parsed, raw: `${block}${eol}${eol}` };
    });
}
