// MAX_BODY_BYTES: a relay started with MAX_BODY_BYTES=1024 refuses larger bodies with 413,
// whether or not the client sends Content-Length.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startRelay, assertOpenAIError, requestId } from "./harness.mjs";

// POST with Transfer-Encoding: chunked through node:http, which (unlike fetch) still yields the
// response when the server answers early and closes before the whole body is sent.
function rawPost(url, headers, chunks) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: { ...headers, "transfer-encoding": "chunked" } }, (res) => {
      const parts = [];
      res.on("data", (c) => parts.push(c));
      res.on("error", () => {});
      res.on("end", () => {
        const text = Buffer.concat(parts).toString();
        let json;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode, headers: new Headers(res.headers), text, json, requestHeaders: req.getHeaders() });
      });
    });
    req.on("error", (e) => (req.res ? undefined : reject(e)));
    (async () => {
      for (const c of chunks) {
        if (req.destroyed) return;
        req.write(c);
        await new Promise((r) => setImmediate(r));
      }
      req.end();
    })();
  });
}

describe("body size limit", () => {
  let relay, s;
  before(async () => {
    relay = await startRelay({ vars: { MAX_BODY_BYTES: "1024" } });
    s = await relay.seed({ provider: "mock", models: { demo: "mock-1" } });
  }, { timeout: 60_000 });
  after(() => relay?.dispose(), { timeout: 30_000 });

  const bodyOfSize = (n) => {
    const base = JSON.stringify({ model: "demo", messages: [{ role: "user", content: "" }] });
    const text = JSON.stringify({ model: "demo", messages: [{ role: "user", content: "x".repeat(n - base.length) }] });
    assert.equal(Buffer.byteLength(text), n);
    return text;
  };

  it("a body under the limit is relayed", async () => {
    const r = await relay.callJson("/v1/chat/completions", { key: s.key, body: bodyOfSize(1000) });
    assert.equal(r.status, 200, r.text);
  });

  it("a body over the limit → 413 request_too_large", async () => {
    const r = await relay.callJson("/v1/chat/completions", { key: s.key, body: bodyOfSize(1025) });
    assertOpenAIError(r, { status: 413, code: "request_too_large" });
    requestId(r);
  });

  it("a much larger body → 413", async () => {
    const r = await relay.callJson("/v1/chat/completions", { key: s.key, body: bodyOfSize(200_000) });
    assertOpenAIError(r, { status: 413, code: "request_too_large" });
  });

  it("a chunked body (no Content-Length) over the limit → 413", async () => {
    const bytes = Buffer.from(bodyOfSize(5000));
    const chunks = [];
    for (let i = 0; i < bytes.length; i += 500) chunks.push(bytes.subarray(i, i + 500));
    const r = await rawPost(`${relay.url}/v1/chat/completions`, { authorization: `Bearer ${s.key}`, "content-type": "application/json" }, chunks);
    assert.equal(r.requestHeaders["content-length"], undefined, "sanity: the request went chunked");
    assertOpenAIError(r, { status: 413, code: "request_too_large" });
  });
});
