//! Token usage as the relay records it, and the one row written per request.
//!
//! Token counts are unsigned and added with saturation, so no arithmetic on upstream numbers can
//! make a count negative or wrap. When an upstream reports nothing the relay estimates from the
//! text it saw and says so in `usage_source`.

use serde::{Deserialize, Serialize};

use crate::formats::neutral::{estimate_tokens, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The upstream's own counts.
    Reported,
    /// Counted by the relay from the text, because the upstream sent no usage.
    Estimated,
    /// Nothing was produced (rejected before or by the upstream).
    None,
    /// Answered from the response cache: no upstream call, no tokens billed.
    Cache,
}

impl UsageSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
            UsageSource::Cache => "cache",
        }
    }
}

/// How a row's usage stands for billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// The upstream's own counts, for a request that completed.
    Reported,
    /// The relay counted, because the upstream sent no usage.
    Estimated,
    /// The stream broke or the client went away: what was produced until then.
    Partial,
    /// Nothing is charged: refused, failed upstream before producing anything, or a cache hit.
    NotBilled,
}

impl Provenance {
    pub fn as_str(&self) -> &'static str {
        match self {
            Provenance::Reported => "reported",
            Provenance::Estimated => "estimated",
            Provenance::Partial => "partial",
            Provenance::NotBilled => "not_billed",
        }
    }

    /// The provenance of a request's usage: `complete` is false for a stream that broke or
    /// whose client left.
    pub fn of(source: UsageSource, complete: bool) -> Provenance {
        match source {
            UsageSource::None | UsageSource::Cache => Provenance::NotBilled,
            _ if !complete => Provenance::Partial,
            UsageSource::Reported => Provenance::Reported,
            UsageSource::Estimated => Provenance::Estimated,
        }
    }

    pub fn billed(&self) -> bool {
        *self != Provenance::NotBilled
    }
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
            Usage::new(
                estimate_tokens(prompt_bytes),
                estimate_tokens(completion_bytes),
            ),
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
    /// Micro-units of the tenant's currency (`ledger::pricing`); 0 for an unpriced model.
    #[serde(default)]
    pub cost_micros: u64,
    /// Upstream attempts made for the request (0 when none was: refused, mock, cache hit).
    #[serde(default)]
    pub attempts: u32,
    /// A hedge raced the first attempt (one of the two was cancelled).
    #[serde(default)]
    pub hedged: bool,
    /// Billing's view of the counts: reported, estimated, partial or not_billed.
    #[serde(default = "not_billed")]
    pub provenance: String,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// The API the client used: "openai" or "anthropic".
    #[serde(default)]
    pub inbound: Option<String>,
    /// The Cloudflare data centre that served the request.
    #[serde(default)]
    pub colo: Option<String>,
    /// The fingerprint of the upstream key used (never the key).
    #[serde(default)]
    pub upstream_key: Option<String>,
    /// Each attempt, when there was more than one (written to `usage_attempts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_log: Vec<AttemptRow>,
    /// The redacted request and reply, for a tenant that opted in (`request_bodies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies: Option<Bodies>,
    pub usage_source: String,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
}

/// A request's and reply's bodies as logged: redacted, and cut at `BODY_LOG_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bodies {
    pub request: Option<String>,
    pub response: Option<String>,
}

/// How much of each body is kept.
pub const BODY_LOG_BYTES: usize = 64 * 1024;

/// Text fit for the body log: cut at `BODY_LOG_BYTES` on a character boundary (marked), then
/// redacted — cut first, so redaction's cost is bounded too.
pub fn loggable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(BODY_LOG_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = crate::ledger::redact::redact(&text[..end]);
    if end < text.len() {
        out.push_str(" [TRUNCATED]");
    }
    out
}

/// One upstream attempt of a request, linked to its usage row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub request_id: String,
    /// 1 for the first attempt.
    pub n: u32,
    pub channel_id: String,
    pub upstream_model: String,
    pub upstream_key: Option<String>,
    /// The upstream's status; `None` when it never answered.
    pub status: Option<u16>,
    pub error_code: Option<String>,
    /// `served`, `failed`, or `cancelled` (a hedge that lost).
    pub outcome: String,
    pub at: i64,
}

fn not_billed() -> String {
    Provenance::NotBilled.as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_bodies_are_cut_then_redacted() {
        let body = br#"{"messages":[{"content":"mail bob@example.com, key sk-abcdefghijklmnopqrstuvwxyz"}]}"#;
        let logged = loggable(body);
        assert!(!logged.contains("bob@example.com"));
        assert!(!logged.contains("sk-abcdefghijklmnopqrstuvwxyz"));
        let long = "é".repeat(BODY_LOG_BYTES);
        let cut = loggable(long.as_bytes());
        assert!(cut.ends_with(" [TRUNCATED]"));
        assert!(cut.len() <= BODY_LOG_BYTES + 12);
    }

    #[test]
    fn provenance_follows_source_and_completion() {
        use Provenance::*;
        assert_eq!(Provenance::of(UsageSource::Reported, true), Reported);
        assert_eq!(Provenance::of(UsageSource::Estimated, true), Estimated);
        assert_eq!(Provenance::of(UsageSource::Reported, false), Partial);
        assert_eq!(Provenance::of(UsageSource::Estimated, false), Partial);
        assert_eq!(Provenance::of(UsageSource::None, true), NotBilled);
        assert_eq!(Provenance::of(UsageSource::None, false), NotBilled);
        assert_eq!(Provenance::of(UsageSource::Cache, true), NotBilled);
        assert!(!NotBilled.billed() && Partial.billed());
    }

    #[test]
    fn reported_usage_wins_over_estimates() {
        let u = Usage::new(7, 3);
        assert_eq!(
            settle(Some(u), 1000, 1000, true),
            (u, UsageSource::Reported)
        );
        assert_eq!(
            settle(None, 40, 8, true),
            (Usage::new(10, 2), UsageSource::Estimated)
        );
        assert_eq!(
            settle(None, 40, 8, false),
            (Usage::default(), UsageSource::None)
        );
    }
}
