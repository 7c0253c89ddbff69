// A fake Google Gemini API for the end-to-end tests, on 127.0.0.1 (port 0):
//   POST /v1beta/models/{model}:generateContent
//   POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (SSE, CRLF-framed like Google's)
//   channel: { provider: "gemini", base_url: fake.baseUrl }     // http://127.0.0.1:PORT/v1beta
//
// It checks a request the way the real API does, answering 400 INVALID_ARGUMENT otherwise:
// an API key (`x-goog-api-key` header or `?key=`; none → 403 PERMISSION_DENIED); a JSON object
// body with only fields Gemini knows ("Invalid JSON payload received. Unknown name …"), also
// inside generationConfig and function declaration schemas (Gemini's OpenAPI subset: no
// `additionalProperties`, `$schema`, …); non-empty `contents` whose roles are "user"/"model"
// and whose parts are non-empty and hold exactly one kind of data; every functionResponse naming
// a function. Without `alt=sse` the stream method answers a JSON array, as Gemini does.
//
// Scenario: queued with fake.next(...), else the model in the URL when it names a scenario,
// else "ok". Scenarios:
//   ok        text: tests/fixtures/gemini/reply_text.json (TEXT); stream: STREAM_PIECES, the last
//             chunk with finishReason STOP — the fake's own, as the test wants multi-byte text
//             in it, which stream_text.sse has not
//   fc        two functionCall parts (FUNCTION_CALLS; the first with a thoughtSignature; stream:
//             one per chunk), finishReason STOP — the fake's own: the recorded function-call
//             replies name other calls, and stream_function_call.sse opens with a thought part
//   safety    the prompt is blocked (reply_safety_blocked.json; stream: stream_safety.sse):
//             promptFeedback.blockReason SAFETY and no candidates
//   safety-candidate  a candidate that stops with finishReason SAFETY after some text
//   err-400   400 INVALID_ARGUMENT;  err-403 403 PERMISSION_DENIED;
//   err-429   429 RESOURCE_EXHAUSTED (error_resource_exhausted_429.json, retryDelay 37s)
//   err-500   500 INTERNAL;          err-503 503 UNAVAILABLE
// Recorded replies get the request's model as modelVersion, a fresh responseId and, but for
// safety's, the usage below.
// usageMetadata is fixed: USAGE (prompt 120 of which 100 cached, candidates 10, thoughts 20,
// total 150) on every reply and on the last stream chunk (earlier chunks carry the prompt count
// only). Gemini's promptTokenCount includes cached tokens; candidatesTokenCount excludes
// thoughts — so an OpenAI client should see prompt 120 (cached 100), completion 30 (reasoning
// 20), total 150.

import { startFakeServer, sendJson, startSse, writeSplit, fakeId, fixtureJson, fixtureSse } from "./fake-common.mjs";

const REPLY_TEXT = fixtureJson("gemini/reply_text.json");
const REPLY_SAFETY = fixtureJson("gemini/reply_safety_blocked.json");
const STREAM_SAFETY = fixtureSse("gemini/stream_safety.sse").map((e) => e.data);
const ERROR_QUOTA = fixtureJson("gemini/error_resource_exhausted_429.json");

export const TEXT = REPLY_TEXT.candidates[0].content.parts[0].text;
export const STREAM_PIECES = ["The", " capital of Wyoming", " is **Cheyenne** – ✓.\n"];
export const USAGE = {
  promptTokenCount: 120,
  candidatesTokenCount: 10,
  totalTokenCount: 150,
  cachedContentTokenCount: 100,
  thoughtsTokenCount: 20,
};
/** What an OpenAI client should be told for USAGE. */
export const OPENAI_USAGE = { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150, cached_tokens: 100, reasoning_tokens: 20 };
export const FUNCTION_CALLS = [
  { name: "get_weather", args: { location: "Paris", unit: "celsius" } },
  { name: "get_weather", args: { location: "Tokyo" } },
];
export const THOUGHT_SIGNATURE = "CiIBVKhc7vB+vaaq6rA/KC79Ts7i==";
export const SAFETY_TEXT = "I can tell you that";

const SCENARIOS = new Set(["ok", "fc", "safety", "safety-candidate", "err-400", "err-403", "err-429", "err-500", "err-503"]);

