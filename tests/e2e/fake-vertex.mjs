// A fake Google Cloud for the Vertex AI end-to-end tests, on 127.0.0.1 (port 0): an OAuth token
// endpoint and Vertex AI's prediction routes, on one server.
//   POST /token    (form: grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>)
//   POST /v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent
//                                                   …:streamGenerateContent?alt=sse
//   POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict
//                                                   …:streamRawPredict
//   channel: { provider: "vertex" | "vertex-anthropic", base_url: fake.baseUrl,
//              options: { project: fake.project, region: fake.region },
//              api_keys: [JSON.stringify(fake.keyFile(account))] }
//
// Service accounts: fake.createServiceAccount(name) makes an RSA-2048 key pair (node crypto),
// registers the public key under its client_email, and returns { email, privateKey, publicKey,
// keyFile } — keyFile is the JSON key file Google hands out, with token_uri → this fake.
//
// The token endpoint checks the assertion as Google does: a form body with the jwt-bearer grant;
// a JWT whose header says RS256 and whose RS256 signature verifies with the account's public key;
// claims iss = a registered client_email, aud = the token_uri, scope = cloud-platform, exp - iat
// = 3600 and iat within 5 minutes of now. It answers {"access_token":"ya29.<random>",
// "expires_in": 3599, "token_type":"Bearer"} (expires_in per account: createServiceAccount(name,
// { expiresIn })), or 400 {"error":"invalid_grant", …}. Every exchange is kept in
// fake.tokenRequests ({ email, ok, error, claims, token }).
//
// The prediction routes accept only `Authorization: Bearer <a token this fake issued>` (else 401
// UNAUTHENTICATED), only the configured project (else 403 PERMISSION_DENIED) and region (else 400).
// Gemini bodies are checked like fake-gemini.mjs's (plus `role` required on every content, as
// Vertex does); Anthropic bodies like fake-anthropic.mjs's, except that Vertex wants NO `model` in
// the body (the URL names it) and `anthropic_version: "vertex-2023-10-16"` in it, and
// streamRawPredict / rawPredict must agree with `stream`. Invalid → 400 INVALID_ARGUMENT (and
// rec.invalid).
//
// Scenario: queued with fake.next(...), else the model in the URL when it names one, else "ok":
//   ok       Gemini: text (GEMINI_TEXT; stream GEMINI_PIECES); Anthropic: text (CLAUDE_TEXT;
//            stream CLAUDE_PIECES)
//   tools    Gemini: two functionCall parts; Anthropic: text + two tool_use blocks
//   err-429  429 RESOURCE_EXHAUSTED;  err-400  400 INVALID_ARGUMENT;  err-500  500 INTERNAL
// Usage: Gemini GEMINI_USAGE (prompt 30, candidates 8, total 38); Anthropic CLAUDE_USAGE
// (non-stream: input 40, output 9) and CLAUDE_STREAM_USAGE (input 44, output 11).

import crypto from "node:crypto";
import { startFakeServer, sendJson, startSse, writeSplit, fakeId } from "./fake-common.mjs";
import { validateGenerateBody } from "./fake-gemini.mjs";
import { validateMessagesBody } from "./fake-anthropic.mjs";

