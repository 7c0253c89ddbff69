// The response cache (src/response_cache.rs, Workers Cache API): opt-in per request with
// `Cache-Control: max-age=N`, keyed by a canonical form of the request scoped to the tenant.
// A hit is answered without the upstream (x-relay-cache: hit, usage_source "cache", nothing
// billed); a stream hit replays the SSE it stored.
//
// Synchronisation: a reply is stored after the response (waitUntil), so the tests poll with the
// same request (bounded) until it is a hit; upstream hits are counted by a unique marker.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, pollUntil, sseEvents } from "./harness.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";

describe("response cache", () => {
  let relay, fake, s, other;

  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({ upstreamBaseUrl: fake.baseUrl, models: { "c-ok": "gpt-cache" } });
    const t2 = await relay.adminOk("POST", "/admin/tenants", { name: "other", models: null }, [201]);
    other = await relay.newKey(t2.id);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  const hits = (marker) => fake.find((r) => r.rawBody.includes(marker)).length;
  const ask = (key, body, cacheControl) =>
    relay.callJson("/v1/chat/completions", { key, body, headers: cacheControl ? { "cache-control": cacheControl } : {} });

  it("a non-stream reply is stored and answered from the cache, whatever the field order", async () => {
    const marker = `cache-${randomUUID()}`;
    const first = await ask(s.key, { model: "c-ok", temperature: 0, messages: [{ role: "user", content: marker }] }, "max-age=60");
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get("x-relay-cache"), "miss");
    const reordered = { messages: [{ content: marker, role: "user" }], temperature: 0, model: "c-ok" };
    let misses = 1;
    const hit = await pollUntil(
      async () => {
        const r = await ask(s.key, reordered, "max-age=60");
        if (r.headers.get("x-relay-cache") === "miss") misses++;
        return r;
      },
      (r) => r.headers.get("x-relay-cache") === "hit",
      { what: "a cache hit" },
    );
    assert.equal(hits(marker), misses, "only misses went upstream (the store lands after the response)");
    const again = await ask(s.key, reordered, "max-age=60");
    assert.equal(again.headers.get("x-relay-cache"), "hit");
    assert.deepEqual(again.json, hit.json, "the same reply each time");
    assert.equal(hits(marker), misses, "hits never reach the upstream");
    const row = await relay.usageRow(hit.headers.get("x-request-id"));
    assert.equal(row.usage_source, "cache");
    assert.equal(row.total_tokens, 0);
    assert.equal(row.cost_micros, 0);
  });

  it("a stream hit replays the stored SSE", async () => {
    const marker = `cache-stream-${randomUUID()}`;
    const body = { model: "c-ok", stream: true, messages: [{ role: "user", content: marker }] };
    const readStream = async () => {
      const res = await relay.call("/v1/chat/completions", { key: s.key, body, headers: { "cache-control": "max-age=60" } });
      const events = [];
      for await (const e of sseEvents(res.body)) events.push(e);
      return { res, events };
    };
    const first = await readStream();
    assert.equal(first.res.headers.get("x-relay-cache"), "miss");
    let misses = 1;
    const hit = await pollUntil(
      async () => {
        const r = await readStream();
        if (r.res.headers.get("x-relay-cache") === "miss") misses++;
        return r;
      },
      (r) => r.res.headers.get("x-relay-cache") === "hit",
      { what: "a stream hit" },
    );
    assert.match(hit.res.headers.get("content-type") ?? "", /^text\/event-stream/);
    assert.ok(hit.events.length > 3 && hit.events.at(-1).data === "[DONE]", "a whole stream, [DONE] included");
    // The hit replays one of the streams that went upstream (the last one stored).
    assert.equal(hits(marker), misses);
    assert.equal(hit.events.length, first.events.length);
  });

  it("without opting in nothing is cached; no-cache refreshes; no-store opts out", async () => {
    const marker = `nocache-${randomUUID()}`;
    const body = { model: "c-ok", messages: [{ role: "user", content: marker }] };
    for (let i = 0; i < 3; i++) {
      const r = await ask(s.key, body);
      assert.equal(r.headers.get("x-relay-cache"), null);
    }
    assert.equal(hits(marker), 3);
    await ask(s.key, body, "max-age=60");
    await pollUntil(() => ask(s.key, body, "max-age=60"), (r) => r.headers.get("x-relay-cache") === "hit", { what: "cached" });
    const before = hits(marker);
    const refreshed = await ask(s.key, body, "no-cache, max-age=60");
    assert.equal(refreshed.headers.get("x-relay-cache"), "refresh");
    assert.equal(hits(marker), before + 1, "no-cache goes upstream");
    const skipped = await ask(s.key, body, "no-store");
    assert.equal(skipped.headers.get("x-relay-cache"), null);
    assert.equal(hits(marker), before + 2);
  });

  it("entries are per tenant: another tenant's identical request is a miss", async () => {
    const marker = `tenant-${randomUUID()}`;
    const body = { model: "c-ok", messages: [{ role: "user", content: marker }] };
    await ask(s.key, body, "max-age=60");
    await pollUntil(() => ask(s.key, body, "max-age=60"), (r) => r.headers.get("x-relay-cache") === "hit", { what: "cached" });
    const theirs = await ask(other.key, body, "max-age=60");
    assert.equal(theirs.status, 200);
    assert.equal(theirs.headers.get("x-relay-cache"), "miss");
  });

  it("a key can opt in for all its requests; a request can still opt out", async () => {
    const cachingKey = await relay.newKey(s.tenantId, { cache_ttl_s: 60 });
    assert.equal(cachingKey.cache_ttl_s, 60);
    const marker = `keyopt-${randomUUID()}`;
    const body = { model: "c-ok", messages: [{ role: "user", content: marker }] };
    const first = await ask(cachingKey.key, body);
    assert.equal(first.headers.get("x-relay-cache"), "miss", "no Cache-Control needed");
    await pollUntil(() => ask(cachingKey.key, body), (r) => r.headers.get("x-relay-cache") === "hit", { what: "key-level hit" });
    const optedOut = await ask(cachingKey.key, body, "no-store");
    assert.equal(optedOut.headers.get("x-relay-cache"), null);
    for (const cache_ttl_s of [0, -5, 100000, "60"]) {
      const r = await relay.admin("POST", `/admin/tenants/${s.tenantId}/keys`, { name: "bad", cache_ttl_s });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.error.param, "cache_ttl_s");
    }
  });
});
