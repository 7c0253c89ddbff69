//! The validation of admin input: every body of the admin API checked field by field into the
//! typed change it asks for, with a 400 naming the first field that is wrong. Each resource's
//! PUT/PATCH also takes what its GET shows: the read-only fields of each are listed here.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::admin::config::{KeyView, Tenant, JURISDICTIONS};
use crate::admin::fields::{check_name, Fields, ReadOnly};
use crate::error::RelayError;
use crate::governance::access::{ModelGroups, GROUP_PREFIX};
use crate::governance::budget::Budget;
use crate::governance::grant::{Status, TenantSettings};
use crate::governance::limits::Limits;
use crate::governance::rules::AccessRules;
use crate::ledger::pricing::{self, Price};
use crate::providers::ProviderKind;
use crate::routing::breaker::BreakerConfig;
use crate::routing::canary;
use crate::routing::channel::Channel;
use crate::routing::model_map::{ModelMap, ModelTarget, Route};

/// A group's name: lowercase letters, digits, `-` and `_`.
pub fn check_group_name(name: &str) -> Result<(), RelayError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RelayError::invalid_value(
            "name",
            "a group name is 1 to 64 of a-z, 0-9, - and _",
        ))
    }
}

/// The body of `PUT /admin/model-groups/{name}`: `{"models": [...], "price_multiplier_ppm"?: n}`,
/// and the `name` its GET shows.
pub fn parse_group(bytes: &[u8], name: &str) -> Result<(Vec<String>, Option<u64>), RelayError> {
    let read_only = [ReadOnly::Fixed {
        field: "name",
        stored: json!(name),
        why: "must be the group's name in the path; to rename a group, put it under the new name and delete the old",
    }];
    let f = Fields::parse_write(bytes, &["models", "price_multiplier_ppm"], &read_only)?;
    let models = group_models(&f)?;
    Ok((models, f.multiplier()?.flatten()))
}

pub fn parse_group_models(bytes: &[u8]) -> Result<Vec<String>, RelayError> {
    let f = Fields::parse(bytes, &["models"])?;
    group_models(&f)
}

fn group_models(f: &Fields) -> Result<Vec<String>, RelayError> {
    let models = f
        .string_list("models")?
        .ok_or_else(|| RelayError::missing("models"))?;
    if let Some(i) = models.iter().position(|m| m.starts_with(GROUP_PREFIX)) {
        return Err(RelayError::invalid_value(
            &format!("models[{i}]"),
            "groups cannot contain groups",
        ));
    }
    Ok(models)
}

