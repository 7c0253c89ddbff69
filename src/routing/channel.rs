//! A channel: one upstream endpoint — its provider, base URL, pool of upstream keys, the
//! upstream models it serves, where it runs, its timeouts and breaker settings.

use std::collections::BTreeMap;

use crate::governance::grant::Status;
use crate::providers::endpoint::Upstream;
use crate::providers::ProviderKind;
use crate::routing::breaker::BreakerConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub provider: ProviderKind,
    pub base_url: String,
    /// Secret: never serialised into a reply.
    pub api_keys: Vec<String>,
    pub models: Vec<String>,
    pub status: Status,
    pub timeout_ms: Option<u64>,
    /// Longest a whole exchange may take, a stream included (`timeout_ms` bounds the wait for
    /// headers and each pause between chunks).
    pub total_timeout_ms: Option<u64>,
    /// Where the upstream runs (a region name of `routing::geo::REGIONS`): routing prefers the
    /// nearest, and a tenant pinned to a jurisdiction uses only channels in it.
    pub region: Option<String>,
    /// When its circuit breakers open and for how long (`None`: the defaults).
    pub breaker: Option<BreakerConfig>,
    /// Provider-specific settings (e.g. Azure's `api_version`); only known names are accepted.
    pub options: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An upstream key's public name: the first 16 hex digits of its SHA-256.
pub fn key_fingerprint(key: &str) -> String {
    crate::governance::auth::hash_key(key)[..16].to_string()
}

impl Channel {
    /// What planning an upstream request needs of this channel.
    pub fn upstream(&self) -> Upstream<'_> {
        Upstream {
            provider: self.provider,
            base_url: &self.base_url,
            options: &self.options,
        }
    }

    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    pub fn serves(&self, upstream_model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == upstream_model)
    }
}

#[cfg(test)]
impl Channel {
    /// An active channel with one upstream key (`up-key`) and defaults elsewhere.
    pub fn for_tests(id: &str, provider: ProviderKind, base_url: &str) -> Channel {
        Channel {
            id: id.into(),
            name: id.into(),
            provider,
            base_url: base_url.into(),
            api_keys: vec!["up-key".into()],
            models: Vec::new(),
            status: Status::Active,
            timeout_ms: None,
            total_timeout_ms: None,
            region: None,
            breaker: None,
            options: BTreeMap::new(),
            created_at: 0,
            updated_at: 0,
        }
    }
}
