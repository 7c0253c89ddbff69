//! OpenAI's wire format: inbound request validation, the body sent to an OpenAI-format
//! upstream, usage and error extraction from its replies, and the stream pass-through.
//!
//! Requests are kept as a JSON map rather than a closed struct so that parameters the relay does
//! not know (new OpenAI fields, vendor extensions) reach an OpenAI-format upstream untouched;
//! validation checks only what the relay relies on or what every upstream would reject anyway,
//! and names the offending field.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::RelayError;
use crate::formats::sse::{self, SseError, SseEvent, SseParser};
use crate::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// Path under an OpenAI-format base URL (`…/v1`).
    pub fn path(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    /// The name recorded in usage rows.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }

    fn can_stream(&self) -> bool {
        match self {
            Endpoint::ChatCompletions | Endpoint::Completions => true,
            Endpoint::Embeddings => false,
        }
    }
}

/// A validated inbound request.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRequest {
    pub endpoint: Endpoint,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Bytes of prompt text, for an estimate when the upstream reports no usage.
    pub prompt_bytes: usize,
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

pub fn parse_request(endpoint: Endpoint, bytes: &[u8]) -> Result<InboundRequest, RelayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| RelayError::InvalidJson {
        detail: e.to_string(),
    })?;
    let Value::Object(body) = value else {
        return Err(RelayError::InvalidJson {
            detail: "the body must be a JSON object".into(),
        });
    };
    let model = match body.get("model") {
        None | Some(Value::Null) => return Err(missing("model")),
        Some(Value::String(m)) if m.trim().is_empty() => {
            return Err(invalid_value("model", "must not be empty"))
        }
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(invalid_type("model", "a string")),
    };
    let stream = opt_bool(&body, "stream")?.unwrap_or(false);
    if stream && !endpoint.can_stream() {
        return Err(invalid_value("stream", "this endpoint does not stream"));
    }
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid_type("stream_options.include_usage", "a boolean")),
        },
        Some(_) => return Err(invalid_type("stream_options", "an object")),
    };
    for field in ["max_tokens", "max_completion_tokens", "n"] {
        if let Some(n) = opt_u64(&body, field)? {
            if n == 0 {
                return Err(invalid_value(field, "must be at least 1"));
            }
        }
    }
    check_range(&body, "temperature", 0.0, 2.0)?;
    check_range(&body, "top_p", 0.0, 1.0)?;

    let prompt_bytes = match endpoint {
        Endpoint::ChatCompletions => validate_messages(&body)?,
        Endpoint::Completions => validate_text_input(&body, "prompt")?,
        Endpoint::Embeddings => validate_text_input(&body, "input")?,
    };
    if endpoint == Endpoint::ChatCompletions {
        match body.get("tools") {
            None | Some(Value::Null) | Some(Value::Array(_)) => {}
            Some(_) => return Err(invalid_type("tools", "an array")),
        }
    }
    Ok(InboundRequest {
        endpoint,
        body,
        model,
        stream,
        include_usage,
        prompt_bytes,
    })
}

