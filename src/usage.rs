//! Token usage as the relay records it, and the one row written per request.
//!
//! Token counts are unsigned and added with saturation, so no arithmetic on upstream numbers can
//! make a count negative or wrap. When an upstream reports nothing the relay estimates from the
//! text it saw and says so in `usage_source`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The upstream's own counts.
    Reported,
    /// Counted by the relay from the text, because the upstream sent no usage.
    Estimated,
    /// Nothing was produced (rejected before or by the upstream).
    None,
}

impl UsageSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
        }
    }
}

/// Tokens for `bytes` of UTF-8 text by the usual rule of thumb (about four bytes a token for
/// English). Only used when an upstream reports nothing, and marked as an estimate.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Decide the usage to record: the upstream's when it reported any, else an estimate from the
/// prompt and completion sizes, else nothing.
pub fn settle(
    reported: Option<Usage>,
    prompt_bytes: usize,
    completion_bytes: usize,
    produced: bool,
) -> (Usage, UsageSource) {
    match reported {
        Some(u) => (u, UsageSource::Reported),
        None if produced => (
            Usage {
                prompt_tokens: estimate_tokens(prompt_bytes),
                completion_tokens: estimate_tokens(completion_bytes),
            },
            UsageSource::Estimated,
        ),
        None => (Usage::default(), UsageSource::None),
    }
}

/// One row of the D1 `usage` table (migrations/0001_core.sql).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub request_id: String,
    pub created_at: i64,
    pub tenant_id: String,
    pub key_id: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub upstream_model: Option<String>,
    pub channel_id: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub error_code: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub usage_source: String,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
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
    fn reported_usage_wins_over_estimates() {
        let u = Usage {
            prompt_tokens: 7,
            completion_tokens: 3,
        };
        assert_eq!(
            settle(Some(u), 1000, 1000, true),
            (u, UsageSource::Reported)
        );
        assert_eq!(
            settle(None, 40, 8, true),
            (
                Usage {
                    prompt_tokens: 10,
                    completion_tokens: 2
                },
                UsageSource::Estimated
            )
        );
        assert_eq!(
            settle(None, 40, 8, false),
            (Usage::default(), UsageSource::None)
        );
    }

    #[test]
    fn totals_saturate() {
        let u = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: 5,
        };
        assert_eq!(u.total_tokens(), u64::MAX);
    }
}
