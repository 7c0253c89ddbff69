//! The configuration objects as the admin API shows them: tenants, keys and channels, never
//! with a secret in them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::governance::grant::{KeyStatus, Status, TenantSettings};
use crate::governance::limits::Limits;
use crate::governance::rules::AccessRules;
use crate::routing::breaker::BreakerConfig;
use crate::routing::channel::{key_fingerprint, Channel};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub models: Option<Vec<String>>,
    /// Limits over all the tenant's keys together (one limiter per tenant).
    #[serde(default)]
    pub limits: Limits,
    /// Access rules every key of the tenant must also pass.
    #[serde(default)]
    pub rules: AccessRules,
    /// Where this tenant's limiters live and which channels may serve it (`eu`); fixed at
    /// creation, since its counters live in objects created in that jurisdiction.
    #[serde(default)]
    pub jurisdiction: Option<String>,
    #[serde(default, flatten)]
    pub settings: TenantSettings,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Durable Object jurisdictions Cloudflare offers.
pub const JURISDICTIONS: &[&str] = &["eu", "fedramp"];

/// Lease lengths accepted, in ms: long enough to matter, short enough that a revocation or a
/// limit change reaches every isolate soon.
pub const LEASE_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

/// A relay key as listed: everything but the plaintext and the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub prefix: String,
    pub status: KeyStatus,
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rules: AccessRules,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Set when the key was rotated: the key that replaced it (this one stops at `expires_at`).
    #[serde(default)]
    pub replaced_by: Option<String>,
    /// Response cache opt-in: replies are cached this many seconds unless a request says not.
    #[serde(default)]
    pub cache_ttl_s: Option<u32>,
}

/// A channel as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    pub provider: &'static str,
    pub base_url: String,
    pub api_key_count: usize,
    /// How the health route and key re-enabling name the upstream keys (a hash prefix,
    /// never the key).
    pub key_fingerprints: Vec<String>,
    pub models: Vec<String>,
    pub status: Status,
    pub timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    pub region: Option<String>,
    pub breaker: Option<BreakerConfig>,
    pub options: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ChannelView {
    pub fn of(channel: &Channel) -> ChannelView {
        ChannelView {
            id: channel.id.clone(),
            name: channel.name.clone(),
            provider: channel.provider.as_str(),
            base_url: channel.base_url.clone(),
            api_key_count: channel.api_keys.len(),
            key_fingerprints: channel
                .api_keys
                .iter()
                .map(|k| key_fingerprint(k))
                .collect(),
            models: channel.models.clone(),
            status: channel.status,
            timeout_ms: channel.timeout_ms,
            total_timeout_ms: channel.total_timeout_ms,
            region: channel.region.clone(),
            breaker: channel.breaker,
            options: channel.options.clone(),
            created_at: channel.created_at,
            updated_at: channel.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;

    #[test]
    fn views_hide_upstream_keys() {
        let v = serde_json::to_string(&ChannelView::of(&Channel {
            api_keys: vec!["sk-secret".into()],
            ..Channel::for_tests("c", ProviderKind::OpenAi, "https://api.example.com/v1")
        }))
        .unwrap();
        assert!(!v.contains("sk-secret"));
        assert!(v.contains("\"api_key_count\":1"));
    }
}
