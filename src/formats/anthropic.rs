//! Anthropic's Messages API (`POST /v1/messages`) in both directions, translated through the
//! neutral model:
//! - as an upstream: neutral request → Anthropic body ([`encode_request`]), Anthropic reply and
//!   SSE stream → neutral ([`decode_response`], [`StreamDecoder`]), error bodies
//!   ([`parse_error_body`]);
//! - as an inbound format: Anthropic client body → neutral ([`decode_request`]), neutral reply
//!   and stream → Anthropic shapes ([`encode_response`], [`StreamEncoder`]), relay errors in
//!   Anthropic's error shape ([`error_body`]).
//!
//! Anthropic→Anthropic traffic never comes through here (the relay passes it through), so
//! `cache_control` is neither carried nor reported: it is a cost hint with no neutral meaning,
//! and reporting it would flag nearly every Claude Code request. Citations in replies are
//! likewise not carried (the neutral text part has no place for them).
//!
//! What the neutral model cannot hold while decoding a client request (server tools, document
//! blocks, redacted thinking, …) is kept in `ChatRequest::extra` under a path-like key such as
//! `messages.content.document`, so the encoder of another format reports it as dropped.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::formats::neutral::Usage;
use crate::formats::neutral::{
    ChatRequest, ChatResponse, Drop, Drops, FinishReason, ImageSource, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, Tool, ToolCall, ToolChoice,
};
use crate::formats::sse::{self, SseError, SseEvent, SseParser};

/// Anthropic requires `max_tokens`; this is used when the client gave none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic rejects a thinking budget below this.
const MIN_THINKING_BUDGET: u64 = 1024;

/// With thinking enabled Anthropic accepts `top_p` only from here to 1.
const MIN_TOP_P_WITH_THINKING: f64 = 0.95;

/// Stands in for the user turn Anthropic requires before a conversation that starts with the
/// assistant; it must be non-empty text.
const CONTINUED: &str = "(continued)";

// ---- Anthropic as an upstream: the request ---------------------------------------------------

/// OpenAI's sampling parameters that neither Anthropic nor Converse has: reported when set
/// to anything but their neutral value.
pub(crate) fn drop_openai_only_sampling(req: &ChatRequest, drops: &mut Drops) {
    if req.seed.is_some() {
        drops.dropped("seed");
    }
    if req.n.is_some_and(|n| n > 1) {
        drops.dropped("n");
    }
    if req.presence_penalty.is_some_and(|p| p != 0.0) {
        drops.dropped("presence_penalty");
    }
    if req.frequency_penalty.is_some_and(|p| p != 0.0) {
        drops.dropped("frequency_penalty");
    }
    if req.logprobs == Some(true) {
        drops.dropped("logprobs");
    }
    if req.top_logprobs.is_some_and(|n| n > 0) {
        drops.dropped("top_logprobs");
    }
}

/// Temperature and top_p as Claude accepts them, wherever it is served (Anthropic, Bedrock,
/// Vertex): temperature within 0–1, and with extended thinking only temperature 1 and a
/// top_p of at least 0.95. What had to change is reported.
pub(crate) fn claude_sampling(
    req: &ChatRequest,
    thinking: bool,
    drops: &mut Drops,
) -> (Option<f64>, Option<f64>) {
    let temperature = req.temperature.and_then(|t| {
        if thinking {
            // Anthropic allows only temperature 1 with thinking; sending 1 changes nothing.
            if t != 1.0 {
                drops.dropped("temperature");
            }
            None
        } else {
            let clamped = t.clamp(0.0, 1.0);
            if clamped != t {
                drops.approximated("temperature");
            }
            Some(clamped)
        }
    });
    let top_p = req.top_p.map(|p| {
        let floor = if thinking {
            MIN_TOP_P_WITH_THINKING
        } else {
            0.0
        };
        let clamped = p.clamp(floor, 1.0);
        if clamped != p {
            drops.approximated("top_p");
        }
        clamped
    });
    (temperature, top_p)
}

/// Neutral request → Anthropic request body. Returns the body and what could not be carried.
pub fn encode_request(req: &ChatRequest) -> (Value, Vec<Drop>) {
    let mut drops = Drops::default();
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));

    let system: Vec<&String> = req.system.iter().filter(|s| !s.is_empty()).collect();
    match system.as_slice() {
        [] => {}
        [only] => {
            body.insert("system".into(), json!(only));
        }
        many => {
            // Separate blocks keep the boundaries the client drew between its instructions.
            let blocks: Vec<Value> = many
                .iter()
                .map(|s| json!({"type": "text", "text": s}))
                .collect();
            body.insert("system".into(), Value::Array(blocks));
        }
    }

    body.insert(
        "messages".into(),
        Value::Array(encode_messages(&req.messages, &mut drops)),
    );

    let thinking_budget = encode_thinking(req.reasoning.as_ref(), &mut body, &mut drops);
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(budget) = thinking_budget {
        // Anthropic counts thinking inside max_tokens and rejects a budget that leaves no room.
        if max_tokens <= budget {
            if req.max_tokens.is_some() {
                drops.approximated("max_tokens");
            }
            max_tokens = budget.saturating_add(DEFAULT_MAX_TOKENS);
        }
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    encode_sampling(req, thinking_budget.is_some(), &mut body, &mut drops);

    if !req.tools.is_empty() {
        let tools: Vec<Value> = req.tools.iter().map(encode_tool).collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = encode_tool_choice(req, &mut drops) {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
    }

    drop_openai_only_sampling(req, &mut drops);
    match req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) | Some(ResponseFormat::JsonSchema { .. }) => {
            drops.dropped("response_format")
        }
    }
    for key in req.extra.keys() {
        drops.dropped(key);
    }
    (Value::Object(body), drops.0)
}

