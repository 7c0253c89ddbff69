// What bench/bench.mjs and bench/profile.mjs share: child processes that are always cleaned up,
// CPU pinning with taskset, /proc readings (CPU time, RSS, descendants), the fake upstream, the
// gateways under test (passthrough Worker, relay, Portkey), and the load generators (wrk, or a
// node fallback) with a TTFB probe.
//
// Pinning (when taskset exists and there are ≥ 2 cores): the gateway under test (workerd, or
// Portkey's node) runs on core 0 (GATEWAY_CORE); this node process, the fake upstream and the load
// generator run on core 1 (LOADGEN_CORE).

import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
process.env.WRANGLER_SEND_METRICS = "false";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = process.env.EDGERELAY_ROOT ? path.resolve(process.env.EDGERELAY_ROOT) : path.resolve(HERE, "..");
export const OUT = path.join(ROOT, "bench/out");
export const GATEWAY_CORE = 0;
export const LOADGEN_CORE = 1;

export const log = (...a) => console.error("[bench]", ...a);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Cleanup: every child we start, every Miniflare we create, and the workerd processes found under
// us, are ended on exit, on Ctrl-C and on errors. Only those: nothing else is ever signalled.

const children = new Set(); // ChildProcess
const extraPids = new Set(); // workerd pids found as our descendants
const disposers = [];
let cleaning = null;

export function trackChild(child) {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}
export function trackPid(pid) {
  extraPids.add(pid);
}
export function onCleanup(fn) {
  disposers.push(fn);
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function cleanup() {
  cleaning ??= (async () => {
    for (const c of children) c.kill("SIGTERM");
    for (const fn of disposers.reverse()) {
      await Promise.race([Promise.resolve().then(fn).catch(() => {}), sleep(15_000)]);
    }
    await sleep(200);
    killLeftovers();
  })();
  return cleaning;
}

function killLeftovers() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const pid of extraPids) if (alive(pid) && isDescendantOrOrphanWorkerd(pid)) process.kill(pid, "SIGKILL");
}

// A workerd pid we recorded is ours while it is still our descendant, or once orphaned (ppid 1)
// after Miniflare's dispose failed: it has the same pid and comm we recorded.
function isDescendantOrOrphanWorkerd(pid) {
  const st = readStat(pid);
  return st !== null && st.comm === "workerd";
}

