//! Amazon Bedrock Runtime's Converse API (`POST /model/{modelId}/converse` and
//! `/converse-stream`) as an upstream format: the request body encoded from the neutral model
//! (with the [`Drop`]s it cannot carry), the URL path per model, replies and binary event
//! streams decoded back into neutral types, and error bodies read for their message.
//!
//! Shapes follow the Converse / ConverseStream API reference
//! (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>) and
//! the service model AWS generates its SDKs from (botocore `bedrock-runtime/2023-09-30`).
//! Signing the request is [`crate::providers::sigv4`]'s job (signing name `bedrock`); the stream framing
//! is [`crate::formats::eventstream`]'s.
//!
//! Converse is one schema for many model families, which shapes this file: what Converse has
//! no field for (top-k, extended thinking) goes in `additionalModelRequestFields`, whose shape
//! is the model's own, so it is only filled for families whose shape is known — Anthropic's
//! Claude (recognised by `anthropic.` or `claude` in the model id) and Amazon Nova. For
//! anything else, including application inference-profile ARNs that hide the model, those
//! settings are reported as dropped rather than sent in a shape the model may reject.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::formats::eventstream::{EventStreamDecoder, EventStreamError, Frame};
use crate::formats::neutral::Usage;
use crate::formats::neutral::{
    ChatRequest, ChatResponse, Drop, Drops, FinishReason, ImageSource, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, Tool, ToolCall, ToolChoice,
};
use crate::support::crypto::{hex, sha256};

/// Claude on Bedrock counts thinking inside `maxTokens`; this is the room left for the answer
/// when the client gave no limit or one below the thinking budget.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Claude rejects a thinking budget below this.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Stands in for the user turn Converse requires before a conversation that starts with the
/// assistant, and for a tool result with no content: Converse rejects empty text blocks.
const CONTINUED: &str = "(continued)";
const EMPTY_RESULT: &str = "(empty)";

/// Converse's `toolUseId` is at most 64 characters of `[a-zA-Z0-9_.:-]`.
const MAX_TOOL_USE_ID: usize = 64;

/// Model families whose `additionalModelRequestFields` this file knows how to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Anthropic,
    Nova,
    Other,
}

fn family(model: &str) -> Family {
    let model = model.to_ascii_lowercase();
    if model.contains("anthropic.") || model.contains("claude") {
        Family::Anthropic
    } else if model.contains("amazon.nova") {
        Family::Nova
    } else {
        Family::Other
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Neutral request → Converse request body (`messages`, `system`, `inferenceConfig`,
/// `toolConfig`, `additionalModelRequestFields`). The model id is not in the body but in the
/// path ([`request_path`]); streaming is a different path, not a body field.
pub fn encode_request(req: &ChatRequest) -> (Value, Vec<Drop>) {
    let mut drops = Drops::default();
    let family = family(&req.model);
    let mut body = Map::new();

    body.insert(
        "messages".into(),
        Value::Array(encode_messages(&req.messages, family, &mut drops)),
    );

    let system: Vec<Value> = req
        .system_apart(&mut drops)
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| json!({ "text": s }))
        .collect();
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }

    let mut additional = Map::new();
    let thinking_budget =
        encode_reasoning(req.reasoning.as_ref(), family, &mut additional, &mut drops);
    let config = encode_inference_config(req, family, thinking_budget, &mut additional, &mut drops);
    if !config.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(config));
    }

    if let Some(tool_config) = encode_tool_config(req, &mut drops) {
        body.insert("toolConfig".into(), tool_config);
    }

    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }
    // Claude tells which stop sequence matched only when asked for it.
    let has_stops = body
        .get("inferenceConfig")
        .is_some_and(|c| c.get("stopSequences").is_some());
    if family == Family::Anthropic && has_stops {
        body.insert(
            "additionalModelResponseFieldPaths".into(),
            json!(["/stop_sequence"]),
        );
    }

    crate::formats::claude::drop_openai_only_sampling(req, &mut drops);
    match req.response_format {
        None | Some(ResponseFormat::Text) => {}
        // Converse's `outputConfig.textFormat` takes a JSON schema, but only some models
        // accept it and a rejected request is worse than an unconstrained answer.
        Some(ResponseFormat::JsonObject) | Some(ResponseFormat::JsonSchema { .. }) => {
            drops.dropped("response_format")
        }
    }
    // `requestMetadata` only tags invocation logs; it is not an end-user id for the model.
    if req.user.is_some() {
        drops.dropped("user");
    }
    if req.parallel_tool_calls == Some(false) {
        drops.dropped("parallel_tool_calls");
    }
    for key in req.extra.keys() {
        drops.dropped(key);
    }
    (Value::Object(body), drops.0)
}

/// The Converse path for a model, relative to `https://bedrock-runtime.{region}.amazonaws.com`.
/// The model id is one path segment whatever it holds: ids carry `:` (`…-v1:0`) and ARNs also
/// `/`, so everything but RFC 3986's unreserved characters is percent-encoded, as AWS's SDKs
/// do. (The signature then encodes the path once more; see [`crate::providers::sigv4`].)
pub fn request_path(model: &str, stream: bool) -> String {
    let mut path = String::from("/model/");
    for byte in model.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push_str(if stream {
        "/converse-stream"
    } else {
        "/converse"
    });
    path
}

/// Writes the family's thinking field and returns Claude's budget when thinking is on.
fn encode_reasoning(
    reasoning: Option<&Reasoning>,
    family: Family,
    additional: &mut Map<String, Value>,
    drops: &mut Drops,
) -> Option<u64> {
    let reasoning = reasoning?;
    if family != Family::Anthropic {
        // Thinking is off unless asked for, so only a request for it is lost.
        match reasoning {
            Reasoning::Disabled | Reasoning::Budget(0) => {}
            Reasoning::Effort(e) if e == "none" => {}
            Reasoning::Budget(_) => drops.dropped("thinking.budget_tokens"),
            Reasoning::Effort(_) => drops.dropped("reasoning_effort"),
        }
        return None;
    }
    let budget = match reasoning {
        Reasoning::Disabled | Reasoning::Budget(0) => return None,
        Reasoning::Budget(b) if *b < MIN_THINKING_BUDGET => {
            drops.approximated("thinking.budget_tokens");
            MIN_THINKING_BUDGET
        }
        Reasoning::Budget(b) => *b,
        Reasoning::Effort(effort) => {
            let budget = match effort.as_str() {
                "none" => return None,
                "minimal" | "low" => 1024,
                "high" => 16384,
                "xhigh" | "max" => 32768,
                _ => 4096,
            };
            drops.approximated("reasoning_effort");
            budget
        }
    };
    additional.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": budget}),
    );
    Some(budget)
}

