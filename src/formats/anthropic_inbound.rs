//! Anthropic's Messages API as an inbound format: a client's body → neutral
//! ([`decode_request`], every field validated as Anthropic validates it), the neutral reply
//! and stream → Anthropic's shapes ([`encode_response`], [`StreamEncoder`]), and relay errors
//! in Anthropic's error shape ([`error_body`]).
//!
//! What the neutral model cannot hold while decoding a client request (server tools, document
//! blocks, redacted thinking, …) is kept in `ChatRequest::extra` under a path-like key such as
//! `messages.content.document`, so the encoder of another format reports it as dropped.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::formats::anthropic::{add_thinking, error_type_for_status, stop_reason_name};
use crate::formats::neutral::{
    ChatRequest, ChatResponse, FinishReason, ImageSource, Message, Part, Reasoning, Role,
    StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use crate::formats::sse;

/// A relay error in Anthropic's error shape.
pub fn error_body(err: &RelayError) -> Value {
    // Anthropic's clients retry `overloaded_error` (their 529) differently from `api_error`.
    let kind = match err {
        RelayError::UpstreamOverloaded { .. } => "overloaded_error",
        _ => error_type_for_status(err.status()),
    };
    json!({"type": "error", "error": {"type": kind, "message": err.message()}})
}

// ---- Anthropic as an inbound format: the request ---------------------------------------------

/// A required string field.
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

fn opt_u64(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>, RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| RelayError::invalid_type(path, "a non-negative integer")),
        Some(_) => Err(RelayError::invalid_type(path, "an integer")),
    }
}

fn opt_unit_interval(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, RelayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
            _ => Err(RelayError::invalid_value(key, "must be between 0 and 1")),
        },
        Some(_) => Err(RelayError::invalid_type(key, "a number")),
    }
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

fn keep_extra(req: &mut ChatRequest, key: String, value: &Value) {
    req.extra.entry(key).or_insert_with(|| value.clone());
}

/// Top-level fields the neutral model holds; everything else goes to `extra`.
const HANDLED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "output_config",
    "metadata",
];

/// Anthropic request body → neutral request (`model` = the client's public model name).
/// Validation errors name the field (`messages[1].content[0].type`); bad JSON is
/// [`RelayError::InvalidJson`]. Unknown top-level fields go to `extra`, as do content blocks
/// and tools the neutral model cannot hold (keyed like `messages.content.document`).
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest, RelayError> {
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
    let mut req = ChatRequest {
        model: model.to_string(),
        ..ChatRequest::default()
    };

    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(RelayError::missing("messages")),
        Some(Value::Array(m)) => m,
        Some(_) => {
            return Err(RelayError::invalid_type(
                "messages",
                "an array of message objects",
            ))
        }
    };
    if messages.is_empty() {
        return Err(RelayError::invalid_value(
            "messages",
            "must contain at least one message",
        ));
    }
    req.system = decode_system(body.get("system"))?;
    for (i, message) in messages.iter().enumerate() {
        decode_message(i, message, &mut req)?;
    }

    req.max_tokens = opt_u64(&body, "max_tokens", "max_tokens")?;
    if req.max_tokens == Some(0) {
        return Err(RelayError::invalid_value(
            "max_tokens",
            "must be at least 1",
        ));
    }
    req.temperature = opt_unit_interval(&body, "temperature")?;
    req.top_p = opt_unit_interval(&body, "top_p")?;
    req.top_k = opt_u64(&body, "top_k", "top_k")?;
    req.stream = opt_bool(&body, "stream", "stream")?.unwrap_or(false);
    match body.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stops)) => {
            for (i, stop) in stops.iter().enumerate() {
                match stop {
                    Value::String(s) => req.stop.push(s.clone()),
                    _ => {
                        return Err(RelayError::invalid_type(
                            &format!("stop_sequences[{i}]"),
                            "a string",
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(RelayError::invalid_type(
                "stop_sequences",
                "an array of strings",
            ))
        }
    }
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(metadata)) => {
            req.user = opt_str(metadata, "user_id", "metadata.user_id")?.map(str::to_string);
            for (k, v) in metadata {
                if k != "user_id" && !v.is_null() {
                    keep_extra(&mut req, format!("metadata.{k}"), v);
                }
            }
        }
        Some(_) => return Err(RelayError::invalid_type("metadata", "an object")),
    }
    decode_tools(body.get("tools"), &mut req)?;
    decode_tool_choice(body.get("tool_choice"), &mut req)?;
    decode_thinking(body.get("thinking"), body.get("output_config"), &mut req)?;

    for (k, v) in &body {
        if !HANDLED.contains(&k.as_str()) && !v.is_null() {
            keep_extra(&mut req, k.clone(), v);
        }
    }
    Ok(req)
}

/// `system`: a string or an array of text blocks; each block stays its own instruction.
fn decode_system(system: Option<&Value>) -> Result<Vec<String>, RelayError> {
    match system {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(blocks)) => {
            let mut out = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system[{i}]");
                let block = as_object(block, &path, "a text block")?;
                let kind = req_str(block, "type", &format!("{path}.type"))?;
                if kind != "text" {
                    return Err(RelayError::invalid_value(
                        &format!("{path}.type"),
                        "system blocks must be of type 'text'",
                    ));
                }
                out.push(req_str(block, "text", &format!("{path}.text"))?.to_string());
            }
            Ok(out)
        }
        Some(_) => Err(RelayError::invalid_type(
            "system",
            "a string or an array of text blocks",
        )),
    }
}

