//! What a request may do, as read for its key in one query: the key's and tenant's state,
//! allowlists, limits, access rules and tenant settings. The relay caches it per isolate; every
//! decision about a request starts from it.

use serde::{Deserialize, Serialize};

use crate::governance::budget::Budget;
use crate::governance::limits::Limits;
use crate::governance::rules::AccessRules;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    Disabled,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
        }
    }
}

/// Tenant options stored together (one JSON column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    /// How long a lease an isolate spends without a Durable Object call lasts (ms); `None`:
    /// `DEFAULT_LEASE_MS`.
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// Every request of the tenant is decided at its limiters (exact per-minute buckets,
    /// revocation at once everywhere) instead of from leases: one limiter round trip a request.
    #[serde(default, skip_serializing_if = "crate::governance::limits::is_false")]
    pub strict_limits: bool,
    #[serde(default)]
    pub budget: Option<Budget>,
    /// The tenant's price ratio in parts per million (1 000 000 = list price): every cost of
    /// this tenant is multiplied by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_multiplier_ppm: Option<u64>,
    /// Opt-in: keep each request's and reply's body, redacted (README "Body logging").
    #[serde(default, skip_serializing_if = "crate::governance::limits::is_false")]
    pub log_bodies: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Active,
    Revoked,
}

/// What authenticating a request needs about its key and tenant, read in one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: String,
    pub tenant_id: String,
    pub key_status: KeyStatus,
    pub tenant_status: Status,
    pub key_models: Option<Vec<String>>,
    pub tenant_models: Option<Vec<String>>,
    pub expires_at: Option<i64>,
    pub key_limits: Limits,
    pub tenant_limits: Limits,
    pub key_rules: AccessRules,
    pub tenant_rules: AccessRules,
    pub jurisdiction: Option<String>,
    pub settings: TenantSettings,
    pub key_cache_ttl_s: Option<u32>,
}
