// The usage ledger's two write paths under concurrency: through the usage Queue (wrangler.toml's
// USAGE_QUEUE, the default) and directly to D1 (no queue bound). Every request's row arrives
// exactly once, a consumer batch that fails is retried without loss, and no request is
// cancelled by workerd as hung — which happened while requests waited on a batch another
// request was writing (a promise resolved by another request's I/O).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, requestId, pollUntil } from "./harness.mjs";

const HUNG = /hung and would never generate a response/i;

async function concurrentChats(relay, key, n, marker) {
  const chat = () =>
    fetch(`${relay.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "ledger-mock", messages: [{ role: "user", content: `hello ${marker}` }] }),
    }).then(async (r) => ({ status: r.status, id: requestId(r), text: await r.text() }));
  return Promise.all(Array.from({ length: n }, chat));
}

/** Waits until every request id has its usage row, and returns the rows' ids as stored. */
async function rowsFor(relay, ids) {
  const quoted = ids.map((id) => `'${id}'`).join(",");
  const db = await relay.db();
  const rows = await pollUntil(
    () => db.prepare(`SELECT request_id FROM usage WHERE request_id IN (${quoted})`).all().then((r) => r.results),
    (rows) => rows.length >= ids.length,
    { what: `${ids.length} usage rows`, timeoutMs: 20_000 },
  );
  return rows.map((r) => r.request_id);
}

for (const [path, opts] of [
  ["queue", {}],
  ["direct to D1 (no queue bound)", { extra: { queueProducers: {}, queueConsumers: {} } }],
]) {
  describe(`usage rows ${path}`, () => {
    let relay, s;
    before(async () => {
      relay = await startRelay({ ...opts, inspect: true });
      s = await relay.seed({ provider: "mock", models: { "ledger-mock": "mock-1" } });
    }, { timeout: 60_000 });
    after(async () => relay?.dispose(), { timeout: 30_000 });

    for (const n of [10, 32, 64]) {
      it(`${n} concurrent requests: ${n} rows, once each, and none cancelled as hung`, async () => {
        const results = await concurrentChats(relay, s.key, n, randomUUID());
        assert.deepEqual(results.map((r) => r.status), Array(n).fill(200), results.find((r) => r.status !== 200)?.text);
        const ids = results.map((r) => r.id);
        assert.equal(new Set(ids).size, n);
        const stored = await rowsFor(relay, ids);
        assert.equal(stored.length, n, "exactly one row per request");
        assert.deepEqual(new Set(stored), new Set(ids));
        const hung = relay.runtimeErrors.filter((e) => HUNG.test(e));
        assert.deepEqual(hung, [], "workerd cancelled no request as hung");
      });
    }
  });
}

describe("usage queue consumer failing once", () => {
  let relay, s;
  before(async () => {
    relay = await startRelay({ vars: { USAGE_CONSUMER_FAIL_BATCHES: "1" } });
    s = await relay.seed({ provider: "mock", models: { "ledger-mock": "mock-1" } });
  }, { timeout: 60_000 });
  after(async () => relay?.dispose(), { timeout: 30_000 });

  it("a refused batch is redelivered: every row arrives, none twice", async () => {
    const results = await concurrentChats(relay, s.key, 20, randomUUID());
    assert.ok(results.every((r) => r.status === 200));
    const ids = results.map((r) => r.id);
    const stored = await rowsFor(relay, ids);
    assert.equal(stored.length, ids.length);
    const db = await relay.db();
    const { results: counts } = await db
      .prepare(`SELECT request_id, COUNT(*) AS n FROM usage WHERE request_id IN (${ids.map((i) => `'${i}'`).join(",")}) GROUP BY request_id`)
      .all();
    assert.ok(counts.every((c) => c.n === 1), "no row written twice");
  });
});
