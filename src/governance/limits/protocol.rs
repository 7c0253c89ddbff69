//! What the relay and a limiter Durable Object say to each other: the calls (reserve, settle,
//! release, lease, peek, revoke, and a prepaid tenant's top-up and credit view), the decisions
//! and lease grants the object answers with, and which limit a refusal hit. All JSON over the
//! object's fetch.

use serde::{Deserialize, Serialize};

use crate::error::RelayError;
use crate::governance::budget::{Budget, BudgetStatus};
use crate::governance::credits::{CreditCtx, CreditEntry, CreditView, TopUpOutcome};
use crate::governance::limits::{is_false, Ask, Limits, RateInfo};
use crate::support::calendar::Period;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "limit")]
pub enum LimitHit {
    Revoked,
    Concurrency,
    RequestsPerMinute,
    TokensPerMinute,
    Quota {
        period: Period,
        measure: Measure,
    },
    /// The tenant's hard budget.
    Budget {
        period: Period,
    },
    /// A prepaid tenant's balance does not cover the request's worst-case cost.
    Credit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Requests,
    Tokens,
    Cost,
}

impl LimitHit {
    pub fn describe(&self) -> String {
        match self {
            LimitHit::Revoked => "revoked".into(),
            LimitHit::Concurrency => "concurrent requests".into(),
            LimitHit::RequestsPerMinute => "requests per minute".into(),
            LimitHit::TokensPerMinute => "tokens per minute".into(),
            LimitHit::Quota { period, measure } => {
                let what = match measure {
                    Measure::Requests => "requests",
                    Measure::Tokens => "tokens",
                    Measure::Cost => "spend",
                };
                format!("{what} per {}", period.name())
            }
            LimitHit::Budget { period } => format!("budget per {}", period.name()),
            LimitHit::Credit => "prepaid credit".into(),
        }
    }
}

/// The error a refused decision is answered with; `scope` says whose limiter refused ("key"
/// or "tenant"). `None` for an admitted request.
pub fn refusal_error(d: &Decision, scope: &'static str) -> Option<RelayError> {
    if d.admitted {
        return None;
    }
    Some(match d.hit {
        Some(LimitHit::Revoked) => RelayError::KeyRevoked,
        Some(LimitHit::Budget { period }) => RelayError::BudgetExceeded {
            period: period.name(),
            retry_after_ms: d.retry_after_ms,
        },
        Some(LimitHit::Credit) => RelayError::InsufficientBalance,
        hit @ (None
        | Some(LimitHit::Concurrency)
        | Some(LimitHit::RequestsPerMinute)
        | Some(LimitHit::TokensPerMinute)
        | Some(LimitHit::Quota { .. })) => RelayError::LimitExceeded {
            limit: hit.map_or_else(|| "requests".to_string(), |h| h.describe()),
            scope,
            quota: matches!(hit, Some(LimitHit::Quota { .. })),
            retry_after_ms: d.retry_after_ms,
            rate_headers: crate::governance::limits::rate_headers(&d.rate),
        },
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub admitted: bool,
    pub hit: Option<LimitHit>,
    /// When a refused request may succeed (for `Retry-After`).
    pub retry_after_ms: Option<u64>,
    pub rate: RateInfo,
    /// Where the tenant stands against its budget, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
}

/// A tenant's budget as its limiter applies it; a tag budget (`ledger::tags`) names its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCtx {
    pub tenant_id: String,
    pub budget: Budget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Capacity an isolate may spend on its own until `expires_ms`, taken from a limiter in one
/// call: `None` means that measure is unlimited for this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub requests: u64,
    pub tokens: Option<u64>,
    pub cost_micros: Option<u64>,
    pub expires_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDecision {
    pub decision: Decision,
    pub grant: Option<LeaseGrant>,
}

/// A call to a limiter Durable Object (JSON over its fetch).
/// A finished lease handed back: its id and what its requests used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReturn {
    pub id: String,
    pub used: Ask,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LimiterCall {
    Reserve {
        id: String,
        ask: Ask,
        limits: Limits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetCtx>,
        #[serde(default, skip_serializing_if = "is_false")]
        downgraded: bool,
        /// A prepaid tenant: `ask.cost_micros` is held against its balance too.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<CreditCtx>,
    },
    /// Take capacity for an isolate to spend on its own (lease mode).
    Lease {
        id: String,
        want: Ask,
        need: Ask,
        lease_ms: i64,
        limits: Limits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetCtx>,
        #[serde(default, skip_serializing_if = "is_false")]
        downgraded: bool,
        /// A prepaid tenant: the lease's spend is held against its balance.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<CreditCtx>,
        /// Leases of this isolate that ended, settled with what they used before the new one
        /// is granted — so what they did not use is free again for this very grant, even when
        /// every request since was refused.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        returns: Vec<LeaseReturn>,
    },
    /// Replace a reservation (or a lease) by what it used.
    Settle {
        id: String,
        used: Ask,
        limits: Limits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetCtx>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<CreditCtx>,
    },
    /// Undo a reservation another limiter made pointless.
    Release {
        id: String,
        limits: Limits,
    },
    Revoke,
    /// Current usage, for the admin API.
    Peek {
        limits: Limits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetCtx>,
    },
    /// Add prepaid credit (a tenant's limiter); answered with a `TopUpReply`.
    TopUp {
        entry: CreditEntry,
        credit: CreditCtx,
    },
    /// The `GET …/credits` view with the last `last` entries; answered with a `CreditView`.
    Credits {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<usize>,
    },
}

/// What a top-up did: `Duplicate` for a retried call, and the entry as applied (with the
/// balance after it) when it is still kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpReply {
    pub outcome: TopUpOutcome,
    pub entry: Option<CreditEntry>,
    pub credit: CreditView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LimiterReply {
    Lease(LeaseDecision),
    Decision(Decision),
    // Before `Rate`, whose fields are all optional and would read any object.
    TopUp(TopUpReply),
    Credit(CreditView),
    Rate(RateInfo),
    Usage(UsageView),
}

/// What a limiter holds now, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageView {
    pub revoked: bool,
    /// Requests (and leases) holding a reservation now.
    pub in_flight: usize,
    pub day: PeriodView,
    pub week: PeriodView,
    pub month: PeriodView,
    pub rate: RateInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// Budget webhooks waiting to be delivered.
    #[serde(default)]
    pub pending_alerts: usize,
    /// A prepaid tenant's balance (entries are left to `Credits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<CreditView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodView {
    pub start_ms: i64,
    pub end_ms: i64,
    pub requests: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}