/// `maxTokens`, `temperature`, `topP`, `stopSequences`, and top-k where the family has it.
fn encode_inference_config(
    req: &ChatRequest,
    family: Family,
    thinking_budget: Option<u64>,
    additional: &mut Map<String, Value>,
    drops: &mut Drops,
) -> Map<String, Value> {
    let mut config = Map::new();

    // Converse requires at least 1; without a limit the model's own default applies.
    let mut max_tokens = req.max_tokens.filter(|&m| m >= 1);
    if req.max_tokens == Some(0) {
        drops.approximated("max_tokens");
    }
    if let Some(budget) = thinking_budget {
        if max_tokens.is_none_or(|m| m <= budget) {
            if max_tokens.is_some() {
                drops.approximated("max_tokens");
            }
            max_tokens = Some(budget.saturating_add(DEFAULT_MAX_TOKENS));
        }
    }
    if let Some(max) = max_tokens {
        config.insert("maxTokens".into(), json!(max));
    }

    let thinking = thinking_budget.is_some();
    // Converse takes the same ranges as Claude; thinking is only ever on for Claude models.
    let (temperature, top_p) = crate::formats::claude::claude_sampling(req, thinking, drops);
    if let Some(t) = temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        match family {
            Family::Anthropic if thinking => drops.dropped("top_k"),
            Family::Anthropic => {
                additional.insert("top_k".into(), json!(k));
            }
            Family::Nova => {
                additional.insert("inferenceConfig".into(), json!({ "topK": k }));
            }
            Family::Other => drops.dropped("top_k"),
        }
    }

    // Converse rejects empty stop sequences, and Claude whitespace-only ones (OpenAI clients
    // send "\n").
    let stops: Vec<&String> = req.stop.iter().filter(|s| !s.trim().is_empty()).collect();
    if stops.len() != req.stop.len() {
        if stops.is_empty() {
            drops.dropped("stop");
        } else {
            drops.approximated("stop");
        }
    }
    if !stops.is_empty() {
        config.insert("stopSequences".into(), json!(stops));
    }
    config
}

/// `toolConfig`, which Converse demands whenever the history holds tool calls or results.
fn encode_tool_config(req: &ChatRequest, drops: &mut Drops) -> Option<Value> {
    let history_names = history_tool_names(&req.messages);
    if req.tools.is_empty() {
        if matches!(
            req.tool_choice,
            Some(ToolChoice::Required | ToolChoice::Named(_))
        ) {
            drops.dropped("tool_choice");
        }
        if history_names.is_empty() {
            return None;
        }
        // The client replays tool history without declaring tools (a summary call, say).
        // Declaring the tools it used, without parameters, is the least Converse accepts.
        drops.approximated("tools");
        let tools: Vec<Value> = history_names
            .iter()
            .map(|name| {
                json!({"toolSpec": {
                    "name": name,
                    "inputSchema": {"json": {"type": "object", "properties": {}}},
                }})
            })
            .collect();
        return Some(json!({ "tools": tools }));
    }

    let choice = match &req.tool_choice {
        None | Some(ToolChoice::Auto) => None,
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Named(name)) => Some(json!({"tool": {"name": name}})),
        // Converse has no "none": withholding the tools says it, unless the history needs
        // them declared, in which case the model may call one after all.
        Some(ToolChoice::None) if !has_tool_blocks(&req.messages) => return None,
        Some(ToolChoice::None) => {
            drops.approximated("tool_choice");
            None
        }
    };
    let tools: Vec<Value> = req.tools.iter().map(encode_tool).collect();
    let mut config = json!({ "tools": tools });
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Some(config)
}

fn encode_tool(tool: &Tool) -> Value {
    // Converse needs an object schema even for a tool without parameters.
    let schema = match &tool.parameters {
        Value::Object(o) if !o.is_empty() => Value::Object(o.clone()),
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut spec = json!({"name": tool.name, "inputSchema": {"json": schema}});
    if let Some(description) = tool.description.as_ref().filter(|d| !d.is_empty()) {
        spec["description"] = json!(description);
    }
    json!({ "toolSpec": spec })
}

/// Names of the tools called in the history, in order, once each.
fn history_tool_names(messages: &[Message]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for call in messages.iter().flat_map(|m| &m.tool_calls) {
        if !call.name.is_empty() && !names.contains(&call.name.as_str()) {
            names.push(&call.name);
        }
    }
    names
}

fn has_tool_blocks(messages: &[Message]) -> bool {
    messages
        .iter()
        .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
}

/// Neutral messages → Converse's alternating user/assistant turns: consecutive same-role
/// messages merge, tool results become user turns, empty messages vanish.
fn encode_messages(messages: &[Message], family: Family, drops: &mut Drops) -> Vec<Value> {
    let encoded: Vec<_> = messages
        .iter()
        .filter_map(|message| match message.role {
            Role::User => Some(("user", Vec::new(), user_blocks(&message.content, drops))),
            Role::Assistant => Some((
                "assistant",
                Vec::new(),
                assistant_blocks(message, family, drops),
            )),
            Role::Tool => Some(("user", vec![tool_result_block(message, drops)], Vec::new())),
            // Sent apart, with the rest of the system text (`system_apart`).
            Role::System => None,
        })
        .collect();
    crate::formats::claude::alternate_turns(encoded, json!({"text": CONTINUED}), drops)
}

fn user_blocks(parts: &[Part], drops: &mut Drops) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|part| match part {
            // Converse rejects blank text blocks; they say nothing anyway.
            Part::Text(t) if t.trim().is_empty() => None,
            Part::Text(t) => Some(json!({"text": t})),
            Part::Image(source) => image_block(source, drops),
        })
        .collect()
}

fn assistant_blocks(message: &Message, family: Family, drops: &mut Drops) -> Vec<Value> {
    let mut blocks = Vec::new();
    let reasoning = message.reasoning.as_deref().unwrap_or_default();
    match message.reasoning_signature.as_deref() {
        // Claude verifies thinking sent back by its signature; other models, and unsigned
        // reasoning from other providers, have no way to take it.
        Some(signature) if family == Family::Anthropic && !signature.is_empty() => {
            blocks.push(json!({"reasoningContent": {"reasoningText": {
                "text": reasoning,
                "signature": signature,
            }}}))
        }
        _ if !reasoning.is_empty() => drops.dropped("messages.reasoning"),
        _ => {}
    }
    for part in &message.content {
        match part {
            Part::Text(t) if t.trim().is_empty() => {}
            Part::Text(t) => blocks.push(json!({"text": t})),
            Part::Image(_) => drops.dropped("messages.content.image"),
        }
    }
    for call in &message.tool_calls {
        blocks.push(json!({"toolUse": {
            "toolUseId": tool_use_id(&call.id),
            "name": call.name,
            "input": tool_input(&call.arguments, drops),
        }}));
    }
    blocks
}

fn tool_result_block(message: &Message, drops: &mut Drops) -> Value {
    let mut content = user_blocks(&message.content, drops);
    if content.is_empty() {
        drops.approximated("messages.content");
        content.push(json!({"text": EMPTY_RESULT}));
    }
    let status = if message.is_error { "error" } else { "success" };
    json!({"toolResult": {
        "toolUseId": tool_use_id(message.tool_call_id.as_deref().unwrap_or_default()),
        "content": content,
        "status": status,
    }})
}

fn image_block(source: &ImageSource, drops: &mut Drops) -> Option<Value> {
    let (media_type, data) = match source {
        ImageSource::Base64 { media_type, data } => (media_type.as_str(), data.as_str()),
        ImageSource::Url(url) => match parse_data_url(url) {
            Some(parsed) => parsed,
            None => {
                // Converse takes image bytes or an S3 location, never a web URL.
                drops.dropped("messages.content.image_url");
                return None;
            }
        },
    };
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => {
            drops.dropped("messages.content.image");
            return None;
        }
    };
    // A JSON blob is base64 text in the REST-JSON protocol, so the data goes as it came.
    Some(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// `data:image/png;base64,AAAA` → (`image/png`, `AAAA`).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some((media_type, data))
}