process.on("exit", () => {
  try {
    killLeftovers();
  } catch {}
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`);
    const force = setTimeout(() => process.exit(130), 20_000);
    force.unref();
    cleanup().finally(() => process.exit(130));
  });
}

/** A hard stop: the script always ends by itself, cleaning up first. */
export function hardTimeout(seconds, what = "bench") {
  const t = setTimeout(() => {
    log(`${what} took longer than ${seconds} s: giving up`);
    const force = setTimeout(() => process.exit(2), 20_000);
    force.unref();
    cleanup().finally(() => process.exit(2));
  }, seconds * 1000);
  t.unref();
  return t;
}

// ---------------------------------------------------------------------------------------------
// /proc

export const CLK_TCK = (() => {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** Fields of /proc/<pid>/stat that we use, or null when the process is gone. */
export function readStat(pid) {
  let s;
  try {
    s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  const open = s.indexOf("(");
  const close = s.lastIndexOf(")");
  const comm = s.slice(open + 1, close);
  const f = s.slice(close + 2).split(" "); // f[0] is field 3 (state)
  return {
    pid,
    comm,
    ppid: Number(f[1]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    cutime: Number(f[13]),
    cstime: Number(f[14]),
  };
}

function allStats() {
  const out = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const st = readStat(Number(d));
    if (st) out.push(st);
  }
  return out;
}

/** Live descendants of pid (not pid itself). */
export function descendants(pid) {
  const stats = allStats();
  const kids = new Map();
  for (const s of stats) {
    if (!kids.has(s.ppid)) kids.set(s.ppid, []);
    kids.get(s.ppid).push(s);
  }
  const out = [];
  const walk = (p) => {
    for (const c of kids.get(p) ?? []) {
      out.push(c);
      walk(c.pid);
    }
  };
  walk(pid);
  return out;
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}

/** workerd processes under this node process. */
export function workerdPids() {
  return descendants(process.pid)
    .filter((s) => s.comm === "workerd" || /(^|\/)workerd( |$)/.test(cmdline(s.pid).split(" ")[0]))
    .map((s) => s.pid);
}

/** CPU seconds used by pid (all its threads, its reaped children) plus its live descendants. */
export function cpuSeconds(pid) {
  const st = readStat(pid);
  if (!st) return NaN;
  let ticks = st.utime + st.stime + st.cutime + st.cstime;
  for (const d of descendants(pid)) ticks += d.utime + d.stime;
  return ticks / CLK_TCK;
}

/** Resident set size in bytes (VmRSS), or NaN. */
export function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Per-core jiffies from /proc/stat: [{busy, total}] indexed by core. */
export function coreTimes() {
  const out = [];
  try {
    for (const line of fs.readFileSync("/proc/stat", "utf8").split("\n")) {
      const m = /^cpu(\d+) (.*)$/.exec(line);
      if (!m) continue;
      const v = m[2].trim().split(/\s+/).map(Number);
      const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // guest time is inside user
      out[Number(m[1])] = { busy: total - v[3] - v[4], total };
    }
  } catch {}
  return out;
}

/** Busy share of each core between two coreTimes() readings. */
export function coreBusy(a, b) {
  return b.map((x, i) => (a[i] && x.total > a[i].total ? (x.busy - a[i].busy) / (x.total - a[i].total) : NaN));
}

// ---------------------------------------------------------------------------------------------
// Pinning

export const pinning = (() => {
  const have = spawnSync("taskset", ["--version"], { encoding: "utf8" }).status === 0;
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  if (!have) return { on: false, why: "taskset not found: no CPU pinning" };
  if (cores < 2) return { on: false, why: `${cores} core: no CPU pinning` };
  return { on: true, why: `gateway on core ${GATEWAY_CORE}; load generator, fake upstream and this node process on core ${LOADGEN_CORE}` };
})();

/** Pins every thread of pid to core (no-op without pinning). */
export function pin(pid, core) {
  if (!pinning.on) return;
  const r = spawnSync("taskset", ["-a", "-p", "-c", String(core), String(pid)], { encoding: "utf8" });
  if (r.status !== 0) log(`taskset on ${pid} failed: ${r.stderr?.trim()}`);
}

/** The command prefixed with taskset (when pinning). */
export function pinned(core, cmd, args) {
  return pinning.on ? ["taskset", ["-c", String(core), cmd, ...args]] : [cmd, args];
}

/** Pins this process (and so what it starts later) to the load generator's core. */
export function pinSelf() {
  pin(process.pid, LOADGEN_CORE);
}

// ---------------------------------------------------------------------------------------------
// Processes

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port, timeoutMs, child) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), r(true)));
      s.once("error", () => r(false));
    });
    if (ok) return;
    if (child && child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before listening on ${port}`);
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** The fake upstream (bench/upstream.mjs) in its own process on the load generator's core. */
export async function startUpstream() {
  const [cmd, args] = pinned(LOADGEN_CORE, process.execPath, [path.join(HERE, "upstream.mjs")]);
  const child = trackChild(spawn(cmd, args, { stdio: ["pipe", "pipe", "inherit"] }));
  const port = await new Promise((resolve, reject) => {
    let buf = "";
    const t = setTimeout(() => reject(new Error("fake upstream did not start within 10 s")), 10_000);
    child.stdout.on("data", (c) => {
      buf += c;
      const m = /\{"port":(\d+)\}/.exec(buf);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`fake upstream exited (${code})`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    close: async () => {
      child.stdin.end();
      child.kill("SIGTERM");
      await Promise.race([new Promise((r) => child.once("exit", r)), sleep(3000)]);
    },
  };
}

/** Creates a Miniflare, finds the workerd it started, pins it; returns { mf, pid }. */
async function withWorkerd(create) {
  const before = new Set(workerdPids());
  const made = await create();
  const mf = made.mf ?? made;
  await mf.ready;
  let pids = [];
  for (let i = 0; i < 50 && pids.length === 0; i++) {
    pids = workerdPids().filter((p) => !before.has(p));
    if (!pids.length) await sleep(100);
  }
  if (pids.length !== 1) log(`expected one new workerd process, found ${pids.length}: ${pids.join(", ")}`);
  for (const p of pids) {
    trackPid(p);
    pin(p, GATEWAY_CORE);
  }
  return { made, pid: pids[0] };
}

/** The bare passthrough JS Worker (bench/passthrough.js) on direct sockets. */
export async function startPassthrough(upstreamUrl) {
  const { Miniflare } = await import("miniflare");
  const { made: mf, pid } = await withWorkerd(
    () =>
      new Miniflare({
        name: "passthrough",
        modules: true,
        scriptPath: path.join(HERE, "passthrough.js"),
        compatibilityDate: "2026-04-01",
        bindings: { UPSTREAM_URL: upstreamUrl },
        unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
        cf: false,
        host: "127.0.0.1",
        port: 0,
      }),
  );
  onCleanup(() => mf.dispose());
  const url = (await mf.unsafeGetDirectURL()).href.replace(/\/$/, "");
  return { url, pid, mf };
}

/** The relay on direct sockets, seeded for every bench row. `extra`: more Miniflare options. */
export async function startRelayForBench(upstreamUrl, { extra = {}, longBytes = 100e6 } = {}) {
  const { startRelay } = await import("../tests/e2e/harness.mjs");
  const { made: relay, pid } = await withWorkerd(async () => {
    const r = await startRelay({ extra: { unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }], cf: false, ...extra } });
    onCleanup(() => r.dispose());
    return r;
  });
  const direct = (await relay.mf.unsafeGetDirectURL()).href.replace(/\/$/, "");
  const s = await relay.seed({ upstreamBaseUrl: `${upstreamUrl}/v1`, models: { bench: "gpt-bench" }, name: "bench" });
  // the same path without the network hop: the built-in mock provider answers inside the Worker
  const m = await relay.seed({ provider: "mock", models: { "bench-mock": "mock-1" }, name: "bench-mock" });
  // A key with a quota, decided at its limiter on every request (reserve + settle), on a tenant
  // with default settings ...
  const limits = { day: { requests: 1_000_000_000, tokens: 1_000_000_000_000 } };
  const limited = await relay.newKey(s.tenantId, { limits });
  // ... the same quota on a tenant with strict limits (every decision at the limiter); until the
  // admin API knows strict_limits, a tenant created without lease_ms ("relay-direct") ...
  let strictName = "relay-strict";
  let strictTenant;
  const r = await relay.admin("POST", "/admin/tenants", { name: "bench-strict", models: null, strict_limits: true });
  if (r.status === 201) strictTenant = r.json;
  else if (r.status === 400) {
    strictName = "relay-direct";
    strictTenant = await relay.adminOk("POST", "/admin/tenants", { name: "bench-direct", models: null }, [201]);
  } else throw new Error(`POST /admin/tenants with strict_limits → ${r.status}: ${r.text}`);
  const strict = await relay.newKey(strictTenant.id, { limits });
  // ... and the same quota for a tenant in lease mode (no limiter call per request).
  const leaseTenant = await relay.adminOk("POST", "/admin/tenants", { name: "bench-lease", models: null, lease_ms: 2000 }, [201]);
  const leased = await relay.newKey(leaseTenant.id, { limits });
  const channel = (name, base_url) =>
    relay.adminOk("POST", "/admin/channels", { name, provider: "openai", base_url, api_keys: ["sk-bench"] }, [201]);
  // Resilience: a model with two routes, one to an upstream failing every other request.
  const flaky = await channel("bench-flaky", `${upstreamUrl}/flaky/v1`);
  const healthy = await channel("bench-healthy", `${upstreamUrl}/v1`);
  await relay.adminOk("PUT", "/admin/model-map/bench-failover", {
    routes: [
      { channel_id: flaky.id, upstream_model: "gpt-bench" },
      { channel_id: healthy.id, upstream_model: "gpt-bench" },
    ],
  });
  // Memory: a model whose upstream streams ~longBytes bytes.
  const long = await channel("bench-long", `${upstreamUrl}/long/${Math.round(longBytes)}/v1`);
  await relay.adminOk("PUT", "/admin/model-map/bench-long", { channel_id: long.id, upstream_model: "gpt-bench" });
  return {
    url: direct,
    pid,
    relay,
    strictName,
    keys: { relay: s.key, "relay-limited": limited.key, [strictName]: strict.key, "relay-lease": leased.key, "relay-mock": m.key },
  };
}

export const PORTKEY_DIR = path.join(HERE, ".portkey");
export const PORTKEY_MAIN = path.join(PORTKEY_DIR, "node_modules/@portkey-ai/gateway/build/start-server.js");

/** The Portkey AI Gateway (node) on core 0, or null when it is not installed. */
export async function startPortkey() {
  if (!fs.existsSync(PORTKEY_MAIN)) return null;
  const port = await freePort();
  fs.mkdirSync(OUT, { recursive: true });
  const logFile = fs.openSync(path.join(OUT, "portkey.log"), "w");
  const [cmd, args] = pinned(GATEWAY_CORE, process.execPath, [PORTKEY_MAIN, `--port=${port}`, "--headless"]);
  const child = trackChild(
    spawn(cmd, args, { cwd: PORTKEY_DIR, stdio: ["ignore", logFile, logFile], env: { ...process.env, NODE_ENV: "production" } }),
  );
  fs.closeSync(logFile);
  await waitForPort(port, 20_000, child);
  const version = JSON.parse(fs.readFileSync(path.join(PORTKEY_DIR, "node_modules/@portkey-ai/gateway/package.json"), "utf8")).version;
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    version,
    close: async () => {
      child.kill("SIGTERM");
      await Promise.race([new Promise((r) => child.once("exit", r)), sleep(3000)]);
    },
  };
}

/** The headers Portkey needs to send an OpenAI request to the fake upstream. */
export function portkeyHeaders(upstreamUrl) {
  return { "x-portkey-provider": "openai", "x-portkey-custom-host": `${upstreamUrl}/v1` };
}

// ---------------------------------------------------------------------------------------------
// Load generators

export const wrkPath = (() => {
  const r = spawnSync("sh", ["-c", "command -v wrk"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
})();

const luaString = (s) => {
  let eq = "=";
  while (s.includes(`]${eq}]`)) eq += "=";
  return `[${eq}[${s}]${eq}]`;
};

/** The wrk script: POST body and headers, and a JSON summary on stdout (statuses if asked). */
function wrkScript({ path: p, body, headers, statuses }) {
  const h = Object.entries(headers)
    .map(([k, v]) => `wrk.headers[ ${luaString(k)} ] = ${luaString(v)}`)
    .join("\n");
  return `
wrk.method = "POST"
wrk.path = ${luaString(p)}
wrk.body = ${luaString(body)}
${h}
local threads = {}
function setup(thread) table.insert(threads, thread) end
${
  statuses
    ? `function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end`
    : ""
}
function done(summary, latency, requests)
  local st = {}
  ${
    statuses
      ? `for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then for k, v in pairs(s) do st[#st + 1] = string.format('"%d":%d', k, v) end end
  end`
      : ""
  }
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"statuses":{%s}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, table.concat(st, ",")))
end
`;
}

/** Runs wrk (pinned to the load generator's core) for `seconds`; resolves with its summary. */
export async function runWrk(target, { seconds, concurrency, statuses = false }) {
  fs.mkdirSync(OUT, { recursive: true });
  const script = path.join(OUT, `.wrk-${process.pid}.lua`);
  fs.writeFileSync(script, wrkScript({ ...target, statuses }));
  const [cmd, args] = pinned(LOADGEN_CORE, wrkPath, [
    "-t1",
    `-c${concurrency}`,
    `-d${seconds}s`,
    "--timeout",
    "10s",
    "-s",
    script,
    target.url,
  ]);
  const child = trackChild(spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }));
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (err += c));
  const killer = setTimeout(() => child.kill("SIGKILL"), (seconds + 20) * 1000);
  const code = await new Promise((r) => child.once("exit", (c, s) => r(c ?? s)));
  clearTimeout(killer);
  fs.rmSync(script, { force: true });
  const m = /WRK_JSON (\{.*\})/.exec(out);
  if (!m) throw new Error(`wrk gave no summary (exit ${code}): ${err.trim() || out.trim()}`);
  const j = JSON.parse(m[1]);
  const wall = j.duration_us / 1e6;
  const failed = j.errors.connect + j.errors.read + j.errors.write + j.errors.timeout;
  const st = Object.keys(j.statuses).length ? j.statuses : null;
  return {
    n: j.requests,
    errors: j.errors.status + failed,
    errorsDetail: j.errors,
    statuses: st,
    ok: st ? Object.entries(st).reduce((n, [s, c]) => n + (s >= 200 && s < 300 ? c : 0), 0) : j.requests - j.errors.status,
    rps: j.requests / wall,
    p50: j.p50_us / 1000,
    p90: j.p90_us / 1000,
    p99: j.p99_us / 1000,
    max: j.max_us / 1000,
    mean: j.mean_us / 1000,
    bytes: j.bytes,
    wall,
  };
}

/** One request; resolves with {status, ms, ttfbMs, bytes}. */
export function once(agent, target, { onData } = {}) {
  const u = new URL(target.url);
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let ttfb = null;
    const fail = () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - t0) / 1e6, ttfbMs: NaN, bytes: 0 });
    const req = http.request(
      {
        agent,
        host: u.hostname,
        port: Number(u.port),
        path: target.path,
        method: "POST",
        headers: { ...target.headers, "content-length": Buffer.byteLength(target.body) },
      },
      (res) => {
        let bytes = 0;
        res.on("data", (c) => {
          if (ttfb === null) ttfb = process.hrtime.bigint();
          bytes += c.length;
          onData?.(c);
        });
        res.on("end", () => {
          const t1 = process.hrtime.bigint();
          resolve({ status: res.statusCode, ms: Number(t1 - t0) / 1e6, ttfbMs: Number((ttfb ?? t1) - t0) / 1e6, bytes });
        });
        res.on("error", fail);
      },
    );
    req.on("error", fail);
    req.end(target.body);
  });
}

