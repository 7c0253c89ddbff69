// The end-to-end harness: runs the built Worker (build/index.js) in Miniflare with wrangler.toml's
// bindings (D1 `DB`, KV `MODEL_MAP`), all in memory, fresh per
// startRelay() call, with every migrations/*.sql applied. Talk to it over real HTTP at `url`.
//
//   const relay = await startRelay({ vars: { MAX_BODY_BYTES: "1024" } });
//   const { key } = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: ["gpt-test"] });
//   await relay.dispose();
//
// Run the suite with a timeout so nothing can hang: node --test --test-timeout=120000 tests/e2e/

import fs from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

// No telemetry, no download of request.cf data (scripts/env.sh sets the same).
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
process.env.WRANGLER_SEND_METRICS = "false";
process.env.NO_UPDATE_NOTIFIER ??= "1";

// EDGERELAY_ROOT: run against another checkout/build (wrangler.toml, migrations/, build/ there).
export const ROOT = process.env.EDGERELAY_ROOT
  ? path.resolve(process.env.EDGERELAY_ROOT)
  : path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const ADMIN_TOKEN = "test-admin-token";
/** Signs webhook notices (x-relay-signature) in tests. */
export const WEBHOOK_SECRET = "test-webhook-secret";
export const UPSTREAM_KEY = "sk-up-secret-0123456789abcdefSECRET";

const { Miniflare } = await import("miniflare");
const wrangler = await import("wrangler");

/** Splits a migration file into statements (wrangler's own splitter, as `d1 migrations apply`). */
export function splitSql(sql) {
  if (typeof wrangler.unstable_splitSqlQuery === "function") {
    return wrangler.unstable_splitSqlQuery(sql).map((s) => s.trim()).filter(Boolean);
  }
  return splitSqlFallback(sql);
}

// Statement splitter used when wrangler does not export one: honours '…', "…", `…`, […],
// -- line comments, /* block comments */ and BEGIN … END bodies (triggers).
export function splitSqlFallback(sql) {
  const out = [];
  let cur = "";
  let depth = 0; // BEGIN … END nesting
  let word = "";
  const flushWord = () => {
    const w = word.toUpperCase();
    if (w === "BEGIN") depth++;
    else if (w === "END" && depth > 0) depth--;
    word = "";
  };
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i];
    if (c === "-" && sql[i + 1] === "-") {
      flushWord();
      while (i < sql.length && sql[i] !== "\n") i++;
      cur += "\n";
      continue;
    }
    if (c === "/" && sql[i + 1] === "*") {
      flushWord();
      const end = sql.indexOf("*/", i + 2);
      i = end < 0 ? sql.length : end + 1;
      cur += " ";
      continue;
    }
    if (c === "'" || c === '"' || c === "`" || c === "[") {
      flushWord();
      const close = c === "[" ? "]" : c;
      let j = i + 1;
      for (; j < sql.length; j++) {
        if (sql[j] === close) {
          if (close !== "]" && sql[j + 1] === close) j++;
          else break;
        }
      }
      cur += sql.slice(i, j + 1);
      i = j;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) word += c;
    else flushWord();
    if (c === ";" && depth === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = "";
      continue;
    }
    cur += c;
  }
  flushWord();
  if (cur.trim()) out.push(cur.trim());
  return out;
}

export async function applyMigrations(mf) {
  const db = await mf.getD1Database("DB");
  const dir = path.join(ROOT, "migrations");
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith(".sql"))
    .sort();
  for (const f of files) {
    const stmts = splitSql(fs.readFileSync(path.join(dir, f), "utf8"));
    if (stmts.length) await db.batch(stmts.map((s) => db.prepare(s)));
  }
  return db;
}

/** Fails fast (with a readable message) when the Worker has not been built. */
export function assertBuilt() {
  const main = path.join(ROOT, "build/index.js");
  if (!fs.existsSync(main)) {
    throw new Error(`${main} is missing: build the Worker first (bash scripts/build.sh)`);
  }
}

export function miniflareOptions({ vars = {}, extra = {} } = {}) {
  assertBuilt();
  const opts = wrangler.unstable_getMiniflareWorkerOptions(path.join(ROOT, "wrangler.toml"));
  const wo = opts.workerOptions;
  return {
    ...wo,
    name: "edgerelay",
    modules: true,
    scriptPath: opts.main ?? path.join(ROOT, "build/index.js"),
    modulesRoot: path.join(ROOT, "build"),
    modulesRules: [{ type: "ESModule", include: ["**/*.js"] }, ...(wo.modulesRules ?? [])],
    bindings: { ...(wo.bindings ?? {}), ADMIN_TOKEN, LOCAL_DEV: "true", WEBHOOK_SECRET, ...vars },
    host: "127.0.0.1",
    port: 0,
    cf: { country: "US", colo: "SFO", continent: "NA", city: "San Francisco", asn: 13335 },
    // The usage queue delivers batches at once in tests (production waits up to 1 s to fill
    // one): rows appear as soon as the consumer has written them.
    queueConsumers: Object.fromEntries(
      Object.entries(wo.queueConsumers ?? {}).map(([q, c]) => [q, { ...c, maxBatchTimeout: 0 }]),
    ),
    // In-memory storage: no *Persist options → a fresh D1/KV/DO state per instance.
    verbose: false,
    ...extra,
  };
}

