//! Google's Gemini API as an inbound format: a client's `generateContent` body → neutral
//! ([`decode_request`], every field checked as Google checks it), the neutral reply and stream →
//! Gemini's shapes ([`encode_response`], [`StreamEncoder`] in both of Google's stream framings),
//! relay errors in Google's error shape ([`error_body`]), and the bodies of the other Gemini
//! routes (`countTokens`, `models.list`).
//!
//! The model comes from the URL path (`/v1beta/models/{model}:generateContent`), not the body,
//! and whether to stream from the method (`streamGenerateContent`), so the edge sets both.
//! Google's REST front end reads field names in camelCase or snake_case (its own `curl`
//! examples use `system_instruction`, `inline_data`); both are read here, and paths in errors
//! use camelCase (`contents[1].parts[0]`).
//!
//! What the neutral model cannot hold (built-in tools, safety settings, cached content, code
//! execution parts, …) is kept in `ChatRequest::extra` under a path-like key such as
//! `tools.googleSearch`, so the encoder of another format reports it as dropped.
//!
//! Gemini pairs a `functionResponse` with the earlier `functionCall` by name (and `id` when the
//! client sends one); the neutral model pairs by id, so calls without one get an id made from
//! their position (`call_{content}_{part}`) and each response takes the id of the earliest
//! unanswered call of its name in the latest turn that made calls. Consecutive model Contents
//! are one turn, as Gemini reads them (the SDKs record a streamed reply chunk by chunk).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::formats::json_array;
use crate::formats::neutral::{
    ChatRequest, ChatResponse, FinishReason, ImageSource, Message, Part, Reasoning, ResponseFormat,
    Role, StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};

/// Gemini accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;

/// Schemas nested deeper than this are refused, so a hostile one cannot exhaust the stack of a
/// Worker (about 1 MB) while it is converted.
const SCHEMA_MAX_DEPTH: usize = 64;

/// The effort that stands for Gemini's dynamic thinking (`thinkingBudget: -1`, the model
/// decides): OpenAI's default effort, as dynamic thinking is Gemini's default.
const DYNAMIC_THINKING_EFFORT: &str = "medium";

// ---- field access ----------------------------------------------------------------------------

/// `systemInstruction` → `system_instruction`: the other spelling Google's JSON parser accepts.
fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `inline_data` → `inlineData`, so either spelling of a key is recognised and reported alike.
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A field by its camelCase name or its snake_case one; `null` counts as absent.
fn get<'a>(obj: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    obj.get(camel)
        .or_else(|| obj.get(&snake_case(camel)))
        .filter(|v| !v.is_null())
}

fn as_object<'a>(
    value: &'a Value,
    path: &str,
    expected: &'static str,
) -> Result<&'a Map<String, Value>, RelayError> {
    value
        .as_object()
        .ok_or_else(|| RelayError::invalid_type(path, expected))
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, RelayError> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RelayError::invalid_type(path, "a string")),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, RelayError> {
    opt_str(obj, key, path)?.ok_or_else(|| RelayError::missing(path))
}

fn opt_bool(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, RelayError> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RelayError::invalid_type(path, "a boolean")),
    }
}

/// An integer as protobuf's JSON mapping writes one: a number, or a string of digits (int64
/// fields are strings in Google's own output).
fn int_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

fn int_in(value: &Value, path: &str, min: i64, max: i64) -> Result<i64, RelayError> {
    let n = int_of(value).ok_or_else(|| RelayError::invalid_type(path, "an integer"))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else if max == i64::MAX {
        Err(RelayError::invalid_value(
            path,
            format!("must be at least {min}"),
        ))
    } else {
        Err(RelayError::invalid_value(
            path,
            format!("must be between {min} and {max}"),
        ))
    }
}

fn number_in(value: &Value, path: &str, min: f64, max: f64) -> Result<f64, RelayError> {
    let x = number_of(value).ok_or_else(|| RelayError::invalid_type(path, "a number"))?;
    if (min..=max).contains(&x) {
        Ok(x)
    } else {
        Err(RelayError::invalid_value(
            path,
            format!("must be between {min} and {max}"),
        ))
    }
}

fn strings(value: &Value, path: &str) -> Result<Vec<String>, RelayError> {
    let Value::Array(items) = value else {
        return Err(RelayError::invalid_type(path, "an array of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            _ => Err(RelayError::invalid_type(
                &format!("{path}[{i}]"),
                "a string",
            )),
        })
        .collect()
}

fn keep_extra(req: &mut ChatRequest, key: String, value: &Value) {
    req.extra.entry(key).or_insert_with(|| value.clone());
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, RelayError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(RelayError::InvalidJson {
            detail: "the body must be a JSON object".into(),
        }),
        Err(e) => Err(RelayError::InvalidJson {
            detail: e.to_string(),
        }),
    }
}

// ---- the request ------------------------------------------------------------------------------

/// Top-level fields read into neutral ones; everything else goes to `extra`. `model` may be
/// echoed in the body (it is required inside `countTokens`' `generateContentRequest`) but the
/// URL's is the one that counts.
const HANDLED: &[&str] = &[
    "model",
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
];

/// A Gemini `generateContent` body → neutral request. `model` is the one named in the URL path
/// (`gemini-2.5-flash` or `models/gemini-2.5-flash`); `stream` is left false for the edge to
/// set from the method. Validation errors are 400s naming the field (`contents[1].parts[0]`);
/// bad JSON is [`RelayError::InvalidJson`].
pub fn decode_request(model: &str, bytes: &[u8]) -> Result<ChatRequest, RelayError> {
    decode_body(model, &parse_object(bytes)?)
}

/// A `countTokens` body: `{contents}` or `{generateContentRequest}` (one request as
/// `generateContent` takes it, whose errors are named inside it), never both.
pub fn decode_count_tokens(model: &str, bytes: &[u8]) -> Result<ChatRequest, RelayError> {
    let body = parse_object(bytes)?;
    match (get(&body, "contents"), get(&body, "generateContentRequest")) {
        (Some(_), Some(_)) => Err(RelayError::invalid_value(
            "generateContentRequest",
            "cannot be set together with 'contents'",
        )),
        (None, Some(inner)) => {
            let path = "generateContentRequest";
            let inner = as_object(inner, path, "a GenerateContentRequest object")?;
            decode_body(model, inner).map_err(|e| e.prefixed("generateContentRequest."))
        }
        (_, None) => decode_body(model, &body),
    }
}

fn decode_body(model: &str, body: &Map<String, Value>) -> Result<ChatRequest, RelayError> {
    let model = model.trim();
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.is_empty() {
        return Err(RelayError::invalid_value("model", "must not be empty"));
    }
    let mut req = ChatRequest {
        model: model.to_string(),
        ..ChatRequest::default()
    };

    let contents = match get(body, "contents") {
        None => return Err(RelayError::missing("contents")),
        Some(Value::Array(contents)) => contents,
        Some(_) => {
            return Err(RelayError::invalid_type(
                "contents",
                "an array of Content objects",
            ))
        }
    };
    if contents.is_empty() {
        return Err(RelayError::invalid_value(
            "contents",
            "must contain at least one Content",
        ));
    }
    if let Some(system) = get(body, "systemInstruction") {
        req.system = decode_system(system)?;
    }
    let mut turns = Turns::default();
    for (i, content) in contents.iter().enumerate() {
        decode_content(i, content, &mut turns, &mut req)?;
    }
    // A model turn of nothing but a signature (a stream's last chunk, recorded alone) says
    // nothing an upstream could take.
    req.messages.retain(|m| {
        m.role != Role::Assistant
            || !m.content.is_empty()
            || !m.tool_calls.is_empty()
            || m.reasoning.is_some()
    });
    if let Some(tools) = get(body, "tools") {
        decode_tools(tools, &mut req)?;
    }
    if let Some(config) = get(body, "toolConfig") {
        decode_tool_config(config, &mut req)?;
    }
    if let Some(config) = get(body, "generationConfig") {
        decode_generation_config(config, &mut req)?;
    }

    for (k, v) in body {
        let key = camel_case(k);
        if v.is_null() || HANDLED.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "safetySettings" if !v.is_array() => {
                return Err(RelayError::invalid_type(
                    "safetySettings",
                    "an array of SafetySetting objects",
                ))
            }
            "cachedContent" if !v.is_string() => {
                return Err(RelayError::invalid_type("cachedContent", "a string"))
            }
            "labels" if !v.is_object() => {
                return Err(RelayError::invalid_type("labels", "an object"))
            }
            _ => {}
        }
        keep_extra(&mut req, key, v);
    }
    Ok(req)
}

/// `systemInstruction`: a Content of text parts (its role is ignored, as Google ignores it),
/// or a bare string; each part stays its own instruction.
fn decode_system(system: &Value) -> Result<Vec<String>, RelayError> {
    let content = match system {
        Value::String(s) if s.is_empty() => return Ok(Vec::new()),
        Value::String(s) => return Ok(vec![s.clone()]),
        other => as_object(other, "systemInstruction", "a Content object")?,
    };
    let parts = match get(content, "parts") {
        None => return Ok(Vec::new()),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(RelayError::invalid_type(
                "systemInstruction.parts",
                "an array of Part objects",
            ))
        }
    };
    let mut out = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        let path = format!("systemInstruction.parts[{k}]");
        let part = as_object(part, &path, "a Part object")?;
        match get(part, "text") {
            Some(Value::String(text)) => {
                if !text.is_empty() {
                    out.push(text.clone());
                }
            }
            Some(_) => {
                return Err(RelayError::invalid_type(
                    &format!("{path}.text"),
                    "a string",
                ))
            }
            None => {
                return Err(RelayError::invalid_value(
                    &path,
                    "system instructions may contain only text parts",
                ))
            }
        }
    }
    Ok(out)
}

/// What decoding one Content needs to know of those before it.
#[derive(Default)]
struct Turns {
    /// (id, name) of the unanswered calls of the latest turn that made calls, in order: the
    /// calls a `functionResponse` without an id can answer.
    pending: Vec<(String, String)>,
    /// The last neutral message is the model turn the previous Content made. The SDKs record a
    /// streamed reply as one model Content per chunk; Gemini reads consecutive model Contents
    /// as one turn, and so does this decoder, so reasoning, its signature and calls stay
    /// together.
    model_open: bool,
}

impl Turns {
    fn answer(&mut self, id: Option<&str>, name: &str, fallback: String) -> String {
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            self.pending.retain(|(pending, _)| pending != id);
            return id.to_string();
        }
        match self.pending.iter().position(|(_, n)| n == name) {
            Some(at) => self.pending.remove(at).0,
            // A response to no call the conversation shows: it keeps an id of its own, and the
            // upstream decides what to make of it.
            None => fallback,
        }
    }
}

/// A part of a client turn, as far as the neutral model can hold it.
enum InPart {
    Text(String),
    Thought(String),
    Image(ImageSource),
    Call {
        id: Option<String>,
        name: String,
        arguments: String,
    },
    Response {
        id: Option<String>,
        name: String,
        response: Map<String, Value>,
        images: Vec<ImageSource>,
    },
    /// Not representable; already recorded in `extra`.
    Skipped,
}

/// The fields of `Part.data`: a part holds exactly one of them.
const PART_DATA: &[&str] = &[
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];

fn decode_content(
    i: usize,
    content: &Value,
    turns: &mut Turns,
    req: &mut ChatRequest,
) -> Result<(), RelayError> {
    let path = format!("contents[{i}]");
    let c = as_object(content, &path, "a Content object")?;
    let role_path = format!("{path}.role");
    // A single-turn request may leave the role out; Google takes it as the user's.
    let model_turn = match opt_str(c, "role", &role_path)? {
        None | Some("") | Some("user") => false,
        Some("model") => true,
        Some(other) => {
            return Err(RelayError::invalid_value(
                &role_path,
                format!("'{other}' is not one of user, model"),
            ))
        }
    };
    let parts_path = format!("{path}.parts");
    let parts = match get(c, "parts") {
        None => return Err(RelayError::missing(&parts_path)),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(RelayError::invalid_type(
                &parts_path,
                "an array of Part objects",
            ))
        }
    };
    if parts.is_empty() {
        return Err(RelayError::invalid_value(
            &parts_path,
            "must contain at least one Part",
        ));
    }

    let role = if model_turn {
        Role::Assistant
    } else {
        Role::User
    };
    let continued = if model_turn && turns.model_open {
        req.messages.pop()
    } else {
        None
    };
    let merging = continued.is_some();
    let mut message = continued.unwrap_or_else(|| Message::new(role, Vec::new()));
    let mut reasoning = message.reasoning.take().unwrap_or_default();
    let mut results = Vec::new();
    let mut calls = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{parts_path}[{j}]");
        let (part, signature) = decode_part(&part_path, part, model_turn, req)?;
        if model_turn && message.reasoning_signature.is_none() {
            // The neutral model keeps one signature per turn: the first carries the state.
            message.reasoning_signature = signature;
        }
        match part {
            InPart::Text(text) => {
                // Empty text (the last chunk of a stream, kept in a history) carries nothing,
                // and several upstreams refuse empty text blocks.
                if !text.is_empty() {
                    message.content.push(Part::Text(text));
                }
            }
            InPart::Thought(text) if model_turn => reasoning.push_str(&text),
            InPart::Thought(text) => {
                if !text.is_empty() {
                    message.content.push(Part::Text(text));
                }
            }
            InPart::Image(source) => message.content.push(Part::Image(source)),
            InPart::Call {
                id,
                name,
                arguments,
            } => {
                let id = id.unwrap_or_else(|| format!("call_{i}_{j}"));
                calls.push((id.clone(), name.clone()));
                message.tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
            InPart::Response {
                id,
                name,
                response,
                images,
            } => {
                let id = turns.answer(id.as_deref(), &name, format!("call_{i}_{j}"));
                results.push(tool_result(id, response, images));
            }
            InPart::Skipped => {}
        }
    }
    if merging {
        turns.pending.extend(calls);
    } else if !calls.is_empty() {
        turns.pending = calls;
    }
    if !reasoning.is_empty() {
        message.reasoning = Some(reasoning);
    }

    // Results answer the previous model turn, so they come before the user's words.
    req.messages.extend(results);
    let holds_something = !message.content.is_empty()
        || !message.tool_calls.is_empty()
        || message.reasoning.is_some()
        || message.reasoning_signature.is_some();
    if holds_something {
        req.messages.push(message);
    }
    turns.model_open = model_turn && holds_something;
    Ok(())
}

