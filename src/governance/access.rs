//! Access decisions for an authenticated key: do its and its tenant's access rules admit this
//! client now, and which public models (named directly or through a model group) may it reach.
//! Pure: the caller passes the key's record, the groups and the time.

use std::collections::BTreeMap;

use crate::error::RelayError;
use crate::governance::grant::KeyGrant;
use crate::governance::rules::Denial;

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
    list_admits(&grant.tenant_models, groups, model)
        && list_admits(&grant.key_models, groups, model)
}

/// Does one allowlist admit `model`, directly or through a `@group` (`None` admits everything)?
pub fn list_admits(list: &Option<Vec<String>>, groups: &ModelGroups, model: &str) -> bool {
    let admits_entry = |entry: &String| match entry.strip_prefix(GROUP_PREFIX) {
        // A group that no longer exists admits nothing: fail closed.
        Some(group) => groups
            .get(group)
            .is_some_and(|members| members.iter().any(|m| m == model)),
        None => entry == model,
    };
    list.as_ref().is_none_or(|l| l.iter().any(admits_entry))
}

/// Named sets of public models (`cheap`, `frontier`): an allowlist entry `@cheap` admits every
/// model of the group as the group is at the time of the request, so changing a group changes
/// what every key listing it may use, without reissuing any key.
pub type ModelGroups = BTreeMap<String, Vec<String>>;

pub const GROUP_PREFIX: char = '@';

pub fn parse_model_groups(text: &str) -> Result<ModelGroups, String> {
    serde_json::from_str(text).map_err(|e| format!("model groups in KV are not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> KeyGrant {
        KeyGrant {
            key_id: "k".into(),
            tenant_id: "t".into(),
            ..KeyGrant::default()
        }
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
}
