// /health, and /v1/models through the official OpenAI SDK: only the key's models are listed.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, sdk, requestId, assertOpenAIError } from "./harness.mjs";

describe("health and models", () => {
  let relay, wide, narrow;
  before(async () => {
    relay = await startRelay();
    // a tenant with two mapped models; `narrow` is a key allowed only the first
    wide = await relay.seed({ provider: "mock", models: { "m-alpha": "mock-1", "m-beta": "mock-1" }, tenantModels: ["m-alpha", "m-beta"] });
    narrow = await relay.newKey(wide.tenantId, { models: ["m-alpha"] });
    // another tenant's model, which neither key may see
    await relay.seed({ provider: "mock", models: { "m-other": "mock-1" }, tenantModels: ["m-other"] });
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  it("GET /health answers without a key", async () => {
    const res = await relay.call("/health");
    assert.equal(res.status, 200);
    requestId(res);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const body = await res.json();
    assert.equal(body.status, "ok");
    assert.equal(typeof body.version, "string");
    assert.ok(body.version.length > 0, "version non-empty");
  });

  it("models.list() shows only the models the key may use", async () => {
    const client = await sdk(relay, narrow.key);
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id).sort();
    assert.deepEqual(ids, ["m-alpha"]);
    for (const m of page.data) {
      assert.equal(m.object, "model");
      assert.equal(typeof m.created, "number");
      assert.equal(typeof m.owned_by, "string");
    }
  });

  it("models.list() with the tenant-wide key shows the tenant's models, not another tenant's", async () => {
    const client = await sdk(relay, wide.key);
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids.sort(), ["m-alpha", "m-beta"]);
  });

  it("GET /v1/models has OpenAI's list shape and an x-request-id", async () => {
    const res = await relay.call("/v1/models", { key: narrow.key });
    assert.equal(res.status, 200);
    requestId(res);
    const body = await res.json();
    assert.equal(body.object, "list");
    assert.ok(Array.isArray(body.data));
  });

  it("models.retrieve() returns an allowed model", async () => {
    const client = await sdk(relay, narrow.key);
    const m = await client.models.retrieve("m-alpha");
    assert.equal(m.id, "m-alpha");
    assert.equal(m.object, "model");
  });

  it("models.retrieve() of a model the key may not use, or an unknown one, is 404 model_not_found", async () => {
    const client = await sdk(relay, narrow.key);
    await assert.rejects(client.models.retrieve("m-beta"), (e) => e.status === 404);
    for (const name of ["m-beta", "m-other", "no-such-model"]) {
      const r = await relay.callJson(`/v1/models/${name}`, { key: narrow.key });
      assertOpenAIError(r, { status: 404, code: "model_not_found" });
      requestId(r);
    }
  });

  it("GET /v1/models without a key is 401 missing_api_key", async () => {
    const r = await relay.callJson("/v1/models");
    assertOpenAIError(r, { status: 401, code: "missing_api_key" });
  });
});