/// A `functionResponse` as a tool message: the `response` object as JSON text (exactly what the
/// function returned). Google's documented key for a failure is `error`.
fn tool_result(id: String, response: Map<String, Value>, images: Vec<ImageSource>) -> Message {
    let is_error = response.contains_key("error") && !response.contains_key("output");
    let mut content = vec![Part::Text(Value::Object(response).to_string())];
    content.extend(images.into_iter().map(Part::Image));
    let mut message = Message::new(Role::Tool, content);
    message.tool_call_id = Some(id);
    message.is_error = is_error;
    message
}

/// One part of a turn, and its thought signature. Parts the neutral model cannot hold are stored
/// in `extra` under `contents.parts.{kind}` and come back as [`InPart::Skipped`].
fn decode_part(
    path: &str,
    part: &Value,
    model_turn: bool,
    req: &mut ChatRequest,
) -> Result<(InPart, Option<String>), RelayError> {
    let p = as_object(part, path, "a Part object")?;
    let field = |name: &str| format!("{path}.{name}");
    let mut kind = None;
    for key in PART_DATA {
        if get(p, key).is_some() {
            if let Some(first) = kind {
                return Err(RelayError::invalid_value(
                    path,
                    format!("sets both '{first}' and '{key}'; a Part holds one kind of data"),
                ));
            }
            kind = Some(*key);
        }
    }
    let Some(kind) = kind else {
        return Err(RelayError::invalid_value(
            path,
            format!("must set one of {}", PART_DATA.join(", ")),
        ));
    };
    let signature = opt_str(p, "thoughtSignature", &field("thoughtSignature"))?.map(String::from);
    let thought = opt_bool(p, "thought", &field("thought"))?.unwrap_or(false);
    for (k, v) in p {
        let key = camel_case(k);
        let known =
            PART_DATA.contains(&key.as_str()) || key == "thought" || key == "thoughtSignature";
        if !known && !v.is_null() {
            // videoMetadata, mediaResolution, partMetadata, …
            keep_extra(req, format!("contents.parts.{key}"), v);
        }
    }
    let skip = |req: &mut ChatRequest, key: &str| {
        keep_extra(req, format!("contents.parts.{key}"), part);
        InPart::Skipped
    };
    let data = get(p, kind).unwrap_or(&Value::Null);
    let decoded = match kind {
        "text" => match data {
            Value::String(text) if thought => InPart::Thought(text.clone()),
            Value::String(text) => InPart::Text(text.clone()),
            _ => return Err(RelayError::invalid_type(&field("text"), "a string")),
        },
        "inlineData" => {
            let blob_path = field("inlineData");
            let blob = as_object(data, &blob_path, "a Blob object")?;
            let mime = req_str(blob, "mimeType", &format!("{blob_path}.mimeType"))?;
            let bytes = req_str(blob, "data", &format!("{blob_path}.data"))?;
            // Only images have a neutral form; a model's own images have no place in history.
            if mime.starts_with("image/") && !model_turn {
                InPart::Image(ImageSource::Base64 {
                    media_type: mime.to_string(),
                    data: bytes.to_string(),
                })
            } else {
                skip(req, "inlineData")
            }
        }
        "fileData" => {
            let file_path = field("fileData");
            let file = as_object(data, &file_path, "a FileData object")?;
            let mime = opt_str(file, "mimeType", &format!("{file_path}.mimeType"))?;
            let uri = req_str(file, "fileUri", &format!("{file_path}.fileUri"))?;
            if mime.is_some_and(|m| m.starts_with("image/")) && !model_turn {
                InPart::Image(ImageSource::Url(uri.to_string()))
            } else {
                skip(req, "fileData")
            }
        }
        "functionCall" => {
            let call_path = field("functionCall");
            if !model_turn {
                return Err(RelayError::invalid_value(
                    &call_path,
                    "function calls belong in 'model' turns",
                ));
            }
            let call = as_object(data, &call_path, "a FunctionCall object")?;
            let name = req_str(call, "name", &format!("{call_path}.name"))?;
            let arguments = match get(call, "args") {
                None => "{}".to_string(),
                Some(args @ Value::Object(_)) => args.to_string(),
                Some(_) => {
                    return Err(RelayError::invalid_type(
                        &format!("{call_path}.args"),
                        "an object",
                    ))
                }
            };
            InPart::Call {
                id: opt_str(call, "id", &format!("{call_path}.id"))?
                    .filter(|id| !id.is_empty())
                    .map(String::from),
                name: name.to_string(),
                arguments,
            }
        }
        "functionResponse" => {
            let response_path = field("functionResponse");
            if model_turn {
                return Err(RelayError::invalid_value(
                    &response_path,
                    "function responses belong in 'user' turns",
                ));
            }
            decode_function_response(&response_path, data, req)?
        }
        // executableCode, codeExecutionResult: Gemini's own code execution.
        other => skip(req, other),
    };
    Ok((decoded, signature))
}

fn decode_function_response(
    path: &str,
    data: &Value,
    req: &mut ChatRequest,
) -> Result<InPart, RelayError> {
    let r = as_object(data, path, "a FunctionResponse object")?;
    let name = req_str(r, "name", &format!("{path}.name"))?;
    let response = match get(r, "response") {
        None => return Err(RelayError::missing(&format!("{path}.response"))),
        Some(Value::Object(response)) => response.clone(),
        Some(_) => {
            return Err(RelayError::invalid_type(
                &format!("{path}.response"),
                "an object",
            ))
        }
    };
    let mut images = Vec::new();
    if let Some(parts) = get(r, "parts") {
        let parts_path = format!("{path}.parts");
        let Value::Array(parts) = parts else {
            return Err(RelayError::invalid_type(
                &parts_path,
                "an array of FunctionResponsePart objects",
            ));
        };
        for (k, part) in parts.iter().enumerate() {
            let part_path = format!("{parts_path}[{k}]");
            let part = as_object(part, &part_path, "a FunctionResponsePart object")?;
            let image = get(part, "inlineData")
                .and_then(Value::as_object)
                .and_then(|blob| {
                    let mime = get(blob, "mimeType")?.as_str()?;
                    let bytes = get(blob, "data")?.as_str()?;
                    mime.starts_with("image/").then(|| ImageSource::Base64 {
                        media_type: mime.to_string(),
                        data: bytes.to_string(),
                    })
                });
            match image {
                Some(image) => images.push(image),
                None => keep_extra(
                    req,
                    "contents.parts.functionResponse.parts".into(),
                    &Value::Object(part.clone()),
                ),
            }
        }
    }
    for (k, v) in r {
        let key = camel_case(k);
        if !matches!(key.as_str(), "id" | "name" | "response" | "parts") && !v.is_null() {
            // willContinue, scheduling: Gemini Live's non-blocking calls.
            keep_extra(req, format!("contents.parts.functionResponse.{key}"), v);
        }
    }
    Ok(InPart::Response {
        id: opt_str(r, "id", &format!("{path}.id"))?.map(String::from),
        name: name.to_string(),
        response,
        images,
    })
}

fn decode_tools(tools: &Value, req: &mut ChatRequest) -> Result<(), RelayError> {
    let Value::Array(tools) = tools else {
        return Err(RelayError::invalid_type(
            "tools",
            "an array of Tool objects",
        ));
    };
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let t = as_object(tool, &path, "a Tool object")?;
        for (k, v) in t {
            let key = camel_case(k);
            if v.is_null() {
                continue;
            }
            if key != "functionDeclarations" {
                // googleSearch, codeExecution, urlContext, …: tools Google runs itself.
                keep_extra(req, format!("tools.{key}"), v);
                continue;
            }
            let list_path = format!("{path}.functionDeclarations");
            let Value::Array(declarations) = v else {
                return Err(RelayError::invalid_type(
                    &list_path,
                    "an array of FunctionDeclaration objects",
                ));
            };
            for (j, declaration) in declarations.iter().enumerate() {
                let tool = decode_declaration(&format!("{list_path}[{j}]"), declaration, req)?;
                req.tools.push(tool);
            }
        }
    }
    Ok(())
}

/// Google's rule for function names: a letter or underscore, then letters, digits, `_ . : -`.
fn valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn decode_declaration(
    path: &str,
    declaration: &Value,
    req: &mut ChatRequest,
) -> Result<Tool, RelayError> {
    let d = as_object(declaration, path, "a FunctionDeclaration object")?;
    let name_path = format!("{path}.name");
    let name = req_str(d, "name", &name_path)?;
    if !valid_function_name(name) {
        return Err(RelayError::invalid_value(
            &name_path,
            "must start with a letter or an underscore and contain only a-z, A-Z, 0-9, '_', '.', ':' or '-', at most 128 characters",
        ));
    }
    let description = opt_str(d, "description", &format!("{path}.description"))?;
    let parameters = match (get(d, "parameters"), get(d, "parametersJsonSchema")) {
        (Some(_), Some(_)) => {
            return Err(RelayError::invalid_value(
                &format!("{path}.parametersJsonSchema"),
                "cannot be set together with 'parameters'",
            ))
        }
        (Some(schema), None) => {
            let mut schema = openapi_to_json_schema(schema, &format!("{path}.parameters"), 0)?;
            // Parameters are always an object; Google lets the type go unsaid.
            if let Value::Object(root) = &mut schema {
                root.entry("type").or_insert_with(|| json!("object"));
            }
            schema
        }
        (None, Some(schema @ Value::Object(_))) => schema.clone(),
        (None, Some(_)) => {
            return Err(RelayError::invalid_type(
                &format!("{path}.parametersJsonSchema"),
                "a JSON Schema object",
            ))
        }
        (None, None) => json!({"type": "object", "properties": {}}),
    };
    for (k, v) in d {
        let key = camel_case(k);
        let known = matches!(
            key.as_str(),
            "name" | "description" | "parameters" | "parametersJsonSchema"
        );
        if !known && !v.is_null() {
            // response, responseJsonSchema, behavior: nothing else can use them.
            keep_extra(req, format!("tools.functionDeclarations.{key}"), v);
        }
    }
    Ok(Tool {
        name: name.to_string(),
        description: description.map(String::from),
        parameters,
    })
}

fn decode_tool_config(config: &Value, req: &mut ChatRequest) -> Result<(), RelayError> {
    let c = as_object(config, "toolConfig", "a ToolConfig object")?;
    for (k, v) in c {
        let key = camel_case(k);
        if v.is_null() {
            continue;
        }
        if key != "functionCallingConfig" {
            // retrievalConfig (for Google's own tools), …
            keep_extra(req, format!("toolConfig.{key}"), v);
            continue;
        }
        let path = "toolConfig.functionCallingConfig";
        let f = as_object(v, path, "a FunctionCallingConfig object")?;
        let names_path = format!("{path}.allowedFunctionNames");
        let allowed = match get(f, "allowedFunctionNames") {
            None => Vec::new(),
            Some(names) => strings(names, &names_path)?,
        };
        let mode_path = format!("{path}.mode");
        let mode = opt_str(f, "mode", &mode_path)?.map(str::to_ascii_uppercase);
        // A restriction to some functions only holds for ANY with one name (a named choice).
        let mut allowed_kept = false;
        req.tool_choice = match mode.as_deref() {
            None | Some("MODE_UNSPECIFIED") => None,
            Some("AUTO") => Some(ToolChoice::Auto),
            Some("NONE") => Some(ToolChoice::None),
            Some("ANY") => match allowed.as_slice() {
                [one] => {
                    allowed_kept = true;
                    Some(ToolChoice::Named(one.clone()))
                }
                _ => Some(ToolChoice::Required),
            },
            // Calls or text, with calls checked against their schema: auto without the check.
            Some("VALIDATED") => {
                keep_extra(req, mode_path.clone(), &json!("VALIDATED"));
                Some(ToolChoice::Auto)
            }
            Some(other) => {
                return Err(RelayError::invalid_value(
                    &mode_path,
                    format!("'{other}' is not one of AUTO, ANY, NONE, VALIDATED"),
                ))
            }
        };
        if !allowed.is_empty() && !allowed_kept {
            keep_extra(req, names_path, &json!(allowed));
        }
        for (k, v) in f {
            let key = camel_case(k);
            if !matches!(key.as_str(), "mode" | "allowedFunctionNames") && !v.is_null() {
                keep_extra(req, format!("{path}.{key}"), v);
            }
        }
    }
    Ok(())
}

/// `responseMimeType` values Google accepts.
const MIME_TYPES: &[&str] = &[
    "text/plain",
    "application/json",
    "text/x.enum",
    "application/xml",
    "application/yaml",
];

