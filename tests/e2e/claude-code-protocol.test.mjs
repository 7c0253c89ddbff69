// Claude Code's current protocol through the relay: on its default model it sends `system`
// messages inside `messages` (beta `mid-conversation-system-2026-04-07`), adaptive thinking
// with `output_config.effort`, and `context_management`. Pass-through keeps the body as sent;
// translation puts a mid-conversation system message in place where the upstream can hold it
// (OpenAI) and with the system text where it cannot (Gemini), saying so.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { startRelay, ROOT, UPSTREAM_KEY } from "./harness.mjs";
import { startFakeAnthropic } from "./fake-anthropic.mjs";
import { startFakeOpenAI } from "./fake-openai.mjs";
import { startFakeGemini } from "./fake-gemini.mjs";
import { anthropicJson, assertAnthropicMessage } from "./anthropic-client.mjs";

const BETA = "mid-conversation-system-2026-04-07,context-management-2025-06-27";
const NOTE = "The user switched to plan mode: propose changes before making them.";
const fixture = () =>
  JSON.parse(fs.readFileSync(path.join(ROOT, "tests/fixtures/anthropic/request_claude_code_mid_system.json"), "utf8"));

/** The fixture addressed to `model`, not streamed, its first user text carrying `marker`. */
function claudeCode(model, marker) {
  const body = fixture();
  body.model = model;
  body.stream = false;
  body.messages[0].content[0].text += ` (${marker})`;
  return body;
}

const fields = (h) => (h ?? "").split(",").map((f) => f.trim()).filter(Boolean);

describe("Claude Code's current protocol", () => {
  let relay, anthropic, openai, gemini, pass, viaOpenAI, viaGemini;
  before(async () => {
    [anthropic, openai, gemini] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeGemini()]);
    relay = await startRelay();
    pass = await relay.seed({ provider: "anthropic", upstreamBaseUrl: anthropic.baseUrl, models: { "cc-pass": "claude-up" } });
    viaOpenAI = await relay.seed({ upstreamBaseUrl: openai.baseUrl, models: { "cc-openai": "gpt-up" } });
    viaGemini = await relay.seed({ provider: "gemini", upstreamBaseUrl: gemini.baseUrl, models: { "cc-gemini": "gemini-up" } });
  }, { timeout: 60_000 });
  after(async () => {
    await Promise.all([anthropic?.close(), openai?.close(), gemini?.close()]);
    await relay?.dispose();
  }, { timeout: 30_000 });

  it("pass-through: a system message inside messages reaches Anthropic as sent, with the beta header", async () => {
    const marker = `cc-pass-${randomUUID()}`;
    const sent = claudeCode("cc-pass", marker);
    const r = await anthropicJson(relay, "/v1/messages", { key: pass.key, headers: { "anthropic-beta": BETA }, body: sent });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.equal(r.headers.get("x-relay-approximated"), null);
    const up = await anthropic.waitForRequest((q) => q.rawBody.includes(marker));
    assert.equal(up.invalid, undefined, `the fake Anthropic API accepted the body: ${up.invalid}`);
    assert.deepEqual(up.body, { ...sent, model: "claude-up" }, "only the model is rewritten");
    assert.equal(up.headers["anthropic-beta"], BETA);
    assert.equal(up.headers["x-api-key"], UPSTREAM_KEY);
  });

  it("to OpenAI: the system message keeps its place and adaptive thinking becomes reasoning_effort", async () => {
    const marker = `cc-openai-${randomUUID()}`;
    const r = await anthropicJson(relay, "/v1/messages", { key: viaOpenAI.key, headers: { "anthropic-beta": BETA }, body: claudeCode("cc-openai", marker) });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.ok(!fields(r.headers.get("x-relay-approximated")).includes("messages.system"), r.headers.get("x-relay-approximated"));
    const up = await openai.waitForRequest((q) => q.rawBody.includes(marker));
    const roles = up.body.messages.map((m) => m.role);
    assert.deepEqual(roles, ["system", "system", "user", "system", "assistant", "tool"]);
    assert.equal(up.body.messages[3].content, NOTE);
    assert.equal(up.body.reasoning_effort, "high");
  });

  it("to Gemini: the system message joins the system instruction, reported as approximated", async () => {
    const marker = `cc-gemini-${randomUUID()}`;
    const r = await anthropicJson(relay, "/v1/messages", { key: viaGemini.key, headers: { "anthropic-beta": BETA }, body: claudeCode("cc-gemini", marker) });
    assert.equal(r.status, 200, r.text);
    assertAnthropicMessage(r.json);
    assert.ok(fields(r.headers.get("x-relay-approximated")).includes("messages.system"), `x-relay-approximated: ${r.headers.get("x-relay-approximated")}`);
    const up = await gemini.waitForRequest((q) => q.rawBody.includes(marker));
    const system = up.body.systemInstruction.parts.map((p) => p.text);
    assert.equal(system.at(-1), NOTE);
    assert.ok(!JSON.stringify(up.body.contents).includes(NOTE), "not repeated in the conversation");
  });

  it("a system message holding an image is refused with 400 naming the block", async () => {
    const body = claudeCode("cc-pass", `cc-bad-${randomUUID()}`);
    body.messages[1].content = [{ type: "image", source: { type: "url", url: "https://example.com/a.png" } }];
    const r = await anthropicJson(relay, "/v1/messages", { key: pass.key, headers: { "anthropic-beta": BETA }, body });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.type, "error");
    assert.match(r.json.error.message, /messages\[1\]\.content\[0\]\.type/);
  });
});
