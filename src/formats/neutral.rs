//! The neutral chat model every wire format translates to and from. Inbound formats (OpenAI
//! chat, Anthropic Messages) decode into it; upstream formats (Anthropic, Gemini, Bedrock, …)
//! encode from it and decode their replies and streams back into it.
//!
//! It holds what at least two formats can express. Anything a format cannot carry is reported
//! as a [`Drop`] by the encoder, so the relay can tell the client (a response header) or refuse
//! (strict mode) instead of losing it silently.

use serde_json::{Map, Value};

use crate::ledger::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// The result of a tool call, answering `tool_call_id`.
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Url(String),
    Base64 { media_type: String, data: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(ImageSource),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as produced (it may be invalid JSON mid-stream).
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Assistant messages: the tool calls it made.
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call this answers.
    pub tool_call_id: Option<String>,
    /// Tool messages: the result was an error (Anthropic `is_error`).
    pub is_error: bool,
    /// Assistant messages: visible reasoning (OpenAI-compatible `reasoning_content`,
    /// Anthropic `thinking`).
    pub reasoning: Option<String>,
    /// Anthropic's signature of a thinking block, needed to send it back.
    pub reasoning_signature: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: Vec<Part>) -> Message {
        Message {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
            is_error: false,
            reasoning: None,
            reasoning_signature: None,
        }
    }

    pub fn text(role: Role, text: &str) -> Message {
        Message::new(role, vec![Part::Text(text.to_string())])
    }

    /// All text parts joined (for formats whose field is a single string).
    pub fn joined_text(&self) -> String {
        let texts: Vec<&str> = self
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::Image(_) => None,
            })
            .collect();
        texts.join("")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the parameters.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Must call some tool.
    Required,
    /// Must call this tool.
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: bool,
    },
}

/// Extended thinking / reasoning effort requested.
#[derive(Debug, Clone, PartialEq)]
pub enum Reasoning {
    /// A token budget (Anthropic `thinking.budget_tokens`, Gemini `thinkingBudget`).
    Budget(u64),
    /// An effort level (OpenAI `reasoning_effort`: low, medium, high).
    Effort(String),
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The upstream model name (already resolved by the relay).
    pub model: String,
    /// System instructions, in order (OpenAI `system`/`developer` messages, Anthropic `system`).
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning: Option<Reasoning>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    /// End-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    pub stream: bool,
    /// Fields of the inbound request no neutral field holds; reported as dropped when the
    /// upstream's format differs from the inbound one.
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// A stop sequence matched (OpenAI reports this as `stop`).
    StopSequence,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    pub created_s: i64,
    pub message: Message,
    pub finish_reason: Option<FinishReason>,
    /// The stop sequence that ended it, where the upstream says.
    pub stop_sequence: Option<String>,
    pub usage: Option<Usage>,
}

/// One step of a streamed reply, in upstream order. Indices are per kind: `TextDelta` has no
/// index (one text stream per choice), tool calls are numbered from 0 in the order they start.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
    },
    TextDelta(String),
    ReasoningDelta(String),
    ReasoningSignature(String),
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: usize,
        arguments: String,
    },
    Finish {
        reason: FinishReason,
        stop_sequence: Option<String>,
    },
    /// Usage so far; a later one replaces an earlier one.
    Usage(Usage),
    /// The upstream reported an error mid-stream.
    Error {
        status: u16,
        message: String,
    },
}

/// A request field that could not be carried to the upstream, or only approximately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    pub field: String,
    pub approximated: bool,
}

impl Drop {
    pub fn dropped(field: &str) -> Drop {
        Drop {
            field: field.to_string(),
            approximated: false,
        }
    }

    pub fn approximated(field: &str) -> Drop {
        Drop {
            field: field.to_string(),
            approximated: true,
        }
    }
}

/// What an encoder could not carry, collected while it works: each field reported once.
#[derive(Debug, Default)]
pub struct Drops(pub Vec<Drop>);

impl Drops {
    pub fn push(&mut self, drop: Drop) {
        if !self.0.contains(&drop) {
            self.0.push(drop);
        }
    }

    pub fn dropped(&mut self, field: &str) {
        self.push(Drop::dropped(field));
    }

    pub fn approximated(&mut self, field: &str) {
        self.push(Drop::approximated(field));
    }

    pub fn into_vec(self) -> Vec<Drop> {
        self.0
    }
}
