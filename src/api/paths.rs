//! Path and method → what the request is for. A path that exists with the wrong method is a
//! 405 naming the allowed methods, a path that does not exist a 404; both decided here, so the
//! router in the edge only dispatches.

use crate::error::RelayError;
use crate::formats::openai::Endpoint;
use crate::support::url::{percent_decode, query_pairs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Health,
    Models,
    Model(String),
    Relay(Endpoint),
    /// Anthropic's Messages API.
    Messages,
    CountTokens,
    Tenants,
    Tenant(String),
    TenantDisable(String),
    TenantEnable(String),
    TenantKeys(String),
    Key(String),
    KeyRevoke(String),
    KeyRotate(String),
    /// What a key's limiter holds now.
    KeyLimits(String),
    TenantLimits(String),
    Channels,
    Channel(String),
    ModelMap,
    ModelMapEntry(String),
    Usage,
    /// One request's ledger row, with its attempts.
    UsageEntry(String),
    Audit,
    /// A tenant's admin tokens (the global admin issues them).
    TenantTokens(String),
    TenantTokenRevoke(String),
    ModelGroups,
    ModelGroup(String),
    /// The price table: built-in defaults merged with the operator's overrides.
    Prices,
    Price(String),
    /// A channel's circuit breakers and upstream-key cooldowns.
    ChannelHealth(String),
    /// Aggregates, the request log and exports of the usage ledger.
    Analytics(AnalyticsView),
    /// The admin dashboard page (public; its data needs a token).
    Dashboard,
    /// Re-enable an upstream key (by fingerprint) disabled after 401/403.
    ChannelKeyEnable(String, String),
}

/// What an analytics request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalyticsView {
    Summary,
    Timeseries,
    Breakdown,
    Requests,
    Export,
}

