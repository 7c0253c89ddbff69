// `npm run profile`: a V8 CPU profile of the relay Worker's isolate under load.
//
// Starts the fake upstream and the relay through Miniflare (direct sockets, workerd's inspector
// on a free port, workerd pinned to core 0 and wrk/upstream/this process to core 1 as in
// `npm run bench`), warms it up, then samples the Worker's isolate over the inspector websocket
// (Profiler.start / Profiler.stop, 200 µs sampling) while wrk puts load on it, and writes
// bench/out/relay.cpuprofile (Chrome DevTools → Performance opens it). It prints the top functions
// by self and by inclusive time in µs per request served, and the split between wasm (Rust),
// wasm-bindgen glue (__wbg_* and the rest of build/index.js), the runtime's builtins, GC and
// (program)/(idle).
//
//   node bench/profile.mjs [--stream] [--row relay|relay-limited|relay-strict|relay-lease|relay-mock]
//                          [--seconds N] [--concurrency N] [--top N] [--interval µs]
// Environment: PROFILE_SECONDS (5), BENCH_CONCURRENCY (16), BENCH_LOADGEN=node (no wrk).

import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { createRequire } from "node:module";
import * as L from "./lib.mjs";

const { log, fmt, table } = L;
const { values: args } = parseArgs({
  options: {
    stream: { type: "boolean", default: false },
    row: { type: "string", default: "relay" },
    seconds: { type: "string", default: process.env.PROFILE_SECONDS ?? "5" },
    concurrency: { type: "string", default: process.env.BENCH_CONCURRENCY ?? "16" },
    top: { type: "string", default: "25" },
    interval: { type: "string", default: "200" },
    out: { type: "string", default: path.join(L.OUT, "relay.cpuprofile") },
  },
});
const SECONDS = Number(args.seconds);
const CONCURRENCY = Number(args.concurrency);
const TOP = Number(args.top);
const LOADGEN = process.env.BENCH_LOADGEN === "node" || !L.wrkPath ? "node" : "wrk";
L.hardTimeout(SECONDS * 3 + 180, "profile");

// ws comes with wrangler/miniflare (not a dependency of ours): resolve it from there.
function loadWs() {
  for (const from of ["miniflare", "wrangler"]) {
    try {
      const req = createRequire(createRequire(path.join(L.ROOT, "package.json")).resolve(from));
      return req("ws");
    } catch {}
  }
  return createRequire(path.join(L.ROOT, "package.json"))("ws");
}
const WebSocket = loadWs();

