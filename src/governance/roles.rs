//! Roles of tenant admin tokens: what kind of work a token is for. The global operator token
//! has no role and may do everything; a tenant token has exactly one role, and tokens issued
//! before roles existed are `admin`, which is what they could do then.
//!
//! What each role may do with each admin route is a fact of the route and lives beside the
//! route table (`api::routes::allowed`), exhaustive over the routes, so a new route does not
//! compile until every role's answer is decided.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RelayError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything a tenant token may touch: today's tenant token.
    #[default]
    Admin,
    /// Keys and plans: issue, change, rotate and revoke keys; define plans.
    Keys,
    /// Read-only: usage, analytics, the audit log, limiter state, end users.
    Viewer,
    /// Spend: read usage, analytics and prices; read and set the tenant's budget.
    Billing,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Keys, Role::Viewer, Role::Billing];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Keys => "keys",
            Role::Viewer => "viewer",
            Role::Billing => "billing",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The stored column of a token row: absent (a token from before roles) is `admin`; an
    /// unknown value fails closed to `viewer`, the role that changes nothing.
    pub fn from_stored(text: Option<&str>) -> Role {
        match text {
            None => Role::Admin,
            Some(text) => Role::parse(text).unwrap_or(Role::Viewer),
        }
    }
}

/// The `role` field of a token's creation body: absent or `null` is `admin`.
pub fn parse_role(value: Option<&Value>) -> Result<Role, RelayError> {
    match value {
        None | Some(Value::Null) => Ok(Role::default()),
        Some(Value::String(text)) => Role::parse(text.trim()).ok_or_else(|| {
            RelayError::invalid_value("role", "must be one of admin, keys, viewer, billing")
        }),
        Some(_) => Err(RelayError::invalid_type("role", "a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_parse_and_default_to_admin() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(serde_json::to_value(role).unwrap(), json!(role.as_str()));
            assert_eq!(parse_role(Some(&json!(role.as_str()))), Ok(role));
        }
        assert_eq!(Role::default(), Role::Admin);
        assert_eq!(parse_role(None), Ok(Role::Admin));
        assert_eq!(parse_role(Some(&Value::Null)), Ok(Role::Admin));
        assert_eq!(parse_role(Some(&json!(" keys "))), Ok(Role::Keys));
        for bad in [json!("Admin"), json!("owner"), json!(1)] {
            assert_eq!(
                parse_role(Some(&bad)).unwrap_err().param(),
                Some("role"),
                "{bad}"
            );
        }
    }

    #[test]
    fn stored_roles_fail_closed() {
        assert_eq!(Role::from_stored(None), Role::Admin);
        assert_eq!(Role::from_stored(Some("billing")), Role::Billing);
        assert_eq!(Role::from_stored(Some("superuser")), Role::Viewer);
    }
}