/// Every `@group` in an allowlist must name an existing group.
pub fn check_allowlist(
    models: &Option<Vec<String>>,
    groups: &ModelGroups,
) -> Result<(), RelayError> {
    for (i, entry) in models.iter().flatten().enumerate() {
        if let Some(group) = entry.strip_prefix(GROUP_PREFIX) {
            if !groups.contains_key(group) {
                return Err(RelayError::invalid_value(
                    &format!("models[{i}]"),
                    format!("no model group '{group}'"),
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub name: String,
    pub models: Option<Vec<String>>,
    pub limits: Limits,
    pub rules: AccessRules,
    pub jurisdiction: Option<String>,
    pub settings: TenantSettings,
}

/// `allow_loopback_http`: the deployment is local development (budget webhooks may then be
/// plain http to 127.0.0.1, where tests listen).
pub fn parse_new_tenant(bytes: &[u8], allow_loopback_http: bool) -> Result<NewTenant, RelayError> {
    let f = Fields::parse(
        bytes,
        &[
            "name",
            "models",
            "limits",
            "rules",
            "jurisdiction",
            "lease_ms",
            "strict_limits",
            "budget",
            "price_multiplier_ppm",
            "log_bodies",
        ],
    )?;
    Ok(NewTenant {
        name: f.required_name("name")?,
        models: f.string_list("models")?,
        limits: f.limits()?.unwrap_or_default(),
        rules: f.rules()?.unwrap_or_default(),
        jurisdiction: match f.string("jurisdiction")? {
            None => None,
            Some(j) if JURISDICTIONS.contains(&j.as_str()) => Some(j),
            Some(_) => {
                return Err(RelayError::invalid_value(
                    "jurisdiction",
                    format!("must be one of {}", JURISDICTIONS.join(", ")),
                ))
            }
        },
        settings: TenantSettings {
            lease_ms: f.lease_ms()?.flatten(),
            strict_limits: f.boolean("strict_limits")?.unwrap_or(false),
            budget: f.budget(allow_loopback_http)?.flatten(),
            price_multiplier_ppm: f.multiplier()?.flatten(),
            log_bodies: f.boolean("log_bodies")?.unwrap_or(false),
        },
    })
}

/// A partial update: `None` leaves a field alone; `models: Some(None)` clears the allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub models: Option<Option<Vec<String>>>,
    pub status: Option<Status>,
    pub limits: Option<Limits>,
    pub rules: Option<AccessRules>,
    /// `Some(None)`: back to the default lease length.
    pub lease_ms: Option<Option<u64>>,
    pub strict_limits: Option<bool>,
    /// `Some(None)` removes the budget.
    pub budget: Option<Option<Budget>>,
    /// `Some(None)`: back to list price.
    pub price_multiplier_ppm: Option<Option<u64>>,
    pub log_bodies: Option<bool>,
}

/// What a tenant's GET shows that its PATCH does not set. (`status` is set by PATCH as well
/// as by `/disable` and `/enable`.)
fn tenant_read_only(current: &Tenant) -> [ReadOnly; 4] {
    [
        ReadOnly::Fixed {
            field: "id",
            stored: json!(current.id),
            why: "is the tenant's id, which cannot change",
        },
        ReadOnly::Fixed {
            field: "jurisdiction",
            stored: json!(current.jurisdiction),
            why: "is fixed when the tenant is created (its limiters live there); create a new tenant to move",
        },
        ReadOnly::Ignored("created_at"),
        ReadOnly::Ignored("updated_at"),
    ]
}

/// A change to `current`, the tenant as stored.
pub fn parse_tenant_patch(
    bytes: &[u8],
    allow_loopback_http: bool,
    current: &Tenant,
) -> Result<TenantPatch, RelayError> {
    let f = Fields::parse_write(
        bytes,
        &[
            "name",
            "models",
            "status",
            "limits",
            "rules",
            "lease_ms",
            "strict_limits",
            "budget",
            "price_multiplier_ppm",
            "log_bodies",
        ],
        &tenant_read_only(current),
    )?;
    let name = match f.string("name")? {
        Some(n) => {
            check_name("name", &n)?;
            Some(n)
        }
        None => None,
    };
    Ok(TenantPatch {
        name,
        models: if f.has("models") {
            Some(f.string_list("models")?)
        } else {
            None
        },
        status: f.status("status")?,
        limits: f.limits()?,
        rules: f.rules()?,
        lease_ms: f.lease_ms()?,
        strict_limits: f.boolean("strict_limits")?,
        budget: f.budget(allow_loopback_http)?,
        price_multiplier_ppm: f.multiplier()?,
        log_bodies: f.boolean("log_bodies")?,
    })
}

impl TenantPatch {
    pub fn apply(&self, tenant: &mut Tenant, now_ms: i64) {
        if let Some(name) = &self.name {
            tenant.name = name.clone();
        }
        if let Some(models) = &self.models {
            tenant.models = models.clone();
        }
        if let Some(status) = self.status {
            tenant.status = status;
        }
        if let Some(limits) = &self.limits {
            tenant.limits = limits.clone();
        }
        if let Some(rules) = &self.rules {
            tenant.rules = rules.clone();
        }
        if let Some(lease_ms) = self.lease_ms {
            tenant.settings.lease_ms = lease_ms;
        }
        if let Some(strict) = self.strict_limits {
            tenant.settings.strict_limits = strict;
        }
        if let Some(budget) = &self.budget {
            tenant.settings.budget = budget.clone();
        }
        if let Some(m) = self.price_multiplier_ppm {
            tenant.settings.price_multiplier_ppm = m;
        }
        if let Some(b) = self.log_bodies {
            tenant.settings.log_bodies = b;
        }
        tenant.updated_at = now_ms;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub models: Option<Vec<String>>,
    pub expires_at: Option<i64>,
    pub limits: Limits,
    pub rules: AccessRules,
    pub cache_ttl_s: Option<u32>,
}

const KEY_FIELDS: &[&str] = &[
    "name",
    "models",
    "expires_at",
    "limits",
    "rules",
    "cache_ttl_s",
];

pub fn parse_new_key(bytes: &[u8], now_ms: i64) -> Result<NewKey, RelayError> {
    let f = Fields::parse(bytes, KEY_FIELDS)?;
    let name = f.string("name")?.unwrap_or_default();
    if name.chars().count() > 200 {
        return Err(RelayError::invalid_value(
            "name",
            "must be at most 200 characters",
        ));
    }
    let expires_at = f.integer("expires_at")?;
    if let Some(at) = expires_at {
        if at <= now_ms {
            return Err(RelayError::invalid_value(
                "expires_at",
                "must be in the future (Unix milliseconds)",
            ));
        }
    }
    Ok(NewKey {
        name,
        models: f.string_list("models")?,
        expires_at,
        limits: f.limits()?.unwrap_or_default(),
        rules: f.rules()?.unwrap_or_default(),
        cache_ttl_s: f.cache_ttl()?.flatten(),
    })
}

/// A partial update of a key: what it may use and until when, without reissuing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub models: Option<Option<Vec<String>>>,
    pub expires_at: Option<Option<i64>>,
    pub limits: Option<Limits>,
    pub rules: Option<AccessRules>,
    /// `Some(None)` turns the key's caching off.
    pub cache_ttl_s: Option<Option<u32>>,
}

/// What a key's GET shows that its PATCH does not set.
fn key_read_only(current: &KeyView) -> [ReadOnly; 7] {
    [
        ReadOnly::Fixed {
            field: "id",
            stored: json!(current.id),
            why: "is the key's id, which cannot change",
        },
        ReadOnly::Fixed {
            field: "tenant_id",
            stored: json!(current.tenant_id),
            why: "a key stays with the tenant it was created for",
        },
        ReadOnly::Fixed {
            field: "status",
            stored: json!(current.status),
            why: "changes only through POST /admin/keys/{id}/revoke",
        },
        ReadOnly::Ignored("prefix"),
        ReadOnly::Ignored("created_at"),
        ReadOnly::Ignored("revoked_at"),
        ReadOnly::Ignored("replaced_by"),
    ]
}

/// A change to `current`, the key as stored.
pub fn parse_key_patch(
    bytes: &[u8],
    now_ms: i64,
    current: &KeyView,
) -> Result<KeyPatch, RelayError> {
    let f = Fields::parse_write(bytes, KEY_FIELDS, &key_read_only(current))?;
    let name = f.string("name")?;
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(RelayError::invalid_value(
            "name",
            "must be at most 200 characters",
        ));
    }
    let expires_at = if f.has("expires_at") {
        Some(f.integer("expires_at")?)
    } else {
        None
    };
    if let Some(Some(at)) = expires_at {
        // The expiry written back as read changes nothing, even once it has passed.
        if at <= now_ms && Some(at) != current.expires_at {
            return Err(RelayError::invalid_value(
                "expires_at",
                "must be in the future (Unix milliseconds)",
            ));
        }
    }
    Ok(KeyPatch {
        name,
        models: if f.has("models") {
            Some(f.string_list("models")?)
        } else {
            None
        },
        expires_at,
        limits: f.limits()?,
        rules: f.rules()?,
        cache_ttl_s: f.cache_ttl()?,
    })
}

impl KeyPatch {
    pub fn apply(&self, key: &mut KeyView) {
        if let Some(name) = &self.name {
            key.name = name.clone();
        }
        if let Some(models) = &self.models {
            key.models = models.clone();
        }
        if let Some(at) = self.expires_at {
            key.expires_at = at;
        }
        if let Some(limits) = &self.limits {
            key.limits = limits.clone();
        }
        if let Some(rules) = &self.rules {
            key.rules = rules.clone();
        }
        if let Some(ttl) = self.cache_ttl_s {
            key.cache_ttl_s = ttl;
        }
    }
}

/// The body of a tenant token's creation: an optional name.
pub fn parse_token_name(bytes: &[u8]) -> Result<String, RelayError> {
    let f = Fields::parse(bytes, &["name"])?;
    let name = f.string("name")?.unwrap_or_default();
    if name.chars().count() > 200 {
        return Err(RelayError::invalid_value(
            "name",
            "must be at most 200 characters",
        ));
    }
    Ok(name)
}

/// How long a rotated key keeps working beside its replacement.
pub fn parse_rotation(bytes: &[u8]) -> Result<i64, RelayError> {
    let f = Fields::parse(bytes, &["grace_seconds"])?;
    match f.integer("grace_seconds")? {
        None => Ok(24 * 3600),
        Some(s) if (0..=90 * 24 * 3600).contains(&s) => Ok(s),
        Some(_) => Err(RelayError::invalid_value(
            "grace_seconds",
            "must be between 0 and 7776000 (90 days)",
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChannel {
    pub name: String,
    pub provider: ProviderKind,
    pub base_url: String,
    pub api_keys: Vec<String>,
    pub models: Vec<String>,
    pub status: Status,
    pub timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    pub region: Option<String>,
    pub breaker: Option<BreakerConfig>,
    pub options: BTreeMap<String, String>,
}

const CHANNEL_FIELDS: &[&str] = &[
    "options",
    "total_timeout_ms",
    "region",
    "breaker",
    "name",
    "provider",
    "base_url",
    "api_keys",
    "models",
    "status",
    "timeout_ms",
];

pub fn parse_new_channel(bytes: &[u8]) -> Result<NewChannel, RelayError> {
    let f = Fields::parse(bytes, CHANNEL_FIELDS)?;
    let name = f.required_name("name")?;
    let provider = parse_provider(&f)?.ok_or_else(|| RelayError::missing("provider"))?;
    let base_url = check_base_url(provider, f.string("base_url")?.unwrap_or_default())?;
    let api_keys = check_api_keys(provider, f.secret_list("api_keys")?.unwrap_or_default())?;
    Ok(NewChannel {
        name,
        provider,
        base_url,
        api_keys,
        models: f.string_list("models")?.unwrap_or_default(),
        status: f.status("status")?.unwrap_or(Status::Active),
        timeout_ms: check_timeout(f.integer("timeout_ms")?)?,
        total_timeout_ms: check_total_timeout(f.integer("total_timeout_ms")?)?,
        region: check_region(f.string("region")?)?,
        breaker: f.breaker()?.flatten(),
        options: check_options(provider, f.options()?.unwrap_or_default())?,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub provider: Option<ProviderKind>,
    pub base_url: Option<String>,
    pub api_keys: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    pub status: Option<Status>,
    pub timeout_ms: Option<Option<u64>>,
    pub total_timeout_ms: Option<Option<u64>>,
    /// `Some(None)` clears the region.
    pub region: Option<Option<String>>,
    /// `Some(None)` returns to the defaults.
    pub breaker: Option<Option<BreakerConfig>>,
    pub options: Option<BTreeMap<String, String>>,
}

/// What a channel's GET shows that its PATCH does not set. Upstream keys are write-only: the
/// GET shows how many there are and their fingerprints, which follow from `api_keys`.
fn channel_read_only(current: &Channel) -> [ReadOnly; 5] {
    [
        ReadOnly::Fixed {
            field: "id",
            stored: json!(current.id),
            why: "is the channel's id, which cannot change",
        },
        ReadOnly::Ignored("api_key_count"),
        ReadOnly::Ignored("key_fingerprints"),
        ReadOnly::Ignored("created_at"),
        ReadOnly::Ignored("updated_at"),
    ]
}

/// A change to `current`, the channel as stored.
pub fn parse_channel_patch(bytes: &[u8], current: &Channel) -> Result<ChannelPatch, RelayError> {
    let f = Fields::parse_write(bytes, CHANNEL_FIELDS, &channel_read_only(current))?;
    let name = match f.string("name")? {
        Some(n) => {
            check_name("name", &n)?;
            Some(n)
        }
        None => None,
    };
    Ok(ChannelPatch {
        name,
        provider: parse_provider(&f)?,
        base_url: f.string("base_url")?,
        api_keys: f.secret_list("api_keys")?,
        models: f.string_list("models")?,
        status: f.status("status")?,
        timeout_ms: if f.has("timeout_ms") {
            Some(check_timeout(f.integer("timeout_ms")?)?)
        } else {
            None
        },
        total_timeout_ms: if f.has("total_timeout_ms") {
            Some(check_total_timeout(f.integer("total_timeout_ms")?)?)
        } else {
            None
        },
        region: if f.has("region") {
            Some(check_region(f.string("region")?)?)
        } else {
            None
        },
        breaker: f.breaker()?,
        // `null` clears the options, like an empty object.
        options: if f.has("options") {
            Some(f.options()?.unwrap_or_default())
        } else {
            None
        },
    })
}

impl ChannelPatch {
    /// Apply to a channel, re-checking what depends on several fields (a base URL must suit the
    /// provider, whichever of the two changed).
    pub fn apply(&self, channel: &mut Channel, now_ms: i64) -> Result<(), RelayError> {
        if let Some(name) = &self.name {
            channel.name = name.clone();
        }
        if let Some(provider) = self.provider {
            channel.provider = provider;
        }
        if let Some(url) = &self.base_url {
            channel.base_url = url.clone();
        }
        if self.provider.is_some() || self.base_url.is_some() {
            channel.base_url =
                check_base_url(channel.provider, std::mem::take(&mut channel.base_url))?;
        }
        if let Some(keys) = &self.api_keys {
            channel.api_keys = keys.clone();
        }
        if self.provider.is_some() || self.api_keys.is_some() {
            channel.api_keys =
                check_api_keys(channel.provider, std::mem::take(&mut channel.api_keys))?;
        }
        if let Some(models) = &self.models {
            channel.models = models.clone();
        }
        if let Some(status) = self.status {
            channel.status = status;
        }
        if let Some(timeout) = self.timeout_ms {
            channel.timeout_ms = timeout;
        }
        if let Some(total) = self.total_timeout_ms {
            channel.total_timeout_ms = total;
        }
        if let Some(region) = &self.region {
            channel.region = region.clone();
        }
        if let Some(breaker) = self.breaker {
            channel.breaker = breaker;
        }
        if let Some(options) = &self.options {
            channel.options = options.clone();
        }
        if self.provider.is_some() || self.options.is_some() {
            channel.options =
                check_options(channel.provider, std::mem::take(&mut channel.options))?;
        }
        channel.updated_at = now_ms;
        Ok(())
    }
}

fn check_total_timeout(ms: Option<i64>) -> Result<Option<u64>, RelayError> {
    match ms {
        None => Ok(None),
        Some(ms) if (1..=3_600_000).contains(&ms) => Ok(Some(ms as u64)),
        Some(_) => Err(RelayError::invalid_value(
            "total_timeout_ms",
            "must be between 1 and 3600000",
        )),
    }
}

/// A channel's region must be one routing can place (and map to a jurisdiction).
fn check_region(region: Option<String>) -> Result<Option<String>, RelayError> {
    let Some(region) = region.map(|r| r.to_ascii_lowercase()) else {
        return Ok(None);
    };
    if crate::routing::geo::region_info(&region).is_none() {
        return Err(RelayError::invalid_value(
            "region",
            "unknown region; use a name such as us-east, eu-west, eu-central, ap-northeast (README: Regions)",
        ));
    }
    Ok(Some(region))
}

fn parse_provider(f: &Fields) -> Result<Option<ProviderKind>, RelayError> {
    match f.string("provider")? {
        None => Ok(None),
        Some(p) => ProviderKind::parse(&p).map(Some).ok_or_else(|| {
            RelayError::invalid_value(
                "provider",
                format!(
                    "unknown provider; expected one of {}",
                    ProviderKind::names().join(", ")
                ),
            )
        }),
    }
}

fn check_base_url(provider: ProviderKind, url: String) -> Result<String, RelayError> {
    let mut url = url.trim().trim_end_matches('/').to_string();
    // Vertex's URL follows from its `region` option when none is given.
    if !provider.needs_network() || (url.is_empty() && provider.derives_base_url()) {
        return Ok(url);
    }
    if url.is_empty() {
        url = provider.default_base_url().unwrap_or_default().to_string();
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            RelayError::invalid_value("base_url", "must be an http:// or https:// URL")
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.contains(char::is_whitespace) || url.contains(['?', '#']) {
        return Err(RelayError::invalid_value(
            "base_url",
            "must be an http(s) URL with a host and no query",
        ));
    }
    Ok(url)
}

/// Upstream keys end up in a header: refuse anything that could split it. Vertex channels hold
/// service-account key files instead, which must be readable.
fn check_api_keys(provider: ProviderKind, keys: Vec<String>) -> Result<Vec<String>, RelayError> {
    for (i, key) in keys.iter().enumerate() {
        if provider == ProviderKind::Bedrock {
            if crate::providers::sigv4::parse_credentials(key).is_none() {
                return Err(RelayError::invalid_value(
                    &format!("api_keys[{i}]"),
                    "must be ACCESS_KEY_ID:SECRET_ACCESS_KEY or ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN",
                ));
            }
            continue;
        }
        if provider.uses_service_accounts() {
            if let Err(why) = crate::providers::gcp::parse_service_account(key) {
                return Err(RelayError::invalid_value(
                    &format!("api_keys[{i}]"),
                    format!("must be a service-account key file: it {why}"),
                ));
            }
            continue;
        }
        if key.len() > 4096 || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(RelayError::invalid_value(
                &format!("api_keys[{i}]"),
                "must be at most 4096 characters with no spaces or control characters",
            ));
        }
    }
    Ok(keys)
}

fn check_options(
    provider: ProviderKind,
    options: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, RelayError> {
    let known = provider.option_names();
    {
        for required in provider.required_options() {
            if !options.contains_key(*required) {
                return Err(RelayError::MissingParameter {
                    param: format!("options.{required}"),
                });
            }
        }
    }
    for (name, value) in &options {
        if !known.contains(&name.as_str()) {
            let expected = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(RelayError::invalid_value(
                &format!("options.{name}"),
                format!(
                    "not an option of provider '{}' (it takes: {expected})",
                    provider.as_str()
                ),
            ));
        }
        if value.is_empty()
            || value.len() > 200
            || value.contains(|c: char| c.is_control() || c.is_whitespace() || c == '&' || c == '#')
        {
            return Err(RelayError::invalid_value(
                &format!("options.{name}"),
                "must be 1 to 200 characters, no spaces",
            ));
        }
    }
    Ok(options)
}

fn check_timeout(ms: Option<i64>) -> Result<Option<u64>, RelayError> {
    match ms {
        None => Ok(None),
        Some(ms) if (1..=600_000).contains(&ms) => Ok(Some(ms as u64)),
        Some(_) => Err(RelayError::invalid_value(
            "timeout_ms",
            "must be between 1 and 600000",
        )),
    }
}

/// One model-map entry from the admin API: either `{"channel_id", "upstream_model"}` or
/// `{"routes": [{"channel_id", "upstream_model", "priority"?, "weight"?}, ...]}`, with an
/// optional `canary` and `shadow` (`routing::canary`). What a GET shows is accepted too:
/// `created` (stamped by the relay) is ignored, and beside `routes` the first route's
/// `channel_id` and `upstream_model`, when they are that route.
pub fn parse_model_target(
    bytes: &[u8],
    param_prefix: &str,
    now_s: i64,
) -> Result<ModelTarget, RelayError> {
    let f = Fields::parse_write(
        bytes,
        &[
            "channel_id",
            "upstream_model",
            "routes",
            "hedge_ms",
            "canary",
            "shadow",
        ],
        &[ReadOnly::Ignored("created")],
    )?;
    let mut target = parse_routes(&f, param_prefix, now_s)?;
    let primaries = target.route_refs();
    if let Some(v) = f.map.get("canary").filter(|v| !v.is_null()) {
        let prefix = format!("{param_prefix}canary.");
        target.canary = Some(canary::parse_canary(v, &prefix, &primaries)?);
    }
    if let Some(v) = f.map.get("shadow").filter(|v| !v.is_null()) {
        let prefix = format!("{param_prefix}shadow.");
        target.shadow = Some(canary::parse_shadow(v, &prefix, &primaries)?);
    }
    Ok(target)
}

/// The routing part of an entry: its route or routes, and hedging.
fn parse_routes(f: &Fields, param_prefix: &str, now_s: i64) -> Result<ModelTarget, RelayError> {
    let hedge_ms = match f.integer("hedge_ms")? {
        None => None,
        Some(ms) if (10..=60_000).contains(&ms) => Some(ms as u64),
        Some(_) => {
            return Err(RelayError::invalid_value(
                &format!("{param_prefix}hedge_ms"),
                "must be between 10 and 60000 (ms)",
            ))
        }
    };
    if !f.has("routes") {
        let route = route_from_fields(f, param_prefix)?;
        return Ok(ModelTarget {
            channel_id: route.channel_id,
            upstream_model: route.upstream_model,
            created: now_s,
            routes: Vec::new(),
            hedge_ms,
            canary: None,
            shadow: None,
        });
    }
    let Some(Value::Array(items)) = f.map.get("routes") else {
        return Err(RelayError::invalid_type(
            &format!("{param_prefix}routes"),
            "an array of routes",
        ));
    };
    if items.is_empty() || items.len() > 16 {
        return Err(RelayError::invalid_value(
            &format!("{param_prefix}routes"),
            "must list 1 to 16 routes",
        ));
    }
    let mut routes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("{param_prefix}routes[{i}].");
        let bytes = serde_json::to_vec(item).unwrap_or_default();
        let rf = Fields::parse(
            &bytes,
            &["channel_id", "upstream_model", "priority", "weight"],
        )
        .map_err(|e| e.prefixed(&prefix))?;
        let mut route = route_from_fields(&rf, &prefix)?;
        if let Some(p) = rf.integer("priority").map_err(|e| e.prefixed(&prefix))? {
            route.priority = i32::try_from(p)
                .ok()
                .filter(|p| (-1000..=1000).contains(p))
                .ok_or_else(|| {
                    RelayError::invalid_value(
                        &format!("{prefix}priority"),
                        "must be between -1000 and 1000",
                    )
                })?;
        }
        if let Some(w) = rf.integer("weight").map_err(|e| e.prefixed(&prefix))? {
            route.weight = u32::try_from(w)
                .ok()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| {
                    RelayError::invalid_value(
                        &format!("{prefix}weight"),
                        "must be between 0 and 1000000",
                    )
                })?;
        }
        if routes.iter().any(|r: &Route| {
            r.channel_id == route.channel_id && r.upstream_model == route.upstream_model
        }) {
            return Err(RelayError::invalid_value(
                &format!("{prefix}channel_id"),
                "the same route is listed twice",
            ));
        }
        routes.push(route);
    }
    // The plain fields name the first route tried when all is well.
    let first = routes
        .iter()
        .max_by_key(|r| (r.priority, r.weight))
        .cloned()
        .unwrap_or_else(|| routes[0].clone());
    if f.has("channel_id") || f.has("upstream_model") {
        let shown = (f.string("channel_id"), f.string("upstream_model"));
        let is_first = matches!(shown, (Ok(Some(c)), Ok(Some(m)))
            if c == first.channel_id && m == first.upstream_model);
        if !is_first {
            return Err(RelayError::invalid_value(
                &format!("{param_prefix}routes"),
                "give either routes or channel_id and upstream_model, not both (beside routes, those two are read-only: the first route, as a GET shows it)",
            ));
        }
    }
    Ok(ModelTarget {
        channel_id: first.channel_id,
        upstream_model: first.upstream_model,
        created: now_s,
        routes,
        hedge_ms,
        canary: None,
        shadow: None,
    })
}

fn route_from_fields(f: &Fields, prefix: &str) -> Result<Route, RelayError> {
    let get = |field: &str| -> Result<String, RelayError> {
        let param = format!("{prefix}{field}");
        match f.string(field) {
            Ok(Some(s)) if !s.is_empty() => Ok(s),
            Ok(_) => Err(RelayError::MissingParameter { param }),
            Err(_) => Err(RelayError::invalid_type(&param, "a string")),
        }
    };
    Ok(Route {
        channel_id: get("channel_id")?,
        upstream_model: get("upstream_model")?,
        priority: 0,
        weight: 1,
    })
}

/// The body of `PUT /admin/prices/{model}`: the price's fields, or what `GET` shows, with the
/// price under `price` beside `model` (which must be the one in the path) and the read-only
/// `matched` and `source` (which entry priced the model, and from which table).
pub fn parse_price_write(bytes: &[u8], model: &str) -> Result<Price, RelayError> {
    let read_only = [
        ReadOnly::Fixed {
            field: "model",
            stored: json!(model),
            why: "must be the model in the path",
        },
        ReadOnly::Ignored("matched"),
        ReadOnly::Ignored("source"),
    ];
    let mut allowed = pricing::PRICE_FIELDS.to_vec();
    allowed.push("price");
    let mut f = Fields::parse_write(bytes, &allowed, &read_only)?;
    let Some(price) = f.map.remove("price") else {
        return pricing::parse_price(&serde_json::to_vec(&f.map).unwrap_or_default());
    };
    if let Some(flat) = f.map.keys().next() {
        return Err(RelayError::invalid_value(
            flat,
            "give the price's fields or price, not both",
        ));
    }
    if !price.is_object() {
        return Err(RelayError::invalid_type("price", "an object"));
    }
    pricing::parse_price(&serde_json::to_vec(&price).unwrap_or_default())
        .map_err(|e| e.prefixed("price."))
}

/// Keep the `created` stamp of an entry whose routes did not change.
pub fn keep_created(target: &mut ModelTarget, previous: Option<&ModelTarget>) {
    if let Some(old) = previous.filter(|old| old.same_routes(target)) {
        target.created = old.created;
    }
}

/// A whole model map from the admin API. Entries keep their `created` stamp when unchanged.
pub fn parse_model_map_body(
    bytes: &[u8],
    previous: &ModelMap,
    now_s: i64,
) -> Result<ModelMap, RelayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| RelayError::InvalidJson {
        detail: e.to_string(),
    })?;
    let Value::Object(entries) = value else {
        return Err(RelayError::InvalidJson {
            detail: "the model map must be a JSON object".into(),
        });
    };
    let mut map = ModelMap::new();
    for (model, entry) in entries {
        check_public_model_name(&model)?;
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        let mut target = parse_model_target(&bytes, &format!("{model}."), now_s)?;
        keep_created(&mut target, previous.get(&model));
        map.insert(model, target);
    }
    Ok(map)
}

pub fn check_public_model_name(model: &str) -> Result<(), RelayError> {
    if model.is_empty()
        || model.len() > 256
        || model.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(RelayError::invalid_value(
            "model",
            "a model name is 1 to 256 characters without spaces",
        ));
    }
    Ok(())
}

/// Every route — the canary's and the shadow's too — must point at an existing channel that
/// serves its upstream model.
pub fn check_model_map(map: &ModelMap, channels: &[Channel]) -> Result<(), RelayError> {
    for (model, target) in map {
        let plain = target.routes.is_empty();
        let all = target.all_routes();
        // (where the route sits in the body, its channel, its upstream model)
        let mut routes: Vec<(String, &str, &str)> = Vec::with_capacity(all.len() + 2);
        for (i, r) in all.iter().enumerate() {
            let at = if plain {
                format!("{model}.")
            } else {
                format!("{model}.routes[{i}].")
            };
            routes.push((at, &r.channel_id, &r.upstream_model));
        }
        if let Some(c) = &target.canary {
            let r = &c.route;
            routes.push((
                format!("{model}.canary.route."),
                &r.channel_id,
                &r.upstream_model,
            ));
        }
        if let Some(s) = &target.shadow {
            let r = &s.route;
            routes.push((
                format!("{model}.shadow.route."),
                &r.channel_id,
                &r.upstream_model,
            ));
        }
        for (at, channel_id, upstream_model) in routes {
            let channel = channels
                .iter()
                .find(|c| c.id == channel_id)
                .ok_or_else(|| {
                    RelayError::invalid_value(
                        &format!("{at}channel_id"),
                        format!("no channel '{channel_id}'"),
                    )
                })?;
            if !channel.serves(upstream_model) {
                return Err(RelayError::invalid_value(
                    &format!("{at}upstream_model"),
                    format!(
                        "channel '{}' does not list model '{upstream_model}'",
                        channel.id
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Narrowing a channel's model list must not strand a model-map route (a canary's or a
/// shadow's included) that uses it.
pub fn check_channel_keeps_its_models(map: &ModelMap, channel: &Channel) -> Result<(), RelayError> {
    let stranded: Vec<&str> = map
        .iter()
        .filter(|(_, t)| {
            let strands = |c: &str, m: &str| c == channel.id && !channel.serves(m);
            t.all_routes()
                .iter()
                .any(|r| strands(&r.channel_id, &r.upstream_model))
                || t.extra_routes()
                    .any(|r| strands(&r.channel_id, &r.upstream_model))
        })
        .map(|(m, _)| m.as_str())
        .collect();
    if stranded.is_empty() {
        return Ok(());
    }
    Err(RelayError::Conflict {
        message: format!(
            "Channel '{}' would no longer serve the upstream models of: {}. Update the model map first.",
            channel.id,
            stranded.join(", ")
        ),
    })
}

/// Public models that would be left with a route to nothing if this channel went away.
pub fn models_using_channel<'a>(map: &'a ModelMap, channel_id: &str) -> Vec<&'a str> {
    map.iter()
        .filter(|(_, t)| t.uses_channel(channel_id))
        .map(|(m, _)| m.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str, models: &[&str]) -> Channel {
        Channel {
            id: id.into(),
            name: id.into(),
            provider: ProviderKind::OpenAi,
            base_url: "https://api.example.com/v1".into(),
            api_keys: vec!["sk-secret".into()],
            models: models.iter().map(|m| m.to_string()).collect(),
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

    fn tenant() -> Tenant {
        Tenant {
            id: "ten_1".into(),
            name: "acme".into(),
            status: Status::Active,
            models: None,
            limits: Limits::default(),
            rules: AccessRules::default(),
            jurisdiction: None,
            settings: TenantSettings::default(),
            created_at: 1,
            updated_at: 2,
        }
    }

    fn key() -> KeyView {
        KeyView {
            id: "key_1".into(),
            tenant_id: "ten_1".into(),
            name: "ci".into(),
            prefix: "sk-er-abcd".into(),
            status: crate::governance::grant::KeyStatus::Active,
            models: None,
            limits: Limits::default(),
            rules: AccessRules::default(),
            expires_at: None,
            created_at: 1,
            revoked_at: None,
            replaced_by: None,
            cache_ttl_s: None,
        }
    }

    #[test]
    fn tenant_settings_input() {
        let t = parse_new_tenant(
            br#"{"name":"a","jurisdiction":"eu","lease_ms":2000,
                 "budget":{"soft_micros":5,"hard_micros":10,"on_hard":"downgrade","fallback_model":"mini",
                           "webhook_url":"http://127.0.0.1:9/hook"}}"#,
            true,
        )
        .unwrap();
        assert_eq!(t.jurisdiction.as_deref(), Some("eu"));
        assert_eq!(t.settings.lease_ms, Some(2000));
        assert_eq!(t.settings.budget.unwrap().hard_micros, Some(10));
        let param = |body: &[u8], dev: bool| {
            parse_new_tenant(body, dev)
                .unwrap_err()
                .param()
                .map(str::to_string)
        };
        assert_eq!(
            param(br#"{"name":"a","jurisdiction":"mars"}"#, true).as_deref(),
            Some("jurisdiction")
        );
        assert_eq!(
            param(br#"{"name":"a","lease_ms":5}"#, true).as_deref(),
            Some("lease_ms")
        );
        assert_eq!(
            param(br#"{"name":"a","lease_ms":-5}"#, true).as_deref(),
            Some("lease_ms")
        );
        assert_eq!(
            param(
                br#"{"name":"a","budget":{"soft_micros":1,"webhook_url":"http://127.0.0.1:9/"}}"#,
                false
            )
            .as_deref(),
            Some("budget.webhook_url"),
            "plain http to loopback only in local dev"
        );
        assert_eq!(
            param(br#"{"name":"a","budget":{"soft_micros":1,"webhook_url":"http://hooks.example.com/"}}"#, true).as_deref(),
            Some("budget.webhook_url")
        );
        assert_eq!(
            param(br#"{"name":"a","budget":{"soft_micros":-1}}"#, true).as_deref(),
            Some("budget")
        );
        assert_eq!(
            param(
                br#"{"name":"a","budget":{"hard_micros":9,"on_hard":"downgrade"}}"#,
                true
            )
            .as_deref(),
            Some("budget.fallback_model")
        );
        let p =
            parse_tenant_patch(br#"{"lease_ms":null,"budget":null}"#, false, &tenant()).unwrap();
        assert_eq!((p.lease_ms, p.budget), (Some(None), Some(None)));
        assert_eq!(
            parse_tenant_patch(br#"{"jurisdiction":"eu"}"#, false, &tenant())
                .unwrap_err()
                .param(),
            Some("jurisdiction"),
            "a tenant's jurisdiction cannot change"
        );
    }

    #[test]
    fn tenant_input() {
        let t = parse_new_tenant(br#"{"name":" acme ","models":["a","a","b"]}"#, false).unwrap();
        assert_eq!(
            t,
            NewTenant {
                name: "acme".into(),
                models: Some(vec!["a".into(), "b".into()]),
                limits: Limits::default(),
                rules: AccessRules::default(),
                jurisdiction: None,
                settings: TenantSettings::default(),
            }
        );
        let t = parse_new_tenant(
            br#"{"name":"a","limits":{"rpm":5},"rules":{"countries_deny":["kp"]}}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            (t.limits.rpm, t.rules.countries_deny.clone()),
            (Some(5), vec!["KP".to_string()])
        );
        assert_eq!(
            parse_new_tenant(br#"{"name":"a","limits":{"rpm":0}}"#, false)
                .unwrap_err()
                .param(),
            Some("limits.rpm")
        );
        assert_eq!(
            parse_new_tenant(
                br#"{"name":"a","rules":{"ip_allow":["10.0.0.0/33"]}}"#,
                false
            )
            .unwrap_err()
            .param(),
            Some("rules.ip_allow[0]")
        );
        assert_eq!(
            parse_new_tenant(br#"{}"#, false).unwrap_err().param(),
            Some("name")
        );
        assert_eq!(
            parse_new_tenant(br#"{"name":""}"#, false)
                .unwrap_err()
                .param(),
            Some("name")
        );
        assert_eq!(
            parse_new_tenant(br#"{"name":"a","modles":[]}"#, false)
                .unwrap_err()
                .param(),
            Some("modles")
        );
        assert_eq!(
            parse_new_tenant(br#"{"name":"a","models":[1]}"#, false)
                .unwrap_err()
                .param(),
            Some("models[0]")
        );
        let p = parse_tenant_patch(br#"{"models":null,"status":"disabled"}"#, false, &tenant())
            .unwrap();
        assert_eq!(p.models, Some(None));
        assert_eq!(p.status, Some(Status::Disabled));
        assert_eq!(
            parse_tenant_patch(br#"{"status":"gone"}"#, false, &tenant())
                .unwrap_err()
                .param(),
            Some("status")
        );
        assert_eq!(
            parse_tenant_patch(b"", false, &tenant()).unwrap(),
            TenantPatch::default()
        );
    }

    #[test]
    fn model_groups_are_validated() {
        let groups: ModelGroups = [("cheap".to_string(), vec!["mini".to_string()])].into();
        assert!(check_allowlist(&Some(vec!["gpt".into(), "@cheap".into()]), &groups).is_ok());
        assert_eq!(
            check_allowlist(&Some(vec!["@frontier".into()]), &groups)
                .unwrap_err()
                .param(),
            Some("models[0]")
        );
        assert!(check_allowlist(&None, &groups).is_ok());
        assert!(check_group_name("cheap-2").is_ok());
        assert!(check_group_name("Cheap").is_err());
        assert_eq!(
            parse_group_models(br#"{"models":["a","@b"]}"#)
                .unwrap_err()
                .param(),
            Some("models[1]")
        );
        assert_eq!(
            parse_group_models(br#"{}"#).unwrap_err().param(),
            Some("models")
        );
    }

    #[test]
    fn key_patches_and_rotation() {
        let p = parse_key_patch(
            br#"{"models":null,"limits":{"concurrency":2},"expires_at":null}"#,
            0,
            &key(),
        )
        .unwrap();
        assert_eq!((p.models.clone(), p.expires_at), (Some(None), Some(None)));
        assert_eq!(p.limits.as_ref().and_then(|l| l.concurrency), Some(2));
        assert_eq!(
            parse_key_patch(br#"{"expires_at":5}"#, 10, &key())
                .unwrap_err()
                .param(),
            Some("expires_at")
        );
        assert_eq!(parse_rotation(b"").unwrap(), 86_400);
        assert_eq!(
            parse_rotation(br#"{"grace_seconds":-1}"#)
                .unwrap_err()
                .param(),
            Some("grace_seconds")
        );
    }

    #[test]
    fn key_input() {
        let k = parse_new_key(br#"{"name":"ci","expires_at":2000}"#, 1000).unwrap();
        assert_eq!(k.expires_at, Some(2000));
        assert_eq!(
            parse_new_key(br#"{"expires_at":999}"#, 1000)
                .unwrap_err()
                .param(),
            Some("expires_at")
        );
        assert_eq!(
            parse_new_key(br#"{"expires_at":"soon"}"#, 1000)
                .unwrap_err()
                .param(),
            Some("expires_at")
        );
        assert_eq!(parse_new_key(b"", 0).unwrap().name, "");
    }

    #[test]
    fn channel_input() {
        let c = parse_new_channel(br#"{"name":"o","provider":"openai","base_url":"https://api.openai.com/v1/","api_keys":["sk-1"],"models":["gpt"]}"#).unwrap();
        assert_eq!(c.base_url, "https://api.openai.com/v1");
        assert_eq!(c.status, Status::Active);
        let err = |b: &[u8]| {
            parse_new_channel(b)
                .unwrap_err()
                .param()
                .map(str::to_string)
        };
        assert_eq!(
            err(br#"{"name":"o","provider":"nope"}"#),
            Some("provider".into())
        );
        assert_eq!(err(br#"{"name":"o"}"#), Some("provider".into()));
        assert_eq!(
            err(br#"{"name":"o","provider":"openai","base_url":"ftp://x"}"#),
            Some("base_url".into())
        );
        assert_eq!(
            err(br#"{"name":"o","provider":"openai","base_url":"https://"}"#),
            Some("base_url".into())
        );
        assert_eq!(
            err(br#"{"name":"o","provider":"openai","base_url":"https://x","api_keys":["a\nb"]}"#),
            Some("api_keys[0]".into())
        );
        assert_eq!(
            err(br#"{"name":"o","provider":"openai","base_url":"https://x","timeout_ms":0}"#),
            Some("timeout_ms".into())
        );
        parse_new_channel(br#"{"name":"m","provider":"mock"}"#).unwrap();
        let azure = parse_new_channel(br#"{"name":"a","provider":"azure","base_url":"https://r.openai.azure.com","options":{"api_version":"2024-10-21"}}"#).unwrap();
        assert_eq!(
            azure.options.get("api_version").map(String::as_str),
            Some("2024-10-21")
        );
        assert_eq!(
            err(br#"{"name":"a","provider":"openai","options":{"api_version":"x"}}"#),
            Some("options.api_version".into())
        );
        assert_eq!(err(br#"{"name":"a","provider":"azure","base_url":"https://r","options":{"api_version":1}}"#), Some("options.api_version".into()));
        assert_eq!(
            err(br#"{"name":"a","provider":"azure"}"#),
            Some("base_url".into())
        );
        let groq =
            parse_new_channel(br#"{"name":"g","provider":"groq","api_keys":["k"]}"#).unwrap();
        assert_eq!(groq.base_url, "https://api.groq.com/openai/v1");
    }

    #[test]
    fn channel_patch_rechecks_the_url_against_the_provider() {
        let mut c = channel("c", &[]);
        c.provider = ProviderKind::Mock;
        c.base_url = String::new();
        let patch =
            parse_channel_patch(br#"{"provider":"openai","base_url":"ftp://x"}"#, &c).unwrap();
        assert_eq!(
            patch.apply(&mut c.clone(), 5).unwrap_err().param(),
            Some("base_url")
        );
        // A provider with a well-known endpoint gets it when no URL is given.
        let patch = parse_channel_patch(br#"{"provider":"anthropic"}"#, &c).unwrap();
        patch.apply(&mut c, 5).unwrap();
        assert_eq!(c.base_url, "https://api.anthropic.com/v1");
        let patch = parse_channel_patch(br#"{"timeout_ms":null,"api_keys":["k2"]}"#, &c).unwrap();
        let mut c = channel("c", &[]);
        c.timeout_ms = Some(5);
        patch.apply(&mut c, 9).unwrap();
        assert_eq!(
            (c.timeout_ms, c.api_keys.clone(), c.updated_at),
            (None, vec!["k2".to_string()], 9)
        );
    }

    #[test]
    fn model_map_checks_channels_and_models() {
        let channels = vec![channel("c1", &["gpt"]), channel("c2", &[])];
        let map = parse_model_map_body(br#"{"a":{"channel_id":"c1","upstream_model":"gpt"},"b":{"channel_id":"c2","upstream_model":"any"}}"#, &ModelMap::new(), 7).unwrap();
        check_model_map(&map, &channels).unwrap();
        assert_eq!(map["a"].created, 7);
        let bad = parse_model_map_body(
            br#"{"a":{"channel_id":"c1","upstream_model":"other"}}"#,
            &ModelMap::new(),
            7,
        )
        .unwrap();
        assert_eq!(
            check_model_map(&bad, &channels).unwrap_err().param(),
            Some("a.upstream_model")
        );
        let bad = parse_model_map_body(
            br#"{"a":{"channel_id":"zz","upstream_model":"gpt"}}"#,
            &ModelMap::new(),
            7,
        )
        .unwrap();
        assert_eq!(
            check_model_map(&bad, &channels).unwrap_err().param(),
            Some("a.channel_id")
        );
        assert_eq!(
            parse_model_map_body(br#"{"a":{"channel_id":"c1"}}"#, &ModelMap::new(), 7)
                .unwrap_err()
                .param(),
            Some("a.upstream_model")
        );
        // an unchanged entry keeps its creation time
        let again = parse_model_map_body(
            br#"{"a":{"channel_id":"c1","upstream_model":"gpt"}}"#,
            &map,
            99,
        )
        .unwrap();
        assert_eq!(again["a"].created, 7);
        assert_eq!(models_using_channel(&map, "c2"), vec!["b"]);
        let mut narrowed = channel("c1", &["other"]);
        assert_eq!(
            check_channel_keeps_its_models(&map, &narrowed)
                .unwrap_err()
                .status(),
            409
        );
        narrowed.models = vec!["gpt".into(), "other".into()];
        assert_eq!(check_channel_keeps_its_models(&map, &narrowed), Ok(()));
    }

    /// What a GET shows, as a PUT/PATCH body.
    fn body(shown: impl serde::Serialize) -> Vec<u8> {
        serde_json::to_vec(&shown).unwrap()
    }

    fn with(shown: impl serde::Serialize, field: &str, value: Value) -> Vec<u8> {
        let mut v = json!(shown);
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_tenant_read_back_is_accepted_and_changes_nothing() {
        let mut t = tenant();
        t.jurisdiction = Some("eu".into());
        t.models = Some(vec!["a".into()]);
        t.limits.rpm = Some(5);
        t.settings.lease_ms = Some(2000);
        let mut after = t.clone();
        parse_tenant_patch(&body(&t), false, &t)
            .unwrap()
            .apply(&mut after, 99);
        assert_eq!(
            after,
            Tenant {
                updated_at: 99,
                ..t.clone()
            }
        );
        // Timestamps are the relay's: ignored whatever they say.
        assert!(parse_tenant_patch(&with(&t, "created_at", json!(5)), false, &t).is_ok());
        // An identity, or the jurisdiction, may be given only as it is.
        let param = |b: Vec<u8>| {
            parse_tenant_patch(&b, false, &t)
                .unwrap_err()
                .param()
                .map(str::to_string)
        };
        assert_eq!(param(with(&t, "id", json!("ten_2"))).as_deref(), Some("id"));
        assert_eq!(
            param(with(&t, "jurisdiction", json!(null))).as_deref(),
            Some("jurisdiction")
        );
        // A misspelt field is still refused, naming the fields a write takes.
        let e = parse_tenant_patch(&with(&t, "nmae", json!("x")), false, &t).unwrap_err();
        assert_eq!(e.param(), Some("nmae"));
        assert!(
            e.message().contains("expected one of name, models"),
            "{}",
            e.message()
        );
        assert!(!e.message().contains("created_at"), "{}", e.message());
    }

    #[test]
    fn a_key_read_back_is_accepted_and_changes_nothing() {
        let mut k = key();
        k.models = Some(vec!["@cheap".into()]);
        k.cache_ttl_s = Some(60);
        k.expires_at = Some(5_000);
        k.replaced_by = Some("key_2".into());
        let mut after = k.clone();
        parse_key_patch(&body(&k), 1_000, &k)
            .unwrap()
            .apply(&mut after);
        assert_eq!(after, k);
        // An expiry already past, given back as it was, changes nothing; a new one must be ahead.
        assert!(parse_key_patch(&body(&k), 9_000, &k).is_ok());
        let param = |b: Vec<u8>| {
            parse_key_patch(&b, 9_000, &k)
                .unwrap_err()
                .param()
                .map(str::to_string)
        };
        assert_eq!(
            param(with(&k, "expires_at", json!(6_000))).as_deref(),
            Some("expires_at")
        );
        // The status has its own route (revoke); the id and the tenant never change.
        assert_eq!(
            param(with(&k, "status", json!("revoked"))).as_deref(),
            Some("status")
        );
        assert_eq!(
            param(with(&k, "tenant_id", json!("ten_2"))).as_deref(),
            Some("tenant_id")
        );
        assert_eq!(param(with(&k, "id", json!("key_9"))).as_deref(), Some("id"));
        for ignored in ["prefix", "created_at", "revoked_at", "replaced_by"] {
            assert!(
                parse_key_patch(&with(&k, ignored, json!(7)), 1_000, &k).is_ok(),
                "{ignored}"
            );
        }
        assert_eq!(
            param(with(&k, "revoked", json!(true))).as_deref(),
            Some("revoked")
        );
    }

    #[test]
    fn a_channel_read_back_is_accepted_and_keeps_its_upstream_keys() {
        let mut c = channel("c1", &["gpt"]);
        c.timeout_ms = Some(5_000);
        c.breaker = Some(BreakerConfig::default());
        c.region = Some("eu-west".into());
        let shown = crate::admin::config::ChannelView::of(&c);
        let mut after = c.clone();
        parse_channel_patch(&body(&shown), &c)
            .unwrap()
            .apply(&mut after, 99)
            .unwrap();
        assert_eq!(
            after,
            Channel {
                updated_at: 99,
                ..c.clone()
            }
        );
        // Counts and fingerprints follow from the write-only keys: ignored, never an error.
        let stale = with(&shown, "api_key_count", json!(7));
        assert!(parse_channel_patch(&stale, &c).is_ok());
        assert!(parse_channel_patch(&with(&shown, "key_fingerprints", json!([])), &c).is_ok());
        assert_eq!(
            parse_channel_patch(&with(&shown, "id", json!("c2")), &c)
                .unwrap_err()
                .param(),
            Some("id")
        );
        assert_eq!(
            parse_channel_patch(&with(&shown, "api_key", json!("k")), &c)
                .unwrap_err()
                .param(),
            Some("api_key")
        );
    }

    #[test]
    fn model_map_entries_read_back_are_accepted() {
        let channels = vec![channel("c1", &[]), channel("c2", &[])];
        let entry = br#"{"hedge_ms":500,"routes":[{"channel_id":"c1","upstream_model":"a"},
                          {"channel_id":"c2","upstream_model":"b","priority":1,"weight":3}]}"#;
        let target = parse_model_target(entry, "", 7).unwrap();
        assert_eq!(
            (target.channel_id.as_str(), target.upstream_model.as_str()),
            ("c2", "b")
        );
        let again = parse_model_target(&body(&target), "", 99).unwrap();
        assert!(again.same_routes(&target));
        assert_eq!(
            again.created, 99,
            "created is the relay's stamp; keep_created restores it"
        );
        // Beside routes, channel_id and upstream_model must be the first route.
        let other = with(&target, "channel_id", json!("c1"));
        assert_eq!(
            parse_model_target(&other, "", 9).unwrap_err().param(),
            Some("routes")
        );
        let mut one = json!(target);
        one.as_object_mut().unwrap().remove("upstream_model");
        assert_eq!(
            parse_model_target(&body(&one), "", 9).unwrap_err().param(),
            Some("routes")
        );
        // The whole map, read back, is the same map with the same stamps.
        let plain =
            parse_model_target(br#"{"channel_id":"c1","upstream_model":"a"}"#, "", 3).unwrap();
        let map: ModelMap = [("m".to_string(), target), ("p".to_string(), plain)].into();
        check_model_map(&map, &channels).unwrap();
        assert_eq!(parse_model_map_body(&body(&map), &map, 99).unwrap(), map);
        assert_eq!(
            parse_model_map_body(
                &with(
                    &map,
                    "p",
                    json!({"channel_id":"c1","upstream_model":"a","crated":3})
                ),
                &map,
                99
            )
            .unwrap_err()
            .param(),
            Some("crated")
        );
    }

    #[test]
    fn canary_and_shadow_are_validated_and_read_back() {
        let channels = vec![
            channel("c1", &["a"]),
            channel("c2", &["b"]),
            channel("c3", &["a"]),
        ];
        let entry = br#"{"channel_id":"c1","upstream_model":"a",
            "canary":{"route":{"channel_id":"c2","upstream_model":"b"},"percent":5,"window_s":300,
                      "max_error_rate_delta_bps":500,"max_p95_ratio_pct":150,"min_requests":50},
            "shadow":{"route":{"channel_id":"c3","upstream_model":"a"},"percent":10}}"#;
        let target = parse_model_target(entry, "m.", 7).unwrap();
        assert_eq!(target.canary.as_ref().map(|c| c.percent), Some(5));
        assert_eq!(target.shadow.as_ref().map(|s| s.percent), Some(10));
        // What a GET shows is what a PUT takes.
        assert_eq!(parse_model_target(&body(&target), "m.", 7).unwrap(), target);
        let map: ModelMap = [("m".to_string(), target.clone())].into();
        check_model_map(&map, &channels).unwrap();
        assert_eq!(parse_model_map_body(&body(&map), &map, 99).unwrap(), map);
        // Errors name the field under the entry.
        let param = |v: Value| {
            parse_model_map_body(&body(json!({"m": v})), &ModelMap::new(), 1)
                .unwrap_err()
                .param()
                .map(str::to_string)
        };
        let mut bad = json!(target);
        bad["canary"]["percent"] = json!(101);
        assert_eq!(param(bad).as_deref(), Some("m.canary.percent"));
        let mut bad = json!(target);
        bad["shadow"]["route"] = json!({"channel_id": "c1", "upstream_model": "a"});
        assert_eq!(param(bad).as_deref(), Some("m.shadow.route"));
        let mut bad = json!(target);
        bad["canary"]["min_requests"] = json!(0);
        assert_eq!(param(bad).as_deref(), Some("m.canary.min_requests"));
        // null is none.
        let mut none = json!(target);
        none["canary"] = Value::Null;
        let t = parse_model_target(&body(&none), "m.", 7).unwrap();
        assert!(t.canary.is_none() && t.shadow.is_some());
        // The canary's and the shadow's routes must exist and serve their models.
        let missing = vec![channel("c1", &["a"]), channel("c3", &["a"])];
        assert_eq!(
            check_model_map(&map, &missing).unwrap_err().param(),
            Some("m.canary.route.channel_id")
        );
        let narrow = vec![
            channel("c1", &["a"]),
            channel("c2", &["b"]),
            channel("c3", &["z"]),
        ];
        assert_eq!(
            check_model_map(&map, &narrow).unwrap_err().param(),
            Some("m.shadow.route.upstream_model")
        );
        assert!(check_channel_keeps_its_models(&map, &channel("c2", &["x"])).is_err());
        assert_eq!(models_using_channel(&map, "c3"), ["m"]);
    }

    #[test]
    fn groups_and_prices_read_back_are_accepted() {
        let shown = json!({"name": "cheap", "models": ["a"], "price_multiplier_ppm": null});
        assert_eq!(
            parse_group(&body(&shown), "cheap").unwrap(),
            (vec!["a".to_string()], None)
        );
        assert_eq!(
            parse_group(&body(&shown), "other").unwrap_err().param(),
            Some("name")
        );
        let price = Price::tokens(3, 12);
        let shown = json!({"model": "m/x", "matched": "m", "source": "builtin", "price": price});
        assert_eq!(parse_price_write(&body(&shown), "m/x").unwrap(), price);
        assert_eq!(
            parse_price_write(&body(&shown), "m/y").unwrap_err().param(),
            Some("model")
        );
        assert_eq!(
            parse_price_write(br#"{"input":3,"output":12}"#, "m").unwrap(),
            price
        );
        let param = |b: &[u8]| {
            parse_price_write(b, "m")
                .unwrap_err()
                .param()
                .map(str::to_string)
        };
        assert_eq!(
            param(br#"{"price":{"input":3,"output":12},"input":3}"#).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(br#"{"price":{"input":-3,"output":12}}"#).as_deref(),
            Some("price.input")
        );
        assert_eq!(
            param(br#"{"price":{"input":3}}"#).as_deref(),
            Some("price.output")
        );
        assert_eq!(param(br#"{"price":3}"#).as_deref(), Some("price"));
        assert_eq!(
            param(br#"{"input":3,"output":12,"sauce":"x"}"#).as_deref(),
            Some("sauce")
        );
    }
}
