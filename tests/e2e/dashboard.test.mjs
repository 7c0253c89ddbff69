// The dashboard page (src/edge/dashboard.html at GET /admin/ui) in headless Chromium: real chat
// requests through the mock provider, then the page signed in with the admin token must show
// them in the spend chart, the cost-by-model chart and the request log; a wrong token must be
// refused with a visible error; a tenant token sees no circuit breakers.
//
// Chromium is Debian's /usr/bin/chromium (scripts/setup.sh installs it), driven by
// playwright-core, which downloads nothing. Its absence is a failure, not a skip.
//
// Synchronisation: usage rows are written after each response, so the test waits (bounded) for
// every row before opening the page; the page then loads on its own and the test waits on
// selectors that only exist once a section is populated (data-state="ready"), never on sleeps.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { startRelay, ADMIN_TOKEN, ROOT, chatBody, requestId, sse } from "./harness.mjs";

const CHROMIUM = "/usr/bin/chromium";
const OUT_DIR = path.join(ROOT, "tests/e2e/out");
const WAIT = { timeout: 20_000 };
// Per million tokens, so the mock's requests cost something the charts can show.
const MOCK_PRICE = { input: 2_000_000, output: 8_000_000 };

/** Micro-units → currency units as the page writes them (at most 6 decimals, no trailing 0s). */
function money(micros) {
  const frac = String(micros % 1_000_000).padStart(6, "0").replace(/0+$/, "");
  return `${Math.floor(micros / 1_000_000)}${frac ? "." + frac : ""}`;
}

