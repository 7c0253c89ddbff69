// A fake Amazon Bedrock Runtime (Converse API) for the end-to-end tests, on 127.0.0.1 (port 0):
//   POST /model/{modelId}/converse          JSON reply
//   POST /model/{modelId}/converse-stream   binary application/vnd.amazon.eventstream frames
//   channel: { provider: "bedrock", base_url: fake.baseUrl, options: { region: fake.region },
//              api_keys: ["AKID:SECRET"] or ["AKID:SECRET:TOKEN"] }
//
// Like the real service it authenticates every request with AWS Signature Version 4, verified
// here independently of the relay (node's crypto): the Authorization header's credential scope
// (date/region/service "bedrock"/aws4_request), `x-amz-date` within 5 minutes of now, `host` and
// `x-amz-date` among the signed headers, `x-amz-content-sha256` (when sent) equal to the body's
// hash, the session token (`x-amz-security-token`) of temporary credentials, and the signature
// over the canonical request — whose URI is the path as sent, URI-encoded once more (a model id's
// ':' travels as %3A and is signed as %253A, as AWS does for every service but S3). Failures get
// AWS's 403 answers (MissingAuthenticationTokenException, UnrecognizedClientException,
// InvalidSignatureException "The request signature we calculated does not match …"); each
// request's verdict is kept in rec.sigv4 ({ ok, canonicalRequest, stringToSign, … }).
//
// It then checks the body as Converse would, answering 400 ValidationException otherwise: only
// Converse's top-level fields; non-empty `messages` alternating user/assistant from a user turn;
// content blocks holding exactly one member; no blank text; toolUse ids of [a-zA-Z0-9_-]{1,64}
// and object inputs; every toolResult answering a toolUse of the assistant turn before;
// `toolConfig` present whenever the history has tool blocks; inferenceConfig in range.
//
// Scenario: queued with fake.next(...), else the model id's first dot-separated segment when it
// names one ("tools.anthropic.claude-…" → tools), else "ok":
//   ok             text: tests/fixtures/bedrock/reply_text.json (TEXT) with USAGE set; stream:
//                  STREAM_PIECES, stopReason end_turn — the fake's own, as the test wants
//                  multi-byte text in it, which stream_text.bin has not
//   tools          text (TOOLS_TEXT) then two toolUse blocks (TOOL_USES), stopReason tool_use;
//                  stream: contentBlockStart per tool, input JSON in fragments — the fake's own:
//                  the recorded tool replies call another tool, after a reasoning block
//   err-400        400 ValidationException;  err-429  429 ThrottlingException
//                  (error_throttling_429.json: THROTTLE_MESSAGE)
//   err-500        500 InternalServerException;  err-503  503 ServiceUnavailableException
//   stream-exception  (stream) stream_exception.bin as recorded: messageStart, one text delta,
//                  then an exception frame (throttlingException); non-stream: like err-429
// Usage is fixed: USAGE (inputTokens 12 — Bedrock's excludes cache reads — cacheReadInputTokens
// 100, outputTokens 19, totalTokens 131) in replies and in the stream's `metadata` event; an
// OpenAI client should see prompt 112 (cached 100), completion 19, total 131.
// Every stream is written in uneven pieces that cut frames (and their preludes) anywhere.

import crypto from "node:crypto";
import { startFakeServer, sendJson, fixture, fixtureJson } from "./fake-common.mjs";

const REPLY_TEXT = fixtureJson("bedrock/reply_text.json");
const STREAM_EXCEPTION = fixture("bedrock/stream_exception.bin");
const ERROR_THROTTLING = fixtureJson("bedrock/error_throttling_429.json");

