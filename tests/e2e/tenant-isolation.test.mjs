// Tenant-scoped admin tokens (README "Tenant admin tokens"): a tenant's token manages its own
// keys, limits, usage and audit rows, and can neither read, change nor spend tenant B's.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, chatBody } from "./harness.mjs";

describe("tenant isolation", () => {
  let relay, a, b, tokenA, keyB;
  const as = (token) => (method, path, body) =>
    fetch(new URL(path, relay.url), {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, json: await r.json().catch(() => null) }));

  before(async () => {
    relay = await startRelay();
    const ch = await relay.admin("POST", "/admin/channels", { name: "mock", provider: "mock", models: ["mock-1"] });
    await relay.admin("PUT", "/admin/model-map/demo", { channel_id: ch.json.id, upstream_model: "mock-1" });
    a = (await relay.admin("POST", "/admin/tenants", { name: "A" })).json;
    b = (await relay.admin("POST", "/admin/tenants", { name: "B" })).json;
    const t = await relay.admin("POST", `/admin/tenants/${a.id}/tokens`, { name: "ops" });
    assert.equal(t.status, 201, JSON.stringify(t.json));
    tokenA = t.json.token;
    assert.match(tokenA, /^er-tt-/);
    keyB = (await relay.admin("POST", `/admin/tenants/${b.id}/keys`, { name: "b" })).json;
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  it("manages its own keys: create, list, patch, rotate, revoke, limits", async () => {
    const admin = as(tokenA);
    const k = await admin("POST", `/admin/tenants/${a.id}/keys`, { name: "mine", limits: { rpm: 10 } });
    assert.equal(k.status, 201);
    assert.equal((await admin("GET", `/admin/tenants/${a.id}/keys`)).json.data.length, 1);
    assert.equal((await admin("PATCH", `/admin/keys/${k.json.id}`, { name: "renamed" })).json.name, "renamed");
    assert.equal((await admin("GET", `/admin/keys/${k.json.id}/limits`)).status, 200);
    assert.equal((await admin("GET", `/admin/tenants/${a.id}`)).status, 200);
    const chat = await fetch(new URL("/v1/chat/completions", relay.url), {
      method: "POST",
      headers: { authorization: `Bearer ${k.json.key}`, "content-type": "application/json" },
      body: JSON.stringify(chatBody("demo")),
    });
    assert.equal(chat.status, 200);
    assert.equal((await admin("POST", `/admin/keys/${k.json.id}/revoke`)).status, 200);
  });

  it("cannot read, change or spend tenant B's anything", async () => {
    const admin = as(tokenA);
    for (const [method, path, body] of [
      ["GET", `/admin/tenants/${b.id}`],
      ["GET", `/admin/tenants/${b.id}/keys`],
      ["POST", `/admin/tenants/${b.id}/keys`, { name: "intruder" }],
      ["GET", `/admin/tenants/${b.id}/limits`],
      ["GET", `/admin/keys/${keyB.id}`],
      ["PATCH", `/admin/keys/${keyB.id}`, { limits: { rpm: 1 } }],
      ["POST", `/admin/keys/${keyB.id}/revoke`],
      ["POST", `/admin/keys/${keyB.id}/rotate`, {}],
      ["GET", `/admin/keys/${keyB.id}/limits`],
    ]) {
      const r = await admin(method, path, body);
      assert.equal(r.status, 404, `${method} ${path} → ${r.status} ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.code, "not_found");
    }
    // B's key still works: nothing was revoked or rotated.
    const chat = await fetch(new URL("/v1/chat/completions", relay.url), {
      method: "POST",
      headers: { authorization: `Bearer ${keyB.key}`, "content-type": "application/json" },
      body: JSON.stringify(chatBody("demo")),
    });
    assert.equal(chat.status, 200);
  });

  it("is refused the operator's routes", async () => {
    const admin = as(tokenA);
    for (const [method, path, body] of [
      ["GET", "/admin/tenants"],
      ["POST", "/admin/tenants", { name: "x" }],
      ["PATCH", `/admin/tenants/${a.id}`, { limits: { rpm: 1000000 } }],
      ["POST", `/admin/tenants/${a.id}/enable`],
      ["GET", "/admin/channels"],
      ["GET", "/admin/model-map"],
      ["POST", `/admin/tenants/${a.id}/tokens`, {}],
    ]) {
      const r = await admin(method, path, body);
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.equal(r.json.error.code, "forbidden");
    }
  });

  it("sees only its own usage and audit rows, whatever it filters on", async () => {
    const admin = as(tokenA);
    const usage = await admin("GET", `/admin/usage?tenant_id=${b.id}`);
    assert.equal(usage.status, 200);
    assert.ok(usage.json.data.every((r) => r.tenant_id === a.id), JSON.stringify(usage.json));
    const audit = await admin("GET", `/admin/audit?tenant_id=${b.id}`);
    assert.ok(audit.json.data.length > 0);
    assert.ok(audit.json.data.every((r) => r.tenant_id === a.id));
    assert.ok(audit.json.data.some((r) => r.actor.startsWith("tenant_token:")), "its changes are audited as its own");
  });

  it("stops working once revoked, and never reveals its token again", async () => {
    const tokens = await relay.admin("GET", `/admin/tenants/${a.id}/tokens`);
    assert.ok(!JSON.stringify(tokens.json).includes(tokenA));
    const id = tokens.json.data[0].id;
    assert.equal((await relay.admin("POST", `/admin/tenant-tokens/${id}/revoke`)).status, 200);
    const r = await as(tokenA)("GET", `/admin/tenants/${a.id}/keys`);
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, "invalid_admin_token");
  });
});
