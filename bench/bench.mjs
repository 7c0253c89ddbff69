// edgerelay benchmark (not a test). In one run, against baselines measured in the same run:
//
//   rows (non-stream and stream chat completions, CONCURRENCY connections each):
//     upstream       the fake upstream directly (the ceiling of this setup)
//     passthrough    a bare JS Worker that forwards the request (bench/passthrough.js)
//     relay          the relay's full path, key without limits
//     relay-limited  a key with a daily quota, tenant with default settings
//     relay-strict   the same quota, tenant created with strict_limits (relay-direct: without
//                    lease_ms, when the admin API does not know strict_limits yet)
//     relay-lease    the same quota, tenant in lease mode (lease_ms 2000)
//     relay-mock     the relay with a `mock` channel (no upstream hop)
//     portkey        the Portkey AI Gateway (node), same request, pointed at the fake upstream
//   for each: req/s, p50/p99, errors, TTFB p50 (a 2-connection probe beside the load, and one
//   request at a time before it), and the
//   CPU the gateway's process(es) used over the measured window per request served (utime+stime
//   from /proc of workerd, or Portkey's node, with their children); then ratios.
//   resilience     one upstream failing half its requests: direct vs the relay with a second route
//   limiter        decisions/s of one Limiter Durable Object (a relay-strict key, mock channel,
//                  LIMITER_CONCURRENCY connections)
//   memory         one ~LONG_MB MB stream through the relay, workerd's RSS sampled every 200 ms
//
// Load: wrk (one thread) when installed, else a node load generator (said in the output).
// Pinning (taskset): workerd / Portkey on core 0; wrk, the fake upstream and this process on core 1.
// Both Workers are served through Miniflare's direct sockets (no dev entry Worker, no inspector).
//
//   node bench/bench.mjs            (needs build/index.js: bash scripts/build.sh; npm run bench does it)
// Environment: BENCH_SECONDS (10) per measured row, BENCH_WARMUP (2) seconds of warm-up per row,
// BENCH_CONCURRENCY (32), BENCH_LIMITER_CONCURRENCY (64), BENCH_LONG_MB (100),
// BENCH_IDLE (1.5) seconds of one-at-a-time requests per row (latency without load),
// BENCH_MODES (non-stream,stream), BENCH_LOADGEN (wrk|node), BENCH_ONLY (comma-separated of
// upstream, passthrough, relay, relay-limited, relay-strict, relay-lease, relay-mock, portkey,
// resilience, limiter, memory; default: all). Raw results: bench/out/bench-<timestamp>.json.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import zlib from "node:zlib";
import { spawnSync } from "node:child_process";
import * as L from "./lib.mjs";
import { PIECE, eventCount } from "./longstream.mjs";

const { log, fmt, table } = L;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const LIMITER_CONCURRENCY = Number(process.env.BENCH_LIMITER_CONCURRENCY ?? 64);
const LONG_MB = Number(process.env.BENCH_LONG_MB ?? 100);
const MODES = (process.env.BENCH_MODES ?? "non-stream,stream").split(",").filter(Boolean);
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(",").map((s) => s.trim())) : null;
const LOADGEN = process.env.BENCH_LOADGEN === "node" || !L.wrkPath ? "node" : "wrk";
const want = (name) => !ONLY || ONLY.has(name) || (name === "relay-direct" && ONLY.has("relay-strict"));

const RELAY_ROWS = ["relay", "relay-limited", "relay-strict", "relay-lease", "relay-mock"];
const GATEWAY_ROWS = ["passthrough", ...RELAY_ROWS, "portkey"];

// The longest a default run can take, with room to spare; then everything is cleaned up.
{
  const rows = MODES.length * 8 + 3;
  L.hardTimeout(rows * (SECONDS + WARMUP + 10) + 300);
}

function sizes() {
  const wasm = path.join(L.ROOT, "build/index_bg.wasm");
  if (!fs.existsSync(wasm)) return null;
  const buf = fs.readFileSync(wasm);
  const gz = zlib.gzipSync(buf, { level: 9 }).length;
  const js = path.join(L.ROOT, "build/index.js");
  return { raw: buf.length, gz, js: fs.existsSync(js) ? fs.statSync(js).size : 0 };
}