export const REGION = "us-east-1";
export const TEXT = REPLY_TEXT.output.message.content[0].text;
export const STREAM_PIECES = ["Chey", "enne is the capital", " of Wyoming – ✓ 😀."];
export const TOOLS_TEXT = "I'll look up both cities.";
export const TOOL_USES = [
  { toolUseId: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", name: "get_weather", input: { location: "Paris", unit: "celsius" }, fragments: ['{"locat', 'ion": "Par', 'is", "unit"', ': "celsius"}'] },
  { toolUseId: "tooluse_3bX9pQ2dR7sT1uV5wY8zAa", name: "get_weather", input: { location: "Tokyo" }, fragments: ["", '{"location":', ' "Tokyo"}'] },
];
export const USAGE = { inputTokens: 12, outputTokens: 19, totalTokens: 131, cacheReadInputTokens: 100, cacheWriteInputTokens: 0 };
/** What an OpenAI client should be told for USAGE. */
export const OPENAI_USAGE = { prompt_tokens: 112, completion_tokens: 19, total_tokens: 131, cached_tokens: 100 };
export const THROTTLE_MESSAGE = ERROR_THROTTLING.message;
export const SIGNATURE_MISMATCH =
  "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

const SCENARIOS = new Set(["ok", "tools", "err-400", "err-429", "err-500", "err-503", "stream-exception"]);

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) and the event-stream framing

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One event-stream message: headers [[name, stringValue]] and a payload (Buffer or JSON value). */
export function encodeFrame(headers, payload) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload), "utf8");
  const hs = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, "utf8");
    const v = Buffer.from(value, "utf8");
    const h = Buffer.alloc(1 + n.length + 1 + 2 + v.length);
    h.writeUInt8(n.length, 0);
    n.copy(h, 1);
    h.writeUInt8(7, 1 + n.length); // 7: string
    h.writeUInt16BE(v.length, 2 + n.length);
    v.copy(h, 4 + n.length);
    hs.push(h);
  }
  const headerBytes = Buffer.concat(hs);
  const total = 12 + headerBytes.length + body.length + 4;
  const frame = Buffer.alloc(total);
  frame.writeUInt32BE(total, 0);
  frame.writeUInt32BE(headerBytes.length, 4);
  frame.writeUInt32BE(crc32(frame.subarray(0, 8)), 8);
  headerBytes.copy(frame, 12);
  body.copy(frame, 12 + headerBytes.length);
  frame.writeUInt32BE(crc32(frame.subarray(0, total - 4)), total - 4);
  return frame;
}

/** Decodes whole frames (checking both CRCs): [{ headers: {name: value}, payload: Buffer }]. */
export function decodeFrames(buf) {
  const out = [];
  let at = 0;
  while (at < buf.length) {
    if (buf.length - at < 16) throw new Error(`truncated frame at ${at}`);
    const total = buf.readUInt32BE(at);
    const headersLen = buf.readUInt32BE(at + 4);
    if (crc32(buf.subarray(at, at + 8)) !== buf.readUInt32BE(at + 8)) throw new Error(`bad prelude CRC at ${at}`);
    if (at + total > buf.length) throw new Error(`truncated frame at ${at}`);
    const frame = buf.subarray(at, at + total);
    if (crc32(frame.subarray(0, total - 4)) !== frame.readUInt32BE(total - 4)) throw new Error(`bad message CRC at ${at}`);
    const headers = {};
    let h = 12;
    while (h < 12 + headersLen) {
      const nameLen = frame.readUInt8(h);
      const name = frame.subarray(h + 1, h + 1 + nameLen).toString("utf8");
      const type = frame.readUInt8(h + 1 + nameLen);
      h += 2 + nameLen;
      if (type === 7 || type === 6) {
        const len = frame.readUInt16BE(h);
        const v = frame.subarray(h + 2, h + 2 + len);
        headers[name] = type === 7 ? v.toString("utf8") : Buffer.from(v);
        h += 2 + len;
      } else if (type === 0 || type === 1) headers[name] = type === 0;
      else if (type === 2) (headers[name] = frame.readInt8(h)), (h += 1);
      else if (type === 3) (headers[name] = frame.readInt16BE(h)), (h += 2);
      else if (type === 4) (headers[name] = frame.readInt32BE(h)), (h += 4);
      else if (type === 5 || type === 8) (headers[name] = frame.readBigInt64BE(h)), (h += 8);
      else if (type === 9) (headers[name] = frame.subarray(h, h + 16).toString("hex")), (h += 16);
      else throw new Error(`unknown header type ${type}`);
    }
    out.push({ headers, payload: Buffer.from(frame.subarray(12 + headersLen, total - 4)) });
    at += total;
  }
  return out;
}