fn decode_generation_config(config: &Value, req: &mut ChatRequest) -> Result<(), RelayError> {
    let g = as_object(config, "generationConfig", "a GenerationConfig object")?;
    let mut mime = None;
    let mut schema = None;
    let mut json_schema = None;
    for (k, v) in g {
        let key = camel_case(k);
        let path = format!("generationConfig.{key}");
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "temperature" => req.temperature = Some(number_in(v, &path, 0.0, 2.0)?),
            "topP" => req.top_p = Some(number_in(v, &path, 0.0, 1.0)?),
            "topK" => req.top_k = Some(int_in(v, &path, 1, i64::MAX)? as u64),
            "candidateCount" => req.n = Some(int_in(v, &path, 1, i64::from(u32::MAX))? as u32),
            "maxOutputTokens" => req.max_tokens = Some(int_in(v, &path, 1, i64::MAX)? as u64),
            "seed" => req.seed = Some(int_in(v, &path, i64::from(i32::MIN), i64::from(i32::MAX))?),
            "presencePenalty" => req.presence_penalty = Some(number_in(v, &path, -2.0, 2.0)?),
            "frequencyPenalty" => req.frequency_penalty = Some(number_in(v, &path, -2.0, 2.0)?),
            "responseLogprobs" => match v {
                Value::Bool(b) => req.logprobs = Some(*b),
                _ => return Err(RelayError::invalid_type(&path, "a boolean")),
            },
            "logprobs" => req.top_logprobs = Some(int_in(v, &path, 0, 20)? as u32),
            "stopSequences" => {
                let stops = strings(v, &path)?;
                if stops.len() > MAX_STOP_SEQUENCES {
                    return Err(RelayError::invalid_value(
                        &path,
                        format!("must contain at most {MAX_STOP_SEQUENCES} sequences"),
                    ));
                }
                req.stop = stops;
            }
            "responseMimeType" => match v.as_str() {
                Some(m) if MIME_TYPES.contains(&m) => mime = Some(m),
                Some(m) => {
                    return Err(RelayError::invalid_value(
                        &path,
                        format!("'{m}' is not one of {}", MIME_TYPES.join(", ")),
                    ))
                }
                None => return Err(RelayError::invalid_type(&path, "a string")),
            },
            "responseSchema" => schema = Some((v, openapi_to_json_schema(v, &path, 0)?)),
            "responseJsonSchema" => match v {
                Value::Object(_) => json_schema = Some(v),
                _ => return Err(RelayError::invalid_type(&path, "a JSON Schema object")),
            },
            "thinkingConfig" => decode_thinking(v, req)?,
            // responseModalities, speechConfig, mediaResolution, imageConfig, …
            _ => keep_extra(req, path, v),
        }
    }

    if schema.is_some() && json_schema.is_some() {
        return Err(RelayError::invalid_value(
            "generationConfig.responseJsonSchema",
            "cannot be set together with 'responseSchema'",
        ));
    }
    let has_schema = schema.is_some() || json_schema.is_some();
    match mime {
        None | Some("text/plain") if has_schema => {
            return Err(RelayError::invalid_value(
                "generationConfig.responseMimeType",
                "must be 'application/json' (or 'text/x.enum') when a response schema is set",
            ))
        }
        None => {}
        Some("text/plain") => req.response_format = Some(ResponseFormat::Text),
        Some("application/json") => {
            req.response_format = Some(match (schema, json_schema) {
                (Some((original, converted)), _) => ResponseFormat::JsonSchema {
                    name: schema_name(original),
                    schema: without_root_title(converted),
                    strict: false,
                },
                (None, Some(given)) => ResponseFormat::JsonSchema {
                    name: schema_name(given),
                    schema: given.clone(),
                    strict: false,
                },
                (None, None) => ResponseFormat::JsonObject,
            });
        }
        // An enum answered as plain text, XML, YAML: no other API has these modes.
        Some(other) => {
            keep_extra(
                req,
                "generationConfig.responseMimeType".into(),
                &json!(other),
            );
            if let Some((original, _)) = schema {
                keep_extra(req, "generationConfig.responseSchema".into(), original);
            }
            if let Some(given) = json_schema {
                keep_extra(req, "generationConfig.responseJsonSchema".into(), given);
            }
        }
    }
    Ok(())
}

/// A schema's name for APIs that want one: its `title` made to fit OpenAI's rule for names
/// (`[a-zA-Z0-9_-]`, at most 64), else `response`.
fn schema_name(schema: &Value) -> String {
    let title = schema.get("title").and_then(Value::as_str).unwrap_or("");
    let name: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.trim_matches('_').is_empty() {
        "response".into()
    } else {
        name
    }
}

/// The root title became the schema's name; left in, it would be said twice.
fn without_root_title(mut schema: Value) -> Value {
    if let Value::Object(root) = &mut schema {
        root.remove("title");
    }
    schema
}

/// Thinking levels Gemini 3 takes.
const THINKING_LEVELS: &[&str] = &["MINIMAL", "LOW", "MEDIUM", "HIGH"];

/// `thinkingConfig`: a budget (0 = off, -1 = dynamic) or a level, never both.
/// `includeThoughts` is checked but has no neutral field: replies show whatever reasoning the
/// upstream returns.
fn decode_thinking(config: &Value, req: &mut ChatRequest) -> Result<(), RelayError> {
    let base = "generationConfig.thinkingConfig";
    let t = as_object(config, base, "a ThinkingConfig object")?;
    let budget_path = format!("{base}.thinkingBudget");
    let level_path = format!("{base}.thinkingLevel");
    opt_bool(t, "includeThoughts", &format!("{base}.includeThoughts"))?;
    let budget = match get(t, "thinkingBudget") {
        None => None,
        Some(v) => Some(int_in(v, &budget_path, -1, i64::MAX).map_err(|_| {
            RelayError::invalid_value(
                &budget_path,
                "must be -1 (dynamic), 0 (off) or a positive number of tokens",
            )
        })?),
    };
    let level = opt_str(t, "thinkingLevel", &level_path)?.map(str::to_ascii_uppercase);
    if budget.is_some() && level.is_some() {
        return Err(RelayError::invalid_value(
            &level_path,
            "cannot be set together with 'thinkingBudget'",
        ));
    }
    if let Some(budget) = budget {
        req.reasoning = Some(match budget {
            -1 => Reasoning::Effort(DYNAMIC_THINKING_EFFORT.into()),
            0 => Reasoning::Disabled,
            tokens => Reasoning::Budget(tokens.unsigned_abs()),
        });
    }
    match level.as_deref() {
        None | Some("THINKING_LEVEL_UNSPECIFIED") => {}
        Some(level) if THINKING_LEVELS.contains(&level) => {
            req.reasoning = Some(Reasoning::Effort(level.to_ascii_lowercase()));
        }
        Some(other) => {
            return Err(RelayError::invalid_value(
                &level_path,
                format!("'{other}' is not one of {}", THINKING_LEVELS.join(", ")),
            ))
        }
    }
    for (k, v) in t {
        let key = camel_case(k);
        let known = matches!(
            key.as_str(),
            "thinkingBudget" | "thinkingLevel" | "includeThoughts"
        );
        if !known && !v.is_null() {
            keep_extra(req, format!("{base}.{key}"), v);
        }
    }
    Ok(())
}

// ---- Gemini's OpenAPI schema subset → JSON Schema -------------------------------------------

/// Gemini's `Type` enum (upper-case in the SDKs' output, lower-case accepted too).
const SCHEMA_TYPES: &[&str] = &[
    "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL",
];

/// A Gemini `Schema` (OpenAPI 3.0 subset, as the SDKs send `responseSchema` and `parameters`)
/// → standard JSON Schema: types lower-case, `nullable` as a `null` type, `example` as
/// `examples`, int64 strings as numbers. `propertyOrdering` goes: it only orders the keys of the
/// generated JSON, which a parsed object does not keep. `format: enum` goes too (it marks an
/// enum, which `enum` already says). Keywords outside the subset are kept as written.
fn openapi_to_json_schema(schema: &Value, path: &str, depth: usize) -> Result<Value, RelayError> {
    if depth > SCHEMA_MAX_DEPTH {
        return Err(RelayError::invalid_value(path, "is nested too deeply"));
    }
    let s = as_object(schema, path, "a Schema object")?;
    let mut out = Map::new();
    let mut ty: Option<String> = None;
    let mut nullable = false;
    let mut enumeration = None;
    for (k, v) in s {
        let key = camel_case(k);
        let field = format!("{path}.{key}");
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "type" => {
                let t = v
                    .as_str()
                    .ok_or_else(|| RelayError::invalid_type(&field, "a string"))?
                    .to_ascii_uppercase();
                if SCHEMA_TYPES.contains(&t.as_str()) {
                    ty = Some(t.to_ascii_lowercase());
                } else if t != "TYPE_UNSPECIFIED" {
                    return Err(RelayError::invalid_value(
                        &field,
                        format!("'{t}' is not one of {}", SCHEMA_TYPES.join(", ")),
                    ));
                }
            }
            "nullable" => {
                nullable = v
                    .as_bool()
                    .ok_or_else(|| RelayError::invalid_type(&field, "a boolean"))?
            }
            "format" => match v.as_str() {
                Some("enum") => {}
                Some(_) => {
                    out.insert(key, v.clone());
                }
                None => return Err(RelayError::invalid_type(&field, "a string")),
            },
            "title" | "description" | "pattern" => {
                if !v.is_string() {
                    return Err(RelayError::invalid_type(&field, "a string"));
                }
                out.insert(key, v.clone());
            }
            "example" => {
                out.insert("examples".into(), json!([v]));
            }
            "enum" => enumeration = Some(strings(v, &field)?),
            "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" => {
                out.insert(key, json!(int_in(v, &field, 0, i64::MAX)?));
            }
            "minimum" | "maximum" => {
                let bound =
                    match v {
                        Value::Number(_) => v.clone(),
                        _ => json!(number_of(v)
                            .ok_or_else(|| RelayError::invalid_type(&field, "a number"))?),
                    };
                out.insert(key, bound);
            }
            "required" => {
                out.insert(key, json!(strings(v, &field)?));
            }
            "propertyOrdering" => {
                strings(v, &field)?;
            }
            "properties" => {
                let properties = as_object(v, &field, "an object of Schema objects")?;
                let mut converted = Map::new();
                for (name, property) in properties {
                    let property_path = format!("{field}.{name}");
                    converted.insert(
                        name.clone(),
                        openapi_to_json_schema(property, &property_path, depth + 1)?,
                    );
                }
                out.insert(key, Value::Object(converted));
            }
            "items" => {
                out.insert(key, openapi_to_json_schema(v, &field, depth + 1)?);
            }
            "anyOf" => {
                let Value::Array(options) = v else {
                    return Err(RelayError::invalid_type(
                        &field,
                        "an array of Schema objects",
                    ));
                };
                let converted = options
                    .iter()
                    .enumerate()
                    .map(|(n, option)| {
                        openapi_to_json_schema(option, &format!("{field}[{n}]"), depth + 1)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(key, Value::Array(converted));
            }
            // default, additionalProperties, $ref, $defs, …: JSON Schema already.
            _ => {
                out.insert(key, v.clone());
            }
        }
    }
    if let Some(values) = enumeration {
        // Gemini's enums are strings even for numbers (`{type: INTEGER, enum: ["101"]}`).
        let numeric = matches!(ty.as_deref(), Some("integer" | "number"));
        let mut values: Vec<Value> = values
            .into_iter()
            .map(|value| match (numeric, value.parse::<f64>()) {
                (true, Ok(x)) if ty.as_deref() == Some("integer") && x.fract() == 0.0 => {
                    json!(x as i64)
                }
                (true, Ok(x)) => json!(x),
                _ => Value::String(value),
            })
            .collect();
        if nullable {
            values.push(Value::Null);
        }
        out.insert("enum".into(), Value::Array(values));
    }
    match ty {
        Some(t) if nullable && t != "null" => {
            out.insert("type".into(), json!([t, "null"]));
        }
        Some(t) => {
            out.insert("type".into(), Value::String(t));
        }
        None if nullable => {
            if let Some(Value::Array(options)) = out.get_mut("anyOf") {
                options.push(json!({"type": "null"}));
            }
        }
        None => {}
    }
    Ok(Value::Object(out))
}

// ---- replies -----------------------------------------------------------------------------------

/// Neutral finish reason → Gemini's. Gemini says `STOP` for calls and stop sequences alike;
/// `OTHER` is its catch-all.
fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Error => "OTHER",
    }
}

/// Neutral usage → `usageMetadata`. Gemini's `promptTokenCount` includes cached tokens, as the
/// neutral prompt count does; its `candidatesTokenCount` excludes thoughts, which the neutral
/// completion count includes, so thoughts are taken out of it and shown beside it. Zero details
/// are left out, as Google leaves them out.
fn usage_metadata(usage: &Usage) -> Value {
    let thoughts = usage.reasoning_tokens.min(usage.completion_tokens);
    let mut m = Map::new();
    m.insert("promptTokenCount".into(), json!(usage.prompt_tokens));
    m.insert(
        "candidatesTokenCount".into(),
        json!(usage.completion_tokens - thoughts),
    );
    m.insert("totalTokenCount".into(), json!(usage.total_tokens()));
    if usage.cache_read_tokens > 0 {
        m.insert(
            "cachedContentTokenCount".into(),
            json!(usage.cache_read_tokens),
        );
    }
    if thoughts > 0 {
        m.insert("thoughtsTokenCount".into(), json!(thoughts));
    }
    Value::Object(m)
}

/// A call as one whole `functionCall` part, `args` an object. Arguments an upstream left
/// unfinished, or that are not an object, are wrapped so the client still gets an object.
fn function_call_part(call: &ToolCall) -> Value {
    let args = match serde_json::from_str::<Value>(&call.arguments) {
        Ok(args @ Value::Object(_)) => args,
        _ if call.arguments.trim().is_empty() => json!({}),
        Ok(other) => json!({ "arguments": other }),
        Err(_) => json!({ "arguments": call.arguments }),
    };
    let mut function_call = Map::new();
    // Gemini's own ids are optional; the upstream's is given so the client answers with it.
    if !call.id.is_empty() {
        function_call.insert("id".into(), json!(call.id));
    }
    function_call.insert("name".into(), json!(call.name));
    function_call.insert("args".into(), args);
    json!({ "functionCall": function_call })
}

fn image_part(source: &ImageSource) -> Value {
    match source {
        ImageSource::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        ImageSource::Url(url) => json!({"fileData": {"fileUri": url}}),
    }
}

