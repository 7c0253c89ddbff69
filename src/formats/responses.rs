//! OpenAI's Responses API (`POST /v1/responses`) as an inbound format, and the watcher of an
//! OpenAI Responses upstream. It owns:
//! - the request: a client's body validated as OpenAI validates it ([`decode_request`]), kept
//!   raw for a Responses upstream and converted to the neutral model for any other
//!   ([`ResponsesRequest::to_neutral`]);
//! - the reply: the neutral reply as a Response object ([`encode_response`]) and the neutral
//!   stream as Responses SSE events ([`StreamEncoder`]);
//! - pass-through: usage and the final Response object read off an upstream's reply and stream
//!   ([`summarize_reply`], [`StreamPassThrough`]) without touching their bytes;
//! - the pure half of stored responses: what a stored response contributes to a continuation
//!   ([`conversation_items`]) and the `GET /v1/responses/{id}/input_items` list
//!   ([`input_items_list`]).
//!
//! Ids and clocks are inputs: output item ids are derived from the response id the caller
//! chose, so nothing here reads a clock or a random source.
//!
//! Reasoning state crosses this format as `encrypted_content`. OpenAI's own is opaque to every
//! other provider, so it stays in `extra` (reported dropped) rather than in the neutral
//! `reasoning_signature`, which Anthropic, Bedrock and Gemini would be handed. A signature the
//! relay got from such an upstream is given to the client as `encrypted_content` with
//! [`RELAY_SIGNATURE_PREFIX`] in front, so that when the client sends it back (Codex does,
//! with `store: false`) it is recognised and restored as the signature it was.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::formats::anthropic::add_thinking;
use crate::formats::neutral::{
    ChatRequest, ChatResponse, Drop, Drops, FinishReason, Message, Part, Reasoning, ResponseFormat,
    Role, StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use crate::formats::openai::{image_source, ReplySummary};
use crate::formats::sse::{self, SseError, SseEvent, SseParser};

/// Marks an `encrypted_content` that carries another provider's reasoning signature.
pub const RELAY_SIGNATURE_PREFIX: &str = "edgerelay-signature:";

// ---- the request -----------------------------------------------------------------------------

/// A validated Responses request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    /// The client's body as sent, for an OpenAI Responses upstream.
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// Whether the response is to be kept for `previous_response_id` and retrieval (OpenAI's
    /// default is to keep it).
    pub store: bool,
    pub background: bool,
    pub previous_response_id: Option<String>,
    pub max_output_tokens: Option<u64>,
    /// `input` as items: a string became one user message, messages without `type` got it,
    /// string contents became one text part. Ids are the client's where it gave them.
    pub input_items: Vec<Value>,
    /// Bytes of prompt text (instructions, input, tool schemas), for an estimate when the
    /// upstream reports no usage.
    pub prompt_bytes: usize,
}

/// Item types OpenAI accepts in `input` that the neutral model has no place for (built-in
/// tool calls and their outputs, compaction, …): accepted, passed to a Responses upstream,
/// reported dropped to any other.
const OTHER_ITEM_TYPES: &[&str] = &[
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "web_search_call",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "shell_call",
    "shell_call_output",
    "apply_patch_call",
    "apply_patch_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call",
    "custom_tool_call_output",
    "tool_search_call",
    "tool_search_output",
    "additional_tools",
    "compaction",
    "compaction_trigger",
    "program",
    "program_output",
];

/// Tool types besides `function`: OpenAI runs them (or, for `custom`, they take free text),
/// so only a Responses upstream can be given them.
const BUILT_IN_TOOLS: &[&str] = &[
    "file_search",
    "computer",
    "computer_use",
    "computer_use_preview",
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "mcp",
    "code_interpreter",
    "programmatic_tool_calling",
    "image_generation",
    "local_shell",
    "shell",
    "custom",
    "namespace",
    "tool_search",
    "apply_patch",
];

/// `tool_choice.type` values that force a built-in tool.
const BUILT_IN_CHOICES: &[&str] = &[
    "file_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "computer",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "code_interpreter",
    "apply_patch",
    "shell",
    "programmatic_tool_calling",
];

const INCLUDABLE: &[&str] = &[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
];

const EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh", "max"];
const SUMMARIES: &[&str] = &["auto", "concise", "detailed"];
const IMAGE_DETAILS: &[&str] = &["auto", "low", "high", "original"];

fn one_of(path: &str, value: &str, allowed: &[&str]) -> Result<(), RelayError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    Err(RelayError::invalid_value(
        path,
        format!("'{value}' is not one of {}", list.join(", ")),
    ))
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(RelayError::missing(path)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RelayError::invalid_type(path, "a string")),
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RelayError::invalid_type(path, "a string")),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RelayError::invalid_type(path, "a boolean")),
    }
}

fn opt_u64(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| RelayError::invalid_type(key, "a non-negative integer")),
        Some(_) => Err(RelayError::invalid_type(key, "an integer")),
    }
}

fn check_range(obj: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<(), RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            _ => Err(RelayError::invalid_value(
                key,
                format!("must be between {lo} and {hi}"),
            )),
        },
        Some(_) => Err(RelayError::invalid_type(key, "a number")),
    }
}

fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(RelayError::invalid_type(path, "an object")),
    }
}

fn as_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, RelayError> {
    value
        .as_object()
        .ok_or_else(|| RelayError::invalid_type(path, "an object"))
}

/// OpenAI's rule for function and schema names: `^[a-zA-Z0-9_-]{1,64}$`.
fn check_name(name: &str, path: &str) -> Result<(), RelayError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RelayError::invalid_value(
            path,
            "must be 1 to 64 letters, digits, underscores or dashes",
        ))
    }
}

/// Responses request body → [`ResponsesRequest`]. Errors name the field (`input[3].type`,
/// `tools[0].name`); bad JSON is [`RelayError::InvalidJson`]. Unknown top-level fields are
/// kept in the body: an OpenAI upstream may know them.
pub fn decode_request(bytes: &[u8]) -> Result<ResponsesRequest, RelayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| RelayError::InvalidJson {
        detail: e.to_string(),
    })?;
    let Value::Object(body) = value else {
        return Err(RelayError::InvalidJson {
            detail: "the body must be a JSON object".into(),
        });
    };
    let model = req_str(&body, "model", "model")?;
    if model.trim().is_empty() {
        return Err(RelayError::invalid_value("model", "must not be empty"));
    }
    let stream = opt_bool(&body, "stream", "stream")?.unwrap_or(false);
    let store = opt_bool(&body, "store", "store")?.unwrap_or(true);
    let background = opt_bool(&body, "background", "background")?.unwrap_or(false);
    if background && !store {
        return Err(RelayError::invalid_value(
            "background",
            "background responses must be stored ('store' cannot be false)",
        ));
    }
    opt_bool(&body, "parallel_tool_calls", "parallel_tool_calls")?;
    let previous_response_id =
        opt_str(&body, "previous_response_id", "previous_response_id")?.map(str::to_string);
    if previous_response_id.is_some() && body.get("conversation").is_some_and(|c| !c.is_null()) {
        return Err(RelayError::invalid_value(
            "previous_response_id",
            "cannot be used together with 'conversation'",
        ));
    }
    let instructions = opt_str(&body, "instructions", "instructions")?;
    for key in [
        "user",
        "prompt_cache_key",
        "safety_identifier",
        "service_tier",
    ] {
        opt_str(&body, key, key)?;
    }
    let max_output_tokens = opt_u64(&body, "max_output_tokens")?;
    if max_output_tokens.is_some_and(|n| n < 16) {
        return Err(RelayError::invalid_value(
            "max_output_tokens",
            "must be at least 16",
        ));
    }
    opt_u64(&body, "max_tool_calls")?;
    if opt_u64(&body, "top_logprobs")?.is_some_and(|n| n > 20) {
        return Err(RelayError::invalid_value(
            "top_logprobs",
            "must be between 0 and 20",
        ));
    }
    check_range(&body, "temperature", 0.0, 2.0)?;
    check_range(&body, "top_p", 0.0, 1.0)?;
    if let Some(truncation) = opt_str(&body, "truncation", "truncation")? {
        one_of("truncation", truncation, &["auto", "disabled"])?;
    }
    check_metadata(&body)?;
    check_include(&body)?;
    check_reasoning(&body)?;
    check_text(&body)?;
    let tool_bytes = check_tools(&body)?;
    check_tool_choice(&body)?;
    let (input_items, input_bytes) = decode_input(body.get("input"))?;
    Ok(ResponsesRequest {
        model: model.to_string(),
        stream,
        store,
        background,
        previous_response_id,
        max_output_tokens,
        input_items,
        prompt_bytes: instructions.map_or(0, str::len) + input_bytes + tool_bytes,
        body,
    })
}

/// OpenAI's limits: 16 pairs, keys up to 64 characters, string values up to 512.
fn check_metadata(body: &Map<String, Value>) -> Result<(), RelayError> {
    let Some(metadata) = opt_object(body, "metadata", "metadata")? else {
        return Ok(());
    };
    if metadata.len() > 16 {
        return Err(RelayError::invalid_value(
            "metadata",
            "must have at most 16 keys",
        ));
    }
    for (key, value) in metadata {
        let path = format!("metadata.{key}");
        if key.chars().count() > 64 {
            return Err(RelayError::invalid_value(
                "metadata",
                "keys must be at most 64 characters",
            ));
        }
        match value {
            Value::String(s) if s.chars().count() <= 512 => {}
            Value::String(_) => {
                return Err(RelayError::invalid_value(
                    &path,
                    "must be at most 512 characters",
                ))
            }
            _ => return Err(RelayError::invalid_type(&path, "a string")),
        }
    }
    Ok(())
}

fn check_include(body: &Map<String, Value>) -> Result<(), RelayError> {
    match body.get("include") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(entries)) => {
            for (i, entry) in entries.iter().enumerate() {
                let path = format!("include[{i}]");
                match entry {
                    Value::String(s) => one_of(&path, s, INCLUDABLE)?,
                    _ => return Err(RelayError::invalid_type(&path, "a string")),
                }
            }
            Ok(())
        }
        Some(_) => Err(RelayError::invalid_type("include", "an array of strings")),
    }
}

fn check_reasoning(body: &Map<String, Value>) -> Result<(), RelayError> {
    let Some(reasoning) = opt_object(body, "reasoning", "reasoning")? else {
        return Ok(());
    };
    if let Some(effort) = opt_str(reasoning, "effort", "reasoning.effort")? {
        one_of("reasoning.effort", effort, EFFORTS)?;
    }
    for key in ["summary", "generate_summary"] {
        let path = format!("reasoning.{key}");
        if let Some(summary) = opt_str(reasoning, key, &path)? {
            one_of(&path, summary, SUMMARIES)?;
        }
    }
    Ok(())
}

fn check_text(body: &Map<String, Value>) -> Result<(), RelayError> {
    let Some(text) = opt_object(body, "text", "text")? else {
        return Ok(());
    };
    if let Some(verbosity) = opt_str(text, "verbosity", "text.verbosity")? {
        one_of("text.verbosity", verbosity, &["low", "medium", "high"])?;
    }
    let Some(format) = opt_object(text, "format", "text.format")? else {
        return Ok(());
    };
    let kind = req_str(format, "type", "text.format.type")?;
    one_of(
        "text.format.type",
        kind,
        &["text", "json_object", "json_schema"],
    )?;
    if kind == "json_schema" {
        check_name(
            req_str(format, "name", "text.format.name")?,
            "text.format.name",
        )?;
        match format.get("schema") {
            None | Some(Value::Null) => return Err(RelayError::missing("text.format.schema")),
            Some(Value::Object(_)) => {}
            Some(_) => return Err(RelayError::invalid_type("text.format.schema", "an object")),
        }
        opt_bool(format, "strict", "text.format.strict")?;
        opt_str(format, "description", "text.format.description")?;
    }
    Ok(())
}

/// Checks `tools` and returns the bytes of their names, descriptions and schemas.
fn check_tools(body: &Map<String, Value>) -> Result<usize, RelayError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(RelayError::invalid_type("tools", "an array")),
    };
    let mut bytes = 0;
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let field = |name: &str| format!("{path}.{name}");
        let t = as_object(tool, &path)?;
        let kind = req_str(t, "type", &field("type"))?;
        match kind {
            "function" => {
                let name = req_str(t, "name", &field("name"))?;
                check_name(name, &field("name"))?;
                match t.get("parameters") {
                    None | Some(Value::Null) => {}
                    Some(p @ Value::Object(_)) => bytes += p.to_string().len(),
                    Some(_) => {
                        return Err(RelayError::invalid_type(&field("parameters"), "an object"))
                    }
                }
                opt_bool(t, "strict", &field("strict"))?;
                let description = opt_str(t, "description", &field("description"))?;
                bytes += name.len() + description.map_or(0, str::len);
            }
            "custom" => {
                req_str(t, "name", &field("name"))?;
            }
            "mcp" => {
                req_str(t, "server_label", &field("server_label"))?;
            }
            other => one_of(&field("type"), other, BUILT_IN_TOOLS)?,
        }
    }
    Ok(bytes)
}