const pct = (arr, p) => (arr.length ? arr[Math.min(arr.length - 1, Math.floor((p / 100) * arr.length))] : NaN);

/**
 * Closed-loop load from this process (the fallback without wrk, and the TTFB probe):
 * `concurrency` keep-alive connections, each sending the next request when the last is done,
 * until `stop()` resolves or `seconds` pass.
 */
export async function nodeLoad(target, { seconds, concurrency, until }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const lat = [];
  const ttfb = [];
  const statuses = {};
  let stop = false;
  const timer = setTimeout(() => (stop = true), seconds * 1000);
  until?.then(() => (stop = true));
  const t0 = process.hrtime.bigint();
  async function loop() {
    while (!stop) {
      const r = await once(agent, target);
      statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      lat.push(r.ms);
      if (Number.isFinite(r.ttfbMs)) ttfb.push(r.ttfbMs);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  clearTimeout(timer);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  agent.destroy();
  lat.sort((a, b) => a - b);
  ttfb.sort((a, b) => a - b);
  const ok = Object.entries(statuses).reduce((n, [s, c]) => n + (s >= 200 && s < 300 ? c : 0), 0);
  return {
    n: lat.length,
    ok,
    errors: lat.length - ok,
    statuses,
    rps: lat.length / wall,
    p50: pct(lat, 50),
    p90: pct(lat, 90),
    p99: pct(lat, 99),
    max: lat.at(-1),
    ttfb50: pct(ttfb, 50),
    ttfb99: pct(ttfb, 99),
    wall,
  };
}

/** The request of a row: where, which body, which headers. */
export function target(url, { key, body, headers = {} }) {
  return {
    url,
    path: "/v1/chat/completions",
    body,
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${key}`,
      "accept-encoding": "identity",
      ...headers,
    },
  };
}

/**
 * Measures a row: warm-up, `idle` seconds of one request at a time (latency without load), then
 * the measured load (wrk, or node without wrk) with a 2-connection
 * TTFB probe from this process beside it, and the CPU the gateway's processes used in between.
 * cpuPids: the processes whose CPU is the gateway's.
 */
export async function measureRow(t, { seconds, warmup, concurrency, cpuPids = [], statuses = false, probe = 2, idle = 0, loadgen }) {
  if (warmup > 0) {
    if (loadgen === "wrk") await runWrk(t, { seconds: warmup, concurrency });
    else await nodeLoad(t, { seconds: warmup, concurrency });
  }
  // Latency without load: one connection, one request after the other.
  const quiet = idle > 0 ? await nodeLoad(t, { seconds: idle, concurrency: 1 }) : null;
  const cpu0 = cpuPids.map(cpuSeconds);
  const cores0 = coreTimes();
  const t0 = process.hrtime.bigint();
  let done;
  const finished = new Promise((r) => (done = r));
  const probing = probe > 0 ? nodeLoad(t, { seconds: seconds + 30, concurrency: probe, until: finished }) : null;
  let main;
  try {
    main = loadgen === "wrk" ? await runWrk(t, { seconds, concurrency, statuses }) : await nodeLoad(t, { seconds, concurrency: Math.max(1, concurrency - probe) });
  } finally {
    done();
  }
  const p = probing ? await probing : null;
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu1 = cpuPids.map(cpuSeconds);
  const coresBusy = coreBusy(cores0, coreTimes());
  const cpu = cpu1.reduce((s, c, i) => s + (c - cpu0[i]), 0);
  const served = main.n + (p?.n ?? 0);
  return {
    ...main,
    ttfb50: p?.ttfb50 ?? main.ttfb50 ?? NaN,
    ttfb99: p?.ttfb99 ?? main.ttfb99 ?? NaN,
    idle: quiet ? { n: quiet.n, p50: quiet.p50, p99: quiet.p99, ttfb50: quiet.ttfb50, statuses: quiet.statuses } : null,
    probe: p ? { n: p.n, p50: p.p50, p99: p.p99, ttfb50: p.ttfb50, ttfb99: p.ttfb99, statuses: p.statuses } : null,
    cpuSeconds: cpuPids.length ? cpu : NaN,
    cpuMsPerRequest: cpuPids.length && served ? (1000 * cpu) / served : NaN,
    cpuUtilisation: cpuPids.length ? cpu / wall : NaN,
    coresBusy, // share of each core busy over the window, whoever used it
    served,
  };
}

// ---------------------------------------------------------------------------------------------
// Output

export function fmt(n, d = 0) {
  return Number.isFinite(n) ? n.toFixed(d) : "-";
}

export function table(rows, headers, left = 2) {
  const cells = [headers, ...rows].map((r) => r.map(String));
  const w = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i < left ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
  return [line(cells[0]), w.map((x) => "-".repeat(x)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

export function gitCommit() {
  const r = spawnSync("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8" });
  const dirty = spawnSync("git", ["-C", ROOT, "status", "--porcelain", "--untracked-files=no"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() + (dirty.stdout?.trim() ? "+dirty" : "") : null;
}