/// Writes `thinking` and returns the budget when thinking is on.
fn encode_thinking(
    reasoning: Option<&Reasoning>,
    body: &mut Map<String, Value>,
    drops: &mut Drops,
) -> Option<u64> {
    let budget = match reasoning? {
        Reasoning::Disabled | Reasoning::Budget(0) => {
            body.insert("thinking".into(), json!({"type": "disabled"}));
            return None;
        }
        Reasoning::Budget(b) if *b < MIN_THINKING_BUDGET => {
            drops.approximated("thinking.budget_tokens");
            MIN_THINKING_BUDGET
        }
        Reasoning::Budget(b) => *b,
        Reasoning::Effort(effort) => {
            let budget = match effort.as_str() {
                "none" => {
                    body.insert("thinking".into(), json!({"type": "disabled"}));
                    return None;
                }
                "minimal" | "low" => 1024,
                "high" => 16384,
                "xhigh" | "max" => 32768,
                _ => 4096,
            };
            drops.approximated("reasoning_effort");
            budget
        }
    };
    body.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": budget}),
    );
    Some(budget)
}

/// temperature, top_p, top_k and stop sequences, within what Anthropic accepts.
fn encode_sampling(
    req: &ChatRequest,
    thinking: bool,
    body: &mut Map<String, Value>,
    drops: &mut Drops,
) {
    let (temperature, top_p) = claude_sampling(req, thinking, drops);
    if let Some(t) = temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        if thinking {
            drops.dropped("top_k");
        } else {
            body.insert("top_k".into(), json!(k));
        }
    }
    // Anthropic rejects stop sequences that are only whitespace (OpenAI clients send "\n").
    let stops: Vec<&String> = req.stop.iter().filter(|s| !s.trim().is_empty()).collect();
    if stops.len() != req.stop.len() {
        drops.dropped("stop");
    }
    if !stops.is_empty() {
        body.insert("stop_sequences".into(), json!(stops));
    }
}

fn encode_tool(tool: &Tool) -> Value {
    // Anthropic needs an object schema even for a tool without parameters.
    let schema = match &tool.parameters {
        Value::Object(o) if !o.is_empty() => Value::Object(o.clone()),
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut out = json!({"name": tool.name, "input_schema": schema});
    if let Some(description) = &tool.description {
        out["description"] = json!(description);
    }
    out
}

fn encode_tool_choice(req: &ChatRequest, drops: &mut Drops) -> Option<Value> {
    if req.tools.is_empty() {
        // Anthropic refuses tool_choice without tools; auto and none mean the same without any.
        if matches!(
            req.tool_choice,
            Some(ToolChoice::Required) | Some(ToolChoice::Named(_))
        ) {
            drops.dropped("tool_choice");
        }
        return None;
    }
    let no_parallel = req.parallel_tool_calls == Some(false);
    let mut choice = match &req.tool_choice {
        None if no_parallel => json!({"type": "auto"}),
        None => return None,
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Named(name)) => json!({"type": "tool", "name": name}),
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
    };
    if no_parallel {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Some(choice)
}

/// Neutral messages → Anthropic's alternating user/assistant turns: consecutive same-role
/// messages merge, tool results become user turns, empty messages vanish.
fn encode_messages(messages: &[Message], drops: &mut Drops) -> Vec<Value> {
    let encoded: Vec<_> = messages
        .iter()
        .map(|message| match message.role {
            Role::User => ("user", Vec::new(), user_blocks(&message.content, drops)),
            Role::Assistant => ("assistant", Vec::new(), assistant_blocks(message, drops)),
            Role::Tool => ("user", vec![tool_result_block(message, drops)], Vec::new()),
        })
        .collect();
    alternate_turns(encoded, json!({"type": "text", "text": CONTINUED}), drops)
}

/// Encoded messages `(role, tool results, other blocks)` as the alternating user/assistant
/// turns Anthropic requires — and Bedrock's Converse, which follows the same rules:
/// consecutive same-role messages merge with tool results first in their turn, empty ones
/// vanish, and a conversation that starts with the assistant gets a placeholder user turn,
/// reported so the client knows its conversation was touched.
pub(crate) fn alternate_turns(
    encoded: Vec<(&'static str, Vec<Value>, Vec<Value>)>,
    placeholder: Value,
    drops: &mut Drops,
) -> Vec<Value> {
    // (role, tool results, other blocks) of each turn being built.
    let mut turns: Vec<(&'static str, Vec<Value>, Vec<Value>)> = Vec::new();
    for (role, tool_results, blocks) in encoded {
        if tool_results.is_empty() && blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.0 == role => {
                last.1.extend(tool_results);
                last.2.extend(blocks);
            }
            _ => turns.push((role, tool_results, blocks)),
        }
    }
    if turns.first().is_some_and(|t| t.0 == "assistant") {
        drops.approximated("messages");
        turns.insert(0, ("user", Vec::new(), vec![placeholder]));
    }
    turns
        .into_iter()
        .map(|(role, mut content, blocks)| {
            content.extend(blocks);
            json!({"role": role, "content": content})
        })
        .collect()
}

fn user_blocks(parts: &[Part], drops: &mut Drops) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|part| match part {
            // Anthropic rejects empty text blocks; an empty string says nothing anyway.
            Part::Text(t) if t.is_empty() => None,
            Part::Text(t) => Some(json!({"type": "text", "text": t})),
            Part::Image(source) => image_block(source, drops),
        })
        .collect()
}

fn assistant_blocks(message: &Message, drops: &mut Drops) -> Vec<Value> {
    let mut blocks = Vec::new();
    match (&message.reasoning, &message.reasoning_signature) {
        (reasoning, Some(signature)) if !signature.is_empty() => blocks.push(json!({
            "type": "thinking",
            "thinking": reasoning.as_deref().unwrap_or_default(),
            "signature": signature,
        })),
        // Anthropic verifies thinking sent back by its signature; unsigned reasoning (from
        // another provider) cannot be sent.
        (Some(reasoning), _) if !reasoning.is_empty() => drops.dropped("messages.reasoning"),
        _ => {}
    }
    for part in &message.content {
        match part {
            Part::Text(t) if t.is_empty() => {}
            Part::Text(t) => blocks.push(json!({"type": "text", "text": t})),
            Part::Image(_) => drops.dropped("messages.content.image"),
        }
    }
    for call in &message.tool_calls {
        blocks.push(json!({
            "type": "tool_use",
            "id": tool_id(&call.id),
            "name": call.name,
            "input": tool_input(&call.arguments, drops),
        }));
    }
    blocks
}

