//! Claude's request rules, shared by every API that serves Claude — Anthropic's Messages API
//! and Bedrock's Converse: the required `max_tokens`, sampling ranges and what thinking
//! restricts, OpenAI-only parameters neither has, and strictly alternating user/assistant turns.

use serde_json::{json, Value};

use crate::formats::neutral::{ChatRequest, Drops};

/// Anthropic requires `max_tokens`; this is used when the client gave none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic rejects a thinking budget below this.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// With thinking enabled Anthropic accepts `top_p` only from here to 1.
pub const MIN_TOP_P_WITH_THINKING: f64 = 0.95;

/// Stands in for the user turn Anthropic requires before a conversation that starts with the
/// assistant; it must be non-empty text.
pub const CONTINUED: &str = "(continued)";

// ---- Anthropic as an upstream: the request ---------------------------------------------------

/// OpenAI's sampling parameters that neither Anthropic nor Converse has: reported when set
/// to anything but their neutral value.
pub fn drop_openai_only_sampling(req: &ChatRequest, drops: &mut Drops) {
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
pub fn claude_sampling(
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

/// Encoded messages `(role, tool results, other blocks)` as the alternating user/assistant
/// turns Anthropic requires — and Bedrock's Converse, which follows the same rules:
/// consecutive same-role messages merge with tool results first in their turn, empty ones
/// vanish, and a conversation that starts with the assistant gets a placeholder user turn,
/// reported so the client knows its conversation was touched.
pub fn alternate_turns(
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