/// Puts the thought signature where a Gemini client keeps and returns it: on the thought part
/// when there is one (it signs that reasoning), else on the first call, else on the last part.
fn place_signature(parts: &mut [Value], signature: &str) {
    let thought = parts.iter().position(|p| p.get("thought").is_some());
    let call = parts.iter().position(|p| p.get("functionCall").is_some());
    let at = thought.or(call).or(parts.len().checked_sub(1));
    if let Some(Value::Object(part)) = at.and_then(|at| parts.get_mut(at)) {
        part.insert("thoughtSignature".into(), json!(signature));
    }
}

/// Neutral reply → `GenerateContentResponse`: one candidate whose parts are the reasoning
/// (`thought: true`), the text, images, then one `functionCall` part per call. `model` is
/// reported as `modelVersion`, `response_id` as `responseId`.
pub fn encode_response(resp: &ChatResponse, model: &str, response_id: &str) -> Value {
    let message = &resp.message;
    let mut parts = Vec::new();
    if let Some(reasoning) = message.reasoning.as_deref().filter(|r| !r.is_empty()) {
        parts.push(json!({"text": reasoning, "thought": true}));
    }
    for part in &message.content {
        match part {
            Part::Text(text) if text.is_empty() => {}
            Part::Text(text) => parts.push(json!({ "text": text })),
            Part::Image(source) => parts.push(image_part(source)),
        }
    }
    parts.extend(message.tool_calls.iter().map(function_call_part));
    if parts.is_empty() {
        // Google's own empty answer (a safety stop, say) still has a text part.
        parts.push(json!({"text": ""}));
    }
    if let Some(signature) = &message.reasoning_signature {
        place_signature(&mut parts, signature);
    }
    let reason = resp.finish_reason.unwrap_or(FinishReason::Stop);
    let mut body = Map::new();
    body.insert(
        "candidates".into(),
        json!([{
            "content": {"role": "model", "parts": parts},
            "finishReason": finish_reason_name(reason),
            "index": 0,
        }]),
    );
    if let Some(usage) = &resp.usage {
        body.insert("usageMetadata".into(), usage_metadata(usage));
    }
    body.insert("modelVersion".into(), json!(model));
    body.insert("responseId".into(), json!(response_id));
    Value::Object(body)
}

// ---- streams ----------------------------------------------------------------------------------

/// How a `streamGenerateContent` reply is framed: the client chose with `alt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFraming {
    /// `alt=sse`: one `data: {GenerateContentResponse}` event per chunk (what the SDKs use).
    Sse,
    /// No `alt` (or `alt=json`): one JSON array, its elements written as they come.
    JsonArray,
}

impl StreamFraming {
    /// The framing for the request's `alt` query parameter.
    pub fn from_alt(alt: Option<&str>) -> StreamFraming {
        match alt {
            Some(alt) if alt.eq_ignore_ascii_case("sse") => StreamFraming::Sse,
            _ => StreamFraming::JsonArray,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            StreamFraming::Sse => "text/event-stream",
            StreamFraming::JsonArray => "application/json; charset=UTF-8",
        }
    }
}

/// A call whose arguments are still arriving.
#[derive(Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

impl PendingCall {
    fn to_call(&self) -> ToolCall {
        ToolCall {
            id: self.id.clone(),
            name: self.name.clone(),
            arguments: self.arguments.clone(),
        }
    }

    /// Its arguments parse: nothing more can belong to it.
    fn looks_complete(&self) -> bool {
        self.arguments.trim().is_empty()
            || serde_json::from_str::<Value>(&self.arguments).is_ok_and(|v| v.is_object())
    }
}

/// Neutral [`StreamEvent`]s → Gemini stream chunks, each a whole `GenerateContentResponse`
/// carrying the new parts only. Text and thoughts go out as they come; a call's arguments are
/// held until the call is whole (the next event that is not about calls, or the end), because
/// Gemini clients expect each call as one `functionCall` part, never fragments. The last chunk
/// carries `finishReason` and `usageMetadata` (usage often comes after the finish reason, so
/// it waits for [`finish`](Self::finish)); an upstream error ends the stream with Google's
/// error object.
pub struct StreamEncoder {
    framing: StreamFraming,
    response_id: String,
    model: String,
    chunks: usize,
    ended: bool,
    /// Calls by neutral index, in index order.
    calls: BTreeMap<usize, PendingCall>,
    /// Calls already sent: a late fragment for one cannot be added, so it is ignored.
    sent: BTreeSet<usize>,
    /// A signature that came while calls were pending; it goes on the first of them.
    signature: Option<String>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(framing: StreamFraming, response_id: &str, model: &str) -> Self {
        StreamEncoder {
            framing,
            response_id: response_id.into(),
            model: model.into(),
            chunks: 0,
            ended: false,
            calls: BTreeMap::new(),
            sent: BTreeSet::new(),
            signature: None,
            finish_reason: None,
            usage: None,
        }
    }

    fn write(&mut self, value: &Value, out: &mut Vec<u8>) {
        let json = value.to_string();
        match self.framing {
            StreamFraming::Sse => {
                // Serialized JSON has no raw line breaks, so one `data:` line holds it.
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json.as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
            }
            StreamFraming::JsonArray => json_array::encode_element(self.chunks == 0, &json, out),
        }
        self.chunks += 1;
    }

    fn chunk(&self, parts: Vec<Value>, last: bool) -> Value {
        let mut candidate = Map::new();
        candidate.insert("content".into(), json!({"role": "model", "parts": parts}));
        if last {
            let reason = self.finish_reason.unwrap_or(FinishReason::Stop);
            candidate.insert("finishReason".into(), json!(finish_reason_name(reason)));
        }
        candidate.insert("index".into(), json!(0));
        let mut chunk = Map::new();
        chunk.insert("candidates".into(), json!([candidate]));
        if last {
            if let Some(usage) = &self.usage {
                chunk.insert("usageMetadata".into(), usage_metadata(usage));
            }
        }
        chunk.insert("modelVersion".into(), json!(self.model));
        chunk.insert("responseId".into(), json!(self.response_id));
        Value::Object(chunk)
    }

    /// The pending calls as parts (all of them, or only those whose arguments are whole),
    /// the held signature on the first.
    fn take_calls(&mut self, only_complete: bool) -> Vec<Value> {
        let calls = std::mem::take(&mut self.calls);
        let mut parts = Vec::new();
        for (index, call) in calls {
            self.sent.insert(index);
            if only_complete && !call.looks_complete() {
                continue;
            }
            parts.push(function_call_part(&call.to_call()));
        }
        if let (Some(signature), Some(Value::Object(first))) =
            (self.signature.take(), parts.first_mut())
        {
            first.insert("thoughtSignature".into(), json!(signature));
        }
        parts
    }

    fn flush_calls(&mut self, out: &mut Vec<u8>) {
        if self.calls.is_empty() {
            return;
        }
        let parts = self.take_calls(false);
        let chunk = self.chunk(parts, false);
        self.write(&chunk, out);
    }

    fn emit_part(&mut self, part: Value, out: &mut Vec<u8>) {
        self.flush_calls(out);
        let chunk = self.chunk(vec![part], false);
        self.write(&chunk, out);
    }

    pub fn push(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match event {
            // The relay chose the id and the public model name; the upstream's are not shown.
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta(text) => {
                if !text.is_empty() {
                    self.emit_part(json!({ "text": text }), out);
                }
            }
            StreamEvent::ReasoningDelta(text) => {
                if !text.is_empty() {
                    self.emit_part(json!({"text": text, "thought": true}), out);
                }
            }
            StreamEvent::ReasoningSignature(signature) => {
                if self.calls.is_empty() {
                    let part = json!({"text": "", "thought": true, "thoughtSignature": signature});
                    self.emit_part(part, out);
                } else if self.signature.is_none() {
                    // Gemini signs the first call of a turn; this one goes out with the calls.
                    self.signature = Some(signature.clone());
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.sent.contains(index) {
                    return;
                }
                let call = self.calls.entry(*index).or_default();
                if call.id.is_empty() {
                    call.id.clone_from(id);
                }
                if call.name.is_empty() {
                    call.name.clone_from(name);
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if !self.sent.contains(index) {
                    let call = self.calls.entry(*index).or_default();
                    call.arguments.push_str(arguments);
                }
            }
            // Calls stay held so they go out in the last chunk with the finish reason, as
            // Gemini sends them.
            StreamEvent::Finish { reason, .. } => self.finish_reason = Some(*reason),
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error { status, message } => {
                // Calls whose arguments are whole were made; a call cut off was not.
                let parts = self.take_calls(true);
                if !parts.is_empty() {
                    let chunk = self.chunk(parts, false);
                    self.write(&chunk, out);
                }
                let (code, status) = status_for_code(*status);
                let error = json!({"error": {"code": code, "message": message, "status": status}});
                self.write(&error, out);
                self.close(out);
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let mut parts = self.take_calls(false);
        if parts.is_empty() {
            // Google's last chunk has an empty text part when there is nothing left to say.
            parts.push(json!({"text": ""}));
        }
        let chunk = self.chunk(parts, true);
        self.write(&chunk, out);
        self.close(out);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.framing == StreamFraming::JsonArray {
            json_array::encode_end(self.chunks > 0, out);
        }
        self.ended = true;
    }
}

// ---- errors -----------------------------------------------------------------------------------

/// An HTTP status → Google's code and canonical status name. Anthropic's 529 (overloaded) is
/// a 503 to a Gemini client, which knows no 529.
fn status_for_code(code: u16) -> (u16, &'static str) {
    let status = match code {
        400 | 405 | 411 | 413 | 414 | 415 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 | 529 => "UNAVAILABLE",
        402..=499 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    };
    let code = match code {
        529 => 503,
        400..=599 => code,
        _ => 500,
    };
    (code, status)
}

/// How long to wait, in Google's `RetryInfo` detail (`"37s"`), when the error says.
fn retry_delay(err: &RelayError) -> Option<u64> {
    use RelayError::*;
    match err {
        LimitExceeded { retry_after_ms, .. } | BudgetExceeded { retry_after_ms, .. } => {
            retry_after_ms.map(|ms| ms.div_ceil(1000).max(1))
        }
        UpstreamRateLimited { retry_after } | UpstreamOverloaded { retry_after } => {
            retry_after.as_deref().and_then(|s| s.trim().parse().ok())
        }
        RelayDisabled { retry_after_s, .. } => retry_after_s.map(u64::from),
        _ => None,
    }
}

/// A relay error as Google sends one: HTTP status and `{"error":{"code","message","status"}}`,
/// with `details` where Google gives them (the field of a bad request, the retry delay). The
/// message is [`RelayError::message`], which never carries internal or upstream secrets.
pub fn error_body(err: &RelayError) -> (u16, Value) {
    use RelayError::*;
    let (code, status) = match err {
        InvalidJson { .. }
        | MissingParameter { .. }
        | InvalidType { .. }
        | InvalidValue { .. }
        | UnsupportedEndpoint { .. }
        | FieldNotSupported { .. } => (400, "INVALID_ARGUMENT"),
        // Google's front end answers an oversized body with 413 too.
        RequestTooLarge { .. } => (413, "INVALID_ARGUMENT"),
        MissingApiKey
        | InvalidApiKey
        | KeyRevoked
        | KeyExpired
        | InvalidAdminToken
        | TokenInvalid { .. }
        | TokenExpired
        | TokenNotYetValid
        | TokenLifetimeTooLong
        | TokenWrongIssuer
        | TokenWrongAudience => (401, "UNAUTHENTICATED"),
        TenantDisabled
        | AccessDenied { .. }
        | Forbidden
        | RoleForbidden { .. }
        | OriginNotAllowed { .. }
        | RegionNotServed { .. } => (403, "PERMISSION_DENIED"),
        ModelNotFound { .. } | NotFound { .. } => (404, "NOT_FOUND"),
        MethodNotAllowed { .. } => (405, "UNIMPLEMENTED"),
        Conflict { .. } => (409, "ABORTED"),
        // A spent budget is a spent quota to a Gemini client, which knows no 402.
        LimitExceeded { .. }
        | BudgetExceeded { .. }
        | InsufficientBalance
        | UpstreamRateLimited { .. } => (429, "RESOURCE_EXHAUSTED"),
        UpstreamInvalidRequest { status, .. } => status_for_code(*status),
        Internal { .. } => (500, "INTERNAL"),
        UpstreamAuthFailed | UpstreamError { .. } | UpstreamBadResponse { .. } => {
            (err.status(), "INTERNAL")
        }
        // Worth retrying, which is what UNAVAILABLE tells Google's clients.
        UpstreamUnreachable | UpstreamStreamBroken => (err.status(), "UNAVAILABLE"),
        ChannelUnavailable { .. } | UpstreamOverloaded { .. } | RelayDisabled { .. } => {
            (503, "UNAVAILABLE")
        }
        UpstreamTimeout { .. } => (504, "DEADLINE_EXCEEDED"),
    };
    let mut details = Vec::new();
    if let (400, Some(param)) = (code, err.param()) {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": param, "description": err.message()}],
        }));
    }
    if let Some(seconds) = retry_delay(err) {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{seconds}s"),
        }));
    }
    let mut error = Map::new();
    error.insert("code".into(), json!(code));
    error.insert("message".into(), json!(err.message()));
    error.insert("status".into(), json!(status));
    if !details.is_empty() {
        error.insert("details".into(), Value::Array(details));
    }
    (code, json!({ "error": error }))
}

// ---- the other routes -------------------------------------------------------------------------

/// A `countTokens` reply. The relay counts the prompt as text, so that is the one modality.
pub fn count_tokens_response(total: u64) -> Value {
    json!({
        "totalTokens": total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
    })
}

/// One public model in Gemini's `Model` shape. Limits the relay does not know are left out;
/// `version` is required by the shape and says nothing here.
pub fn model_entry(name: &str) -> Value {
    let name = name.strip_prefix("models/").unwrap_or(name);
    json!({
        "name": format!("models/{name}"),
        "baseModelId": name,
        "version": "001",
        "displayName": name,
        "description": format!("{name}, served by edgerelay."),
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    })
}