// Bedrock pads every event payload with a "p" field of varying length (against length analysis).
const PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
let padTurn = 0;
const pad = () => PAD.slice(0, 1 + ((padTurn += 7) % PAD.length));

const eventFrame = (type, payload) =>
  encodeFrame(
    [
      [":event-type", type],
      [":content-type", "application/json"],
      [":message-type", "event"],
    ],
    { ...payload, p: pad() },
  );

// ---------------------------------------------------------------------------------------------
// Signature Version 4, verified from first principles (AWS's "Create a signed AWS API request")

const sha256Hex = (data) => crypto.createHash("sha256").update(data).digest("hex");
const hmac = (key, data) => crypto.createHmac("sha256", key).update(data, "utf8").digest();

/** RFC 3986 encoding of every byte but the unreserved characters, upper-case hex (AWS's UriEncode). */
export function uriEncode(str) {
  let out = "";
  for (const b of Buffer.from(str, "utf8")) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Percent-decoding that keeps a '%' not followed by two hex digits, and '+' as '+'. */
function percentDecode(s) {
  const bytes = [];
  const raw = Buffer.from(s, "utf8");
  for (let i = 0; i < raw.length; i++) {
    const hex = raw.subarray(i + 1, i + 3).toString("latin1");
    if (raw[i] === 0x25 && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else bytes.push(raw[i]);
  }
  return Buffer.from(bytes).toString("utf8");
}

/** The canonical URI of a non-S3 service: the path as sent, normalized, each segment encoded again. */
export function canonicalUri(rawPath) {
  const segments = [];
  for (const s of rawPath.split("/")) {
    if (s === "" || s === ".") continue;
    if (s === "..") segments.pop();
    else segments.push(s);
  }
  let out = "/" + segments.map(uriEncode).join("/");
  if (segments.length && rawPath.endsWith("/")) out += "/";
  return out;
}

export function canonicalQuery(rawQuery) {
  return rawQuery
    .split("&")
    .filter(Boolean)
    .map((pair) => {
      const i = pair.indexOf("=");
      const [n, v] = i < 0 ? [pair, ""] : [pair.slice(0, i), pair.slice(i + 1)];
      return [uriEncode(percentDecode(n)), uriEncode(percentDecode(v))];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([n, v]) => `${n}=${v}`)
    .join("&");
}

export function signingKey(secret, date, region, service) {
  let k = hmac(`AWS4${secret}`, date);
  for (const part of [region, service, "aws4_request"]) k = hmac(k, part);
  return k;
}

const amzTime = (s) => {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s ?? "");
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
};
const amzStamp = (ms) => new Date(ms).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");

/**
 * Verifies a SigV4-signed request. method; url: the request target as sent (path?query);
 * headers: lower-case names → values (node's req.headers); body: Buffer; credentials:
 * {accessKeyId: {secret, token?}}; region, service; nowMs. Returns {ok: true, …} or
 * {ok: false, status, type, message, …}, with the canonical request and string to sign when
 * they could be built.
 */
export function verifySigV4({ method, url, headers, body, credentials, region, service, nowMs = Date.now(), maxSkewMs = 5 * 60_000 }) {
  const deny = (status, type, message, extra = {}) => ({ ok: false, status, type, message, ...extra });
  const auth = headers.authorization;
  if (!auth) return deny(403, "MissingAuthenticationTokenException", "Missing Authentication Token");
  const m = /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return deny(400, "IncompleteSignatureException", `Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters. Authorization=${auth.split(" ")[0]}`);
  const [, credential, signedHeadersText, signature] = m;
  const scopeParts = credential.split("/");
  if (scopeParts.length !== 5 || scopeParts[4] !== "aws4_request") {
    return deny(403, "IncompleteSignatureException", "Credential should be scoped to a valid terminator: 'aws4_request'.");
  }
  const [akid, date, scopeRegion, scopeService] = scopeParts;
  const creds = credentials[akid];
  if (!creds) return deny(403, "UnrecognizedClientException", "The security token included in the request is invalid.");
  if (scopeRegion !== region) return deny(403, "InvalidSignatureException", `Credential should be scoped to a valid region. (got ${scopeRegion})`);
  if (scopeService !== service) return deny(403, "InvalidSignatureException", `Credential should be scoped to correct service: '${service}'.`);
  const amzDate = headers["x-amz-date"];
  const t = amzTime(amzDate);
  if (Number.isNaN(t)) return deny(403, "IncompleteSignatureException", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
  if (amzDate.slice(0, 8) !== date) return deny(403, "InvalidSignatureException", `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${date}' != '${amzDate.slice(0, 8)}'`);
  if (Math.abs(nowMs - t) > maxSkewMs) {
    return deny(403, "InvalidSignatureException", `Signature expired: ${amzDate} is now earlier than ${amzStamp(nowMs - maxSkewMs)} (${amzStamp(nowMs)} - 5 min.)`);
  }
  const signedHeaders = signedHeadersText.split(";");
  if (!signedHeaders.includes("host")) return deny(403, "InvalidSignatureException", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  if (!signedHeaders.includes("x-amz-date")) return deny(403, "InvalidSignatureException", "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.");
  if ([...signedHeaders].sort().join(";") !== signedHeadersText) return deny(403, "InvalidSignatureException", SIGNATURE_MISMATCH, { why: "SignedHeaders not sorted" });
  for (const name of Object.keys(headers)) {
    if (name.startsWith("x-amz-") && !signedHeaders.includes(name)) return deny(403, "InvalidSignatureException", `'${name}' must be a 'SignedHeader' in the AWS Authorization.`);
  }
  if (creds.token !== undefined && headers["x-amz-security-token"] !== creds.token) {
    return deny(403, "UnrecognizedClientException", "The security token included in the request is invalid.");
  }
  const payloadHash = sha256Hex(body);
  const sentHash = headers["x-amz-content-sha256"];
  if (sentHash !== undefined && sentHash !== payloadHash) {
    return deny(400, "InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  const q = url.indexOf("?");
  const rawPath = q < 0 ? url : url.slice(0, q);
  const rawQuery = q < 0 ? "" : url.slice(q + 1);
  const canonicalHeaders = signedHeaders
    .map((name) => {
      const v = headers[name];
      return `${name}:${(Array.isArray(v) ? v.join(",") : (v ?? "")).trim().replace(/\s+/g, " ")}\n`;
    })
    .join("");
  const canonicalRequest = [method.toUpperCase(), canonicalUri(rawPath), canonicalQuery(rawQuery), canonicalHeaders, signedHeadersText, payloadHash].join("\n");
  const scope = `${date}/${region}/${service}/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(canonicalRequest)].join("\n");
  const expected = hmac(signingKey(creds.secret, date, region, service), stringToSign).toString("hex");
  const detail = { canonicalRequest, stringToSign, signedHeaders, accessKeyId: akid, scope };
  if (!crypto.timingSafeEqual(Buffer.from(expected, "hex"), Buffer.from(signature, "hex"))) {
    return deny(403, "InvalidSignatureException", SIGNATURE_MISMATCH, detail);
  }
  return { ok: true, ...detail };
}

// ---------------------------------------------------------------------------------------------
// Converse request validation

class Validation extends Error {}
const fail = (message) => {
  throw new Validation(message);
};
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const TOP_FIELDS = new Set([
  "messages",
  "system",
  "inferenceConfig",
  "toolConfig",
  "guardrailConfig",
  "additionalModelRequestFields",
  "promptVariables",
  "additionalModelResponseFieldPaths",
  "requestMetadata",
  "performanceConfig",
]);
const BLOCK_MEMBERS = ["text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint", "reasoningContent", "citationsContent"];
const TOOL_USE_ID = /^[a-zA-Z0-9_-]{1,64}$/;

export function validateConverseBody(body) {
  if (!isObject(body)) fail("Malformed input request, please reformat your input and try again.");
  for (const k of Object.keys(body)) if (!TOP_FIELDS.has(k)) fail(`Malformed input request: extraneous key [${k}] is not permitted, please reformat your input and try again.`);
  if (!Array.isArray(body.messages) || body.messages.length === 0) fail("A conversation must start with a user message. Try again with a conversation that starts with a user message.");
  let toolBlocks = false;
  let prevToolUses = new Set();
  body.messages.forEach((m, i) => {
    if (!isObject(m) || (m.role !== "user" && m.role !== "assistant")) fail(`1 validation error detected: Value at 'messages.${i + 1}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]`);
    if (i === 0 && m.role !== "user") fail("A conversation must start with a user message. Try again with a conversation that starts with a user message.");
    if (i > 0 && body.messages[i - 1].role === m.role) fail("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.");
    if (!Array.isArray(m.content) || m.content.length === 0) fail(`The content field in the Message object at messages.${i} is empty. Add a ContentBlock object to the content field and try again.`);
    const uses = new Set();
    m.content.forEach((b, j) => {
      const where = `messages.${i}.content.${j}`;
      if (!isObject(b)) fail(`Malformed input request at ${where}`);
      const members = Object.keys(b).filter((k) => BLOCK_MEMBERS.includes(k));
      if (members.length !== 1 || Object.keys(b).length !== 1) fail(`The ContentBlock object at ${where} must set exactly one of its members (got ${Object.keys(b).join(", ") || "none"}).`);
      if (b.text !== undefined && (typeof b.text !== "string" || !b.text.trim())) fail(`The text field in the ContentBlock object at ${where} is blank. Add text to the text field, and try again.`);
      if (b.toolUse !== undefined) {
        toolBlocks = true;
        if (m.role !== "assistant") fail(`The toolUse block at ${where} is only allowed in an assistant message.`);
        const u = b.toolUse;
        if (!isObject(u) || typeof u.toolUseId !== "string" || !TOOL_USE_ID.test(u.toolUseId)) fail(`1 validation error detected: Value at '${where}.member.toolUse.toolUseId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+`);
        if (typeof u.name !== "string" || !u.name) fail(`The toolUse block at ${where} has no name.`);
        if (!isObject(u.input)) fail(`The toolUse input at ${where} must be a JSON object.`);
        uses.add(u.toolUseId);
      }
      if (b.toolResult !== undefined) {
        toolBlocks = true;
        const r = b.toolResult;
        if (m.role !== "user") fail(`The toolResult block at ${where} is only allowed in a user message.`);
        if (!isObject(r) || !prevToolUses.has(r.toolUseId)) fail(`The toolUseId ${r?.toolUseId} at ${where} does not match any toolUse block in the previous assistant turn.`);
        if (!Array.isArray(r.content) || r.content.length === 0) fail(`The toolResult content at ${where} is empty.`);
        if (r.status !== undefined && r.status !== "success" && r.status !== "error") fail(`Value at '${where}.toolResult.status' failed to satisfy constraint: Member must satisfy enum value set: [success, error]`);
      }
    });
    prevToolUses = uses;
  });
  if (body.system !== undefined) {
    if (!Array.isArray(body.system)) fail("Malformed input request: system must be a list");
    body.system.forEach((b, i) => {
      if (!isObject(b) || (b.text === undefined && b.guardContent === undefined && b.cachePoint === undefined)) fail(`Malformed input request: system.${i}`);
      if (b.text !== undefined && (typeof b.text !== "string" || !b.text.trim())) fail(`The text field in the SystemContentBlock object at system.${i} is blank.`);
    });
  }
  const ic = body.inferenceConfig;
  if (ic !== undefined) {
    if (!isObject(ic)) fail("Malformed input request: inferenceConfig");
    for (const k of Object.keys(ic)) if (!["maxTokens", "temperature", "topP", "stopSequences"].includes(k)) fail(`Malformed input request: extraneous key [${k}] is not permitted in inferenceConfig`);
    if (ic.maxTokens !== undefined && (!Number.isInteger(ic.maxTokens) || ic.maxTokens < 1)) fail("The maximum tokens you requested must be at least 1.");
    if (ic.temperature !== undefined && !(ic.temperature >= 0 && ic.temperature <= 1)) fail("temperature: must be between 0 and 1");
    if (ic.topP !== undefined && !(ic.topP >= 0 && ic.topP <= 1)) fail("topP: must be between 0 and 1");
    if (ic.stopSequences !== undefined && (!Array.isArray(ic.stopSequences) || ic.stopSequences.some((s) => typeof s !== "string" || !s))) fail("stopSequences: must be non-empty strings");
  }
  if (toolBlocks && body.toolConfig === undefined) fail("The toolConfig field must be defined when using toolUse and toolResult content blocks.");
  if (body.toolConfig !== undefined) {
    const tc = body.toolConfig;
    if (!isObject(tc) || !Array.isArray(tc.tools) || tc.tools.length === 0) fail("The toolConfig field must have at least one tool.");
    tc.tools.forEach((t, i) => {
      const spec = t?.toolSpec;
      if (!isObject(spec) || typeof spec.name !== "string" || !/^[a-zA-Z0-9_-]{1,64}$/.test(spec.name)) fail(`Value at 'toolConfig.tools.${i}.member.toolSpec.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+`);
      if (!isObject(spec.inputSchema) || !isObject(spec.inputSchema.json)) fail(`toolConfig.tools.${i}.toolSpec.inputSchema must hold a json schema object`);
    });
    if (tc.toolChoice !== undefined) {
      const c = tc.toolChoice;
      const keys = isObject(c) ? Object.keys(c) : [];
      if (keys.length !== 1 || !["auto", "any", "tool"].includes(keys[0])) fail("toolConfig.toolChoice must set exactly one of auto, any, tool");
      if (keys[0] === "tool" && !tc.tools.some((t) => t.toolSpec.name === c.tool?.name)) fail(`toolConfig.toolChoice.tool.name ${c.tool?.name} names no tool`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The server

const ERRORS = {
  "err-400": [400, "ValidationException", "The model returned the following errors: err-400 was asked for by the test"],
  "err-429": [429, "ThrottlingException", THROTTLE_MESSAGE],
  "err-500": [500, "InternalServerException", "The server encountered an internal error while processing the request."],
  "err-503": [503, "ServiceUnavailableException", "Bedrock is unable to process your request."],
};

function sendAwsError(res, status, type, message) {
  // REST-JSON errors: the message in the body, the type in x-amzn-ErrorType.
  sendJson(res, status, { message }, { "x-amzn-errortype": `${type}:http://internal.amazon.com/coral/com.amazon.bedrock/`, "x-amzn-requestid": crypto.randomUUID() });
}

/**
 * region: the region this endpoint serves; credentials: {accessKeyId: {secret, token?}} (more can
 * be added to fake.credentials later).
 */
export async function startFakeBedrock({ region = REGION, credentials = {} } = {}) {
  const creds = { ...credentials };
  const fake = await startFakeServer({
    name: "fake Bedrock",
    scenarios: SCENARIOS,
    scenarioOf: (rec) => {
      const m = /^\/model\/([^/]+)\//.exec(rec.path);
      const first = m ? decodeURIComponent(m[1]).split(".")[0] : "";
      return SCENARIOS.has(first) ? first : "ok";
    },
    handle,
  });

  async function handle(req, res, rec) {
    const m = /^\/model\/([^/]+)\/(converse|converse-stream)$/.exec(rec.path);
    if (!m || rec.method !== "POST") return sendAwsError(res, 404, "UnknownOperationException", `No operation matches ${rec.method} ${rec.path}`);
    rec.modelId = decodeURIComponent(m[1]);
    rec.stream = m[2] === "converse-stream";
    rec.sigv4 = verifySigV4({
      method: rec.method,
      url: req.url,
      headers: req.headers,
      body: Buffer.from(rec.rawBody, "utf8"),
      credentials: creds,
      region,
      service: "bedrock",
    });
    if (!rec.sigv4.ok) return sendAwsError(res, rec.sigv4.status, rec.sigv4.type, rec.sigv4.message);
    if (rec.body === undefined || rec.body === null) return sendAwsError(res, 400, "SerializationException", "Unexpected end of JSON input");
    try {
      validateConverseBody(rec.body);
    } catch (e) {
      if (!(e instanceof Validation)) throw e;
      rec.invalid = e.message;
      return sendAwsError(res, 400, "ValidationException", e.message);
    }
    const err = ERRORS[rec.scenario] ?? (rec.scenario === "stream-exception" && !rec.stream ? ERRORS["err-429"] : null);
    if (err) return sendAwsError(res, ...err);
    const headers = { "x-amzn-requestid": crypto.randomUUID() };
    if (!rec.stream) return sendJson(res, 200, converseReply(rec.scenario), headers);
    res.writeHead(200, { "content-type": "application/vnd.amazon.eventstream", ...headers });
    res.flushHeaders();
    const all = rec.scenario === "stream-exception" ? STREAM_EXCEPTION : Buffer.concat(streamFrames(rec.scenario));
    // Uneven pieces: cuts fall inside preludes, headers, payloads and CRCs.
    const sizes = [5, 1, 17, 64, 3, 200, 11];
    for (let at = 0, i = 0; at < all.length; i++) {
      const n = sizes[i % sizes.length];
      res.write(all.subarray(at, at + n));
      at += n;
    }
    res.end();
  }

  return {
    ...fake,
    region,
    credentials: creds,
    baseUrl: fake.origin,
  };
}

function converseReply(scenario) {
  if (scenario !== "tools") return { ...REPLY_TEXT, usage: { ...USAGE } };
  return {
    metrics: { latencyMs: 321 },
    output: { message: { role: "assistant", content: [{ text: TOOLS_TEXT }, ...TOOL_USES.map((t) => ({ toolUse: { toolUseId: t.toolUseId, name: t.name, input: t.input } }))] } },
    stopReason: "tool_use",
    usage: { ...USAGE },
  };
}

function streamFrames(scenario) {
  const frames = [eventFrame("messageStart", { role: "assistant" })];
  const textBlock = (index, pieces) => {
    for (const text of pieces) frames.push(eventFrame("contentBlockDelta", { contentBlockIndex: index, delta: { text } }));
    frames.push(eventFrame("contentBlockStop", { contentBlockIndex: index }));
  };
  let stopReason = "end_turn";
  if (scenario === "tools") {
    textBlock(0, [TOOLS_TEXT.slice(0, 5), TOOLS_TEXT.slice(5)]);
    TOOL_USES.forEach((t, i) => {
      const index = i + 1;
      frames.push(eventFrame("contentBlockStart", { contentBlockIndex: index, start: { toolUse: { toolUseId: t.toolUseId, name: t.name } } }));
      for (const input of t.fragments) frames.push(eventFrame("contentBlockDelta", { contentBlockIndex: index, delta: { toolUse: { input } } }));
      frames.push(eventFrame("contentBlockStop", { contentBlockIndex: index }));
    });
    stopReason = "tool_use";
  } else textBlock(0, STREAM_PIECES);
  frames.push(eventFrame("messageStop", { stopReason }));
  frames.push(eventFrame("metadata", { usage: { ...USAGE }, metrics: { latencyMs: 420 } }));
  return frames;
}