const TOP_FIELDS = new Set(["contents", "systemInstruction", "system_instruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent"]);
const GENERATION_FIELDS = new Set([
  "temperature",
  "topP",
  "topK",
  "maxOutputTokens",
  "stopSequences",
  "candidateCount",
  "presencePenalty",
  "frequencyPenalty",
  "seed",
  "responseMimeType",
  "responseSchema",
  "responseJsonSchema",
  "responseLogprobs",
  "logprobs",
  "thinkingConfig",
  "responseModalities",
]);
const PART_DATA = ["text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult"];
const PART_FIELDS = new Set([...PART_DATA, "thought", "thoughtSignature", "videoMetadata"]);
/** Gemini's Schema object (an OpenAPI 3.0 subset). */
const SCHEMA_FIELDS = new Set([
  "type",
  "format",
  "title",
  "description",
  "nullable",
  "enum",
  "maxItems",
  "minItems",
  "properties",
  "required",
  "minProperties",
  "maxProperties",
  "minLength",
  "maxLength",
  "pattern",
  "example",
  "anyOf",
  "propertyOrdering",
  "default",
  "items",
  "minimum",
  "maximum",
]);

const STATUS = { 400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE" };

class InvalidArgument extends Error {}
const fail = (message) => {
  throw new InvalidArgument(message);
};
const unknown = (name, where) => fail(`Invalid JSON payload received. Unknown name "${name}"${where ? ` at '${where}'` : ""}: Cannot find field.`);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

export function errorBody(code, message, extra = {}) {
  return { error: { code, message, status: STATUS[code] ?? "UNKNOWN", ...extra } };
}

function sendError(res, code, message, extra) {
  sendJson(res, code, errorBody(code, message, extra));
}

function checkSchema(schema, where) {
  if (!isObject(schema)) fail(`Invalid value at '${where}': expected a Schema object`);
  for (const k of Object.keys(schema)) if (!SCHEMA_FIELDS.has(k)) unknown(k, where);
  if (schema.type !== undefined) {
    const t = String(schema.type).toUpperCase();
    if (!["STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL", "TYPE_UNSPECIFIED"].includes(t)) {
      fail(`Invalid value at '${where}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "${schema.type}"`);
    }
  }
  if (schema.properties !== undefined) {
    if (!isObject(schema.properties)) fail(`Invalid value at '${where}.properties'`);
    for (const [name, sub] of Object.entries(schema.properties)) checkSchema(sub, `${where}.properties[${name}].value`);
  }
  if (schema.items !== undefined) checkSchema(schema.items, `${where}.items`);
  if (schema.anyOf !== undefined) schema.anyOf.forEach((s, i) => checkSchema(s, `${where}.any_of[${i}]`));
}

/** Validates a generateContent body like the real API; throws InvalidArgument. */
export function validateGenerateBody(body) {
  if (!isObject(body)) fail("Invalid JSON payload received. Expected an object.");
  for (const k of Object.keys(body)) if (!TOP_FIELDS.has(k)) unknown(k);
  if (!Array.isArray(body.contents) || body.contents.length === 0) fail("* GenerateContentRequest.contents: contents is not specified\n");
  const checkParts = (parts, where) => {
    if (!Array.isArray(parts) || parts.length === 0) fail(`* ${where}.parts: contents.parts must not be empty.\n`);
    parts.forEach((p, j) => {
      if (!isObject(p)) fail(`Invalid value at '${where}.parts[${j}]'`);
      for (const k of Object.keys(p)) if (!PART_FIELDS.has(k)) unknown(k, `${where}.parts[${j}]`);
      const data = PART_DATA.filter((k) => p[k] !== undefined);
      if (data.length !== 1) fail(`* ${where}.parts[${j}].data: required oneof field 'data' must have one initialized field\n`);
      if (p.text !== undefined && typeof p.text !== "string") fail(`Invalid value at '${where}.parts[${j}].text'`);
      if (p.inlineData !== undefined && (typeof p.inlineData.mimeType !== "string" || typeof p.inlineData.data !== "string" || p.inlineData.data.startsWith("data:"))) {
        fail(`* ${where}.parts[${j}].inline_data: mime_type and base64 data are required\n`);
      }
      if (p.functionCall !== undefined && (typeof p.functionCall.name !== "string" || !p.functionCall.name)) fail(`* ${where}.parts[${j}].function_call.name: Name cannot be empty.\n`);
      if (p.functionResponse !== undefined) {
        if (typeof p.functionResponse.name !== "string" || !p.functionResponse.name) fail(`* ${where}.parts[${j}].function_response.name: Name cannot be empty.\n`);
        if (!isObject(p.functionResponse.response)) fail(`Invalid value at '${where}.parts[${j}].function_response.response' (type.googleapis.com/google.protobuf.Struct)`);
      }
    });
  };
  body.contents.forEach((c, i) => {
    if (!isObject(c)) fail(`Invalid value at 'contents[${i}]'`);
    for (const k of Object.keys(c)) if (k !== "role" && k !== "parts") unknown(k, `contents[${i}]`);
    if (c.role !== undefined && c.role !== "user" && c.role !== "model") fail(`* GenerateContentRequest.contents[${i}].role: Please use a valid role: user, model.\n`);
    checkParts(c.parts, `GenerateContentRequest.contents[${i}]`);
  });
  const system = body.systemInstruction ?? body.system_instruction;
  if (system !== undefined) {
    if (!isObject(system)) fail("Invalid value at 'system_instruction'");
    checkParts(system.parts, "GenerateContentRequest.system_instruction");
  }
  if (body.generationConfig !== undefined) {
    if (!isObject(body.generationConfig)) fail("Invalid value at 'generation_config'");
    for (const k of Object.keys(body.generationConfig)) if (!GENERATION_FIELDS.has(k)) unknown(k, "generation_config");
    if (body.generationConfig.responseSchema !== undefined) checkSchema(body.generationConfig.responseSchema, "generation_config.response_schema");
  }
  if (body.tools !== undefined) {
    if (!Array.isArray(body.tools)) fail("Invalid value at 'tools'");
    body.tools.forEach((t, i) => {
      for (const k of Object.keys(t)) {
        if (!["functionDeclarations", "googleSearch", "codeExecution", "urlContext", "googleSearchRetrieval"].includes(k)) unknown(k, `tools[${i}]`);
      }
      (t.functionDeclarations ?? []).forEach((d, j) => {
        const where = `tools[${i}].function_declarations[${j}]`;
        for (const k of Object.keys(d)) {
          if (!["name", "description", "parameters", "parametersJsonSchema", "response", "behavior"].includes(k)) unknown(k, where);
        }
        if (typeof d.name !== "string" || !/^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$/.test(d.name)) fail(`* GenerateContentRequest.${where}.name: Invalid function name.\n`);
        if (d.parameters !== undefined) {
          checkSchema(d.parameters, `${where}.parameters`);
          if (String(d.parameters.type).toUpperCase() === "OBJECT" && (!d.parameters.properties || !Object.keys(d.parameters.properties).length)) {
            fail(`* GenerateContentRequest.${where}.parameters.properties: should be non-empty for OBJECT type\n`);
          }
        }
      });
    });
  }
  if (body.toolConfig !== undefined) {
    const mode = body.toolConfig?.functionCallingConfig?.mode;
    if (mode !== undefined && !["AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"].includes(mode)) {
      fail(`Invalid value at 'tool_config.function_calling_config.mode', "${mode}"`);
    }
  }
}

const candidate = (parts, finishReason) => ({
  content: { parts, role: "model" },
  ...(finishReason ? { finishReason } : {}),
  index: 0,
});

const envelope = (model, extra) => ({ ...extra, modelVersion: model, responseId: fakeId("") });

export async function startFakeGemini() {
  const fake = await startFakeServer({
    name: "fake Gemini",
    scenarios: SCENARIOS,
    scenarioOf: (rec) => {
      const m = /^\/v1beta\/models\/([^/:]+):/.exec(rec.path);
      const model = m ? decodeURIComponent(m[1]) : "";
      return SCENARIOS.has(model) ? model : "ok";
    },
    handle,
  });

  async function handle(req, res, rec) {
    const m = /^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent)$/.exec(rec.path);
    if (!m) return sendError(res, 404, `Requested entity was not found. (${rec.method} ${rec.path})`);
    if (rec.method !== "POST") return sendError(res, 404, `Method not found: ${rec.method}`);
    const model = decodeURIComponent(m[1]);
    const stream = m[2] === "streamGenerateContent";
    rec.model = model;
    rec.stream = stream;
    const key = req.headers["x-goog-api-key"] ?? rec.query.key;
    if (!key) {
      return sendError(
        res,
        403,
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
      );
    }
    if (rec.body === undefined || rec.body === null) return sendError(res, 400, "Invalid JSON payload received. Unexpected token.");
    try {
      validateGenerateBody(rec.body);
    } catch (e) {
      if (!(e instanceof InvalidArgument)) throw e;
      rec.invalid = e.message;
      return sendError(res, 400, e.message);
    }
    switch (rec.scenario) {
      case "err-400":
        return sendError(res, 400, "* GenerateContentRequest.generation_config: err-400 was asked for by the test\n");
      case "err-403":
        return sendError(res, 403, "Permission denied: Consumer 'api_key:test' has been suspended.");
      case "err-429":
        return sendJson(res, 429, ERROR_QUOTA);
      case "err-500":
        return sendError(res, 500, "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting");
      case "err-503":
        return sendError(res, 503, "The model is overloaded. Please try again later.");
    }
    if (stream && rec.query.alt !== "sse") {
      // Without alt=sse Gemini streams one JSON array of responses.
      return sendJson(res, 200, chunks(model, rec.scenario));
    }
    if (stream) {
      startSse(res);
      for (const c of chunks(model, rec.scenario)) writeSplit(res, `data: ${JSON.stringify(c)}\r\n\r\n`);
      return res.end();
    }
    return sendJson(res, 200, whole(model, rec.scenario));
  }

  return { ...fake, baseUrl: `${fake.origin}/v1beta` };
}

