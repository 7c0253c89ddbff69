//! What the relay and a limiter Durable Object say to each other: the calls (reserve, settle,
//! release, lease, peek, revoke), the decisions and lease grants the object answers with, and
//! which limit a refusal hit. All JSON over the object's fetch.

use serde::{Deserialize, Serialize};

use crate::governance::budget::{Budget, BudgetStatus};
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
        }
    }
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

/// A tenant's budget as its limiter applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCtx {
    pub tenant_id: String,
    pub budget: Budget,
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
    },
    /// Replace a reservation (or a lease) by what it used.
    Settle {
        id: String,
        used: Ask,
        limits: Limits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetCtx>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LimiterReply {
    Lease(LeaseDecision),
    Decision(Decision),
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodView {
    pub start_ms: i64,
    pub end_ms: i64,
    pub requests: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}