/** A minimal CDP client over one websocket. */
async function cdp(url) {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 30 });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  let seq = 0;
  const pending = new Map();
  ws.on("message", (data) => {
    const m = JSON.parse(data.toString());
    if (m.id && pending.has(m.id)) {
      const { resolve, reject } = pending.get(m.id);
      pending.delete(m.id);
      if (m.error) reject(new Error(`${m.error.message} (${m.error.code})`));
      else resolve(m.result);
    }
  });
  ws.on("close", () => {
    for (const { reject } of pending.values()) reject(new Error("inspector connection closed"));
    pending.clear();
  });
  const send = (method, params = {}, timeoutMs = 30_000) =>
    new Promise((resolve, reject) => {
      const id = ++seq;
      const t = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`${method}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, {
        resolve: (v) => (clearTimeout(t), resolve(v)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  return { send, close: () => ws.close() };
}

/** The inspector target of the Worker named `name` (workerd lists one per Worker/service). */
async function pickTarget(inspectorUrl, name) {
  const u = new URL(inspectorUrl);
  const base = `http://${u.host}`;
  let list = [];
  for (let i = 0; i < 30; i++) {
    try {
      list = await (await fetch(`${base}/json`)).json();
      if (list.length) break;
    } catch {}
    await L.sleep(200);
  }
  const matches = (t) => [t.title, t.id, t.url].some((s) => typeof s === "string" && new RegExp(`(^|[^\\w-])${name}($|[^\\w-])`).test(s));
  const t = list.find((t) => matches(t) && !/miniflare|internal|entry|loopback/i.test(t.title ?? "")) ?? list.find(matches);
  if (!t) throw new Error(`no inspector target for ${name} among: ${list.map((t) => t.title ?? t.id).join(", ")}`);
  let ws = t.webSocketDebuggerUrl;
  if (!ws) ws = `ws://${u.host}/${t.id}`;
  return { target: t, ws, all: list.map((t) => t.title ?? t.id) };
}

// ---------------------------------------------------------------------------------------------
// Analysis

const SPECIAL = new Set(["(idle)", "(program)", "(garbage collector)", "(root)"]);

function category(cf) {
  const fn = cf.functionName || "";
  const url = cf.url || "";
  if (fn === "(idle)") return "(idle)";
  if (fn === "(program)") return "(program)";
  if (fn === "(garbage collector)") return "GC";
  if (/^(js-to-wasm|wasm-to-js)/.test(fn)) return "glue: js<->wasm trampolines";
  if (url.startsWith("wasm://") || /::/.test(fn) || /^<?edgerelay/.test(fn)) return "wasm (Rust)";
  if (/^__wbg_|^__wbindgen/.test(fn)) return "glue: __wbg_*";
  if (/(^|\/)index\.js$/.test(url) || /build\/.*\.js$/.test(url)) return "glue: other index.js JS";
  return "runtime / builtins";
}

function displayName(cf) {
  const fn = cf.functionName || "(anonymous)";
  if (SPECIAL.has(fn)) return fn;
  const url = cf.url || "";
  if (url.startsWith("wasm://")) return `${fn.replace(/::h[0-9a-f]{16}\b/g, "").replace(/\[[0-9a-f]{16}\]/g, "")} [wasm]`;
  if (!url) return `${fn} [native]`;
  const file = url.split("/").pop();
  return `${fn} ${file}:${cf.lineNumber + 1}:${cf.columnNumber + 1}`;
}

function analyse(profile, requests) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const deltas = profile.timeDeltas ?? [];
  const n = profile.samples.length;
  const sorted = [...deltas].sort((a, b) => a - b);
  const typical = sorted[Math.floor(sorted.length / 2)] ?? 0;
  // The interval after sample i belongs to sample i (as DevTools does).
  const dur = (i) => (i + 1 < n ? Math.max(0, deltas[i + 1]) : typical);
  // By the name shown: the monomorphisations of one Rust function (same name, other hash) add up.
  const key = (cf) => displayName(cf);
  const self = new Map();
  const incl = new Map();
  const names = new Map();
  const cats = new Map();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < n; i++) {
    const d = dur(i);
    total += d;
    const leaf = nodes.get(profile.samples[i]);
    if (!leaf) continue;
    const cat = category(leaf.callFrame);
    cats.set(cat, (cats.get(cat) ?? 0) + d);
    if (cat === "(idle)") idle += d;
    const k = key(leaf.callFrame);
    names.set(k, leaf.callFrame);
    self.set(k, (self.get(k) ?? 0) + d);
    const seen = new Set();
    for (let id = leaf.id; id !== undefined; id = parent.get(id)) {
      const cf = nodes.get(id).callFrame;
      if (cf.functionName === "(root)") break;
      const kk = key(cf);
      if (seen.has(kk)) continue;
      seen.add(kk);
      names.set(kk, cf);
      incl.set(kk, (incl.get(kk) ?? 0) + d);
    }
  }
  const per = (us) => (requests ? us / requests : NaN);
  const top = (m) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, TOP)
      .map(([k, us]) => {
        const c = category(names.get(k));
        return { name: displayName(names.get(k)), category: c, us, usPerRequest: per(us), share: c === "(idle)" ? NaN : us / (total - idle) };
      });
  return {
    samples: n,
    sampledUs: total,
    idleUs: idle,
    busyUs: total - idle,
    busyUsPerRequest: per(total - idle),
    categories: [...cats].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, us, usPerRequest: per(us), share: name === "(idle)" ? NaN : us / (total - idle) })),
    self: top(self),
    inclusive: top(incl),
  };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  L.pinSelf();
  log(`load generator: ${LOADGEN}; pinning: ${L.pinning.why}`);
  const upstream = await L.startUpstream();
  L.onCleanup(upstream.close);
  const relay = await L.startRelayForBench(upstream.url, { extra: { inspectorPort: 0 } });
  const rowName = args.row === "relay-strict" ? relay.strictName : args.row;
  const key = relay.keys[rowName];
  if (!key) throw new Error(`--row ${args.row}: one of ${Object.keys(relay.keys).join(", ")}`);
  const inspectorUrl = (await relay.relay.mf.getInspectorURL()).href;
  const { target, ws, all } = await pickTarget(inspectorUrl, "edgerelay");
  log(`relay at ${relay.url} (workerd pid ${relay.pid}); inspector targets: ${all.join(", ")}; profiling "${target.title ?? target.id}"`);

  const mode = args.stream ? "stream" : "non-stream";
  const body = JSON.stringify({ model: rowName === "relay-mock" ? "bench-mock" : "bench", messages: [{ role: "user", content: "Hello" }], ...(args.stream ? { stream: true } : {}) });
  const t = L.target(relay.url, { key, body });
  log(`warm-up: 3 s, ${CONCURRENCY} connections`);
  const warm = await L.measureRow(t, { seconds: 3, warmup: 0, concurrency: CONCURRENCY, probe: 0, loadgen: LOADGEN });
  if (!warm.ok) throw new Error(`warm-up: no successful request (${JSON.stringify(warm.errorsDetail ?? warm.statuses)})`);

  const c = await cdp(ws);
  await c.send("Profiler.enable");
  await c.send("Profiler.setSamplingInterval", { interval: Number(args.interval) });
  await c.send("Profiler.start");
  log(`profiling ${rowName} ${mode}: ${SECONDS} s, ${CONCURRENCY} connections`);
  let r;
  try {
    r = await L.measureRow(t, { seconds: SECONDS, warmup: 0, concurrency: CONCURRENCY, probe: 0, loadgen: LOADGEN, cpuPids: [relay.pid] });
  } finally {
    var { profile } = await c.send("Profiler.stop", {}, 120_000);
    c.close();
  }
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, JSON.stringify(profile));
  const a = analyse(profile, r.n);

  const us = (x) => fmt(x, x < 10 ? 1 : 0);
  const pctf = (x) => (Number.isFinite(x) ? `${fmt(100 * x, 1)}%` : "");
  console.log(
    `\nedgerelay profile — ${L.gitCommit() ?? "?"}, ${rowName} ${mode}, ${CONCURRENCY} connections, ${SECONDS} s, load: ${LOADGEN}\n` +
      `served ${r.n} requests (${fmt(r.rps)} req/s, p50 ${fmt(r.p50, 2)} ms, p99 ${fmt(r.p99, 2)} ms, ${r.errors} errors)\n` +
      `workerd process CPU: ${fmt(r.cpuMsPerRequest * 1000)} µs/request (all of workerd: this isolate, the storage services, the runtime's threads)\n` +
      `sampled in the Worker's isolate: ${fmt(a.busyUsPerRequest)} µs/request busy (${a.samples} samples every ~${args.interval} µs; idle excluded)\n` +
      `profile: ${path.relative(process.cwd(), args.out)}\n`,
  );
  console.log("split by the frame that was running (self time)\n");
  console.log(table(a.categories.map((c) => [c.name, us(c.usPerRequest), pctf(c.share)]), ["category", "µs/req", "of busy"], 1));
  console.log(`\ntop ${TOP} by self time\n`);
  console.log(table(a.self.map((f) => [f.name.slice(0, 110), f.category, us(f.usPerRequest), pctf(f.share)]), ["function", "category", "µs/req", "of busy"]));
  console.log(`\ntop ${TOP} by inclusive time (the function and what it called)\n`);
  console.log(table(a.inclusive.map((f) => [f.name.slice(0, 110), f.category, us(f.usPerRequest), pctf(f.share)]), ["function", "category", "µs/req", "of busy"]));
  fs.writeFileSync(
    path.join(L.OUT, "relay-profile-summary.json"),
    JSON.stringify({ commit: L.gitCommit(), row: rowName, mode, seconds: SECONDS, concurrency: CONCURRENCY, loadgen: LOADGEN, load: r, ...a }, null, 2),
  );
}

main()
  .then(
    () => 0,
    (e) => {
      console.error(e);
      return 1;
    },
  )
  .then(async (code) => {
    await L.cleanup();
    process.exit(code);
  });