/// Checks `messages` and returns the bytes of text in them.
fn validate_messages(body: &Map<String, Value>) -> Result<usize, RelayError> {
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(invalid_type("messages", "an array of message objects")),
    };
    if messages.is_empty() {
        return Err(invalid_value(
            "messages",
            "must contain at least one message",
        ));
    }
    let mut text_bytes = 0usize;
    for (i, message) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let Value::Object(m) = message else {
            return Err(invalid_type(&format!("messages[{i}]"), "an object"));
        };
        let role = match m.get("role") {
            None | Some(Value::Null) => return Err(missing(&at("role"))),
            Some(Value::String(r)) => r.as_str(),
            Some(_) => return Err(invalid_type(&at("role"), "a string")),
        };
        if !ROLES.contains(&role) {
            return Err(invalid_value(
                &at("role"),
                &format!("'{role}' is not one of {}", ROLES.join(", ")),
            ));
        }
        match m.get("content") {
            None | Some(Value::Null) => {
                let may_omit = role == "assistant"
                    && (m.contains_key("tool_calls") || m.contains_key("function_call"));
                if !may_omit && role != "assistant" {
                    return Err(missing(&at("content")));
                }
            }
            Some(Value::String(s)) => text_bytes += s.len(),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let Value::Object(p) = part else {
                        return Err(invalid_type(&at(&format!("content[{j}]")), "an object"));
                    };
                    match p.get("type") {
                        Some(Value::String(_)) => {}
                        None | Some(Value::Null) => {
                            return Err(missing(&at(&format!("content[{j}].type"))))
                        }
                        Some(_) => {
                            return Err(invalid_type(
                                &at(&format!("content[{j}].type")),
                                "a string",
                            ))
                        }
                    }
                    if let Some(Value::String(t)) = p.get("text") {
                        text_bytes += t.len();
                    }
                }
            }
            Some(_) => {
                return Err(invalid_type(
                    &at("content"),
                    "a string or an array of parts",
                ))
            }
        }
        if role == "tool" {
            match m.get("tool_call_id") {
                Some(Value::String(_)) => {}
                None | Some(Value::Null) => return Err(missing(&at("tool_call_id"))),
                Some(_) => return Err(invalid_type(&at("tool_call_id"), "a string")),
            }
        }
    }
    Ok(text_bytes)
}

/// `prompt` / `input`: a string, an array of strings, or token arrays.
fn validate_text_input(body: &Map<String, Value>, field: &str) -> Result<usize, RelayError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(Value::String(s)) => Ok(s.len()),
        Some(Value::Array(items)) => {
            let mut bytes = 0usize;
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => bytes += s.len(),
                    // A token id stands for about four bytes of text.
                    Value::Number(_) => bytes += 4,
                    Value::Array(tokens) if tokens.iter().all(Value::is_number) => {
                        bytes += 4 * tokens.len()
                    }
                    _ => {
                        return Err(invalid_type(
                            &format!("{field}[{i}]"),
                            "a string or an array of token ids",
                        ))
                    }
                }
            }
            Ok(bytes)
        }
        Some(_) => Err(invalid_type(field, "a string or an array")),
    }
}

fn opt_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, RelayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid_type(field, "a boolean")),
    }
}

fn opt_u64(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, RelayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid_type(field, "a non-negative integer")),
        Some(_) => Err(invalid_type(field, "an integer")),
    }
}

fn check_range(body: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<(), RelayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            _ => Err(invalid_value(
                field,
                &format!("must be between {lo} and {hi}"),
            )),
        },
        Some(_) => Err(invalid_type(field, "a number")),
    }
}

fn missing(param: &str) -> RelayError {
    RelayError::MissingParameter {
        param: param.into(),
    }
}

fn invalid_type(param: &str, expected: &'static str) -> RelayError {
    RelayError::InvalidType {
        param: param.into(),
        expected,
    }
}

fn invalid_value(param: &str, message: &str) -> RelayError {
    RelayError::InvalidValue {
        param: param.into(),
        message: message.into(),
    }
}