/// Converse accepts `[a-zA-Z0-9_.:-]{1,64}`; other providers' ids may be longer or carry more.
/// The mapping is a pure function, so a call and its result still agree; a long id keeps a
/// prefix and gains a hash of the whole, so two long ids cannot collide by sharing a prefix.
fn tool_use_id(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        return "call".into();
    }
    if cleaned.len() <= MAX_TOOL_USE_ID {
        return cleaned;
    }
    let digest = hex(&sha256(id.as_bytes()));
    let keep = MAX_TOOL_USE_ID - 17;
    format!(
        "{}_{}",
        cleaned.get(..keep).unwrap_or_default(),
        digest.get(..16).unwrap_or_default()
    )
}

/// The neutral arguments are JSON text; Converse wants the object itself.
fn tool_input(arguments: &str, drops: &mut Drops) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => {
            drops.approximated("messages.tool_calls.arguments");
            json!({})
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `null` where a list is expected means empty, as for a missing field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ConverseWire {
    output: Option<OutputWire>,
    stop_reason: Option<String>,
    usage: Option<UsageWire>,
    additional_model_response_fields: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OutputWire {
    message: Option<MessageWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageWire {
    #[serde(deserialize_with = "null_as_default")]
    content: Vec<BlockWire>,
}

/// A content block: a union, so exactly one member is set.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BlockWire {
    text: Option<String>,
    tool_use: Option<ToolUseWire>,
    reasoning_content: Option<ReasoningWire>,
    image: Option<ImageWire>,
    citations_content: Option<CitationsWire>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ToolUseWire {
    tool_use_id: String,
    name: String,
    input: Value,
}

/// `redactedContent` (encrypted thinking) is left out: the neutral model has no place for it.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ReasoningWire {
    reasoning_text: Option<ReasoningTextWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReasoningTextWire {
    text: String,
    signature: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ImageWire {
    format: String,
    source: ImageSourceWire,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ImageSourceWire {
    bytes: Option<String>,
}

/// Text with citations: the text is kept, the citations have no neutral place.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CitationsWire {
    #[serde(deserialize_with = "null_as_default")]
    content: Vec<GeneratedWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GeneratedWire {
    text: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default, rename_all = "camelCase")]
struct UsageWire {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_write_input_tokens: Option<u64>,
}

impl UsageWire {
    /// Bedrock's `inputTokens` excludes cache reads and writes, as Anthropic's does.
    fn to_usage(self) -> Usage {
        Usage::from_exclusive(
            self.input_tokens.unwrap_or(0),
            self.output_tokens.unwrap_or(0),
            self.cache_read_input_tokens.unwrap_or(0),
            self.cache_write_input_tokens.unwrap_or(0),
        )
    }
}

fn parse_stop_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "stop_sequence" => FinishReason::StopSequence,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        "malformed_model_output" | "malformed_tool_use" => FinishReason::Error,
        // end_turn and reasons added later: the client acts on calls when there are some.
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Claude's matched stop sequence, returned when the request asked for `/stop_sequence`.
fn stop_sequence(fields: Option<&Value>) -> Option<String> {
    fields?.get("stop_sequence")?.as_str().map(str::to_string)
}

fn image_part(image: &ImageWire) -> Option<Part> {
    let data = image.source.bytes.clone()?;
    let format = match image.format.as_str() {
        "" => return None,
        "jpg" => "jpeg",
        other => other,
    };
    Some(Part::Image(ImageSource::Base64 {
        media_type: format!("image/{format}"),
        data,
    }))
}

/// A Converse reply → neutral response. `model`, `id` and `created_s` are the relay's:
/// Converse returns none of them.
pub fn decode_response(
    bytes: &[u8],
    model: &str,
    id: &str,
    created_s: i64,
) -> Result<ChatResponse, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid Bedrock response body: {e}"))?;
    if !value.is_object() {
        return Err("invalid Bedrock response body: not a JSON object".into());
    }
    let wire = ConverseWire::deserialize(&value)
        .map_err(|e| format!("invalid Bedrock response body: {e}"))?;
    let Some(message_wire) = wire.output.and_then(|o| o.message) else {
        return Err(
            parse_error_body(bytes).unwrap_or_else(|| "Bedrock returned no output message".into())
        );
    };

    let mut message = Message::new(Role::Assistant, Vec::new());
    for block in message_wire.content {
        if let Some(text) = block.text {
            message.content.push(Part::Text(text));
        } else if let Some(call) = block.tool_use {
            message.tool_calls.push(ToolCall {
                id: call.tool_use_id,
                name: call.name,
                arguments: input_json(&call.input),
            });
        } else if let Some(reasoning) = block.reasoning_content.and_then(|r| r.reasoning_text) {
            add_reasoning(&mut message, &reasoning.text, reasoning.signature);
        } else if let Some(part) = block.image.as_ref().and_then(image_part) {
            message.content.push(part);
        } else if let Some(cited) = block.citations_content {
            let text: String = cited
                .content
                .iter()
                .filter_map(|c| c.text.as_deref())
                .collect();
            message.content.push(Part::Text(text));
        }
    }
    let finish_reason = wire
        .stop_reason
        .as_deref()
        .map(|r| parse_stop_reason(r, !message.tool_calls.is_empty()));
    Ok(ChatResponse {
        id: id.to_string(),
        model: model.to_string(),
        created_s,
        message,
        finish_reason,
        stop_sequence: stop_sequence(wire.additional_model_response_fields.as_ref()),
        usage: wire.usage.map(UsageWire::to_usage),
    })
}

/// Several reasoning blocks share the one neutral reasoning field; the last signature is kept.
fn add_reasoning(message: &mut Message, text: &str, signature: Option<String>) {
    message
        .reasoning
        .get_or_insert_with(String::new)
        .push_str(text);
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        message.reasoning_signature = Some(signature);
    }
}

/// A tool input object as the neutral JSON text; a missing input is no arguments.
fn input_json(input: &Value) -> String {
    match input {
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// A Bedrock error body → its message. AWS's REST-JSON errors carry `message`; some services
/// and gateways spell it `Message`. The error's type travels in the `x-amzn-ErrorType` header.
pub fn parse_error_body(bytes: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    ["message", "Message"].iter().find_map(|key| {
        value
            .get(key)?
            .as_str()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    })
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BlockStartWire {
    content_block_index: u64,
    start: Option<StartWire>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct StartWire {
    tool_use: Option<ToolUseWire>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BlockDeltaWire {
    content_block_index: u64,
    delta: DeltaWire,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct DeltaWire {
    text: Option<String>,
    tool_use: Option<ToolUseDeltaWire>,
    reasoning_content: Option<ReasoningDeltaWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolUseDeltaWire {
    input: String,
}

/// `redactedContent` deltas are left out, as in replies.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ReasoningDeltaWire {
    text: Option<String>,
    signature: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct MessageStopWire {
    stop_reason: Option<String>,
    additional_model_response_fields: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MetadataWire {
    usage: Option<UsageWire>,
}

/// The HTTP status that fits an exception event of ConverseStream (they arrive after a 200).
fn status_for_exception(kind: &str) -> u16 {
    match kind.to_ascii_lowercase().as_str() {
        "throttlingexception" => 429,
        "validationexception" => 400,
        "internalserverexception" => 500,
        "serviceunavailableexception" | "modelnotreadyexception" => 503,
        "modeltimeoutexception" => 504,
        // modelStreamErrorException: the model behind Bedrock failed mid-answer.
        _ => 502,
    }
}

/// ConverseStream's binary event stream → neutral [`StreamEvent`]s. Holds the partial frame,
/// the neutral tool index of each tool block, and whether the message has stopped.
pub struct StreamDecoder {
    /// Boxed so the relay's enum of decoders stays small whichever one a stream uses.
    state: Box<StreamState>,
}

struct StreamState {
    frames: EventStreamDecoder,
    pending: Vec<Frame>,
    model: String,
    id: String,
    started: bool,
    /// Content block index → neutral tool index, for every tool block so far.
    tools: BTreeMap<u64, usize>,
    next_tool: usize,
    finished: bool,
    saw_stop: bool,
}

impl StreamDecoder {
    pub fn new(model: &str, id: &str) -> Self {
        StreamDecoder {
            state: Box::new(StreamState {
                frames: EventStreamDecoder::new(),
                pending: Vec::new(),
                model: model.to_string(),
                id: id.to_string(),
                started: false,
                tools: BTreeMap::new(),
                next_tool: 0,
                finished: false,
                saw_stop: false,
            }),
        }
    }

    /// Feed one network chunk. Events of frames completed before a framing error are still
    /// delivered; after one, the stream is broken for good.
    pub fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), EventStreamError> {
        let state = &mut *self.state;
        let mut frames = std::mem::take(&mut state.pending);
        let result = state.frames.push(chunk, &mut frames);
        for frame in frames.drain(..) {
            state.on_frame(&frame, out);
        }
        state.pending = frames;
        result
    }

    /// End of stream: an error if it stopped inside a frame. Nothing else is pending, since
    /// every whole frame was decoded as it arrived.
    pub fn finish(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), EventStreamError> {
        self.state.frames.finish()
    }

    /// The model finished its message (`messageStop`). Usage follows in `metadata`, so a
    /// stream cut after this point lost only the counts, not the answer.
    pub fn saw_stop(&self) -> bool {
        self.state.saw_stop
    }
}

impl StreamState {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<StreamEvent>) {
        match frame.header_str(":message-type") {
            Some("event") => self.on_event(frame, out),
            Some("exception") => {
                let kind = frame.header_str(":exception-type").unwrap_or_default();
                let message = parse_error_body(&frame.payload)
                    .unwrap_or_else(|| format!("Bedrock reported {kind} mid-stream"));
                out.push(StreamEvent::Error {
                    status: status_for_exception(kind),
                    message,
                });
            }
            Some("error") => {
                let code = frame.header_str(":error-code").unwrap_or("error");
                let message = frame
                    .header_str(":error-message")
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("Bedrock reported {code} mid-stream"));
                out.push(StreamEvent::Error {
                    status: status_for_exception(code),
                    message,
                });
            }
            // Message types added later carry nothing the client could use.
            _ => {}
        }
    }

    fn on_event(&mut self, frame: &Frame, out: &mut Vec<StreamEvent>) {
        let Some(kind) = frame.header_str(":event-type") else {
            return;
        };
        let known = matches!(
            kind,
            "messageStart"
                | "contentBlockStart"
                | "contentBlockDelta"
                | "contentBlockStop"
                | "messageStop"
                | "metadata"
        );
        if !known {
            return;
        }
        let payload: Value = match serde_json::from_slice(&frame.payload) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                out.push(StreamEvent::Error {
                    status: 502,
                    message: format!("Bedrock sent a {kind} event that is not a JSON object"),
                });
                return;
            }
        };
        self.ensure_started(out);
        match kind {
            "contentBlockStart" => {
                let start = BlockStartWire::deserialize(&payload).unwrap_or_default();
                if let Some(call) = start.start.and_then(|s| s.tool_use) {
                    let index = self.next_tool;
                    self.next_tool = self.next_tool.saturating_add(1);
                    self.tools.insert(start.content_block_index, index);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: call.tool_use_id,
                        name: call.name,
                    });
                }
            }
            "contentBlockDelta" => {
                let delta = BlockDeltaWire::deserialize(&payload).unwrap_or_default();
                self.on_delta(delta, out);
            }
            "messageStop" => {
                let stop = MessageStopWire::deserialize(&payload).unwrap_or_default();
                self.saw_stop = true;
                if !self.finished {
                    self.finished = true;
                    let reason = stop.stop_reason.as_deref().unwrap_or_default();
                    out.push(StreamEvent::Finish {
                        reason: parse_stop_reason(reason, self.next_tool > 0),
                        stop_sequence: stop_sequence(
                            stop.additional_model_response_fields.as_ref(),
                        ),
                    });
                }
            }
            "metadata" => {
                let metadata = MetadataWire::deserialize(&payload).unwrap_or_default();
                if let Some(usage) = metadata.usage {
                    out.push(StreamEvent::Usage(usage.to_usage()));
                }
            }
            // messageStart (already answered by `ensure_started`) and contentBlockStop.
            _ => {}
        }
    }

    fn on_delta(&mut self, wire: BlockDeltaWire, out: &mut Vec<StreamEvent>) {
        let delta = wire.delta;
        if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
            out.push(StreamEvent::TextDelta(text));
        }
        if let Some(input) = delta.tool_use.map(|t| t.input).filter(|i| !i.is_empty()) {
            // A delta for a block that never started as a tool has no call to extend.
            if let Some(&index) = self.tools.get(&wire.content_block_index) {
                out.push(StreamEvent::ToolCallDelta {
                    index,
                    arguments: input,
                });
            }
        }
        if let Some(reasoning) = delta.reasoning_content {
            if let Some(text) = reasoning.text.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::ReasoningDelta(text));
            }
            if let Some(signature) = reasoning.signature.filter(|s| !s.is_empty()) {
                out.push(StreamEvent::ReasoningSignature(signature));
            }
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model: self.model.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::eventstream::{encode_frame, HeaderValue};

    const TEXT: &[u8] = include_bytes!("../../tests/fixtures/bedrock/reply_text.json");
    const TOOL_USE: &[u8] = include_bytes!("../../tests/fixtures/bedrock/reply_tool_use.json");
    const THROTTLING: &[u8] =
        include_bytes!("../../tests/fixtures/bedrock/error_throttling_429.json");
    const STREAM_TEXT: &[u8] = include_bytes!("../../tests/fixtures/bedrock/stream_text.bin");
    const STREAM_TOOL_USE: &[u8] =
        include_bytes!("../../tests/fixtures/bedrock/stream_tool_use.bin");
    const STREAM_EXCEPTION: &[u8] =
        include_bytes!("../../tests/fixtures/bedrock/stream_exception.bin");

    const MODEL: &str = "anthropic.claude-3-7-sonnet-20250219-v1:0";

    fn tool_call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn tool_result(id: &str, text: &str) -> Message {
        let mut m = Message::text(Role::Tool, text);
        m.tool_call_id = Some(id.into());
        m
    }

    fn top_song() -> Tool {
        Tool {
            name: "top_song".into(),
            description: Some("Get the most popular song played on a radio station.".into()),
            parameters: json!({
                "type": "object",
                "properties": {"sign": {"type": "string"}},
                "required": ["sign"]
            }),
        }
    }

    fn request(model: &str, messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            messages,
            ..ChatRequest::default()
        }
    }

    // ---- requests ----

    #[test]
    fn encodes_a_conversation_with_tools() {
        let mut assistant = Message::text(Role::Assistant, "Let me check.");
        assistant.tool_calls = vec![
            tool_call("call_0", "top_song", r#"{"sign":"WZPZ"}"#),
            tool_call("call_1", "top_song", r#"{"sign":"WKRP"}"#),
        ];
        let mut failed = tool_result("call_1", "station unknown");
        failed.is_error = true;
        let req = ChatRequest {
            system: vec!["You are a DJ.".into(), "  ".into(), "Be brief.".into()],
            tools: vec![top_song()],
            tool_choice: Some(ToolChoice::Named("top_song".into())),
            max_tokens: Some(512),
            temperature: Some(0.5),
            top_p: Some(0.9),
            stop: vec!["END".into()],
            stream: true,
            ..request(
                MODEL,
                vec![
                    Message::text(
                        Role::User,
                        "What is the most popular song on WZPZ and WKRP?",
                    ),
                    assistant,
                    tool_result("call_0", r#"{"song":"Elemental Hotel"}"#),
                    failed,
                    Message::text(Role::User, "Thanks!"),
                ],
            )
        };
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body,
            json!({
                "messages": [
                    {"role": "user", "content": [
                        {"text": "What is the most popular song on WZPZ and WKRP?"}
                    ]},
                    {"role": "assistant", "content": [
                        {"text": "Let me check."},
                        {"toolUse": {"toolUseId": "call_0", "name": "top_song",
                                     "input": {"sign": "WZPZ"}}},
                        {"toolUse": {"toolUseId": "call_1", "name": "top_song",
                                     "input": {"sign": "WKRP"}}}
                    ]},
                    {"role": "user", "content": [
                        {"toolResult": {"toolUseId": "call_0",
                                        "content": [{"text": "{\"song\":\"Elemental Hotel\"}"}],
                                        "status": "success"}},
                        {"toolResult": {"toolUseId": "call_1",
                                        "content": [{"text": "station unknown"}],
                                        "status": "error"}},
                        {"text": "Thanks!"}
                    ]}
                ],
                "system": [{"text": "You are a DJ."}, {"text": "Be brief."}],
                "inferenceConfig": {
                    "maxTokens": 512, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]
                },
                "toolConfig": {
                    "tools": [{"toolSpec": {
                        "name": "top_song",
                        "description": "Get the most popular song played on a radio station.",
                        "inputSchema": {"json": {
                            "type": "object",
                            "properties": {"sign": {"type": "string"}},
                            "required": ["sign"]
                        }}
                    }}],
                    "toolChoice": {"tool": {"name": "top_song"}}
                },
                "additionalModelResponseFieldPaths": ["/stop_sequence"]
            })
        );
        assert_eq!(drops, vec![]);
    }

    #[test]
    fn tool_choices_map_to_converse_unions() {
        let base = ChatRequest {
            tools: vec![top_song()],
            ..request(MODEL, vec![Message::text(Role::User, "hi")])
        };
        let choice = |choice: Option<ToolChoice>| {
            let (body, drops) = encode_request(&ChatRequest {
                tool_choice: choice,
                ..base.clone()
            });
            (body.get("toolConfig").cloned(), drops)
        };
        assert_eq!(
            choice(None).0.and_then(|c| c.get("toolChoice").cloned()),
            None
        );
        assert_eq!(
            choice(Some(ToolChoice::Auto))
                .0
                .and_then(|c| c.get("toolChoice").cloned()),
            None
        );
        assert_eq!(
            choice(Some(ToolChoice::Required))
                .0
                .map(|c| c["toolChoice"].clone()),
            Some(json!({"any": {}}))
        );
        // "none" withholds the tools: exact, so not reported.
        assert_eq!(choice(Some(ToolChoice::None)), (None, vec![]));

        // With tool history the tools must stay declared, so "none" becomes "auto".
        let mut assistant = Message::new(Role::Assistant, vec![]);
        assistant.tool_calls = vec![tool_call("c1", "top_song", "{}")];
        let (body, drops) = encode_request(&ChatRequest {
            tool_choice: Some(ToolChoice::None),
            messages: vec![
                Message::text(Role::User, "hi"),
                assistant,
                tool_result("c1", "Elemental Hotel"),
            ],
            ..base.clone()
        });
        assert!(body["toolConfig"].get("toolChoice").is_none());
        assert_eq!(
            body["toolConfig"]["tools"][0]["toolSpec"]["name"],
            "top_song"
        );
        assert_eq!(drops, vec![Drop::approximated("tool_choice")]);

        // A forced choice without tools cannot be carried.
        let (body, drops) = encode_request(&ChatRequest {
            tools: vec![],
            tool_choice: Some(ToolChoice::Required),
            ..base
        });
        assert!(body.get("toolConfig").is_none());
        assert_eq!(drops, vec![Drop::dropped("tool_choice")]);
    }

    #[test]
    fn replayed_tool_history_without_tools_declares_them() {
        let mut assistant = Message::new(Role::Assistant, vec![]);
        assistant.tool_calls = vec![
            tool_call("c1", "search", r#"{"q":"x"}"#),
            tool_call("c2", "search", r#"{"q":"y"}"#),
            tool_call("c3", "fetch", "not json"),
        ];
        let req = request(
            MODEL,
            vec![
                Message::text(Role::User, "Summarise what you found."),
                assistant,
                tool_result("c1", "a"),
                tool_result("c2", ""),
                tool_result("c3", "c"),
            ],
        );
        let (body, drops) = encode_request(&req);
        let empty = json!({"type": "object", "properties": {}});
        assert_eq!(
            body["toolConfig"],
            json!({"tools": [
                {"toolSpec": {"name": "search", "inputSchema": {"json": empty}}},
                {"toolSpec": {"name": "fetch", "inputSchema": {"json": empty}}}
            ]})
        );
        assert_eq!(
            body["messages"][1]["content"][2]["toolUse"]["input"],
            json!({})
        );
        assert_eq!(
            body["messages"][2]["content"][1]["toolResult"]["content"],
            json!([{"text": "(empty)"}])
        );
        assert_eq!(
            drops,
            vec![
                Drop::approximated("messages.tool_calls.arguments"),
                Drop::approximated("messages.content"),
                Drop::approximated("tools"),
            ]
        );
    }

    #[test]
    fn images_go_as_bytes_and_urls_are_dropped() {
        let req = request(
            MODEL,
            vec![Message::new(
                Role::User,
                vec![
                    Part::Text("What is this?".into()),
                    Part::Image(ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into(),
                    }),
                    Part::Image(ImageSource::Url("data:image/jpeg;base64,/9j/4AAQ".into())),
                    Part::Image(ImageSource::Url("https://example.com/cat.webp".into())),
                    Part::Image(ImageSource::Base64 {
                        media_type: "image/tiff".into(),
                        data: "SUkqAA==".into(),
                    }),
                ],
            )],
        );
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [
                {"text": "What is this?"},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}}
            ]}])
        );
        assert_eq!(
            drops,
            vec![
                Drop::dropped("messages.content.image_url"),
                Drop::dropped("messages.content.image"),
            ]
        );
    }

    #[test]
    fn claude_thinking_goes_in_additional_fields() {
        let mut earlier = Message::text(Role::Assistant, "It is 4.");
        earlier.reasoning = Some("2+2=4".into());
        earlier.reasoning_signature = Some("EqQBCgIYAhIM".into());
        let req = ChatRequest {
            reasoning: Some(Reasoning::Budget(2048)),
            max_tokens: Some(1000),
            temperature: Some(0.2),
            top_p: Some(0.5),
            top_k: Some(40),
            ..request(
                "us.anthropic.claude-sonnet-4-20250514-v1:0",
                vec![
                    Message::text(Role::User, "2+2?"),
                    earlier,
                    Message::text(Role::User, "And 3+3?"),
                ],
            )
        };
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"][1]["content"][0],
            json!({"reasoningContent": {"reasoningText": {
                "text": "2+2=4", "signature": "EqQBCgIYAhIM"
            }}})
        );
        assert_eq!(
            body["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 2048}})
        );
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 6144, "topP": 0.95})
        );
        assert_eq!(
            drops,
            vec![
                Drop::approximated("max_tokens"),
                Drop::dropped("temperature"),
                Drop::approximated("top_p"),
                Drop::dropped("top_k"),
            ]
        );

        let (body, drops) = encode_request(&ChatRequest {
            reasoning: Some(Reasoning::Effort("high".into())),
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            ..req.clone()
        });
        assert_eq!(
            body["additionalModelRequestFields"]["thinking"]["budget_tokens"],
            16384
        );
        assert_eq!(body["inferenceConfig"]["maxTokens"], 16384 + 4096);
        assert_eq!(drops, vec![Drop::approximated("reasoning_effort")]);
    }

    #[test]
    fn top_k_and_reasoning_follow_the_model_family() {
        let base = request("claude-x", vec![Message::text(Role::User, "hi")]);
        let with = |model: &str, top_k, reasoning| {
            encode_request(&ChatRequest {
                model: model.into(),
                top_k,
                reasoning,
                ..base.clone()
            })
        };
        let (body, drops) = with("anthropic.claude-3-haiku-20240307-v1:0", Some(5), None);
        assert_eq!(body["additionalModelRequestFields"], json!({"top_k": 5}));
        assert_eq!(drops, vec![]);

        let (body, drops) = with("us.amazon.nova-pro-v1:0", Some(5), None);
        assert_eq!(
            body["additionalModelRequestFields"],
            json!({"inferenceConfig": {"topK": 5}})
        );
        assert_eq!(drops, vec![]);

        let (body, drops) = with(
            "meta.llama3-70b-instruct-v1:0",
            Some(5),
            Some(Reasoning::Budget(2048)),
        );
        assert!(body.get("additionalModelRequestFields").is_none());
        assert_eq!(
            drops,
            vec![
                Drop::dropped("thinking.budget_tokens"),
                Drop::dropped("top_k")
            ]
        );
        let (_, drops) = with(
            "mistral.mistral-large-2402-v1:0",
            None,
            Some(Reasoning::Disabled),
        );
        assert_eq!(drops, vec![]);
    }

    #[test]
    fn unsupported_fields_are_reported() {
        let mut extra = Map::new();
        extra.insert("logit_bias".into(), json!({"50256": -100}));
        let mut other_reasoning = Message::text(Role::Assistant, "Sure.");
        other_reasoning.reasoning = Some("unsigned thoughts".into());
        let req = ChatRequest {
            seed: Some(7),
            n: Some(2),
            presence_penalty: Some(0.5),
            frequency_penalty: Some(0.0),
            logprobs: Some(true),
            top_logprobs: Some(3),
            response_format: Some(ResponseFormat::JsonObject),
            user: Some("u-1".into()),
            parallel_tool_calls: Some(false),
            temperature: Some(1.5),
            max_tokens: Some(0),
            stop: vec!["\n".into(), "STOP".into()],
            extra,
            ..request(
                "amazon.titan-text-premier-v1:0",
                vec![
                    other_reasoning,
                    Message::text(Role::User, "   "),
                    Message::text(Role::User, "Go on."),
                ],
            )
        };
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "(continued)"}]},
                {"role": "assistant", "content": [{"text": "Sure."}]},
                {"role": "user", "content": [{"text": "Go on."}]}
            ])
        );
        assert_eq!(
            body["inferenceConfig"],
            json!({"temperature": 1.0, "stopSequences": ["STOP"]})
        );
        assert!(body.get("additionalModelResponseFieldPaths").is_none());
        assert_eq!(
            drops,
            vec![
                Drop::dropped("messages.reasoning"),
                Drop::approximated("messages"),
                Drop::approximated("max_tokens"),
                Drop::approximated("temperature"),
                Drop::approximated("stop"),
                Drop::dropped("seed"),
                Drop::dropped("n"),
                Drop::dropped("presence_penalty"),
                Drop::dropped("logprobs"),
                Drop::dropped("top_logprobs"),
                Drop::dropped("response_format"),
                Drop::dropped("user"),
                Drop::dropped("parallel_tool_calls"),
                Drop::dropped("logit_bias"),
            ]
        );
    }

    #[test]
    fn tool_use_ids_fit_converse() {
        assert_eq!(
            tool_use_id("toolu_01A09q90qw90lq917835lq9"),
            "toolu_01A09q90qw90lq917835lq9"
        );
        assert_eq!(tool_use_id("call:abc.def-1"), "call:abc.def-1");
        assert_eq!(tool_use_id("call abc/def"), "call_abc_def");
        assert_eq!(tool_use_id(""), "call");
        let long_a = format!("{}a", "x".repeat(80));
        let long_b = format!("{}b", "x".repeat(80));
        let (a, b) = (tool_use_id(&long_a), tool_use_id(&long_b));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(a, tool_use_id(&long_a), "deterministic");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)));
    }

    #[test]
    fn paths_encode_the_model_id_as_one_segment() {
        assert_eq!(
            request_path("anthropic.claude-3-haiku-20240307-v1:0", false),
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(
            request_path("us.amazon.nova-pro-v1:0", true),
            "/model/us.amazon.nova-pro-v1%3A0/converse-stream"
        );
        assert_eq!(
            request_path(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
                true
            ),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream"
        );
        assert_eq!(
            request_path("a b?c#d%", false),
            "/model/a%20b%3Fc%23d%25/converse"
        );
    }

    // ---- replies ----

    fn decode(bytes: &[u8]) -> ChatResponse {
        decode_response(bytes, MODEL, "chatcmpl-1", 1_700_000_000).expect("decodes")
    }

    #[test]
    fn decodes_a_text_reply() {
        let resp = decode(TEXT);
        assert_eq!(resp.id, "chatcmpl-1");
        assert_eq!(resp.model, MODEL);
        assert_eq!(resp.created_s, 1_700_000_000);
        assert_eq!(
            resp.message,
            Message::text(
                Role::Assistant,
                "Cheyenne is the capital of Wyoming. It is also the state's most populous city."
            )
        );
        assert_eq!(resp.finish_reason, Some(FinishReason::Stop));
        assert_eq!(resp.stop_sequence, None);
        let usage = resp.usage.expect("usage");
        assert_eq!(usage, Usage::from_exclusive(12, 19, 1024, 0));
        assert_eq!(usage.prompt_tokens, 1036);
    }

    #[test]
    fn decodes_reasoning_text_and_tool_calls() {
        let resp = decode(TOOL_USE);
        let mut expected = Message::text(
            Role::Assistant,
            "I'll look up the most popular song on WZPZ.",
        );
        expected.reasoning = Some(
            "The user wants the top song on WZPZ. I should call top_song with sign WZPZ.".into(),
        );
        expected.reasoning_signature = Some("ErUBCkYIBRgCIkB2zgTyG1qjcnHq".into());
        expected.tool_calls = vec![tool_call(
            "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
            "top_song",
            r#"{"sign":"WZPZ"}"#,
        )];
        assert_eq!(resp.message, expected);
        assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(resp.usage, Some(Usage::from_exclusive(375, 112, 0, 1536)));
    }

    #[test]
    fn stop_reasons_map_to_neutral_ones() {
        let cases = [
            ("end_turn", FinishReason::Stop),
            ("tool_use", FinishReason::ToolCalls),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("stop_sequence", FinishReason::StopSequence),
            ("guardrail_intervened", FinishReason::ContentFilter),
            ("content_filtered", FinishReason::ContentFilter),
            ("malformed_model_output", FinishReason::Error),
            ("malformed_tool_use", FinishReason::Error),
            ("something_new", FinishReason::Stop),
        ];
        for (wire, neutral) in cases {
            let body = json!({
                "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
                "stopReason": wire,
                "additionalModelResponseFields": {"stop_sequence": "END"},
            });
            let resp = decode(body.to_string().as_bytes());
            assert_eq!(resp.finish_reason, Some(neutral), "{wire}");
            assert_eq!(resp.stop_sequence.as_deref(), Some("END"));
        }
    }

    #[test]
    fn decodes_images_citations_and_odd_blocks() {
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"citationsContent": {"content": [{"text": "Cited "}, {"text": "text."}],
                                      "citations": [{"title": "doc"}]}},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                {"reasoningContent": {"redactedContent": "c2VjcmV0"}},
                {"somethingNew": {}},
                {"toolUse": {"toolUseId": "t1", "name": "noop"}}
            ]}},
            "stopReason": "end_turn",
            "usage": null
        });
        let resp = decode(body.to_string().as_bytes());
        assert_eq!(
            resp.message.content,
            vec![
                Part::Text("Cited text.".into()),
                Part::Image(ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgo=".into()
                }),
            ]
        );
        assert_eq!(resp.message.tool_calls, vec![tool_call("t1", "noop", "{}")]);
        assert_eq!(resp.message.reasoning, None);
        // end_turn with calls still tells the client to run them.
        assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(resp.usage, None);
    }

    #[test]
    fn bad_replies_are_errors() {
        let decode_err = |b: &[u8]| decode_response(b, MODEL, "x", 0).expect_err("fails");
        assert_eq!(
            decode_err(THROTTLING),
            "Too many requests, please wait before trying again."
        );
        assert!(decode_err(b"not json").starts_with("invalid Bedrock response body"));
        assert!(decode_err(b"[1,2]").contains("not a JSON object"));
        assert_eq!(decode_err(b"{}"), "Bedrock returned no output message");
        assert!(decode_err(br#"{"output":{"message":{"content":"text"}}}"#)
            .starts_with("invalid Bedrock response body"));
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            parse_error_body(THROTTLING).as_deref(),
            Some("Too many requests, please wait before trying again.")
        );
        assert_eq!(
            parse_error_body(br#"{"Message":"User: arn:aws:iam::1:user/x is not authorized"}"#)
                .as_deref(),
            Some("User: arn:aws:iam::1:user/x is not authorized")
        );
        assert_eq!(parse_error_body(br#"{"message":"  "}"#), None);
        assert_eq!(parse_error_body(br#"{"message":5}"#), None);
        assert_eq!(parse_error_body(b"<html>502</html>"), None);
    }

    // ---- streams ----

    /// One event frame as Bedrock sends it: the three headers in its order, and a payload
    /// that carries Bedrock's random-length `p` padding.
    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode_frame(
            &[
                (":event-type", HeaderValue::String(kind.into())),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("event".into())),
            ],
            payload.as_bytes(),
        )
    }

    fn exception(kind: &str, payload: &str) -> Vec<u8> {
        encode_frame(
            &[
                (":exception-type", HeaderValue::String(kind.into())),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("exception".into())),
            ],
            payload.as_bytes(),
        )
    }

    fn stream_text_frames() -> Vec<Vec<u8>> {
        vec![
            event(
                "messageStart",
                r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ","role":"assistant"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Cheyenne"},"p":"abcdefghijklmnopqrstu"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":" is the capital"},"p":"abcdef"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":" of Wyoming."},"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJK"}"#,
            ),
            event(
                "contentBlockStop",
                r#"{"contentBlockIndex":0,"p":"abcdefghijklmnopqrstuvwxyzABCD"}"#,
            ),
            event(
                "messageStop",
                r#"{"p":"abcdefghijklmnopq","stopReason":"end_turn"}"#,
            ),
            event(
                "metadata",
                r#"{"metrics":{"latencyMs":612},"p":"abcdefghijklmnop","usage":{"inputTokens":14,"outputTokens":9,"totalTokens":23}}"#,
            ),
        ]
    }

    fn stream_tool_use_frames() -> Vec<Vec<u8>> {
        vec![
            event("messageStart", r#"{"p":"abcdefghij","role":"assistant"}"#),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"The user wants the top songs."}},"p":"abcdefghijklmnopqrstuvwxyzA"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":" I'll call top_song twice."}},"p":"abcdefghijk"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"ErUBCkYIBRgCIkB2zgTyG1qjcnHq"}},"p":"abcdefghijklmnopqrstuvwxyzABCDEFGH"}"#,
            ),
            event(
                "contentBlockStop",
                r#"{"contentBlockIndex":0,"p":"abcdefg"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"text":"Checking both stations."},"p":"abcdefghijklmn"}"#,
            ),
            event(
                "contentBlockStop",
                r#"{"contentBlockIndex":1,"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"}"#,
            ),
            event(
                "contentBlockStart",
                r#"{"contentBlockIndex":2,"p":"abcdefghijklmnopqrstu","start":{"toolUse":{"name":"top_song","toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"}}}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":""}},"p":"abcdefghijklmnopqrstuvwxyzABCDEF"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\"sign\": "}},"p":"abcdefghijklmnopqr"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"\"WZPZ\"}"}},"p":"abcdefgh"}"#,
            ),
            event(
                "contentBlockStop",
                r#"{"contentBlockIndex":2,"p":"abcdefghijklmnopqrstuvwxy"}"#,
            ),
            event(
                "contentBlockStart",
                r#"{"contentBlockIndex":3,"p":"abcdefghijklmnopqrstuvwxyzABC","start":{"toolUse":{"name":"top_song","toolUseId":"tooluse_Qw0ZbVbESG6TuhCpA4w2Tw"}}}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":3,"delta":{"toolUse":{"input":"{\"sign\": \"WKRP\"}"}},"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"}"#,
            ),
            event("contentBlockStop", r#"{"contentBlockIndex":3,"p":"abcd"}"#),
            event(
                "messageStop",
                r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHI","stopReason":"tool_use"}"#,
            ),
            event(
                "metadata",
                r#"{"metrics":{"latencyMs":2211},"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01","usage":{"cacheReadInputTokens":1536,"cacheWriteInputTokens":0,"inputTokens":412,"outputTokens":168,"totalTokens":2116}}"#,
            ),
        ]
    }

    fn stream_exception_frames() -> Vec<Vec<u8>> {
        vec![
            event(
                "messageStart",
                r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV","role":"assistant"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Once upon"},"p":"abcdefghijklmnopqrstuvwxyz"}"#,
            ),
            exception(
                "throttlingException",
                r#"{"message":"Too many tokens, please wait before trying again."}"#,
            ),
        ]
    }

    /// The checked-in binary fixtures are exactly these frames; regenerate them with
    /// `cargo test write_stream_fixtures -- --ignored` after changing a frame above.
    type Fixture = (&'static str, fn() -> Vec<Vec<u8>>, &'static [u8]);
    const FIXTURES: [Fixture; 3] = [
        ("stream_text.bin", stream_text_frames, STREAM_TEXT),
        (
            "stream_tool_use.bin",
            stream_tool_use_frames,
            STREAM_TOOL_USE,
        ),
        (
            "stream_exception.bin",
            stream_exception_frames,
            STREAM_EXCEPTION,
        ),
    ];

    #[test]
    #[ignore = "writes tests/fixtures/bedrock/*.bin"]
    fn write_stream_fixtures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bedrock");
        for (name, frames, _) in FIXTURES {
            std::fs::write(dir.join(name), frames().concat()).expect("writes fixture");
        }
    }

    #[test]
    fn stream_fixtures_are_current() {
        for (name, frames, bytes) in FIXTURES {
            assert_eq!(frames().concat(), bytes, "{name} is stale");
        }
    }

    fn stream_chunks(chunks: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
        let mut decoder = StreamDecoder::new(MODEL, "chatcmpl-1");
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out).expect("push");
        }
        decoder.finish(&mut out).expect("finish");
        (out, decoder.saw_stop())
    }

    /// The fixture whole, split at every byte into two pushes, and one byte at a time must
    /// all decode the same.
    fn stream(bytes: &[u8]) -> (Vec<StreamEvent>, bool) {
        let whole = stream_chunks(&[bytes]);
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(stream_chunks(&[a, b]), whole, "split at byte {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(stream_chunks(&singles), whole, "one byte at a time");
        whole
    }

    fn start() -> StreamEvent {
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: MODEL.into(),
        }
    }

    #[test]
    fn streams_text() {
        let (events, saw_stop) = stream(STREAM_TEXT);
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::TextDelta("Cheyenne".into()),
                StreamEvent::TextDelta(" is the capital".into()),
                StreamEvent::TextDelta(" of Wyoming.".into()),
                StreamEvent::Finish {
                    reason: FinishReason::Stop,
                    stop_sequence: None
                },
                StreamEvent::Usage(Usage::from_exclusive(14, 9, 0, 0)),
            ]
        );
        assert!(saw_stop);
    }

    #[test]
    fn streams_reasoning_and_tool_calls() {
        let (events, saw_stop) = stream(STREAM_TOOL_USE);
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::ReasoningDelta("The user wants the top songs.".into()),
                StreamEvent::ReasoningDelta(" I'll call top_song twice.".into()),
                StreamEvent::ReasoningSignature("ErUBCkYIBRgCIkB2zgTyG1qjcnHq".into()),
                StreamEvent::TextDelta("Checking both stations.".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into(),
                    name: "top_song".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "{\"sign\": ".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "\"WZPZ\"}".into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "tooluse_Qw0ZbVbESG6TuhCpA4w2Tw".into(),
                    name: "top_song".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 1,
                    arguments: "{\"sign\": \"WKRP\"}".into()
                },
                StreamEvent::Finish {
                    reason: FinishReason::ToolCalls,
                    stop_sequence: None
                },
                StreamEvent::Usage(Usage::from_exclusive(412, 168, 1536, 0)),
            ]
        );
        assert!(saw_stop);
    }

    #[test]
    fn streams_an_exception() {
        let (events, saw_stop) = stream(STREAM_EXCEPTION);
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::TextDelta("Once upon".into()),
                StreamEvent::Error {
                    status: 429,
                    message: "Too many tokens, please wait before trying again.".into()
                },
            ]
        );
        assert!(!saw_stop);
    }

    #[test]
    fn exceptions_get_fitting_statuses() {
        let cases = [
            ("throttlingException", 429),
            ("modelStreamErrorException", 502),
            ("internalServerException", 500),
            ("validationException", 400),
            ("serviceUnavailableException", 503),
            ("modelTimeoutException", 504),
            ("somethingNewException", 502),
        ];
        for (kind, status) in cases {
            let (events, _) = stream_chunks(&[&exception(kind, r#"{"message":"boom"}"#)]);
            assert_eq!(
                events,
                vec![StreamEvent::Error {
                    status,
                    message: "boom".into()
                }],
                "{kind}"
            );
        }
        let (events, _) = stream_chunks(&[&exception("internalServerException", "")]);
        assert_eq!(
            events,
            vec![StreamEvent::Error {
                status: 500,
                message: "Bedrock reported internalServerException mid-stream".into()
            }]
        );
        let unmodeled = encode_frame(
            &[
                (":message-type", HeaderValue::String("error".into())),
                (
                    ":error-code",
                    HeaderValue::String("ThrottlingException".into()),
                ),
                (":error-message", HeaderValue::String("slow down".into())),
            ],
            b"",
        );
        assert_eq!(
            stream_chunks(&[&unmodeled]).0,
            vec![StreamEvent::Error {
                status: 429,
                message: "slow down".into()
            }]
        );
    }

    #[test]
    fn odd_frames_are_skipped_or_reported() {
        let frames = [
            // No message type, an unknown one, an unknown event, no event type.
            encode_frame(&[], b"{}"),
            encode_frame(
                &[(":message-type", HeaderValue::String("ping".into()))],
                b"",
            ),
            event("somethingNew", "not even json"),
            encode_frame(
                &[(":message-type", HeaderValue::String("event".into()))],
                b"{}",
            ),
            // A delta for a block that never started as a tool.
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":7,"delta":{"toolUse":{"input":"{}"}}}"#,
            ),
            // Fields of the wrong type inside a known event carry nothing.
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":"x","delta":5}"#,
            ),
            event("metadata", r#"{"usage":{"inputTokens":-1}}"#),
            event("messageStop", "[]"),
        ]
        .concat();
        let (events, saw_stop) = stream_chunks(&[&frames]);
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::Error {
                    status: 502,
                    message: "Bedrock sent a messageStop event that is not a JSON object".into()
                }
            ]
        );
        assert!(!saw_stop);
    }

    #[test]
    fn broken_framing_is_an_error() {
        let mut decoder = StreamDecoder::new(MODEL, "chatcmpl-1");
        let mut out = Vec::new();
        let mut bytes = stream_text_frames().concat();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(
            decoder.push(&bytes, &mut out),
            Err(EventStreamError::BadMessageCrc)
        );
        // Every frame before the corrupt one was still delivered.
        assert_eq!(out.len(), 5);
        assert!(decoder.saw_stop());

        let mut decoder = StreamDecoder::new(MODEL, "chatcmpl-1");
        let mut out = Vec::new();
        decoder
            .push(&STREAM_TEXT[..STREAM_TEXT.len() - 3], &mut out)
            .expect("partial frame");
        assert_eq!(
            decoder.finish(&mut out),
            Err(EventStreamError::Malformed("stream ended inside a frame"))
        );
    }
}