fn check_tool_choice(body: &Map<String, Value>) -> Result<(), RelayError> {
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => one_of("tool_choice", s, &["auto", "none", "required"]),
        Some(Value::Object(choice)) => {
            let kind = req_str(choice, "type", "tool_choice.type")?;
            match kind {
                "function" | "custom" => {
                    req_str(choice, "name", "tool_choice.name")?;
                }
                "mcp" => {
                    req_str(choice, "server_label", "tool_choice.server_label")?;
                }
                "allowed_tools" => {
                    one_of(
                        "tool_choice.mode",
                        req_str(choice, "mode", "tool_choice.mode")?,
                        &["auto", "required"],
                    )?;
                    match choice.get("tools") {
                        Some(Value::Array(_)) => {}
                        None | Some(Value::Null) => {
                            return Err(RelayError::missing("tool_choice.tools"))
                        }
                        Some(_) => {
                            return Err(RelayError::invalid_type("tool_choice.tools", "an array"))
                        }
                    }
                }
                other => {
                    let mut allowed = vec!["function", "custom", "mcp", "allowed_tools"];
                    allowed.extend_from_slice(BUILT_IN_CHOICES);
                    one_of("tool_choice.type", other, &allowed)?;
                }
            }
            Ok(())
        }
        Some(_) => Err(RelayError::invalid_type(
            "tool_choice",
            "a string or an object",
        )),
    }
}

fn text_part(kind: &str, text: &str) -> Value {
    if kind == "output_text" {
        json!({"type": "output_text", "text": text, "annotations": []})
    } else {
        json!({"type": kind, "text": text})
    }
}

/// `input`, normalised to items, and the bytes of text in it.
fn decode_input(input: Option<&Value>) -> Result<(Vec<Value>, usize), RelayError> {
    match input {
        None | Some(Value::Null) => Ok((Vec::new(), 0)),
        Some(Value::String(s)) => Ok((
            vec![
                json!({"type": "message", "role": "user", "content": [text_part("input_text", s)]}),
            ],
            s.len(),
        )),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            let mut bytes = 0;
            for (i, item) in items.iter().enumerate() {
                let (item, n) = decode_item(&format!("input[{i}]"), item)?;
                out.push(item);
                bytes += n;
            }
            Ok((out, bytes))
        }
        Some(_) => Err(RelayError::invalid_type(
            "input",
            "a string or an array of input items",
        )),
    }
}

/// One input item, checked and normalised, and its bytes of text.
fn decode_item(path: &str, item: &Value) -> Result<(Value, usize), RelayError> {
    let obj = as_object(item, path)?;
    let field = |name: &str| format!("{path}.{name}");
    // `type` may be left out of a message (EasyInputMessage) and of an item reference.
    let kind = match obj.get("type") {
        None | Some(Value::Null) if obj.contains_key("role") => "message",
        None | Some(Value::Null) if obj.contains_key("id") => "item_reference",
        None | Some(Value::Null) => return Err(RelayError::missing(&field("type"))),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(RelayError::invalid_type(&field("type"), "a string")),
    };
    let mut out = obj.clone();
    out.insert("type".into(), json!(kind));
    let mut bytes = 0;
    match kind {
        "message" => bytes += decode_message(path, obj, &mut out)?,
        "function_call" => {
            req_str(obj, "call_id", &field("call_id"))?;
            req_str(obj, "name", &field("name"))?;
            bytes += req_str(obj, "arguments", &field("arguments"))?.len();
            opt_str(obj, "id", &field("id"))?;
        }
        "function_call_output" => {
            req_str(obj, "call_id", &field("call_id"))?;
            let output_path = field("output");
            match obj.get("output") {
                None | Some(Value::Null) => return Err(RelayError::missing(&output_path)),
                Some(Value::String(s)) => bytes += s.len(),
                Some(Value::Array(parts)) => {
                    for (j, part) in parts.iter().enumerate() {
                        bytes += check_part(&format!("{output_path}[{j}]"), part, false)?;
                    }
                }
                Some(_) => {
                    return Err(RelayError::invalid_type(
                        &output_path,
                        "a string or an array of content parts",
                    ))
                }
            }
        }
        "reasoning" => {
            // OpenAI requires `id`, but Codex leaves it out when it sends reasoning back with
            // its encrypted content, and OpenAI takes that; so does the relay.
            opt_str(obj, "id", &field("id"))?;
            opt_str(obj, "encrypted_content", &field("encrypted_content"))?;
            let summary_path = field("summary");
            match obj.get("summary") {
                None | Some(Value::Null) => return Err(RelayError::missing(&summary_path)),
                Some(Value::Array(parts)) => {
                    for (j, part) in parts.iter().enumerate() {
                        bytes += check_text_entry(
                            &format!("{summary_path}[{j}]"),
                            part,
                            "summary_text",
                        )?;
                    }
                }
                Some(_) => return Err(RelayError::invalid_type(&summary_path, "an array")),
            }
            let content_path = field("content");
            match obj.get("content") {
                None | Some(Value::Null) => {}
                Some(Value::Array(parts)) => {
                    for (j, part) in parts.iter().enumerate() {
                        bytes += check_text_entry(
                            &format!("{content_path}[{j}]"),
                            part,
                            "reasoning_text",
                        )?;
                    }
                }
                Some(_) => return Err(RelayError::invalid_type(&content_path, "an array")),
            }
        }
        "item_reference" => {
            req_str(obj, "id", &field("id"))?;
        }
        other if OTHER_ITEM_TYPES.contains(&other) => {}
        other => {
            return Err(RelayError::invalid_value(
                &field("type"),
                format!("'{other}' is not a known input item type"),
            ))
        }
    }
    Ok((Value::Object(out), bytes))
}

/// `{type, text}` entries of a reasoning item's `summary` and `content`.
fn check_text_entry(path: &str, entry: &Value, kind: &str) -> Result<usize, RelayError> {
    let e = as_object(entry, path)?;
    let type_path = format!("{path}.type");
    one_of(&type_path, req_str(e, "type", &type_path)?, &[kind])?;
    Ok(req_str(e, "text", &format!("{path}.text"))?.len())
}

fn decode_message(
    path: &str,
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<usize, RelayError> {
    let role_path = format!("{path}.role");
    let role = req_str(obj, "role", &role_path)?;
    one_of(
        &role_path,
        role,
        &["user", "assistant", "system", "developer"],
    )?;
    let assistant = role == "assistant";
    let content_path = format!("{path}.content");
    match obj.get("content") {
        None | Some(Value::Null) => Err(RelayError::missing(&content_path)),
        Some(Value::String(s)) => {
            let kind = if assistant {
                "output_text"
            } else {
                "input_text"
            };
            out.insert("content".into(), json!([text_part(kind, s)]));
            Ok(s.len())
        }
        Some(Value::Array(parts)) => {
            let mut bytes = 0;
            for (j, part) in parts.iter().enumerate() {
                bytes += check_part(&format!("{content_path}[{j}]"), part, assistant)?;
            }
            Ok(bytes)
        }
        Some(_) => Err(RelayError::invalid_type(
            &content_path,
            "a string or an array of content parts",
        )),
    }
}

/// A content part of a message (or of a function call's output), and its bytes of text.
/// Assistant messages hold what the model said; everything else holds input parts.
fn check_part(path: &str, part: &Value, assistant: bool) -> Result<usize, RelayError> {
    let p = as_object(part, path)?;
    let type_path = format!("{path}.type");
    let field = |name: &str| format!("{path}.{name}");
    let kind = req_str(p, "type", &type_path)?;
    if assistant {
        one_of(&type_path, kind, &["output_text", "refusal"])?;
    } else {
        one_of(
            &type_path,
            kind,
            &["input_text", "input_image", "input_file"],
        )?;
    }
    match kind {
        "input_text" | "output_text" => Ok(req_str(p, "text", &field("text"))?.len()),
        "refusal" => Ok(req_str(p, "refusal", &field("refusal"))?.len()),
        "input_image" => {
            let url = opt_str(p, "image_url", &field("image_url"))?;
            let file = opt_str(p, "file_id", &field("file_id"))?;
            if url.is_none() && file.is_none() {
                return Err(RelayError::missing(&field("image_url")));
            }
            if let Some(detail) = opt_str(p, "detail", &field("detail"))? {
                one_of(&field("detail"), detail, IMAGE_DETAILS)?;
            }
            Ok(0)
        }
        // input_file: one of file_id, file_data, file_url.
        _ => {
            let mut given = false;
            for key in ["file_id", "file_data", "file_url", "filename"] {
                given |= opt_str(p, key, &field(key))?.is_some() && key != "filename";
            }
            if !given {
                return Err(RelayError::missing(&field("file_id")));
            }
            Ok(0)
        }
    }
}

/// Top-level fields the neutral model, or the relay itself (storage, echoes), takes care of.
const HANDLED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "user",
    "stream",
    // The relay's own stream is not obfuscated; there is nothing to switch off.
    "stream_options",
    "store",
    "previous_response_id",
    // Kept on the stored Response object, not a model parameter.
    "metadata",
    "include",
    "truncation",
    "background",
];

