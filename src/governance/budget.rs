//! A tenant's spending budget: a soft limit that warns (a response header and a webhook,
//! retried until delivered) and a hard limit that either blocks or downgrades requests to a
//! cheaper fallback model. Pure: the tenant's limiter Durable Object holds the spend and the
//! queue of webhooks to deliver, and passes the time in.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::RelayError;
use crate::governance::alerts::{check_webhook_url, WebhookFormat};
use crate::governance::MAX_LIMIT;
use crate::support::calendar::Period;

/// What a request over the hard limit gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHard {
    /// Refused with 402 `budget_exceeded`.
    #[default]
    Block,
    /// Served by `fallback_model` instead (its cost still counts).
    Downgrade,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default = "default_period")]
    pub period: Period,
    /// Spend (micro-units of the tenant's currency) from which responses carry a warning and
    /// the webhook is sent, once per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_micros: Option<u64>,
    /// Spend beyond which `on_hard` applies. Reservations count: a request that could take
    /// the spend past it is already over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_micros: Option<u64>,
    #[serde(default)]
    pub on_hard: OnHard,
    /// A public model name; required for `downgrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
    /// Where the soft-limit notice is POSTed (https; plain http only to loopback in local dev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// `json` (the relay's own payload) or `slack` (`{"text": …}` for a Slack incoming webhook).
    #[serde(default, skip_serializing_if = "WebhookFormat::is_json")]
    pub webhook_format: WebhookFormat,
}

fn default_period() -> Period {
    Period::Month
}

/// Checks a budget from the admin API. Errors are (field, message), the field under `param`.
/// `allow_loopback_http` is on only in local development, where test listeners are plain http.
pub fn check_budget(
    budget: &Budget,
    param: &str,
    allow_loopback_http: bool,
) -> Result<(), RelayError> {
    let field = |f: &str| format!("{param}.{f}");
    let max = MAX_LIMIT;
    for (name, v) in [
        ("soft_micros", budget.soft_micros),
        ("hard_micros", budget.hard_micros),
    ] {
        if v.is_some_and(|v| v > max) {
            return Err(RelayError::invalid_value(
                &field(name),
                format!("must be between 0 and {max}"),
            ));
        }
    }
    if budget.soft_micros.is_none() && budget.hard_micros.is_none() {
        return Err(RelayError::invalid_value(
            &field("soft_micros"),
            "a budget needs soft_micros, hard_micros or both",
        ));
    }
    if let (Some(s), Some(h)) = (budget.soft_micros, budget.hard_micros) {
        if s > h {
            return Err(RelayError::invalid_value(
                &field("soft_micros"),
                "must not exceed hard_micros",
            ));
        }
    }
    if budget.on_hard == OnHard::Downgrade {
        match &budget.fallback_model {
            Some(m) if !m.trim().is_empty() => {}
            _ => {
                return Err(RelayError::invalid_value(
                    &field("fallback_model"),
                    "on_hard \"downgrade\" needs a fallback_model",
                ))
            }
        }
        if budget.hard_micros.is_none() {
            return Err(RelayError::invalid_value(
                &field("hard_micros"),
                "on_hard \"downgrade\" needs hard_micros",
            ));
        }
    }
    if let Some(url) = &budget.webhook_url {
        check_webhook_url(url, allow_loopback_http)
            .map_err(|m| RelayError::invalid_value(&field("webhook_url"), m))?;
    }
    Ok(())
}

/// Where a tenant stands against its budget, as a limiter reports it with each decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Settled spend in the budget's current period.
    pub spent_micros: u64,
    pub soft_micros: Option<u64>,
    pub hard_micros: Option<u64>,
}

impl BudgetStatus {
    pub fn over_soft(&self) -> bool {
        self.soft_micros.is_some_and(|s| self.spent_micros >= s)
    }

    /// The `x-relay-budget-warning` header, when the soft limit has been reached.
    pub fn warning(&self) -> Option<String> {
        let soft = self.soft_micros?;
        self.over_soft().then(|| {
            format!(
                "soft budget reached: spent {} of {} micro-units this period",
                self.spent_micros, soft
            )
        })
    }
}