function whole(model, scenario) {
  switch (scenario) {
    case "fc":
      return envelope(model, {
        candidates: [
          candidate(
            FUNCTION_CALLS.map((fc, i) => ({ functionCall: fc, ...(i === 0 ? { thoughtSignature: THOUGHT_SIGNATURE } : {}) })),
            "STOP",
          ),
        ],
        usageMetadata: USAGE,
      });
    case "safety":
      return envelope(model, REPLY_SAFETY);
    case "safety-candidate":
      return envelope(model, {
        candidates: [
          {
            ...candidate([{ text: SAFETY_TEXT }], "SAFETY"),
            safetyRatings: [{ category: "HARM_CATEGORY_DANGEROUS_CONTENT", probability: "HIGH", blocked: true }],
          },
        ],
        usageMetadata: USAGE,
      });
    default:
      return envelope(model, { ...REPLY_TEXT, usageMetadata: USAGE });
  }
}

/** The chunks of a stream: each a whole GenerateContentResponse with the new parts only. */
function chunks(model, scenario) {
  const early = { promptTokenCount: USAGE.promptTokenCount, totalTokenCount: USAGE.promptTokenCount };
  switch (scenario) {
    case "fc":
      return FUNCTION_CALLS.map((fc, i) =>
        envelope(model, {
          candidates: [
            candidate(
              [{ functionCall: fc, ...(i === 0 ? { thoughtSignature: THOUGHT_SIGNATURE } : {}) }],
              i === FUNCTION_CALLS.length - 1 ? "STOP" : undefined,
            ),
          ],
          usageMetadata: i === FUNCTION_CALLS.length - 1 ? USAGE : early,
        }),
      );
    case "safety":
      return STREAM_SAFETY.map((c) => envelope(model, c));
    case "safety-candidate":
      return [
        envelope(model, { candidates: [candidate([{ text: SAFETY_TEXT }])], usageMetadata: early }),
        envelope(model, { candidates: [{ ...candidate([{ text: "" }], "SAFETY") }], usageMetadata: USAGE }),
      ];
    default:
      return STREAM_PIECES.map((text, i) =>
        envelope(model, {
          candidates: [candidate([{ text }], i === STREAM_PIECES.length - 1 ? "STOP" : undefined)],
          usageMetadata: i === STREAM_PIECES.length - 1 ? USAGE : early,
        }),
      );
  }
}