impl Resource {
    /// The resource a path names, or `None` for an unknown path. Path segments taken as ids are
    /// percent-decoded; a model name may contain `/` (`meta-llama/Llama-3-8b`), so it takes the
    /// rest of the path.
    pub fn parse(path: &str) -> Option<Resource> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let rest_from = |n: usize| -> Option<String> {
            let rest = segments.get(n..)?.join("/");
            (!rest.is_empty()).then(|| percent_decode(&rest))
        };
        let id = |s: &str| -> Option<String> { (!s.is_empty()).then(|| percent_decode(s)) };
        Some(match segments.as_slice() {
            ["health"] => Resource::Health,
            ["v1", "models"] => Resource::Models,
            ["v1", "models", _, ..] => Resource::Model(rest_from(2)?),
            ["v1", "chat", "completions"] => Resource::Relay(Endpoint::ChatCompletions),
            ["v1", "completions"] => Resource::Relay(Endpoint::Completions),
            ["v1", "embeddings"] => Resource::Relay(Endpoint::Embeddings),
            ["v1", "messages"] => Resource::Messages,
            ["v1", "messages", "count_tokens"] => Resource::CountTokens,
            ["admin", "tenants"] => Resource::Tenants,
            ["admin", "tenants", t] => Resource::Tenant(id(t)?),
            ["admin", "tenants", t, "disable"] => Resource::TenantDisable(id(t)?),
            ["admin", "tenants", t, "enable"] => Resource::TenantEnable(id(t)?),
            ["admin", "tenants", t, "keys"] => Resource::TenantKeys(id(t)?),
            ["admin", "keys", k] => Resource::Key(id(k)?),
            ["admin", "keys", k, "revoke"] => Resource::KeyRevoke(id(k)?),
            ["admin", "keys", k, "rotate"] => Resource::KeyRotate(id(k)?),
            ["admin", "keys", k, "limits"] => Resource::KeyLimits(id(k)?),
            ["admin", "tenants", t, "limits"] => Resource::TenantLimits(id(t)?),
            ["admin", "channels"] => Resource::Channels,
            ["admin", "channels", c] => Resource::Channel(id(c)?),
            ["admin", "channels", c, "health"] => Resource::ChannelHealth(id(c)?),
            ["admin", "channels", c, "keys", fp, "enable"] => {
                Resource::ChannelKeyEnable(id(c)?, id(fp)?)
            }
            ["admin", "model-map"] => Resource::ModelMap,
            ["admin", "model-map", _, ..] => Resource::ModelMapEntry(rest_from(2)?),
            ["admin", "usage"] => Resource::Usage,
            ["admin", "usage", r] => Resource::UsageEntry(id(r)?),
            ["admin", "audit"] => Resource::Audit,
            ["admin", "model-groups"] => Resource::ModelGroups,
            ["admin", "model-groups", g] => Resource::ModelGroup(id(g)?),
            ["admin", "ui"] => Resource::Dashboard,
            ["admin", "analytics", "summary"] => Resource::Analytics(AnalyticsView::Summary),
            ["admin", "analytics", "timeseries"] => Resource::Analytics(AnalyticsView::Timeseries),
            ["admin", "analytics", "breakdown"] => Resource::Analytics(AnalyticsView::Breakdown),
            ["admin", "analytics", "requests"] => Resource::Analytics(AnalyticsView::Requests),
            ["admin", "analytics", "export"] => Resource::Analytics(AnalyticsView::Export),
            ["admin", "prices"] => Resource::Prices,
            ["admin", "prices", _, ..] => Resource::Price(rest_from(2)?),
            ["admin", "tenants", t, "tokens"] => Resource::TenantTokens(id(t)?),
            ["admin", "tenant-tokens", k, "revoke"] => Resource::TenantTokenRevoke(id(k)?),
            _ => return None,
        })
    }

    pub fn allowed_methods(&self) -> &'static [&'static str] {
        use Resource::*;
        match self {
            Health | Models | Model(_) | Usage | UsageEntry(_) | Audit | KeyLimits(_)
            | TenantLimits(_) | ChannelHealth(_) | Analytics(_) | Dashboard => &["GET"],
            ChannelKeyEnable(..) => &["POST"],
            Key(_) => &["GET", "PATCH"],
            Relay(_) | Messages | CountTokens | TenantDisable(_) | TenantEnable(_)
            | KeyRevoke(_) | KeyRotate(_) => &["POST"],
            Tenants | Channels | TenantKeys(_) | TenantTokens(_) => &["GET", "POST"],
            TenantTokenRevoke(_) => &["POST"],
            Tenant(_) => &["GET", "PATCH"],
            Channel(_) => &["GET", "PATCH", "DELETE"],
            ModelMap => &["GET", "PUT"],
            ModelMapEntry(_) | ModelGroup(_) | Price(_) => &["GET", "PUT", "DELETE"],
            ModelGroups | Prices => &["GET"],
        }
    }

    pub fn is_admin(&self) -> bool {
        use Resource::*;
        match self {
            Health | Models | Model(_) | Relay(_) | Messages | CountTokens | Dashboard => false,
            Tenants | Tenant(_) | TenantDisable(_) | TenantEnable(_) | TenantKeys(_) | Key(_)
            | KeyRevoke(_) | KeyRotate(_) | KeyLimits(_) | TenantLimits(_) | Channels
            | Channel(_) | ModelMap | ModelMapEntry(_) | Usage | UsageEntry(_) | Audit
            | TenantTokens(_) | TenantTokenRevoke(_) | ModelGroups | ModelGroup(_) | Prices
            | Price(_) | ChannelHealth(_) | ChannelKeyEnable(..) | Analytics(_) => true,
        }
    }
}