impl ResponsesRequest {
    /// The request in the neutral model. `previous_items` is the stored conversation that
    /// `previous_response_id` points to (see [`conversation_items`]), put before the input;
    /// item references are looked up among those and the input. What the neutral model cannot
    /// hold is in `extra` (built-in tools as `tools.<type>`, `include.<entry>`, OpenAI's
    /// `input.reasoning.encrypted_content`, unknown fields) or reported in the drops.
    pub fn to_neutral(&self, previous_items: &[Value]) -> (ChatRequest, Vec<Drop>) {
        let body = &self.body;
        let mut drops = Drops::default();
        let mut out = ChatRequest {
            model: self.model.clone(),
            stream: self.stream,
            max_tokens: self.max_output_tokens,
            ..ChatRequest::default()
        };
        // Instructions are not carried over from a previous response: they lead this one.
        if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
            if !instructions.is_empty() {
                out.system.push(instructions.to_string());
            }
        }
        let all: Vec<&Value> = previous_items.iter().chain(&self.input_items).collect();
        for item in &all {
            add_item(&mut out, item, &all, true, &mut drops);
        }
        tools_to_neutral(body, &mut out, &mut drops);
        tool_choice_to_neutral(body.get("tool_choice"), &mut out, &mut drops);
        if let Some(text) = body.get("text").and_then(Value::as_object) {
            out.response_format = text.get("format").and_then(format_to_neutral);
            if text
                .get("format")
                .and_then(|f| f.get("description"))
                .is_some_and(|d| !d.is_null())
            {
                drops.dropped("text.format.description");
            }
            if let Some(verbosity) = text.get("verbosity").filter(|v| !v.is_null()) {
                out.extra.insert("text.verbosity".into(), verbosity.clone());
            }
        }
        if let Some(reasoning) = body.get("reasoning").and_then(Value::as_object) {
            out.reasoning = reasoning
                .get("effort")
                .and_then(Value::as_str)
                .map(|e| Reasoning::Effort(e.to_string()));
            // Other upstreams give their own reasoning text in place of OpenAI's summary.
            if ["summary", "generate_summary"]
                .iter()
                .any(|k| reasoning.get(*k).is_some_and(|v| !v.is_null()))
            {
                drops.approximated("reasoning.summary");
            }
        }
        out.temperature = body.get("temperature").and_then(Value::as_f64);
        out.top_p = body.get("top_p").and_then(Value::as_f64);
        out.parallel_tool_calls = body.get("parallel_tool_calls").and_then(Value::as_bool);
        out.user = body.get("user").and_then(Value::as_str).map(str::to_string);
        for entry in body
            .get("include")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(entry) = entry.as_str() {
                out.extra.insert(format!("include.{entry}"), json!(true));
            }
        }
        if body.get("truncation").and_then(Value::as_str) == Some("auto") {
            out.extra.insert("truncation".into(), json!("auto"));
        }
        if self.background {
            out.extra.insert("background".into(), json!(true));
        }
        for (k, v) in body {
            if !HANDLED.contains(&k.as_str()) && !v.is_null() {
                out.extra.insert(k.clone(), v.clone());
            }
        }
        (out, drops.into_vec())
    }

    /// The input items as stored for `GET /v1/responses/{id}/input_items`: each with an id
    /// (the client's, or one derived from `response_id`) and a status.
    pub fn stored_input_items(&self, response_id: &str) -> Vec<Value> {
        let suffix = id_suffix(response_id);
        self.input_items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let mut item = item.clone();
                if let Value::Object(o) = &mut item {
                    if !o.get("id").is_some_and(Value::is_string) {
                        let prefix = match o.get("type").and_then(Value::as_str) {
                            Some("message") => "msg",
                            Some("function_call") => "fc",
                            Some("function_call_output") => "fco",
                            Some("reasoning") => "rs",
                            _ => "item",
                        };
                        o.insert("id".into(), json!(format!("{prefix}_{suffix}_in{i}")));
                    }
                    let referenced =
                        o.get("type").and_then(Value::as_str) == Some("item_reference");
                    if !referenced {
                        o.entry("status").or_insert_with(|| json!("completed"));
                    }
                }
                item
            })
            .collect()
    }

    /// The body for an OpenAI Responses upstream: the client's, with `model` set to the
    /// upstream's name. Reasoning items carrying another provider's signature (an earlier turn
    /// served elsewhere) are left out: OpenAI cannot decrypt them and would refuse the request.
    pub fn upstream_body(&self, upstream_model: &str) -> (Map<String, Value>, Vec<Drop>) {
        let mut body = self.body.clone();
        body.insert("model".into(), json!(upstream_model));
        let mut drops = Vec::new();
        if let Some(Value::Array(items)) = body.get_mut("input") {
            let before = items.len();
            items.retain(|item| {
                str_of(item, "type") != "reasoning"
                    || !str_of(item, "encrypted_content").starts_with(RELAY_SIGNATURE_PREFIX)
            });
            if items.len() < before {
                drops.push(Drop::dropped("input.reasoning.encrypted_content"));
            }
        }
        (body, drops)
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The assistant message the conversation ends with, started if it ends otherwise: a turn's
/// reasoning, text and calls arrive as separate items and belong to one neutral message.
fn trailing_assistant(out: &mut ChatRequest) -> &mut Message {
    if out.messages.last().map(|m| m.role) != Some(Role::Assistant) {
        out.messages.push(Message::new(Role::Assistant, Vec::new()));
    }
    let last = out.messages.len() - 1;
    &mut out.messages[last]
}

/// One (normalised) item into the neutral conversation. Item references are followed once.
fn add_item(
    out: &mut ChatRequest,
    item: &Value,
    all: &[&Value],
    follow_references: bool,
    drops: &mut Drops,
) {
    match str_of(item, "type") {
        "message" => {
            let content = item.get("content");
            match str_of(item, "role") {
                "system" | "developer" => {
                    let parts = parts_to_neutral(content, drops);
                    if parts.iter().any(|p| matches!(p, Part::Image(_))) {
                        drops.dropped("input.message.system.input_image");
                    }
                    let text = Message::new(Role::System, parts).joined_text();
                    // Instructions before the conversation lead it; later ones keep their place.
                    if out.messages.is_empty() {
                        out.system.push(text);
                    } else {
                        out.messages.push(Message::text(Role::System, &text));
                    }
                }
                "assistant" => {
                    let parts = parts_to_neutral(content, drops);
                    trailing_assistant(out).content.extend(parts);
                }
                _ => {
                    let parts = parts_to_neutral(content, drops);
                    out.messages.push(Message::new(Role::User, parts));
                }
            }
        }
        "function_call" => {
            let call = ToolCall {
                id: str_of(item, "call_id").to_string(),
                name: str_of(item, "name").to_string(),
                arguments: str_of(item, "arguments").to_string(),
            };
            trailing_assistant(out).tool_calls.push(call);
        }
        "function_call_output" => {
            let mut message = Message::new(Role::Tool, parts_to_neutral(item.get("output"), drops));
            message.tool_call_id = Some(str_of(item, "call_id").to_string());
            out.messages.push(message);
        }
        "reasoning" => add_reasoning(out, item),
        "item_reference" => {
            let id = str_of(item, "id");
            let target = all
                .iter()
                .find(|i| str_of(i, "id") == id && str_of(i, "type") != "item_reference");
            match target {
                Some(target) if follow_references => add_item(out, target, all, false, drops),
                _ => drops.dropped("input.item_reference"),
            }
        }
        other => drops.dropped(&format!("input.{other}")),
    }
}

/// A reasoning item: its text (the raw reasoning where given, else the summary) and, where the
/// relay itself wrapped one, the other provider's signature.
fn add_reasoning(out: &mut ChatRequest, item: &Value) {
    let texts = |key: &str| -> Vec<&str> {
        item.get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| str_of(p, "text"))
            .filter(|t| !t.is_empty())
            .collect()
    };
    let mut text = texts("content");
    if text.is_empty() {
        text = texts("summary");
    }
    let text = text.join("\n\n");
    let mut signature = String::new();
    if let Some(encrypted) = item.get("encrypted_content").and_then(Value::as_str) {
        match encrypted.strip_prefix(RELAY_SIGNATURE_PREFIX) {
            Some(s) => signature = s.to_string(),
            None => {
                out.extra
                    .insert("input.reasoning.encrypted_content".into(), json!(true));
            }
        }
    }
    if !text.is_empty() || !signature.is_empty() {
        add_thinking(trailing_assistant(out), &text, signature);
    }
}

/// Message content (a string or parts) or a function call's output in neutral parts.
fn parts_to_neutral(content: Option<&Value>, drops: &mut Drops) -> Vec<Part> {
    let parts = match content {
        Some(Value::String(s)) if s.is_empty() => return Vec::new(),
        Some(Value::String(s)) => return vec![Part::Text(s.clone())],
        Some(Value::Array(parts)) => parts,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for p in parts {
        match str_of(p, "type") {
            "input_text" | "output_text" => out.push(Part::Text(str_of(p, "text").to_string())),
            "refusal" => {
                drops.approximated("input.content.refusal");
                out.push(Part::Text(str_of(p, "refusal").to_string()));
            }
            "input_image" => match p.get("image_url").and_then(Value::as_str) {
                Some(url) => {
                    if !matches!(p.get("detail").and_then(Value::as_str), None | Some("auto")) {
                        drops.approximated("input.content.input_image.detail");
                    }
                    out.push(Part::Image(image_source(url)));
                }
                None => drops.dropped("input.content.input_image.file_id"),
            },
            other => drops.dropped(&format!("input.content.{other}")),
        }
    }
    out
}

fn tools_to_neutral(body: &Map<String, Value>, out: &mut ChatRequest, drops: &mut Drops) {
    for tool in body
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match str_of(tool, "type") {
            "function" => {
                if tool.get("strict").and_then(Value::as_bool) == Some(true) {
                    // Other providers take the schema as guidance, not as a guarantee.
                    drops.approximated("tools.strict");
                }
                out.tools.push(Tool {
                    name: str_of(tool, "name").to_string(),
                    description: tool
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    parameters: tool
                        .get("parameters")
                        .filter(|p| p.is_object())
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
            }
            other => {
                out.extra
                    .entry(format!("tools.{other}"))
                    .or_insert_with(|| tool.clone());
            }
        }
    }
}

fn tool_choice_to_neutral(choice: Option<&Value>, out: &mut ChatRequest, drops: &mut Drops) {
    out.tool_choice = match choice {
        Some(Value::String(s)) => match s.as_str() {
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => Some(ToolChoice::Auto),
        },
        Some(c @ Value::Object(_)) => match str_of(c, "type") {
            "function" => Some(ToolChoice::Named(str_of(c, "name").to_string())),
            // The neutral model cannot narrow the tools offered, only whether one must be used.
            "allowed_tools" => {
                drops.approximated("tool_choice.allowed_tools");
                match str_of(c, "mode") {
                    "required" => Some(ToolChoice::Required),
                    _ => Some(ToolChoice::Auto),
                }
            }
            // A built-in, custom or MCP tool: only a Responses upstream has it.
            _ => {
                out.extra.insert("tool_choice".into(), c.clone());
                None
            }
        },
        _ => None,
    };
}

fn format_to_neutral(format: &Value) -> Option<ResponseFormat> {
    match str_of(format, "type") {
        "text" => Some(ResponseFormat::Text),
        "json_object" => Some(ResponseFormat::JsonObject),
        "json_schema" => Some(ResponseFormat::JsonSchema {
            name: str_of(format, "name").to_string(),
            schema: format.get("schema").cloned().unwrap_or(Value::Null),
            strict: format
                .get("strict")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        _ => None,
    }
}

// ---- the Response object ---------------------------------------------------------------------

/// What the Response object repeats of its request, and the ids and time it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseEcho {
    /// `resp_…`, chosen by the caller.
    pub id: String,
    /// Unix seconds, read by the caller.
    pub created_at: i64,
    /// The model the client is told served it.
    pub model: String,
    fields: Map<String, Value>,
}

/// The request fields a Response object repeats.
const ECHOED: &[&str] = &[
    "instructions",
    "previous_response_id",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "user",
    "truncation",
    "background",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "top_logprobs",
];

/// What OpenAI's Response object says for an echoed field the request left out.
fn echo_default(key: &str) -> Value {
    match key {
        "tools" => json!([]),
        "tool_choice" => json!("auto"),
        "parallel_tool_calls" => json!(true),
        "temperature" | "top_p" => json!(1.0),
        "metadata" => json!({}),
        "truncation" => json!("disabled"),
        "background" => json!(false),
        "service_tier" => json!("default"),
        "top_logprobs" => json!(0),
        _ => Value::Null,
    }
}

impl ResponseEcho {
    pub fn new(req: &ResponsesRequest, id: &str, created_at: i64, model: &str) -> ResponseEcho {
        let body = &req.body;
        let mut fields = Map::new();
        for key in ECHOED {
            let value = body
                .get(*key)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or_else(|| echo_default(key));
            fields.insert((*key).into(), value);
        }
        fields.insert("store".into(), json!(req.store));
        let mut text = body
            .get("text")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if !text.get("format").is_some_and(Value::is_object) {
            text.insert("format".into(), json!({"type": "text"}));
        }
        fields.insert("text".into(), Value::Object(text));
        let reasoning = body.get("reasoning");
        let pick = |key: &str| {
            reasoning
                .and_then(|r| r.get(key))
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(Value::Null)
        };
        let mut summary = pick("summary");
        if summary.is_null() {
            summary = pick("generate_summary");
        }
        fields.insert(
            "reasoning".into(),
            json!({"effort": pick("effort"), "summary": summary}),
        );
        ResponseEcho {
            id: id.to_string(),
            created_at,
            model: model.to_string(),
            fields,
        }
    }

    /// The id of output item `index`: unique because the response id is.
    fn item_id(&self, prefix: &str, index: usize) -> String {
        format!("{prefix}_{}_{index}", id_suffix(&self.id))
    }

    fn object(&self, outcome: &Outcome, output: Vec<Value>, usage: Option<&Usage>) -> Value {
        let mut o = self.fields.clone();
        o.insert("id".into(), json!(self.id));
        o.insert("object".into(), json!("response"));
        o.insert("created_at".into(), json!(self.created_at));
        o.insert("model".into(), json!(self.model));
        o.insert("status".into(), json!(outcome.status()));
        o.insert("output".into(), Value::Array(output));
        o.insert("usage".into(), usage.map_or(Value::Null, usage_json));
        o.insert(
            "incomplete_details".into(),
            match outcome {
                Outcome::Incomplete(reason) => json!({"reason": reason}),
                _ => Value::Null,
            },
        );
        o.insert(
            "error".into(),
            match outcome {
                Outcome::Failed { code, message } => json!({"code": code, "message": message}),
                _ => Value::Null,
            },
        );
        Value::Object(o)
    }
}

fn id_suffix(id: &str) -> &str {
    id.strip_prefix("resp_").unwrap_or(id)
}

/// How a response ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    InProgress,
    Completed,
    Incomplete(&'static str),
    Failed { code: &'static str, message: String },
}

impl Outcome {
    fn of(reason: Option<FinishReason>) -> Outcome {
        match reason {
            None
            | Some(FinishReason::Stop)
            | Some(FinishReason::StopSequence)
            | Some(FinishReason::ToolCalls) => Outcome::Completed,
            Some(FinishReason::Length) => Outcome::Incomplete("max_output_tokens"),
            Some(FinishReason::ContentFilter) => Outcome::Incomplete("content_filter"),
            Some(FinishReason::Error) => Outcome::Failed {
                code: "server_error",
                message: "The upstream model failed to complete the response.".into(),
            },
        }
    }

    /// An error the upstream reported mid-stream, with a code OpenAI's SDKs know.
    fn upstream_error(status: u16, message: &str) -> Outcome {
        Outcome::Failed {
            code: if status == 429 {
                "rate_limit_exceeded"
            } else {
                "server_error"
            },
            message: message.to_string(),
        }
    }

    fn status(&self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Completed => "completed",
            Outcome::Incomplete(_) => "incomplete",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The status of an item still open when the response ended this way.
    fn item_status(&self) -> &'static str {
        match self {
            Outcome::InProgress | Outcome::Completed => "completed",
            Outcome::Incomplete(_) | Outcome::Failed { .. } => "incomplete",
        }
    }
}

/// Usage in the Responses shape: cached tokens are part of the input, reasoning tokens part of
/// the output, as in the neutral model.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens(),
    })
}

fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content: Vec<Value> = text.map(output_text_part).into_iter().collect();
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn reasoning_item(id: &str, text: &str, signature: Option<&str>) -> Value {
    let summary: Vec<Value> = if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "summary_text", "text": text})]
    };
    let mut item = json!({"id": id, "type": "reasoning", "summary": summary});
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        item["encrypted_content"] = json!(format!("{RELAY_SIGNATURE_PREFIX}{signature}"));
    }
    item
}

fn function_call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "arguments": arguments,
        "call_id": call_id, "name": name})
}

