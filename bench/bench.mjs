// edgerelay benchmark (not a test): requests/s and p50/p99 latency of a chat completion, non-stream
// and stream, through
//   (a) the fake upstream directly,
//   (b) a bare passthrough JS Worker (bench/passthrough.js) on Miniflare,
//   (c) the relay's full path (key auth, model map, upstream fetch, usage row) on Miniflare,
//   (+) relay-mock: the relay with a `mock` channel (no upstream hop), for reference,
// both Workers served through Miniflare's direct sockets (no dev entry Worker in the path, no
// inspector, cf: false), and the relay/passthrough ratios of the same run. Also the raw and
// gzip -9 size of build/index_bg.wasm.
//
//   node bench/bench.mjs            (needs build/index.js: bash scripts/build.sh)
// Environment: BENCH_REQUESTS (3000), BENCH_SECONDS (20), BENCH_CONCURRENCY (32),
// BENCH_WARMUP (300 requests), BENCH_ONLY (comma-separated of upstream, passthrough, relay,
// relay-limited, relay-lease, relay-mock, resilience; default: all).
// relay-limited: a key with a daily quota, reserved and settled at its limiter on every request;
// relay-lease: the same quota for a tenant in lease mode (lease_ms 2000).

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import zlib from "node:zlib";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";

process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
process.env.WRANGLER_SEND_METRICS = "false";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = process.env.EDGERELAY_ROOT ? path.resolve(process.env.EDGERELAY_ROOT) : path.resolve(HERE, "..");
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 3000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 300);
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(",")) : null;

const log = (...a) => console.error("[bench]", ...a);

// A hard stop, so the script always exits by itself.
const hardStop = setTimeout(() => {
  console.error("[bench] took too long, giving up");
  process.exit(2);
}, (SECONDS * 6 + 180) * 1000);
hardStop.unref();

function sizes() {
  const wasm = path.join(ROOT, "build/index_bg.wasm");
  if (!fs.existsSync(wasm)) return null;
  const buf = fs.readFileSync(wasm);
  const gz = zlib.gzipSync(buf, { level: 9 }).length;
  const js = path.join(ROOT, "build/index.js");
  return { raw: buf.length, gz, js: fs.existsSync(js) ? fs.statSync(js).size : 0 };
}

function startUpstream() {
  const worker = new Worker(path.join(HERE, "upstream.mjs"));
  return new Promise((resolve, reject) => {
    worker.once("error", reject);
    worker.once("message", ({ port }) =>
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise((r) => {
            worker.once("exit", r);
            worker.postMessage("close");
            setTimeout(() => worker.terminate().then(r, r), 3000).unref();
          }),
      }),
    );
  });
}

/** One request with the keep-alive agent; resolves with {status, ms, ttfbMs, bytes}. */
function once(agent, target, body) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let ttfb = null;
    const req = http.request(
      {
        agent,
        host: target.host,
        port: target.port,
        path: target.path,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          authorization: `Bearer ${target.key}`,
          "accept-encoding": "identity",
        },
      },
      (res) => {
        let bytes = 0;
        res.on("data", (c) => {
          if (ttfb === null) ttfb = process.hrtime.bigint();
          bytes += c.length;
        });
        res.on("end", () => {
          const t1 = process.hrtime.bigint();
          resolve({
            status: res.statusCode,
            ms: Number(t1 - t0) / 1e6,
            ttfbMs: Number((ttfb ?? t1) - t0) / 1e6,
            bytes,
          });
        });
        res.on("error", () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - t0) / 1e6, ttfbMs: 0, bytes: 0 }));
      },
    );
    req.on("error", () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - t0) / 1e6, ttfbMs: 0, bytes: 0 }));
    req.end(body);
  });
}