impl Resource {
    /// What the audit log calls a change: `(action, target type, target id)`. `None` for
    /// requests that change nothing. A create's id is only known after it (`None` here).
    pub fn audit(&self, method: &str) -> Option<(&'static str, &'static str, Option<&str>)> {
        use Resource::*;
        Some(match (self, method) {
            (_, "GET" | "HEAD") => return None,
            (Tenants, _) => ("tenant.create", "tenant", None),
            (Tenant(id), _) => ("tenant.update", "tenant", Some(id)),
            (TenantDisable(id), _) => ("tenant.disable", "tenant", Some(id)),
            (TenantEnable(id), _) => ("tenant.enable", "tenant", Some(id)),
            (TenantKeys(_), _) => ("key.create", "key", None),
            (Key(id), _) => ("key.update", "key", Some(id)),
            (KeyRevoke(id), _) => ("key.revoke", "key", Some(id)),
            (KeyRotate(id), _) => ("key.rotate", "key", Some(id)),
            (Channels, _) => ("channel.create", "channel", None),
            (Channel(id), "DELETE") => ("channel.delete", "channel", Some(id)),
            (Channel(id), _) => ("channel.update", "channel", Some(id)),
            (ModelMap, _) => ("model_map.replace", "model_map", Some("model_map")),
            (ModelMapEntry(m), "DELETE") => ("model_map.delete", "model_map", Some(m)),
            (ModelMapEntry(m), _) => ("model_map.set", "model_map", Some(m)),
            (TenantTokens(_), _) => ("tenant_token.create", "tenant_token", None),
            (ModelGroup(g), "DELETE") => ("model_group.delete", "model_group", Some(g)),
            (ModelGroup(g), _) => ("model_group.set", "model_group", Some(g)),
            (TenantTokenRevoke(id), _) => ("tenant_token.revoke", "tenant_token", Some(id)),
            (ChannelKeyEnable(c, _), _) => ("channel.key_enable", "channel", Some(c)),
            (Price(m), "DELETE") => ("price.delete", "price", Some(m)),
            (Price(m), _) => ("price.set", "price", Some(m)),
            (
                Health | Models | Model(_) | Relay(_) | Messages | CountTokens | KeyLimits(_)
                | TenantLimits(_) | Usage | UsageEntry(_) | Audit | ModelGroups | Prices
                | ChannelHealth(_) | Analytics(_) | Dashboard,
                _,
            ) => return None,
        })
    }
}

/// Resolve a request to a resource, checking the method. `HEAD` is served wherever `GET` is.
pub fn route(method: &str, path: &str) -> Result<Resource, RelayError> {
    let resource = Resource::parse(path).ok_or_else(|| RelayError::NotFound {
        what: format!("Route {method} {path}"),
    })?;
    let allowed = resource.allowed_methods();
    let method_ok = allowed.contains(&method) || (method == "HEAD" && allowed.contains(&"GET"));
    if method_ok {
        Ok(resource)
    } else {
        Err(RelayError::MethodNotAllowed { allowed })
    }
}

/// The query of an admin listing: exact-match filters, `before` (Unix ms) and `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub filters: std::collections::BTreeMap<String, String>,
    pub before: Option<i64>,
    pub limit: u32,
}

impl Listing {
    pub fn filter(&self, name: &str) -> Option<String> {
        self.filters.get(name).cloned()
    }
}