/// A neutral reply as a Response object: reasoning, then the message, then function calls.
pub fn encode_response(resp: &ChatResponse, echo: &ResponseEcho) -> Value {
    let outcome = Outcome::of(resp.finish_reason);
    let message = &resp.message;
    let mut output = Vec::new();
    let reasoning = message.reasoning.as_deref().unwrap_or_default();
    let signature = message.reasoning_signature.as_deref();
    if !reasoning.is_empty() || signature.is_some_and(|s| !s.is_empty()) {
        output.push(reasoning_item(
            &echo.item_id("rs", output.len()),
            reasoning,
            signature,
        ));
    }
    let text = message.joined_text();
    // A reply with nothing in it is still one (empty) message, as OpenAI gives it.
    if !text.is_empty() || (output.is_empty() && message.tool_calls.is_empty()) {
        let id = echo.item_id("msg", output.len());
        output.push(message_item(&id, outcome.item_status(), Some(&text)));
    }
    for call in &message.tool_calls {
        let index = output.len();
        let call_id = if call.id.is_empty() {
            echo.item_id("call", index)
        } else {
            call.id.clone()
        };
        output.push(function_call_item(
            &echo.item_id("fc", index),
            &call_id,
            &call.name,
            &call.arguments,
            "completed",
        ));
    }
    echo.object(&outcome, output, resp.usage.as_ref())
}

// ---- the stream ------------------------------------------------------------------------------

/// The message or reasoning item being written.
#[derive(Debug)]
enum OpenItem {
    Message {
        index: usize,
        id: String,
        text: String,
    },
    Reasoning {
        index: usize,
        id: String,
        text: String,
        signature: Option<String>,
        part_open: bool,
    },
}

/// A function call item, by its neutral tool index.
#[derive(Debug)]
struct ToolItem {
    index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    open: bool,
}

/// Neutral [`StreamEvent`]s → Responses SSE (`event: <type>` + `data: {json}`), with
/// `sequence_number` counting from 0: `response.created` and `response.in_progress`, each
/// output item from `response.output_item.added` to `.done` with its part and delta events in
/// between, and a terminal `response.completed` / `.incomplete` / `.failed` carrying the whole
/// Response object (what [`encode_response`] gives for the same reply).
///
/// A message or reasoning item closes when other content starts. Function calls stay open
/// together until other content or the end, so deltas of parallel calls may interleave; a
/// delta for a call already closed (a stream that interleaves oddly) still goes to that call's
/// item, and into the final object. The terminal event waits for [`finish`](Self::finish),
/// because OpenAI-style upstreams report usage after the finish reason.
#[derive(Debug)]
pub struct StreamEncoder {
    echo: ResponseEcho,
    sequence: u64,
    started: bool,
    ended: bool,
    /// Output items by output index: as added while open, final once done.
    output: Vec<Value>,
    open: Option<OpenItem>,
    tools: BTreeMap<usize, ToolItem>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    response: Option<Value>,
}

impl StreamEncoder {
    pub fn new(echo: ResponseEcho) -> Self {
        StreamEncoder {
            echo,
            sequence: 0,
            started: false,
            ended: false,
            output: Vec::new(),
            open: None,
            tools: BTreeMap::new(),
            finish: None,
            usage: None,
            response: None,
        }
    }

    /// The final Response object, once the stream has ended (for storing it).
    pub fn response(&self) -> Option<&Value> {
        self.response.as_ref()
    }

    fn emit(&mut self, kind: &str, fields: Value, out: &mut Vec<u8>) {
        let mut data = Map::new();
        data.insert("type".into(), json!(kind));
        data.insert("sequence_number".into(), json!(self.sequence));
        if let Value::Object(fields) = fields {
            data.extend(fields);
        }
        self.sequence += 1;
        sse::encode_event(Some(kind), &Value::Object(data).to_string(), out);
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.echo.object(&Outcome::InProgress, Vec::new(), None);
        self.emit(
            "response.created",
            json!({"response": response.clone()}),
            out,
        );
        self.emit("response.in_progress", json!({"response": response}), out);
    }

    fn add_item(&mut self, item: Value, out: &mut Vec<u8>) -> usize {
        let index = self.output.len();
        self.output.push(item.clone());
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
            out,
        );
        index
    }

    fn item_done(&mut self, index: usize, item: Value, out: &mut Vec<u8>) {
        if let Some(slot) = self.output.get_mut(index) {
            *slot = item.clone();
        }
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
    }

    /// Closes the open message or reasoning item, leaving it with `status`.
    fn close_open(&mut self, status: &str, out: &mut Vec<u8>) {
        match self.open.take() {
            None => {}
            Some(OpenItem::Message { index, id, text }) => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.emit("response.output_text.done", done, out);
                let mut part = at;
                part["part"] = output_text_part(&text);
                self.emit("response.content_part.done", part, out);
                self.item_done(index, message_item(&id, status, Some(&text)), out);
            }
            Some(OpenItem::Reasoning {
                index,
                id,
                text,
                signature,
                part_open,
            }) => {
                if part_open {
                    let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                    let mut done = at.clone();
                    done["text"] = json!(text);
                    self.emit("response.reasoning_summary_text.done", done, out);
                    let mut part = at;
                    part["part"] = json!({"type": "summary_text", "text": text});
                    self.emit("response.reasoning_summary_part.done", part, out);
                }
                let item = reasoning_item(&id, &text, signature.as_deref());
                self.item_done(index, item, out);
            }
        }
    }

    /// Closes every open function call, in output order.
    fn close_tools(&mut self, status: &str, out: &mut Vec<u8>) {
        let mut open: Vec<usize> = self
            .tools
            .iter()
            .filter(|(_, t)| t.open)
            .map(|(k, _)| *k)
            .collect();
        open.sort_by_key(|k| self.tools.get(k).map(|t| t.index));
        for key in open {
            let Some(tool) = self.tools.get_mut(&key) else {
                continue;
            };
            tool.open = false;
            let (index, id, call_id, name, arguments) = (
                tool.index,
                tool.id.clone(),
                tool.call_id.clone(),
                tool.name.clone(),
                tool.arguments.clone(),
            );
            self.emit(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": arguments, "name": name}),
                out,
            );
            let item = function_call_item(&id, &call_id, &name, &arguments, status);
            self.item_done(index, item, out);
        }
    }

    fn close_all(&mut self, status: &str, out: &mut Vec<u8>) {
        self.close_open(status, out);
        self.close_tools(status, out);
    }

    fn open_message(&mut self, out: &mut Vec<u8>) -> (usize, String) {
        if let Some(OpenItem::Message { index, id, .. }) = &self.open {
            return (*index, id.clone());
        }
        self.close_all("completed", out);
        let id = self.echo.item_id("msg", self.output.len());
        let index = self.add_item(message_item(&id, "in_progress", None), out);
        self.emit(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                "part": output_text_part("")}),
            out,
        );
        self.open = Some(OpenItem::Message {
            index,
            id: id.clone(),
            text: String::new(),
        });
        (index, id)
    }

    fn open_reasoning(&mut self, out: &mut Vec<u8>) {
        if matches!(self.open, Some(OpenItem::Reasoning { .. })) {
            return;
        }
        self.close_all("completed", out);
        let id = self.echo.item_id("rs", self.output.len());
        let index = self.add_item(reasoning_item(&id, "", None), out);
        self.open = Some(OpenItem::Reasoning {
            index,
            id,
            text: String::new(),
            signature: None,
            part_open: false,
        });
    }

    fn start_tool(&mut self, key: usize, call_id: &str, name: &str, out: &mut Vec<u8>) {
        // Parallel calls stay open together; anything else closes first.
        self.close_open("completed", out);
        let index = self.output.len();
        let id = self.echo.item_id("fc", index);
        let call_id = if call_id.is_empty() {
            self.echo.item_id("call", index)
        } else {
            call_id.to_string()
        };
        self.add_item(
            function_call_item(&id, &call_id, name, "", "in_progress"),
            out,
        );
        self.tools.insert(
            key,
            ToolItem {
                index,
                id,
                call_id,
                name: name.to_string(),
                arguments: String::new(),
                open: true,
            },
        );
    }

    pub fn push(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ensure_started(out);
        match event {
            // The relay chose the id and the public model name; the upstream's are not shown.
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta(delta) => {
                if delta.is_empty() {
                    return;
                }
                let (index, id) = self.open_message(out);
                if let Some(OpenItem::Message { text, .. }) = &mut self.open {
                    text.push_str(delta);
                }
                self.emit(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "delta": delta, "logprobs": []}),
                    out,
                );
            }
            StreamEvent::ReasoningDelta(delta) => {
                if delta.is_empty() {
                    return;
                }
                self.open_reasoning(out);
                let Some(OpenItem::Reasoning {
                    index,
                    id,
                    text,
                    part_open,
                    ..
                }) = &mut self.open
                else {
                    return;
                };
                text.push_str(delta);
                let (index, id, first) = (*index, id.clone(), !*part_open);
                *part_open = true;
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                if first {
                    let mut added = at.clone();
                    added["part"] = json!({"type": "summary_text", "text": ""});
                    self.emit("response.reasoning_summary_part.added", added, out);
                }
                let mut data = at;
                data["delta"] = json!(delta);
                self.emit("response.reasoning_summary_text.delta", data, out);
            }
            StreamEvent::ReasoningSignature(s) => {
                // It ends a reasoning block; one arriving alone (Gemini signs its calls) is an
                // item of its own, so the client can send it back.
                self.open_reasoning(out);
                if let Some(OpenItem::Reasoning { signature, .. }) = &mut self.open {
                    *signature = Some(s.clone());
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                // A second start for the same index would be a second call with the same id.
                if !self.tools.contains_key(index) {
                    self.start_tool(*index, id, name, out);
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if arguments.is_empty() {
                    return;
                }
                if !self.tools.contains_key(index) {
                    self.start_tool(*index, "", "", out);
                }
                let Some(tool) = self.tools.get_mut(index) else {
                    return;
                };
                tool.arguments.push_str(arguments);
                let (item_index, id, open, all) = (
                    tool.index,
                    tool.id.clone(),
                    tool.open,
                    tool.arguments.clone(),
                );
                if !open {
                    if let Some(item) = self.output.get_mut(item_index) {
                        item["arguments"] = json!(all);
                    }
                }
                self.emit(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": item_index, "delta": arguments}),
                    out,
                );
            }
            StreamEvent::Finish { reason, .. } => {
                self.finish = Some(*reason);
                let status = Outcome::of(Some(*reason)).item_status();
                self.close_all(status, out);
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error { status, message } => {
                self.end(Outcome::upstream_error(*status, message), out);
            }
        }
    }

    /// End of the upstream stream: closes whatever is open and sends the terminal event.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ensure_started(out);
        self.end(Outcome::of(self.finish), out);
    }

    fn end(&mut self, outcome: Outcome, out: &mut Vec<u8>) {
        self.close_all(outcome.item_status(), out);
        let kind = match outcome {
            Outcome::InProgress | Outcome::Completed => "response.completed",
            Outcome::Incomplete(_) => "response.incomplete",
            Outcome::Failed { .. } => "response.failed",
        };
        let response = self
            .echo
            .object(&outcome, self.output.clone(), self.usage.as_ref());
        self.emit(kind, json!({"response": response.clone()}), out);
        self.response = Some(response);
        self.ended = true;
    }
}

// ---- pass-through to an OpenAI Responses upstream --------------------------------------------

#[derive(Deserialize, Default)]
struct UsageWire {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetailsWire>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetailsWire>,
}

#[derive(Deserialize, Default)]
struct InputDetailsWire {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct OutputDetailsWire {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl UsageWire {
    /// OpenAI's convention: cached and reasoning tokens are inside their totals.
    fn into_usage(self) -> Usage {
        let input = self.input_tokens_details.unwrap_or_default();
        Usage::from_inclusive(
            self.input_tokens.unwrap_or(0),
            self.output_tokens.unwrap_or(0),
            input.cached_tokens.unwrap_or(0),
            input.cache_write_tokens.unwrap_or(0),
            self.output_tokens_details
                .unwrap_or_default()
                .reasoning_tokens
                .unwrap_or(0),
        )
    }
}

fn usage_of(response: &Value) -> Option<Usage> {
    let usage = response.get("usage").filter(|u| u.is_object())?;
    UsageWire::deserialize(usage)
        .ok()
        .map(UsageWire::into_usage)
}

/// Bytes of generated text in a Response object's output: message text and refusals,
/// function call arguments, reasoning summaries and text.
fn output_bytes(response: &Value) -> usize {
    let items = response
        .get("output")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let parts_bytes = |item: &Value, key: &str| -> usize {
        item.get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| str_of(p, "text").len() + str_of(p, "refusal").len())
            .sum()
    };
    items
        .iter()
        .map(|item| {
            str_of(item, "arguments").len()
                + parts_bytes(item, "content")
                + parts_bytes(item, "summary")
        })
        .sum()
}

/// Usage and generated size of a Response object from an OpenAI Responses upstream.
pub fn summarize_reply(bytes: &[u8]) -> ReplySummary {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(response) => ReplySummary {
            usage: usage_of(&response),
            completion_bytes: output_bytes(&response),
        },
        Err(_) => ReplySummary::default(),
    }
}

