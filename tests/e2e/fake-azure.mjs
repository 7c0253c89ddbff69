// A fake Azure OpenAI resource for the end-to-end tests, on 127.0.0.1 (port 0):
//   POST /openai/deployments/{deployment}/chat/completions?api-version=…   (JSON, or SSE when
//        `"stream": true`)
//   channel: { provider: "azure", base_url: fake.baseUrl, options: { api_version } }
//
// Like Azure it wants: the key in an `api-key` header (missing or other than the fake's → 401
// "Access denied due to invalid subscription key or wrong API endpoint…"); an `api-version` query
// parameter it knows (missing → 404 "Resource not found", unknown → 404 "API version not
// supported"); a deployment it has (else 404 DeploymentNotFound). Azure ignores a body `model`
// (the deployment decides) and answers with the deployment's model (MODEL). Replies carry Azure's
// content-filter annotations; a stream starts with Azure's prompt_filter_results chunk (empty
// `choices`, empty id/model/object) and, when `stream_options.include_usage` is asked for, ends
// with the usage chunk (empty `choices`) before `data: [DONE]`.
//
// Scenario: queued with fake.next(...), else the deployment when it names one, else "ok":
//   ok       text (TEXT; stream: STREAM_PIECES)
//   err-429  429 {"error":{"code":"429","message":"Requests to the ChatCompletions_Create …"}}
//            with retry-after: RETRY_AFTER
//   err-400  400 content_filter (Azure's prompt filter refusal);  err-500  500 InternalServerError
// Usage: USAGE (non-stream: prompt 19, completion 10, total 29, cached 0); stream: STREAM_USAGE
// (prompt 21, completion = STREAM_PIECES.length, …).

import { startFakeServer, sendJson, startSse, writeSplit, fakeId } from "./fake-common.mjs";

export const MODEL = "gpt-4o-2024-08-06";
export const TEXT = "Hello from Azure OpenAI.";
export const STREAM_PIECES = ["Hello", " from", " Azure", " – ✓."];
export const USAGE = {
  prompt_tokens: 19,
  completion_tokens: 10,
  total_tokens: 29,
  prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
};
export const STREAM_USAGE = { prompt_tokens: 21, completion_tokens: STREAM_PIECES.length, total_tokens: 21 + STREAM_PIECES.length };
export const RETRY_AFTER = "11";
export const API_VERSIONS = new Set(["2024-06-01", "2024-10-21", "2025-01-01-preview", "2025-04-01-preview"]);

const SCENARIOS = new Set(["ok", "err-400", "err-429", "err-500"]);
const SAFE = { hate: { filtered: false, severity: "safe" }, self_harm: { filtered: false, severity: "safe" }, sexual: { filtered: false, severity: "safe" }, violence: { filtered: false, severity: "safe" } };
const PROMPT_FILTER = [{ prompt_index: 0, content_filter_results: { ...SAFE, jailbreak: { filtered: false, detected: false } } }];

function azureError(res, status, code, message, headers = {}, extra = {}) {
  sendJson(res, status, { error: { code, message, ...extra } }, { "apim-request-id": fakeId(""), ...headers });
}

/** key: the one key the resource accepts; deployments: the deployment names it has. */
export async function startFakeAzure({ key, deployments = [] } = {}) {
  const known = new Set([...deployments, ...SCENARIOS]);
  const fake = await startFakeServer({
    name: "fake Azure OpenAI",
    scenarios: SCENARIOS,
    scenarioOf: (rec) => {
      const m = /^\/openai\/deployments\/([^/]+)\//.exec(rec.path);
      const d = m ? decodeURIComponent(m[1]) : "";
      return SCENARIOS.has(d) ? d : "ok";
    },
    handle,
  });

  async function handle(req, res, rec) {
    const m = /^\/openai\/deployments\/([^/]+)\/chat\/completions$/.exec(rec.path);
    const apiKey = req.headers["api-key"];
    if (!apiKey || (key !== undefined && apiKey !== key)) {
      return azureError(
        res,
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
      );
    }
    const version = rec.query["api-version"];
    if (!m || !version) return azureError(res, 404, "404", "Resource not found");
    if (!API_VERSIONS.has(version)) return azureError(res, 404, "404", "API version not supported");
    const deployment = decodeURIComponent(m[1]);
    rec.deployment = deployment;
    rec.apiVersion = version;
    if (!known.has(deployment)) {
      return azureError(res, 404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.");
    }
    if (rec.method !== "POST") return azureError(res, 405, "405", "Method not allowed");
    const body = rec.body;
    if (!body || !Array.isArray(body.messages) || body.messages.length === 0) {
      rec.invalid = "messages";
      return azureError(res, 400, null, "'messages' is a required property", {}, { param: "messages", type: "invalid_request_error" });
    }
    switch (rec.scenario) {
      case "err-400":
        return azureError(
          res,
          400,
          "content_filter",
          "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. err-400 was asked for by the test.",
          {},
          { param: "prompt", status: 400, innererror: { code: "ResponsibleAIPolicyViolation", content_filter_result: { ...SAFE, violence: { filtered: true, severity: "high" } } } },
        );
      case "err-429":
        return azureError(
          res,
          429,
          "429",
          `Requests to the ChatCompletions_Create Operation under Azure OpenAI API version ${version} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after ${RETRY_AFTER} seconds.`,
          { "retry-after": RETRY_AFTER, "x-ratelimit-remaining-requests": "0" },
        );
      case "err-500":
        return azureError(res, 500, "InternalServerError", "The server had an error while processing your request. Sorry about that!");
    }
    const id = fakeId("chatcmpl-");
    const created = Math.floor(Date.now() / 1000);
    if (body.stream === true) {
      startSse(res, { "apim-request-id": fakeId("") });
      const chunk = (choices, extra = {}) => `data: ${JSON.stringify({ choices, created, id, model: MODEL, object: "chat.completion.chunk", system_fingerprint: "fp_azure01", ...extra })}\n\n`;
      const wantUsage = body.stream_options?.include_usage === true;
      const usageNull = wantUsage ? { usage: null } : {};
      // Azure's first chunk: the prompt's filter results, with nothing else set.
      res.write(`data: ${JSON.stringify({ choices: [], created: 0, id: "", model: "", object: "", prompt_filter_results: PROMPT_FILTER })}\n\n`);
      res.write(chunk([{ content_filter_results: {}, delta: { content: "", refusal: null, role: "assistant" }, finish_reason: null, index: 0, logprobs: null }], usageNull));
      for (const content of STREAM_PIECES) {
        writeSplit(res, chunk([{ content_filter_results: SAFE, delta: { content }, finish_reason: null, index: 0, logprobs: null }], usageNull));
      }
      res.write(chunk([{ content_filter_results: {}, delta: {}, finish_reason: "stop", index: 0, logprobs: null }], usageNull));
      if (wantUsage) res.write(chunk([], { usage: STREAM_USAGE }));
      return res.end("data: [DONE]\n\n");
    }
    return sendJson(
      res,
      200,
      {
        choices: [{ content_filter_results: SAFE, finish_reason: "stop", index: 0, logprobs: null, message: { content: TEXT, refusal: null, role: "assistant" } }],
        created,
        id,
        model: MODEL,
        object: "chat.completion",
        prompt_filter_results: PROMPT_FILTER,
        system_fingerprint: "fp_azure01",
        usage: USAGE,
      },
      { "apim-request-id": fakeId("") },
    );
  }

  return { ...fake, baseUrl: fake.origin };
}