export const PROJECT = "p";
export const REGION = "us-east5";
export const SCOPE = "https://www.googleapis.com/auth/cloud-platform";
export const VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16";
export const GEMINI_TEXT = "Vertex says: the capital of Wyoming is Cheyenne.";
export const GEMINI_PIECES = ["Vertex says:", " the capital", " of Wyoming is Cheyenne – ✓."];
export const GEMINI_USAGE = { promptTokenCount: 30, candidatesTokenCount: 8, totalTokenCount: 38 };
export const FUNCTION_CALLS = [
  { name: "get_weather", args: { location: "Paris" } },
  { name: "get_time", args: { timezone: "Europe/Paris" } },
];
export const CLAUDE_TEXT = "Claude on Vertex: Cheyenne.";
export const CLAUDE_PIECES = ["Claude", " on Vertex:", " Cheyenne – ✓ 😀."];
export const CLAUDE_USAGE = { input_tokens: 40, output_tokens: 9, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
export const CLAUDE_STREAM_USAGE = { input_tokens: 44, output_tokens: 11, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
export const CLAUDE_TOOL_USES = [
  { id: "toolu_vrtx_01A", name: "get_weather", input: { location: "Paris" }, fragments: ['{"loca', 'tion": "Paris"}'] },
  { id: "toolu_vrtx_01B", name: "get_time", input: { timezone: "Europe/Paris" }, fragments: ["", '{"timezone":', ' "Europe/Paris"}'] },
];

const SCENARIOS = new Set(["ok", "tools", "err-400", "err-429", "err-500"]);
const STATUS = { 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL" };

function sendGoogleError(res, code, message) {
  sendJson(res, code, { error: { code, message, status: STATUS[code] ?? "UNKNOWN" } });
}

const b64urlJson = (s) => JSON.parse(Buffer.from(s, "base64url").toString("utf8"));

export async function startFakeVertex({ project = PROJECT, region = REGION } = {}) {
  const accounts = new Map(); // email → { publicKey, expiresIn }
  const issued = new Map(); // token → email
  const tokenRequests = [];
  let tokenUri; // set once the port is known

  const fake = await startFakeServer({
    name: "fake Vertex AI",
    scenarios: SCENARIOS,
    scenarioOf: (rec) => {
      const m = /\/models\/([^/:]+):/.exec(rec.path);
      const model = m ? decodeURIComponent(m[1]) : "";
      return SCENARIOS.has(model) ? model : "ok";
    },
    handle,
  });
  tokenUri = `${fake.origin}/token`;

  async function handle(req, res, rec) {
    if (rec.path === "/token") return token(req, res, rec);
    const m = /^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/publishers\/(google|anthropic)\/models\/([^/:]+):([A-Za-z]+)$/.exec(rec.path);
    if (!m || rec.method !== "POST") return sendGoogleError(res, 404, `The requested URL ${rec.path} was not found on this server.`);
    const [, proj, loc, publisher, rawModel, method] = m;
    const model = decodeURIComponent(rawModel);
    Object.assign(rec, { project: decodeURIComponent(proj), region: decodeURIComponent(loc), publisher, model, rpc: method });
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
    rec.token = auth?.[1];
    if (!auth || !issued.has(auth[1])) {
      return sendGoogleError(
        res,
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
      );
    }
    rec.tokenOwner = issued.get(auth[1]);
    if (rec.project !== project) {
      return sendGoogleError(res, 403, `Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/projects/${rec.project}/locations/${rec.region}/publishers/${publisher}/models/${model}' (or it may not exist).`);
    }
    if (rec.region !== region) return sendGoogleError(res, 400, `Location ${rec.region} is not served by this regional endpoint (${region}).`);
    if (rec.body === undefined || rec.body === null) return sendGoogleError(res, 400, "Invalid JSON payload received.");
    const methods = publisher === "google" ? ["generateContent", "streamGenerateContent"] : ["rawPredict", "streamRawPredict"];
    if (!methods.includes(method)) return sendGoogleError(res, 404, `Method ${method} not found for publisher ${publisher}.`);
    rec.stream = method.startsWith("stream");
    try {
      if (publisher === "google") {
        validateGenerateBody(rec.body);
        rec.body.contents.forEach((c, i) => {
          if (c.role === undefined) throw Object.assign(new Error(`Please use a valid role: user, model. (contents[${i}].role is missing)`), { invalid: true });
        });
      } else {
        const { anthropic_version: version, ...rest } = rec.body;
        if (version !== VERTEX_ANTHROPIC_VERSION) throw Object.assign(new Error(`anthropic_version: Input should be '${VERTEX_ANTHROPIC_VERSION}' (got ${JSON.stringify(version)})`), { invalid: true });
        if ("model" in rest) throw Object.assign(new Error("model: Extra inputs are not permitted (Vertex AI takes the model from the URL)"), { invalid: true });
        validateMessagesBody({ ...rest, model });
        if ((rest.stream === true) !== rec.stream) throw Object.assign(new Error(`${method} needs "stream": ${rec.stream}`), { invalid: true });
      }
    } catch (e) {
      if (!(e.invalid || e.constructor.name === "InvalidArgument" || e.constructor.name === "InvalidRequest")) throw e;
      rec.invalid = e.message;
      return sendGoogleError(res, 400, e.message);
    }
    switch (rec.scenario) {
      case "err-400":
        return sendGoogleError(res, 400, "err-400 was asked for by the test");
      case "err-429":
        return sendGoogleError(res, 429, `Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model with base model: ${model}. Please submit a quota increase request.`);
      case "err-500":
        return sendGoogleError(res, 500, "Internal error encountered.");
    }
    if (publisher === "google") {
      if (!rec.stream) return sendJson(res, 200, geminiWhole(model, rec.scenario));
      if (rec.query.alt !== "sse") return sendJson(res, 200, geminiChunks(model, rec.scenario));
      startSse(res);
      for (const c of geminiChunks(model, rec.scenario)) writeSplit(res, `data: ${JSON.stringify(c)}\r\n\r\n`);
      return res.end();
    }
    if (!rec.stream) return sendJson(res, 200, claudeWhole(model, rec.scenario));
    return claudeStream(res, model, rec.scenario);
  }

  function token(req, res, rec) {
    const refuse = (error, description, status = 400) => {
      tokenRequests.push({ ok: false, error, description, email: rec.tokenClaims?.iss });
      sendJson(res, status, { error, error_description: description });
    };
    if (rec.method !== "POST") return refuse("invalid_request", "POST required", 405);
    if (!/^application\/x-www-form-urlencoded/.test(req.headers["content-type"] ?? "")) return refuse("invalid_request", "Content-Type must be application/x-www-form-urlencoded");
    const form = new URLSearchParams(rec.rawBody);
    if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer") return refuse("unsupported_grant_type", `Invalid grant_type: ${form.get("grant_type")}`);
    const assertion = form.get("assertion") ?? "";
    const parts = assertion.split(".");
    if (parts.length !== 3) return refuse("invalid_grant", "Invalid JWT: not a JWS compact serialization");
    let header;
    try {
      header = b64urlJson(parts[0]);
      rec.tokenClaims = b64urlJson(parts[1]);
    } catch {
      return refuse("invalid_grant", "Invalid JWT: cannot decode");
    }
    const claims = rec.tokenClaims;
    if (header.alg !== "RS256") return refuse("invalid_grant", `Invalid JWT: alg ${header.alg} is not RS256`);
    const account = accounts.get(claims.iss);
    if (!account) return refuse("invalid_grant", "Invalid grant: account not found");
    const valid = crypto.verify("sha256", Buffer.from(`${parts[0]}.${parts[1]}`), account.publicKey, Buffer.from(parts[2], "base64url"));
    if (!valid) return refuse("invalid_grant", "Invalid JWT Signature.");
    if (claims.aud !== tokenUri) return refuse("invalid_grant", `Invalid JWT: aud must be ${tokenUri}, got ${claims.aud}`);
    if (claims.scope !== SCOPE) return refuse("invalid_scope", `Invalid OAuth scope or ID token audience provided: ${claims.scope}`);
    const now = Math.floor(Date.now() / 1000);
    if (!Number.isInteger(claims.iat) || !Number.isInteger(claims.exp) || claims.exp - claims.iat !== 3600 || Math.abs(claims.iat - now) > 300) {
      return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.");
    }
    const access = `ya29.${crypto.randomBytes(24).toString("base64url")}`;
    issued.set(access, claims.iss);
    tokenRequests.push({ ok: true, email: claims.iss, claims, token: access });
    sendJson(res, 200, { access_token: access, expires_in: account.expiresIn, token_type: "Bearer" });
  }

  /** A service account with a fresh RSA key pair, registered with the token endpoint. */
  function createServiceAccount(name, { expiresIn = 3599, register = true } = {}) {
    const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", {
      modulusLength: 2048,
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
      publicKeyEncoding: { type: "spki", format: "pem" },
    });
    const email = `${name}@${project}.iam.gserviceaccount.com`;
    if (register) accounts.set(email, { publicKey, expiresIn });
    const keyFile = {
      type: "service_account",
      project_id: project,
      private_key_id: crypto.randomBytes(20).toString("hex"),
      private_key: privateKey,
      client_email: email,
      client_id: String(100000000000000000000n + BigInt(accounts.size)),
      auth_uri: "https://accounts.google.com/o/oauth2/auth",
      token_uri: tokenUri,
      auth_provider_x509_cert_url: "https://www.googleapis.com/oauth2/v1/certs",
      client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(email)}`,
      universe_domain: "googleapis.com",
    };
    return { email, privateKey, publicKey, keyFile, keyFileText: JSON.stringify(keyFile) };
  }

  return {
    ...fake,
    project,
    region,
    tokenUri,
    tokenRequests,
    issued,
    baseUrl: `${fake.origin}/v1`,
    createServiceAccount,
    /** Registers another public key for an existing email (a rotated key). */
    registerKey(email, publicKey, { expiresIn = 3599 } = {}) {
      accounts.set(email, { publicKey, expiresIn });
    },
    /** Token exchanges so far for an email (optionally only successful ones). */
    tokensFor(email, { okOnly = true } = {}) {
      return tokenRequests.filter((t) => t.email === email && (!okOnly || t.ok));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Gemini replies (Vertex's shape: usageMetadata with token details, createTime, responseId)

const geminiUsage = (early) =>
  early
    ? { promptTokenCount: GEMINI_USAGE.promptTokenCount, totalTokenCount: GEMINI_USAGE.promptTokenCount, trafficType: "ON_DEMAND" }
    : { ...GEMINI_USAGE, trafficType: "ON_DEMAND", promptTokensDetails: [{ modality: "TEXT", tokenCount: GEMINI_USAGE.promptTokenCount }], candidatesTokensDetails: [{ modality: "TEXT", tokenCount: GEMINI_USAGE.candidatesTokenCount }] };

const geminiEnvelope = (model, candidates, early) => ({
  candidates,
  usageMetadata: geminiUsage(early),
  modelVersion: model,
  createTime: new Date().toISOString(),
  responseId: fakeId(""),
});

const candidate = (parts, finishReason) => ({ content: { role: "model", parts }, ...(finishReason ? { finishReason } : {}), ...(finishReason ? { avgLogprobs: -0.12 } : {}) });

function geminiWhole(model, scenario) {
  if (scenario === "tools") return geminiEnvelope(model, [candidate(FUNCTION_CALLS.map((functionCall) => ({ functionCall })), "STOP")]);
  return geminiEnvelope(model, [candidate([{ text: GEMINI_TEXT }], "STOP")]);
}

function geminiChunks(model, scenario) {
  if (scenario === "tools") {
    return FUNCTION_CALLS.map((functionCall, i) => {
      const last = i === FUNCTION_CALLS.length - 1;
      return geminiEnvelope(model, [candidate([{ functionCall }], last ? "STOP" : undefined)], !last);
    });
  }
  return GEMINI_PIECES.map((text, i) => {
    const last = i === GEMINI_PIECES.length - 1;
    return geminiEnvelope(model, [candidate([{ text }], last ? "STOP" : undefined)], !last);
  });
}

// ---------------------------------------------------------------------------------------------
// Anthropic replies (as Vertex returns them: Anthropic's own shapes)

const claudeModelName = (model) => model.replace("@", "-");

function claudeWhole(model, scenario) {
  const content =
    scenario === "tools"
      ? [{ type: "text", text: "Checking." }, ...CLAUDE_TOOL_USES.map((t) => ({ type: "tool_use", id: t.id, name: t.name, input: t.input }))]
      : [{ type: "text", text: CLAUDE_TEXT }];
  return {
    id: fakeId("msg_vrtx_"),
    type: "message",
    role: "assistant",
    model: claudeModelName(model),
    content,
    stop_reason: scenario === "tools" ? "tool_use" : "end_turn",
    stop_sequence: null,
    usage: { ...CLAUDE_USAGE },
  };
}

const sseEvent = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

function claudeStream(res, model, scenario) {
  startSse(res);
  res.write(
    sseEvent("message_start", {
      message: { id: fakeId("msg_vrtx_"), type: "message", role: "assistant", model: claudeModelName(model), content: [], stop_reason: null, stop_sequence: null, usage: { ...CLAUDE_STREAM_USAGE, output_tokens: 1 } },
    }),
  );
  res.write(sseEvent("ping", {}));
  let index = 0;
  const text = (pieces) => {
    const i = index++;
    res.write(sseEvent("content_block_start", { index: i, content_block: { type: "text", text: "" } }));
    for (const t of pieces) writeSplit(res, sseEvent("content_block_delta", { index: i, delta: { type: "text_delta", text: t } }));
    res.write(sseEvent("content_block_stop", { index: i }));
  };
  let stop = "end_turn";
  if (scenario === "tools") {
    text(["Checking."]);
    for (const t of CLAUDE_TOOL_USES) {
      const i = index++;
      res.write(sseEvent("content_block_start", { index: i, content_block: { type: "tool_use", id: t.id, name: t.name, input: {} } }));
      for (const partial_json of t.fragments) writeSplit(res, sseEvent("content_block_delta", { index: i, delta: { type: "input_json_delta", partial_json } }));
      res.write(sseEvent("content_block_stop", { index: i }));
    }
    stop = "tool_use";
  } else text(CLAUDE_PIECES);
  res.write(sseEvent("message_delta", { delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: CLAUDE_STREAM_USAGE.output_tokens } }));
  res.end(sseEvent("message_stop", {}));
}
