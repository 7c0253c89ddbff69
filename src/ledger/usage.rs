//! Where a request's recorded token counts come from (`UsageSource`), how billing sees them
//! (`Provenance`), and settling on the counts to record. The row they go in is `ledger::row`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
