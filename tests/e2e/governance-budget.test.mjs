// Governance: tenant budgets (src/budget.rs) priced by the price table (src/pricing.rs), and
// per-region tenants. A soft budget warns in a response header and POSTs a webhook to the
// tenant's URL (here a loopback listener; retried until it answers 2xx); a hard budget blocks
// with 402 or downgrades to the tenant's fallback model. A tenant pinned to a jurisdiction is
// served only by channels in it, and its limiters live there.
//
// Prices: gpt-budget costs 1 micro-unit per input token and 2 per output token, so each fake
// answer (13 prompt + 7 completion tokens) costs exactly 27.
//
// Synchronisation: settlement runs in waitUntil and is awaited by bounded polling of
// GET /admin/tenants/{id}/limits; webhook deliveries are awaited as promises, bounded by within().
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID, createHmac } from "node:crypto";
import { startRelay, assertOpenAIError, pollUntil, within, WEBHOOK_SECRET } from "./harness.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";
import { startWebhookListener } from "./fake-webhook.mjs";

const COST = 13 * 1 + 7 * 2;

describe("governance: budgets and regions", () => {
  let relay, fake, hook;
  let seq = 0;

  before(async () => {
    fake = await startFakeOpenAI();
    hook = await startWebhookListener([500]);
    relay = await startRelay();
    const s = await relay.seed({
      upstreamBaseUrl: fake.baseUrl,
      models: { "b-main": "gpt-budget", "b-cheap": "gpt-budget-mini" },
    });
    await relay.adminOk("PUT", "/admin/prices/gpt-budget", { input: 1_000_000, output: 2_000_000 });
    await relay.adminOk("PUT", "/admin/prices/gpt-budget-mini", { input: 0, output: 0 });
    // A second channel in the EU, serving one model only there.
    const eu = await relay.adminOk(
      "POST",
      "/admin/channels",
      { name: "eu", provider: "openai", base_url: fake.baseUrl, api_keys: ["sk-up"], models: ["gpt-eu"], region: "eu-west" },
      [201],
    );
    assert.equal(eu.region, "eu-west");
    await relay.adminOk("PUT", "/admin/model-map/b-eu", { channel_id: eu.id, upstream_model: "gpt-eu" });
    void s;
  }, { timeout: 60_000 });
  after(async () => {
    await hook?.close();
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  async function tenantKey(extra) {
    const n = ++seq;
    // Strict: each request settles its spend at the tenant's limiter, which these tests read.
    const tenant = await relay.adminOk("POST", "/admin/tenants", { name: `budget-${n}`, models: null, strict_limits: true, ...extra }, [201]);
    const key = await relay.adminOk("POST", `/admin/tenants/${tenant.id}/keys`, { name: `bk-${n}`, models: null, expires_at: null }, [201]);
    return { tenant, key };
  }
  const tenantLimits = (id) => relay.adminOk("GET", `/admin/tenants/${id}/limits`, undefined, [200]);
  const chat = (key, model = "b-main") =>
    relay.callJson("/v1/chat/completions", { key, body: { model, max_tokens: 10, messages: [{ role: "user", content: `hi ${randomUUID()}` }] } });
  /** Waits until the tenant's settled spend is `micros` (nothing in flight). */
  const spent = (id, micros) =>
    pollUntil(() => tenantLimits(id), (l) => l.usage.in_flight === 0 && l.usage.budget?.spent_micros === micros, {
      what: `tenant spend ${micros}`,
    });

  it("prices are listed, set, read and removed through the admin API", async () => {
    const list = await relay.adminOk("GET", "/admin/prices");
    const custom = list.data.find((p) => p.model === "gpt-budget");
    assert.equal(custom.source, "custom");
    assert.ok(list.data.some((p) => p.model === "gpt-4o" && p.source === "builtin"), "built-in defaults are listed");
    const one = await relay.adminOk("GET", "/admin/prices/gpt-4o-2024-08-06");
    assert.equal(one.matched, "gpt-4o", "a dated snapshot takes its family's price");
    await relay.adminOk("PUT", "/admin/prices/tmp-model", { input: 5, output: 6 });
    await relay.adminOk("DELETE", "/admin/prices/tmp-model");
    assertOpenAIError(await relay.admin("DELETE", "/admin/prices/tmp-model"), { status: 404 });
    assertOpenAIError(await relay.admin("PUT", "/admin/prices/x", { input: -1, output: 1 }), { status: 400, param: "input" });
    assertOpenAIError(await relay.admin("PUT", "/admin/prices/x", { input: 1, outptu: 1 }), { status: 400 });
  });

  it("usage rows carry the cost, priced in integer micro-units", async () => {
    const { key } = await tenantKey();
    const r = await chat(key.key);
    assert.equal(r.status, 200, r.text);
    const row = await relay.usageRow(r.headers.get("x-request-id"));
    assert.equal(row.cost_micros, COST);
  });

  it("a tenant's price multiplier scales its costs exactly", async () => {
    const { tenant, key } = await tenantKey({ price_multiplier_ppm: 1_500_000 });
    assert.equal(tenant.price_multiplier_ppm, 1_500_000);
    const r = await chat(key.key);
    const row = await relay.usageRow(r.headers.get("x-request-id"));
    assert.equal(row.cost_micros, Math.ceil(COST * 1.5), "27 × 1.5 = 40.5, rounded up");
    assertOpenAIError(await relay.admin("POST", "/admin/tenants", { name: "x", price_multiplier_ppm: -1 }), {
      status: 400,
      param: "price_multiplier_ppm",
    });
  });

  it("soft budget: a header warning once reached, and a webhook delivered (retried after a 500)", async () => {
    const { tenant, key } = await tenantKey({ budget: { soft_micros: 2 * COST, webhook_url: hook.url } });
    assert.equal((await chat(key.key)).status, 200);
    await spent(tenant.id, COST);
    const second = await chat(key.key);
    assert.equal(second.status, 200);
    assert.equal(second.headers.get("x-relay-budget-warning"), null, "not reached before the second settles");
    await spent(tenant.id, 2 * COST);
    const third = await chat(key.key);
    assert.equal(third.status, 200, "a soft budget never blocks");
    assert.match(third.headers.get("x-relay-budget-warning") ?? "", /soft budget reached: spent 54 of 54/);
    // First delivery answered 500, the retry 200: the same notice twice.
    const [first, retried] = await within(hook.count(2), 20_000, "webhook delivered and retried");
    for (const d of [first, retried]) {
      assert.equal(d.method, "POST");
      assert.equal(d.headers["content-type"], "application/json");
      const body = JSON.parse(d.body);
      assert.equal(body.type, "budget.soft_limit_reached");
      assert.equal(body.tenant_id, tenant.id);
      assert.equal(body.spent_micros, 2 * COST);
      assert.equal(body.soft_limit_micros, 2 * COST);
      // Signed: t=<ms>,v1=HMAC-SHA256(WEBHOOK_SECRET, "<ms>.<body>").
      const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(d.headers["x-relay-signature"] ?? "");
      assert.ok(m, `signature header: ${d.headers["x-relay-signature"]}`);
      const expected = createHmac("sha256", WEBHOOK_SECRET).update(`${m[1]}.${d.body}`).digest("hex");
      assert.equal(m[2], expected, "the signature verifies");
    }
    assert.equal(first.body, retried.body);
    await spent(tenant.id, 3 * COST);
    const l = await tenantLimits(tenant.id);
    assert.equal(l.usage.pending_alerts, 0, "nothing left to deliver");
    assert.equal(hook.received.length, 2, "announced once per period");
  });

  it("hard budget, block: 402 budget_exceeded with Retry-After, nothing sent upstream", async () => {
    const { tenant, key } = await tenantKey({ budget: { hard_micros: COST + 20 } });
    assert.equal((await chat(key.key)).status, 200);
    await spent(tenant.id, COST);
    const before = fake.requests.length;
    const r = await chat(key.key);
    const e = assertOpenAIError(r, { status: 402, code: "budget_exceeded", type: "insufficient_quota" });
    assert.match(e.message, /monthly budget is spent/);
    assert.match(r.headers.get("retry-after") ?? "", /^\d+$/);
    assert.equal(fake.requests.length, before, "refused before the upstream");
  });

  it("hard budget, downgrade: served by the fallback model, which the reply reports", async () => {
    const { tenant, key } = await tenantKey({
      budget: { hard_micros: COST + 20, on_hard: "downgrade", fallback_model: "b-cheap" },
    });
    const first = await chat(key.key);
    assert.equal(first.json.model, "gpt-budget");
    await spent(tenant.id, COST);
    const r = await chat(key.key);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.model, "gpt-budget-mini", "the model field reports what served it");
    assert.equal(r.headers.get("x-relay-downgraded"), "b-main -> b-cheap");
    const row = await relay.usageRow(r.headers.get("x-request-id"));
    assert.equal(row.model, "b-main");
    assert.equal(row.upstream_model, "gpt-budget-mini");
    assert.equal(row.cost_micros, 0);
  });

  it("budget input is checked: https webhooks, known fallback, soft ≤ hard", async () => {
    const bad = async (budget, param) =>
      assertOpenAIError(await relay.admin("POST", "/admin/tenants", { name: "bad", budget }), { status: 400, param });
    await bad({ soft_micros: 1, webhook_url: "http://hooks.example.com/x" }, "budget.webhook_url");
    await bad({ soft_micros: 1, webhook_url: "ftp://127.0.0.1/x" }, "budget.webhook_url");
    await bad({ hard_micros: 5, on_hard: "downgrade", fallback_model: "no-such-model" }, "budget.fallback_model");
    await bad({ hard_micros: 5, on_hard: "downgrade" }, "budget.fallback_model");
    await bad({ soft_micros: 9, hard_micros: 5 }, "budget.soft_micros");
    await bad({ soft_micros: -1 }, "budget");
  });

  it("a tenant pinned to eu is served only by channels in eu; its limiters live there", async () => {
    const { tenant, key } = await tenantKey({ jurisdiction: "eu", limits: { day: { requests: 100 } } });
    assert.equal(tenant.jurisdiction, "eu");
    const ok = await chat(key.key, "b-eu");
    assert.equal(ok.status, 200, ok.text);
    const refused = await chat(key.key, "b-main");
    const e = assertOpenAIError(refused, { status: 403, code: "region_not_served", param: "model" });
    assert.match(e.message, /jurisdiction 'eu'/);
    const l = await pollUntil(() => tenantLimits(tenant.id), (l) => l.usage.in_flight === 0, { what: "settled" });
    assert.equal(l.usage.day.requests, 1, "the refused request was never reserved");
    // The jurisdiction is fixed; a bad one is refused; a channel region must be known.
    assertOpenAIError(await relay.admin("PATCH", `/admin/tenants/${tenant.id}`, { jurisdiction: "fedramp" }), { status: 400, param: "jurisdiction" });
    assertOpenAIError(await relay.admin("POST", "/admin/tenants", { name: "x", jurisdiction: "mars" }), { status: 400, param: "jurisdiction" });
    assertOpenAIError(
      await relay.admin("POST", "/admin/channels", { name: "x", provider: "openai", base_url: fake.baseUrl, api_keys: ["k"], region: "atlantis" }),
      { status: 400, param: "region" },
    );
  });

  it("a tenant without a jurisdiction is served by any region", async () => {
    const { key } = await tenantKey();
    assert.equal((await chat(key.key, "b-eu")).status, 200);
    assert.equal((await chat(key.key, "b-main")).status, 200);
  });

  it("a model group's price ratio multiplies with the tenant's, and goes away with the group", async () => {
    const g = await relay.adminOk("PUT", "/admin/model-groups/premium", { models: ["b-main"], price_multiplier_ppm: 2_000_000 });
    assert.equal(g.price_multiplier_ppm, 2_000_000);
    const { key } = await tenantKey({ price_multiplier_ppm: 1_500_000 });
    const r = await chat(key.key);
    const row = await relay.usageRow(r.headers.get("x-request-id"));
    assert.equal(row.cost_micros, COST * 3, "27 × 2 × 1.5");
    const other = await chat(key.key, "b-cheap");
    assert.equal((await relay.usageRow(other.headers.get("x-request-id"))).cost_micros, 0, "not in the group");
    await relay.adminOk("DELETE", "/admin/model-groups/premium");
    const after = await chat(key.key);
    assert.equal((await relay.usageRow(after.headers.get("x-request-id"))).cost_micros, Math.ceil(COST * 1.5));
    assertOpenAIError(await relay.admin("PUT", "/admin/model-groups/bad", { models: ["b-main"], price_multiplier_ppm: 0.5 }), {
      status: 400,
      param: "price_multiplier_ppm",
    });
  });
});