/// A content block of a client message, as far as the neutral model can hold it.
enum InBlock {
    Text(String),
    Image(ImageSource),
    ToolUse(ToolCall),
    ToolResult(Message),
    Thinking {
        thinking: String,
        signature: String,
    },
    /// Not representable; already recorded in `extra`.
    Skipped,
}

fn decode_message(i: usize, message: &Value, req: &mut ChatRequest) -> Result<(), RelayError> {
    let path = format!("messages[{i}]");
    let m = as_object(message, &path, "an object")?;
    let role_path = format!("{path}.role");
    let role = match req_str(m, "role", &role_path)? {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        // Claude Code's mid-conversation instructions (beta `mid-conversation-system-…`).
        "system" => Role::System,
        other => {
            return Err(RelayError::invalid_value(
                &role_path,
                format!("'{other}' is not one of user, assistant, system"),
            ))
        }
    };
    let content_path = format!("{path}.content");
    let blocks = match m.get("content") {
        None | Some(Value::Null) => return Err(RelayError::missing(&content_path)),
        Some(Value::String(s)) => {
            let content = if s.is_empty() {
                Vec::new()
            } else {
                vec![Part::Text(s.clone())]
            };
            req.messages.push(Message::new(role, content));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(RelayError::invalid_type(
                &content_path,
                "a string or an array of content blocks",
            ))
        }
    };
    let mut out = Message::new(role, Vec::new());
    let mut tool_results = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let block_path = format!("{content_path}[{j}]");
        let type_path = format!("{block_path}.type");
        let not_here = |kind: &str| {
            RelayError::invalid_value(
                &type_path,
                format!(
                    "'{kind}' blocks are not allowed in {} messages",
                    role_name(role)
                ),
            )
        };
        match decode_block(&block_path, block, "messages.content", &mut req.extra)? {
            InBlock::Text(t) => out.content.push(Part::Text(t)),
            InBlock::Image(source) if role == Role::User => out.content.push(Part::Image(source)),
            InBlock::Image(_) => return Err(not_here("image")),
            InBlock::ToolResult(result) if role == Role::User => tool_results.push(result),
            InBlock::ToolResult(_) => return Err(not_here("tool_result")),
            InBlock::ToolUse(call) if role == Role::Assistant => out.tool_calls.push(call),
            InBlock::ToolUse(_) => return Err(not_here("tool_use")),
            InBlock::Thinking {
                thinking,
                signature,
            } if role == Role::Assistant => add_thinking(&mut out, &thinking, signature),
            InBlock::Thinking { .. } => return Err(not_here("thinking")),
            InBlock::Skipped => {}
        }
    }
    // Tool results answer the previous assistant turn, so they come before the user's words.
    let only_results = !tool_results.is_empty() && out.content.is_empty();
    req.messages.extend(tool_results);
    if !only_results {
        req.messages.push(out);
    }
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::System => "system",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// One client content block. Blocks the neutral model cannot hold are stored in `extra` under
/// `{prefix}.{type}` and come back as [`InBlock::Skipped`].
fn decode_block(
    path: &str,
    block: &Value,
    prefix: &str,
    extra: &mut Map<String, Value>,
) -> Result<InBlock, RelayError> {
    let b = as_object(block, path, "a content block object")?;
    let kind = req_str(b, "type", &format!("{path}.type"))?;
    let field = |name: &str| format!("{path}.{name}");
    let mut skip = |key: String| {
        extra.entry(key).or_insert_with(|| block.clone());
        InBlock::Skipped
    };
    Ok(match kind {
        "text" => InBlock::Text(req_str(b, "text", &field("text"))?.to_string()),
        "image" => match decode_image(b, path)? {
            Some(source) => InBlock::Image(source),
            None => skip(format!("{prefix}.image.source")),
        },
        "tool_use" => {
            let input = match b.get("input") {
                None | Some(Value::Null) => "{}".to_string(),
                Some(v @ Value::Object(_)) => v.to_string(),
                Some(_) => return Err(RelayError::invalid_type(&field("input"), "an object")),
            };
            InBlock::ToolUse(ToolCall {
                id: req_str(b, "id", &field("id"))?.to_string(),
                name: req_str(b, "name", &field("name"))?.to_string(),
                arguments: input,
            })
        }
        "tool_result" => {
            let mut result = Message::new(Role::Tool, Vec::new());
            result.tool_call_id = Some(req_str(b, "tool_use_id", &field("tool_use_id"))?.into());
            result.is_error = opt_bool(b, "is_error", &field("is_error"))?.unwrap_or(false);
            match b.get("content") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(Value::String(s)) => result.content.push(Part::Text(s.clone())),
                Some(Value::Array(items)) => {
                    let inner_prefix = format!("{prefix}.tool_result.content");
                    for (k, item) in items.iter().enumerate() {
                        let item_path = format!("{path}.content[{k}]");
                        match decode_block(&item_path, item, &inner_prefix, extra)? {
                            InBlock::Text(t) => result.content.push(Part::Text(t)),
                            InBlock::Image(source) => result.content.push(Part::Image(source)),
                            InBlock::Skipped => {}
                            // Anthropic allows no calls or results inside a result.
                            _ => {
                                return Err(RelayError::invalid_value(
                                    &format!("{item_path}.type"),
                                    "tool results may contain only text and image blocks",
                                ))
                            }
                        }
                    }
                }
                Some(_) => {
                    return Err(RelayError::invalid_type(
                        &field("content"),
                        "a string or an array of content blocks",
                    ))
                }
            }
            InBlock::ToolResult(result)
        }
        "thinking" => InBlock::Thinking {
            thinking: req_str(b, "thinking", &field("thinking"))?.to_string(),
            signature: opt_str(b, "signature", &field("signature"))?
                .unwrap_or_default()
                .to_string(),
        },
        // redacted_thinking, document, search_result, server tool blocks, …
        other => skip(format!("{prefix}.{other}")),
    })
}