/// The body for an OpenAI-format upstream: the client's, with `model` set to the upstream name
/// and, for streams, `stream_options.include_usage` switched on so the relay can count exactly
/// (the pass-through removes that chunk again when the client did not ask for it).
pub fn upstream_body(
    req: &InboundRequest,
    upstream_model: &str,
    ask_stream_usage: bool,
) -> Vec<u8> {
    let mut body = req.body.clone();
    body.insert("model".into(), Value::String(upstream_model.into()));
    if req.stream && ask_stream_usage {
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Value::Object(o) = options {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    // Serialising a map of JSON values cannot fail.
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

#[derive(Deserialize)]
struct UsageWire {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl UsageWire {
    fn into_usage(self) -> Usage {
        let prompt = self.prompt_tokens.unwrap_or(0);
        // Embeddings report only prompt and total; derive nothing beyond what was said.
        let completion = self
            .completion_tokens
            .unwrap_or_else(|| self.total_tokens.unwrap_or(prompt).saturating_sub(prompt));
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        }
    }
}

#[derive(Deserialize)]
struct ResponsePeek {
    #[serde(default)]
    usage: Option<UsageWire>,
    #[serde(default)]
    choices: Vec<ChoicePeek>,
}

#[derive(Deserialize)]
struct ChoicePeek {
    #[serde(default)]
    message: Option<MessagePeek>,
    #[serde(default)]
    delta: Option<MessagePeek>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct MessagePeek {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallPeek>>,
}

#[derive(Deserialize)]
struct ToolCallPeek {
    #[serde(default)]
    function: Option<FunctionPeek>,
}

#[derive(Deserialize)]
struct FunctionPeek {
    #[serde(default)]
    arguments: Option<String>,
}

impl ChoicePeek {
    /// Bytes of generated text in this choice (content, reasoning, tool arguments).
    fn generated_bytes(&self) -> usize {
        let message = self.message.as_ref().or(self.delta.as_ref());
        let from_message = message.map_or(0, |m| {
            let tools: usize = m
                .tool_calls
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    t.function
                        .as_ref()
                        .and_then(|f| f.arguments.as_ref())
                        .map_or(0, String::len)
                })
                .sum();
            m.content.as_ref().map_or(0, String::len)
                + m.reasoning_content.as_ref().map_or(0, String::len)
                + tools
        });
        from_message + self.text.as_ref().map_or(0, String::len)
    }
}

/// What the relay needs from a non-stream reply: the reported usage, if any, and the size of
/// the generated text for an estimate otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplySummary {
    pub usage: Option<Usage>,
    pub completion_bytes: usize,
}

pub fn summarize_reply(bytes: &[u8]) -> ReplySummary {
    match serde_json::from_slice::<ResponsePeek>(bytes) {
        Ok(peek) => ReplySummary {
            completion_bytes: peek.choices.iter().map(ChoicePeek::generated_bytes).sum(),
            usage: peek.usage.map(UsageWire::into_usage),
        },
        Err(_) => ReplySummary::default(),
    }
}

/// The fields of an OpenAI-shaped error body, as far as they are there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamErrorBody {
    pub message: Option<String>,
    pub param: Option<String>,
    pub code: Option<String>,
}

pub fn parse_error_body(bytes: &[u8]) -> UpstreamErrorBody {
    #[derive(Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        param: Option<String>,
        #[serde(default)]
        code: Option<Value>,
    }
    match serde_json::from_slice::<Wrapper>(bytes) {
        Ok(w) => UpstreamErrorBody {
            message: w.error.message,
            param: w.error.param,
            code: w.error.code.map(|c| match c {
                Value::String(s) => s,
                other => other.to_string(),
            }),
        },
        Err(_) => UpstreamErrorBody::default(),
    }
}

/// Relays an OpenAI-format SSE stream to an OpenAI client while watching it: records the
/// usage chunk, counts generated text for an estimate when there is none, and removes the
/// usage the relay asked for on the client's behalf. A pure state machine: bytes in, bytes out.
pub struct StreamPassThrough {
    parser: SseParser,
    events: Vec<SseEvent>,
    /// Remove usage from what the client sees (it did not ask for it).
    strip_usage: bool,
    usage: Option<Usage>,
    completion_bytes: usize,
    saw_done: bool,
}

impl StreamPassThrough {
    pub fn new(strip_usage: bool) -> Self {
        StreamPassThrough {
            parser: SseParser::new(),
            events: Vec::new(),
            strip_usage,
            usage: None,
            completion_bytes: 0,
            saw_done: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), SseError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.parser.push(chunk, &mut events);
        for event in events.drain(..) {
            self.relay_event(event, out);
        }
        self.events = events;
        result
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), SseError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.parser.finish(&mut events);
        for event in events.drain(..) {
            self.relay_event(event, out);
        }
        self.events = events;
        result
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn completion_bytes(&self) -> usize {
        self.completion_bytes
    }

    /// The upstream ended the stream properly with `data: [DONE]`.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }

