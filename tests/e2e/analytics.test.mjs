// The ledger and its analytics API (src/analytics.rs, src/edge/admin.rs): provenance of each
// row, totals from the API equal to the sum of the ledger rows, breakdowns, time series, the
// request log with pagination, CSV/JSON export, and tenant tokens narrowed to their tenant.
//
// Prices: gpt-ledger costs 1 micro-unit per input and 2 per output token; each fake answer
// (13 prompt + 7 completion tokens) costs 27. Synchronisation: rows are written after the
// response (waitUntil); the tests poll the ledger (bounded) until every request is there.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, assertOpenAIError, pollUntil } from "./harness.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";

describe("ledger and analytics", () => {
  let relay, fake, s, other, tokenA;
  const ids = [];

  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "l-main": "gpt-ledger", "l-500": "err-500", "l-alt": "gpt-alt" } });
    await relay.adminOk("PUT", "/admin/prices/gpt-ledger", { input: 1_000_000, output: 2_000_000 });
    const t2 = await relay.adminOk("POST", "/admin/tenants", { name: "other", models: null }, [201]);
    other = await relay.newKey(t2.id);
    tokenA = (await relay.adminOk("POST", `/admin/tenants/${s.tenantId}/tokens`, { name: "ops" }, [201])).token;
    const chat = (key, model, extra = {}) =>
      relay.callJson("/v1/chat/completions", {
        key,
        headers: { "x-relay-retries": "0" },
        body: { model, messages: [{ role: "user", content: `hi ${randomUUID()}` }], ...extra },
      });
    for (let i = 0; i < 6; i++) ids.push((await chat(s.key, "l-main")).headers.get("x-request-id"));
    for (let i = 0; i < 2; i++) ids.push((await chat(s.key, "l-alt")).headers.get("x-request-id"));
    ids.push((await chat(s.key, "l-500")).headers.get("x-request-id"));
    await chat(other.key, "l-main");
    // Every row written.
    await pollUntil(() => relay.usageRows("tenant_id = ?", s.tenantId), (rows) => rows.length === ids.length, {
      what: "all ledger rows",
    });
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const get = (path, token) => relay.admin("GET", path, undefined, token ? { token } : undefined);

  it("rows carry provenance: reported for answers, not_billed (and no cost) for an upstream 500", async () => {
    const rows = await relay.usageRows("tenant_id = ?", s.tenantId);
    const ok = rows.filter((r) => r.status === 200);
    assert.ok(ok.every((r) => r.provenance === "reported"), JSON.stringify(ok.map((r) => r.provenance)));
    assert.ok(ok.every((r) => r.inbound === "openai" && r.attempts === 1));
    const failed = rows.find((r) => r.status >= 500);
    assert.equal(failed.provenance, "not_billed");
    assert.equal(failed.cost_micros, 0);
    assert.equal(failed.total_tokens, 0);
    assert.equal(rows.filter((r) => r.model === "l-main").every((r) => r.cost_micros === 27), true);
  });

  it("the summary's totals equal the sum of the ledger rows", async () => {
    const rows = await relay.usageRows("tenant_id = ?", s.tenantId);
    const r = await get(`/admin/analytics/summary?tenant_id=${s.tenantId}`);
    assert.equal(r.status, 200, r.text);
    const st = r.json.stats;
    const sum = (f) => rows.reduce((n, row) => n + row[f], 0);
    assert.equal(st.requests, rows.length);
    assert.equal(st.errors, 1);
    assert.equal(st.total_tokens, sum("total_tokens"));
    assert.equal(st.prompt_tokens, sum("prompt_tokens"));
    assert.equal(st.cost_micros, sum("cost_micros"));
    assert.equal(st.cost_micros, 6 * 27);
    for (const p of ["p50", "p95", "p99"]) assert.ok(Number.isInteger(st.latency_ms[p]), `latency ${p}`);
  });

  it("breakdown by model and an hourly time series add up to the same totals", async () => {
    const by = await get(`/admin/analytics/breakdown?by=model&tenant_id=${s.tenantId}`);
    assert.equal(by.status, 200, by.text);
    const models = Object.fromEntries(by.json.data.map((d) => [d.key, d.stats]));
    assert.equal(models["l-main"].requests, 6);
    assert.equal(models["l-main"].cost_micros, 162);
    assert.equal(models["l-alt"].requests, 2);
    assert.equal(models["l-500"].errors, 1);
    assert.equal(by.json.data[0].key, "l-main", "sorted by cost");
    const ts = await get(`/admin/analytics/timeseries?bucket=hour&tenant_id=${s.tenantId}`);
    assert.equal(ts.status, 200, ts.text);
    const total = ts.json.data.reduce((n, b) => n + b.stats.requests, 0);
    assert.equal(total, ids.length);
    // The default range is the last 24 h, which overlaps 24 or 25 UTC hours; every one is listed.
    assert.ok([24, 25].includes(ts.json.data.length), `every hour of the default day, zeros included: ${ts.json.data.length}`);
  });

  it("the request log pages with before=, newest first", async () => {
    const first = await get(`/admin/analytics/requests?tenant_id=${s.tenantId}&limit=5`);
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.data.length, 5);
    assert.ok(first.json.next_before);
    const second = await get(`/admin/analytics/requests?tenant_id=${s.tenantId}&limit=5&before=${first.json.next_before}`);
    const seen = new Set([...first.json.data, ...second.json.data].map((r) => r.request_id));
    assert.equal(seen.size, ids.length, "no row twice, none lost");
    const errors = await get(`/admin/analytics/requests?tenant_id=${s.tenantId}&status=502`);
    assert.equal(errors.json.data.length, 1);
  });

  it("exports the ledger as CSV and JSON", async () => {
    const csv = await get(`/admin/analytics/export?format=csv&tenant_id=${s.tenantId}`);
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get("content-type"), /^text\/csv/);
    const lines = csv.text.trim().split("\n");
    assert.equal(lines.length, ids.length + 1, "a header and one line per row");
    assert.match(lines[0], /request_id/);
    for (const id of ids) assert.ok(csv.text.includes(id), `row ${id} exported`);
    const json = await get(`/admin/analytics/export?format=json&tenant_id=${s.tenantId}`);
    assert.equal(json.json.data.length, ids.length);
  });

  it("a tenant token sees only its own tenant, whatever it asks", async () => {
    const mine = await get(`/admin/analytics/summary`, tokenA);
    assert.equal(mine.status, 200, mine.text);
    assert.equal(mine.json.stats.requests, ids.length);
    const theirs = await get(`/admin/analytics/summary?tenant_id=${other.tenant_id}`, tokenA);
    assert.equal(theirs.json.stats.requests, ids.length, "narrowed to its own tenant");
    const all = await get(`/admin/analytics/summary`);
    assert.equal(all.json.stats.requests, ids.length + 1, "the admin sees both tenants");
  });

  it("bad analytics queries are 400s naming the parameter", async () => {
    assertOpenAIError(await get(`/admin/analytics/breakdown?by=color`), { status: 400, param: "by" });
    assertOpenAIError(await get(`/admin/analytics/summary?from=yesterday`), { status: 400, param: "from" });
    assertOpenAIError(await get(`/admin/analytics/requests?limit=0`), { status: 400, param: "limit" });
    assertOpenAIError(await get(`/admin/analytics/summary?bogus=1`), { status: 400, param: "bogus" });
  });

  it("body logging is opt-in per tenant, and what is kept is redacted", async () => {
    const t = await relay.adminOk("POST", "/admin/tenants", { name: "logged", models: null, log_bodies: true }, [201]);
    assert.equal(t.log_bodies, true);
    const k = await relay.newKey(t.id);
    const secret = "sk-live-abcdefghijklmnopqrstuvwxyz123456";
    const content = `reach me at jane.doe@example.com, my key is ${secret}`;
    for (const stream of [false, true]) {
      const res = await relay.call("/v1/chat/completions", {
        key: k.key,
        body: { model: "l-main", stream, messages: [{ role: "user", content }] },
      });
      assert.equal(res.status, 200);
      await res.text();
      const id = res.headers.get("x-request-id");
      await relay.usageRow(id);
      const entry = await relay.adminOk("GET", `/admin/usage/${id}`);
      const { request, response } = entry.bodies;
      assert.ok(request.includes("[REDACTED"), request);
      assert.ok(!request.includes("jane.doe@example.com") && !request.includes(secret), "redacted");
      assert.ok(response.includes("fake"), `the reply is kept (stream: ${stream}): ${response.slice(0, 120)}`);
    }
    // Not opted in: nothing kept.
    const plain = await relay.adminOk("GET", `/admin/usage/${ids[0]}`);
    assert.equal(plain.bodies, null);
    assertOpenAIError(await relay.admin("POST", "/admin/tenants", { name: "x", log_bodies: "yes" }), { status: 400, param: "log_bodies" });
  });

  it("a complete stream whose upstream reports no usage is estimated, and marked so", async () => {
    // Perplexity-style channels never get stream_options (the preset's quirk), and this fake
    // then sends no usage: the relay counts, and says so.
    const ch = await relay.adminOk("POST", "/admin/channels", { name: "pplx", provider: "perplexity", base_url: fake.baseUrl, api_keys: ["k"] }, [201]);
    await relay.adminOk("PUT", "/admin/model-map/l-est", { channel_id: ch.id, upstream_model: "gpt-est" });
    const res = await relay.call("/v1/chat/completions", {
      key: s.key,
      body: { model: "l-est", stream: true, messages: [{ role: "user", content: "count me" }] },
    });
    assert.equal(res.status, 200);
    await res.text();
    const row = await relay.usageRow(res.headers.get("x-request-id"));
    assert.equal(row.usage_source, "estimated");
    assert.equal(row.provenance, "estimated");
    assert.ok(row.completion_tokens > 0 && row.prompt_tokens > 0);
    const up = fake.find((r) => r.rawBody.includes("count me"))[0];
    assert.equal(up.body.stream_options, undefined, "the relay did not ask this upstream for usage");
  });
});