/** A TCP port nothing listens on now. */
async function freePort() {
  const net = await import("node:net");
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Races p against a timer; on timeout resolves to `fallback` (never rejects because of time). */
function withTimeout(p, ms, fallback) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((r) => {
      t = setTimeout(() => r(fallback), ms);
      t.unref?.();
    }),
  ]);
}

/** vars: Worker vars/secrets over wrangler.toml's; extra: more Miniflare options (e.g. bench's
 *  unsafeDirectSockets). */
export async function startRelay({ vars = {}, extra = {}, inspect = false } = {}) {
  const inspectorPort = inspect ? await freePort() : undefined;
  const mf = new Miniflare(miniflareOptions({ vars, extra: inspect ? { ...extra, inspectorPort } : extra }));
  let disposed = false;
  let dispose = async () => {
    if (disposed) return;
    disposed = true;
    const r = await withTimeout(
      mf.dispose().then(() => "ok", (e) => e),
      15_000,
      "timeout",
    );
    if (r !== "ok") console.error(`[harness] Miniflare dispose: ${r === "timeout" ? "timed out" : r}`);
  };
  let url;
  try {
    url = (await mf.ready).href.replace(/\/$/, "");
    await applyMigrations(mf);
  } catch (e) {
    await dispose();
    throw e;
  }

  async function admin(method, p, body, { token = ADMIN_TOKEN, headers = {} } = {}) {
    const init = { method, headers: { ...headers } };
    if (token !== null) init.headers.authorization = `Bearer ${token}`;
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    const res = await fetch(url + p, init);
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, json, text };
  }

  /** Like admin() but asserts the status and returns the JSON. */
  async function adminOk(method, p, body, expected = [200, 201, 204]) {
    const r = await admin(method, p, body);
    const ok = Array.isArray(expected) ? expected.includes(r.status) : r.status === expected;
    assert.ok(ok, `admin ${method} ${p} → ${r.status} (expected ${expected}): ${r.text}`);
    return r.json;
  }

  let seq = 0;
  /**
   * Creates through the admin API a tenant, a key, a channel and model-map entries.
   * models: ["a","b"] maps each public name to the same upstream name; {public: upstream} maps
   * explicitly. options: the channel's provider options (region, project, api_version).
   * Returns { tenantId, keyId, key, channelId, tenant, keyObj, channel, models }.
   */
  async function seed({
    upstreamBaseUrl = "",
    provider = "openai",
    models = ["gpt-test"],
    apiKeys,
    channelModels,
    timeoutMs,
    tenantModels = null,
    keyModels = null,
    expiresAt = null,
    name,
    options,
    tenant: tenantSettings = {},
  } = {}) {
    const n = `${name ?? "seed"}-${++seq}`;
    const map = Array.isArray(models) ? Object.fromEntries(models.map((m) => [m, m])) : { ...models };
    const tenant = await adminOk("POST", "/admin/tenants", { name: `tenant-${n}`, models: tenantModels, ...tenantSettings }, [201]);
    const keyObj = await adminOk(
      "POST",
      `/admin/tenants/${tenant.id}/keys`,
      { name: `key-${n}`, models: keyModels, expires_at: expiresAt },
      [201],
    );
    const channelBody = {
      name: `channel-${n}`,
      provider,
      base_url: upstreamBaseUrl,
      api_keys: apiKeys ?? (provider === "mock" ? [] : [UPSTREAM_KEY]),
      models: channelModels ?? [...new Set(Object.values(map))],
    };
    if (timeoutMs !== undefined) channelBody.timeout_ms = timeoutMs;
    if (options !== undefined) channelBody.options = options;
    const channel = await adminOk("POST", "/admin/channels", channelBody, [200, 201]);
    for (const [pub, up] of Object.entries(map)) {
      await adminOk("PUT", `/admin/model-map/${encodeURIComponent(pub)}`, { channel_id: channel.id, upstream_model: up }, [200, 201, 204]);
    }
    return {
      tenantId: tenant.id,
      keyId: keyObj.id,
      key: keyObj.key,
      channelId: channel.id,
      tenant,
      keyObj,
      channel,
      models: Object.keys(map),
    };
  }

  /** A new key for an existing tenant. */
  async function newKey(tenantId, body = {}) {
    const k = await adminOk("POST", `/admin/tenants/${tenantId}/keys`, { name: "extra", models: null, expires_at: null, ...body }, [201]);
    return k;
  }

  /** fetch() against the relay with a relay key (Bearer) and a JSON body. */
  async function call(p, { key, body, method = body === undefined ? "GET" : "POST", headers = {}, signal } = {}) {
    const h = { ...headers };
    if (key) h.authorization = `Bearer ${key}`;
    let payload;
    if (body !== undefined) {
      h["content-type"] ??= "application/json";
      payload = typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
    }
    return fetch(url + p, { method, headers: h, body: payload, signal });
  }

  /** call() + read the whole body; returns { status, headers, text, json }. */
  async function callJson(p, opts) {
    const res = await call(p, opts);
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  }

  let dbPromise;
  const db = () => (dbPromise ??= mf.getD1Database("DB"));

  /** Polls D1 until the usage row of requestId exists (bounded); returns it. */
  async function usageRow(requestId, { timeoutMs = 10_000, onPoll } = {}) {
    const d = await db();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const row = await d.prepare("SELECT * FROM usage WHERE request_id = ?").bind(requestId).first();
      if (row) return row;
      if (Date.now() > deadline) assert.fail(`no usage row for request ${requestId} within ${timeoutMs} ms`);
      onPoll?.();
      await new Promise((r) => setTimeout(r, 25)); // poll interval of a bounded wait, not a sync point
    }
  }

  async function usageRows(where = "1=1", ...params) {
    const d = await db();
    const r = await d.prepare(`SELECT * FROM usage WHERE ${where} ORDER BY created_at`).bind(...params).all();
    return r.results;
  }

  // What the runtime reports about the Worker through its inspector — uncaught exceptions (a
  // request workerd cancelled as hung among them) — which Miniflare does not print.
  const runtimeErrors = [];
  if (inspect) {
    const { default: WebSocket } = await import("ws");
    const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
    const worker = targets.find((t) => t.title.endsWith("core:user:edgerelay"));
    assert.ok(worker, `the relay's inspector target among ${targets.map((t) => t.title)}`);
    const ws = new WebSocket(worker.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.on("message", (m) => {
      const e = JSON.parse(m);
      if (e.method === "Runtime.exceptionThrown") runtimeErrors.push(e.params.exceptionDetails.text ?? JSON.stringify(e.params));
    });
    await new Promise((resolve) => {
      ws.on("message", function enabled(m) {
        if (JSON.parse(m).id === 1) {
          ws.off("message", enabled);
          resolve();
        }
      });
      ws.send(JSON.stringify({ id: 1, method: "Runtime.enable" }));
    });
    const disposeMf = dispose;
    dispose = async () => {
      ws.close();
      await disposeMf();
    };
  }

  return { mf, url, admin, adminOk, seed, newKey, call, callJson, db, usageRow, usageRows, dispose, runtimeErrors };
}