/// How an upstream Responses stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Completed,
    Incomplete,
    Failed,
    /// An `error` event.
    Error,
}

/// Watches an OpenAI Responses upstream's SSE stream passed to the client untouched: the
/// usage and final Response object from `response.completed` / `.incomplete` / `.failed`, and
/// the generated text for an estimate should the stream break before them. Only those events
/// and the deltas are parsed; the kind of an event is read off its `event:` line, or off the
/// `"type"` that OpenAI writes first in the data when a proxy dropped that line.
pub struct StreamPassThrough {
    parser: SseParser,
    events: Vec<SseEvent>,
    usage: Option<Usage>,
    completion_bytes: usize,
    response: Option<Value>,
    end: Option<StreamEnd>,
}

impl Default for StreamPassThrough {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Deserialize)]
struct DeltaPeek<'a> {
    #[serde(borrow, default)]
    delta: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct TerminalPeek {
    #[serde(default)]
    response: Value,
}

/// The `"type"` of an event's data, without parsing it.
fn sniff_type(data: &str) -> &str {
    const KEY: &str = "\"type\":\"";
    let Some(start) = data.find(KEY).map(|i| i + KEY.len()) else {
        return "";
    };
    let rest = &data[start..];
    rest.find('"').map_or("", |end| &rest[..end])
}

impl StreamPassThrough {
    pub fn new() -> Self {
        StreamPassThrough {
            parser: SseParser::new(),
            events: Vec::new(),
            usage: None,
            completion_bytes: 0,
            response: None,
            end: None,
        }
    }

    /// Feeds one upstream chunk; it is appended to `out` as it came.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), SseError> {
        out.extend_from_slice(chunk);
        let mut events = std::mem::take(&mut self.events);
        let result = self.parser.push(chunk, &mut events);
        for event in events.drain(..) {
            self.see(&event);
        }
        self.events = events;
        result
    }

    pub fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), SseError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.parser.finish(&mut events);
        for event in events.drain(..) {
            self.see(&event);
        }
        self.events = events;
        result
    }

    fn see(&mut self, event: &SseEvent) {
        let kind = match event.event.as_deref() {
            Some(kind) if !kind.is_empty() => kind,
            _ => sniff_type(&event.data),
        };
        let end = match kind {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
            | "response.reasoning_summary_text.delta"
            | "response.reasoning_text.delta" => {
                if let Ok(peek) = serde_json::from_str::<DeltaPeek>(&event.data) {
                    self.completion_bytes = self.completion_bytes.saturating_add(peek.delta.len());
                }
                return;
            }
            "response.completed" => StreamEnd::Completed,
            "response.incomplete" => StreamEnd::Incomplete,
            "response.failed" => StreamEnd::Failed,
            "error" => {
                self.end = Some(StreamEnd::Error);
                return;
            }
            _ => return,
        };
        self.end = Some(end);
        if let Ok(peek) = serde_json::from_str::<TerminalPeek>(&event.data) {
            if let Some(usage) = usage_of(&peek.response) {
                self.usage = Some(usage);
            }
            // The whole output is here: it counts exactly what the deltas estimated.
            self.completion_bytes = output_bytes(&peek.response);
            self.response = Some(peek.response).filter(Value::is_object);
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn completion_bytes(&self) -> usize {
        self.completion_bytes
    }

    /// The final Response object, once the terminal event has passed (for storing it).
    pub fn response(&self) -> Option<&Value> {
        self.response.as_ref()
    }

    /// How the stream ended, if it did.
    pub fn end(&self) -> Option<StreamEnd> {
        self.end
    }

    /// The upstream ended the stream properly (`response.completed` or `.incomplete`).
    pub fn completed(&self) -> bool {
        matches!(
            self.end,
            Some(StreamEnd::Completed) | Some(StreamEnd::Incomplete)
        )
    }
}

// ---- stored responses ------------------------------------------------------------------------

/// The items a stored response adds to the conversation a continuation sees: its input items
/// (with their stored ids) followed by its output items. OpenAI's `previous_response_id` sees
/// the whole chain, so the conversation of response N is that of its own previous response
/// followed by this for N; instructions are never carried over.
pub fn conversation_items(req: &ResponsesRequest, response: &Value) -> Vec<Value> {
    let mut items = req.stored_input_items(str_of(response, "id"));
    items.extend(
        response
            .get("output")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    );
    items
}

/// `order` of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    Asc,
    Desc,
}

/// The query of `GET /v1/responses/{id}/input_items`: `limit` (1 to 100, default 20) and
/// `order` (default `desc`).
pub fn parse_list_params(
    limit: Option<&str>,
    order: Option<&str>,
) -> Result<(usize, ListOrder), RelayError> {
    let limit = match limit {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(RelayError::invalid_value(
                    "limit",
                    "must be an integer between 1 and 100",
                ))
            }
        },
    };
    let order = match order {
        None | Some("desc") => ListOrder::Desc,
        Some("asc") => ListOrder::Asc,
        Some(other) => {
            return Err(RelayError::invalid_value(
                "order",
                format!("'{other}' is not one of 'asc', 'desc'"),
            ))
        }
    };
    Ok((limit, order))
}

