//! Cohere's Chat API v2 (`POST https://api.cohere.com/v2/chat`) as an upstream format: the
//! request body encoded from the neutral model (with the [`Drop`]s it cannot carry), replies and
//! SSE streams decoded back into neutral types, and error bodies read for their message.
//!
//! Cohere differs from the OpenAI shape in ways that shape this file: sampling parameters have
//! their own names and narrower ranges (`p`, `k`, penalties within 0..1), `tool_choice` knows
//! only `REQUIRED` and `NONE`, a tool-using reply may carry a `tool_plan` (a visible plan, mapped
//! to neutral reasoning like the `thinking` blocks of reasoning models), usage numbers may come
//! as floats, and the stream is a typed delta protocol (`message-start`, `content-delta`,
//! `tool-call-start`, …, `message-end`) whose usage arrives only at the end.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::formats::neutral::Usage;
use crate::formats::neutral::{
    ChatRequest, ChatResponse, Drop, Drops, FinishReason, ImageSource, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, Tool, ToolCall, ToolChoice,
};
use crate::formats::sse::{SseError, SseEvent, SseParser};

/// Cohere accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;

/// Documented ranges of Cohere's sampling parameters; values outside are refused, so they are
/// clamped (and reported) rather than sent.
const TEMPERATURE_RANGE: (f64, f64) = (0.0, 1.0);
const P_RANGE: (f64, f64) = (0.01, 0.99);
const PENALTY_RANGE: (f64, f64) = (0.0, 1.0);
const MAX_K: u64 = 500;

/// Thinking budgets standing in for OpenAI's effort levels. Cohere suggests 31K as the budget
/// for "think as long as possible" and at least 1K left for the answer.
const BUDGET_LOW: u64 = 1024;
const BUDGET_MEDIUM: u64 = 8192;
const BUDGET_HIGH: u64 = 24576;
const BUDGET_MAX: u64 = 31_000;

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Neutral request → Cohere v2 chat body. Returns the body and what could not be carried.
pub fn encode_request(req: &ChatRequest) -> (Value, Vec<Drop>) {
    let mut drops = Drops::default();
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert(
        "messages".into(),
        Value::Array(encode_messages(req, &mut drops)),
    );

    if !req.tools.is_empty() {
        let tools: Vec<Value> = req.tools.iter().map(encode_tool).collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = encode_tool_choice(req, &mut drops) {
        body.insert("tool_choice".into(), json!(choice));
    }

    encode_sampling(req, &mut body, &mut drops);

    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        // Cohere always constrains output to a given schema and has no use for its name, so
        // `name` and `strict` carry nothing it lacks.
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            let mut format = json!({"type": "json_object"});
            if !schema.is_null() {
                format["json_schema"] = schema.clone();
            }
            body.insert("response_format".into(), format);
        }
    }

    if let Some(thinking) = encode_thinking(req.reasoning.as_ref(), &mut drops) {
        body.insert("thinking".into(), thinking);
    }

    if let Some(logprobs) = req.logprobs {
        body.insert("logprobs".into(), json!(logprobs));
    }
    // Cohere returns the chosen token's log probability only, never alternatives.
    if req.top_logprobs.is_some_and(|n| n > 0) {
        drops.dropped("top_logprobs");
    }

    body.insert("stream".into(), json!(req.stream));

    if req.n.is_some_and(|n| n > 1) {
        drops.dropped("n");
    }
    if req.user.is_some() {
        drops.dropped("user");
    }
    // Cohere calls tools in parallel when it sees fit and cannot be told not to.
    if req.parallel_tool_calls == Some(false) {
        drops.dropped("parallel_tool_calls");
    }
    for key in req.extra.keys() {
        drops.dropped(key);
    }
    (Value::Object(body), drops.0)
}

fn encode_messages(req: &ChatRequest, drops: &mut Drops) -> Vec<Value> {
    let mut messages = Vec::with_capacity(req.messages.len().saturating_add(1));
    let system: Vec<&str> = req
        .system
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !system.is_empty() {
        // One system message first, as Cohere's guides show it; blank lines keep the
        // boundaries between the client's instructions.
        messages.push(json!({"role": "system", "content": system.join("\n\n")}));
    }
    for message in &req.messages {
        let encoded = match message.role {
            Role::User => Some(json!({
                "role": "user",
                "content": user_content(&message.content),
            })),
            Role::Assistant => assistant_message(message, drops),
            Role::Tool => Some(tool_message(message, drops)),
            // Cohere takes system messages anywhere in the conversation: kept in place.
            Role::System => Some(json!({"role": "system", "content": message.joined_text()})),
        };
        messages.extend(encoded);
    }
    messages
}

/// A plain string when the message is only text (the common case), content blocks otherwise.
fn user_content(content: &[Part]) -> Value {
    if content.iter().all(|p| matches!(p, Part::Text(_))) {
        let texts: Vec<&str> = content
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::Image(_) => None,
            })
            .collect();
        return json!(texts.concat());
    }
    let blocks: Vec<Value> = content
        .iter()
        .filter_map(|part| match part {
            Part::Text(t) if t.is_empty() => None,
            Part::Text(t) => Some(json!({"type": "text", "text": t})),
            Part::Image(source) => Some(json!({
                "type": "image_url",
                "image_url": {"url": image_url(source)},
            })),
        })
        .collect();
    Value::Array(blocks)
}

