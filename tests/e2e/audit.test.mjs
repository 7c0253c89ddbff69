// The audit log (README "Audit log"): every admin change appends one row with the actor,
// action, target, before/after views (never a secret), time, client IP and request id; the
// API can read and filter it but offers no way to change it.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, UPSTREAM_KEY } from "./harness.mjs";

describe("audit log", () => {
  let relay;
  before(async () => {
    relay = await startRelay();
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  async function entries(query = "") {
    const r = await relay.admin("GET", `/admin/audit${query}`);
    assert.equal(r.status, 200, r.text);
    return r.json.data;
  }

  it("records creates, updates, revocations and deletes with before/after, and no secrets", async () => {
    const tenant = (await relay.admin("POST", "/admin/tenants", { name: "audited" })).json;
    await relay.admin("PATCH", `/admin/tenants/${tenant.id}`, { name: "audited-2", limits: { rpm: 5 } });
    const key = (await relay.admin("POST", `/admin/tenants/${tenant.id}/keys`, { name: "k" })).json;
    assert.ok(key.key, "plaintext shown once");
    await relay.admin("POST", `/admin/keys/${key.id}/revoke`);
    const channel = (await relay.admin("POST", "/admin/channels", {
      name: "c", provider: "openai", base_url: "http://127.0.0.1:9/v1", api_keys: [UPSTREAM_KEY], models: ["m"],
    })).json;
    await relay.admin("DELETE", `/admin/channels/${channel.id}`);

    const all = await entries();
    const actions = all.map((e) => e.action).reverse();
    assert.deepEqual(actions, ["tenant.create", "tenant.update", "key.create", "key.revoke", "channel.create", "channel.delete"]);
    for (const e of all) {
      assert.equal(e.actor, "admin");
      assert.match(e.request_id, /^req_/);
      assert.ok(e.at > 0);
    }
    const update = all.find((e) => e.action === "tenant.update");
    assert.equal(update.before.name, "audited");
    assert.equal(update.after.name, "audited-2");
    assert.equal(update.after.limits.rpm, 5);
    const revoke = all.find((e) => e.action === "key.revoke");
    assert.equal(revoke.target_id, key.id);
    assert.equal(revoke.tenant_id, tenant.id);
    assert.equal(revoke.before.status, "active");
    assert.equal(revoke.after.status, "revoked");
    const del = all.find((e) => e.action === "channel.delete");
    assert.equal(del.after, null);
    assert.equal(del.before.api_key_count, 1);
    const text = JSON.stringify(all);
    assert.ok(!text.includes(key.key), "a key's plaintext never reaches the log");
    assert.ok(!text.includes(UPSTREAM_KEY), "an upstream key never reaches the log");
  });

  it("filters by target, tenant and action, and reads only", async () => {
    const tenant = (await relay.admin("POST", "/admin/tenants", { name: "filtered" })).json;
    await relay.admin("POST", `/admin/tenants/${tenant.id}/disable`);
    const byTarget = await entries(`?target_id=${tenant.id}`);
    assert.deepEqual(byTarget.map((e) => e.action), ["tenant.disable", "tenant.create"]);
    const byTenant = await entries(`?tenant_id=${tenant.id}&action=tenant.disable`);
    assert.equal(byTenant.length, 1);
    assert.equal((await entries("?limit=1")).length, 1);
    const bad = await relay.admin("GET", "/admin/audit?limit=0");
    assert.equal(bad.status, 400);
    for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
      const r = await relay.admin(method, "/admin/audit", {});
      assert.equal(r.status, 405, `${method} must not change the log`);
    }
    // Failed changes are not recorded.
    const before = (await entries()).length;
    const r = await relay.admin("POST", "/admin/tenants", { name: "" });
    assert.equal(r.status, 400);
    assert.equal((await entries()).length, before);
  });
});