/// `source` of an image block; `None` for kinds the neutral model lacks (`file`).
fn decode_image(b: &Map<String, Value>, path: &str) -> Result<Option<ImageSource>, RelayError> {
    let source_path = format!("{path}.source");
    let source = match b.get("source") {
        None | Some(Value::Null) => return Err(RelayError::missing(&source_path)),
        Some(v) => as_object(v, &source_path, "an object")?,
    };
    let field = |name: &str| format!("{source_path}.{name}");
    Ok(match req_str(source, "type", &field("type"))? {
        "base64" => Some(ImageSource::Base64 {
            media_type: req_str(source, "media_type", &field("media_type"))?.to_string(),
            data: req_str(source, "data", &field("data"))?.to_string(),
        }),
        "url" => Some(ImageSource::Url(
            req_str(source, "url", &field("url"))?.to_string(),
        )),
        _ => None,
    })
}

fn decode_tools(tools: Option<&Value>, req: &mut ChatRequest) -> Result<(), RelayError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(RelayError::invalid_type("tools", "an array")),
    };
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let t = as_object(tool, &path, "an object")?;
        match opt_str(t, "type", &format!("{path}.type"))? {
            None | Some("custom") => {}
            // Server tools (web search, code execution, …) and client tools with an
            // Anthropic-defined schema (bash, text editor) exist only at Anthropic.
            Some(other) => {
                keep_extra(req, format!("tools.{other}"), tool);
                continue;
            }
        }
        let name = req_str(t, "name", &format!("{path}.name"))?;
        let schema_path = format!("{path}.input_schema");
        let parameters = match t.get("input_schema") {
            None | Some(Value::Null) => return Err(RelayError::missing(&schema_path)),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(RelayError::invalid_type(&schema_path, "an object")),
        };
        req.tools.push(Tool {
            name: name.to_string(),
            description: opt_str(t, "description", &format!("{path}.description"))?
                .map(str::to_string),
            parameters,
        });
    }
    Ok(())
}

fn decode_tool_choice(choice: Option<&Value>, req: &mut ChatRequest) -> Result<(), RelayError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(()),
        Some(v) => as_object(v, "tool_choice", "an object")?,
    };
    req.tool_choice = Some(match req_str(choice, "type", "tool_choice.type")? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Named(req_str(choice, "name", "tool_choice.name")?.to_string()),
        other => {
            return Err(RelayError::invalid_value(
                "tool_choice.type",
                format!("'{other}' is not one of auto, any, tool, none"),
            ))
        }
    });
    if let Some(disable) = opt_bool(
        choice,
        "disable_parallel_tool_use",
        "tool_choice.disable_parallel_tool_use",
    )? {
        req.parallel_tool_calls = Some(!disable);
    }
    Ok(())
}

/// Efforts `output_config.effort` takes.
const EFFORTS: &[&str] = &["low", "medium", "high", "max"];

/// `thinking` and `output_config.effort`. Adaptive thinking lets the model decide how much to
/// think at the effort asked for (Anthropic's default is `high`), which is what an effort level
/// means to other providers; a fixed budget stays a budget.
fn decode_thinking(
    thinking: Option<&Value>,
    output_config: Option<&Value>,
    req: &mut ChatRequest,
) -> Result<(), RelayError> {
    let mut effort = None;
    if let Some(config) = output_config.filter(|v| !v.is_null()) {
        let config = as_object(config, "output_config", "an object")?;
        if let Some(e) = opt_str(config, "effort", "output_config.effort")? {
            if !EFFORTS.contains(&e) {
                return Err(RelayError::invalid_value(
                    "output_config.effort",
                    format!("'{e}' is not one of {}", EFFORTS.join(", ")),
                ));
            }
            effort = Some(e.to_string());
        }
        for (k, v) in config {
            if k != "effort" && !v.is_null() {
                keep_extra(req, format!("output_config.{k}"), v);
            }
        }
    }
    let Some(value) = thinking.filter(|v| !v.is_null()) else {
        req.reasoning = effort.map(Reasoning::Effort);
        return Ok(());
    };
    let t = as_object(value, "thinking", "an object")?;
    match req_str(t, "type", "thinking.type")? {
        "enabled" => {
            let budget = opt_u64(t, "budget_tokens", "thinking.budget_tokens")?
                .ok_or_else(|| RelayError::missing("thinking.budget_tokens"))?;
            req.reasoning = Some(Reasoning::Budget(budget));
        }
        "adaptive" => req.reasoning = Some(Reasoning::Effort(effort.unwrap_or("high".into()))),
        "disabled" => req.reasoning = Some(Reasoning::Disabled),
        other => {
            return Err(RelayError::invalid_value(
                "thinking.type",
                format!("'{other}' is not one of enabled, adaptive, disabled"),
            ))
        }
    }
    Ok(())
}

// ---- Anthropic as an inbound format: replies -------------------------------------------------

fn usage_json(usage: Option<&Usage>) -> Value {
    let u = usage.copied().unwrap_or_default();
    // Anthropic's input_tokens excludes cache reads and writes, which are listed beside it.
    json!({
        "input_tokens": u.uncached_prompt_tokens(),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.completion_tokens,
    })
}

