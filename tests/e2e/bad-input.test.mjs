// Requests the relay must refuse, each checked for status and the full OpenAI error shape
// (README "Errors"): key problems, tenant and model access, malformed bodies, routing, admin auth.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startRelay, requestId, assertOpenAIError, chatBody, ADMIN_TOKEN } from "./harness.mjs";
import { closedPort } from "./fake-openai.mjs";

describe("bad input", () => {
  let relay, s;
  before(async () => {
    relay = await startRelay();
    s = await relay.seed({ provider: "mock", models: { demo: "mock-1", "demo-2": "mock-1" }, tenantModels: ["demo", "demo-2"] });
    // an OpenAI-format channel that is never reached (validation fails first)
    await relay.seed({ upstreamBaseUrl: `http://127.0.0.1:${await closedPort()}/v1`, models: { "oa-model": "oa-up" } });
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  const chat = (opts) => relay.callJson("/v1/chat/completions", opts);

  describe("keys and tenants", () => {
    it("no key → 401 missing_api_key", async () => {
      const r = await chat({ body: chatBody("demo") });
      assertOpenAIError(r, { status: 401, code: "missing_api_key" });
      requestId(r);
    });

    it("empty Bearer → 401 missing_api_key or invalid_api_key", async () => {
      const r = await chat({ body: chatBody("demo"), headers: { authorization: "Bearer " } });
      const e = assertOpenAIError(r, { status: 401 });
      assert.ok(["missing_api_key", "invalid_api_key"].includes(e.code), e.code);
    });

    it("unknown key → 401 invalid_api_key", async () => {
      const r = await chat({ key: "sk-er-this-key-does-not-exist-0123456789", body: chatBody("demo") });
      assertOpenAIError(r, { status: 401, code: "invalid_api_key" });
      assert.ok(!r.text.includes("sk-er-this-key-does-not-exist-0123456789"), "the presented key is not echoed whole");
    });

    it("revoked key → 401 key_revoked (on the very next request)", async () => {
      const k = await relay.newKey(s.tenantId);
      const ok = await chat({ key: k.key, body: chatBody("demo") });
      assert.equal(ok.status, 200, ok.text); // now the key is in this isolate's cache
      await relay.adminOk("POST", `/admin/keys/${k.id}/revoke`, undefined, [200, 204]);
      const r = await chat({ key: k.key, body: chatBody("demo") });
      assertOpenAIError(r, { status: 401, code: "key_revoked" });
    });

    it("expired key → 401 key_expired", async () => {
      const k = await relay.newKey(s.tenantId, { expires_at: Date.now() + 3_600_000 });
      // move expiry into the past before the key is ever used (nothing cached it yet)
      const db = await relay.db();
      await db.prepare("UPDATE api_keys SET expires_at = ? WHERE id = ?").bind(Date.now() - 60_000, k.id).run();
      const r = await chat({ key: k.key, body: chatBody("demo") });
      assertOpenAIError(r, { status: 401, code: "key_expired" });
    });

    it("disabled tenant → 403 tenant_disabled; enabled again → 200", async () => {
      const t = await relay.seed({ provider: "mock", models: { "demo-t": "mock-1" } });
      const ok = await chat({ key: t.key, body: chatBody("demo-t") });
      assert.equal(ok.status, 200, ok.text);
      await relay.adminOk("POST", `/admin/tenants/${t.tenantId}/disable`, undefined, [200, 204]);
      const r = await chat({ key: t.key, body: chatBody("demo-t") });
      assertOpenAIError(r, { status: 403, code: "tenant_disabled" });
      await relay.adminOk("POST", `/admin/tenants/${t.tenantId}/enable`, undefined, [200, 204]);
      const again = await chat({ key: t.key, body: chatBody("demo-t") });
      assert.equal(again.status, 200, again.text);
    });
  });

  describe("models", () => {
    it("unknown model → 404 model_not_found", async () => {
      const r = await chat({ key: s.key, body: chatBody("no-such-model") });
      assertOpenAIError(r, { status: 404, code: "model_not_found" });
    });

    it("model mapped but not allowed for the key → 404 model_not_found", async () => {
      const k = await relay.newKey(s.tenantId, { models: ["demo"] });
      const ok = await chat({ key: k.key, body: chatBody("demo") });
      assert.equal(ok.status, 200, ok.text);
      const r = await chat({ key: k.key, body: chatBody("demo-2") });
      assertOpenAIError(r, { status: 404, code: "model_not_found" });
    });

    it("model mapped but not in the tenant's set → 404 model_not_found", async () => {
      const r = await chat({ key: s.key, body: chatBody("oa-model") });
      assertOpenAIError(r, { status: 404, code: "model_not_found" });
    });
  });

  describe("bodies", () => {
    // a key of a tenant allowed every model, so validation is what fails
    let key;
    before(async () => {
      key = (await relay.seed({ provider: "mock", models: { "demo-any": "mock-1" } })).key;
    });

    it("malformed JSON → 400 invalid_json", async () => {
      const r = await chat({ key, body: '{"model":"demo-any","messages":[' });
      assertOpenAIError(r, { status: 400, code: "invalid_json" });
    });

    it("JSON that is not an object → 400 invalid_json", async () => {
      for (const body of ['[{"model":"demo-any"}]', '"hello"', "42", "null"]) {
        const r = await chat({ key, body });
        assertOpenAIError(r, { status: 400, code: "invalid_json" });
      }
    });

    it("empty body → 400", async () => {
      const r = await chat({ key, body: "" , method: "POST"});
      const e = assertOpenAIError(r, { status: 400 });
      assert.ok(["invalid_json", "missing_required_parameter"].includes(e.code), e.code);
    });

    it("missing model → 400 missing_required_parameter, param model", async () => {
      const r = await chat({ key, body: { messages: [{ role: "user", content: "hi" }] } });
      assertOpenAIError(r, { status: 400, code: "missing_required_parameter", param: "model" });
    });

    it("missing messages → 400 missing_required_parameter, param messages", async () => {
      const r = await chat({ key, body: { model: "demo-any" } });
      assertOpenAIError(r, { status: 400, code: "missing_required_parameter", param: "messages" });
    });

    it("completions without prompt → param prompt; embeddings without input → param input", async () => {
      const r1 = await relay.callJson("/v1/completions", { key, body: { model: "oa-model" } });
      assertOpenAIError(r1, { status: 400, code: "missing_required_parameter", param: "prompt" });
      const r2 = await relay.callJson("/v1/embeddings", { key, body: { model: "oa-model" } });
      assertOpenAIError(r2, { status: 400, code: "missing_required_parameter", param: "input" });
    });

    it("messages: \"hi\" → 400 invalid_type, param messages", async () => {
      const r = await chat({ key, body: { model: "demo-any", messages: "hi" } });
      assertOpenAIError(r, { status: 400, code: "invalid_type", param: "messages" });
    });

    it("messages[0].role: 5 → 400 invalid_type, param messages[0].role", async () => {
      const r = await chat({ key, body: { model: "demo-any", messages: [{ role: 5, content: "hi" }] } });
      assertOpenAIError(r, { status: 400, code: "invalid_type", param: "messages[0].role" });
    });

    it("messages[1].role of the wrong type names index 1", async () => {
      const r = await chat({
        key,
        body: { model: "demo-any", messages: [{ role: "user", content: "a" }, { role: ["assistant"], content: "b" }] },
      });
      assertOpenAIError(r, { status: 400, code: "invalid_type", param: "messages[1].role" });
    });

    it("model: 42 → 400 invalid_type, param model", async () => {
      const r = await chat({ key, body: { model: 42, messages: [{ role: "user", content: "hi" }] } });
      assertOpenAIError(r, { status: 400, code: "invalid_type", param: "model" });
    });

    it("messages[0] not an object → 400 invalid_type, param messages[0]", async () => {
      const r = await chat({ key, body: { model: "demo-any", messages: ["hi"] } });
      assertOpenAIError(r, { status: 400, code: "invalid_type", param: "messages[0]" });
    });
  });

  describe("routing", () => {
    it("unknown paths → 404 not_found", async () => {
      for (const p of ["/v1/nope", "/nope", "/v1/chat/completion", "/v2/chat/completions"]) {
        const r = await relay.callJson(p, { key: s.key, body: chatBody("demo") });
        assertOpenAIError(r, { status: 404, code: "not_found" });
        requestId(r);
      }
    });

    it("GET /v1/chat/completions → 405 method_not_allowed with Allow: POST", async () => {
      const r = await relay.callJson("/v1/chat/completions", { key: s.key });
      assertOpenAIError(r, { status: 405, code: "method_not_allowed" });
      assert.match(r.headers.get("allow") ?? "", /\bPOST\b/);
      requestId(r);
    });

    it("POST /v1/models → 405 with Allow: GET", async () => {
      const r = await relay.callJson("/v1/models", { key: s.key, body: {} });
      assertOpenAIError(r, { status: 405, code: "method_not_allowed" });
      assert.match(r.headers.get("allow") ?? "", /\bGET\b/);
    });
  });

  describe("admin authentication", () => {
    for (const [what, token] of [
      ["no token", null],
      ["a wrong token", "wrong-token"],
      ["the admin token with a suffix", `${ADMIN_TOKEN}x`],
      ["a prefix of the admin token", ADMIN_TOKEN.slice(0, -1)],
    ]) {
      it(`admin with ${what} → 401 invalid_admin_token`, async () => {
        for (const [m, p] of [["GET", "/admin/tenants"], ["POST", "/admin/tenants"], ["GET", "/admin/usage"]]) {
          const r = await relay.admin(m, p, m === "POST" ? { name: "x" } : undefined, { token });
          assertOpenAIError(r, { status: 401, code: "invalid_admin_token" });
        }
      });
    }

    it("a relay key is not an admin token", async () => {
      const r = await relay.admin("GET", "/admin/tenants", undefined, { token: s.key });
      assertOpenAIError(r, { status: 401, code: "invalid_admin_token" });
      const list = await relay.adminOk("GET", "/admin/tenants");
      assert.ok(!list.data.some((t) => t.name === "x"), "no tenant was created by the refused POSTs");
    });
  });
});