/// A page of a response's input items (stored in request order) in the shape of
/// `GET /v1/responses/{id}/input_items`. An `after` that names no item gives an empty page.
pub fn input_items_list(
    items: &[Value],
    after: Option<&str>,
    limit: usize,
    order: ListOrder,
) -> Value {
    let ordered: Vec<&Value> = match order {
        ListOrder::Asc => items.iter().collect(),
        ListOrder::Desc => items.iter().rev().collect(),
    };
    let start = match after {
        None => 0,
        Some(after) => ordered
            .iter()
            .position(|i| str_of(i, "id") == after)
            .map_or(ordered.len(), |p| p + 1),
    };
    let page: Vec<Value> = ordered[start..]
        .iter()
        .take(limit.clamp(1, 100))
        .map(|i| (*i).clone())
        .collect();
    let has_more = start + page.len() < ordered.len();
    let id_at = |i: Option<&Value>| i.and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
    json!({
        "object": "list",
        "first_id": id_at(page.first()),
        "last_id": id_at(page.last()),
        "has_more": has_more,
        "data": page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::neutral::ImageSource;
    use crate::formats::{anthropic, openai};

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../tests/fixtures/responses/", $name))
        };
    }

    const CODEX: &[u8] = fixture!("request_codex.json");
    const AGENTS: &[u8] = fixture!("request_agents_sdk.json");
    const REPLY_TEXT: &[u8] = fixture!("reply_text.json");
    const REPLY_CALL: &[u8] = fixture!("reply_function_call.json");
    const STREAM_TEXT: &[u8] = fixture!("stream_text.sse");
    const STREAM_CALL: &[u8] = fixture!("stream_function_call.sse");
    const STREAM_REASONING: &[u8] = fixture!("stream_reasoning.sse");

    fn decode(body: Value) -> Result<ResponsesRequest, RelayError> {
        decode_request(body.to_string().as_bytes())
    }

    fn with(extra: Value) -> Value {
        let mut body = json!({"model": "gpt-4.1", "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    // ---- decode_request / to_neutral ----

    #[test]
    fn decodes_the_codex_request() {
        let req = decode_request(CODEX).unwrap();
        assert_eq!(req.model, "gpt-5-codex");
        assert!(req.stream && !req.store && !req.background);
        assert_eq!(req.previous_response_id, None);
        assert_eq!(req.input_items.len(), 8);
        assert!(req.prompt_bytes > 500, "{}", req.prompt_bytes);

        let (n, drops) = req.to_neutral(&[]);
        assert!(n.stream);
        // The instructions, then the developer message that leads the conversation.
        assert_eq!(n.system.len(), 2);
        assert!(n.system[0].starts_with("You are Codex"));
        assert!(n.system[1].contains("workspace-write"));
        let roles: Vec<Role> = n.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Assistant,
                Role::User
            ]
        );
        let call = &n.messages[2];
        assert!(call
            .reasoning
            .as_deref()
            .unwrap()
            .contains("run the test suite"));
        // OpenAI's encrypted reasoning is for OpenAI only: never a neutral signature.
        assert_eq!(call.reasoning_signature, None);
        assert_eq!(call.tool_calls.len(), 1);
        assert_eq!(call.tool_calls[0].id, "call_Xk2Ff8cVnU3wJ1pS0mQe7T4b");
        assert_eq!(call.tool_calls[0].name, "shell");
        let args: Value = serde_json::from_str(&call.tool_calls[0].arguments).unwrap();
        assert_eq!(args["timeout_ms"], 120000);
        assert_eq!(
            n.messages[3].tool_call_id.as_deref(),
            Some("call_Xk2Ff8cVnU3wJ1pS0mQe7T4b")
        );
        assert!(n.messages[3].joined_text().contains("1 failed"));
        assert!(n.messages[4].joined_text().contains("parses_empty_input"));
        assert_eq!(n.messages[5].joined_text(), "Fix it.");

        let names: Vec<&str> = n.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["shell", "update_plan"]);
        assert_eq!(n.tools[0].parameters["required"], json!(["command"]));
        assert_eq!(n.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(n.parallel_tool_calls, Some(false));
        assert_eq!(n.reasoning, Some(Reasoning::Effort("medium".into())));
        let mut extra: Vec<&str> = n.extra.keys().map(String::as_str).collect();
        extra.sort_unstable();
        assert_eq!(
            extra,
            [
                "include.reasoning.encrypted_content",
                "input.reasoning.encrypted_content",
                "prompt_cache_key",
                "text.verbosity",
                "tools.web_search"
            ]
        );
        assert_eq!(drops, vec![Drop::approximated("reasoning.summary")]);
        // The raw body is what a Responses upstream gets, untouched but for the model.
        let (up, drops) = req.upstream_body("gpt-5-codex-2025");
        assert!(drops.is_empty());
        assert_eq!(up["model"], "gpt-5-codex-2025");
        let mut original: Map<String, Value> = serde_json::from_slice(CODEX).unwrap();
        original.insert("model".into(), json!("gpt-5-codex-2025"));
        assert_eq!(up, original);
        // A turn served by another provider is left out of what OpenAI is given.
        let mut foreign: Value = serde_json::from_slice(CODEX).unwrap();
        foreign["input"][3]["encrypted_content"] = json!("edgerelay-signature:EqQB");
        let req = decode(foreign).unwrap();
        let (up, drops) = req.upstream_body("gpt-5-codex");
        assert_eq!(up["input"].as_array().unwrap().len(), 7);
        assert_eq!(up["input"][3]["type"], "function_call");
        assert_eq!(
            drops,
            vec![Drop::dropped("input.reasoning.encrypted_content")]
        );
    }

    #[test]
    fn decodes_the_agents_sdk_request() {
        let req = decode_request(AGENTS).unwrap();
        assert!(!req.stream && req.store);
        // Messages without `type` are typed, string content becomes a part.
        assert_eq!(
            req.input_items[0],
            json!({"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What's the weather in Tokyo right now?"}]})
        );
        let (n, drops) = req.to_neutral(&[]);
        assert_eq!(
            n.system,
            ["You are a weather assistant. Use the tools to answer, then reply with the final answer."]
        );
        assert_eq!(n.messages.len(), 3);
        assert_eq!(n.messages[1].tool_calls[0].name, "get_weather");
        assert_eq!(n.messages[2].role, Role::Tool);
        assert_eq!(n.temperature, Some(0.3));
        assert_eq!(n.parallel_tool_calls, Some(true));
        assert!(matches!(
            &n.response_format,
            Some(ResponseFormat::JsonSchema { name, strict: true, schema })
                if name == "final_output" && schema["required"] == json!(["summary", "temperature_c"])
        ));
        // Metadata and truncation "disabled" are the relay's to keep; nothing is left over.
        assert!(n.extra.is_empty(), "{:?}", n.extra);
        assert_eq!(drops, vec![Drop::approximated("tools.strict")]);
    }

    #[test]
    fn string_input_is_one_user_message_and_items_get_stored_ids() {
        let req =
            decode(json!({"model": "m", "input": "Tell me a joke", "instructions": "Be brief"}))
                .unwrap();
        assert_eq!(req.prompt_bytes, "Tell me a joke".len() + "Be brief".len());
        let (n, drops) = req.to_neutral(&[]);
        assert!(drops.is_empty());
        assert_eq!(n.system, ["Be brief"]);
        assert_eq!(
            n.messages,
            vec![Message::text(Role::User, "Tell me a joke")]
        );
        let stored = req.stored_input_items("resp_abc");
        assert_eq!(
            stored,
            vec![
                json!({"id": "msg_abc_in0", "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_text", "text": "Tell me a joke"}]})
            ]
        );
        // Ids the client gave are kept.
        let req = decode(json!({"model": "m", "input": [
            {"type": "function_call_output", "call_id": "c", "output": "ok", "id": "fco_client"}]}))
        .unwrap();
        assert_eq!(req.stored_input_items("resp_x")[0]["id"], "fco_client");
    }

    #[test]
    fn previous_items_lead_and_references_resolve() {
        let first =
            decode(json!({"model": "m", "instructions": "old rules", "input": "What is 2+2?"}))
                .unwrap();
        let echo = ResponseEcho::new(&first, "resp_one", 1, "m");
        let mut reply = Message::text(Role::Assistant, "4");
        reply.reasoning = Some("Adding.".into());
        reply.reasoning_signature = Some("sig-anthropic".into());
        let response = encode_response(
            &ChatResponse {
                id: "x".into(),
                model: "m".into(),
                created_s: 1,
                message: reply,
                finish_reason: Some(FinishReason::Stop),
                stop_sequence: None,
                usage: None,
            },
            &echo,
        );
        let previous = conversation_items(&first, &response);
        assert_eq!(previous.len(), 3, "{previous:?}");

        let second = decode(json!({"model": "m", "previous_response_id": "resp_one",
            "instructions": "new rules",
            "input": [{"type": "item_reference", "id": "msg_one_in0"}, {"role": "user", "content": "And 3+3?"},
                {"id": "nowhere"}]}))
        .unwrap();
        assert_eq!(second.previous_response_id.as_deref(), Some("resp_one"));
        let (n, drops) = second.to_neutral(&previous);
        // Old instructions are not carried over.
        assert_eq!(n.system, ["new rules"]);
        let texts: Vec<(Role, String)> = n
            .messages
            .iter()
            .map(|m| (m.role, m.joined_text()))
            .collect();
        assert_eq!(
            texts,
            [
                (Role::User, "What is 2+2?".to_string()),
                (Role::Assistant, "4".to_string()),
                (Role::User, "What is 2+2?".to_string()),
                (Role::User, "And 3+3?".to_string())
            ]
        );
        // The relay's own wrapping of another provider's signature comes back as it was.
        assert_eq!(n.messages[1].reasoning.as_deref(), Some("Adding."));
        assert_eq!(
            n.messages[1].reasoning_signature.as_deref(),
            Some("sig-anthropic")
        );
        assert!(!n.extra.contains_key("input.reasoning.encrypted_content"));
        assert_eq!(drops, vec![Drop::dropped("input.item_reference")]);
    }

    #[test]
    fn unrepresentable_input_is_reported() {
        let req = decode(json!({"model": "m", "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"},
                {"type": "input_image", "file_id": "file_1"},
                {"type": "input_file", "file_id": "file_2"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
            {"role": "developer", "content": "later rule"}],
            "tools": [{"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp"},
                {"type": "function", "name": "f"}],
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]},
            "truncation": "auto", "service_tier": "flex", "background": true}))
        .unwrap();
        let (n, drops) = req.to_neutral(&[]);
        assert!(matches!(
            &n.messages[0].content[1],
            Part::Image(ImageSource::Base64 { media_type, .. }) if media_type == "image/png"
        ));
        assert_eq!(n.messages[0].content.len(), 2);
        assert_eq!(n.messages[1].joined_text(), "I can't.");
        // A developer message after the conversation started keeps its place.
        assert_eq!(n.messages[2], Message::text(Role::System, "later rule"));
        assert_eq!(
            n.tools[0].parameters,
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(n.tool_choice, Some(ToolChoice::Required));
        let mut extra: Vec<&str> = n.extra.keys().map(String::as_str).collect();
        extra.sort_unstable();
        assert_eq!(
            extra,
            ["background", "service_tier", "tools.mcp", "truncation"]
        );
        assert_eq!(
            drops,
            vec![
                Drop::approximated("input.content.input_image.detail"),
                Drop::dropped("input.content.input_image.file_id"),
                Drop::dropped("input.content.input_file"),
                Drop::approximated("input.content.refusal"),
                Drop::dropped("input.web_search_call"),
                Drop::approximated("tool_choice.allowed_tools"),
            ]
        );
        // A built-in tool forced: only a Responses upstream can do it.
        let req = decode(with(json!({"tools": [{"type": "web_search_preview"}],
            "tool_choice": {"type": "web_search_preview"}})))
        .unwrap();
        let (n, _) = req.to_neutral(&[]);
        assert_eq!(n.tool_choice, None);
        assert!(
            n.extra.contains_key("tool_choice") && n.extra.contains_key("tools.web_search_preview")
        );
    }

    #[test]
    fn refusals_name_their_field() {
        let item = |v: Value| {
            with(
                json!({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
            {"role": "user", "content": "c"}, v]}),
            )
        };
        let part = |role: &str, p: Value| with(json!({"input": [{"role": role, "content": [p]}]}));
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"input": "hi"}),
                "missing_required_parameter",
                "model",
            ),
            (json!({"model": 4, "input": "hi"}), "invalid_type", "model"),
            (
                json!({"model": " ", "input": "hi"}),
                "invalid_value",
                "model",
            ),
            (with(json!({"input": 5})), "invalid_type", "input"),
            (
                item(json!({"type": "telepathy"})),
                "invalid_value",
                "input[3].type",
            ),
            (
                item(json!({"content": "x"})),
                "missing_required_parameter",
                "input[3].type",
            ),
            (item(json!({"type": 7})), "invalid_type", "input[3].type"),
            (
                item(json!({"role": "robot", "content": "x"})),
                "invalid_value",
                "input[3].role",
            ),
            (
                item(json!({"type": "message", "role": "user"})),
                "missing_required_parameter",
                "input[3].content",
            ),
            (
                item(json!({"type": "function_call", "name": "f", "arguments": "{}"})),
                "missing_required_parameter",
                "input[3].call_id",
            ),
            (
                item(
                    json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}),
                ),
                "invalid_type",
                "input[3].arguments",
            ),
            (
                item(json!({"type": "function_call_output", "call_id": "c"})),
                "missing_required_parameter",
                "input[3].output",
            ),
            (
                item(
                    json!({"type": "function_call_output", "call_id": "c", "output": [{"type": "output_text", "text": "x"}]}),
                ),
                "invalid_value",
                "input[3].output[0].type",
            ),
            (
                item(json!({"type": "reasoning", "id": "rs_1"})),
                "missing_required_parameter",
                "input[3].summary",
            ),
            (
                item(json!({"type": "reasoning", "summary": [{"type": "text", "text": "x"}]})),
                "invalid_value",
                "input[3].summary[0].type",
            ),
            (
                item(json!({"type": "reasoning", "summary": [], "encrypted_content": 1})),
                "invalid_type",
                "input[3].encrypted_content",
            ),
            (
                item(json!({"type": "item_reference"})),
                "missing_required_parameter",
                "input[3].id",
            ),
            (
                part("user", json!({"type": "picture"})),
                "invalid_value",
                "input[0].content[0].type",
            ),
            (
                part("user", json!({"type": "output_text", "text": "x"})),
                "invalid_value",
                "input[0].content[0].type",
            ),
            (
                part("assistant", json!({"type": "input_text", "text": "x"})),
                "invalid_value",
                "input[0].content[0].type",
            ),
            (
                part("user", json!({"type": "input_text"})),
                "missing_required_parameter",
                "input[0].content[0].text",
            ),
            (
                part("user", json!({"type": "input_image"})),
                "missing_required_parameter",
                "input[0].content[0].image_url",
            ),
            (
                part(
                    "user",
                    json!({"type": "input_image", "image_url": "https://x/y.png", "detail": "huge"}),
                ),
                "invalid_value",
                "input[0].content[0].detail",
            ),
            (
                part("user", json!({"type": "input_file", "filename": "a.pdf"})),
                "missing_required_parameter",
                "input[0].content[0].file_id",
            ),
            (
                part("assistant", json!({"type": "refusal"})),
                "missing_required_parameter",
                "input[0].content[0].refusal",
            ),
            (with(json!({"tools": {}})), "invalid_type", "tools"),
            (
                with(json!({"tools": [{"type": "teleport"}]})),
                "invalid_value",
                "tools[0].type",
            ),
            (
                with(json!({"tools": [{"type": "function"}]})),
                "missing_required_parameter",
                "tools[0].name",
            ),
            (
                with(json!({"tools": [{"type": "function", "name": "bad name"}]})),
                "invalid_value",
                "tools[0].name",
            ),
            (
                with(json!({"tools": [{"type": "function", "name": "f", "parameters": "x"}]})),
                "invalid_type",
                "tools[0].parameters",
            ),
            (
                with(json!({"tools": [{"type": "function", "name": "f", "strict": "yes"}]})),
                "invalid_type",
                "tools[0].strict",
            ),
            (
                with(json!({"tools": [{"type": "mcp"}]})),
                "missing_required_parameter",
                "tools[0].server_label",
            ),
            (
                with(json!({"tool_choice": "always"})),
                "invalid_value",
                "tool_choice",
            ),
            (
                with(json!({"tool_choice": {"type": "magic"}})),
                "invalid_value",
                "tool_choice.type",
            ),
            (
                with(json!({"tool_choice": {"type": "function"}})),
                "missing_required_parameter",
                "tool_choice.name",
            ),
            (
                with(json!({"tool_choice": {"type": "allowed_tools", "mode": "any", "tools": []}})),
                "invalid_value",
                "tool_choice.mode",
            ),
            (
                with(json!({"tool_choice": 3})),
                "invalid_type",
                "tool_choice",
            ),
            (
                with(json!({"text": {"format": {"type": "xml"}}})),
                "invalid_value",
                "text.format.type",
            ),
            (
                with(json!({"text": {"format": {"type": "json_schema", "schema": {}}}})),
                "missing_required_parameter",
                "text.format.name",
            ),
            (
                with(json!({"text": {"format": {"type": "json_schema", "name": "s"}}})),
                "missing_required_parameter",
                "text.format.schema",
            ),
            (
                with(json!({"text": {"verbosity": "loud"}})),
                "invalid_value",
                "text.verbosity",
            ),
            (
                with(json!({"reasoning": {"effort": "extreme"}})),
                "invalid_value",
                "reasoning.effort",
            ),
            (
                with(json!({"reasoning": {"summary": "long"}})),
                "invalid_value",
                "reasoning.summary",
            ),
            (
                with(json!({"reasoning": "high"})),
                "invalid_type",
                "reasoning",
            ),
            (
                with(json!({"max_output_tokens": 10})),
                "invalid_value",
                "max_output_tokens",
            ),
            (
                with(json!({"max_output_tokens": -1})),
                "invalid_type",
                "max_output_tokens",
            ),
            (
                with(json!({"temperature": 3})),
                "invalid_value",
                "temperature",
            ),
            (with(json!({"top_p": 1.5})), "invalid_value", "top_p"),
            (
                with(json!({"top_logprobs": 21})),
                "invalid_value",
                "top_logprobs",
            ),
            (
                with(json!({"include": ["everything"]})),
                "invalid_value",
                "include[0]",
            ),
            (
                with(json!({"include": "reasoning.encrypted_content"})),
                "invalid_type",
                "include",
            ),
            (
                with(json!({"metadata": {"k": 1}})),
                "invalid_type",
                "metadata.k",
            ),
            (with(json!({"store": "no"})), "invalid_type", "store"),
            (with(json!({"stream": 1})), "invalid_type", "stream"),
            (
                with(json!({"parallel_tool_calls": "yes"})),
                "invalid_type",
                "parallel_tool_calls",
            ),
            (
                with(json!({"truncation": "middle"})),
                "invalid_value",
                "truncation",
            ),
            (
                with(json!({"instructions": ["a"]})),
                "invalid_type",
                "instructions",
            ),
            (
                with(json!({"previous_response_id": 5})),
                "invalid_type",
                "previous_response_id",
            ),
            (
                with(json!({"previous_response_id": "resp_1", "conversation": "conv_1"})),
                "invalid_value",
                "previous_response_id",
            ),
            (
                with(json!({"background": true, "store": false})),
                "invalid_value",
                "background",
            ),
            (with(json!({"user": 5})), "invalid_type", "user"),
        ];
        for (body, code, param) in cases {
            let e = decode(body.clone()).expect_err(&body.to_string());
            assert_eq!((e.code(), e.param()), (code, Some(param)), "{body}");
            assert_eq!(e.status(), 400);
        }
        let mut long = Map::new();
        for i in 0..17 {
            long.insert(format!("k{i}"), json!("v"));
        }
        let e = decode(with(json!({"metadata": long}))).unwrap_err();
        assert_eq!(e.param(), Some("metadata"));
    }

    #[test]
    fn rejects_bad_json_and_non_objects() {
        for body in [&b"{"[..], b"[1]", b"", b"\"x\""] {
            assert_eq!(decode_request(body).unwrap_err().code(), "invalid_json");
        }
        // Input may be left out (a prompt template or a previous response can stand for it).
        let req = decode(json!({"model": "m", "previous_response_id": "resp_1"})).unwrap();
        assert!(req.input_items.is_empty());
    }

    // ---- encode_response ----

    fn reply(message: Message, finish: FinishReason, usage: Option<Usage>) -> ChatResponse {
        ChatResponse {
            id: "upstream".into(),
            model: "up".into(),
            created_s: 9,
            message,
            finish_reason: Some(finish),
            stop_sequence: None,
            usage,
        }
    }

    fn echo_for(body: Value, id: &str) -> ResponseEcho {
        ResponseEcho::new(&decode(body).unwrap(), id, 1741476542, "gpt-4.1")
    }

    #[test]
    fn encodes_a_text_reply_in_the_reference_shape() {
        let echo = echo_for(
            json!({"model": "gpt-4.1", "input": "Tell me a story"}),
            "resp_67cc",
        );
        let text = "Under a silver moon, a unicorn named Lumina found a pool that held the stars, and wished that every dreamer might find one too.";
        let r = encode_response(
            &reply(
                Message::text(Role::Assistant, text),
                FinishReason::Stop,
                Some(Usage::new(36, 31)),
            ),
            &echo,
        );
        let reference: Value = serde_json::from_slice(REPLY_TEXT).unwrap();
        // Every field OpenAI sends is there, with OpenAI's defaults.
        for (key, value) in reference.as_object().unwrap() {
            assert!(r.get(key).is_some(), "missing {key}");
            if !["id", "output", "model", "usage", "text", "service_tier"].contains(&key.as_str()) {
                assert_eq!(&r[key], value, "{key}");
            }
        }
        assert!(r.get("output_text").is_none(), "SDKs compute output_text");
        assert_eq!(r["text"]["format"], json!({"type": "text"}));
        assert_eq!(
            r["output"],
            json!([{"id": "msg_67cc_0", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}])
        );
        let mut usage = reference["usage"].clone();
        usage["input_tokens_details"]["cache_write_tokens"] = json!(0);
        assert_eq!(r["usage"], usage);
    }

    #[test]
    fn encodes_reasoning_calls_and_usage() {
        let echo = echo_for(
            json!({"model": "o4-mini", "input": "weather?", "store": false, "instructions": "be useful",
                "reasoning": {"effort": "high"}, "tools": [{"type": "function", "name": "get_weather"}],
                "tool_choice": "required", "max_output_tokens": 500, "metadata": {"a": "b"},
                "previous_response_id": "resp_prev", "temperature": 0.2, "user": "u1"}),
            "resp_r1",
        );
        let mut m = Message::new(Role::Assistant, Vec::new());
        m.reasoning = Some("Need the weather.".into());
        m.reasoning_signature = Some("EqQB".into());
        m.tool_calls = vec![
            ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            },
            ToolCall {
                id: String::new(),
                name: "get_weather".into(),
                arguments: "{}".into(),
            },
        ];
        let usage = Usage::from_inclusive(291, 214, 128, 0, 192);
        let r = encode_response(&reply(m, FinishReason::ToolCalls, Some(usage)), &echo);
        assert_eq!(r["status"], "completed");
        assert_eq!(
            r["output"],
            json!([
                {"id": "rs_r1_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Need the weather."}],
                    "encrypted_content": "edgerelay-signature:EqQB"},
                {"id": "fc_r1_1", "type": "function_call", "status": "completed", "arguments": "{\"city\":\"Paris\"}",
                    "call_id": "toolu_1", "name": "get_weather"},
                {"id": "fc_r1_2", "type": "function_call", "status": "completed", "arguments": "{}",
                    "call_id": "call_r1_2", "name": "get_weather"}
            ])
        );
        assert_eq!(
            r["usage"],
            json!({"input_tokens": 291, "input_tokens_details": {"cached_tokens": 128, "cache_write_tokens": 0},
                "output_tokens": 214, "output_tokens_details": {"reasoning_tokens": 192}, "total_tokens": 505})
        );
        for (key, value) in [
            ("store", json!(false)),
            ("instructions", json!("be useful")),
            ("reasoning", json!({"effort": "high", "summary": null})),
            ("tool_choice", json!("required")),
            ("max_output_tokens", json!(500)),
            ("metadata", json!({"a": "b"})),
            ("previous_response_id", json!("resp_prev")),
            ("temperature", json!(0.2)),
            ("user", json!("u1")),
            ("parallel_tool_calls", json!(true)),
            ("error", Value::Null),
            ("incomplete_details", Value::Null),
        ] {
            assert_eq!(r[key], value, "{key}");
        }
        assert_eq!(r["tools"][0]["name"], "get_weather");
        // What a reply from a summary needs for the relay's usage row, read back.
        let s = summarize_reply(r.to_string().as_bytes());
        assert_eq!(s.usage, Some(usage));
        assert_eq!(s.completion_bytes, "Need the weather.".len() + 16 + 2);
    }

    #[test]
    fn finish_reasons_set_the_status() {
        let echo = echo_for(json!({"model": "m", "input": "x"}), "resp_s");
        let text = || Message::text(Role::Assistant, "partial");
        let r = encode_response(&reply(text(), FinishReason::Length, None), &echo);
        assert_eq!(
            (r["status"].clone(), r["incomplete_details"].clone()),
            (json!("incomplete"), json!({"reason": "max_output_tokens"}))
        );
        assert_eq!(r["output"][0]["status"], "incomplete");
        assert_eq!(r["usage"], Value::Null);
        let r = encode_response(&reply(text(), FinishReason::ContentFilter, None), &echo);
        assert_eq!(r["incomplete_details"], json!({"reason": "content_filter"}));
        let r = encode_response(&reply(text(), FinishReason::Error, None), &echo);
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error"]["code"], "server_error");
        let r = encode_response(&reply(text(), FinishReason::StopSequence, None), &echo);
        assert_eq!(r["status"], "completed");
        // An empty reply is still one (empty) message.
        let r = encode_response(
            &reply(
                Message::new(Role::Assistant, Vec::new()),
                FinishReason::Stop,
                None,
            ),
            &echo,
        );
        assert_eq!(r["output"][0]["content"][0]["text"], "");
    }

    #[test]
    fn reply_fixtures_summarize_and_continue() {
        let s = summarize_reply(REPLY_TEXT);
        assert_eq!(s.usage, Some(Usage::new(36, 31)));
        let reference: Value = serde_json::from_slice(REPLY_TEXT).unwrap();
        let text = reference["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap();
        assert_eq!(s.completion_bytes, text.len());
        let s = summarize_reply(REPLY_CALL);
        let u = s.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cache_read_tokens,
                u.completion_tokens,
                u.reasoning_tokens
            ),
            (291, 128, 214, 192)
        );
        assert_eq!(summarize_reply(b"<html>"), ReplySummary::default());

        // A continuation of the stored function-call reply answers its call.
        let first = decode(json!({"model": "o4-mini", "input": "Weather in Paris?"})).unwrap();
        let stored: Value = serde_json::from_slice(REPLY_CALL).unwrap();
        let previous = conversation_items(&first, &stored);
        assert_eq!(previous.len(), 3);
        assert_eq!(
            previous[0]["id"],
            "msg_68b1f0a2c3d48190a4e5f6b7c8d9e0f10a2b3c4d5e6f7a8b_in0"
        );
        let next = decode(json!({"model": "o4-mini", "previous_response_id": stored["id"], "input": [
            {"type": "function_call_output", "call_id": "call_8cFq2hXbD6rYwP1nLkT3sVzA", "output": "18°C, sunny"}]}))
        .unwrap();
        let (n, drops) = next.to_neutral(&previous);
        assert!(drops.is_empty(), "{drops:?}");
        let roles: Vec<Role> = n.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool]);
        let assistant = &n.messages[1];
        assert!(assistant
            .reasoning
            .as_deref()
            .unwrap()
            .starts_with("**Checking the weather**"));
        assert_eq!(assistant.tool_calls[0].id, "call_8cFq2hXbD6rYwP1nLkT3sVzA");
        assert_eq!(
            n.messages[2].tool_call_id,
            Some(assistant.tool_calls[0].id.clone())
        );
    }

    // ---- streams ----

    /// The frames of a Responses stream as (event line, data).
    fn frames(wire: &[u8]) -> Vec<(String, Value)> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser.push(wire, &mut events).unwrap();
        parser.finish(&mut events).unwrap();
        events
            .into_iter()
            .map(|e| {
                let data: Value = serde_json::from_str(&e.data).unwrap();
                (e.event.unwrap_or_default(), data)
            })
            .collect()
    }

    /// Checks what every Responses stream must hold, and returns the final Response object:
    /// event lines name the data's type; sequence numbers count up from 0; a stream opens with
    /// `response.created` and `.in_progress` and ends with one terminal event; every item is
    /// added (at the next output index) before any event about it and done once; deltas add
    /// up to their `.done`; the final output is the done items.
    fn check_stream(wire: &[u8]) -> Value {
        let frames = frames(wire);
        let kinds: Vec<&str> = frames.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds[..2],
            ["response.created", "response.in_progress"],
            "{kinds:?}"
        );
        let mut items: Vec<(String, Option<Value>)> = Vec::new();
        let mut texts: BTreeMap<(String, &str), String> = BTreeMap::new();
        for (n, (kind, data)) in frames.iter().enumerate() {
            assert_eq!(data["type"].as_str(), Some(kind.as_str()));
            assert_eq!(data["sequence_number"], json!(n), "{kind}");
            let terminal = matches!(
                kind.as_str(),
                "response.completed" | "response.incomplete" | "response.failed"
            );
            assert_eq!(terminal, n == frames.len() - 1, "{kind} at {n}");
            let index = data["output_index"].as_u64().map(|i| i as usize);
            match kind.as_str() {
                "response.output_item.added" => {
                    assert_eq!(index, Some(items.len()));
                    items.push((data["item"]["id"].as_str().unwrap().to_string(), None));
                }
                "response.output_item.done" => {
                    let (id, done) = &mut items[index.unwrap()];
                    assert_eq!(data["item"]["id"].as_str(), Some(id.as_str()));
                    assert!(done.is_none(), "done twice");
                    *done = Some(data["item"].clone());
                }
                k if data.get("item_id").is_some() => {
                    let (id, done) = &items[index.unwrap()];
                    assert_eq!(data["item_id"].as_str(), Some(id.as_str()), "{k}");
                    assert!(done.is_none(), "{k} after its item was done");
                    let key = (id.clone(), k.rsplit_once('.').map_or(k, |(s, _)| s));
                    if k.ends_with(".delta") {
                        texts
                            .entry(key)
                            .or_default()
                            .push_str(data["delta"].as_str().unwrap());
                    } else if k.ends_with("text.done") || k.ends_with("arguments.done") {
                        let full = data.get("text").or(data.get("arguments")).unwrap();
                        assert_eq!(
                            texts.get(&key).map(String::as_str).unwrap_or(""),
                            full.as_str().unwrap(),
                            "{k}"
                        );
                    }
                }
                _ => {}
            }
        }
        let response = frames.last().unwrap().1["response"].clone();
        let done: Vec<Value> = items
            .into_iter()
            .map(|(_, d)| d.expect("every item done"))
            .collect();
        assert_eq!(response["output"], Value::Array(done));
        response
    }

    fn encode_events(echo: ResponseEcho, events: &[StreamEvent]) -> (Vec<u8>, StreamEncoder) {
        let mut encoder = StreamEncoder::new(echo);
        let mut out = Vec::new();
        for e in events {
            encoder.push(e, &mut out);
        }
        encoder.finish(&mut out);
        (out, encoder)
    }

    fn kinds(wire: &[u8]) -> Vec<String> {
        frames(wire).into_iter().map(|(k, _)| k).collect()
    }

    fn tool_start(index: usize, id: &str, name: &str) -> StreamEvent {
        StreamEvent::ToolCallStart {
            index,
            id: id.into(),
            name: name.into(),
        }
    }

    fn tool_delta(index: usize, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCallDelta {
            index,
            arguments: arguments.into(),
        }
    }

    #[test]
    fn stream_encoder_gives_what_encode_response_gives() {
        let body = json!({"model": "m", "input": "weather?", "reasoning": {"effort": "low", "summary": "auto"}});
        let events = vec![
            StreamEvent::Start {
                id: "up_1".into(),
                model: "up".into(),
            },
            StreamEvent::ReasoningDelta("Need".into()),
            StreamEvent::ReasoningDelta(" weather.".into()),
            StreamEvent::ReasoningSignature("EqQB".into()),
            StreamEvent::TextDelta("Let me".into()),
            StreamEvent::TextDelta(" check – é😀".into()),
            tool_start(0, "toolu_1", "get_weather"),
            tool_delta(0, "{\"city\""),
            tool_delta(0, ":\"Paris\"}"),
            tool_start(1, "toolu_2", "get_time"),
            tool_delta(1, "{}"),
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None,
            },
            StreamEvent::Usage(Usage::from_inclusive(100, 40, 60, 0, 10)),
        ];
        let (wire, encoder) = encode_events(echo_for(body.clone(), "resp_st"), &events);
        let response = check_stream(&wire);
        assert_eq!(Some(&response), encoder.response());
        assert_eq!(
            kinds(&wire),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let mut message = Message::text(Role::Assistant, "Let me check – é😀");
        message.reasoning = Some("Need weather.".into());
        message.reasoning_signature = Some("EqQB".into());
        message.tool_calls = vec![
            ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            },
            ToolCall {
                id: "toolu_2".into(),
                name: "get_time".into(),
                arguments: "{}".into(),
            },
        ];
        let whole = encode_response(
            &reply(
                message,
                FinishReason::ToolCalls,
                Some(Usage::from_inclusive(100, 40, 60, 0, 10)),
            ),
            &echo_for(body, "resp_st"),
        );
        assert_eq!(response, whole);
        // The opening events carry the response in progress, without output or usage.
        let first = &frames(&wire)[0].1["response"];
        assert_eq!(
            (
                first["status"].clone(),
                first["output"].clone(),
                first["usage"].clone()
            ),
            (json!("in_progress"), json!([]), Value::Null)
        );
        assert_eq!(first["id"], "resp_st");
    }

    #[test]
    fn stream_encoder_handles_odd_orders() {
        let echo = || echo_for(json!({"model": "m", "input": "x"}), "resp_odd");
        // Usage before anything, interleaved parallel calls, text after the calls, a delta
        // for a call that never started, and a late delta for a closed call.
        let events = vec![
            StreamEvent::Usage(Usage::new(5, 1)),
            tool_start(0, "c0", "a"),
            tool_start(1, "c1", "b"),
            tool_delta(1, "{\"y\":"),
            tool_delta(0, "{\"x\":1}"),
            tool_delta(1, "2}"),
            StreamEvent::TextDelta("Done.".into()),
            tool_delta(2, "{}"),
            StreamEvent::Usage(Usage::new(5, 9)),
            StreamEvent::Finish {
                reason: FinishReason::Stop,
                stop_sequence: None,
            },
        ];
        let (wire, _) = encode_events(echo(), &events);
        let response = check_stream(&wire);
        let output = response["output"].as_array().unwrap();
        let summary: Vec<(&str, &str)> = output
            .iter()
            .map(|i| {
                (
                    i["type"].as_str().unwrap(),
                    i["arguments"]
                        .as_str()
                        .or(i["content"][0]["text"].as_str())
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("function_call", "{\"x\":1}"),
                ("function_call", "{\"y\":2}"),
                ("message", "Done."),
                ("function_call", "{}")
            ]
        );
        assert_eq!(output[3]["call_id"], "call_odd_3");
        assert_eq!(response["usage"]["output_tokens"], 9);

        let late = vec![
            tool_start(0, "c0", "a"),
            tool_delta(0, "{\"a\""),
            StreamEvent::TextDelta("t".into()),
            tool_delta(0, ":1}"),
        ];
        let (wire, encoder) = encode_events(echo(), &late);
        let frames = frames(&wire);
        let last_delta = frames
            .iter()
            .rfind(|(k, _)| k == "response.function_call_arguments.delta")
            .unwrap();
        assert_eq!(last_delta.1["item_id"], "fc_odd_0");
        assert_eq!(
            encoder.response().unwrap()["output"][0]["arguments"],
            "{\"a\":1}"
        );
    }

    #[test]
    fn stream_encoder_reports_errors_as_failed() {
        let (wire, encoder) = encode_events(
            echo_for(json!({"model": "m", "input": "x"}), "resp_err"),
            &[
                StreamEvent::TextDelta("Once".into()),
                StreamEvent::Error {
                    status: 529,
                    message: "Overloaded".into(),
                },
                StreamEvent::TextDelta("more".into()),
            ],
        );
        let response = check_stream(&wire);
        assert_eq!(
            kinds(&wire).last().map(String::as_str),
            Some("response.failed")
        );
        assert_eq!(response["status"], "failed");
        assert_eq!(
            response["error"],
            json!({"code": "server_error", "message": "Overloaded"})
        );
        assert_eq!(response["output"][0]["status"], "incomplete");
        assert!(!String::from_utf8_lossy(&wire).contains("more"));
        assert_eq!(encoder.response(), Some(&response));
        let (wire, _) = encode_events(
            echo_for(json!({"model": "m", "input": "x"}), "resp_err"),
            &[StreamEvent::Error {
                status: 429,
                message: "Slow down".into(),
            }],
        );
        assert_eq!(check_stream(&wire)["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn stream_encoder_finish_closes_everything() {
        let echo = || echo_for(json!({"model": "m", "input": "x"}), "resp_f");
        let (wire, _) = encode_events(echo(), &[StreamEvent::ReasoningDelta("hmm".into())]);
        let response = check_stream(&wire);
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["summary"][0]["text"], "hmm");
        // Cut off by the token limit: incomplete, and so is the open item.
        let (wire, _) = encode_events(
            echo(),
            &[
                StreamEvent::TextDelta("partial".into()),
                StreamEvent::Finish {
                    reason: FinishReason::Length,
                    stop_sequence: None,
                },
            ],
        );
        let response = check_stream(&wire);
        assert_eq!(
            kinds(&wire).last().map(String::as_str),
            Some("response.incomplete")
        );
        assert_eq!(
            response["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(response["output"][0]["status"], "incomplete");
        // An empty stream is still a well-formed response.
        let (wire, encoder) = encode_events(echo(), &[]);
        assert_eq!(
            kinds(&wire),
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
        assert_eq!(encoder.response().unwrap()["output"], json!([]));
        // A signature alone is a reasoning item of its own.
        let (wire, _) = encode_events(
            echo(),
            &[
                StreamEvent::ReasoningSignature("c2ln".into()),
                tool_start(0, "c", "f"),
            ],
        );
        let response = check_stream(&wire);
        assert_eq!(
            response["output"][0],
            json!({"id": "rs_f_0", "type": "reasoning", "summary": [], "encrypted_content": "edgerelay-signature:c2ln"})
        );
    }

    /// An upstream stream decoded into neutral events, split at `cut`, then encoded.
    fn translate(fixture: &[u8], cut: Option<usize>, anthropic_upstream: bool) -> Vec<u8> {
        let pieces: Vec<&[u8]> = match cut {
            None => (0..fixture.len()).map(|i| &fixture[i..i + 1]).collect(),
            Some(c) => vec![&fixture[..c], &fixture[c..]],
        };
        let mut events = Vec::new();
        if anthropic_upstream {
            let mut d = anthropic::StreamDecoder::new();
            for p in &pieces {
                d.push(p, &mut events).unwrap();
            }
            d.finish(&mut events).unwrap();
        } else {
            let mut d = openai::StreamDecoder::new();
            for p in &pieces {
                d.push(p, &mut events).unwrap();
            }
            d.finish(&mut events).unwrap();
        }
        let echo = echo_for(json!({"model": "m", "input": "x"}), "resp_tr");
        encode_events(echo, &events).0
    }

    #[test]
    fn translated_streams_are_independent_of_chunking() {
        for (fixture, anthropic_upstream) in [
            (
                &include_bytes!("../../tests/fixtures/anthropic/stream_thinking.sse")[..],
                true,
            ),
            (
                &include_bytes!("../../tests/fixtures/anthropic/stream_tool_use.sse")[..],
                true,
            ),
            (
                &include_bytes!("../../tests/fixtures/openai/stream_tool_calls.sse")[..],
                false,
            ),
        ] {
            let whole = translate(fixture, Some(fixture.len()), anthropic_upstream);
            let response = check_stream(&whole);
            assert_eq!(response["status"], "completed");
            if anthropic_upstream {
                assert!(response["usage"]["output_tokens"].as_u64().unwrap() > 0);
            }
            // Every seventh cut keeps this quick in debug builds; byte by byte covers the rest.
            for cut in (0..=fixture.len()).step_by(7) {
                assert_eq!(
                    translate(fixture, Some(cut), anthropic_upstream),
                    whole,
                    "cut at {cut}"
                );
            }
            assert_eq!(translate(fixture, None, anthropic_upstream), whole);
        }
        // Anthropic's signed thinking reaches the client as encrypted content it can send back.
        let thinking = translate(
            include_bytes!("../../tests/fixtures/anthropic/stream_thinking.sse"),
            Some(0),
            true,
        );
        let response = check_stream(&thinking);
        assert!(response["output"][0]["encrypted_content"]
            .as_str()
            .unwrap()
            .starts_with("edgerelay-signature:EqQB"));
    }

    // ---- pass-through ----

    fn watch(pieces: &[&[u8]]) -> (Vec<u8>, StreamPassThrough) {
        let mut p = StreamPassThrough::new();
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        (out, p)
    }

    #[test]
    fn pass_through_keeps_bytes_and_reads_the_end_however_split() {
        let summary = "**Multiplying numbers**\n\n27 × 453: 27 × 400 = 10,800, 27 × 53 = 1,431; the sum is 12,231.";
        let expected = [
            (
                STREAM_TEXT,
                Usage::new(11, 10),
                "Hi! How can I help you today? 😀".len(),
            ),
            (
                STREAM_CALL,
                Usage::new(68, 17),
                "{\"location\":\"Paris, France\"}".len(),
            ),
            (
                STREAM_REASONING,
                Usage::from_inclusive(24, 343, 0, 0, 320),
                summary.len() + "27 × 453 = 12,231".len(),
            ),
        ];
        for (fixture, usage, bytes) in expected {
            // The fixtures themselves are well-formed Responses streams.
            let final_response = check_stream(fixture);
            let (out, p) = watch(&[fixture]);
            assert_eq!(out, fixture);
            assert!(p.completed());
            assert_eq!(p.end(), Some(StreamEnd::Completed));
            assert_eq!(p.usage(), Some(usage));
            assert_eq!(p.completion_bytes(), bytes);
            assert_eq!(p.response(), Some(&final_response));
            let same = |q: &StreamPassThrough| {
                q.usage() == p.usage()
                    && q.completion_bytes() == p.completion_bytes()
                    && q.response() == p.response()
            };
            for cut in 0..=fixture.len() {
                let (o, q) = watch(&[&fixture[..cut], &fixture[cut..]]);
                assert!(o == fixture && same(&q), "cut at {cut}");
            }
            let bytes: Vec<&[u8]> = (0..fixture.len()).map(|i| &fixture[i..i + 1]).collect();
            let (o, q) = watch(&bytes);
            assert!(o == fixture && same(&q));
        }
    }

    #[test]
    fn pass_through_sniffs_types_without_event_lines_and_counts_deltas() {
        let text = String::from_utf8(STREAM_REASONING.to_vec()).unwrap();
        let bare: String = text
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (_, p) = watch(&[bare.as_bytes()]);
        assert_eq!(p.usage(), Some(Usage::from_inclusive(24, 343, 0, 0, 320)));
        assert!(p.response().is_some());
        // Cut short before the end: the deltas are the estimate.
        let cut = text.find("event: response.completed").unwrap();
        let (_, p) = watch(&[&STREAM_REASONING[..cut]]);
        let summary = "**Multiplying numbers**\n\n27 × 453: 27 × 400 = 10,800, 27 × 53 = 1,431; the sum is 12,231.";
        let message = "27 × 453 = 12,231";
        assert_eq!(
            (p.usage(), p.end(), p.completion_bytes()),
            (None, None, summary.len() + message.len())
        );
        let (_, p) = watch(&[b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"param\":null,\"sequence_number\":2}\n\n"]);
        assert_eq!(p.end(), Some(StreamEnd::Error));
        assert!(!p.completed());
    }

    // ---- stored responses ----

    #[test]
    fn input_items_list_pages_both_ways() {
        let items: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("msg_{i}"), "type": "message"}))
            .collect();
        let ids = |v: &Value| -> Vec<String> {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect()
        };
        let page = input_items_list(&items, None, 2, ListOrder::Desc);
        assert_eq!(ids(&page), ["msg_4", "msg_3"]);
        assert_eq!(
            (
                page["object"].clone(),
                page["first_id"].clone(),
                page["last_id"].clone(),
                page["has_more"].clone()
            ),
            (json!("list"), json!("msg_4"), json!("msg_3"), json!(true))
        );
        let page = input_items_list(&items, Some("msg_3"), 20, ListOrder::Desc);
        assert_eq!(ids(&page), ["msg_2", "msg_1", "msg_0"]);
        assert_eq!(page["has_more"], false);
        let page = input_items_list(&items, Some("msg_1"), 2, ListOrder::Asc);
        assert_eq!(ids(&page), ["msg_2", "msg_3"]);
        assert_eq!(page["has_more"], true);
        let page = input_items_list(&items, Some("msg_9"), 2, ListOrder::Asc);
        assert_eq!(
            (
                page["data"].clone(),
                page["first_id"].clone(),
                page["has_more"].clone()
            ),
            (json!([]), Value::Null, json!(false))
        );

        assert_eq!(
            parse_list_params(None, None).unwrap(),
            (20, ListOrder::Desc)
        );
        assert_eq!(
            parse_list_params(Some("100"), Some("asc")).unwrap(),
            (100, ListOrder::Asc)
        );
        for (limit, order, param) in [
            (Some("0"), None, "limit"),
            (Some("101"), None, "limit"),
            (Some("x"), None, "limit"),
            (None, Some("up"), "order"),
        ] {
            assert_eq!(
                parse_list_params(limit, order).unwrap_err().param(),
                Some(param)
            );
        }
    }
}