async function load(target, body, { requests, seconds, concurrency }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const lat = [];
  const ttfb = [];
  const statuses = new Map();
  let started = 0;
  const deadline = Date.now() + seconds * 1000;
  const t0 = process.hrtime.bigint();
  async function worker() {
    while (started < requests && Date.now() < deadline) {
      started++;
      const r = await once(agent, target, body);
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      lat.push(r.ms);
      ttfb.push(r.ttfbMs);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  agent.destroy();
  lat.sort((a, b) => a - b);
  ttfb.sort((a, b) => a - b);
  const pct = (arr, p) => (arr.length ? arr[Math.min(arr.length - 1, Math.floor((p / 100) * arr.length))] : NaN);
  const ok = [...statuses].filter(([s]) => s >= 200 && s < 300).reduce((n, [, c]) => n + c, 0);
  return {
    n: lat.length,
    ok,
    statuses: Object.fromEntries(statuses),
    rps: lat.length / wall,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    ttfb50: pct(ttfb, 50),
    wall,
  };
}

async function measure(target, body) {
  if (WARMUP > 0) await load(target, body, { requests: WARMUP, seconds: 5, concurrency: CONCURRENCY });
  return load(target, body, { requests: REQUESTS, seconds: SECONDS, concurrency: CONCURRENCY });
}

async function startPassthrough(upstreamUrl) {
  const { Miniflare } = await import("miniflare");
  const mf = new Miniflare({
    name: "passthrough",
    modules: true,
    scriptPath: path.join(HERE, "passthrough.js"),
    compatibilityDate: "2026-04-01",
    bindings: { UPSTREAM_URL: upstreamUrl },
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    cf: false,
    host: "127.0.0.1",
    port: 0,
  });
  await mf.ready;
  const url = await mf.unsafeGetDirectURL();
  return { url: url.href.replace(/\/$/, ""), dispose: () => mf.dispose() };
}

async function startRelayForBench(upstreamUrl) {
  const { startRelay } = await import("../tests/e2e/harness.mjs");
  const relay = await startRelay({
    extra: { unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }], cf: false },
  });
  const direct = (await relay.mf.unsafeGetDirectURL()).href.replace(/\/$/, "");
  const s = await relay.seed({ upstreamBaseUrl: `${upstreamUrl}/v1`, models: { bench: "gpt-bench" }, name: "bench" });
  // the same path without the network hop: the built-in mock provider answers inside the Worker
  const m = await relay.seed({ provider: "mock", models: { "bench-mock": "mock-1" }, name: "bench-mock" });
  // A key with a quota, decided at its limiter on every request (reserve + settle) ...
  const limits = { day: { requests: 1_000_000_000, tokens: 1_000_000_000_000 } };
  const limited = await relay.newKey(s.tenantId, { limits });
  // ... and the same quota for a tenant in lease mode (no limiter call per request).
  const leaseTenant = await relay.adminOk("POST", "/admin/tenants", { name: "bench-lease", models: null, lease_ms: 2000 }, [201]);
  const leased = await relay.newKey(leaseTenant.id, { limits });
  // Resilience: a model with two routes, one to an upstream failing every other request.
  const channel = (name, base_url) =>
    relay.adminOk("POST", "/admin/channels", { name, provider: "openai", base_url, api_keys: ["sk-bench"] }, [201]);
  const flaky = await channel("bench-flaky", `${upstreamUrl}/flaky/v1`);
  const healthy = await channel("bench-healthy", `${upstreamUrl}/v1`);
  await relay.adminOk("PUT", "/admin/model-map/bench-failover", {
    routes: [
      { channel_id: flaky.id, upstream_model: "gpt-bench" },
      { channel_id: healthy.id, upstream_model: "gpt-bench" },
    ],
  });
  return { url: direct, key: s.key, mockKey: m.key, limitedKey: limited.key, leaseKey: leased.key, relay };
}

function fmt(n, d = 0) {
  return Number.isFinite(n) ? n.toFixed(d) : "-";
}