/** An OpenAI SDK client for the relay. */
export async function sdk(relay, key, opts = {}) {
  const { default: OpenAI } = await import("openai");
  return new OpenAI({ baseURL: `${relay.url}/v1`, apiKey: key, maxRetries: 0, timeout: 30_000, ...opts });
}

// ---------------------------------------------------------------------------------------------
// Server-sent events

/**
 * An incremental SSE parser (WHATWG rules): lines end with CRLF, LF or CR (a CR at the end of a
 * chunk waits for a possible LF); lines starting with ":" are comments; "field: value" strips one
 * leading space; data lines join with "\n"; an event is dispatched on a blank line when it has
 * data; an unterminated event at the end of the stream is dropped.
 */
export class SSEParser {
  constructor() {
    this.buf = "";
    this.pendingCR = false;
    this.reset();
  }
  reset() {
    this.data = [];
    this.event = "";
    this.id = undefined;
    this.retry = undefined;
    this.comments = [];
  }
  /** Feeds text; returns the events completed by it: {event, data, id, retry, comments}. */
  push(text) {
    const out = [];
    if (this.pendingCR && text.length) {
      this.pendingCR = false;
      if (text.startsWith("\n")) text = text.slice(1);
    }
    this.buf += text;
    for (;;) {
      const m = /\r\n|\n|\r/.exec(this.buf);
      if (!m) break;
      if (m[0] === "\r" && m.index === this.buf.length - 1) {
        // maybe the first half of a CRLF split across chunks: take the line, skip a leading LF next
        this.pendingCR = true;
      }
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line, out);
    }
    return out;
  }
  line(line, out) {
    if (line === "") {
      if (this.data.length) {
        out.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id, retry: this.retry, comments: this.comments });
      }
      const id = this.id;
      this.reset();
      this.id = id; // last event id persists
      return;
    }
    if (line.startsWith(":")) {
      this.comments.push(line.slice(1).replace(/^ /, ""));
      return;
    }
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