function wrkVersion() {
  if (!L.wrkPath) return null;
  const r = spawnSync(L.wrkPath, ["-v"], { encoding: "utf8" });
  return (r.stdout + r.stderr).split("\n")[0].replace(/ Copyright.*/, "").trim();
}

const bodyFor = (model, stream) =>
  JSON.stringify({ model, messages: [{ role: "user", content: "Hello" }], ...(stream ? { stream: true } : {}) });

/** The memory row: one long stream through the relay, workerd's RSS every 200 ms. */
async function longStream(relayUrl, key, pid) {
  const bytes = LONG_MB * 1e6;
  const expectedChars = eventCount(bytes) * PIECE.length;
  const t = L.target(relayUrl, { key, body: bodyFor("bench-long", true) });
  const samples = [];
  const sample = () => samples.push({ t: Date.now(), rss: L.rssBytes(pid) });
  sample();
  const timer = setInterval(sample, 200);
  let buf = "";
  let chars = 0;
  let events = 0;
  let done = false;
  let bad = 0;
  const decoder = new TextDecoder();
  const onData = (c) => {
    buf += decoder.decode(c, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of ev.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") {
          done = true;
          continue;
        }
        events++;
        try {
          const j = JSON.parse(data);
          chars += j.choices?.[0]?.delta?.content?.length ?? 0;
        } catch {
          bad++;
        }
      }
    }
  };
  const agent = new http.Agent({ keepAlive: false });
  const timeoutMs = Math.max(60_000, LONG_MB * 2000);
  const t0 = Date.now();
  const r = await Promise.race([
    L.once(agent, t, { onData }),
    L.sleep(timeoutMs).then(() => ({ status: "timeout", ms: timeoutMs, bytes: NaN })),
  ]);
  agent.destroy();
  const wall = (Date.now() - t0) / 1000;
  // a few more samples after the end: does the memory come back?
  await L.sleep(1000);
  clearInterval(timer);
  sample();
  const rss = samples.map((s) => s.rss).filter(Number.isFinite);
  return {
    status: r.status,
    bytes: r.bytes,
    seconds: wall,
    mbPerSecond: r.bytes / 1e6 / wall,
    events,
    chars,
    expectedChars,
    badEvents: bad,
    done,
    whole: r.status === 200 && done && chars === expectedChars && bad === 0,
    rssStart: rss[0],
    rssPeak: Math.max(...rss),
    rssEnd: rss.at(-1),
    samples,
  };
}

