// Model groups (README "Model groups"): `@name` in a tenant's or key's allowlist admits the
// group's models as the group is now; changing the group changes every such key at once.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, chatBody } from "./harness.mjs";

describe("model groups", () => {
  let relay, tenant, key;
  const models = async (k) => {
    const r = await fetch(new URL("/v1/models", relay.url), { headers: { authorization: `Bearer ${k}` } });
    assert.equal(r.status, 200);
    return (await r.json()).data.map((m) => m.id).sort();
  };
  const chat = (k, model) =>
    fetch(new URL("/v1/chat/completions", relay.url), {
      method: "POST",
      headers: { authorization: `Bearer ${k}`, "content-type": "application/json" },
      body: JSON.stringify(chatBody(model)),
    });

  before(async () => {
    relay = await startRelay();
    const ch = (await relay.admin("POST", "/admin/channels", { name: "m", provider: "mock", models: ["mock-1"] })).json;
    for (const m of ["mini", "big", "other"]) {
      assert.equal((await relay.admin("PUT", `/admin/model-map/${m}`, { channel_id: ch.id, upstream_model: "mock-1" })).status, 200);
    }
    assert.equal((await relay.admin("PUT", "/admin/model-groups/cheap", { models: ["mini"] })).status, 200);
    tenant = (await relay.admin("POST", "/admin/tenants", { name: "g" })).json;
    const k = await relay.admin("POST", `/admin/tenants/${tenant.id}/keys`, { models: ["@cheap", "other"] });
    assert.equal(k.status, 201, JSON.stringify(k.json));
    key = k.json.key;
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  it("admits the group's members and nothing else", async () => {
    assert.deepEqual(await models(key), ["mini", "other"]);
    assert.equal((await chat(key, "mini")).status, 200);
    assert.equal((await chat(key, "big")).status, 404);
  });

  it("follows the group as it changes, without reissuing the key", async () => {
    await relay.admin("PUT", "/admin/model-groups/cheap", { models: ["mini", "big"] });
    assert.deepEqual(await models(key), ["big", "mini", "other"]);
    assert.equal((await chat(key, "big")).status, 200);
    assert.deepEqual((await relay.admin("GET", "/admin/model-groups")).json, { cheap: ["mini", "big"] });
  });

  it("refuses unknown groups and bad names, and a deleted group admits nothing", async () => {
    const bad = await relay.admin("POST", `/admin/tenants/${tenant.id}/keys`, { models: ["@frontier"] });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, "models[0]");
    assert.equal((await relay.admin("PUT", "/admin/model-groups/Bad Name", { models: [] })).status, 400);
    assert.equal((await relay.admin("PUT", "/admin/model-groups/nested", { models: ["@cheap"] })).status, 400);
    assert.equal((await relay.admin("DELETE", "/admin/model-groups/cheap")).status, 200);
    assert.deepEqual(await models(key), ["other"]);
  });
});