/// The soft-limit notice, as POSTed to the tenant's webhook. `tag`: the tag of a tag budget
/// (`ledger::tags`), absent from the notice for the tenant's own budget.
pub fn soft_limit_body(
    tenant_id: &str,
    tag: Option<&str>,
    budget: &Budget,
    period_start_ms: i64,
    period_end_ms: i64,
    spent_micros: u64,
    now_ms: i64,
) -> String {
    if budget.webhook_format == WebhookFormat::Slack {
        let soft = budget.soft_micros.unwrap_or(0);
        let whose = match tag {
            Some(tag) => format!("tag `{tag}` of tenant `{tenant_id}`"),
            None => format!("tenant `{tenant_id}`"),
        };
        return json!({
            "text": format!(
                ":warning: edgerelay: {whose} has spent {spent_micros} of its {} soft budget of {soft} micro-units.",
                budget.period.name()
            )
        })
        .to_string();
    }
    let mut body = json!({
        "type": "budget.soft_limit_reached",
        "tenant_id": tenant_id,
        "period": budget.period.name(),
        "period_start_ms": period_start_ms,
        "period_end_ms": period_end_ms,
        "spent_micros": spent_micros,
        "soft_limit_micros": budget.soft_micros,
        "hard_limit_micros": budget.hard_micros,
        "on_hard": budget.on_hard,
        "at_ms": now_ms,
    });
    if let (Some(tag), Some(map)) = (tag, body.as_object_mut()) {
        map.insert("tag".into(), json!(tag));
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::alerts::signature;

    fn budget() -> Budget {
        Budget {
            period: Period::Month,
            soft_micros: Some(1_000),
            hard_micros: Some(2_000),
            on_hard: OnHard::Block,
            fallback_model: None,
            webhook_url: Some("https://hooks.example.com/budget".into()),
            webhook_format: WebhookFormat::Json,
        }
    }

    #[test]
    fn notices_are_signed_and_may_be_slack_shaped() {
        // HMAC-SHA256 of "1700000000000.{}" under "secret", checked independently.
        let sig = signature("secret", 1_700_000_000_000, "{}");
        assert_eq!(
            sig,
            "t=1700000000000,v1=8399216d111287e3bb28e25c0f4f31dffdf831c68c9ee2b96c2f67c9b81d341b"
        );
        assert_ne!(sig, signature("other", 1_700_000_000_000, "{}"));
        let slack = Budget {
            webhook_format: WebhookFormat::Slack,
            ..budget()
        };
        let body: serde_json::Value =
            serde_json::from_str(&soft_limit_body("t1", None, &slack, 0, 1, 1500, 0)).unwrap();
        assert!(body["text"].as_str().unwrap().contains("t1"));
    }

    #[test]
    fn budgets_are_checked_field_by_field() {
        assert!(check_budget(&budget(), "budget", false).is_ok());
        let mut b = budget();
        b.soft_micros = Some(3_000);
        assert_eq!(
            check_budget(&b, "budget", false)
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "budget.soft_micros"
        );
        let mut b = budget();
        b.on_hard = OnHard::Downgrade;
        assert_eq!(
            check_budget(&b, "budget", false)
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "budget.fallback_model"
        );
        b.fallback_model = Some("cheap".into());
        assert!(check_budget(&b, "budget", false).is_ok());
        b.hard_micros = None;
        assert_eq!(
            check_budget(&b, "budget", false)
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "budget.hard_micros"
        );
        let mut b = budget();
        b.webhook_url = Some("http://hooks.example.com".into());
        assert_eq!(
            check_budget(&b, "budget", true)
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "budget.webhook_url"
        );
        let mut b = budget();
        b.hard_micros = Some(u64::MAX);
        assert_eq!(
            check_budget(&b, "budget", false)
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "budget.hard_micros"
        );
        let b = Budget {
            soft_micros: None,
            hard_micros: None,
            ..budget()
        };
        assert!(check_budget(&b, "budget", false).is_err());
        let parsed: Result<Budget, _> =
            serde_json::from_value(serde_json::json!({"soft_micros": 1, "bogus": 2}));
        assert!(parsed.is_err(), "unknown fields are refused");
    }

    #[test]
    fn warning_only_once_the_soft_limit_is_reached() {
        let mut s = BudgetStatus {
            spent_micros: 999,
            soft_micros: Some(1_000),
            hard_micros: None,
        };
        assert_eq!(s.warning(), None);
        s.spent_micros = 1_000;
        assert!(s.warning().unwrap().contains("1000 of 1000"));
        s.soft_micros = None;
        assert_eq!(s.warning(), None);
    }

    #[test]
    fn the_notice_names_tenant_period_and_spend() {
        let body: serde_json::Value =
            serde_json::from_str(&soft_limit_body("t1", None, &budget(), 10, 20, 1500, 15))
                .unwrap();
        assert_eq!(body["type"], "budget.soft_limit_reached");
        assert!(body.get("tag").is_none());
        let tagged: serde_json::Value = serde_json::from_str(&soft_limit_body(
            "t1",
            Some("team:search"),
            &budget(),
            10,
            20,
            1500,
            15,
        ))
        .unwrap();
        assert_eq!(tagged["tag"], "team:search");
        assert_eq!(body["tenant_id"], "t1");
        assert_eq!(body["period"], "month");
        assert_eq!(body["spent_micros"], 1500);
        assert_eq!(body["soft_limit_micros"], 1000);
    }
}