fn tool_result_block(message: &Message, drops: &mut Drops) -> Value {
    let mut block = json!({
        "type": "tool_result",
        "tool_use_id": tool_id(message.tool_call_id.as_deref().unwrap_or_default()),
    });
    let all_text = message.content.iter().all(|p| matches!(p, Part::Text(_)));
    if all_text {
        let text = message.joined_text();
        if !text.is_empty() {
            block["content"] = json!(text);
        }
    } else {
        block["content"] = Value::Array(user_blocks(&message.content, drops));
    }
    if message.is_error {
        block["is_error"] = json!(true);
    }
    block
}

fn image_block(source: &ImageSource, drops: &mut Drops) -> Option<Value> {
    let source = match source {
        ImageSource::Url(url) if url.starts_with("data:") => match parse_data_url(url) {
            Some((media_type, data)) => {
                json!({"type": "base64", "media_type": media_type, "data": data})
            }
            None => {
                // Only base64 data URLs have an Anthropic equivalent.
                drops.dropped("messages.content.image");
                return None;
            }
        },
        ImageSource::Url(url) => json!({"type": "url", "url": url}),
        ImageSource::Base64 { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
    };
    Some(json!({"type": "image", "source": source}))
}

/// `data:image/png;base64,AAAA` → (`image/png`, `AAAA`).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some((media_type, data))
}

/// Anthropic accepts tool ids of `[a-zA-Z0-9_-]` only; other providers' ids may carry more.
/// The mapping is a pure function, so a call and its result still agree.
fn tool_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The neutral arguments are JSON text; Anthropic wants the object itself.
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

// ---- Anthropic as an upstream: replies -------------------------------------------------------

#[derive(Deserialize)]
struct MessageWire {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<BlockWire>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: Option<UsageWire>,
    #[serde(default)]
    error: Option<ErrorWire>,
}

/// A content block of a reply, or the block announced by `content_block_start`.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum BlockWire {
    #[serde(rename = "text")]
    Text {
        #[serde(default)]
        text: String,
    },
    #[serde(rename = "tool_use")]
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(rename = "thinking")]
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    /// `redacted_thinking`, server tool blocks and whatever Anthropic adds next: the neutral
    /// model has no place for them.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct UsageWire {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl UsageWire {
    fn to_usage(self) -> Usage {
        Usage::from_exclusive(
            self.input_tokens.unwrap_or(0),
            self.output_tokens.unwrap_or(0),
            self.cache_read_input_tokens.unwrap_or(0),
            self.cache_creation_input_tokens.unwrap_or(0),
        )
    }
}

#[derive(Deserialize, Default)]
struct ErrorWire {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn parse_stop_reason(reason: &str) -> FinishReason {
    match reason {
        "stop_sequence" => FinishReason::StopSequence,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, pause_turn (a server tool paused; the turn is over for the client) and
        // reasons added later.
        _ => FinishReason::Stop,
    }
}

fn stop_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        // Anthropic has no error stop reason; the error itself travels separately.
        FinishReason::Stop | FinishReason::Error => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Anthropic reply body → neutral reply. `created_s` is 0: Anthropic sends no timestamp, the
/// relay knows the time.
pub fn decode_response(bytes: &[u8]) -> Result<ChatResponse, String> {
    let wire: MessageWire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if wire.kind == "error" {
        let message = wire.error.and_then(|e| e.message);
        return Err(message.unwrap_or_else(|| "Anthropic returned an error".into()));
    }
    let mut message = Message::new(Role::Assistant, Vec::new());
    for block in wire.content {
        match block {
            BlockWire::Text { text } => message.content.push(Part::Text(text)),
            BlockWire::ToolUse { id, name, input } => message.tool_calls.push(ToolCall {
                id,
                name,
                arguments: input_json(&input),
            }),
            BlockWire::Thinking {
                thinking,
                signature,
            } => add_thinking(&mut message, &thinking, signature),
            BlockWire::Other => {}
        }
    }
    Ok(ChatResponse {
        id: wire.id,
        model: wire.model,
        created_s: 0,
        message,
        finish_reason: wire.stop_reason.as_deref().map(parse_stop_reason),
        stop_sequence: wire.stop_sequence,
        usage: wire.usage.map(UsageWire::to_usage),
    })
}

/// Several thinking blocks (interleaved thinking) share the one neutral reasoning field; the
/// last signature is kept.
fn add_thinking(message: &mut Message, thinking: &str, signature: String) {
    message
        .reasoning
        .get_or_insert_with(String::new)
        .push_str(thinking);
    if !signature.is_empty() {
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

/// Anthropic error body → (message, error type), e.g.
/// `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`.
pub fn parse_error_body(bytes: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        error: Option<ErrorWire>,
    }
    match serde_json::from_slice::<Envelope>(bytes) {
        Ok(Envelope { error: Some(e) }) => (e.message, e.kind),
        _ => (None, None),
    }
}

/// The HTTP status Anthropic uses for an error type (also for errors inside a stream, which
/// arrive after a 200).
pub fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Anthropic's error type for an HTTP status.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        // Anthropic uses invalid_request_error for the 4xx it does not name.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// A relay error in Anthropic's error shape.
pub fn error_body(err: &RelayError) -> Value {
    // Anthropic's clients retry `overloaded_error` (their 529) differently from `api_error`.
    let kind = match err {
        RelayError::UpstreamOverloaded { .. } => "overloaded_error",
        _ => error_type_for_status(err.status()),
    };
    json!({"type": "error", "error": {"type": kind, "message": err.message()}})
}

// ---- Anthropic as an upstream: the stream ----------------------------------------------------

#[derive(Deserialize)]
#[serde(tag = "type")]
enum EventWire {
    #[serde(rename = "message_start")]
    MessageStart { message: StartWire },
    #[serde(rename = "content_block_start")]
    BlockStart {
        #[serde(default)]
        index: u64,
        content_block: BlockWire,
    },
    #[serde(rename = "content_block_delta")]
    BlockDelta {
        #[serde(default)]
        index: u64,
        delta: DeltaWire,
    },
    #[serde(rename = "content_block_stop")]
    BlockStop {},
    #[serde(rename = "message_delta")]
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaWire,
        #[serde(default)]
        usage: Option<UsageWire>,
    },
    #[serde(rename = "message_stop")]
    MessageStop,
    #[serde(rename = "error")]
    Error {
        #[serde(default)]
        error: ErrorWire,
    },
    /// `ping` and event types added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartWire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum DeltaWire {
    #[serde(rename = "text_delta")]
    Text {
        #[serde(default)]
        text: String,
    },
    #[serde(rename = "input_json_delta")]
    InputJson {
        #[serde(default)]
        partial_json: String,
    },
    #[serde(rename = "thinking_delta")]
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(rename = "signature_delta")]
    Signature {
        #[serde(default)]
        signature: String,
    },
    /// `citations_delta` and later kinds.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDeltaWire {
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
}