describe("dashboard /admin/ui in headless Chromium", () => {
  let relay, s, browser;
  const made = [];

  before(async () => {
    assert.ok(
      fs.existsSync(CHROMIUM),
      `${CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium package), ` +
        "or apt-get install --no-install-recommends chromium",
    );
    relay = await startRelay();
    s = await relay.seed({ provider: "mock", models: { demo: "mock-1" } });
    await relay.adminOk("PUT", "/admin/prices/mock-1", MOCK_PRICE, [200, 201]);
    for (let i = 0; i < 10; i++) {
      const body = chatBody("demo", { messages: [{ role: "user", content: `dashboard request ${i}` }] });
      if (i % 3 === 2) {
        const res = await relay.call("/v1/chat/completions", { key: s.key, body: { ...body, stream: true } });
        assert.equal(res.status, 200, `stream ${i}`);
        const events = await sse(res);
        assert.equal(events.at(-1)?.data, "[DONE]", `stream ${i} complete`);
        made.push(requestId(res));
      } else {
        const r = await relay.callJson("/v1/chat/completions", { key: s.key, body });
        assert.equal(r.status, 200, `request ${i}: ${r.text}`);
        made.push(requestId(r));
      }
    }
    for (const id of made) await relay.usageRow(id);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-dev-shm-usage"],
    });
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  /** A fresh page (its own session storage) that records uncaught page errors. */
  async function openPage() {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e));
    const res = await page.goto(`${relay.url}/admin/ui`);
    assert.equal(res?.status(), 200, "GET /admin/ui");
    assert.match(res.headers()["content-type"] ?? "", /^text\/html/, "served as HTML");
    await page.waitForSelector('[data-testid="login"]', { state: "visible", ...WAIT });
    return { context, page, pageErrors };
  }

  async function signIn(page, token) {
    await page.fill('[data-testid="token-input"]', token);
    await page.click('[data-testid="login-button"]');
  }

  it("is served without a token and shows only the sign-in form", async () => {
    const r = await relay.admin("GET", "/admin/ui", undefined, { token: null });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.text.length < 40 * 1024, `under 40 KB (${r.text.length} bytes)`);
    assert.doesNotMatch(r.text, /(src|href)="(https?:)?\/\//, "no external resources");
  });

  it("signed in with the admin token, charts and the request log show the requests", async () => {
    const { context, page, pageErrors } = await openPage();
    try {
      await signIn(page, ADMIN_TOKEN);
      await page.waitForSelector('[data-testid="dashboard"]', { state: "visible", ...WAIT });
      await page.waitForSelector('[data-testid="chart-spend"] rect', WAIT);
      await page.waitForSelector('[data-testid="chart-cost-model"] [data-key="demo"]', WAIT);
      await page.waitForSelector('[data-testid="section-requests"][data-state="ready"] [data-testid="request-row"]', WAIT);

      const shown = await page.$$eval('[data-testid="request-row"]', (rows) => rows.map((r) => r.dataset.requestId));
      assert.ok(shown.length >= 10, `the log shows ≥ 10 rows (got ${shown.length})`);
      for (const id of made) assert.ok(shown.includes(id), `request ${id} is in the log`);

      // One bar per non-empty bucket, as the API reports them.
      const now = Date.now();
      const ts = await relay.adminOk("GET", `/admin/analytics/timeseries?bucket=hour&from=${now - 86_400_000}&to=${now}`);
      const nonEmpty = ts.data.filter((b) => b.stats.requests > 0).length;
      assert.ok(nonEmpty >= 1, `some bucket has requests: ${JSON.stringify(ts.data)}`);
      assert.equal(await page.locator('[data-testid="chart-spend"] rect').count(), nonEmpty, "spend bars");
      assert.equal(await page.locator('[data-testid="chart-tokens"] circle').count(), nonEmpty, "token points");

      // The model's bar carries its cost, summed from the usage rows and written as the page does.
      const rows = await relay.usageRows("request_id IN (" + made.map(() => "?").join(",") + ")", ...made);
      const cost = rows.reduce((sum, r) => sum + Number(r.cost_micros), 0);
      assert.ok(cost > 0, "the mock's requests cost something at the test's price");
      const demoBar = page.locator('[data-testid="chart-cost-model"] [data-key="demo"]');
      assert.match(await demoBar.textContent(), new RegExp(`${money(cost).replace(".", "\\.")} · 10 req`), "cost of demo");
      assert.equal(await page.locator('[data-testid="summary-spend"] b').textContent(), money(cost));
      assert.equal(await page.locator('[data-testid="summary-requests"] b').textContent(), "10");

      // The other sections load too; the admin token sees the mock channel's breaker.
      for (const id of ["summary", "spend", "cost", "latency", "errors", "breakers"]) {
        await page.waitForSelector(`[data-testid="section-${id}"][data-state="ready"]`, WAIT);
      }
      await page.waitForSelector(`[data-testid="breaker-row"][data-channel="${s.channelId}"]`, WAIT);
      await page.waitForSelector('[data-testid="chart-latency-model"] [data-key="demo"]', WAIT);
      await page.waitForSelector(`[data-testid="chart-error-channel"] [data-key="${s.channelId}"]`, WAIT);

      fs.mkdirSync(OUT_DIR, { recursive: true });
      await page.screenshot({ path: path.join(OUT_DIR, "dashboard.png"), fullPage: true });
      assert.deepEqual(pageErrors, [], "no uncaught errors in the page");

      // Signing out forgets the token; a wrong one is refused with a visible error.
      await page.click('[data-testid="logout"]');
      await page.waitForSelector('[data-testid="login"]', { state: "visible", ...WAIT });
      assert.equal(await page.evaluate(() => sessionStorage.length), 0, "token forgotten");
      await signIn(page, "not-the-admin-token");
      const error = await page.waitForSelector('[data-testid="error"]', { state: "visible", ...WAIT });
      assert.match(await error.textContent(), /401/);
      assert.ok(await page.locator('[data-testid="dashboard"]').isHidden(), "no dashboard for a wrong token");
      assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused token is not kept");
      assert.deepEqual(pageErrors, [], "no uncaught errors in the page");
    } finally {
      await context.close();
    }
  });

  it("a tenant token gets the dashboard without circuit breakers", async () => {
    const issued = await relay.adminOk("POST", `/admin/tenants/${s.tenantId}/tokens`, { name: "dashboard" }, [201]);
    const { context, page, pageErrors } = await openPage();
    try {
      await signIn(page, issued.token);
      const section = await page.waitForSelector('[data-testid="section-breakers"][data-state="unavailable"]', WAIT);
      assert.match(await section.textContent(), /not available for tenant tokens/i);
      await page.waitForSelector('[data-testid="request-row"]', WAIT);
      assert.deepEqual(pageErrors, [], "no uncaught errors in the page");
    } finally {
      await context.close();
    }
  });
});