/// Cohere takes web URLs and base64 data URIs alike in `image_url.url`.
fn image_url(source: &ImageSource) -> String {
    match source {
        ImageSource::Url(url) => url.clone(),
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

/// `None` for a message with nothing in it: Cohere refuses empty history entries.
fn assistant_message(message: &Message, drops: &mut Drops) -> Option<Value> {
    let mut text = String::new();
    for part in &message.content {
        match part {
            Part::Text(t) => text.push_str(t),
            // Assistant content holds only text and thinking.
            Part::Image(_) => drops.dropped("messages.content.image"),
        }
    }
    let reasoning = message.reasoning.as_deref().filter(|r| !r.is_empty());

    let mut out = Map::new();
    out.insert("role".into(), json!("assistant"));
    match reasoning {
        // Reasoning goes back as Cohere's own thinking block, the shape its replies use.
        Some(reasoning) => {
            let mut blocks = vec![json!({"type": "thinking", "thinking": reasoning})];
            if !text.is_empty() {
                blocks.push(json!({"type": "text", "text": text}));
            }
            out.insert("content".into(), Value::Array(blocks));
        }
        None if !text.is_empty() => {
            out.insert("content".into(), json!(text));
        }
        None => {}
    }
    if !message.tool_calls.is_empty() {
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(|call| {
                let arguments = if call.arguments.trim().is_empty() {
                    "{}"
                } else {
                    call.arguments.as_str()
                };
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                })
            })
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    (out.len() > 1).then_some(Value::Object(out))
}

fn tool_message(message: &Message, drops: &mut Drops) -> Value {
    if message.content.iter().any(|p| matches!(p, Part::Image(_))) {
        // Tool results hold text and documents, not images.
        drops.dropped("messages.content.image");
    }
    let text = message.joined_text();
    let content = if message.is_error {
        // Cohere has no error flag on results; an `error` key is how a JSON result says so.
        drops.approximated("messages.is_error");
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) if object.contains_key("error") => text,
            _ => json!({"error": text}).to_string(),
        }
    } else {
        text
    };
    json!({
        "role": "tool",
        "tool_call_id": message.tool_call_id.as_deref().unwrap_or_default(),
        "content": content,
    })
}

fn encode_tool(tool: &Tool) -> Value {
    // `parameters` is required; a tool without any takes an empty object schema.
    let parameters = match &tool.parameters {
        Value::Object(o) if !o.is_empty() => Value::Object(o.clone()),
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut function = json!({"name": tool.name, "parameters": parameters});
    if let Some(description) = &tool.description {
        function["description"] = json!(description);
    }
    json!({"type": "function", "function": function})
}

fn encode_tool_choice(req: &ChatRequest, drops: &mut Drops) -> Option<&'static str> {
    let choice = req.tool_choice.as_ref()?;
    if req.tools.is_empty() {
        // Cohere refuses REQUIRED without tools; auto and none already hold without any.
        if matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
            drops.dropped("tool_choice");
        }
        return None;
    }
    match choice {
        // Leaving it out is Cohere's "the model decides".
        ToolChoice::Auto => None,
        ToolChoice::None => Some("NONE"),
        ToolChoice::Required => Some("REQUIRED"),
        ToolChoice::Named(_) => {
            // Cohere cannot name the tool; the model must call one, maybe another.
            drops.approximated("tool_choice");
            Some("REQUIRED")
        }
    }
}

fn clamp_into(value: f64, (low, high): (f64, f64), field: &str, drops: &mut Drops) -> f64 {
    let clamped = value.clamp(low, high);
    // NaN survives clamp and is not JSON; the low bound stands in, reported like any clamp.
    let clamped = if clamped.is_nan() { low } else { clamped };
    if clamped != value {
        drops.approximated(field);
    }
    clamped
}

/// max_tokens, temperature, p, k, stop sequences, seed and penalties, within Cohere's ranges.
fn encode_sampling(req: &ChatRequest, body: &mut Map<String, Value>, drops: &mut Drops) {
    if let Some(max) = req.max_tokens {
        body.insert("max_tokens".into(), json!(max));
    }
    if let Some(t) = req.temperature {
        let t = clamp_into(t, TEMPERATURE_RANGE, "temperature", drops);
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        let p = clamp_into(p, P_RANGE, "top_p", drops);
        body.insert("p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        if k > MAX_K {
            drops.approximated("top_k");
        }
        body.insert("k".into(), json!(k.min(MAX_K)));
    }
    if !req.stop.is_empty() {
        if req.stop.len() > MAX_STOP_SEQUENCES {
            drops.approximated("stop");
        }
        let stop: Vec<&String> = req.stop.iter().take(MAX_STOP_SEQUENCES).collect();
        body.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(seed) = req.seed {
        // Cohere's seed is unsigned; a negative one is reinterpreted, which keeps it
        // deterministic.
        if seed < 0 {
            drops.approximated("seed");
        }
        body.insert("seed".into(), json!(seed as u64));
    }
    if let Some(f) = req.frequency_penalty {
        let f = clamp_into(f, PENALTY_RANGE, "frequency_penalty", drops);
        body.insert("frequency_penalty".into(), json!(f));
    }
    if let Some(p) = req.presence_penalty {
        let p = clamp_into(p, PENALTY_RANGE, "presence_penalty", drops);
        body.insert("presence_penalty".into(), json!(p));
    }
}

fn encode_thinking(reasoning: Option<&Reasoning>, drops: &mut Drops) -> Option<Value> {
    let disabled = json!({"type": "disabled"});
    let budget = match reasoning? {
        Reasoning::Disabled | Reasoning::Budget(0) => return Some(disabled),
        Reasoning::Budget(budget) => *budget,
        Reasoning::Effort(effort) => {
            let budget = match effort.to_ascii_lowercase().as_str() {
                "none" => return Some(disabled),
                "minimal" | "low" => BUDGET_LOW,
                "high" => BUDGET_HIGH,
                "xhigh" | "max" => BUDGET_MAX,
                // medium, and levels invented later: the middle of the road.
                _ => BUDGET_MEDIUM,
            };
            drops.approximated("reasoning_effort");
            budget
        }
    };
    Some(json!({"type": "enabled", "token_budget": budget}))
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

/// A token count or index: Cohere's schema types them as `number`, and some replies send
/// `18.0`. Anything that is not a non-negative number reads as absent.
fn count<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                // `as` saturates at u64::MAX, which is the clamp wanted here.
                .map(|f| f.round() as u64)
        }),
        _ => None,
    })
}

