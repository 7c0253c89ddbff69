// An OpenAI-format upstream that answers chat completions with tool calls, for the tests that
// need an OpenAI upstream's tool-call deltas (fake-openai.mjs answers with text only).
//   POST /v1/chat/completions   (Authorization: Bearer <key> required)
//   channel: { provider: "openai", base_url: fake.baseUrl }   // http://127.0.0.1:PORT/v1
//
// The two calls (TOOL_CALLS: ids, names, argument fragments) are those of the recorded stream
// tests/fixtures/openai/stream_tool_calls.sse. That recording has neither text before the calls
// nor usage, and the tests check both, so the fake adds them:
// Non-stream: a chat.completion whose message has TOOL_TEXT and the two TOOL_CALLS, finish
// reason "tool_calls", usage TOOL_USAGE (8 of the 40 prompt tokens cached).
// Stream: the role chunk, TOOL_TEXT in two content chunks, then the recorded tool-call chunks
// (per call a first delta with index, id, type and name, arguments "", then argument
// fragments) and finish chunk ("tool_calls") with this request's id, created and model, the
// usage chunk when stream_options.include_usage is true, and `data: [DONE]`.
// Scenario "err-500" (queued with next()) answers 500 server_error.

import { startFakeServer, sendJson, startSse, writeSplit, fakeId, fixtureSse } from "./fake-common.mjs";

const STREAM_TOOL_CALLS = fixtureSse("openai/stream_tool_calls.sse");
const RECORDED_CHUNKS = STREAM_TOOL_CALLS.map((e) => e.data).filter((d) => typeof d === "object");
const { choices: _, ...RECORDED_ENVELOPE } = RECORDED_CHUNKS[0];
// The fake's own first chunks carry the role (and the text), so the recorded first delta keeps
// only its tool call.
const RECORDED_CHOICES = RECORDED_CHUNKS.map(({ choices: [choice] }) => {
  const { role, content, refusal, ...delta } = choice.delta;
  return [{ ...choice, delta }];
});

const RECORDED_CALL_DELTAS = RECORDED_CHUNKS.flatMap((c) => c.choices[0].delta.tool_calls ?? []);

export const TOOL_TEXT = "Let me check both cities.";
export const TOOL_CALLS = RECORDED_CALL_DELTAS.filter((t) => t.id).map((start) => {
  const fragments = RECORDED_CALL_DELTAS.filter((t) => t.index === start.index && !t.id).map((t) => t.function.arguments);
  const args = fragments.join("");
  return { id: start.id, name: start.function.name, fragments, arguments: args, input: JSON.parse(args) };
});
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
    const usageNull = includeUsage ? { usage: null } : {};
    const base = { ...RECORDED_ENVELOPE, id, created, model };
    const chunk = (choices, extra = {}) => `data: ${JSON.stringify({ ...base, choices, ...usageNull, ...extra })}\n\n`;
    const delta = (d, finish = null) => [{ index: 0, delta: d, logprobs: null, finish_reason: finish }];
    startSse(res);
    res.write(chunk(delta({ role: "assistant", content: "", refusal: null })));
    res.write(chunk(delta({ content: TOOL_TEXT.slice(0, 8) })));
    res.write(chunk(delta({ content: TOOL_TEXT.slice(8) })));
    for (const choices of RECORDED_CHOICES) writeSplit(res, chunk(choices));
    if (includeUsage) res.write(chunk([], { usage: TOOL_USAGE }));
    res.end(STREAM_TOOL_CALLS.at(-1).raw);
  }

  return { ...fake, baseUrl: `${fake.origin}/v1` };
}
