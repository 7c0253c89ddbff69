//! Access decisions for an authenticated key: may it be used now, and which public models may
//! it reach. Pure: the caller passes the key's record, the model map and the time.

use crate::admin::config::{
    KeyGrant, KeyStatus, ModelGroups, ModelMap, ModelTarget, Status, GROUP_PREFIX,
};
use crate::api::paths::Resource;
use crate::error::RelayError;
use crate::governance::rules::Denial;

/// Is this key usable at `now_ms`? Checked on every request, also when the record is cached,
/// so an expiry takes effect on the millisecond.
pub fn check_key(grant: &KeyGrant, now_ms: i64) -> Result<(), RelayError> {
    if grant.key_status == KeyStatus::Revoked {
        return Err(RelayError::KeyRevoked);
    }
    if grant.expires_at.is_some_and(|at| now_ms >= at) {
        return Err(RelayError::KeyExpired);
    }
    if grant.tenant_status == Status::Disabled {
        return Err(RelayError::TenantDisabled);
    }
    Ok(())
}

/// Who is calling the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The global admin token: everything.
    Admin,
    /// A tenant-scoped admin token: its own tenant's keys, limits, usage and audit rows only.
    Tenant { tenant_id: String, token_id: String },
}

impl Actor {
    /// How the audit log names it.
    pub fn name(&self) -> String {
        match self {
            Actor::Admin => "admin".into(),
            Actor::Tenant { token_id, .. } => format!("tenant_token:{token_id}"),
        }
    }
}

/// What a tenant token may do with an admin resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope<'a> {
    /// Allowed if this tenant id is the token's own.
    OwnTenant(&'a str),
    /// Allowed if this key belongs to the token's tenant.
    OwnKey(&'a str),
    /// A listing, narrowed to the token's tenant.
    Narrowed,
    /// Operator territory: tenants at large, channels, the model map, tokens.
    Forbidden,
}

pub fn tenant_scope<'a>(resource: &'a Resource, method: &str) -> TenantScope<'a> {
    use Resource::*;
    match resource {
        // A tenant may read itself, but not raise its own limits or re-enable itself.
        Tenant(t) if method == "GET" => TenantScope::OwnTenant(t),
        TenantKeys(t) | TenantLimits(t) => TenantScope::OwnTenant(t),
        Key(k) | KeyRevoke(k) | KeyRotate(k) | KeyLimits(k) => TenantScope::OwnKey(k),
        Usage | UsageEntry(_) | Audit | Analytics(_) => TenantScope::Narrowed,
        Tenant(_) | Tenants | TenantDisable(_) | TenantEnable(_) | TenantTokens(_)
        | TenantTokenRevoke(_) | Channels | Channel(_) | ModelMap | ModelMapEntry(_)
        | ModelGroups | ModelGroup(_) | Price(_) | ChannelHealth(_) | ChannelKeyEnable(..) => {
            TenantScope::Forbidden
        }
        // Prices are what every tenant is charged by: readable, not writable.
        Prices => TenantScope::Narrowed,
        Health | Models | Model(_) | Relay(_) | Messages | CountTokens | Dashboard => {
            TenantScope::Forbidden
        }
    }
}

/// Do the key's and its tenant's access rules let this client in now?
pub fn check_rules(
    grant: &KeyGrant,
    client_ip: Option<&str>,
    country: Option<&str>,
    now_ms: i64,
) -> Result<(), RelayError> {
    for rules in [&grant.key_rules, &grant.tenant_rules] {
        if rules.is_open() {
            continue;
        }
        crate::governance::rules::check(rules, client_ip, country, now_ms).map_err(|denial| {
            RelayError::AccessDenied {
                reason: match denial {
                    Denial::IpNotAllowed => "from this address",
                    Denial::CountryNotAllowed => "from this country",
                    Denial::OutsideTimeWindow => "at this time",
                },
            }
        })?;
    }
    Ok(())
}

/// May this key use `model`? Both the tenant's and the key's allowlists must admit it
/// (`None` admits everything).
pub fn model_allowed(grant: &KeyGrant, groups: &ModelGroups, model: &str) -> bool {
    let admits_entry = |entry: &String| match entry.strip_prefix(GROUP_PREFIX) {
        // A group that no longer exists admits nothing: fail closed.
        Some(group) => groups
            .get(group)
            .is_some_and(|members| members.iter().any(|m| m == model)),
        None => entry == model,
    };
    let admits =
        |list: &Option<Vec<String>>| list.as_ref().is_none_or(|l| l.iter().any(admits_entry));
    admits(&grant.tenant_models) && admits(&grant.key_models)
}

/// The target of a public model this key may use. An unknown model and a forbidden one get the
/// same 404, so a key cannot probe which models exist beyond its own.
pub fn resolve<'a>(
    map: &'a ModelMap,
    groups: &ModelGroups,
    grant: &KeyGrant,
    model: &str,
) -> Result<&'a ModelTarget, RelayError> {
    map.get(model)
        .filter(|_| model_allowed(grant, groups, model))
        .ok_or_else(|| RelayError::ModelNotFound {
            model: model.to_string(),
        })
}