async function main() {
  L.pinSelf();
  const started = new Date();
  const size = sizes();
  const hasBuild = fs.existsSync(path.join(L.ROOT, "build/index.js"));
  const loadgenDesc = LOADGEN === "wrk" ? `wrk (${wrkVersion()}, 1 thread)` : `node (fallback: ${L.wrkPath ? "BENCH_LOADGEN=node" : "wrk not installed"})`;
  log(`load generator: ${loadgenDesc}; pinning: ${L.pinning.why}`);

  const upstream = await L.startUpstream();
  L.onCleanup(upstream.close);
  log(`fake upstream at ${upstream.url} (pid ${upstream.pid})`);

  const targets = []; // {name, url, key, model, headers, cpuPids}
  targets.push({ name: "upstream", url: upstream.url, key: "sk-bench", cpuPids: [upstream.pid] });
  let relay = null;
  let portkey = null;
  if (want("passthrough")) {
    const pt = await L.startPassthrough(upstream.url);
    log(`passthrough Worker at ${pt.url} (workerd pid ${pt.pid})`);
    targets.push({ name: "passthrough", url: pt.url, key: "sk-bench", cpuPids: [pt.pid] });
  }
  const needRelay = RELAY_ROWS.some(want) || want("relay-direct") || want("resilience") || want("limiter") || want("memory");
  if (needRelay) {
    if (!hasBuild) log("build/index.js missing: skipping the relay (bash scripts/build.sh)");
    else {
      relay = await L.startRelayForBench(upstream.url, { longBytes: LONG_MB * 1e6 });
      log(`relay at ${relay.url} (workerd pid ${relay.pid}); strict row: ${relay.strictName}`);
      for (const name of ["relay", "relay-limited", relay.strictName, "relay-lease", "relay-mock"]) {
        if (want(name)) {
          targets.push({ name, url: relay.url, key: relay.keys[name], model: name === "relay-mock" ? "bench-mock" : "bench", cpuPids: [relay.pid] });
        }
      }
    }
  }
  let portkeyNote = null;
  if (want("portkey")) {
    try {
      portkey = await L.startPortkey();
      if (!portkey) portkeyNote = "Portkey not installed (bench/.portkey: npm run bench installs it): skipped";
      else {
        L.onCleanup(portkey.close);
        log(`Portkey ${portkey.version} at ${portkey.url} (pid ${portkey.pid})`);
        targets.push({ name: "portkey", url: portkey.url, key: "sk-bench", headers: L.portkeyHeaders(upstream.url), cpuPids: [portkey.pid] });
      }
    } catch (e) {
      portkeyNote = `Portkey did not start (${e.message}; see bench/out/portkey.log): skipped`;
    }
    if (portkeyNote) log(portkeyNote);
  }

  const opts = { seconds: SECONDS, warmup: WARMUP, concurrency: CONCURRENCY, loadgen: LOADGEN };
  const IDLE = Number(process.env.BENCH_IDLE ?? 1.5);
  const results = [];
  for (const mode of MODES) {
    for (const t of targets) {
      if (!want(t.name)) continue;
      const tt = L.target(t.url, { key: t.key, body: bodyFor(t.model ?? "bench", mode === "stream"), headers: t.headers });
      log(`${t.name} ${mode}: ${SECONDS} s, ${CONCURRENCY} connections (+${WARMUP} s warm-up)`);
      const r = await L.measureRow(tt, { ...opts, idle: IDLE, cpuPids: t.cpuPids });
      results.push({ target: t.name, mode, ...r });
      if (r.errors) log(`  ${t.name} ${mode}: ${r.errors} errors ${JSON.stringify(r.errorsDetail ?? r.statuses)}`);
    }
  }

  // Resilience: one upstream fails half its requests; direct vs the relay with a second route.
  const resilience = [];
  if (want("resilience")) {
    const flakyBody = bodyFor("bench", false);
    log(`resilience: direct to the failing upstream, ${SECONDS} s`);
    const direct = { ...L.target(upstream.url, { key: "sk-bench", body: flakyBody }), path: "/flaky/v1/chat/completions" };
    resilience.push({ target: "direct (50% failing)", ...(await L.measureRow(direct, { ...opts, warmup: 0, statuses: true, probe: 0 })) });
    if (relay) {
      log(`resilience: relay with a failing and a healthy route, ${SECONDS} s`);
      const t = L.target(relay.url, { key: relay.keys.relay, body: bodyFor("bench-failover", false) });
      resilience.push({ target: "relay (failing + healthy route)", ...(await L.measureRow(t, { ...opts, warmup: 1, statuses: true, probe: 0, cpuPids: [relay.pid] })) });
    }
  }

  // The limiter: how many decisions one Limiter object makes per second.
  let limiter = null;
  if (want("limiter") && relay) {
    log(`limiter: ${relay.strictName} key, mock channel, ${LIMITER_CONCURRENCY} connections, ${SECONDS} s`);
    const t = L.target(relay.url, { key: relay.keys[relay.strictName], body: bodyFor("bench-mock", false) });
    const r = await L.measureRow(t, { ...opts, concurrency: LIMITER_CONCURRENCY, statuses: true, probe: 0, cpuPids: [relay.pid] });
    const st = r.statuses ?? {};
    const admitted = Object.entries(st).reduce((n, [s, c]) => n + (s >= 200 && s < 300 ? c : 0), 0);
    const refused = st[429] ?? 0;
    limiter = { key: relay.strictName, ...r, admitted, refused, decisionsPerSecond: (admitted + refused) / r.wall };
  }

  // Memory on a long stream.
  let memory = null;
  if (want("memory") && relay) {
    log(`memory: one ${LONG_MB} MB stream through the relay, workerd RSS every 200 ms`);
    memory = await longStream(relay.url, relay.keys.relay, relay.pid);
  }

  // ------------------------------------------------------------------------------------------
  // Report
  const get = (name, mode) => results.find((r) => r.target === name && r.mode === mode);
  console.log(
    `\nedgerelay bench — ${L.gitCommit() ?? "?"}, ${started.toISOString()}, node ${process.version}\n` +
      `load generator: ${loadgenDesc}, ${CONCURRENCY} connections, ${SECONDS} s per row after ${WARMUP} s warm-up\n` +
      `pinning: ${L.pinning.why}\n` +
      `CPU ms/req: the gateway's process CPU (utime+stime, with children) over the measured window / requests served` +
      ` (upstream row: the fake upstream's own);\n` +
      `ttfb p50: first body byte, from a 2-connection probe beside the load; idle ttfb: one request at a time, ${IDLE} s, before the load\n` +
      `CPU %: that CPU over the window's wall time; core ${L.GATEWAY_CORE} %: how busy core ${L.GATEWAY_CORE} was, whoever used it` +
      ` (well above CPU %: other processes shared the gateway's core)\n` +
      (portkey ? `portkey: @portkey-ai/gateway ${portkey.version} (node), headers x-portkey-provider: openai, x-portkey-custom-host: <fake upstream>/v1\n` : "") +
      (portkeyNote ? `portkey: ${portkeyNote}\n` : ""),
  );
  console.log(
    table(
      results.map((r) => [
        r.target,
        r.mode,
        r.n,
        r.errors,
        fmt(r.rps),
        fmt(r.p50, 2),
        fmt(r.p99, 2),
        fmt(r.ttfb50, 2),
        fmt(r.idle?.ttfb50, 2),
        fmt(r.cpuMsPerRequest, 3),
        fmt(100 * r.cpuUtilisation),
        fmt(100 * r.coresBusy[L.GATEWAY_CORE]),
      ]),
      ["target", "mode", "requests", "errors", "req/s", "p50 ms", "p99 ms", "ttfb p50 ms", "idle ttfb ms", "CPU ms/req", "CPU %", `core ${L.GATEWAY_CORE} %`],
    ),
  );

  const warnings = [];
  for (const mode of MODES) {
    const up = get("upstream", mode);
    const gws = results.filter((r) => r.mode === mode && GATEWAY_ROWS.includes(r.target === "relay-direct" ? "relay-strict" : r.target));
    if (!up || !gws.length) continue;
    const fastest = gws.reduce((a, b) => (b.rps > a.rps ? b : a));
    const x = up.rps / fastest.rps;
    console.log(`\nupstream direct (${mode}): ${fmt(up.rps)} req/s = ${fmt(x, 1)}× the fastest gateway row (${fastest.target}, ${fmt(fastest.rps)} req/s)`);
    if (!(x >= 3)) warnings.push(`upstream direct ${mode} is only ${fmt(x, 1)}× the fastest gateway row (${fastest.target}): the load generator or the upstream may be the bottleneck`);
  }

  const ratios = [];
  for (const mode of MODES) {
    const pt = get("passthrough", mode);
    const pk = get("portkey", mode);
    for (const name of [...RELAY_ROWS, "relay-direct", "portkey"]) {
      const rl = get(name, mode);
      if (!rl || (!pt && !pk) || (name === "portkey" && !pt)) continue;
      ratios.push([
        name,
        mode,
        pt ? fmt(rl.rps / pt.rps, 2) : "-",
        pt ? fmt(rl.cpuMsPerRequest / pt.cpuMsPerRequest, 2) : "-",
        pk && name !== "portkey" ? fmt(rl.rps / pk.rps, 2) : "-",
        pt && mode === "stream" ? fmt(rl.ttfb50 - pt.ttfb50, 2) : "-",
        pt && mode === "stream" ? fmt((rl.idle?.ttfb50 ?? NaN) - (pt.idle?.ttfb50 ?? NaN), 2) : "-",
      ]);
    }
  }
  if (ratios.length) {
    console.log("\nratios (same run): vs the passthrough Worker, vs Portkey\n");
    console.log(table(ratios, ["row", "mode", "req/s × pt", "CPU/req × pt", "req/s × portkey", "+ttfb p50 ms (load)", "+ttfb p50 ms (idle)"]));
  }

  if (resilience.length) {
    console.log("\nresilience: one upstream fails 50% of requests (non-stream)\n");
    console.log(
      table(
        resilience.map((r) => [r.target, r.n, fmt((100 * r.ok) / r.n, 1), fmt(r.rps), fmt(r.p50, 2), fmt(r.p99, 2), fmt(r.cpuMsPerRequest, 3)]),
        ["target", "requests", "success %", "req/s", "p50 ms", "p99 ms", "CPU ms/req"],
        1,
      ),
    );
  }

  if (limiter) {
    console.log(`\nlimiter: one Limiter object (${limiter.key} key with a daily quota, mock channel, ${LIMITER_CONCURRENCY} connections, ${SECONDS} s)\n`);
    console.log(
      table(
        [[fmt(limiter.decisionsPerSecond), limiter.admitted, limiter.refused, limiter.n - limiter.admitted - limiter.refused, fmt(limiter.p50, 2), fmt(limiter.p99, 2), fmt(limiter.cpuMsPerRequest, 3)]],
        ["decisions/s", "admitted", "refused", "other", "p50 ms", "p99 ms", "CPU ms/req"],
        0,
      ),
    );
  }

  if (memory) {
    const mb = (b) => fmt(b / 2 ** 20, 1);
    console.log(`\nmemory: one ${LONG_MB} MB stream through the relay (workerd RSS every 200 ms)\n`);
    console.log(
      table(
        [[memory.status, fmt(memory.bytes / 1e6, 1), fmt(memory.seconds, 1), fmt(memory.mbPerSecond, 1), memory.whole ? "yes" : `NO (${memory.chars}/${memory.expectedChars} chars, [DONE] ${memory.done ? "seen" : "missing"})`, mb(memory.rssStart), mb(memory.rssPeak), mb(memory.rssEnd)]],
        ["status", "MB received", "s", "MB/s", "whole", "RSS start MiB", "peak MiB", "end MiB"],
        0,
      ),
    );
    if (!memory.whole) warnings.push("the long stream did not arrive whole");
  }

  if (size) {
    console.log(
      `\nbuild/index_bg.wasm: ${(size.raw / 1024).toFixed(1)} KiB raw, ${(size.gz / 1024).toFixed(1)} KiB gzip -9` +
        `  (build/index.js ${(size.js / 1024).toFixed(1)} KiB)`,
    );
  } else console.log("\nbuild/index_bg.wasm: not built");
  const failed = results.filter((r) => r.ok === 0);
  if (failed.length) warnings.push(`no successful request for ${failed.map((r) => `${r.target} ${r.mode}`).join(", ")}`);
  const erred = results.filter((r) => r.errors > 0 && r.ok > 0);
  if (erred.length) warnings.push(`errors in ${erred.map((r) => `${r.target} ${r.mode} (${r.errors})`).join(", ")}`);
  for (const w of warnings) console.log(`\nWARNING: ${w}`);

  fs.mkdirSync(L.OUT, { recursive: true });
  const file = path.join(L.OUT, `bench-${started.toISOString().replace(/[:.]/g, "-")}.json`);
  fs.writeFileSync(
    file,
    JSON.stringify(
      {
        started: started.toISOString(),
        commit: L.gitCommit(),
        node: process.version,
        loadgen: loadgenDesc,
        pinning: L.pinning,
        config: { seconds: SECONDS, warmup: WARMUP, concurrency: CONCURRENCY, limiterConcurrency: LIMITER_CONCURRENCY, longMB: LONG_MB, modes: MODES, only: ONLY ? [...ONLY] : null },
        strictRow: relay?.strictName ?? null,
        portkey: portkey ? { version: portkey.version } : { note: portkeyNote },
        results,
        resilience,
        limiter,
        memory,
        wasm: size,
        warnings,
      },
      null,
      2,
    ),
  );
  console.log(`\nraw results: ${path.relative(process.cwd(), file)}`);
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