function table(rows, headers) {
  const cells = [headers, ...rows].map((r) => r.map(String));
  const w = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
  return [line(cells[0]), w.map((x) => "-".repeat(x)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

async function main() {
  const size = sizes();
  const hasBuild = fs.existsSync(path.join(ROOT, "build/index.js"));
  const want = (name) => !ONLY || ONLY.has(name);

  const upstream = await startUpstream();
  log(`fake upstream at ${upstream.url}`);
  const cleanups = [upstream.close];
  const targets = [];
  try {
    targets.push({ name: "upstream", url: upstream.url, key: "sk-bench" });
    if (want("passthrough")) {
      const pt = await startPassthrough(upstream.url);
      cleanups.push(pt.dispose);
      targets.push({ name: "passthrough", url: pt.url, key: "sk-bench" });
    }
    if (want("relay")) {
      if (!hasBuild) log("build/index.js missing: skipping the relay (bash scripts/build.sh)");
      else {
        const r = await startRelayForBench(upstream.url);
        cleanups.push(r.relay.dispose);
        targets.push({ name: "relay", url: r.url, key: r.key });
        if (want("relay-limited")) targets.push({ name: "relay-limited", url: r.url, key: r.limitedKey });
        if (want("relay-lease")) targets.push({ name: "relay-lease", url: r.url, key: r.leaseKey });
        if (want("relay-mock")) targets.push({ name: "relay-mock", url: r.url, key: r.mockKey, model: "bench-mock" });
      }
    }
    const modes = [
      ["non-stream", { model: "bench", messages: [{ role: "user", content: "Hello" }] }],
      ["stream", { model: "bench", messages: [{ role: "user", content: "Hello" }], stream: true }],
    ];
    const results = [];
    for (const [mode, bodyObj] of modes) {
      for (const t of targets) {
        if (!want(t.name)) continue;
        const body = JSON.stringify({ ...bodyObj, model: t.model ?? "bench" });
        const u = new URL(t.url);
        log(`${t.name} ${mode}: ${REQUESTS} requests or ${SECONDS} s, ${CONCURRENCY} concurrent (+${WARMUP} warm-up)`);
        const r = await measure({ host: u.hostname, port: Number(u.port), path: "/v1/chat/completions", key: t.key }, body);
        results.push({ target: t.name, mode, ...r });
        if (r.ok !== r.n) log(`  ${t.name} ${mode}: statuses ${JSON.stringify(r.statuses)}`);
      }
    }

    const rows = results.map((r) => [
      r.target,
      r.mode,
      r.n,
      r.n - r.ok,
      fmt(r.rps),
      fmt(r.p50, 2),
      fmt(r.p99, 2),
      fmt(r.ttfb50, 2),
    ]);
    console.log(`\nedgerelay bench — ${CONCURRENCY} concurrent, up to ${REQUESTS} requests or ${SECONDS} s per row, node ${process.version}\n`);
    console.log(table(rows, ["target", "mode", "requests", "errors", "req/s", "p50 ms", "p99 ms", "ttfb p50 ms"]));

    const ratios = [];
    for (const [mode] of modes) {
      const pt = results.find((r) => r.target === "passthrough" && r.mode === mode);
      for (const name of ["relay", "relay-limited", "relay-lease"]) {
        const rl = results.find((r) => r.target === name && r.mode === mode);
        if (pt && rl) ratios.push([`${name} ${mode}`, fmt(rl.rps / pt.rps, 2), fmt(rl.p50 / pt.p50, 2), fmt(rl.p99 / pt.p99, 2)]);
      }
    }
    if (ratios.length) {
      console.log("\nrelay / passthrough (same run)\n");
      console.log(table(ratios, ["mode", "req/s ×", "p50 ×", "p99 ×"]));
    }
    // Resilience: one upstream fails half its requests; direct vs the relay with a second route.
    const resilience = [];
    const flakyBody = JSON.stringify({ model: "bench", messages: [{ role: "user", content: "Hello" }] });
    if (want("resilience")) {
      const u = new URL(upstream.url);
      log(`resilience: direct to the failing upstream, ${REQUESTS} requests`);
      resilience.push({ target: "direct (50% failing)", ...(await load({ host: u.hostname, port: Number(u.port), path: "/flaky/v1/chat/completions", key: "sk-bench" }, flakyBody, { requests: REQUESTS, seconds: SECONDS, concurrency: CONCURRENCY })) });
      const relayTarget = targets.find((t) => t.name === "relay");
      if (relayTarget) {
        const r = new URL(relayTarget.url);
        log(`resilience: relay with a failing and a healthy route, ${REQUESTS} requests`);
        const body = JSON.stringify({ model: "bench-failover", messages: [{ role: "user", content: "Hello" }] });
        resilience.push({ target: "relay (failing + healthy route)", ...(await load({ host: r.hostname, port: Number(r.port), path: "/v1/chat/completions", key: relayTarget.key }, body, { requests: REQUESTS, seconds: SECONDS, concurrency: CONCURRENCY })) });
      }
      console.log("\nresilience: one upstream fails 50% of requests (non-stream, same run)\n");
      console.log(
        table(
          resilience.map((r) => [r.target, "non-stream", r.n, fmt((100 * r.ok) / r.n, 1), fmt(r.rps), fmt(r.p50, 2), fmt(r.p99, 2)]),
          ["target", "mode", "requests", "success %", "req/s", "p50 ms", "p99 ms"],
        ),
      );
    }
    if (size) {
      console.log(
        `\nbuild/index_bg.wasm: ${(size.raw / 1024).toFixed(1)} KiB raw, ${(size.gz / 1024).toFixed(1)} KiB gzip -9` +
          `  (build/index.js ${(size.js / 1024).toFixed(1)} KiB)`,
      );
    } else console.log("\nbuild/index_bg.wasm: not built");
    const failed = results.filter((r) => r.ok === 0);
    if (failed.length) console.log(`\nWARNING: no successful request for ${failed.map((r) => `${r.target} ${r.mode}`).join(", ")}`);
  } finally {
    for (const c of cleanups.reverse()) await Promise.race([c(), new Promise((r) => setTimeout(r, 15_000).unref())]).catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