/// Parses a listing's query string, accepting only the named filters (400 naming any other).
pub fn parse_listing(query: &str, filters: &[&str]) -> Result<Listing, RelayError> {
    let mut listing = Listing {
        filters: Default::default(),
        before: None,
        limit: 100,
    };
    let bad = |param: &str, message: &str| RelayError::invalid_value(param, message);
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "before" => {
                listing.before = Some(
                    value
                        .parse()
                        .map_err(|_| bad("before", "must be Unix milliseconds"))?,
                )
            }
            "limit" => {
                listing.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| bad("limit", "must be between 1 and 1000"))?
            }
            f if filters.contains(&f) => {
                listing.filters.insert(name, value);
            }
            _ => {
                let expected = format!(
                    "unknown filter; expected {}, before, limit",
                    filters.join(", ")
                );
                return Err(bad(&name, &expected));
            }
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_routes() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Ok(Resource::Relay(Endpoint::ChatCompletions))
        );
        assert_eq!(route("GET", "/v1/models/"), Ok(Resource::Models));
        assert_eq!(
            route("GET", "/v1/models/meta-llama/Llama-3-8b"),
            Ok(Resource::Model("meta-llama/Llama-3-8b".into()))
        );
        assert_eq!(route("HEAD", "/health"), Ok(Resource::Health));
        assert_eq!(route("POST", "/v1/messages"), Ok(Resource::Messages));
        assert_eq!(
            route("POST", "/v1/messages/count_tokens"),
            Ok(Resource::CountTokens)
        );
    }

    #[test]
    fn wrong_method_names_the_allowed_ones() {
        let err = route("GET", "/v1/chat/completions").unwrap_err();
        assert_eq!(err.status(), 405);
        assert_eq!(err.headers(), vec![("allow", "POST".to_string())]);
        assert_eq!(
            route("DELETE", "/admin/tenants/t1").unwrap_err().status(),
            405
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        for p in [
            "/",
            "/v1",
            "/v2/chat/completions",
            "/admin",
            "/admin/tenants/t/x",
            "/v1/models//",
        ] {
            let r = route("GET", p);
            assert_eq!(r.clone().map_err(|e| e.status()), Err(404), "{p}: {r:?}");
        }
    }

    #[test]
    fn admin_routes_decode_ids() {
        assert_eq!(
            route("POST", "/admin/tenants/ten_1/keys"),
            Ok(Resource::TenantKeys("ten_1".into()))
        );
        assert_eq!(
            route("POST", "/admin/keys/k%201/revoke"),
            Ok(Resource::KeyRevoke("k 1".into()))
        );
        assert_eq!(
            route("PUT", "/admin/model-map/org/model%2Fx"),
            Ok(Resource::ModelMapEntry("org/model/x".into()))
        );
        assert!(route("GET", "/admin/usage").unwrap().is_admin());
        assert!(!route("GET", "/health").unwrap().is_admin());
    }

    #[test]
    fn every_admin_change_has_an_audit_action() {
        assert_eq!(
            Resource::Tenants.audit("POST"),
            Some(("tenant.create", "tenant", None))
        );
        assert_eq!(
            Resource::Channel("c".into()).audit("DELETE"),
            Some(("channel.delete", "channel", Some("c")))
        );
        assert_eq!(
            Resource::KeyRevoke("k".into()).audit("POST"),
            Some(("key.revoke", "key", Some("k")))
        );
        assert_eq!(Resource::Tenants.audit("GET"), None);
        assert_eq!(
            Resource::Relay(Endpoint::ChatCompletions).audit("POST"),
            None
        );
        // Every admin resource that accepts a non-GET method is audited.
        for r in [
            Resource::Tenants,
            Resource::Tenant("t".into()),
            Resource::TenantKeys("t".into()),
            Resource::Key("k".into()),
            Resource::KeyRotate("k".into()),
            Resource::Channels,
            Resource::Channel("c".into()),
            Resource::ModelMap,
            Resource::ModelMapEntry("m".into()),
            Resource::TenantDisable("t".into()),
            Resource::TenantEnable("t".into()),
        ] {
            for m in r.allowed_methods().iter().filter(|m| **m != "GET") {
                assert!(r.audit(m).is_some(), "{r:?} {m}");
            }
        }
    }

    #[test]
    fn listings_parse_filters_before_and_limit() {
        let l = parse_listing("tenant_id=t1&before=5&limit=10", &["tenant_id", "key_id"]).unwrap();
        assert_eq!(
            (l.filter("tenant_id"), l.filter("key_id"), l.before, l.limit),
            (Some("t1".into()), None, Some(5), 10)
        );
        assert_eq!(parse_listing("", &["a"]).unwrap().limit, 100);
        assert_eq!(
            parse_listing("limit=0", &["a"]).unwrap_err().param(),
            Some("limit")
        );
        assert_eq!(
            parse_listing("before=x", &["a"]).unwrap_err().param(),
            Some("before")
        );
        let e = parse_listing("key=1", &["tenant_id", "key_id"]).unwrap_err();
        assert_eq!(e.param(), Some("key"));
        assert!(e
            .message()
            .contains("expected tenant_id, key_id, before, limit"));
    }
}
