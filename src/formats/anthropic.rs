//! Anthropic's Messages API (`POST /v1/messages`) as an upstream: neutral request → Anthropic
//! body ([`encode_request`]), Anthropic reply and SSE stream → neutral ([`decode_response`],
//! [`StreamDecoder`]), error bodies ([`parse_error_body`]); and the wire shapes (stop reasons,
//! error types) both directions share. The inbound half is `anthropic_inbound.rs`; Claude's
//! request rules, shared with Bedrock Converse, are `claude.rs`.
//!
//! Anthropic→Anthropic traffic never comes through here (the relay passes it through), so
//! `cache_control` is neither carried nor reported on that path. Citations in replies are not
//! carried (the neutral text part has no place for them).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::formats::claude::{
    alternate_turns, claude_sampling, drop_openai_only_sampling, CONTINUED, DEFAULT_MAX_TOKENS,
    MIN_THINKING_BUDGET,
};
use crate::formats::neutral::{
    ChatRequest, ChatResponse, Drop, Drops, FinishReason, ImageSource, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use crate::formats::sse::{SseError, SseEvent, SseParser};

/// Neutral request → Anthropic request body. Returns the body and what could not be carried.
pub fn encode_request(req: &ChatRequest) -> (Value, Vec<Drop>) {
    let mut drops = Drops::default();
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));

    let system = req.system_apart(&mut drops);
    let system: Vec<&String> = system.iter().filter(|s| !s.is_empty()).collect();
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
        .filter_map(|message| match message.role {
            Role::User => Some(("user", Vec::new(), user_blocks(&message.content, drops))),
            Role::Assistant => Some(("assistant", Vec::new(), assistant_blocks(message, drops))),
            Role::Tool => Some(("user", vec![tool_result_block(message, drops)], Vec::new())),
            // Sent apart, with the rest of the system text (`system_apart`).
            Role::System => None,
        })
        .collect();
    alternate_turns(encoded, json!({"type": "text", "text": CONTINUED}), drops)
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

pub(crate) fn parse_stop_reason(reason: &str) -> FinishReason {
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

pub(crate) fn stop_reason_name(reason: FinishReason) -> &'static str {
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
pub(crate) fn add_thinking(message: &mut Message, thinking: &str, signature: String) {
    message
        .reasoning
        .get_or_insert_with(String::new)
        .push_str(thinking);
    if !signature.is_empty() {
        message.reasoning_signature = Some(signature);
    }
}

/// A tool input object as the neutral JSON text; a missing input is no arguments.
pub(crate) fn input_json(input: &Value) -> String {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::claude::MIN_TOP_P_WITH_THINKING;

    pub(crate) const TEXT: &[u8] = include_bytes!("../../tests/fixtures/anthropic/reply_text.json");

    pub(crate) const TOOL_USE: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/reply_tool_use.json");

    pub(crate) const PARALLEL_TOOLS: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/reply_parallel_tools.json");

    pub(crate) const THINKING: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/reply_thinking.json");

    pub(crate) const IMAGE_REQUEST: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/request_image.json");

    pub(crate) const CLAUDE_CODE_REQUEST: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/request_claude_code.json");

    pub(crate) const ERROR_OVERLOADED: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/error_overloaded_529.json");

    pub(crate) const ERROR_INVALID: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/error_invalid_request_400.json");

    pub(crate) const STREAM_TEXT: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/stream_text.sse");

    pub(crate) const STREAM_TOOL_USE: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/stream_tool_use.sse");

    pub(crate) const STREAM_THINKING: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/stream_thinking.sse");

    pub(crate) const STREAM_ERROR: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/stream_error.sse");

    pub(crate) const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

    pub(crate) fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    pub(crate) fn tool_message(id: &str, text: &str) -> Message {
        let mut m = Message::text(Role::Tool, text);
        m.tool_call_id = Some(id.into());
        m
    }

    pub(crate) fn weather_tool() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    pub(crate) fn simple(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "claude-x".into(),
            messages,
            ..ChatRequest::default()
        }
    }

    // ---- encode_request ----

    #[test]
    pub(crate) fn encodes_a_rich_request() {
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
    pub(crate) fn defaults_and_plain_parameters() {
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
    pub(crate) fn temperature_above_one_is_clamped_and_reported() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.temperature = Some(1.7);
        let (body, drops) = encode_request(&req);
        assert_eq!(body["temperature"], json!(1.0));
        assert_eq!(drops, vec![Drop::approximated("temperature")]);
    }

    #[test]
    pub(crate) fn unsupported_parameters_are_reported_dropped() {
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
    pub(crate) fn tool_choice_variants() {
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
    pub(crate) fn tool_without_parameters_gets_an_empty_object_schema() {
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
    pub(crate) fn conversation_starting_with_the_assistant_gets_a_placeholder_user_turn() {
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
    pub(crate) fn same_role_messages_merge_and_tool_results_lead_their_turn() {
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
    pub(crate) fn tool_arguments_and_ids_are_made_acceptable() {
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
    pub(crate) fn unsigned_reasoning_and_assistant_images_cannot_be_sent_back() {
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
    pub(crate) fn reasoning_effort_becomes_a_budget() {
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
    pub(crate) fn thinking_restricts_sampling() {
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
    pub(crate) fn whitespace_stop_sequences_are_dropped() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.stop = vec!["\n".into(), "Human:".into()];
        let (body, drops) = encode_request(&req);
        assert_eq!(body["stop_sequences"], json!(["Human:"]));
        assert_eq!(drops, vec![Drop::dropped("stop")]);
    }

    #[test]
    pub(crate) fn system_forms() {
        let mut req = simple(vec![Message::text(Role::User, "hi")]);
        req.system = vec!["only".into()];
        assert_eq!(encode_request(&req).0["system"], json!("only"));
        req.system = vec![String::new()];
        assert!(encode_request(&req).0.get("system").is_none());
    }

    #[test]
    pub(crate) fn decodes_tool_use_replies() {
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
    pub(crate) fn error_and_garbage_replies_are_errors() {
        assert_eq!(decode_response(ERROR_OVERLOADED).unwrap_err(), "Overloaded");
        assert!(decode_response(b"<html>").is_err());
    }

    #[test]
    pub(crate) fn parses_error_bodies() {
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

    // ---- StreamDecoder ----

    pub(crate) fn decode_chunks(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut decoder = StreamDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        out
    }

    /// Whole, split at every byte, and one byte at a time must decode alike.
    pub(crate) fn decode_any_chunking(bytes: &[u8]) -> Vec<StreamEvent> {
        let whole = decode_chunks(&[bytes]);
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_chunks(&[a, b]), whole, "split at byte {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&singles), whole, "one byte at a time");
        whole
    }

    pub(crate) fn start(id: &str) -> StreamEvent {
        StreamEvent::Start {
            id: id.into(),
            model: "claude-sonnet-4-20250514".into(),
        }
    }

    #[test]
    pub(crate) fn stream_text() {
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
    pub(crate) fn stream_tool_use_numbers_tools_from_zero() {
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
    pub(crate) fn stream_thinking() {
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
    pub(crate) fn stream_error() {
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
    pub(crate) fn stream_stop_sequence_and_late_cache_counts() {
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
    pub(crate) fn stream_blocks_of_no_neutral_kind_are_skipped() {
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
    pub(crate) fn stream_status_of_error_types() {
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
}