/** Parses a complete SSE text into events. */
export function parseSSE(text) {
  return new SSEParser().push(text);
}

/** Async iterator over the events of a Response / ReadableStream body. */
export async function* sseEvents(body) {
  const stream = body?.body ?? body;
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
  } finally {
    reader.releaseLock?.();
  }
}

/** Reads a whole SSE body (Response, ReadableStream or string) into an array of events. */
export async function sse(body) {
  if (typeof body === "string") return parseSSE(body);
  const out = [];
  for await (const ev of sseEvents(body)) out.push(ev);
  return out;
}

/** The JSON payloads of SSE events, with "[DONE]" kept as the string. */
export function sseJson(events) {
  return events.map((e) => (e.data === "[DONE]" ? "[DONE]" : JSON.parse(e.data)));
}

// ---------------------------------------------------------------------------------------------
// Assertions

/** Asserts an OpenAI-shaped error: all four keys, and the given status/code/param/type. */
export function assertOpenAIError(r, { status, code, param, type } = {}) {
  const where = `(${r.status} ${r.text ?? ""})`;
  if (status !== undefined) assert.equal(r.status, status, `status ${where}`);
  assert.match(r.headers.get("content-type") ?? "", /application\/json/, `content-type ${where}`);
  assert.ok(r.json && typeof r.json === "object", `JSON body ${where}`);
  const e = r.json.error;
  assert.ok(e && typeof e === "object", `error object ${where}`);
  for (const k of ["message", "type", "param", "code"]) assert.ok(k in e, `error.${k} present ${where}`);
  assert.equal(typeof e.message, "string", `error.message string ${where}`);
  assert.ok(e.message.length > 0, `error.message non-empty ${where}`);
  assert.equal(typeof e.type, "string", `error.type string ${where}`);
  assert.ok(e.param === null || typeof e.param === "string", `error.param string|null ${where}`);
  assert.ok(e.code === null || typeof e.code === "string", `error.code string|null ${where}`);
  if (code !== undefined) assert.equal(e.code, code, `error.code ${where}`);
  if (param !== undefined) assert.equal(e.param, param, `error.param ${where}`);
  if (type !== undefined) assert.equal(e.type, type, `error.type ${where}`);
  return e;
}

/** Asserts the response carries a non-empty x-request-id and returns it. */
export function requestId(res) {
  const id = res.headers.get("x-request-id");
  assert.ok(id && id.length > 0, "x-request-id header present");
  return id;
}

/** Rejects with a clear failure when p does not settle within ms (a failure bound, not a sync). */
export function within(p, ms, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
    }),
  ]);
}

/** A chat body. */
export function chatBody(model, extra = {}) {
  return { model, messages: [{ role: "user", content: "Say hello" }], ...extra };
}

/** Asserts that none of the strings appears in the body text or any header of r. */
export function assertNowhere(r, strings, what = "response") {
  const headerText = [...r.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
  for (const s of strings) {
    assert.ok(!r.text.includes(s), `${what} body must not contain ${JSON.stringify(s)}: ${r.text}`);
    assert.ok(!headerText.includes(s), `${what} headers must not contain ${JSON.stringify(s)}:\n${headerText}`);
  }
}

/**
 * Bounded polling for an asynchronous side effect (e.g. a settlement done in waitUntil): calls
 * `fn` until `pred(value)` holds and returns that value; fails with the last value after
 * `timeoutMs`. `onPoll` runs between attempts. The interval paces polls; it is not a sync point.
 */
export async function pollUntil(fn, pred, { timeoutMs = 10_000, intervalMs = 25, what = "condition", onPoll } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (pred(value)) return value;
    if (Date.now() > deadline) assert.fail(`${what}: not reached within ${timeoutMs} ms; last value ${JSON.stringify(value)}`);
    onPoll?.();
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * The usage row of `requestId` as GET /admin/usage lists it (filtered by `keyId` when given),
 * polled until the row has been written (bounded; rows are written after the response).
 */
export async function adminUsageRow(relay, requestId, { keyId, timeoutMs = 10_000 } = {}) {
  const q = keyId ? `?key_id=${encodeURIComponent(keyId)}&limit=1000` : "?limit=1000";
  const rows = await pollUntil(
    async () => {
      const r = await relay.admin("GET", `/admin/usage${q}`);
      assert.equal(r.status, 200, `GET /admin/usage${q}: ${r.text}`);
      return r.json.data;
    },
    (data) => data.some((row) => row.request_id === requestId),
    { timeoutMs, what: `usage row ${requestId} in GET /admin/usage${q}` },
  );
  return rows.find((row) => row.request_id === requestId);
}
