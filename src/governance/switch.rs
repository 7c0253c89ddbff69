//! The operator's relay switch: one for the whole relay and one per tenant,
//! `{"enabled": false, "message": "…", "retry_after_s": 300}`, its validation, and whether a
//! request may pass. Switched off, client traffic gets 503 `relay_disabled` with the
//! operator's message and `Retry-After`; the admin API and the dashboard never do, since they
//! are how the operator switches it back on, and `/health` keeps answering so that monitoring
//! tells "switched off" (client routes 503) from "down" (no answer at all).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RelayError;
use crate::support::fields::parse_object;

pub const MAX_MESSAGE_CHARS: usize = 500;
/// A day: a longer wait is better said in the message than in `Retry-After`.
pub const MAX_RETRY_AFTER_S: u32 = 86_400;

/// One switch. The default, and an absent switch, is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub enabled: bool,
    /// Shown to clients as it is while the switch is off (kept while on, for next time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u32>,
}

impl Default for Switch {
    fn default() -> Switch {
        Switch {
            enabled: true,
            message: None,
            retry_after_s: None,
        }
    }
}

/// What a request is, as the switch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// The admin API and the dashboard page: never switched off.
    Admin,
    /// `GET /health`: never switched off.
    Health,
    /// Everything a relay key does (`/v1/...`): switched off by either switch.
    Client,
}

/// A switch from the admin API (`PUT …/switch`). Errors name the field.
pub fn parse_switch(bytes: &[u8]) -> Result<Switch, RelayError> {
    let map = parse_object(bytes, &["enabled", "message", "retry_after_s"])?;
    let enabled = match map.get("enabled") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => return Err(RelayError::missing("enabled")),
        Some(_) => return Err(RelayError::invalid_type("enabled", "a boolean")),
    };
    let message = match map.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > MAX_MESSAGE_CHARS {
                return Err(RelayError::invalid_value(
                    "message",
                    format!("must be 1 to {MAX_MESSAGE_CHARS} characters, or null"),
                ));
            }
            // Clients show it, and logs print it: one line of text.
            if s.chars().any(char::is_control) {
                return Err(RelayError::invalid_value(
                    "message",
                    "must be one line without control characters",
                ));
            }
            Some(s.to_string())
        }
        Some(_) => return Err(RelayError::invalid_type("message", "a string")),
    };
    let retry_after_s = match map.get("retry_after_s") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| (1..=MAX_RETRY_AFTER_S).contains(v))
                .ok_or_else(|| {
                    RelayError::invalid_value(
                        "retry_after_s",
                        format!("must be an integer between 1 and {MAX_RETRY_AFTER_S} (seconds)"),
                    )
                })?,
        ),
        Some(_) => return Err(RelayError::invalid_type("retry_after_s", "an integer")),
    };
    Ok(Switch {
        enabled,
        message,
        retry_after_s,
    })
}

/// Whether `traffic` may pass the global switch and, once the request's tenant is known, the
/// tenant's. The global switch is checked first: while it is off, no tenant is told it alone
/// was switched off.
pub fn admit(global: &Switch, tenant: Option<&Switch>, traffic: Traffic) -> Result<(), RelayError> {
    match traffic {
        Traffic::Admin | Traffic::Health => return Ok(()),
        Traffic::Client => {}
    }
    let refuse = |scope: &'static str, s: &Switch| RelayError::RelayDisabled {
        scope,
        message: s.message.clone(),
        retry_after_s: s.retry_after_s,
    };
    if !global.enabled {
        return Err(refuse("relay", global));
    }
    match tenant {
        Some(t) if !t.enabled => Err(refuse("tenant", t)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(message: &str, retry: u32) -> Switch {
        Switch {
            enabled: false,
            message: Some(message.into()),
            retry_after_s: Some(retry),
        }
    }

    #[test]
    fn off_switches_refuse_client_traffic_only() {
        let on = Switch::default();
        assert_eq!(admit(&on, None, Traffic::Client), Ok(()));
        assert_eq!(admit(&on, Some(&on), Traffic::Client), Ok(()));
        let global = off("Upgrading the relay.", 300);
        let e = admit(&global, Some(&on), Traffic::Client).unwrap_err();
        assert_eq!((e.status(), e.code()), (503, "relay_disabled"));
        assert_eq!(e.headers(), vec![("retry-after", "300".to_string())]);
        assert!(e.message().contains("Upgrading the relay."));
        for t in [Traffic::Admin, Traffic::Health] {
            assert_eq!(admit(&global, Some(&global), t), Ok(()), "{t:?}");
        }
        // A tenant off, the relay on.
        let tenant = off("Your contract is paused.", 60);
        let e = admit(&on, Some(&tenant), Traffic::Client).unwrap_err();
        assert!(matches!(
            e,
            RelayError::RelayDisabled {
                scope: "tenant",
                ..
            }
        ));
        assert!(e.message().contains("Your contract is paused."));
        assert_eq!(admit(&on, Some(&tenant), Traffic::Admin), Ok(()));
        // Both off: the relay's message wins.
        let e = admit(&global, Some(&tenant), Traffic::Client).unwrap_err();
        assert!(matches!(
            e,
            RelayError::RelayDisabled { scope: "relay", .. }
        ));
        // Without a Retry-After, none is sent.
        let bare = Switch {
            enabled: false,
            ..Switch::default()
        };
        assert!(admit(&bare, None, Traffic::Client)
            .unwrap_err()
            .headers()
            .is_empty());
    }

    #[test]
    fn switches_are_validated_naming_the_field() {
        let s = parse_switch(
            br#"{"enabled": false, "message": " Back at 14:00 UTC. ", "retry_after_s": 300}"#,
        )
        .unwrap();
        assert_eq!(s, off("Back at 14:00 UTC.", 300));
        assert_eq!(
            parse_switch(br#"{"enabled": true}"#).unwrap(),
            Switch::default()
        );
        let param = |body: &str| {
            parse_switch(body.as_bytes())
                .unwrap_err()
                .param()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(param("{}"), "enabled");
        assert_eq!(param(r#"{"enabled": "no"}"#), "enabled");
        assert_eq!(param(r#"{"enabled": false, "message": ""}"#), "message");
        assert_eq!(param(r#"{"enabled": false, "message": "a\nb"}"#), "message");
        let long = format!(r#"{{"enabled": false, "message": "{}"}}"#, "x".repeat(501));
        assert_eq!(param(&long), "message");
        assert_eq!(
            param(r#"{"enabled": false, "retry_after_s": 0}"#),
            "retry_after_s"
        );
        assert_eq!(
            param(r#"{"enabled": false, "retry_after_s": 86401}"#),
            "retry_after_s"
        );
        assert_eq!(
            param(r#"{"enabled": false, "retry_after_s": "5"}"#),
            "retry_after_s"
        );
        assert_eq!(param(r#"{"enabled": false, "reason": "x"}"#), "reason");
        // What a GET shows is accepted by a PUT.
        let shown = serde_json::to_vec(&off("m", 5)).unwrap();
        assert_eq!(parse_switch(&shown).unwrap(), off("m", 5));
    }
}
