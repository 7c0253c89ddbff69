//! The neutral chat model every wire format translates to and from. Inbound formats (OpenAI
//! chat, Anthropic Messages) decode into it; upstream formats (Anthropic, Gemini, Bedrock, …)
//! encode from it and decode their replies and streams back into it.
//!
//! It holds what at least two formats can express. Anything a format cannot carry is reported
//! as a [`Drop`] by the encoder, so the relay can tell the client (a response header) or refuse
//! (strict mode) instead of losing it silently.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// Instructions given mid-conversation (an OpenAI `system`/`developer` message after the
    /// first turn; Claude Code's `system` messages inside `messages`). Leading instructions are
    /// `ChatRequest::system` instead.
    System,
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
    /// System instructions given before the conversation, in order (OpenAI's leading
    /// `system`/`developer` messages, Anthropic's `system`). Later ones are `Role::System`
    /// messages in `messages`, where they were given.
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

impl ChatRequest {
    /// The system text for a format that keeps it apart from the conversation: the leading
    /// instructions, then each mid-conversation system message, in order. A system message that
    /// stood inside the conversation loses its place there, and is reported as approximated.
    pub fn system_apart(&self, drops: &mut Drops) -> Vec<String> {
        let mut system = self.system.clone();
        for message in self.messages.iter().filter(|m| m.role == Role::System) {
            drops.approximated("messages.system");
            system.push(message.joined_text());
        }
        system
    }
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

/// Tokens of one request in one model for every provider. `prompt_tokens` counts *all* input
/// tokens, cached or not (OpenAI's rule); `completion_tokens` all output, reasoning included.
/// The detail fields are parts of those totals, never additions to them — constructors per
/// provider convention keep that so, which is what makes double counting impossible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Input tokens read from a prompt cache (part of `prompt_tokens`).
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to a prompt cache (part of `prompt_tokens`).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Output tokens spent on reasoning (part of `completion_tokens`).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            ..Usage::default()
        }
    }

    /// OpenAI's convention: cached tokens are inside `prompt_tokens`, reasoning inside
    /// `completion_tokens`. Details larger than their total are clamped (a provider bug must
    /// not create tokens).
    pub fn from_inclusive(
        prompt: u64,
        completion: u64,
        cache_read: u64,
        cache_write: u64,
        reasoning: u64,
    ) -> Usage {
        let cache_read = cache_read.min(prompt);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write.min(prompt - cache_read),
            reasoning_tokens: reasoning.min(completion),
        }
    }

    /// Anthropic's convention: `input_tokens` excludes cache reads and writes, which are
    /// reported beside it; the total input is their sum.
    pub fn from_exclusive(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
        Usage {
            prompt_tokens: input.saturating_add(cache_read).saturating_add(cache_write),
            completion_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: 0,
        }
    }

    /// Input tokens that were neither read from nor written to a cache.
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cache_read_tokens)
            .saturating_sub(self.cache_write_tokens)
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Tokens for `bytes` of UTF-8 text by the usual rule of thumb (about four bytes a token for
/// English). Only used when an upstream reports nothing, and marked as an estimate.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_round_up() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
        assert_eq!(estimate_tokens(9), 3);
    }

    #[test]
    fn totals_saturate() {
        let u = Usage::new(u64::MAX, 5);
        assert_eq!(u.total_tokens(), u64::MAX);
    }

    #[test]
    fn provider_conventions_meet_in_one_model() {
        // OpenAI: 100 prompt tokens of which 60 cached; 40 output of which 10 reasoning.
        let openai = Usage::from_inclusive(100, 40, 60, 0, 10);
        // Anthropic: 40 uncached input + 60 read from cache.
        let anthropic = Usage::from_exclusive(40, 40, 60, 0);
        assert_eq!(openai.prompt_tokens, anthropic.prompt_tokens);
        assert_eq!(openai.cache_read_tokens, anthropic.cache_read_tokens);
        assert_eq!(openai.uncached_prompt_tokens(), 40);
        assert_eq!(anthropic.uncached_prompt_tokens(), 40);
    }

    #[test]
    fn details_never_exceed_their_totals() {
        let u = Usage::from_inclusive(10, 5, 50, 50, 9);
        assert_eq!(
            (
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.reasoning_tokens
            ),
            (10, 0, 5)
        );
        assert_eq!(u.uncached_prompt_tokens(), 0);
        let u = Usage::from_exclusive(u64::MAX, 1, 5, 5);
        assert_eq!(u.prompt_tokens, u64::MAX);
    }
}