/// Anthropic SSE bytes → neutral [`StreamEvent`]s. Holds the partial frame, the neutral tool
/// index of each open `tool_use` block, and the usage so far.
pub struct StreamDecoder {
    parser: SseParser,
    events: Vec<SseEvent>,
    /// Anthropic block index → neutral tool index of every tool_use block so far (one entry
    /// per call), kept past `content_block_stop` so a late delta still finds its call.
    tools: BTreeMap<u64, usize>,
    next_tool: usize,
    usage: UsageWire,
    saw_stop: bool,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder {
            parser: SseParser::new(),
            events: Vec::new(),
            tools: BTreeMap::new(),
            next_tool: 0,
            usage: UsageWire::default(),
            saw_stop: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), SseError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.parser.push(chunk, &mut events);
        for event in events.drain(..) {
            self.decode_event(&event, out);
        }
        self.events = events;
        result
    }

    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), SseError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.parser.finish(&mut events);
        for event in events.drain(..) {
            self.decode_event(&event, out);
        }
        self.events = events;
        result
    }

    /// The upstream ended the stream properly with `message_stop`.
    pub fn saw_stop(&self) -> bool {
        self.saw_stop
    }

    fn current_usage(&self) -> Usage {
        self.usage.to_usage()
    }

    fn decode_event(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let wire = match serde_json::from_str::<EventWire>(&event.data) {
            Ok(wire) => wire,
            Err(_) if event.event.as_deref() == Some("error") => {
                // An error event we cannot read is still an error; its text may be anything,
                // so it is not shown.
                out.push(StreamEvent::Error {
                    status: 500,
                    message: "The upstream stream reported an error.".into(),
                });
                return;
            }
            // Keep-alives and frames of no known shape carry nothing for the client.
            Err(_) => return,
        };
        match wire {
            EventWire::MessageStart { message } => {
                out.push(StreamEvent::Start {
                    id: message.id,
                    model: message.model,
                });
                if let Some(usage) = message.usage {
                    self.usage = usage;
                    // A zero count is no information; only report input that was counted.
                    let u = self.current_usage();
                    if u.prompt_tokens > 0 {
                        out.push(StreamEvent::Usage(u));
                    }
                }
            }
            EventWire::BlockStart {
                index,
                content_block,
            } => self.start_block(index, content_block, out),
            EventWire::BlockDelta { index, delta } => match delta {
                DeltaWire::Text { text } if !text.is_empty() => {
                    out.push(StreamEvent::TextDelta(text))
                }
                DeltaWire::Thinking { thinking } if !thinking.is_empty() => {
                    out.push(StreamEvent::ReasoningDelta(thinking))
                }
                DeltaWire::Signature { signature } if !signature.is_empty() => {
                    out.push(StreamEvent::ReasoningSignature(signature))
                }
                DeltaWire::InputJson { partial_json } if !partial_json.is_empty() => {
                    // Deltas of blocks that are not client tools (server tools) have no index.
                    if let Some(&tool) = self.tools.get(&index) {
                        out.push(StreamEvent::ToolCallDelta {
                            index: tool,
                            arguments: partial_json,
                        });
                    }
                }
                _ => {}
            },
            EventWire::BlockStop { .. } => {}
            EventWire::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    out.push(StreamEvent::Finish {
                        reason: parse_stop_reason(&reason),
                        stop_sequence: delta.stop_sequence,
                    });
                }
                if let Some(usage) = usage {
                    // Counts here are cumulative; input fields, when present, are final too.
                    let merged = &mut self.usage;
                    merged.output_tokens = usage.output_tokens.or(merged.output_tokens);
                    merged.input_tokens = usage.input_tokens.or(merged.input_tokens);
                    merged.cache_read_input_tokens = usage
                        .cache_read_input_tokens
                        .or(merged.cache_read_input_tokens);
                    merged.cache_creation_input_tokens = usage
                        .cache_creation_input_tokens
                        .or(merged.cache_creation_input_tokens);
                    out.push(StreamEvent::Usage(self.current_usage()));
                }
            }
            EventWire::MessageStop => self.saw_stop = true,
            EventWire::Error { error } => out.push(StreamEvent::Error {
                status: status_for_error_type(error.kind.as_deref().unwrap_or_default()),
                message: error
                    .message
                    .unwrap_or_else(|| "The upstream stream reported an error.".into()),
            }),
            EventWire::Other => {}
        }
    }

    fn start_block(&mut self, index: u64, block: BlockWire, out: &mut Vec<StreamEvent>) {
        match block {
            BlockWire::Text { text } => {
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta(text));
                }
            }
            BlockWire::Thinking {
                thinking,
                signature,
            } => {
                if !thinking.is_empty() {
                    out.push(StreamEvent::ReasoningDelta(thinking));
                }
                if !signature.is_empty() {
                    out.push(StreamEvent::ReasoningSignature(signature));
                }
            }
            BlockWire::ToolUse { id, name, input } => {
                let tool = self.next_tool;
                self.next_tool = self.next_tool.saturating_add(1);
                self.tools.insert(index, tool);
                out.push(StreamEvent::ToolCallStart {
                    index: tool,
                    id,
                    name,
                });
                // The input always starts empty and arrives as deltas; should it ever come
                // whole, it must not be lost.
                let has_input = match &input {
                    Value::Object(o) => !o.is_empty(),
                    Value::Null => false,
                    _ => true,
                };
                if has_input {
                    out.push(StreamEvent::ToolCallDelta {
                        index: tool,
                        arguments: input.to_string(),
                    });
                }
            }
            BlockWire::Other => {}
        }
    }
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
    decode_thinking(body.get("thinking"), &mut req)?;

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
        other => {
            return Err(RelayError::invalid_value(
                &role_path,
                format!("'{other}' is not one of user, assistant"),
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

fn decode_thinking(thinking: Option<&Value>, req: &mut ChatRequest) -> Result<(), RelayError> {
    let Some(value) = thinking.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let t = as_object(value, "thinking", "an object")?;
    match req_str(t, "type", "thinking.type")? {
        "enabled" => {
            let budget = opt_u64(t, "budget_tokens", "thinking.budget_tokens")?
                .ok_or_else(|| RelayError::missing("thinking.budget_tokens"))?;
            req.reasoning = Some(Reasoning::Budget(budget));
        }
        "disabled" => req.reasoning = Some(Reasoning::Disabled),
        // Modes the neutral model has no word for (adaptive thinking) stay Anthropic-only.
        _ => keep_extra(req, "thinking".into(), value),
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

    const TEXT: &[u8] = include_bytes!("../../tests/fixtures/anthropic/text.json");
    const TOOL_USE: &[u8] = include_bytes!("../../tests/fixtures/anthropic/tool_use.json");
    const PARALLEL_TOOLS: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/parallel_tools.json");
    const THINKING: &[u8] = include_bytes!("../../tests/fixtures/anthropic/thinking.json");
    const IMAGE_REQUEST: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/image_request.json");
    const CLAUDE_CODE_REQUEST: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/claude_code_request.json");
    const ERROR_OVERLOADED: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/error_overloaded_529.json");
    const ERROR_INVALID: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/error_invalid_request.json");
    const STREAM_TEXT: &[u8] = include_bytes!("../../tests/fixtures/anthropic/stream_text.sse");
    const STREAM_TOOL_USE: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/stream_tool_use.sse");
    const STREAM_THINKING: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/stream_thinking.sse");
    const STREAM_ERROR: &[u8] = include_bytes!("../../tests/fixtures/anthropic/stream_error.sse");

    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn tool_message(id: &str, text: &str) -> Message {
        let mut m = Message::text(Role::Tool, text);
        m.tool_call_id = Some(id.into());
        m
    }

    fn weather_tool() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    fn simple(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "claude-x".into(),
            messages,
            ..ChatRequest::default()
        }
    }

    // ---- encode_request ----

    #[test]
    fn encodes_a_rich_request() {
        let mut assistant = Message::text(Role::Assistant, "Checking both.");
        assistant.reasoning = Some("User wants weather.".into());
        assistant.reasoning_signature = Some("sig-1".into());
        assistant.tool_calls = vec![
            call("call_1", "get_weather", r#"{"city":"Paris"}"#),
            call("call_2", "get_weather", r#"{"city":"Oslo"}"#),
        ];
        let mut failed = tool_message("call_2", "timeout");
        failed.is_error = true;
        let req = ChatRequest {
            model: "claude-sonnet-4-20250514".into(),
            system: vec!["Be brief.".into(), "Answer in English.".into()],
            messages: vec![
                Message::new(
                    Role::User,
                    vec![
                        Part::Text("Weather in Paris and Oslo? Also these:".into()),
                        Part::Image(ImageSource::Url("https://example.com/a.jpg".into())),
                        Part::Image(ImageSource::Url(format!("data:image/png;base64,{PNG}"))),
                        Part::Image(ImageSource::Base64 {
                            media_type: "image/jpeg".into(),
                            data: "/9j/4AAQ".into(),
                        }),
                    ],
                ),
                assistant,
                tool_message("call_1", "18°C"),
                failed,
                Message::text(Role::User, "Thanks!"),
            ],
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::Named("get_weather".into())),
            parallel_tool_calls: Some(false),
            max_tokens: Some(1000),
            temperature: Some(1.0),
            top_p: Some(0.99),
            stop: vec!["END".into()],
            reasoning: Some(Reasoning::Budget(2048)),
            user: Some("u-42".into()),
            stream: true,
            ..ChatRequest::default()
        };
        let (body, drops) = encode_request(&req);
        let expected = json!({
            "model": "claude-sonnet-4-20250514",
            "system": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Answer in English."}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris and Oslo? Also these:"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "User wants weather.", "signature": "sig-1"},
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "timeout", "is_error": true},
                    {"type": "text", "text": "Thanks!"}
                ]}
            ],
            "tools": [{
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
            }],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "max_tokens": 2048 + DEFAULT_MAX_TOKENS,
            "top_p": 0.99,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-42"},
            "stream": true
        });
        assert_eq!(body, expected);
        // max_tokens had to make room for the budget; temperature 1 is the only value allowed
        // with thinking, so nothing was lost there.
        assert_eq!(drops, vec![Drop::approximated("max_tokens")]);
    }

    #[test]
    fn defaults_and_plain_parameters() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.temperature = Some(0.3);
        req.top_k = Some(40);
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body,
            json!({"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS, "temperature": 0.3, "top_k": 40,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
        assert!(drops.is_empty());
    }

    #[test]
    fn temperature_above_one_is_clamped_and_reported() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.temperature = Some(1.7);
        let (body, drops) = encode_request(&req);
        assert_eq!(body["temperature"], json!(1.0));
        assert_eq!(drops, vec![Drop::approximated("temperature")]);
    }

    #[test]
    fn unsupported_parameters_are_reported_dropped() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.seed = Some(7);
        req.n = Some(2);
        req.presence_penalty = Some(0.5);
        req.frequency_penalty = Some(0.1);
        req.logprobs = Some(true);
        req.top_logprobs = Some(3);
        req.response_format = Some(ResponseFormat::JsonObject);
        req.extra
            .insert("logit_bias".into(), json!({"50256": -100}));
        let (body, drops) = encode_request(&req);
        for field in [
            "seed",
            "n",
            "presence_penalty",
            "frequency_penalty",
            "logprobs",
            "top_logprobs",
            "response_format",
            "logit_bias",
        ] {
            assert!(drops.contains(&Drop::dropped(field)), "{field}: {drops:?}");
            assert!(body.get(field).is_none(), "{field}");
        }
        assert_eq!(drops.len(), 8);
        // Neutral values that ask for nothing are not reported.
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.n = Some(1);
        req.presence_penalty = Some(0.0);
        req.logprobs = Some(false);
        req.response_format = Some(ResponseFormat::Text);
        req.reasoning = Some(Reasoning::Disabled);
        let (body, drops) = encode_request(&req);
        assert!(drops.is_empty(), "{drops:?}");
        assert_eq!(body["thinking"], json!({"type": "disabled"}));
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "x".into(),
            schema: json!({}),
            strict: true,
        });
        assert_eq!(
            encode_request(&req).1,
            vec![Drop::dropped("response_format")]
        );
    }

    #[test]
    fn tool_choice_variants() {
        let cases = [
            (Some(ToolChoice::Auto), None, Some(json!({"type": "auto"}))),
            (
                Some(ToolChoice::Required),
                None,
                Some(json!({"type": "any"})),
            ),
            (
                Some(ToolChoice::Named("get_weather".into())),
                None,
                Some(json!({"type": "tool", "name": "get_weather"})),
            ),
            (Some(ToolChoice::None), None, Some(json!({"type": "none"}))),
            (None, None, None),
            (None, Some(true), None),
            (
                None,
                Some(false),
                Some(json!({"type": "auto", "disable_parallel_tool_use": true})),
            ),
            (
                Some(ToolChoice::Required),
                Some(false),
                Some(json!({"type": "any", "disable_parallel_tool_use": true})),
            ),
            (
                Some(ToolChoice::None),
                Some(false),
                Some(json!({"type": "none"})),
            ),
        ];
        for (choice, parallel, expected) in cases {
            let mut req = simple(vec![Message::text(Role::User, "hi")]);
            req.tools = vec![weather_tool()];
            req.tool_choice = choice.clone();
            req.parallel_tool_calls = parallel;
            let (body, drops) = encode_request(&req);
            assert_eq!(body.get("tool_choice").cloned(), expected, "{choice:?}");
            assert!(drops.is_empty());
        }
        // Without tools Anthropic refuses any tool_choice; forcing a call cannot be honoured.
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.tool_choice = Some(ToolChoice::Required);
        let (body, drops) = encode_request(&req);
        assert!(body.get("tool_choice").is_none());
        assert_eq!(drops, vec![Drop::dropped("tool_choice")]);
        req.tool_choice = Some(ToolChoice::Auto);
        assert!(encode_request(&req).1.is_empty());
    }

    #[test]
    fn tool_without_parameters_gets_an_empty_object_schema() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.tools = vec![Tool {
            name: "now".into(),
            description: None,
            parameters: Value::Null,
        }];
        let (body, _) = encode_request(&req);
        assert_eq!(
            body["tools"],
            json!([{"name": "now", "input_schema": {"type": "object", "properties": {}}}])
        );
    }

    #[test]
    fn conversation_starting_with_the_assistant_gets_a_placeholder_user_turn() {
        let req = simple(vec![
            Message::text(Role::Assistant, "Hello, how can I help?"),
            Message::text(Role::User, "Weather?"),
        ]);
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "(continued)"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello, how can I help?"}]},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]}
            ])
        );
        assert_eq!(drops, vec![Drop::approximated("messages")]);
    }

    #[test]
    fn same_role_messages_merge_and_tool_results_lead_their_turn() {
        let mut assistant = Message::new(Role::Assistant, Vec::new());
        assistant.tool_calls = vec![call("call_1", "f", "{}")];
        let req = simple(vec![
            Message::text(Role::User, "a"),
            Message::text(Role::User, ""),
            Message::text(Role::User, "b"),
            assistant,
            Message::text(Role::User, "before the result"),
            tool_message("call_1", "r"),
            Message::text(Role::Assistant, "x"),
            Message::text(Role::Assistant, "y"),
        ]);
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "r"},
                    {"type": "text", "text": "before the result"}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}
            ])
        );
        assert!(drops.is_empty());
    }

    #[test]
    fn tool_arguments_and_ids_are_made_acceptable() {
        let mut assistant = Message::new(Role::Assistant, Vec::new());
        assistant.tool_calls = vec![
            call("call.1:x", "f", "{\"a\":"),
            call("call_2", "g", ""),
            call("call_3", "h", "[1,2]"),
        ];
        let mut result = Message::new(
            Role::Tool,
            vec![
                Part::Text("see".into()),
                Part::Image(ImageSource::Url("https://example.com/r.png".into())),
            ],
        );
        result.tool_call_id = Some("call.1:x".into());
        let req = simple(vec![Message::text(Role::User, "go"), assistant, result]);
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                {"type": "tool_use", "id": "call_1_x", "name": "f", "input": {}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
                {"type": "tool_use", "id": "call_3", "name": "h", "input": {}}
            ])
        );
        assert_eq!(
            body["messages"][2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "call_1_x", "content": [
                {"type": "text", "text": "see"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/r.png"}}
            ]}])
        );
        // Two broken argument strings are one fact for the client.
        assert_eq!(
            drops,
            vec![Drop::approximated("messages.tool_calls.arguments")]
        );
    }

    #[test]
    fn unsigned_reasoning_and_assistant_images_cannot_be_sent_back() {
        let mut assistant = Message::new(
            Role::Assistant,
            vec![
                Part::Text("ok".into()),
                Part::Image(ImageSource::Url("https://x/y.png".into())),
            ],
        );
        assistant.reasoning = Some("thought elsewhere".into());
        let req = simple(vec![
            Message::text(Role::User, "q"),
            assistant,
            Message::new(
                Role::User,
                vec![Part::Image(ImageSource::Url(
                    "data:image/png,rawbytes".into(),
                ))],
            ),
            Message::text(Role::User, "q2"),
        ]);
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "text", "text": "ok"}])
        );
        assert_eq!(
            body["messages"][2]["content"],
            json!([{"type": "text", "text": "q2"}])
        );
        assert_eq!(
            drops,
            vec![
                Drop::dropped("messages.reasoning"),
                Drop::dropped("messages.content.image")
            ]
        );
    }

    #[test]
    fn reasoning_effort_becomes_a_budget() {
        for (effort, budget) in [("low", 1024), ("medium", 4096), ("high", 16384)] {
            let mut req = simple(vec![Message::text(Role::User, "hi")]);
            req.reasoning = Some(Reasoning::Effort(effort.into()));
            req.max_tokens = Some(64000);
            let (body, drops) = encode_request(&req);
            assert_eq!(
                body["thinking"],
                json!({"type": "enabled", "budget_tokens": budget})
            );
            assert_eq!(body["max_tokens"], json!(64000));
            assert_eq!(drops, vec![Drop::approximated("reasoning_effort")]);
        }
        // With no max_tokens the default grows silently: the client asked for no limit.
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.reasoning = Some(Reasoning::Effort("high".into()));
        let (body, _) = encode_request(&req);
        assert_eq!(body["max_tokens"], json!(16384 + DEFAULT_MAX_TOKENS));
        // Budgets below Anthropic's minimum are raised; zero means no thinking.
        req.reasoning = Some(Reasoning::Budget(500));
        let (body, drops) = encode_request(&req);
        assert_eq!(body["thinking"]["budget_tokens"], json!(1024));
        assert_eq!(drops, vec![Drop::approximated("thinking.budget_tokens")]);
        req.reasoning = Some(Reasoning::Budget(0));
        let (body, drops) = encode_request(&req);
        assert_eq!(body["thinking"], json!({"type": "disabled"}));
        assert!(drops.is_empty());
    }

    #[test]
    fn thinking_restricts_sampling() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.reasoning = Some(Reasoning::Budget(2000));
        req.max_tokens = Some(8000);
        req.temperature = Some(0.2);
        req.top_p = Some(0.5);
        req.top_k = Some(5);
        let (body, drops) = encode_request(&req);
        assert!(body.get("temperature").is_none());
        assert!(body.get("top_k").is_none());
        assert_eq!(body["top_p"], json!(MIN_TOP_P_WITH_THINKING));
        assert_eq!(
            drops,
            vec![
                Drop::dropped("temperature"),
                Drop::approximated("top_p"),
                Drop::dropped("top_k")
            ]
        );
    }

    #[test]
    fn whitespace_stop_sequences_are_dropped() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.stop = vec!["\n".into(), "Human:".into()];
        let (body, drops) = encode_request(&req);
        assert_eq!(body["stop_sequences"], json!(["Human:"]));
        assert_eq!(drops, vec![Drop::dropped("stop")]);
    }

    #[test]
    fn system_forms() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.system = vec!["only".into()];
        assert_eq!(encode_request(&req).0["system"], json!("only"));
        req.system = vec![String::new()];
        assert!(encode_request(&req).0.get("system").is_none());
    }

    // ---- decode_response / errors ----

    #[test]
    fn decodes_a_text_reply_without_double_counting_cache() {
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
    fn decodes_tool_use_replies() {
        let r = decode_response(TOOL_USE).unwrap();
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            r.message.content,
            vec![Part::Text(
                "I'll check the current weather in San Francisco for you.".into()
            )]
        );
        assert_eq!(r.message.tool_calls.len(), 1);
        let c = &r.message.tool_calls[0];
        assert_eq!(
            (c.id.as_str(), c.name.as_str()),
            ("toolu_01A09q90qw90lq917835lq9", "get_weather")
        );
        let args: Value = serde_json::from_str(&c.arguments).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "celsius"})
        );
        assert_eq!(r.usage, Some(Usage::new(384, 92)));

        let r = decode_response(PARALLEL_TOOLS).unwrap();
        let names: Vec<&str> = r
            .message
            .tool_calls
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["get_weather", "get_time"]);
        assert_eq!(
            r.message.tool_calls[1].arguments,
            r#"{"timezone":"America/New_York"}"#
        );
    }

    #[test]
    fn decodes_thinking_replies() {
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
    fn error_and_garbage_replies_are_errors() {
        assert_eq!(decode_response(ERROR_OVERLOADED).unwrap_err(), "Overloaded");
        assert!(decode_response(b"<html>").is_err());
    }

    #[test]
    fn parses_error_bodies() {
        assert_eq!(
            parse_error_body(ERROR_OVERLOADED),
            (Some("Overloaded".into()), Some("overloaded_error".into()))
        );
        let (message, kind) = parse_error_body(ERROR_INVALID);
        assert!(message
            .unwrap()
            .starts_with("messages: roles must alternate"));
        assert_eq!(kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(parse_error_body(b"upstream connect error"), (None, None));
        assert_eq!(parse_error_body(br#"{"error":{}}"#), (None, None));
        assert_eq!(status_for_error_type("overloaded_error"), 529);
        assert_eq!(status_for_error_type("rate_limit_error"), 429);
        assert_eq!(status_for_error_type("api_error"), 500);
        assert_eq!(status_for_error_type("invalid_request_error"), 400);
        assert_eq!(status_for_error_type("brand_new_error"), 500);
    }

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

    // ---- StreamDecoder ----

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut decoder = StreamDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        out
    }

    /// Whole, split at every byte, and one byte at a time must decode alike.
    fn decode_any_chunking(bytes: &[u8]) -> Vec<StreamEvent> {
        let whole = decode_chunks(&[bytes]);
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_chunks(&[a, b]), whole, "split at byte {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&singles), whole, "one byte at a time");
        whole
    }

    fn start(id: &str) -> StreamEvent {
        StreamEvent::Start {
            id: id.into(),
            model: "claude-sonnet-4-20250514".into(),
        }
    }

    #[test]
    fn stream_text() {
        let events = decode_any_chunking(STREAM_TEXT);
        assert_eq!(
            events,
            vec![
                start("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"),
                StreamEvent::Usage(Usage::from_exclusive(25, 1, 0, 0)),
                StreamEvent::TextDelta("Hello".into()),
                StreamEvent::TextDelta("! How can I help – héllo 😀?".into()),
                StreamEvent::Finish {
                    reason: FinishReason::Stop,
                    stop_sequence: None
                },
                StreamEvent::Usage(Usage::from_exclusive(25, 15, 0, 0)),
            ]
        );
        let mut decoder = StreamDecoder::new();
        decoder.push(STREAM_TEXT, &mut Vec::new()).unwrap();
        assert!(decoder.saw_stop());
    }

    #[test]
    fn stream_tool_use_numbers_tools_from_zero() {
        let events = decode_any_chunking(STREAM_TOOL_USE);
        let mut expected = vec![
            start("msg_014p7gG3wDgGV9EUtLvnow3U"),
            StreamEvent::Usage(Usage::from_exclusive(472, 2, 2048, 0)),
            StreamEvent::TextDelta("Okay".into()),
            StreamEvent::TextDelta(", let's check the weather for San Francisco, CA:".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into(),
            },
        ];
        for fragment in [
            "{\"location\":",
            " \"San",
            " Francisc",
            "o,",
            " CA\"",
            ", ",
            "\"unit\": \"fah",
            "renheit\"}",
        ] {
            expected.push(StreamEvent::ToolCallDelta {
                index: 0,
                arguments: fragment.into(),
            });
        }
        expected.extend([
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_01HYrR2nmtZEsBycWqFzVaNi".into(),
                name: "get_time".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"timezone\": \"America/Los_Angeles\"}".into(),
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None,
            },
            StreamEvent::Usage(Usage::from_exclusive(472, 89, 2048, 0)),
        ]);
        assert_eq!(events, expected);
        let args: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments,
                } => Some(arguments.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
        );
    }

    #[test]
    fn stream_thinking() {
        let events = decode_any_chunking(STREAM_THINKING);
        assert_eq!(
            events,
            vec![
                start("msg_01TbdFnV7gh5JSWAixZfvkUp"),
                StreamEvent::Usage(Usage::from_exclusive(48, 4, 0, 0)),
                StreamEvent::ReasoningDelta(
                    "Let me solve this step by step:\n\n1. First break down 27 * 453".into()
                ),
                StreamEvent::ReasoningDelta("\n2. 453 = 400 + 50 + 3".into()),
                StreamEvent::ReasoningSignature(
                    "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds...".into()
                ),
                StreamEvent::TextDelta("27 * 453 = 12,231".into()),
                StreamEvent::Finish {
                    reason: FinishReason::Stop,
                    stop_sequence: None
                },
                StreamEvent::Usage(Usage::from_exclusive(48, 270, 0, 0)),
            ]
        );
    }

    #[test]
    fn stream_error() {
        let events = decode_any_chunking(STREAM_ERROR);
        assert_eq!(
            events,
            vec![
                start("msg_01Gx4fJVkUbzyAtx1HZbkpqV"),
                StreamEvent::Usage(Usage::from_exclusive(1310, 1, 0, 0)),
                StreamEvent::TextDelta("Once upon".into()),
                StreamEvent::Error {
                    status: 529,
                    message: "Overloaded".into()
                },
            ]
        );
        let mut decoder = StreamDecoder::new();
        decoder.push(STREAM_ERROR, &mut Vec::new()).unwrap();
        assert!(!decoder.saw_stop());
    }

    #[test]
    fn stream_stop_sequence_and_late_cache_counts() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"###\"},",
            "\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":90,\"output_tokens\":3}}\n\n",
            "event: error\ndata: not json\n\n",
        );
        let events = decode_chunks(&[stream.as_bytes()]);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "m".into(),
                    model: "c".into()
                },
                StreamEvent::Finish {
                    reason: FinishReason::StopSequence,
                    stop_sequence: Some("###".into())
                },
                StreamEvent::Usage(Usage::from_exclusive(10, 3, 90, 0)),
                StreamEvent::Error {
                    status: 500,
                    message: "The upstream stream reported an error.".into()
                },
            ]
        );
    }

    #[test]
    fn stream_blocks_of_no_neutral_kind_are_skipped() {
        let stream = concat!(
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_1\",\"name\":\"web_search\",\"input\":{}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"query\\\":1}\"}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"abc\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"citations_delta\",\"citation\":{}}}\n\n",
            "event: brand_new\ndata: {\"type\":\"brand_new\"}\n\n",
        );
        assert!(decode_chunks(&[stream.as_bytes()]).is_empty());
    }

    #[test]
    fn stream_status_of_error_types() {
        for (kind, status) in [
            ("overloaded_error", 529),
            ("rate_limit_error", 429),
            ("api_error", 500),
            ("invalid_request_error", 400),
        ] {
            let stream = format!(
                "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"m\"}}}}\n\n"
            );
            assert_eq!(
                decode_chunks(&[stream.as_bytes()]),
                vec![StreamEvent::Error {
                    status,
                    message: "m".into()
                }]
            );
        }
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
        ], "metadata": {"user_id": "u", "tier": "gold"}, "thinking": {"type": "adaptive"}});
        let r = decode_request(body.to_string().as_bytes()).unwrap();
        let mut keys: Vec<&str> = r.extra.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "messages.content.document",
                "messages.content.image.source",
                "messages.content.redacted_thinking",
                "messages.content.tool_result.content.search_result",
                "metadata.tier",
                "thinking",
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
                json!({"model": "m", "messages": [user, {"role": "system", "content": "x"}]}),
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
}