fn thinking_block(reasoning: &str, signature: Option<&str>) -> Value {
    json!({"type": "thinking", "thinking": reasoning, "signature": signature.unwrap_or_default()})
}

/// Neutral reply → Anthropic reply body, reporting `model` as what served it.
pub fn encode_response(resp: &ChatResponse, model: &str) -> Value {
    let message = &resp.message;
    let mut content = Vec::new();
    if let Some(reasoning) = &message.reasoning {
        content.push(thinking_block(
            reasoning,
            message.reasoning_signature.as_deref(),
        ));
    }
    for part in &message.content {
        match part {
            Part::Text(t) if !t.is_empty() => content.push(json!({"type": "text", "text": t})),
            // Anthropic replies carry no images.
            Part::Text(_) | Part::Image(_) => {}
        }
    }
    for call in &message.tool_calls {
        // Arguments an upstream broke off mid-JSON cannot be an object; the name still is.
        let input = match serde_json::from_str::<Value>(&call.arguments) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        };
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
    }
    json!({
        "id": resp.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": resp.finish_reason.map(stop_reason_name),
        "stop_sequence": resp.stop_sequence,
        "usage": usage_json(resp.usage.as_ref()),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Thinking,
    Tool(usize),
}

/// Neutral [`StreamEvent`]s → Anthropic SSE bytes: `message_start`, one
/// `content_block_start`/`delta`/`stop` run per block (a new block starts when the kind of
/// content changes), then `message_delta` with the stop reason and usage, and `message_stop`.
///
/// `message_start` waits for the first content so usage reported before it is included;
/// `message_delta` waits for [`finish`](Self::finish) because OpenAI-style upstreams send
/// usage after the finish reason.
pub struct StreamEncoder {
    id: String,
    model: String,
    started: bool,
    ended: bool,
    next_block: u64,
    open: Option<(OpenBlock, u64)>,
    /// Neutral tool index → Anthropic block index.
    tool_blocks: BTreeMap<usize, u64>,
    stop_reason: Option<FinishReason>,
    stop_sequence: Option<String>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(id: &str, model: &str) -> Self {
        StreamEncoder {
            id: id.into(),
            model: model.into(),
            started: false,
            ended: false,
            next_block: 0,
            open: None,
            tool_blocks: BTreeMap::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: None,
        }
    }

    fn emit(kind: &str, data: &Value, out: &mut Vec<u8>) {
        sse::encode_event(Some(kind), &data.to_string(), out);
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let data = json!({
            "type": "message_start",
            "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage_json(self.usage.as_ref()),
            },
        });
        Self::emit("message_start", &data, out);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            Self::emit(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
                out,
            );
        }
    }

    /// The index of an open block of this kind, starting one (and closing another) if needed.
    fn block(&mut self, kind: OpenBlock, start: Value, out: &mut Vec<u8>) -> u64 {
        self.ensure_started(out);
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close_block(out);
        let index = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        Self::emit(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
            out,
        );
        self.open = Some((kind, index));
        if let OpenBlock::Tool(tool) = kind {
            self.tool_blocks.insert(tool, index);
        }
        index
    }

    fn delta(index: u64, delta: Value, out: &mut Vec<u8>) {
        Self::emit(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            out,
        );
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
                    let index =
                        self.block(OpenBlock::Text, json!({"type": "text", "text": ""}), out);
                    Self::delta(index, json!({"type": "text_delta", "text": text}), out);
                }
            }
            StreamEvent::ReasoningDelta(text) => {
                if !text.is_empty() {
                    let index = self.block(OpenBlock::Thinking, thinking_block("", None), out);
                    Self::delta(
                        index,
                        json!({"type": "thinking_delta", "thinking": text}),
                        out,
                    );
                }
            }
            StreamEvent::ReasoningSignature(signature) => {
                let index = self.block(OpenBlock::Thinking, thinking_block("", None), out);
                Self::delta(
                    index,
                    json!({"type": "signature_delta", "signature": signature}),
                    out,
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                // A second start for the same tool would be a second call in Anthropic's eyes.
                if !self.tool_blocks.contains_key(index) {
                    self.block(
                        OpenBlock::Tool(*index),
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        out,
                    );
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if arguments.is_empty() {
                    return;
                }
                // Deltas of a tool whose block was already closed (interleaved parallel calls)
                // still go to that block's index: SDKs assemble by index.
                let block = match self.tool_blocks.get(index) {
                    Some(&block) => block,
                    None => self.block(
                        OpenBlock::Tool(*index),
                        json!({"type": "tool_use", "id": "", "name": "", "input": {}}),
                        out,
                    ),
                };
                Self::delta(
                    block,
                    json!({"type": "input_json_delta", "partial_json": arguments}),
                    out,
                );
            }
            StreamEvent::Finish {
                reason,
                stop_sequence,
            } => {
                self.ensure_started(out);
                self.close_block(out);
                self.stop_reason = Some(*reason);
                self.stop_sequence = stop_sequence.clone();
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Error { status, message } => {
                let data = json!({
                    "type": "error",
                    "error": {"type": error_type_for_status(*status), "message": message},
                });
                Self::emit("error", &data, out);
                self.ended = true;
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ensure_started(out);
        self.close_block(out);
        let stop_reason = stop_reason_name(self.stop_reason.unwrap_or(FinishReason::Stop));
        let usage = match &self.usage {
            Some(u) => usage_json(Some(u)),
            None => json!({"output_tokens": 0}),
        };
        let data = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": self.stop_sequence},
            "usage": usage,
        });
        Self::emit("message_delta", &data, out);
        Self::emit("message_stop", &json!({"type": "message_stop"}), out);
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::anthropic::tests::*;
    use crate::formats::anthropic::{decode_response, encode_request, parse_stop_reason};
    use crate::formats::neutral::Drop;
    use crate::formats::sse::SseParser;

    #[test]
    fn relay_errors_in_anthropic_shape() {
        let cases: [(RelayError, &str); 9] = [
            (RelayError::missing("model"), "invalid_request_error"),
            (RelayError::InvalidApiKey, "authentication_error"),
            (RelayError::TenantDisabled, "permission_error"),
            (
                RelayError::ModelNotFound { model: "x".into() },
                "not_found_error",
            ),
            (
                RelayError::RequestTooLarge { limit: 1 },
                "request_too_large",
            ),
            (
                RelayError::UpstreamRateLimited { retry_after: None },
                "rate_limit_error",
            ),
            (
                RelayError::Internal {
                    detail: "secret".into(),
                },
                "api_error",
            ),
            (RelayError::UpstreamUnreachable, "api_error"),
            (
                RelayError::UpstreamInvalidRequest {
                    status: 529,
                    message: "Overloaded".into(),
                    param: None,
                },
                "overloaded_error",
            ),
        ];
        for (err, kind) in cases {
            let body = error_body(&err);
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind, "{err:?}");
            assert_eq!(body["error"]["message"], json!(err.message()));
            assert!(!body.to_string().contains("secret"));
        }
        assert_eq!(error_type_for_status(405), "invalid_request_error");
        assert_eq!(error_type_for_status(503), "api_error");
        assert_eq!(error_type_for_status(504), "api_error");
    }

    // ---- decode_request ----

    #[test]
    fn decodes_a_claude_code_request() {
        let r = decode_request(CLAUDE_CODE_REQUEST).unwrap();
        assert_eq!(r.model, "claude-sonnet-4-20250514");
        assert_eq!(
            r.system,
            vec![
                "You are Claude Code, Anthropic's official CLI for Claude.".to_string(),
                "You are an interactive CLI tool that helps users with software engineering tasks."
                    .to_string(),
            ]
        );
        assert!(r.stream);
        assert_eq!(r.max_tokens, Some(32000));
        assert_eq!(r.temperature, Some(1.0));
        assert_eq!(r.reasoning, Some(Reasoning::Budget(31999)));
        assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(r.parallel_tool_calls, Some(true));
        assert_eq!(
            r.user.as_deref(),
            Some("user_2f1c0e_account_7d0e_session_9a41")
        );

        assert_eq!(r.messages.len(), 5);
        assert_eq!(r.messages[0].role, Role::User);
        assert_eq!(r.messages[0].content.len(), 2);

        let assistant = &r.messages[1];
        assert_eq!(assistant.role, Role::Assistant);
        assert_eq!(
            assistant.reasoning.as_deref(),
            Some("I should read the file first.")
        );
        assert_eq!(
            assistant.reasoning_signature.as_deref(),
            Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds")
        );
        assert_eq!(
            assistant.content,
            vec![Part::Text("Let me read it.".into())]
        );
        assert_eq!(assistant.tool_calls.len(), 2);
        assert_eq!(assistant.tool_calls[0].id, "toolu_01Xb3uX6YxgC7ZhRrSkPbW6J");
        assert_eq!(
            serde_json::from_str::<Value>(&assistant.tool_calls[0].arguments).unwrap(),
            json!({"file_path": "/repo/src/main.rs"})
        );

        // The user turn with two results became two tool messages, then the user's words.
        let (read, bash, user) = (&r.messages[2], &r.messages[3], &r.messages[4]);
        assert_eq!(
            (read.role, bash.role, user.role),
            (Role::Tool, Role::Tool, Role::User)
        );
        assert_eq!(
            read.tool_call_id.as_deref(),
            Some("toolu_01Xb3uX6YxgC7ZhRrSkPbW6J")
        );
        assert!(!read.is_error);
        assert!(read.joined_text().contains("fn main()"));
        assert!(bash.is_error);
        assert_eq!(bash.joined_text(), "wc: src/main.rs: No such file");
        assert_eq!(user.joined_text(), "Also, keep it short.");

        // Custom tools are neutral; the server tool, context management stay Anthropic-only.
        let names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["Read", "Bash"]);
        assert_eq!(r.tools[0].parameters["required"], json!(["file_path"]));
        let mut extra: Vec<&str> = r.extra.keys().map(String::as_str).collect();
        extra.sort_unstable();
        assert_eq!(extra, ["context_management", "tools.web_search_20250305"]);
    }

    #[test]
    fn decodes_url_and_base64_images() {
        let r = decode_request(IMAGE_REQUEST).unwrap();
        assert_eq!(r.max_tokens, Some(1024));
        assert!(!r.stream);
        assert_eq!(
            r.messages,
            vec![Message::new(
                Role::User,
                vec![
                    Part::Image(ImageSource::Url(
                        "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
                            .into()
                    )),
                    Part::Image(ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: PNG.into()
                    }),
                    Part::Text("Compare these two images.".into()),
                ]
            )]
        );
        // Sent on to Anthropic it is the same request.
        let (body, drops) = encode_request(&r);
        let original: Value = serde_json::from_slice(IMAGE_REQUEST).unwrap();
        assert_eq!(body, original);
        assert!(drops.is_empty());
    }

    #[test]
    fn unrepresentable_blocks_go_to_extra() {
        let body = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
                {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
                {"type": "text", "text": "summarise"}
            ]},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "abc"}, {"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "search_result", "source": "s", "title": "t", "content": []},
                {"type": "text", "text": "found"}
            ]}]}
        ], "metadata": {"user_id": "u", "tier": "gold"}, "container": "container_1"});
        let r = decode_request(body.to_string().as_bytes()).unwrap();
        let mut keys: Vec<&str> = r.extra.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "container",
                "messages.content.document",
                "messages.content.image.source",
                "messages.content.redacted_thinking",
                "messages.content.tool_result.content.search_result",
                "metadata.tier",
            ]
        );
        assert_eq!(r.messages[0].content, vec![Part::Text("summarise".into())]);
        assert_eq!(r.messages[2].joined_text(), "found");
        assert_eq!(r.reasoning, None);
        // Another format's encoder (here: Anthropic's own, standing in) reports them dropped.
        let (_, drops) = encode_request(&r);
        assert!(drops.contains(&Drop::dropped("messages.content.document")));
    }

    fn error_of(body: Value) -> (String, Option<String>) {
        let e = decode_request(body.to_string().as_bytes()).unwrap_err();
        (e.code().to_string(), e.param().map(str::to_string))
    }

    #[test]
    fn validation_names_the_field() {
        let user = json!({"role": "user", "content": "hi"});
        let cases = [
            (
                json!({"messages": [user]}),
                "missing_required_parameter",
                "model",
            ),
            (
                json!({"model": "m"}),
                "missing_required_parameter",
                "messages",
            ),
            (
                json!({"model": "m", "messages": []}),
                "invalid_value",
                "messages",
            ),
            (
                json!({"model": 3, "messages": [user]}),
                "invalid_type",
                "model",
            ),
            (
                json!({"model": "m", "messages": [user, {"role": "developer", "content": "x"}]}),
                "invalid_value",
                "messages[1].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}]}),
                "missing_required_parameter",
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
                "invalid_type",
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [user, {"role": "assistant", "content": [{"text": "x"}]}]}),
                "missing_required_parameter",
                "messages[1].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "missing_required_parameter",
                "messages[0].content[0].text",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}),
                "invalid_value",
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]}),
                "missing_required_parameter",
                "messages[0].content[0].name",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]}),
                "invalid_type",
                "messages[0].content[0].input",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
                "missing_required_parameter",
                "messages[0].content[0].tool_use_id",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
                "missing_required_parameter",
                "messages[0].content[0].source.media_type",
            ),
            (
                json!({"model": "m", "messages": [user], "system": [{"type": "image"}]}),
                "invalid_value",
                "system[0].type",
            ),
            (
                json!({"model": "m", "messages": [user], "max_tokens": 0}),
                "invalid_value",
                "max_tokens",
            ),
            (
                json!({"model": "m", "messages": [user], "max_tokens": "many"}),
                "invalid_type",
                "max_tokens",
            ),
            (
                json!({"model": "m", "messages": [user], "temperature": 1.5}),
                "invalid_value",
                "temperature",
            ),
            (
                json!({"model": "m", "messages": [user], "stream": "yes"}),
                "invalid_type",
                "stream",
            ),
            (
                json!({"model": "m", "messages": [user], "stop_sequences": ["a", 1]}),
                "invalid_type",
                "stop_sequences[1]",
            ),
            (
                json!({"model": "m", "messages": [user], "tools": [{"name": "f"}]}),
                "missing_required_parameter",
                "tools[0].input_schema",
            ),
            (
                json!({"model": "m", "messages": [user], "tool_choice": {"type": "sometimes"}}),
                "invalid_value",
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "messages": [user], "tool_choice": {"type": "tool"}}),
                "missing_required_parameter",
                "tool_choice.name",
            ),
            (
                json!({"model": "m", "messages": [user], "thinking": {"type": "enabled"}}),
                "missing_required_parameter",
                "thinking.budget_tokens",
            ),
            (
                json!({"model": "m", "messages": [user], "metadata": {"user_id": 5}}),
                "invalid_type",
                "metadata.user_id",
            ),
        ];
        for (body, code, param) in cases {
            assert_eq!(
                error_of(body.clone()),
                (code.to_string(), Some(param.to_string())),
                "{body}"
            );
        }
        for bad in [&b"{"[..], b"[]", b"", b"\"x\""] {
            assert_eq!(decode_request(bad).unwrap_err().code(), "invalid_json");
        }
    }

    #[test]
    fn anthropic_request_round_trips_through_neutral() {
        let original = json!({
            "model": "claude-opus-4-1",
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "c2lnbmF0dXJl"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C", "is_error": false},
                    {"type": "text", "text": "And tomorrow?"}
                ]}
            ],
            "tools": [{"name": "get_weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "max_tokens": 8192,
            "top_p": 0.97,
            "stop_sequences": ["\n\nHuman:"],
            "metadata": {"user_id": "u-1"},
            "stream": true
        });
        let neutral = decode_request(original.to_string().as_bytes()).unwrap();
        let (body, drops) = encode_request(&neutral);
        assert!(drops.is_empty(), "{drops:?}");
        let mut expected = original.clone();
        // `is_error: false` is Anthropic's default and is not written back.
        expected["messages"][2]["content"][0]
            .as_object_mut()
            .unwrap()
            .remove("is_error");
        assert_eq!(body, expected);
    }

    // ---- encode_response / StreamEncoder ----

    #[test]
    fn encodes_a_neutral_reply() {
        let mut message = Message::text(Role::Assistant, "Let me look.");
        message.tool_calls = vec![
            call("call_1", "get_weather", r#"{"city":"Paris"}"#),
            call("call_2", "broken", r#"{"ci"#),
        ];
        let resp = ChatResponse {
            id: "msg_relay_1".into(),
            model: "gpt-4o-2024-08-06".into(),
            created_s: 1_700_000_000,
            message,
            finish_reason: Some(FinishReason::ToolCalls),
            stop_sequence: None,
            usage: Some(Usage::from_inclusive(100, 20, 60, 0, 5)),
        };
        assert_eq!(
            encode_response(&resp, "public-model"),
            json!({
                "id": "msg_relay_1", "type": "message", "role": "assistant", "model": "public-model",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "broken", "input": {}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 40, "cache_read_input_tokens": 60,
                    "cache_creation_input_tokens": 0, "output_tokens": 20}
            })
        );
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        for (name, reason) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::StopSequence),
            ("max_tokens", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
        ] {
            assert_eq!(parse_stop_reason(name), reason);
            assert_eq!(stop_reason_name(reason), name);
        }
        assert_eq!(parse_stop_reason("pause_turn"), FinishReason::Stop);
        assert_eq!(
            parse_stop_reason("model_context_window_exceeded"),
            FinishReason::Length
        );
    }

    fn encode_events(events: &[StreamEvent]) -> Vec<u8> {
        let mut encoder = StreamEncoder::new("msg_relay_1", "public-model");
        let mut out = Vec::new();
        for event in events {
            encoder.push(event, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    fn event_names(wire: &[u8]) -> Vec<String> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser.push(wire, &mut events).unwrap();
        parser.finish(&mut events).unwrap();
        events
            .into_iter()
            .map(|e| {
                let data: Value = serde_json::from_str(&e.data).unwrap();
                assert_eq!(data["type"].as_str(), e.event.as_deref());
                e.event.unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn stream_encoder_round_trips_through_the_decoder() {
        let events = vec![
            StreamEvent::Start {
                id: "msg_relay_1".into(),
                model: "public-model".into(),
            },
            StreamEvent::Usage(Usage::from_exclusive(25, 1, 100, 50)),
            StreamEvent::ReasoningDelta("Let me".into()),
            StreamEvent::ReasoningDelta(" think.".into()),
            StreamEvent::ReasoningSignature("c2ln".into()),
            StreamEvent::TextDelta("Hi".into()),
            StreamEvent::TextDelta(" there – é😀".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_1".into(),
                name: "get_weather".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"city\"".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: ":\"Paris\"}".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_2".into(),
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
            StreamEvent::Usage(Usage::from_exclusive(25, 42, 100, 50)),
        ];
        let wire = encode_events(&events);
        assert_eq!(decode_any_chunking(&wire), events);
        assert_eq!(
            event_names(&wire),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        // Block indices count every block, tools included.
        let mut parser = SseParser::new();
        let mut frames = Vec::new();
        parser.push(&wire, &mut frames).unwrap();
        let starts: Vec<(Value, Value)> = frames
            .iter()
            .filter(|f| f.event.as_deref() == Some("content_block_start"))
            .map(|f| {
                let v: Value = serde_json::from_str(&f.data).unwrap();
                (v["index"].clone(), v["content_block"]["type"].clone())
            })
            .collect();
        assert_eq!(
            starts,
            [
                (json!(0), json!("thinking")),
                (json!(1), json!("text")),
                (json!(2), json!("tool_use")),
                (json!(3), json!("tool_use"))
            ]
        );
    }

    #[test]
    fn stream_encoder_usage_never_double_counts() {
        // OpenAI-style order: finish first, usage after; cached tokens inside the prompt count.
        let events = vec![
            StreamEvent::TextDelta("ok".into()),
            StreamEvent::Finish {
                reason: FinishReason::StopSequence,
                stop_sequence: Some("###".into()),
            },
            StreamEvent::Usage(Usage::from_inclusive(100, 7, 60, 0, 0)),
        ];
        let wire = encode_events(&events);
        let mut parser = SseParser::new();
        let mut frames = Vec::new();
        parser.push(&wire, &mut frames).unwrap();
        let delta = frames
            .iter()
            .find(|f| f.event.as_deref() == Some("message_delta"))
            .unwrap();
        let delta: Value = serde_json::from_str(&delta.data).unwrap();
        assert_eq!(
            delta,
            json!({"type": "message_delta",
                "delta": {"stop_reason": "stop_sequence", "stop_sequence": "###"},
                "usage": {"input_tokens": 40, "cache_read_input_tokens": 60,
                    "cache_creation_input_tokens": 0, "output_tokens": 7}})
        );
        let decoded = decode_chunks(&[&wire]);
        assert_eq!(
            decoded.last(),
            Some(&StreamEvent::Usage(Usage::from_inclusive(100, 7, 60, 0, 0)))
        );
        let start: Value = serde_json::from_str(&frames[0].data).unwrap();
        assert_eq!(start["message"]["usage"]["input_tokens"], 0);
        assert_eq!(start["message"]["id"], "msg_relay_1");
        assert_eq!(start["message"]["model"], "public-model");
    }

    #[test]
    fn stream_encoder_finish_closes_everything() {
        let wire = encode_events(&[StreamEvent::TextDelta("partial".into())]);
        assert_eq!(
            event_names(&wire),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let text = String::from_utf8(wire).unwrap();
        assert!(text.contains(r#""stop_reason":"end_turn""#));
        assert!(text.contains(r#""usage":{"output_tokens":0}"#));
        // An empty stream is still a well-formed message.
        assert_eq!(
            event_names(&encode_events(&[])),
            ["message_start", "message_delta", "message_stop"]
        );
    }

    #[test]
    fn stream_encoder_error_ends_the_stream() {
        let mut encoder = StreamEncoder::new("m1", "pm");
        let mut out = Vec::new();
        encoder.push(&StreamEvent::TextDelta("Once".into()), &mut out);
        encoder.push(
            &StreamEvent::Error {
                status: 529,
                message: "Overloaded".into(),
            },
            &mut out,
        );
        encoder.push(&StreamEvent::TextDelta("more".into()), &mut out);
        encoder.finish(&mut out);
        let mut parser = SseParser::new();
        let mut frames = Vec::new();
        parser.push(&out, &mut frames).unwrap();
        let last = frames.last().unwrap();
        assert_eq!(last.event.as_deref(), Some("error"));
        assert_eq!(
            serde_json::from_str::<Value>(&last.data).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        assert!(!String::from_utf8_lossy(&out).contains("more"));
        let decoded = decode_chunks(&[&out]);
        assert_eq!(
            decoded.last(),
            Some(&StreamEvent::Error {
                status: 529,
                message: "Overloaded".into()
            })
        );
    }

    #[test]
    fn stream_encoder_tolerates_odd_orders() {
        // A delta for a tool that never started, and a late delta for a closed tool.
        let events = [
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"a\":".into(),
            },
            StreamEvent::TextDelta("x".into()),
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "1}".into(),
            },
            StreamEvent::ReasoningSignature("s".into()),
        ];
        let decoded = decode_chunks(&[&encode_events(&events)]);
        assert_eq!(
            decoded,
            vec![
                StreamEvent::Start {
                    id: "msg_relay_1".into(),
                    model: "public-model".into()
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: String::new(),
                    name: String::new()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "{\"a\":".into()
                },
                StreamEvent::TextDelta("x".into()),
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "1}".into()
                },
                StreamEvent::ReasoningSignature("s".into()),
                StreamEvent::Finish {
                    reason: FinishReason::Stop,
                    stop_sequence: None
                },
                StreamEvent::Usage(Usage::default()),
            ]
        );
    }

    // ---- decode_response / errors ----

    #[test]
    pub(crate) fn decodes_a_text_reply_without_double_counting_cache() {
        let r = decode_response(TEXT).unwrap();
        assert_eq!(r.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
        assert_eq!(r.model, "claude-sonnet-4-20250514");
        assert_eq!(
            r.message.content,
            vec![Part::Text("Hi! My name is Claude.".into())]
        );
        assert_eq!(r.finish_reason, Some(FinishReason::Stop));
        assert_eq!(r.stop_sequence, None);
        let u = r.usage.unwrap();
        assert_eq!(u, Usage::from_exclusive(21, 12, 1800, 188));
        assert_eq!(u.prompt_tokens, 21 + 1800 + 188);
        assert_eq!(u.uncached_prompt_tokens(), 21);
        // Encoded back for an Anthropic client, every count lands where it came from.
        let back = encode_response(&r, "public-model");
        assert_eq!(
            back["usage"],
            json!({"input_tokens": 21, "cache_read_input_tokens": 1800,
                "cache_creation_input_tokens": 188, "output_tokens": 12})
        );
    }

    #[test]
    pub(crate) fn decodes_thinking_replies() {
        let r = decode_response(THINKING).unwrap();
        assert_eq!(r.finish_reason, Some(FinishReason::Length));
        assert!(r
            .message
            .reasoning
            .as_deref()
            .unwrap()
            .starts_with("Let me analyze"));
        assert!(r
            .message
            .reasoning_signature
            .as_deref()
            .unwrap()
            .starts_with("WaUjzky"));
        // The redacted block has no neutral place; the text is still there.
        assert_eq!(
            r.message.content,
            vec![Part::Text("27 * 453 = 12,231".into())]
        );
        let back = encode_response(&r, "m");
        assert_eq!(back["content"][0]["type"], "thinking");
        assert_eq!(
            back["content"][0]["signature"],
            json!(r.message.reasoning_signature)
        );
        assert_eq!(back["stop_reason"], "max_tokens");
    }

    #[test]
    fn claude_code_mid_conversation_system_messages_are_accepted() {
        let r = decode_request(include_bytes!(
            "../../tests/fixtures/anthropic/request_claude_code_mid_system.json"
        ))
        .unwrap();
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::User, Role::System, Role::Assistant, Role::Tool]
        );
        assert!(r.messages[1].joined_text().contains("plan mode"));
        assert_eq!(r.system.len(), 2);
        assert_eq!(r.reasoning, Some(Reasoning::Effort("high".into())));
        assert!(r.extra.contains_key("context_management"));
        assert!(!r.extra.contains_key("output_config"));
        // A system message holds text only.
        let e = error_of(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}
        ]}));
        assert_eq!(e.1.as_deref(), Some("messages[1].content[0].type"));
    }

    #[test]
    fn adaptive_thinking_takes_the_effort_asked_for() {
        let base = |extra: Value| {
            let mut b = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            decode_request(b.to_string().as_bytes())
        };
        let r = base(json!({"thinking": {"type": "adaptive"}})).unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Effort("high".into())));
        let r = base(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}))
            .unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Effort("low".into())));
        let r = base(json!({"output_config": {"effort": "max"}})).unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Effort("max".into())));
        let e = base(json!({"output_config": {"effort": "extreme"}})).unwrap_err();
        assert_eq!(e.param(), Some("output_config.effort"));
        let e = base(json!({"thinking": {"type": "sometimes"}})).unwrap_err();
        assert_eq!(e.param(), Some("thinking.type"));
    }
}