/// Content as Cohere sends it: a list of typed blocks, or (as requests allow) a plain string.
/// Blocks of unknown shape are skipped rather than failing the whole reply.
fn content_blocks<'de, D>(deserializer: D) -> Result<Vec<ContentWire>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => vec![ContentWire {
            kind: Some("text".into()),
            text: Some(text),
            thinking: None,
        }],
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| ContentWire::deserialize(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseWire {
    id: Option<String>,
    finish_reason: Option<String>,
    message: Option<MessageWire>,
    usage: Option<UsageWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageWire {
    #[serde(deserialize_with = "content_blocks")]
    content: Vec<ContentWire>,
    #[serde(deserialize_with = "null_as_default")]
    tool_calls: Vec<ToolCallWire>,
    tool_plan: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContentWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    thinking: Option<String>,
}

impl ContentWire {
    /// The block's (thinking, text). Stream deltas carry no type, so there the fields present
    /// say which it is; blocks of other types carry neither.
    fn pieces(&self) -> (&str, &str) {
        let thinking = self.thinking.as_deref().unwrap_or_default();
        let text = self.text.as_deref().unwrap_or_default();
        match self.kind.as_deref() {
            None => (thinking, text),
            Some("thinking") => (thinking, ""),
            Some("text") => ("", text),
            Some(_) => ("", ""),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCallWire {
    id: Option<String>,
    function: Option<FunctionWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionWire {
    name: Option<String>,
    arguments: Option<Value>,
}

impl FunctionWire {
    /// Arguments are JSON text; an object (never documented, cheap to accept) is serialized.
    fn arguments(&self) -> String {
        match &self.arguments {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }
}

impl ToolCallWire {
    fn to_tool_call(&self, index: usize) -> ToolCall {
        let function = self.function.as_ref();
        let arguments = function.map(FunctionWire::arguments).unwrap_or_default();
        ToolCall {
            id: self
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{index}")),
            name: function.and_then(|f| f.name.clone()).unwrap_or_default(),
            arguments: if arguments.trim().is_empty() {
                "{}".into()
            } else {
                arguments
            },
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UsageWire {
    billed_units: Option<TokensWire>,
    tokens: Option<TokensWire>,
    #[serde(deserialize_with = "count")]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default)]
struct TokensWire {
    #[serde(deserialize_with = "count")]
    input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    output_tokens: Option<u64>,
}

impl UsageWire {
    /// `tokens` counts what the model read and wrote; `billed_units` only what is billed (a
    /// subset: the prompt template is free), so it stands in only when `tokens` is missing.
    /// Cached tokens are part of the input.
    fn to_usage(&self) -> Option<Usage> {
        let counts = self.tokens.or(self.billed_units)?;
        Some(Usage::from_inclusive(
            counts.input_tokens.unwrap_or(0),
            counts.output_tokens.unwrap_or(0),
            self.cached_tokens.unwrap_or(0),
            0,
            0,
        ))
    }
}

fn map_finish_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "STOP_SEQUENCE" => FinishReason::StopSequence,
        "MAX_TOKENS" => FinishReason::Length,
        // Cut off by Cohere's time limit: the client holds a truncated reply, as with a token
        // limit.
        "TIMEOUT" => FinishReason::Length,
        "TOOL_CALL" => FinishReason::ToolCalls,
        "ERROR" => FinishReason::Error,
        // COMPLETE, and reasons added later: the client acts on calls when there are some.
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Parsed via [`Value`] so that only an object is accepted (serde would read a struct from a
/// JSON array too, by position). The raw object comes back too, for error-shaped frames.
fn parse_object<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<(T, Value), String> {
    match serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string())? {
        object @ Value::Object(_) => {
            let parsed = T::deserialize(&object).map_err(|e| e.to_string())?;
            Ok((parsed, object))
        }
        _ => Err("not a JSON object".into()),
    }
}

/// Joins reasoning pieces; the plan and the thinking are separate passages.
fn push_passage(into: &mut String, passage: &str) {
    if passage.is_empty() {
        return;
    }
    if !into.is_empty() {
        into.push_str("\n\n");
    }
    into.push_str(passage);
}

/// A Cohere v2 chat reply → neutral response. `model` and `created_s` are the relay's (Cohere
/// names neither); the id is Cohere's.
pub fn decode_response(bytes: &[u8], model: &str, created_s: i64) -> Result<ChatResponse, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("invalid Cohere response body: {e}");
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| invalid(&e))?;
    if !raw.is_object() {
        return Err(invalid(&"not a JSON object"));
    }
    // An error body (`{"id", "message": "…"}`) that arrived with a success status.
    if let Some(error) = raw.get("message").and_then(Value::as_str) {
        return Err(error.to_string());
    }
    let wire = ResponseWire::deserialize(&raw).map_err(|e| invalid(&e))?;
    let Some(message) = wire.message else {
        return Err("Cohere response has no message".into());
    };

    let mut text = String::new();
    let mut reasoning = String::new();
    for block in &message.content {
        let (thinking, t) = block.pieces();
        reasoning.push_str(thinking);
        text.push_str(t);
    }
    if let Some(plan) = &message.tool_plan {
        push_passage(&mut reasoning, plan);
    }
    let tool_calls: Vec<ToolCall> = message
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, call)| call.to_tool_call(i))
        .collect();

    let finish_reason = wire
        .finish_reason
        .as_deref()
        .map(|r| map_finish_reason(r, !tool_calls.is_empty()));

    // A reply of only calls has no content; otherwise the client sees text, even empty.
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Vec::new()
    } else {
        vec![Part::Text(text)]
    };
    let mut neutral = Message::new(Role::Assistant, content);
    neutral.tool_calls = tool_calls;
    neutral.reasoning = (!reasoning.is_empty()).then_some(reasoning);

    Ok(ChatResponse {
        id: wire.id.unwrap_or_default(),
        model: model.to_string(),
        created_s,
        message: neutral,
        finish_reason,
        // Cohere does not say which stop sequence matched.
        stop_sequence: None,
        usage: wire.usage.as_ref().and_then(UsageWire::to_usage),
    })
}

/// Cohere error body (`{"id": "…", "message": "…"}`, or `{"message": "…"}`) → its message.
pub fn parse_error_body(bytes: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<Value>(bytes).ok()?;
    value
        .get("message")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    #[serde(deserialize_with = "count")]
    index: Option<u64>,
    delta: Option<DeltaWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeltaWire {
    message: Option<DeltaMessageWire>,
    finish_reason: Option<String>,
    usage: Option<UsageWire>,
    error: Option<String>,
}

/// `content` and `tool_calls` are objects in their own events but empty lists in
/// `message-start`, so they are read per event type.
#[derive(Deserialize, Default)]
#[serde(default)]
struct DeltaMessageWire {
    content: Option<Value>,
    tool_plan: Option<String>,
    tool_calls: Option<Value>,
}

impl EventWire {
    fn message(&self) -> Option<&DeltaMessageWire> {
        self.delta.as_ref()?.message.as_ref()
    }

    fn content(&self) -> Option<ContentWire> {
        ContentWire::deserialize(self.message()?.content.as_ref()?).ok()
    }

    /// The call of a `tool-call-start`/`-delta`: one object (a list is read as its first).
    fn tool_call(&self) -> Option<ToolCallWire> {
        let calls = self.message()?.tool_calls.as_ref()?;
        let call = match calls {
            Value::Array(list) => list.first()?,
            other => other,
        };
        ToolCallWire::deserialize(call).ok()
    }
}

/// Cohere SSE (`event: <type>` + `data: {…}`) → neutral [`StreamEvent`]s. Holds the partial
/// frame, the neutral index of each tool call by Cohere's `index`, and whether the stream ended.
pub struct StreamDecoder {
    parser: SseParser,
    events: Vec<SseEvent>,
    model: String,
    started: bool,
    /// Cohere's `index` of each tool call so far → neutral index (its position here). Kept
    /// whole so a late delta still finds its call; whether Cohere's index counts tool calls
    /// or all blocks, the mapping holds.
    tools: Vec<Option<u64>>,
    saw_end: bool,
}

impl StreamDecoder {
    pub fn new(model: &str) -> Self {
        StreamDecoder {
            parser: SseParser::new(),
            events: Vec::new(),
            model: model.to_string(),
            started: false,
            tools: Vec::new(),
            saw_end: false,
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

    /// End of stream: a last event without its blank line is still decoded (it is usually
    /// `message-end`, which carries the finish reason and usage).
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), SseError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.parser.finish(&mut events);
        for event in events.drain(..) {
            self.decode_event(&event, out);
        }
        self.events = events;
        result
    }

    /// The upstream ended the stream properly with `message-end`.
    pub fn saw_end(&self) -> bool {
        self.saw_end
    }

    fn ensure_started(&mut self, id: Option<&str>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: id.unwrap_or_default().to_string(),
                model: self.model.clone(),
            });
        }
    }

    fn decode_event(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let data = event.data.trim();
        // Cohere's SDKs treat `[DONE]` as a terminator; the stream's own end is `message-end`.
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        let (wire, raw) = match parse_object::<EventWire>(data.as_bytes()) {
            Ok(parsed) => parsed,
            Err(_) if event.event.as_deref() == Some("error") => {
                // An error event we cannot read is still an error; its text may be anything,
                // so it is not shown.
                out.push(StreamEvent::Error {
                    status: 502,
                    message: "Cohere reported an error mid-stream.".into(),
                });
                return;
            }
            // Keep-alives and frames of no known shape carry nothing for the client.
            Err(_) => return,
        };
        let kind = wire.kind.as_deref().or(event.event.as_deref());
        match kind {
            Some("message-start") => self.ensure_started(wire.id.as_deref(), out),
            Some("content-start" | "content-delta") => {
                self.ensure_started(None, out);
                if let Some(block) = wire.content() {
                    let (thinking, text) = block.pieces();
                    if !thinking.is_empty() {
                        out.push(StreamEvent::ReasoningDelta(thinking.to_string()));
                    }
                    if !text.is_empty() {
                        out.push(StreamEvent::TextDelta(text.to_string()));
                    }
                }
            }
            Some("tool-plan-delta") => {
                self.ensure_started(None, out);
                if let Some(plan) = wire
                    .message()
                    .and_then(|m| m.tool_plan.as_deref())
                    .filter(|p| !p.is_empty())
                {
                    out.push(StreamEvent::ReasoningDelta(plan.to_string()));
                }
            }
            Some("tool-call-start") => {
                self.ensure_started(None, out);
                self.start_tool_call(&wire, out);
            }
            Some("tool-call-delta") => self.tool_call_delta(&wire, out),
            Some("message-end") => {
                self.ensure_started(wire.id.as_deref(), out);
                self.end(wire.delta.unwrap_or_default(), out);
            }
            Some("error") | None => {
                // A frame shaped like Cohere's error body.
                if let Some(message) = raw.get("message").and_then(Value::as_str) {
                    out.push(StreamEvent::Error {
                        status: 502,
                        message: message.to_string(),
                    });
                }
            }
            // content-end, tool-call-end, citation-start/-end, debug, and later kinds.
            Some(_) => {}
        }
    }

    fn start_tool_call(&mut self, wire: &EventWire, out: &mut Vec<StreamEvent>) {
        let index = self.tools.len();
        self.tools.push(wire.index);
        let call = wire.tool_call().unwrap_or_default();
        let function = call.function.as_ref();
        out.push(StreamEvent::ToolCallStart {
            index,
            id: call
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{index}")),
            name: function.and_then(|f| f.name.clone()).unwrap_or_default(),
        });
        let arguments = function.map(FunctionWire::arguments).unwrap_or_default();
        if !arguments.is_empty() {
            out.push(StreamEvent::ToolCallDelta { index, arguments });
        }
    }

    fn tool_call_delta(&mut self, wire: &EventWire, out: &mut Vec<StreamEvent>) {
        // The call Cohere's index names, else (no index) the latest one started.
        let index = match wire.index {
            Some(cohere) => self.tools.iter().rposition(|known| *known == Some(cohere)),
            None => self.tools.len().checked_sub(1),
        };
        let Some(index) = index else {
            return;
        };
        let arguments = wire
            .tool_call()
            .and_then(|call| call.function)
            .map(|f| f.arguments())
            .unwrap_or_default();
        if !arguments.is_empty() {
            out.push(StreamEvent::ToolCallDelta { index, arguments });
        }
    }

    fn end(&mut self, delta: DeltaWire, out: &mut Vec<StreamEvent>) {
        self.saw_end = true;
        let usage = delta.usage.as_ref().and_then(UsageWire::to_usage);
        match delta.error.filter(|e| !e.trim().is_empty()) {
            Some(message) => {
                // Usage first: the tokens were spent even though the reply failed.
                out.extend(usage.map(StreamEvent::Usage));
                out.push(StreamEvent::Error {
                    status: 502,
                    message,
                });
            }
            None => {
                let reason = match delta.finish_reason.as_deref() {
                    Some(reason) => map_finish_reason(reason, !self.tools.is_empty()),
                    None if self.tools.is_empty() => FinishReason::Stop,
                    None => FinishReason::ToolCalls,
                };
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
                out.extend(usage.map(StreamEvent::Usage));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::neutral::Tool;

    const TEXT: &[u8] = include_bytes!("../../tests/fixtures/cohere/reply_text.json");
    const TOOL_CALL: &[u8] = include_bytes!("../../tests/fixtures/cohere/reply_tool_call.json");
    const THINKING: &[u8] = include_bytes!("../../tests/fixtures/cohere/reply_thinking.json");
    const ERROR_429: &[u8] =
        include_bytes!("../../tests/fixtures/cohere/error_rate_limit_429.json");
    const ERROR_400: &[u8] =
        include_bytes!("../../tests/fixtures/cohere/error_invalid_request_400.json");
    const STREAM_TEXT: &[u8] = include_bytes!("../../tests/fixtures/cohere/stream_text.sse");
    const STREAM_TOOL_CALL: &[u8] =
        include_bytes!("../../tests/fixtures/cohere/stream_tool_call.sse");
    const STREAM_THINKING: &[u8] =
        include_bytes!("../../tests/fixtures/cohere/stream_thinking.sse");

    const MODEL: &str = "command-a-03-2025";

    fn decode(bytes: &[u8]) -> ChatResponse {
        decode_response(bytes, MODEL, 1_700_000_000).expect("decodes")
    }

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

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: MODEL.into(),
            messages,
            ..ChatRequest::default()
        }
    }

    fn weather_tool() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Current weather for a city".into()),
            parameters: json!({
                "type": "object",
                "properties": {"location": {"type": "string", "description": "City name"}},
                "required": ["location"]
            }),
        }
    }

    fn rich_request() -> ChatRequest {
        let mut assistant = Message::text(Role::Assistant, "Let me check.");
        assistant.tool_calls = vec![tool_call(
            "get_weather_1byjy32y4hvq",
            "get_weather",
            r#"{"location":"Paris"}"#,
        )];
        assistant.reasoning = Some("The user wants the weather.".into());
        let mut extra = Map::new();
        extra.insert("logit_bias".into(), json!({"50256": -100}));
        ChatRequest {
            model: MODEL.into(),
            system: vec![
                "You are terse.".into(),
                "".into(),
                "Answer in English.".into(),
            ],
            messages: vec![
                Message::new(
                    Role::User,
                    vec![
                        Part::Text("What is in these images, and the weather in Paris?".into()),
                        Part::Image(ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        }),
                        Part::Image(ImageSource::Url("https://example.com/cat.webp".into())),
                    ],
                ),
                assistant,
                tool_result("get_weather_1byjy32y4hvq", r#"{"temperature":21}"#),
                Message::text(Role::User, "Thanks. Summarise as JSON."),
            ],
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::Required),
            parallel_tool_calls: Some(false),
            max_tokens: Some(1024),
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(40),
            stop: vec!["END".into()],
            seed: Some(42),
            n: Some(2),
            presence_penalty: Some(0.1),
            frequency_penalty: Some(0.2),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "summary".into(),
                schema: json!({
                    "type": "object",
                    "properties": {"summary": {"type": "string"}},
                    "required": ["summary"]
                }),
                strict: true,
            }),
            reasoning: Some(Reasoning::Budget(2048)),
            logprobs: Some(true),
            top_logprobs: Some(3),
            user: Some("user-123".into()),
            stream: true,
            extra,
        }
    }

    #[test]
    fn encodes_a_rich_request() {
        let (body, drops) = encode_request(&rich_request());
        let expected = json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are terse.\n\nAnswer in English."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these images, and the weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}}
                ]},
                {"role": "assistant",
                 "content": [
                     {"type": "thinking", "thinking": "The user wants the weather."},
                     {"type": "text", "text": "Let me check."}
                 ],
                 "tool_calls": [{
                     "id": "get_weather_1byjy32y4hvq",
                     "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}
                 }]},
                {"role": "tool", "tool_call_id": "get_weather_1byjy32y4hvq",
                 "content": "{\"temperature\":21}"},
                {"role": "user", "content": "Thanks. Summarise as JSON."}
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string", "description": "City name"}},
                    "required": ["location"]
                }
            }}],
            "tool_choice": "REQUIRED",
            "max_tokens": 1024,
            "temperature": 0.7,
            "p": 0.9,
            "k": 40,
            "stop_sequences": ["END"],
            "seed": 42,
            "frequency_penalty": 0.2,
            "presence_penalty": 0.1,
            "response_format": {"type": "json_object", "json_schema": {
                "type": "object",
                "properties": {"summary": {"type": "string"}},
                "required": ["summary"]
            }},
            "thinking": {"type": "enabled", "token_budget": 2048},
            "logprobs": true,
            "stream": true
        });
        assert_eq!(body, expected);
        assert_eq!(
            drops,
            vec![
                Drop::dropped("top_logprobs"),
                Drop::dropped("n"),
                Drop::dropped("user"),
                Drop::dropped("parallel_tool_calls"),
                Drop::dropped("logit_bias"),
            ]
        );
    }

    #[test]
    fn a_plain_request_is_small() {
        let (body, drops) = encode_request(&request(vec![Message::text(Role::User, "Hi")]));
        assert_eq!(
            body,
            json!({
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "stream": false
            })
        );
        assert!(drops.is_empty());
    }

    #[test]
    fn tool_choices() {
        let choice = |choice: ToolChoice, tools: bool| {
            let mut req = request(vec![Message::text(Role::User, "Hi")]);
            req.tool_choice = Some(choice);
            if tools {
                req.tools = vec![weather_tool()];
            }
            let (body, drops) = encode_request(&req);
            (body.get("tool_choice").cloned(), drops)
        };
        assert_eq!(choice(ToolChoice::Auto, true), (None, vec![]));
        assert_eq!(
            choice(ToolChoice::None, true),
            (Some(json!("NONE")), vec![])
        );
        assert_eq!(
            choice(ToolChoice::Required, true),
            (Some(json!("REQUIRED")), vec![])
        );
        assert_eq!(
            choice(ToolChoice::Named("get_weather".into()), true),
            (
                Some(json!("REQUIRED")),
                vec![Drop::approximated("tool_choice")]
            )
        );
        assert_eq!(
            choice(ToolChoice::Required, false),
            (None, vec![Drop::dropped("tool_choice")])
        );
        assert_eq!(choice(ToolChoice::None, false), (None, vec![]));
    }

    #[test]
    fn sampling_is_clamped_into_cohere_ranges() {
        let mut req = request(vec![Message::text(Role::User, "Hi")]);
        req.temperature = Some(1.5);
        req.top_p = Some(1.0);
        req.top_k = Some(1000);
        req.stop = (0..7).map(|i| format!("S{i}")).collect();
        req.seed = Some(-1);
        req.frequency_penalty = Some(-0.5);
        req.presence_penalty = Some(2.0);
        let (body, drops) = encode_request(&req);
        assert_eq!(body["temperature"], json!(1.0));
        assert_eq!(body["p"], json!(0.99));
        assert_eq!(body["k"], json!(500));
        assert_eq!(
            body["stop_sequences"],
            json!(["S0", "S1", "S2", "S3", "S4"])
        );
        assert_eq!(body["seed"], json!(u64::MAX));
        assert_eq!(body["frequency_penalty"], json!(0.0));
        assert_eq!(body["presence_penalty"], json!(1.0));
        assert_eq!(
            drops,
            vec![
                Drop::approximated("temperature"),
                Drop::approximated("top_p"),
                Drop::approximated("top_k"),
                Drop::approximated("stop"),
                Drop::approximated("seed"),
                Drop::approximated("frequency_penalty"),
                Drop::approximated("presence_penalty"),
            ]
        );

        req.temperature = Some(f64::NAN);
        let (body, _) = encode_request(&req);
        assert_eq!(body["temperature"], json!(0.0));
    }

    #[test]
    fn thinking_budgets() {
        let thinking = |reasoning: Reasoning| {
            let mut req = request(vec![Message::text(Role::User, "Hi")]);
            req.reasoning = Some(reasoning);
            let (body, drops) = encode_request(&req);
            (body.get("thinking").cloned(), drops)
        };
        let enabled = |n: u64| Some(json!({"type": "enabled", "token_budget": n}));
        let disabled = Some(json!({"type": "disabled"}));
        let effort = vec![Drop::approximated("reasoning_effort")];
        assert_eq!(thinking(Reasoning::Budget(500)), (enabled(500), vec![]));
        assert_eq!(thinking(Reasoning::Budget(0)), (disabled.clone(), vec![]));
        assert_eq!(thinking(Reasoning::Disabled), (disabled.clone(), vec![]));
        assert_eq!(
            thinking(Reasoning::Effort("none".into())),
            (disabled, vec![])
        );
        assert_eq!(
            thinking(Reasoning::Effort("low".into())),
            (enabled(BUDGET_LOW), effort.clone())
        );
        assert_eq!(
            thinking(Reasoning::Effort("medium".into())),
            (enabled(BUDGET_MEDIUM), effort.clone())
        );
        assert_eq!(
            thinking(Reasoning::Effort("HIGH".into())),
            (enabled(BUDGET_HIGH), effort.clone())
        );
        assert_eq!(
            thinking(Reasoning::Effort("xhigh".into())),
            (enabled(BUDGET_MAX), effort)
        );
    }

    #[test]
    fn response_formats() {
        let format = |f: ResponseFormat| {
            let mut req = request(vec![Message::text(Role::User, "Hi")]);
            req.response_format = Some(f);
            encode_request(&req).0.get("response_format").cloned()
        };
        assert_eq!(format(ResponseFormat::Text), None);
        assert_eq!(
            format(ResponseFormat::JsonObject),
            Some(json!({"type": "json_object"}))
        );
    }

    #[test]
    fn history_edge_cases() {
        let mut calls_only = Message::new(Role::Assistant, vec![]);
        calls_only.tool_calls = vec![tool_call("c1", "sum", "")];
        let mut failed = tool_result("c1", "division by zero");
        failed.is_error = true;
        let mut failed_json = tool_result("c1", r#"{"error":"timeout"}"#);
        failed_json.is_error = true;
        let mut with_image = tool_result("c1", "chart");
        with_image.content.push(Part::Image(ImageSource::Url(
            "https://example.com/chart.png".into(),
        )));
        let assistant_image = Message::new(
            Role::Assistant,
            vec![
                Part::Text("Here:".into()),
                Part::Image(ImageSource::Url("https://example.com/x.png".into())),
            ],
        );
        let req = request(vec![
            Message::text(Role::User, "go"),
            Message::new(Role::Assistant, vec![]),
            calls_only,
            failed,
            failed_json,
            with_image,
            assistant_image,
        ]);
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "go"},
                {"role": "assistant", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "sum", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"error\":\"division by zero\"}"},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"error\":\"timeout\"}"},
                {"role": "tool", "tool_call_id": "c1", "content": "chart"},
                {"role": "assistant", "content": "Here:"}
            ])
        );
        assert_eq!(
            drops,
            vec![
                Drop::approximated("messages.is_error"),
                Drop::dropped("messages.content.image"),
            ]
        );
    }

    #[test]
    fn decodes_text() {
        let r = decode(TEXT);
        assert_eq!(r.id, "c14c80c3-18eb-4519-9460-6c92edd8cfb4");
        assert_eq!((r.model.as_str(), r.created_s), (MODEL, 1_700_000_000));
        assert_eq!(
            r.message.joined_text(),
            "LLMs stand for Large Language Models, which are a type of neural network model \
             specialized in processing and generating human language."
        );
        assert_eq!(r.message.role, Role::Assistant);
        assert!(r.message.tool_calls.is_empty());
        assert_eq!(r.message.reasoning, None);
        assert_eq!(r.finish_reason, Some(FinishReason::Stop));
        // `tokens`, not `billed_units`; cached tokens inside the input, not added to it.
        let usage = r.usage.expect("usage");
        assert_eq!(usage, Usage::from_inclusive(71, 26, 64, 0, 0));
        assert_eq!(usage.total_tokens(), 97);
        assert_eq!(usage.uncached_prompt_tokens(), 7);
    }

    #[test]
    fn decodes_tool_calls_with_a_plan() {
        let r = decode(TOOL_CALL);
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        assert!(r.message.content.is_empty());
        assert_eq!(
            r.message.reasoning.as_deref(),
            Some(
                "I will first find the sales summary for 29th September 2023. Then, I will \
                 find the details of the products in the 'Electronics' category."
            )
        );
        assert_eq!(
            r.message.tool_calls,
            vec![
                tool_call(
                    "query_daily_sales_report_9jr9cm3g8bcw",
                    "query_daily_sales_report",
                    r#"{"day":"2023-09-29"}"#
                ),
                tool_call(
                    "query_product_catalog_a3h3xzf4dd0t",
                    "query_product_catalog",
                    r#"{"category":"Electronics"}"#
                ),
            ]
        );
        assert_eq!(r.usage, Some(Usage::new(1032, 124)));
    }

    #[test]
    fn decodes_thinking_and_float_counts() {
        let r = decode(THINKING);
        assert!(r
            .message
            .reasoning
            .as_deref()
            .is_some_and(|t| t.starts_with("I will first find the sales summary")));
        assert_eq!(r.message.tool_calls.len(), 2);
        assert_eq!(r.usage, Some(Usage::new(1032, 124)));
    }

    #[test]
    fn usage_falls_back_to_billed_units_and_never_double_counts() {
        let body = json!({
            "id": "x", "finish_reason": "MAX_TOKENS",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 26}, "cached_tokens": 3}
        });
        let r = decode(body.to_string().as_bytes());
        assert_eq!(r.finish_reason, Some(FinishReason::Length));
        let usage = r.usage.expect("usage");
        assert_eq!(usage, Usage::from_inclusive(5, 26, 3, 0, 0));
        assert_eq!(usage.prompt_tokens, 5);
        // More cached tokens than input tokens cannot invent input.
        let body = json!({
            "id": "x", "finish_reason": "COMPLETE",
            "message": {"role": "assistant", "content": "plain string"},
            "usage": {"tokens": {"input_tokens": 4, "output_tokens": -1}, "cached_tokens": 9}
        });
        let r = decode(body.to_string().as_bytes());
        assert_eq!(r.message.joined_text(), "plain string");
        assert_eq!(r.usage, Some(Usage::from_inclusive(4, 0, 4, 0, 0)));
        // No usage at all is no usage, not zeros.
        let body =
            json!({"id": "x", "finish_reason": "COMPLETE", "message": {"role": "assistant"}});
        let r = decode(body.to_string().as_bytes());
        assert_eq!(r.usage, None);
        assert_eq!(r.message.content, vec![Part::Text(String::new())]);
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(map_finish_reason("COMPLETE", false), FinishReason::Stop);
        assert_eq!(map_finish_reason("COMPLETE", true), FinishReason::ToolCalls);
        assert_eq!(
            map_finish_reason("STOP_SEQUENCE", false),
            FinishReason::StopSequence
        );
        assert_eq!(map_finish_reason("MAX_TOKENS", false), FinishReason::Length);
        assert_eq!(map_finish_reason("TIMEOUT", false), FinishReason::Length);
        assert_eq!(
            map_finish_reason("TOOL_CALL", true),
            FinishReason::ToolCalls
        );
        assert_eq!(map_finish_reason("ERROR", false), FinishReason::Error);
        assert_eq!(
            map_finish_reason("SOMETHING_NEW", false),
            FinishReason::Stop
        );
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert!(decode_response(b"not json", MODEL, 0).is_err());
        assert!(decode_response(b"[1,2]", MODEL, 0).is_err());
        assert_eq!(
            decode_response(ERROR_400, MODEL, 0),
            Err("invalid request: message must be at least 1 token long or tool results must be specified.".into())
        );
    }

    #[test]
    fn reads_error_bodies() {
        assert!(parse_error_body(ERROR_429)
            .is_some_and(|m| m.starts_with("You are using a Trial key, which is limited")));
        assert_eq!(
            parse_error_body(ERROR_400).as_deref(),
            Some("invalid request: message must be at least 1 token long or tool results must be specified.")
        );
        assert_eq!(
            parse_error_body(br#"{"message":"invalid api token"}"#).as_deref(),
            Some("invalid api token")
        );
        assert_eq!(parse_error_body(b"<html>502</html>"), None);
        assert_eq!(parse_error_body(br#"{"message":""}"#), None);
        assert_eq!(parse_error_body(br#"{"message":42}"#), None);
    }

    fn stream_chunks(chunks: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
        let mut decoder = StreamDecoder::new(MODEL);
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out).expect("push");
        }
        decoder.finish(&mut out).expect("finish");
        (out, decoder.saw_end())
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

    fn start(id: &str) -> StreamEvent {
        StreamEvent::Start {
            id: id.into(),
            model: MODEL.into(),
        }
    }

    fn finish(reason: FinishReason) -> StreamEvent {
        StreamEvent::Finish {
            reason,
            stop_sequence: None,
        }
    }

    fn usages(events: &[StreamEvent]) -> Vec<Usage> {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Usage(u) => Some(*u),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn streams_text() {
        let (events, ended) = stream(STREAM_TEXT);
        assert!(ended);
        assert_eq!(
            events,
            vec![
                start("29f14a5a-11de-4cae-9800-25e4747408ea"),
                StreamEvent::TextDelta("LL".into()),
                StreamEvent::TextDelta("Ms".into()),
                StreamEvent::TextDelta(" stand for Large Language Models".into()),
                StreamEvent::TextDelta(" — “neural” text models.".into()),
                finish(FinishReason::Stop),
                StreamEvent::Usage(Usage::new(71, 26)),
            ]
        );
    }

    #[test]
    fn streams_a_plan_and_tool_calls() {
        let (events, ended) = stream(STREAM_TOOL_CALL);
        assert!(ended);
        let delta = |index, arguments: &str| StreamEvent::ToolCallDelta {
            index,
            arguments: arguments.into(),
        };
        assert_eq!(
            events,
            vec![
                start("2edfdf70-019c-4f7a-be20-3cdbfaa3dca6"),
                StreamEvent::ReasoningDelta("I".into()),
                StreamEvent::ReasoningDelta(" will use the query_daily_sales_report tool".into()),
                StreamEvent::ReasoningDelta(" and the query_product_catalog tool.".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "query_daily_sales_report_j3f0adww9pmr".into(),
                    name: "query_daily_sales_report".into(),
                },
                delta(0, "{\""),
                delta(0, "day"),
                delta(0, "\": \"2023-09-29\"}"),
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "query_product_catalog_c66nf11r6s8g".into(),
                    name: "query_product_catalog".into(),
                },
                delta(1, "{\"category\": "),
                delta(1, "\"Electronics\"}"),
                finish(FinishReason::ToolCalls),
                StreamEvent::Usage(Usage::new(1589, 135)),
            ]
        );
    }

    #[test]
    fn streams_thinking_then_text() {
        let (events, ended) = stream(STREAM_THINKING);
        assert!(ended);
        assert_eq!(
            events,
            vec![
                start("7c1f0b2a-4d3e-4f5a-8b6c-9d0e1f2a3b4c"),
                StreamEvent::ReasoningDelta("Alice has 2 sisters,".into()),
                StreamEvent::ReasoningDelta(" so each brother has Alice plus 2: 3.".into()),
                StreamEvent::TextDelta("Alice's brother has 3 sisters.".into()),
                finish(FinishReason::Stop),
                StreamEvent::Usage(Usage::from_inclusive(540, 58, 512, 0, 0)),
            ]
        );
        // One usage event, from `tokens`, with the cache inside the input.
        assert_eq!(
            usages(&events),
            vec![Usage::from_inclusive(540, 58, 512, 0, 0)]
        );
    }

    #[test]
    fn stream_usage_is_reported_once() {
        for fixture in [STREAM_TEXT, STREAM_TOOL_CALL, STREAM_THINKING] {
            let (events, _) = stream_chunks(&[fixture]);
            assert_eq!(usages(&events).len(), 1, "usage reported once");
        }
    }

    #[test]
    fn tool_call_indices_may_count_all_blocks() {
        // A reasoning model's thinking block at index 0 puts its first call at index 1.
        let sse = concat!(
            "event: message-start\ndata: {\"type\":\"message-start\",\"id\":\"m1\"}\n\n",
            "event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"thinking\",\"thinking\":\"plan\"}}}}\n\n",
            "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\"\"}}}}}\n\n",
            "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":2,\"delta\":{\"message\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"g\"}}]}}}\n\n",
            "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\":1}\"}}}}}\n\n",
            "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{}\"}}}}}\n\n",
            "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":7,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"lost\"}}}}}\n\n",
            "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\"}}\n\n",
        );
        let (events, ended) = stream(sse.as_bytes());
        assert!(ended);
        assert_eq!(
            events,
            vec![
                start("m1"),
                StreamEvent::ReasoningDelta("plan".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "a".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "{\"x\"".into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "b".into(),
                    name: "g".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: ":1}".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 1,
                    arguments: "{}".into()
                },
                finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn stream_errors_and_oddities() {
        // A generation failure reported in message-end: usage kept, then the error.
        let sse = concat!(
            "event: message-start\ndata: {\"type\":\"message-start\",\"id\":\"m2\"}\n\n",
            "event: citation-start\ndata: {\"type\":\"citation-start\",\"index\":0,\"delta\":{\"message\":{\"citations\":{\"start\":0,\"end\":1,\"text\":\"x\",\"sources\":[]}}}}\n\n",
            ": keep-alive\n\n",
            "data: not json\n\n",
            "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"ERROR\",\"error\":\"internal failure\",\"usage\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":1}}}}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, ended) = stream(sse.as_bytes());
        assert!(ended);
        assert_eq!(
            events,
            vec![
                start("m2"),
                StreamEvent::Usage(Usage::new(3, 1)),
                StreamEvent::Error {
                    status: 502,
                    message: "internal failure".into()
                },
            ]
        );

        // An error body in the stream, an unreadable error event, and a cut-off stream.
        let sse = concat!(
            "data: {\"id\":\"e\",\"message\":\"too many tokens\"}\n\n",
            "event: error\ndata: <html>\n\n",
            "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}",
        );
        let (events, ended) = stream(sse.as_bytes());
        assert!(!ended);
        assert_eq!(
            events,
            vec![
                StreamEvent::Error {
                    status: 502,
                    message: "too many tokens".into()
                },
                StreamEvent::Error {
                    status: 502,
                    message: "Cohere reported an error mid-stream.".into()
                },
                start(""),
                StreamEvent::TextDelta("Hi".into()),
            ]
        );
    }
}