/// `models.list`: the public models (name, created), all on one page. Gemini's `Model` has no
/// creation time, so `created` is not shown.
pub fn models_list(models: &[(&str, i64)]) -> Value {
    let models: Vec<Value> = models.iter().map(|(name, _)| model_entry(name)).collect();
    json!({ "models": models })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{anthropic, gemini, openai};

    const REQUEST_TEXT: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/request_text.json");
    const REQUEST_SDK_SCHEMA: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/request_sdk_schema.json");
    const REQUEST_FUNCTION_CALLING: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/request_function_calling.json");
    const REQUEST_THINKING: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/request_thinking.json");

    fn response(message: Message, reason: FinishReason, usage: Usage) -> ChatResponse {
        ChatResponse {
            id: "upstream-id".into(),
            model: "upstream-model".into(),
            created_s: 1_700_000_000,
            message,
            finish_reason: Some(reason),
            stop_sequence: None,
            usage: Some(usage),
        }
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn text_reply() -> ChatResponse {
        response(
            Message::text(Role::Assistant, "Meow! Hello there. I'm Neko."),
            FinishReason::Stop,
            Usage::new(14, 9),
        )
    }

    fn function_call_reply() -> ChatResponse {
        let mut message = Message::new(Role::Assistant, Vec::new());
        message.tool_calls = vec![
            call(
                "toolu_01A",
                "set_light_values",
                r#"{"brightness":25,"color_temp":"warm"}"#,
            ),
            call("toolu_01B", "get_current_temperature", r#"{"location":"#),
        ];
        // Anthropic's way: 40 uncached input tokens beside 60 read from the cache.
        response(
            message,
            FinishReason::ToolCalls,
            Usage::from_exclusive(40, 20, 60, 0),
        )
    }

    fn thinking_reply() -> ChatResponse {
        let mut message = Message::text(Role::Assistant, "There are 59 days until Christmas.");
        message.reasoning = Some("**Counting again**\n\nChristmas is a week earlier.\n".into());
        message.reasoning_signature = Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into());
        // 12013 prompt tokens of which 11243 cached; 88 output of which 73 thinking.
        response(
            message,
            FinishReason::Stop,
            Usage::from_inclusive(12013, 88, 11243, 0, 73),
        )
    }

    fn text_events() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Start {
                id: "chatcmpl-1".into(),
                model: "gpt-4o".into(),
            },
            StreamEvent::Usage(Usage::new(7, 0)),
            StreamEvent::TextDelta("The".into()),
            StreamEvent::TextDelta(" capital of Wyoming".into()),
            StreamEvent::TextDelta(" is **Cheyenne**.\n".into()),
            StreamEvent::Finish {
                reason: FinishReason::Stop,
                stop_sequence: None,
            },
            StreamEvent::Usage(Usage::new(7, 10)),
        ]
    }

    fn function_call_events() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Start {
                id: "msg_1".into(),
                model: "claude".into(),
            },
            StreamEvent::ReasoningDelta("The user wants".into()),
            StreamEvent::ReasoningDelta(" two lookups.".into()),
            StreamEvent::ReasoningSignature("c2lnbmF0dXJl".into()),
            StreamEvent::TextDelta("Let me check.".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_01A".into(),
                name: "get_weather".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"city\"".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: ":\"Par".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "is\"}".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_01B".into(),
                name: "get_time".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into(),
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None,
            },
            StreamEvent::Usage(Usage::from_inclusive(175, 42, 100, 0, 12)),
        ]
    }

    fn encode_events(framing: StreamFraming, events: &[StreamEvent]) -> Vec<u8> {
        let mut encoder = StreamEncoder::new(framing, "resp-1", "public-model");
        let mut out = Vec::new();
        for event in events {
            encoder.push(event, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    const REPLY_TEXT: &[u8] = include_bytes!("../../tests/fixtures/gemini_inbound/reply_text.json");
    const REPLY_FUNCTION_CALL: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/reply_function_call.json");
    const REPLY_THINKING: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/reply_thinking.json");
    const STREAM_TEXT: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/stream_text.sse");
    const STREAM_FUNCTION_CALL: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/stream_function_call.sse");
    const STREAM_FUNCTION_CALL_ARRAY: &[u8] =
        include_bytes!("../../tests/fixtures/gemini_inbound/stream_function_call_array.json");
    const OPENAI_STREAM_TOOL_CALLS: &[u8] =
        include_bytes!("../../tests/fixtures/openai/stream_tool_calls.sse");
    const ANTHROPIC_STREAM_TOOL_USE: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/stream_tool_use.sse");

    fn decode(body: &Value) -> Result<ChatRequest, RelayError> {
        decode_request("gemini-2.5-flash", body.to_string().as_bytes())
    }

    fn hello() -> Value {
        json!([{"role": "user", "parts": [{"text": "hi"}]}])
    }

    fn with_config(config: Value) -> Result<ChatRequest, RelayError> {
        decode(&json!({"contents": hello(), "generationConfig": config}))
    }

    fn extra_keys(r: &ChatRequest) -> Vec<&str> {
        r.extra.keys().map(String::as_str).collect()
    }

    fn args(call: &ToolCall) -> Value {
        serde_json::from_str(&call.arguments).expect("arguments are JSON")
    }

    /// Every value of `key` anywhere in `value`, in document order.
    fn collect<'a>(value: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == key {
                        out.push(v);
                    }
                    collect(v, key, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, key, out)),
            _ => {}
        }
    }

    fn all<'a>(value: &'a Value, key: &str) -> Vec<&'a Value> {
        let mut out = Vec::new();
        collect(value, key, &mut out);
        out
    }

    // ---- requests ----

    #[test]
    fn decodes_the_reference_text_request() {
        let r = decode_request("models/gemini-2.5-flash", REQUEST_TEXT).unwrap();
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(
            r.system,
            vec!["You are a cat. Your name is Neko.".to_string()]
        );
        assert_eq!(r.messages, vec![Message::text(Role::User, "Hello there")]);
        assert_eq!(
            (r.temperature, r.top_p, r.top_k, r.max_tokens),
            (Some(1.0), Some(0.8), Some(10), Some(800))
        );
        assert_eq!(r.stop, vec!["Title".to_string()]);
        assert!(!r.stream);
        assert_eq!(extra_keys(&r), ["safetySettings"]);

        // Sent on to a Gemini channel through the neutral model, it is the same request but
        // for the safety settings, which are reported.
        let (body, drops) = gemini::encode_request(&r);
        let original: Value = serde_json::from_slice(REQUEST_TEXT).unwrap();
        assert_eq!(body["systemInstruction"], original["system_instruction"]);
        assert_eq!(body["generationConfig"], original["generationConfig"]);
        assert_eq!(
            body["contents"][0]["parts"],
            original["contents"][0]["parts"]
        );
        assert_eq!(
            drops,
            vec![crate::formats::neutral::Drop::dropped("safetySettings")]
        );
    }

    fn assert_json_schema_only(schema: &Value) {
        for ty in all(schema, "type") {
            let names: Vec<&str> = match ty {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => panic!("type {other}"),
            };
            for name in names {
                assert_eq!(name, name.to_ascii_lowercase(), "{schema}");
            }
        }
        assert!(all(schema, "propertyOrdering").is_empty(), "{schema}");
        assert!(all(schema, "nullable").is_empty(), "{schema}");
    }

    #[test]
    fn decodes_the_sdk_response_schema_as_json_schema() {
        let r = decode_request("gemini-2.5-flash", REQUEST_SDK_SCHEMA).unwrap();
        let Some(ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        }) = r.response_format
        else {
            panic!("a JSON schema: {:?}", r.response_format);
        };
        assert_eq!(name, "Recipes");
        assert!(!strict);
        assert_eq!(
            schema,
            json!({
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "title": "Recipe",
                    "properties": {
                        "recipeName": {"type": "string", "description": "Name of the recipe"},
                        "ingredients": {"type": "array", "items": {"type": "string"}},
                        "difficulty": {"type": ["string", "null"], "enum": ["easy", "medium", "hard", null]},
                        "prepMinutes": {"type": "integer", "format": "int32", "minimum": 1},
                        "bakedOn": {"type": "string", "format": "date-time"}
                    },
                    "required": ["recipeName", "ingredients"]
                }
            })
        );
        assert_json_schema_only(&schema);
        assert!(r.extra.is_empty());
    }

    #[test]
    fn decodes_function_calling_and_pairs_responses_with_calls() {
        let r = decode_request("gemini-2.5-flash", REQUEST_FUNCTION_CALLING).unwrap();
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::Assistant,
                Role::User
            ]
        );
        let calls = &r.messages[1].tool_calls;
        let calls: Vec<(&str, &str, Value)> = calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), args(c)))
            .collect();
        assert_eq!(
            calls,
            [
                (
                    "call_1_0",
                    "get_current_temperature",
                    json!({"location": "London"})
                ),
                (
                    "call_1_1",
                    "get_current_temperature",
                    json!({"location": "Paris"})
                ),
            ]
        );
        // Same name twice: each response answers the earliest call still open.
        let (london, paris) = (&r.messages[2], &r.messages[3]);
        assert_eq!(london.tool_call_id.as_deref(), Some("call_1_0"));
        assert_eq!(paris.tool_call_id.as_deref(), Some("call_1_1"));
        assert!(!london.is_error);
        assert_eq!(
            serde_json::from_str::<Value>(&paris.joined_text()).unwrap(),
            json!({"output": {"temperature": 21, "unit": "celsius"}})
        );

        let names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["get_current_temperature", "set_light_values"]);
        assert_eq!(
            r.tools[0].parameters,
            json!({"type": "object", "properties": {"location": {"type": "string",
                "description": "The city name, e.g. San Francisco"}}, "required": ["location"]})
        );
        assert_eq!(
            r.tools[1].parameters["properties"]["brightness"]["type"],
            "integer"
        );
        assert_eq!(
            r.tools[1].parameters["properties"]["color_temp"]["enum"],
            json!(["daylight", "cool", "warm"])
        );
        assert_eq!(
            r.tools[0].description.as_deref(),
            Some("Gets the current temperature for a given location.")
        );
        assert_eq!(
            r.tool_choice,
            Some(ToolChoice::Named("set_light_values".into()))
        );
        assert_eq!(extra_keys(&r), ["tools.googleSearch"]);

        // Carried to Anthropic, every tool_result answers a tool_use of the same id.
        let (body, drops) = anthropic::encode_request(&r);
        let uses: Vec<&Value> = all(&body["messages"], "id");
        let answers: Vec<&Value> = all(&body["messages"], "tool_use_id");
        assert_eq!(uses, [&json!("call_1_0"), &json!("call_1_1")]);
        assert_eq!(answers, uses);
        assert!(drops.contains(&crate::formats::neutral::Drop::dropped(
            "tools.googleSearch"
        )));
    }

    #[test]
    fn pairing_prefers_ids_then_names_and_reads_snake_case() {
        let r = decode(&json!({"contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [
                {"functionCall": {"id": "fc_1", "name": "a", "args": {"n": 1}}},
                {"function_call": {"name": "a"}},
                {"functionCall": {"name": "b", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "b", "response": {"output": "B"}}},
                {"functionResponse": {"id": "fc_1", "name": "a", "response": {"output": "A1"}}},
                {"function_response": {"name": "a", "response": {"error": "boom"}}},
                {"functionResponse": {"name": "c", "response": {}}}
            ]}
        ]}))
        .unwrap();
        let ids: Vec<&str> = r.messages[1]
            .tool_calls
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["fc_1", "call_1_1", "call_1_2"]);
        assert_eq!(r.messages[1].tool_calls[1].arguments, "{}");
        let answered: Vec<(&str, bool)> = r.messages[2..]
            .iter()
            .map(|m| (m.tool_call_id.as_deref().unwrap_or_default(), m.is_error))
            .collect();
        assert_eq!(
            answered,
            [
                ("call_1_2", false),
                ("fc_1", false),
                ("call_1_1", true),
                // Answers no call: an id of its own, from its place.
                ("call_2_3", false)
            ]
        );
    }

    #[test]
    fn a_streamed_reply_recorded_chunk_by_chunk_is_one_turn() {
        // The SDKs' chats keep each streamed chunk's Content as its own model Content, and
        // answer each call with its id.
        let mut contents = vec![json!({"role": "user", "parts": [{"text": "Weather and time?"}]})];
        for chunk in sse_chunks(STREAM_FUNCTION_CALL) {
            contents.push(chunk["candidates"][0]["content"].clone());
        }
        contents.push(json!({"role": "user", "parts": [
            {"functionResponse": {"id": "toolu_01B", "name": "get_time", "response": {"output": "09:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
        ]}));
        let r = decode(&json!({ "contents": contents })).unwrap();
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Tool]);
        let turn = &r.messages[1];
        assert_eq!(
            turn.reasoning.as_deref(),
            Some("The user wants two lookups.")
        );
        assert_eq!(turn.reasoning_signature.as_deref(), Some("c2lnbmF0dXJl"));
        assert_eq!(turn.content, vec![Part::Text("Let me check.".into())]);
        let ids: Vec<&str> = turn.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["toolu_01A", "toolu_01B"]);
        let answers: Vec<Option<&str>> = r.messages[2..]
            .iter()
            .map(|m| m.tool_call_id.as_deref())
            .collect();
        assert_eq!(answers, [Some("toolu_01B"), Some("toolu_01A")]);

        // A signature alone, with nothing before it in its turn, is no message.
        let r = decode(&json!({"contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": "", "thoughtSignature": "c2ln"}]},
            {"role": "user", "parts": [{"text": "again"}]}
        ]}))
        .unwrap();
        assert_eq!(r.messages.len(), 2);
    }

    #[test]
    fn decodes_thinking_history_and_budget() {
        let r = decode_request("gemini-2.5-flash", REQUEST_THINKING).unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Budget(1024)));
        let model = &r.messages[1];
        assert_eq!(model.role, Role::Assistant);
        assert!(model
            .reasoning
            .as_deref()
            .is_some_and(|t| t.starts_with("**Counting the days**")));
        assert_eq!(
            model.reasoning_signature.as_deref(),
            Some("CtQOAVSoXO74Pm==")
        );
        assert_eq!(
            model.content,
            vec![Part::Text("There are 66 days until New Year's Eve.".into())]
        );
        assert!(r.extra.is_empty());
        // An Anthropic upstream gets the thinking block back with its signature.
        let (body, _) = anthropic::encode_request(&r);
        assert_eq!(all(&body, "signature"), [&json!("CtQOAVSoXO74Pm==")]);
    }

    #[test]
    fn thinking_budget_and_level() {
        let reasoning = |config: Value| {
            with_config(json!({ "thinkingConfig": config }))
                .map(|r| r.reasoning)
                .map_err(|e| e.param().unwrap_or_default().to_string())
        };
        assert_eq!(
            reasoning(json!({"thinkingBudget": -1})),
            Ok(Some(Reasoning::Effort("medium".into())))
        );
        assert_eq!(
            reasoning(json!({"thinking_budget": 0})),
            Ok(Some(Reasoning::Disabled))
        );
        assert_eq!(
            reasoning(json!({"thinkingLevel": "LOW", "includeThoughts": true})),
            Ok(Some(Reasoning::Effort("low".into())))
        );
        assert_eq!(
            reasoning(json!({"thinkingLevel": "high"})),
            Ok(Some(Reasoning::Effort("high".into())))
        );
        assert_eq!(
            reasoning(json!({"thinkingLevel": "THINKING_LEVEL_UNSPECIFIED"})),
            Ok(None)
        );
        let level = "generationConfig.thinkingConfig.thinkingLevel";
        let budget = "generationConfig.thinkingConfig.thinkingBudget";
        assert_eq!(
            reasoning(json!({"thinkingLevel": "LOW", "thinkingBudget": 10})),
            Err(level.to_string())
        );
        assert_eq!(
            reasoning(json!({"thinkingLevel": "MAX"})),
            Err(level.to_string())
        );
        assert_eq!(
            reasoning(json!({"thinkingBudget": -2})),
            Err(budget.to_string())
        );
        assert_eq!(
            reasoning(json!({"thinkingBudget": "x"})),
            Err(budget.to_string())
        );
        assert_eq!(
            reasoning(json!({"includeThoughts": "yes"})),
            Err("generationConfig.thinkingConfig.includeThoughts".to_string())
        );
    }

    #[test]
    fn function_calling_modes() {
        let tools = json!([{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}]);
        let choose = |config: Value| {
            decode(
                &json!({"contents": hello(), "tools": tools, "toolConfig": {"functionCallingConfig": config}}),
            )
        };
        let choice = |config: Value| choose(config).map(|r| (r.tool_choice, r.extra));
        let none = Map::new();
        assert_eq!(
            choice(json!({"mode": "AUTO"})),
            Ok((Some(ToolChoice::Auto), none.clone()))
        );
        assert_eq!(
            choice(json!({"mode": "NONE"})),
            Ok((Some(ToolChoice::None), none.clone()))
        );
        assert_eq!(
            choice(json!({"mode": "ANY"})),
            Ok((Some(ToolChoice::Required), none.clone()))
        );
        assert_eq!(
            choice(json!({"mode": "ANY", "allowedFunctionNames": ["b"]})),
            Ok((Some(ToolChoice::Named("b".into())), none.clone()))
        );
        assert_eq!(
            choice(json!({"mode": "MODE_UNSPECIFIED"})),
            Ok((None, none))
        );
        // What the neutral model cannot say is kept, so other upstreams report it.
        let (choice_two, extra) =
            choice(json!({"mode": "ANY", "allowedFunctionNames": ["a", "b"]})).unwrap();
        assert_eq!(choice_two, Some(ToolChoice::Required));
        assert_eq!(
            extra.get("toolConfig.functionCallingConfig.allowedFunctionNames"),
            Some(&json!(["a", "b"]))
        );
        let (validated, extra) = choice(json!({"mode": "VALIDATED"})).unwrap();
        assert_eq!(validated, Some(ToolChoice::Auto));
        assert_eq!(
            extra.get("toolConfig.functionCallingConfig.mode"),
            Some(&json!("VALIDATED"))
        );
        let e = choose(json!({"mode": "SOMETIMES"})).unwrap_err();
        assert_eq!(e.param(), Some("toolConfig.functionCallingConfig.mode"));

        // A function without parameters takes none; a JSON Schema is taken as given.
        let r = decode(&json!({"contents": hello(), "tools": [{"function_declarations": [
            {"name": "now"},
            {"name": "get", "parametersJsonSchema": {"type": "object", "properties": {"q": {"type": ["string", "null"]}}, "additionalProperties": false}}
        ]}]}))
        .unwrap();
        assert_eq!(
            r.tools[0].parameters,
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(r.tools[1].parameters["additionalProperties"], json!(false));
        assert_eq!(
            r.tools[1].parameters["properties"]["q"]["type"],
            json!(["string", "null"])
        );
    }

    #[test]
    fn generation_config_fields() {
        let r = with_config(json!({
            "candidateCount": 2, "seed": -7, "presencePenalty": 0.5, "frequency_penalty": -0.5,
            "responseLogprobs": true, "logprobs": 3, "maxOutputTokens": "256",
            "responseMimeType": "application/json", "responseModalities": ["TEXT"]
        }))
        .unwrap();
        assert_eq!(
            (r.n, r.seed, r.presence_penalty, r.frequency_penalty),
            (Some(2), Some(-7), Some(0.5), Some(-0.5))
        );
        assert_eq!(
            (r.logprobs, r.top_logprobs, r.max_tokens),
            (Some(true), Some(3), Some(256))
        );
        assert_eq!(r.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(extra_keys(&r), ["generationConfig.responseModalities"]);

        let r = with_config(json!({"responseMimeType": "text/plain"})).unwrap();
        assert_eq!(r.response_format, Some(ResponseFormat::Text));

        // responseJsonSchema is JSON Schema already: taken as given, its title the name.
        let given = json!({"title": "Weather report", "type": "object",
            "properties": {"temp": {"type": "number"}}, "required": ["temp"]});
        let r = with_config(
            json!({"responseMimeType": "application/json", "responseJsonSchema": given}),
        )
        .unwrap();
        assert_eq!(
            r.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "Weather_report".into(),
                schema: given,
                strict: false
            })
        );

        // An enum answered as plain text has no neutral form.
        let r = with_config(json!({"responseMimeType": "text/x.enum",
            "responseSchema": {"type": "STRING", "enum": ["yes", "no"]}}))
        .unwrap();
        assert_eq!(r.response_format, None);
        assert_eq!(
            extra_keys(&r),
            [
                "generationConfig.responseMimeType",
                "generationConfig.responseSchema"
            ]
        );
    }

    #[test]
    fn schema_conversion_details() {
        let schema = json!({
            "type": "OBJECT", "nullable": true, "additionalProperties": false,
            "properties": {
                "n": {"type": "INTEGER", "format": "enum", "enum": ["101", "201"]},
                "u": {"any_of": [{"type": "STRING"}, {"type": "NUMBER"}], "nullable": true},
                "x": {"type": "ARRAY", "items": {"type": "NUMBER", "example": 1.5, "maximum": "9.5"}, "max_items": "3"},
                "z": {"type": "TYPE_UNSPECIFIED", "default": 4}
            }
        });
        assert_eq!(
            openapi_to_json_schema(&schema, "p", 0).unwrap(),
            json!({
                "type": ["object", "null"], "additionalProperties": false,
                "properties": {
                    "n": {"type": "integer", "enum": [101, 201]},
                    "u": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]},
                    "x": {"type": "array", "items": {"type": "number", "examples": [1.5], "maximum": 9.5}, "maxItems": 3},
                    "z": {"default": 4}
                }
            })
        );
        let mut deep = json!({"type": "STRING"});
        for _ in 0..70 {
            deep = json!({"type": "ARRAY", "items": deep});
        }
        let e = openapi_to_json_schema(&deep, "p", 0).unwrap_err();
        assert!(e.param().is_some_and(|p| p.starts_with("p.items.items")));
        for (bad, param) in [
            (json!({"type": 1}), "p.type"),
            (json!({"enum": [1]}), "p.enum[0]"),
            (json!({"minItems": -1}), "p.minItems"),
            (json!({"properties": []}), "p.properties"),
            (json!({"anyOf": {}}), "p.anyOf"),
            (json!({"items": {"type": "LIST"}}), "p.items.type"),
            (json!("STRING"), "p"),
        ] {
            let e = openapi_to_json_schema(&bad, "p", 0).unwrap_err();
            assert_eq!(e.param(), Some(param), "{bad}");
        }
    }

    #[test]
    fn unrepresentable_parts_and_tools_go_to_extra() {
        let r = decode(&json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Look at these."},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                    {"fileData": {"mimeType": "video/mp4", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
                    {"inline_data": {"mime_type": "image/jpeg", "data": "/9j/"}, "videoMetadata": {"fps": 1}}
                ]},
                {"role": "model", "parts": [
                    {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
                    {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1\n"}},
                    {"text": "It printed 1."}
                ]},
                {"role": "user", "parts": [{"text": "thanks"}]}
            ],
            "tools": [{"codeExecution": {}, "url_context": {}, "functionDeclarations": [
                {"name": "f", "behavior": "NON_BLOCKING", "response": {"type": "STRING"}}
            ]}],
            "toolConfig": {"retrievalConfig": {"languageCode": "en"}},
            "cachedContent": "cachedContents/abc",
            "labels": {"team": "x"}
        }))
        .unwrap();
        assert_eq!(
            extra_keys(&r),
            [
                "cachedContent",
                "contents.parts.codeExecutionResult",
                "contents.parts.executableCode",
                "contents.parts.fileData",
                "contents.parts.inlineData",
                "contents.parts.videoMetadata",
                "labels",
                "toolConfig.retrievalConfig",
                "tools.codeExecution",
                "tools.functionDeclarations.behavior",
                "tools.functionDeclarations.response",
                "tools.urlContext",
            ]
        );
        assert_eq!(
            r.messages[0].content,
            vec![
                Part::Text("Look at these.".into()),
                Part::Image(ImageSource::Url("https://example.com/cat.png".into())),
                Part::Image(ImageSource::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/".into()
                }),
            ]
        );
        assert_eq!(r.messages[1].joined_text(), "It printed 1.");
        let (_, drops) = openai::encode_request(&r);
        assert!(drops.contains(&crate::formats::neutral::Drop::dropped(
            "tools.codeExecution"
        )));
    }

    #[test]
    fn every_refusal_names_its_field() {
        let part = |p: Value| json!({"contents": [{"role": "user", "parts": [p]}]});
        let model_part = |p: Value| json!({"contents": [{"role": "model", "parts": [p]}]});
        let declare =
            |d: Value| json!({"contents": hello(), "tools": [{"functionDeclarations": [d]}]});
        let config = |c: Value| json!({"contents": hello(), "generationConfig": c});
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), "contents"),
            (json!({"contents": []}), "contents"),
            (json!({"contents": "hi"}), "contents"),
            (json!({"contents": ["hi"]}), "contents[0]"),
            (
                json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
                "contents[0].role",
            ),
            (json!({"contents": [{"role": "user"}]}), "contents[0].parts"),
            (
                json!({"contents": [{"role": "user", "parts": []}]}),
                "contents[0].parts",
            ),
            (
                json!({"contents": [{"parts": [{"text": "a"}]}, {"parts": [{}]}]}),
                "contents[1].parts[0]",
            ),
            (
                json!({"contents": [{"parts": [{"text": "a"}]}, {"parts": ["a"]}]}),
                "contents[1].parts[0]",
            ),
            (
                part(json!({"text": "a", "inlineData": {"mimeType": "image/png", "data": "AA"}})),
                "contents[0].parts[0]",
            ),
            (part(json!({"text": 5})), "contents[0].parts[0].text"),
            (
                part(json!({"text": "a", "thought": "yes"})),
                "contents[0].parts[0].thought",
            ),
            (
                part(json!({"inlineData": {"mimeType": "image/png"}})),
                "contents[0].parts[0].inlineData.data",
            ),
            (
                part(json!({"inlineData": "AA"})),
                "contents[0].parts[0].inlineData",
            ),
            (
                part(json!({"fileData": {"mimeType": "image/png"}})),
                "contents[0].parts[0].fileData.fileUri",
            ),
            (
                part(json!({"functionCall": {"name": "f"}})),
                "contents[0].parts[0].functionCall",
            ),
            (
                model_part(json!({"functionCall": {"args": {}}})),
                "contents[0].parts[0].functionCall.name",
            ),
            (
                model_part(json!({"functionCall": {"name": "f", "args": "{}"}})),
                "contents[0].parts[0].functionCall.args",
            ),
            (
                model_part(json!({"functionResponse": {"name": "f", "response": {}}})),
                "contents[0].parts[0].functionResponse",
            ),
            (
                part(json!({"functionResponse": {"name": "f"}})),
                "contents[0].parts[0].functionResponse.response",
            ),
            (
                part(json!({"functionResponse": {"name": "f", "response": "ok"}})),
                "contents[0].parts[0].functionResponse.response",
            ),
            (
                part(json!({"functionResponse": {"name": "f", "response": {}, "parts": {}}})),
                "contents[0].parts[0].functionResponse.parts",
            ),
            (
                json!({"contents": hello(), "systemInstruction": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]}}),
                "systemInstruction.parts[0]",
            ),
            (
                json!({"contents": hello(), "systemInstruction": 7}),
                "systemInstruction",
            ),
            (json!({"contents": hello(), "tools": "x"}), "tools"),
            (
                json!({"contents": hello(), "tools": [{"functionDeclarations": {}}]}),
                "tools[0].functionDeclarations",
            ),
            (
                declare(json!({"description": "no name"})),
                "tools[0].functionDeclarations[0].name",
            ),
            (
                declare(json!({"name": "1bad"})),
                "tools[0].functionDeclarations[0].name",
            ),
            (
                declare(
                    json!({"name": "f", "parameters": {"type": "OBJECT"}, "parametersJsonSchema": {}}),
                ),
                "tools[0].functionDeclarations[0].parametersJsonSchema",
            ),
            (
                declare(
                    json!({"name": "f", "parameters": {"type": "OBJECT", "properties": {"x": {"type": "FOO"}}}}),
                ),
                "tools[0].functionDeclarations[0].parameters.properties.x.type",
            ),
            (
                declare(json!({"name": "f", "parametersJsonSchema": "{}"})),
                "tools[0].functionDeclarations[0].parametersJsonSchema",
            ),
            (json!({"contents": hello(), "toolConfig": []}), "toolConfig"),
            (
                json!({"contents": hello(), "toolConfig": {"functionCallingConfig": {"allowedFunctionNames": [1]}}}),
                "toolConfig.functionCallingConfig.allowedFunctionNames[0]",
            ),
            (
                json!({"contents": hello(), "generationConfig": []}),
                "generationConfig",
            ),
            (
                config(json!({"temperature": 3})),
                "generationConfig.temperature",
            ),
            (config(json!({"topP": "high"})), "generationConfig.topP"),
            (config(json!({"topK": 0})), "generationConfig.topK"),
            (
                config(json!({"maxOutputTokens": 0})),
                "generationConfig.maxOutputTokens",
            ),
            (
                config(json!({"max_output_tokens": 1.5})),
                "generationConfig.maxOutputTokens",
            ),
            (
                config(json!({"candidateCount": 0})),
                "generationConfig.candidateCount",
            ),
            (
                config(json!({"seed": 1_i64 << 40})),
                "generationConfig.seed",
            ),
            (
                config(json!({"presencePenalty": 9})),
                "generationConfig.presencePenalty",
            ),
            (config(json!({"logprobs": 50})), "generationConfig.logprobs"),
            (
                config(json!({"responseLogprobs": 1})),
                "generationConfig.responseLogprobs",
            ),
            (
                config(json!({"stopSequences": ["a", "b", "c", "d", "e", "f"]})),
                "generationConfig.stopSequences",
            ),
            (
                config(json!({"stopSequences": [1]})),
                "generationConfig.stopSequences[0]",
            ),
            (
                config(json!({"stopSequences": "x"})),
                "generationConfig.stopSequences",
            ),
            (
                config(json!({"responseMimeType": "text/html"})),
                "generationConfig.responseMimeType",
            ),
            (
                config(json!({"responseSchema": {"type": "STRING"}})),
                "generationConfig.responseMimeType",
            ),
            (
                config(
                    json!({"responseMimeType": "application/json", "responseSchema": {"type": "STRING"}, "responseJsonSchema": {"type": "string"}}),
                ),
                "generationConfig.responseJsonSchema",
            ),
            (
                config(
                    json!({"responseMimeType": "application/json", "responseSchema": {"type": "STRING", "nullable": "yes"}}),
                ),
                "generationConfig.responseSchema.nullable",
            ),
            (
                config(json!({"responseMimeType": "application/json", "responseJsonSchema": true})),
                "generationConfig.responseJsonSchema",
            ),
            (
                config(json!({"thinkingConfig": 1})),
                "generationConfig.thinkingConfig",
            ),
            (
                json!({"contents": hello(), "safetySettings": {}}),
                "safetySettings",
            ),
            (
                json!({"contents": hello(), "cachedContent": 1}),
                "cachedContent",
            ),
            (json!({"contents": hello(), "labels": []}), "labels"),
        ];
        for (body, param) in cases {
            let err = decode(&body).unwrap_err();
            assert_eq!(err.param(), Some(param), "{body}");
            assert_eq!(err.status(), 400, "{body}");
            let (status, wire) = error_body(&err);
            assert_eq!(status, 400);
            assert_eq!(wire["error"]["status"], "INVALID_ARGUMENT");
            assert_eq!(
                wire["error"]["details"][0]["fieldViolations"][0]["field"],
                param
            );
        }
        for bad in [&b"{"[..], b"[]", b"\"contents\""] {
            let err = decode_request("m", bad).unwrap_err();
            assert!(matches!(err, RelayError::InvalidJson { .. }), "{err:?}");
        }
        let err =
            decode_request("models/", br#"{"contents":[{"parts":[{"text":"a"}]}]}"#).unwrap_err();
        assert_eq!(err.param(), Some("model"));
    }

    #[test]
    fn count_tokens_bodies() {
        let r = decode_count_tokens(
            "gemini-2.5-flash",
            json!({"contents": hello()}).to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.messages, vec![Message::text(Role::User, "hi")]);
        let inner = json!({"generateContentRequest": {
            "model": "models/gemini-2.5-flash", "contents": hello(),
            "systemInstruction": "Be brief.", "generationConfig": {"temperature": 0.5}
        }});
        let r = decode_count_tokens("gemini-2.5-flash", inner.to_string().as_bytes()).unwrap();
        assert_eq!(
            (r.system.clone(), r.temperature),
            (vec!["Be brief.".to_string()], Some(0.5))
        );
        assert!(r.extra.is_empty());
        for (body, param) in [
            (json!({}), "contents"),
            (
                json!({"contents": hello(), "generateContentRequest": {"contents": hello()}}),
                "generateContentRequest",
            ),
            (
                json!({"generateContentRequest": []}),
                "generateContentRequest",
            ),
            (
                json!({"generateContentRequest": {}}),
                "generateContentRequest.contents",
            ),
            (
                json!({"generateContentRequest": {"contents": [{"parts": [{}]}]}}),
                "generateContentRequest.contents[0].parts[0]",
            ),
        ] {
            let e = decode_count_tokens("m", body.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.param(), Some(param), "{body}");
        }
        assert_eq!(
            count_tokens_response(31),
            json!({"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]})
        );
    }

    #[test]
    fn models_in_gemini_shape() {
        assert_eq!(
            model_entry("gpt-4o"),
            json!({
                "name": "models/gpt-4o", "baseModelId": "gpt-4o", "version": "001",
                "displayName": "gpt-4o", "description": "gpt-4o, served by edgerelay.",
                "supportedGenerationMethods": ["generateContent", "countTokens"]
            })
        );
        assert_eq!(model_entry("models/x")["name"], "models/x");
        assert_eq!(
            models_list(&[("a", 1), ("b", 2)]),
            json!({"models": [model_entry("a"), model_entry("b")]})
        );
        assert_eq!(models_list(&[]), json!({"models": []}));
    }

    // ---- replies ----

    fn fixture(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("fixture is JSON")
    }

    #[test]
    fn replies_in_gemini_shape() {
        assert_eq!(
            encode_response(&text_reply(), "public-model", "resp-1"),
            fixture(REPLY_TEXT)
        );
        assert_eq!(
            encode_response(&function_call_reply(), "public-model", "resp-1"),
            fixture(REPLY_FUNCTION_CALL)
        );
        assert_eq!(
            encode_response(&thinking_reply(), "public-model", "resp-1"),
            fixture(REPLY_THINKING)
        );
        // Nothing said (a filtered reply) is still one empty text part.
        let mut empty = response(
            Message::new(Role::Assistant, vec![Part::Text(String::new())]),
            FinishReason::ContentFilter,
            Usage::new(9, 0),
        );
        empty.usage = None;
        let body = encode_response(&empty, "m", "r");
        assert_eq!(
            body["candidates"][0]["content"]["parts"],
            json!([{"text": ""}])
        );
        assert_eq!(body["candidates"][0]["finishReason"], "SAFETY");
        assert!(body.get("usageMetadata").is_none());
    }

    #[test]
    fn finish_reasons_and_call_arguments() {
        for (reason, name) in [
            (FinishReason::Stop, "STOP"),
            (FinishReason::StopSequence, "STOP"),
            (FinishReason::ToolCalls, "STOP"),
            (FinishReason::Length, "MAX_TOKENS"),
            (FinishReason::ContentFilter, "SAFETY"),
            (FinishReason::Error, "OTHER"),
        ] {
            assert_eq!(finish_reason_name(reason), name);
        }
        let part = |arguments: &str| function_call_part(&call("", "f", arguments));
        assert_eq!(part(""), json!({"functionCall": {"name": "f", "args": {}}}));
        assert_eq!(
            part("[1,2]")["functionCall"]["args"],
            json!({"arguments": [1, 2]})
        );
        assert_eq!(
            part("{\"a\":")["functionCall"]["args"],
            json!({"arguments": "{\"a\":"})
        );
        assert_eq!(part("{\"a\":1}")["functionCall"]["args"], json!({"a": 1}));
    }

    #[test]
    fn usage_counts_thoughts_once() {
        for usage in [
            Usage::from_inclusive(100, 40, 60, 0, 10),
            Usage::from_inclusive(12013, 88, 11243, 0, 73),
            Usage::from_exclusive(21, 12, 1800, 188),
            Usage::new(5, 0),
        ] {
            let m = usage_metadata(&usage);
            let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
            assert_eq!(n("promptTokenCount"), usage.prompt_tokens, "{m}");
            assert_eq!(n("cachedContentTokenCount"), usage.cache_read_tokens, "{m}");
            assert_eq!(n("thoughtsTokenCount"), usage.reasoning_tokens, "{m}");
            assert_eq!(
                n("candidatesTokenCount") + n("thoughtsTokenCount"),
                usage.completion_tokens,
                "{m}"
            );
            assert_eq!(
                n("totalTokenCount"),
                n("promptTokenCount") + n("candidatesTokenCount") + n("thoughtsTokenCount")
            );
            // Read back as a Gemini reply, every count is where it was (Gemini has no count
            // for cache writes; they stay inside the prompt).
            let reply = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
                "usageMetadata": m});
            let back = gemini::decode_response(reply.to_string().as_bytes(), "m", "i", 0)
                .unwrap()
                .usage
                .unwrap();
            assert_eq!(
                back,
                Usage {
                    cache_write_tokens: 0,
                    ..usage
                }
            );
        }
    }

    #[test]
    fn pass_through_replies_are_read_for_usage() {
        for reply in [text_reply(), function_call_reply(), thinking_reply()] {
            let body = encode_response(&reply, "public-model", "resp-1").to_string();
            let back = gemini::decode_response(body.as_bytes(), "m", "i", 0).unwrap();
            assert_eq!(back.usage, reply.usage);
            assert_eq!(back.message.reasoning, reply.message.reasoning);
            assert_eq!(
                back.message.reasoning_signature,
                reply.message.reasoning_signature
            );
            let ids: Vec<&str> = back
                .message
                .tool_calls
                .iter()
                .map(|c| c.id.as_str())
                .collect();
            let sent: Vec<&str> = reply
                .message
                .tool_calls
                .iter()
                .map(|c| c.id.as_str())
                .collect();
            assert_eq!(ids, sent);
        }
    }

    // ---- streams ----

    /// The `data` of each SSE event, parsed.
    fn sse_chunks(wire: &[u8]) -> Vec<Value> {
        let mut parser = crate::formats::sse::SseParser::new();
        let mut events = Vec::new();
        parser.push(wire, &mut events).unwrap();
        parser.finish(&mut events).unwrap();
        events
            .iter()
            .map(|e| serde_json::from_str(&e.data).expect("each event is JSON"))
            .collect()
    }

    fn array_chunks(wire: &[u8]) -> Vec<Value> {
        match serde_json::from_slice(wire).expect("the whole stream is one JSON array") {
            Value::Array(items) => items,
            other => panic!("not an array: {other}"),
        }
    }

    fn parse_chunks(framing: StreamFraming, wire: &[u8]) -> Vec<Value> {
        match framing {
            StreamFraming::Sse => sse_chunks(wire),
            StreamFraming::JsonArray => array_chunks(wire),
        }
    }

    const FRAMINGS: [StreamFraming; 2] = [StreamFraming::Sse, StreamFraming::JsonArray];

    #[test]
    fn streams_match_the_fixtures_in_both_framings() {
        assert_eq!(
            encode_events(StreamFraming::Sse, &text_events()),
            STREAM_TEXT
        );
        assert_eq!(
            encode_events(StreamFraming::Sse, &function_call_events()),
            STREAM_FUNCTION_CALL
        );
        assert_eq!(
            encode_events(StreamFraming::JsonArray, &function_call_events()),
            STREAM_FUNCTION_CALL_ARRAY
        );
        assert!(STREAM_TEXT.ends_with(b"}\r\n\r\n"), "Google's CRLF framing");
        // Both framings carry the same chunks.
        assert_eq!(
            sse_chunks(STREAM_FUNCTION_CALL),
            array_chunks(STREAM_FUNCTION_CALL_ARRAY)
        );
        let last = sse_chunks(STREAM_TEXT).pop().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            last["usageMetadata"],
            json!({"promptTokenCount": 7, "candidatesTokenCount": 10, "totalTokenCount": 17})
        );
    }

    /// The `functionCall` parts of a stream and how many chunks held no other part.
    fn calls_of(chunks: &[Value]) -> Vec<Value> {
        chunks
            .iter()
            .flat_map(|c| {
                all(c, "functionCall")
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn fragmented_arguments_go_out_as_one_call() {
        for framing in FRAMINGS {
            let chunks = parse_chunks(framing, &encode_events(framing, &function_call_events()));
            assert_eq!(
                calls_of(&chunks),
                [
                    json!({"id": "toolu_01A", "name": "get_weather", "args": {"city": "Paris"}}),
                    json!({"id": "toolu_01B", "name": "get_time", "args": {}}),
                ]
            );
            // Only the last chunk finishes, with usage.
            let finishes = chunks
                .iter()
                .filter(|c| !all(c, "finishReason").is_empty())
                .count();
            assert_eq!(finishes, 1);
            assert!(chunks
                .last()
                .is_some_and(|c| c.get("usageMetadata").is_some()));
        }

        // Calls interrupted by text go out before the text; a late fragment is ignored.
        let events = [
            StreamEvent::ToolCallStart {
                index: 0,
                id: "a".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"x\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "1}".into(),
            },
            StreamEvent::TextDelta("done".into()),
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "junk".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "b".into(),
                name: "g".into(),
            },
        ];
        let chunks = sse_chunks(&encode_events(StreamFraming::Sse, &events));
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"id": "a", "name": "f", "args": {"x": 1}}}])
        );
        assert_eq!(
            chunks[1]["candidates"][0]["content"]["parts"],
            json!([{"text": "done"}])
        );
        assert_eq!(
            chunks[2]["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"id": "b", "name": "g", "args": {}}}])
        );
        assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    }

    #[test]
    fn an_empty_stream_is_still_a_reply() {
        for framing in FRAMINGS {
            let chunks = parse_chunks(framing, &encode_events(framing, &[]));
            assert_eq!(chunks.len(), 1);
            assert_eq!(
                chunks[0]["candidates"][0]["content"]["parts"],
                json!([{"text": ""}])
            );
            assert_eq!(chunks[0]["candidates"][0]["finishReason"], "STOP");
        }
        assert_eq!(StreamFraming::from_alt(Some("sse")), StreamFraming::Sse);
        assert_eq!(
            StreamFraming::from_alt(Some("json")),
            StreamFraming::JsonArray
        );
        assert_eq!(StreamFraming::from_alt(None), StreamFraming::JsonArray);
        assert_eq!(StreamFraming::Sse.content_type(), "text/event-stream");
    }

    #[test]
    fn an_upstream_error_ends_the_stream_in_googles_shape() {
        let events = [
            StreamEvent::TextDelta("Once".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "a".into(),
                name: "whole".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{}".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "b".into(),
                name: "cut".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"x\":".into(),
            },
            StreamEvent::Error {
                status: 529,
                message: "Overloaded".into(),
            },
            StreamEvent::TextDelta("more".into()),
        ];
        for framing in FRAMINGS {
            let wire = encode_events(framing, &events);
            assert!(!String::from_utf8_lossy(&wire).contains("more"));
            let chunks = parse_chunks(framing, &wire);
            assert_eq!(chunks.len(), 3);
            assert_eq!(
                calls_of(&chunks),
                [json!({"id": "a", "name": "whole", "args": {}})]
            );
            assert_eq!(
                chunks[2],
                json!({"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}})
            );
            // The Gemini decoder (pass-through's watcher) sees the error.
            let decoded = gemini_decode(&[&wire]);
            assert_eq!(
                decoded.last(),
                Some(&StreamEvent::Error {
                    status: 503,
                    message: "Overloaded".into()
                })
            );
        }
    }

    /// Decodes an upstream stream with `decoder` split as given, feeding each event to a Gemini
    /// encoder as it comes, as the relay's pipe does.
    fn pipe<D>(
        mut decoder: D,
        push: fn(&mut D, &[u8], &mut Vec<StreamEvent>),
        finish: fn(&mut D, &mut Vec<StreamEvent>),
        framing: StreamFraming,
        pieces: &[&[u8]],
    ) -> Vec<u8> {
        let mut encoder = StreamEncoder::new(framing, "resp-1", "public-model");
        let mut out = Vec::new();
        let mut events = Vec::new();
        for piece in pieces {
            push(&mut decoder, piece, &mut events);
            events.drain(..).for_each(|e| encoder.push(&e, &mut out));
        }
        finish(&mut decoder, &mut events);
        events.drain(..).for_each(|e| encoder.push(&e, &mut out));
        encoder.finish(&mut out);
        out
    }

    fn from_openai(framing: StreamFraming, pieces: &[&[u8]]) -> Vec<u8> {
        pipe(
            openai::StreamDecoder::new(),
            |d, c, out| d.push(c, out).unwrap(),
            |d, out| d.finish(out).unwrap(),
            framing,
            pieces,
        )
    }

    fn from_anthropic(framing: StreamFraming, pieces: &[&[u8]]) -> Vec<u8> {
        pipe(
            anthropic::StreamDecoder::new(),
            |d, c, out| d.push(c, out).unwrap(),
            |d, out| d.finish(out).unwrap(),
            framing,
            pieces,
        )
    }

    fn same_at_every_split(
        translate: fn(StreamFraming, &[&[u8]]) -> Vec<u8>,
        framing: StreamFraming,
        upstream: &[u8],
    ) -> Vec<u8> {
        let whole = translate(framing, &[upstream]);
        for at in 0..=upstream.len() {
            let (a, b) = upstream.split_at(at);
            assert_eq!(translate(framing, &[a, b]), whole, "split at byte {at}");
        }
        let singles: Vec<&[u8]> = upstream.chunks(1).collect();
        assert_eq!(translate(framing, &singles), whole, "one byte at a time");
        whole
    }

    #[test]
    fn translated_streams_are_the_same_however_the_upstream_is_split() {
        for framing in FRAMINGS {
            let wire = same_at_every_split(from_openai, framing, OPENAI_STREAM_TOOL_CALLS);
            let chunks = parse_chunks(framing, &wire);
            assert_eq!(
                calls_of(&chunks),
                [
                    json!({"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "args": {"location": "Paris, France"}}),
                    json!({"id": "call_ABTLuDNkY8x4zRaGQ7KVXGxn", "name": "get_weather", "args": {"location": "Bogotá, Colombia"}}),
                ]
            );
            assert_eq!(chunks.len(), 1, "calls and the finish go out together");

            let wire = same_at_every_split(from_anthropic, framing, ANTHROPIC_STREAM_TOOL_USE);
            let chunks = parse_chunks(framing, &wire);
            let texts: Vec<&Value> = chunks.iter().flat_map(|c| all(c, "text")).collect();
            assert_eq!(
                texts,
                [
                    &json!("Okay"),
                    &json!(", let's check the weather for San Francisco, CA:")
                ]
            );
            assert_eq!(
                calls_of(&chunks),
                [
                    json!({"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "args": {"location": "San Francisco, CA", "unit": "fahrenheit"}}),
                    json!({"id": "toolu_01HYrR2nmtZEsBycWqFzVaNi", "name": "get_time", "args": {"timezone": "America/Los_Angeles"}}),
                ]
            );
            let last = chunks.last().unwrap();
            assert_eq!(
                last["usageMetadata"],
                json!({"promptTokenCount": 2520, "cachedContentTokenCount": 2048,
                    "candidatesTokenCount": 89, "totalTokenCount": 2609})
            );
        }
    }

    fn gemini_decode(pieces: &[&[u8]]) -> Vec<StreamEvent> {
        let mut decoder = gemini::StreamDecoder::new("public-model", "resp-1");
        let mut out = Vec::new();
        for piece in pieces {
            decoder.push(piece, &mut out).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        out
    }

    fn gemini_decode_any_split(wire: &[u8]) -> Vec<StreamEvent> {
        let whole = gemini_decode(&[wire]);
        for at in 0..=wire.len() {
            let (a, b) = wire.split_at(at);
            assert_eq!(gemini_decode(&[a, b]), whole, "split at byte {at}");
        }
        whole
    }

    #[test]
    fn pass_through_streams_are_read_for_usage_in_both_framings() {
        let sent = Usage::from_inclusive(175, 42, 100, 0, 12);
        for framing in FRAMINGS {
            let wire = encode_events(framing, &function_call_events());
            let events = gemini_decode_any_split(&wire);
            let usage = events.iter().rev().find_map(|e| match e {
                StreamEvent::Usage(u) => Some(*u),
                _ => None,
            });
            assert_eq!(usage, Some(sent));
            assert!(events.contains(&StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_01A".into(),
                name: "get_weather".into()
            }));
            assert!(events.contains(&StreamEvent::ToolCallDelta {
                index: 0,
                arguments: r#"{"city":"Paris"}"#.into()
            }));
            assert!(events.contains(&StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None
            }));
            assert!(events.contains(&StreamEvent::ReasoningSignature("c2lnbmF0dXJl".into())));
        }
    }

    // ---- errors ----

    #[test]
    fn relay_errors_in_googles_shape() {
        use RelayError::*;
        let cases: Vec<(RelayError, u16, &str)> = vec![
            (InvalidJson { detail: "x".into() }, 400, "INVALID_ARGUMENT"),
            (RelayError::missing("contents"), 400, "INVALID_ARGUMENT"),
            (
                RelayError::invalid_type("tools", "an array"),
                400,
                "INVALID_ARGUMENT",
            ),
            (
                RelayError::invalid_value("contents[1].parts[0]", "bad"),
                400,
                "INVALID_ARGUMENT",
            ),
            (
                UnsupportedEndpoint {
                    endpoint: "embeddings",
                    provider: "mock",
                },
                400,
                "INVALID_ARGUMENT",
            ),
            (
                FieldNotSupported {
                    field: "seed".into(),
                    provider: "anthropic",
                },
                400,
                "INVALID_ARGUMENT",
            ),
            (RequestTooLarge { limit: 10 }, 413, "INVALID_ARGUMENT"),
            (MissingApiKey, 401, "UNAUTHENTICATED"),
            (InvalidApiKey, 401, "UNAUTHENTICATED"),
            (KeyRevoked, 401, "UNAUTHENTICATED"),
            (KeyExpired, 401, "UNAUTHENTICATED"),
            (InvalidAdminToken, 401, "UNAUTHENTICATED"),
            (TenantDisabled, 403, "PERMISSION_DENIED"),
            (
                AccessDenied {
                    reason: "from this address",
                },
                403,
                "PERMISSION_DENIED",
            ),
            (Forbidden, 403, "PERMISSION_DENIED"),
            (
                RegionNotServed {
                    model: "m".into(),
                    jurisdiction: "eu".into(),
                },
                403,
                "PERMISSION_DENIED",
            ),
            (ModelNotFound { model: "m".into() }, 404, "NOT_FOUND"),
            (
                NotFound {
                    what: "Route".into(),
                },
                404,
                "NOT_FOUND",
            ),
            (
                MethodNotAllowed {
                    allowed: vec!["POST".into()],
                },
                405,
                "UNIMPLEMENTED",
            ),
            (
                Conflict {
                    message: "in use".into(),
                },
                409,
                "ABORTED",
            ),
            (
                LimitExceeded {
                    limit: "requests per minute".into(),
                    scope: "key",
                    quota: false,
                    retry_after_ms: Some(1500),
                    rate_headers: Vec::new(),
                },
                429,
                "RESOURCE_EXHAUSTED",
            ),
            (
                BudgetExceeded {
                    period: "month",
                    retry_after_ms: None,
                },
                429,
                "RESOURCE_EXHAUSTED",
            ),
            (
                UpstreamRateLimited {
                    retry_after: Some("37".into()),
                },
                429,
                "RESOURCE_EXHAUSTED",
            ),
            (
                UpstreamInvalidRequest {
                    status: 400,
                    message: "bad".into(),
                    param: None,
                },
                400,
                "INVALID_ARGUMENT",
            ),
            (
                UpstreamInvalidRequest {
                    status: 422,
                    message: "bad".into(),
                    param: None,
                },
                422,
                "INVALID_ARGUMENT",
            ),
            (
                UpstreamInvalidRequest {
                    status: 404,
                    message: "no".into(),
                    param: None,
                },
                404,
                "NOT_FOUND",
            ),
            (
                UpstreamInvalidRequest {
                    status: 529,
                    message: "Overloaded".into(),
                    param: None,
                },
                503,
                "UNAVAILABLE",
            ),
            (
                UpstreamInvalidRequest {
                    status: 418,
                    message: "teapot".into(),
                    param: None,
                },
                418,
                "FAILED_PRECONDITION",
            ),
            (
                Internal {
                    detail: "secret detail".into(),
                },
                500,
                "INTERNAL",
            ),
            (UpstreamAuthFailed, 502, "INTERNAL"),
            (UpstreamError { status: 500 }, 502, "INTERNAL"),
            (
                UpstreamBadResponse {
                    detail: "secret body".into(),
                },
                502,
                "INTERNAL",
            ),
            (UpstreamUnreachable, 502, "UNAVAILABLE"),
            (UpstreamStreamBroken, 502, "UNAVAILABLE"),
            (
                ChannelUnavailable {
                    reason: "disabled".into(),
                },
                503,
                "UNAVAILABLE",
            ),
            (UpstreamOverloaded { retry_after: None }, 503, "UNAVAILABLE"),
            (UpstreamTimeout { after_ms: 5 }, 504, "DEADLINE_EXCEEDED"),
        ];
        for (err, code, status) in cases {
            let (http, body) = error_body(&err);
            assert_eq!(
                (http, body["error"]["status"].as_str()),
                (code, Some(status)),
                "{err:?}"
            );
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["message"], json!(err.message()));
            assert!(!body.to_string().contains("secret"), "{body}");
        }

        let (_, body) = error_body(&RelayError::invalid_value("contents[1].parts[0]", "bad"));
        assert_eq!(
            body["error"]["details"],
            json!([{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "contents[1].parts[0]",
                    "description": "Invalid value for 'contents[1].parts[0]': bad"}]}])
        );
        let (_, body) = error_body(&UpstreamRateLimited {
            retry_after: Some("37".into()),
        });
        assert_eq!(
            body["error"]["details"],
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}])
        );
        let (_, body) = error_body(&MissingApiKey);
        assert!(body["error"].get("details").is_none());
        // What a Gemini client reads back from it is what was meant.
        let (_, body) = error_body(&UpstreamOverloaded { retry_after: None });
        let (message, status) = gemini::parse_error_body(body.to_string().as_bytes());
        assert_eq!(status.as_deref(), Some("UNAVAILABLE"));
        assert_eq!(
            message,
            Some(UpstreamOverloaded { retry_after: None }.message())
        );
    }
}