/// The public models this key may use, sorted.
pub fn visible_models<'a>(
    map: &'a ModelMap,
    groups: &ModelGroups,
    grant: &KeyGrant,
) -> Vec<(&'a str, &'a ModelTarget)> {
    map.iter()
        .filter(|(m, _)| model_allowed(grant, groups, m))
        .map(|(m, t)| (m.as_str(), t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> KeyGrant {
        KeyGrant {
            key_id: "k".into(),
            tenant_id: "t".into(),
            key_status: KeyStatus::Active,
            tenant_status: Status::Active,
            key_models: None,
            tenant_models: None,
            expires_at: None,
            key_limits: Default::default(),
            tenant_limits: Default::default(),
            key_rules: Default::default(),
            jurisdiction: None,
            settings: Default::default(),
            key_cache_ttl_s: None,
            tenant_rules: Default::default(),
        }
    }

    fn map(models: &[&str]) -> ModelMap {
        models
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    ModelTarget {
                        channel_id: "c".into(),
                        upstream_model: format!("up-{m}"),
                        created: 0,
                        routes: Vec::new(),
                        hedge_ms: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn key_state_checks_in_order() {
        let mut g = grant();
        assert_eq!(check_key(&g, 0), Ok(()));
        g.expires_at = Some(100);
        assert_eq!(check_key(&g, 99), Ok(()));
        assert_eq!(check_key(&g, 100), Err(RelayError::KeyExpired));
        g.tenant_status = Status::Disabled;
        g.expires_at = None;
        assert_eq!(check_key(&g, 0), Err(RelayError::TenantDisabled));
        g.key_status = KeyStatus::Revoked;
        assert_eq!(check_key(&g, 0), Err(RelayError::KeyRevoked));
    }

    #[test]
    fn tenant_tokens_reach_only_their_own_tenant() {
        fn own<'a>(r: &'a Resource, m: &str) -> TenantScope<'a> {
            tenant_scope(r, m)
        }
        assert_eq!(
            own(&Resource::TenantKeys("t1".into()), "POST"),
            TenantScope::OwnTenant("t1")
        );
        assert_eq!(
            own(&Resource::Tenant("t1".into()), "GET"),
            TenantScope::OwnTenant("t1")
        );
        assert_eq!(
            own(&Resource::Tenant("t1".into()), "PATCH"),
            TenantScope::Forbidden
        );
        assert_eq!(
            own(&Resource::KeyRevoke("k".into()), "POST"),
            TenantScope::OwnKey("k")
        );
        assert_eq!(own(&Resource::Usage, "GET"), TenantScope::Narrowed);
        for forbidden in [
            Resource::Tenants,
            Resource::Channels,
            Resource::ModelMap,
            Resource::TenantEnable("t1".into()),
            Resource::TenantTokens("t1".into()),
        ] {
            assert_eq!(
                own(&forbidden, "GET"),
                TenantScope::Forbidden,
                "{forbidden:?}"
            );
        }
        assert_eq!(
            Actor::Tenant {
                tenant_id: "t".into(),
                token_id: "tt_1".into()
            }
            .name(),
            "tenant_token:tt_1"
        );
    }

    #[test]
    fn key_and_tenant_rules_both_apply() {
        let mut g = grant();
        assert_eq!(check_rules(&g, None, None, 0), Ok(()));
        g.key_rules.ip_allow = vec!["10.0.0.0/8".into()];
        g.tenant_rules.countries_deny = vec!["KP".into()];
        assert_eq!(check_rules(&g, Some("10.1.2.3"), Some("DE"), 0), Ok(()));
        assert_eq!(
            check_rules(&g, Some("11.1.2.3"), Some("DE"), 0)
                .unwrap_err()
                .code(),
            "access_denied"
        );
        let e = check_rules(&g, Some("10.1.2.3"), Some("KP"), 0).unwrap_err();
        assert_eq!((e.status(), e.message().contains("country")), (403, true));
    }

    #[test]
    fn groups_admit_their_members_as_they_are_now() {
        let m = map(&["mini", "big", "other"]);
        let mut groups: ModelGroups = [("cheap".to_string(), vec!["mini".to_string()])].into();
        let mut g = grant();
        g.key_models = Some(vec!["@cheap".into(), "other".into()]);
        let names = |groups: &ModelGroups| -> Vec<String> {
            visible_models(&m, groups, &g)
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect()
        };
        assert_eq!(names(&groups), vec!["mini", "other"]);
        groups.insert("cheap".into(), vec!["mini".into(), "big".into()]);
        assert_eq!(
            names(&groups),
            vec!["big", "mini", "other"],
            "a group change applies at once"
        );
        groups.clear();
        assert_eq!(
            names(&groups),
            vec!["other"],
            "a deleted group admits nothing"
        );
    }

    #[test]
    fn allowlists_intersect() {
        let m = map(&["a", "b", "c"]);
        let mut g = grant();
        assert_eq!(visible_models(&m, &ModelGroups::new(), &g).len(), 3);
        g.tenant_models = Some(vec!["a".into(), "b".into()]);
        g.key_models = Some(vec!["b".into(), "c".into()]);
        let names: Vec<_> = visible_models(&m, &ModelGroups::new(), &g)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(
            resolve(&m, &ModelGroups::new(), &g, "b")
                .unwrap()
                .upstream_model,
            "up-b"
        );
        assert_eq!(
            resolve(&m, &ModelGroups::new(), &g, "a")
                .unwrap_err()
                .code(),
            "model_not_found"
        );
        assert_eq!(
            resolve(&m, &ModelGroups::new(), &g, "zzz")
                .unwrap_err()
                .code(),
            "model_not_found"
        );
    }
}