    fn relay_event(&mut self, event: SseEvent, out: &mut Vec<u8>) {
        if event.data.trim() == "[DONE]" {
            self.saw_done = true;
            sse::encode_done(out);
            return;
        }
        // Usage is rare in a chunk and `"usage":null` is common: only look when it may be there.
        let mut data = std::borrow::Cow::Borrowed(event.data.as_str());
        if let Ok(peek) = serde_json::from_str::<ResponsePeek>(&event.data) {
            self.completion_bytes = self
                .completion_bytes
                .saturating_add(peek.choices.iter().map(ChoicePeek::generated_bytes).sum());
            if let Some(usage) = peek.usage {
                self.usage = Some(usage.into_usage());
                if self.strip_usage {
                    if peek.choices.is_empty() {
                        return;
                    }
                    data = std::borrow::Cow::Owned(without_usage(&event.data));
                }
            }
        }
        sse::encode_event(event.event.as_deref(), &data, out);
    }
}

/// The chunk with its `usage` set to null, as OpenAI sends it to clients that did not ask.
fn without_usage(data: &str) -> String {
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(mut chunk)) => {
            chunk.insert("usage".into(), Value::Null);
            Value::Object(chunk).to_string()
        }
        _ => data.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<InboundRequest, RelayError> {
        parse_request(Endpoint::ChatCompletions, v.to_string().as_bytes())
    }

    fn param_of(v: Value) -> (String, Option<String>) {
        let e = parse(v).unwrap_err();
        (e.code().to_string(), e.param().map(str::to_string))
    }

    #[test]
    fn accepts_a_plain_chat_request_and_keeps_unknown_fields() {
        let r = parse(
            json!({"model":"m","messages":[{"role":"user","content":"hello"}],
            "x_custom":{"a":1},"stream":true,"stream_options":{"include_usage":true}}),
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream && r.include_usage);
        assert_eq!(r.prompt_bytes, 5);
        assert_eq!(r.body["x_custom"], json!({"a":1}));
    }

    #[test]
    fn names_the_bad_field() {
        let user = json!({"role":"user","content":"x"});
        assert_eq!(
            param_of(json!({"messages":[user]})),
            ("missing_required_parameter".into(), Some("model".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m"})),
            ("missing_required_parameter".into(), Some("messages".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":"hi"})),
            ("invalid_type".into(), Some("messages".into()))
        );
        assert_eq!(
            param_of(json!({"model":7,"messages":[user]})),
            ("invalid_type".into(), Some("model".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[user, {"role":5,"content":"x"}]})),
            ("invalid_type".into(), Some("messages[1].role".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[{"role":"wizard","content":"x"}]})),
            ("invalid_value".into(), Some("messages[0].role".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[{"role":"user"}]})),
            (
                "missing_required_parameter".into(),
                Some("messages[0].content".into())
            )
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[{"role":"tool","content":"r"}]})),
            (
                "missing_required_parameter".into(),
                Some("messages[0].tool_call_id".into())
            )
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]})),
            (
                "missing_required_parameter".into(),
                Some("messages[0].content[0].type".into())
            )
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[]})),
            ("invalid_value".into(), Some("messages".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[user],"stream":"yes"})),
            ("invalid_type".into(), Some("stream".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[user],"temperature":3})),
            ("invalid_value".into(), Some("temperature".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[user],"max_tokens":0})),
            ("invalid_value".into(), Some("max_tokens".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[user],"max_tokens":-1})),
            ("invalid_type".into(), Some("max_tokens".into()))
        );
        assert_eq!(
            param_of(json!({"model":"m","messages":[user],"stream_options":{"include_usage":1}})),
            (
                "invalid_type".into(),
                Some("stream_options.include_usage".into())
            )
        );
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        for body in [&b"{"[..], b"[1,2]", b"", b"\"x\""] {
            let e = parse_request(Endpoint::ChatCompletions, body).unwrap_err();
            assert_eq!(e.code(), "invalid_json", "{body:?}");
        }
    }

    #[test]
    fn assistant_tool_call_messages_may_omit_content() {
        parse(json!({"model":"m","messages":[{"role":"assistant","tool_calls":[]},{"role":"tool","tool_call_id":"c","content":"r"}]})).unwrap();
    }

    #[test]
    fn completions_and_embeddings_need_their_input() {
        let e = parse_request(Endpoint::Embeddings, br#"{"model":"e"}"#).unwrap_err();
        assert_eq!(e.param(), Some("input"));
        let e = parse_request(
            Endpoint::Embeddings,
            br#"{"model":"e","input":"x","stream":true}"#,
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("stream"));
        let r = parse_request(
            Endpoint::Completions,
            br#"{"model":"c","prompt":["ab","cd"]}"#,
        )
        .unwrap();
        assert_eq!(r.prompt_bytes, 4);
        let e =
            parse_request(Endpoint::Completions, br#"{"model":"c","prompt":[{}]}"#).unwrap_err();
        assert_eq!(e.param(), Some("prompt[0]"));
    }

    #[test]
    fn upstream_body_rewrites_model_and_asks_for_usage() {
        let r = parse(json!({"model":"public","messages":[{"role":"user","content":"x"}],"stream":true,"seed":7})).unwrap();
        let body: Value = serde_json::from_slice(&upstream_body(&r, "up-1", true)).unwrap();
        assert_eq!(body["model"], "up-1");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["seed"], 7);
        let body: Value = serde_json::from_slice(&upstream_body(&r, "up-1", false)).unwrap();
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn reply_summary_reads_usage_and_text() {
        let s = summarize_reply(br#"{"choices":[{"message":{"role":"assistant","content":"abcd"}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#);
        assert_eq!(
            s.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2
            })
        );
        assert_eq!(s.completion_bytes, 4);
        let s = summarize_reply(br#"{"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#);
        assert_eq!(
            s.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 0
            })
        );
        assert_eq!(summarize_reply(b"not json"), ReplySummary::default());
    }

    #[test]
    fn error_bodies_parse_leniently() {
        let e = parse_error_body(br#"{"error":{"message":"bad","type":"invalid_request_error","param":"x","code":null}}"#);
        assert_eq!(
            (e.message.as_deref(), e.param.as_deref(), e.code),
            (Some("bad"), Some("x"), None)
        );
        assert_eq!(parse_error_body(b"<html>"), UpstreamErrorBody::default());
    }

    const STREAM: &[u8] = include_bytes!("../../tests/fixtures/openai/stream_text_usage.sse");

    fn run(strip: bool, pieces: &[&[u8]]) -> (String, StreamPassThrough) {
        let mut p = StreamPassThrough::new(strip);
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        (String::from_utf8(out).unwrap(), p)
    }

    #[test]
    fn pass_through_keeps_usage_when_asked() {
        let (out, p) = run(false, &[STREAM]);
        assert!(p.saw_done());
        let usage = p.usage().expect("fixture has a usage chunk");
        assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
        assert!(out.contains("\"usage\":{"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn pass_through_strips_usage_it_asked_for() {
        let (out, p) = run(true, &[STREAM]);
        assert!(p.usage().is_some());
        assert!(!out.contains("\"usage\":{"), "{out}");
        assert!(!out.contains("\"choices\":[]"));
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn pass_through_is_independent_of_chunking() {
        let (whole, _) = run(true, &[STREAM]);
        for cut in 0..=STREAM.len() {
            let (split, p) = run(true, &[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(split, whole, "cut at {cut}");
            assert!(p.usage().is_some());
        }
    }

    #[test]
    fn usage_inside_a_content_chunk_is_nulled_not_dropped() {
        let s = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        let (out, p) = run(true, &[s]);
        assert!(out.contains("\"content\":\"hi\""));
        assert!(out.contains("\"usage\":null"));
        assert_eq!(
            p.usage(),
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 1
            })
        );
    }

    #[test]
    fn counts_generated_text_when_no_usage_comes() {
        let s = b"data: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n";
        let (_, p) = run(true, &[s]);
        assert_eq!(
            (p.usage(), p.completion_bytes(), p.saw_done()),
            (None, 6, false)
        );
    }
}
