// An OpenAI-format upstream that answers chat completions with tool calls, for the tests that
// need an OpenAI upstream's tool-call deltas (fake-openai.mjs answers with text only).
//   POST /v1/chat/completions   (Authorization: Bearer <key> required)
//   channel: { provider: "openai", base_url: fake.baseUrl }   // http://127.0.0.1:PORT/v1
//
// Non-stream: a chat.completion whose message has TOOL_TEXT and the two TOOL_CALLS, finish
// reason "tool_calls", usage TOOL_USAGE (8 of the 40 prompt tokens cached).
// Stream: the role chunk, TOOL_TEXT in two content chunks, then per call a first delta with
// index, id, type and name (arguments "") followed by argument fragments (the shape of
// tests/fixtures/openai/stream_tool_calls.sse), the finish chunk ("tool_calls"), the usage
// chunk when stream_options.include_usage is true, and `data: [DONE]`.
// Scenario "err-500" (queued with next()) answers 500 server_error.

import { startFakeServer, sendJson, startSse, writeSplit, fakeId } from "./fake-common.mjs";

export const TOOL_TEXT = "Let me check both cities.";
export const TOOL_CALLS = [
  {
    id: "call_DdmO9pD3xa9XTPNJ32zg2hcA",
    name: "get_weather",
    fragments: ['{"', "location", '":"', "Paris", ",", " France", '"}'],
  },
  {
    id: "call_ABTLuDNkY8x4zRaGQ7KVXGxn",
    name: "get_weather",
    fragments: ['{"', "location", '":"', "Bogot", "á", ", Colombia", '"}'],
  },
].map((c) => ({ ...c, arguments: c.fragments.join(""), input: JSON.parse(c.fragments.join("")) }));
export const TOOL_USAGE = {
  prompt_tokens: 40,
  completion_tokens: 22,
  total_tokens: 62,
  prompt_tokens_details: { cached_tokens: 8, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
};

const SCENARIOS = new Set(["tools", "err-500"]);

export async function startFakeOpenAITools() {
  const fake = await startFakeServer({ name: "fake OpenAI (tools)", scenarios: SCENARIOS, scenarioOf: () => "tools", handle });

  async function handle(req, res, rec) {
    const error = (status, message, type, code = null) => sendJson(res, status, { error: { message, type, param: null, code } });
    if (rec.path !== "/v1/chat/completions") return error(404, `Invalid URL (${rec.method} ${rec.path})`, "invalid_request_error");
    if (rec.method !== "POST") return error(405, "Invalid method", "invalid_request_error");
    if (!/^Bearer\s+\S+/i.test(req.headers.authorization ?? "")) return error(401, "You didn't provide an API key.", "invalid_request_error");
    const body = rec.body;
    if (!body || typeof body !== "object" || !Array.isArray(body.messages)) return error(400, "We could not parse the JSON body of your request.", "invalid_request_error");
    if (rec.scenario === "err-500") return error(500, "The server had an error while processing your request.", "server_error");

    const id = fakeId("chatcmpl-");
    const created = Math.floor(Date.now() / 1000);
    const model = body.model;
    if (!body.stream) {
      return sendJson(res, 200, {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [
          {
            index: 0,
            message: {
              role: "assistant",
              content: TOOL_TEXT,
              refusal: null,
              annotations: [],
              tool_calls: TOOL_CALLS.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } })),
            },
            logprobs: null,
            finish_reason: "tool_calls",
          },
        ],
        usage: TOOL_USAGE,
        service_tier: "default",
        system_fingerprint: "fp_faketools",
      });
    }
    const includeUsage = body.stream_options?.include_usage === true;
    const base = { id, object: "chat.completion.chunk", created, model, service_tier: "default", system_fingerprint: "fp_faketools" };
    const chunk = (choices, extra = {}) => `data: ${JSON.stringify({ ...base, choices, ...(includeUsage ? { usage: null } : {}), ...extra })}\n\n`;
    const delta = (d, finish = null) => [{ index: 0, delta: d, logprobs: null, finish_reason: finish }];
    startSse(res);
    res.write(chunk(delta({ role: "assistant", content: "", refusal: null })));
    res.write(chunk(delta({ content: TOOL_TEXT.slice(0, 8) })));
    res.write(chunk(delta({ content: TOOL_TEXT.slice(8) })));
    TOOL_CALLS.forEach((c, index) => {
      res.write(chunk(delta({ tool_calls: [{ index, id: c.id, type: "function", function: { name: c.name, arguments: "" } }] })));
      for (const arguments_ of c.fragments) writeSplit(res, chunk(delta({ tool_calls: [{ index, function: { arguments: arguments_ } }] })));
    });
    res.write(chunk(delta({}, "tool_calls")));
    if (includeUsage) res.write(chunk([], { usage: TOOL_USAGE }));
    res.end("data: [DONE]\n\n");
  }

  return { ...fake, baseUrl: `${fake.origin}/v1` };
}
