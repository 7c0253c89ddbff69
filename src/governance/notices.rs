//! A tenant's own webhooks: where its notices go (`url`), which events each one wants
//! (`events`, with a `*` suffix wildcard), in which shape (`json` or `slack`), the one JSON
//! envelope every event is sent in, and the signed delivery headers. Budget, credit, breaker
//! and canary code build a [`Notice`]; [`pending_for`] turns it into the queued deliveries of
//! the webhooks that asked for it. Delivery and retries are `alerts::AlertQueue`'s.
//!
//! ## The JSON notice (what a receiver such as a Jira or other issue-tracker bridge reads)
//!
//! ```json
//! {
//!   "id": "credit.low_balance:ten_1:1767225600000",
//!   "type": "credit.low_balance",
//!   "severity": "warning",
//!   "tenant_id": "ten_1",
//!   "summary": "Tenant ten_1's prepaid balance is 4000000 micro-units, below its 5000000 threshold.",
//!   "at_ms": 1767225600000,
//!   "data": {"balance_micros": 4000000, "threshold_micros": 5000000}
//! }
//! ```
//!
//! - `id`: stable for one occurrence and the same in every retry: deduplicate on it (an issue
//!   tracker's "external id" or a label), since a delivery whose 2xx was lost is sent again.
//! - `type`: one of [`EVENT_TYPES`]; `severity`: `info`, `warning` or `critical` (a priority).
//! - `tenant_id`: `null` for operator-wide events (a breaker, a canary).
//! - `summary`: one line of text, fit for an issue's title.
//! - `at_ms`: when the relay saw it happen (Unix milliseconds).
//! - `data`: the event's own fields (documented per event on [`EVENT_TYPES`]); fit for an
//!   issue's description as pretty-printed JSON.
//!
//! Every delivery is a POST with `content-type: application/json`, `x-relay-event: <type>`,
//! `x-relay-delivery: <id>` and, when the deployment has a `WEBHOOK_SECRET`,
//! `x-relay-signature: t=<ms>,v1=<hex>` (HMAC-SHA256 of `<ms>.<body>`, see
//! `alerts::signature`): a receiver recomputes it, compares in constant time and rejects a
//! `t` older than a few minutes. A 2xx is success; anything else is retried with doubling
//! waits for about two hours. The `slack` format sends `{"text": "<emoji> <summary>"}` instead.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::RelayError;
use crate::governance::alerts::{check_webhook_url, signature, PendingAlert, WebhookFormat};

/// The events a webhook can ask for, and what their `data` holds:
///
/// - `budget.soft_limit_reached`: `period`, `period_start_ms`, `period_end_ms`,
///   `spent_micros`, `soft_limit_micros`, `hard_limit_micros`, `tag` (a tag budget's tag, or
///   absent).
/// - `credit.low_balance`: `balance_micros`, `threshold_micros`.
/// - `breaker.opened`: `channel_id`, `upstream_model`, `failures`, `successes`,
///   `open_until_ms`.
/// - `channel.error_rate_spike`: the same fields as `breaker.opened`.
/// - `canary.rolled_back`: `model`, `canary` (`channel_id`, `upstream_model`), `reason`,
///   `stable` and `canary_stats` (`requests`, `errors`, `error_rate_bps`, `p95_ms`).
pub const EVENT_TYPES: &[&str] = &[
    "budget.soft_limit_reached",
    "credit.low_balance",
    "breaker.opened",
    "channel.error_rate_spike",
    "canary.rolled_back",
];

/// Webhooks one tenant may have.
pub const MAX_WEBHOOKS: usize = 8;
/// Event patterns one webhook may list.
pub const MAX_EVENTS: usize = 32;

/// One webhook of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Event types, exact (`credit.low_balance`) or a prefix and `*` (`budget.*`, `*`).
    pub events: Vec<String>,
    #[serde(default)]
    pub format: WebhookFormat,
}

impl WebhookConfig {
    /// Whether this webhook wants `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        self.events.iter().any(|p| event_matches(p, event_type))
    }
}

/// `budget.*` matches every `budget.` event, `*` every event; anything else only itself.
pub fn event_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// One webhook from the admin API, errors naming the field under `param`
/// (`webhooks[0].events[2]`). An event pattern must match some event the relay sends, so a
/// misspelt one is refused rather than silently never firing. `allow_loopback_http`: local
/// development only (see `alerts::check_webhook_url`).
pub fn parse_webhook(
    value: &Value,
    param: &str,
    allow_loopback_http: bool,
) -> Result<WebhookConfig, RelayError> {
    let field = |f: &str| format!("{param}.{f}");
    let Value::Object(map) = value else {
        return Err(RelayError::invalid_type(param, "an object"));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["url", "events", "format"].contains(&k.as_str()))
    {
        return Err(RelayError::invalid_value(
            &field(unknown),
            "unknown field; expected one of url, events, format",
        ));
    }
    let url = match map.get("url") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(RelayError::invalid_type(&field("url"), "a string")),
        None => return Err(RelayError::missing(&field("url"))),
    };
    check_webhook_url(&url, allow_loopback_http)
        .map_err(|m| RelayError::invalid_value(&field("url"), m))?;
    let items = match map.get("events") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(RelayError::invalid_type(
                &field("events"),
                "an array of strings",
            ))
        }
        None => return Err(RelayError::missing(&field("events"))),
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        return Err(RelayError::invalid_value(
            &field("events"),
            format!("must list 1 to {MAX_EVENTS} event types (\"*\" for all)"),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{param}.events[{i}]");
        let pattern = item
            .as_str()
            .ok_or_else(|| RelayError::invalid_type(&at, "a string"))?
            .trim();
        let star_inside = pattern.trim_end_matches('*').contains('*') || pattern.ends_with("**");
        if star_inside || !EVENT_TYPES.iter().any(|e| event_matches(pattern, e)) {
            return Err(RelayError::invalid_value(
                &at,
                format!(
                    "matches no event; events are {} ('*' only at the end: budget.*)",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !events.iter().any(|e: &String| e == pattern) {
            events.push(pattern.to_string());
        }
    }
    let format = match map.get("format") {
        None | Some(Value::Null) => WebhookFormat::Json,
        Some(Value::String(s)) if s == "json" => WebhookFormat::Json,
        Some(Value::String(s)) if s == "slack" => WebhookFormat::Slack,
        Some(_) => {
            return Err(RelayError::invalid_value(
                &field("format"),
                "must be 'json' or 'slack'",
            ))
        }
    };
    Ok(WebhookConfig {
        url,
        events,
        format,
    })
}

/// A tenant's `webhooks`: an array of webhooks (`null` is none).
pub fn parse_webhooks(
    value: &Value,
    param: &str,
    allow_loopback_http: bool,
) -> Result<Vec<WebhookConfig>, RelayError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(RelayError::invalid_type(param, "an array of webhooks")),
    };
    if items.len() > MAX_WEBHOOKS {
        return Err(RelayError::invalid_value(
            param,
            format!("at most {MAX_WEBHOOKS} webhooks"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_webhook(v, &format!("{param}[{i}]"), allow_loopback_http))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    fn emoji(&self) -> &'static str {
        match self {
            Severity::Info => ":information_source:",
            Severity::Warning => ":warning:",
            Severity::Critical => ":rotating_light:",
        }
    }
}

/// One occurrence of an event, before it is shaped for a webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub severity: Severity,
    pub tenant_id: Option<String>,
    pub summary: String,
    pub at_ms: i64,
    pub data: Value,
}

impl Notice {
    /// The body as `format` shapes it: the envelope documented above, or Slack's `{"text"}`.
    pub fn body(&self, format: WebhookFormat) -> String {
        match format {
            WebhookFormat::Json => json!(self).to_string(),
            WebhookFormat::Slack => json!({
                "text": format!("{} edgerelay: {}", self.severity.emoji(), self.summary)
            })
            .to_string(),
        }
    }
}

/// The deliveries of `notice` to every webhook that asked for its event, queued from `now_ms`.
/// Each delivery's id names the webhook too, so two webhooks' retries stay apart.
pub fn pending_for(webhooks: &[WebhookConfig], notice: &Notice, now_ms: i64) -> Vec<PendingAlert> {
    webhooks
        .iter()
        .enumerate()
        .filter(|(_, w)| w.matches(notice.event_type))
        .map(|(i, w)| PendingAlert {
            id: format!("{}#{i}", notice.id),
            url: w.url.clone(),
            body: notice.body(w.format),
            attempts: 0,
            next_at_ms: now_ms,
        })
        .collect()
}

/// The headers of one delivery attempt at `now_ms`: signed when the deployment has a secret.
/// The signature is made per attempt, so its timestamp says when this attempt was sent.
pub fn delivery_headers(
    event_type: &str,
    delivery_id: &str,
    body: &str,
    secret: Option<&str>,
    now_ms: i64,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("user-agent", "edgerelay-webhook/1".to_string()),
        ("x-relay-event", event_type.to_string()),
        ("x-relay-delivery", delivery_id.to_string()),
    ];
    if let Some(secret) = secret {
        headers.push(("x-relay-signature", signature(secret, now_ms, body)));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(e: RelayError) -> String {
        e.param().unwrap_or_default().to_string()
    }

    fn notice() -> Notice {
        Notice {
            id: "credit.low_balance:ten_1:5".into(),
            event_type: "credit.low_balance",
            severity: Severity::Warning,
            tenant_id: Some("ten_1".into()),
            summary: "low".into(),
            at_ms: 5,
            data: json!({"balance_micros": 1, "threshold_micros": 2}),
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        assert!(event_matches("budget.*", "budget.soft_limit_reached"));
        assert!(!event_matches("budget.*", "credit.low_balance"));
        assert!(event_matches("*", "canary.rolled_back"));
        assert!(event_matches("breaker.opened", "breaker.opened"));
        assert!(!event_matches("breaker.opened", "breaker.opened.x"));
        assert!(!event_matches("budget", "budget.soft_limit_reached"));
        let w = WebhookConfig {
            url: "https://x.example".into(),
            events: vec!["budget.*".into(), "credit.low_balance".into()],
            format: WebhookFormat::Json,
        };
        assert!(w.matches("credit.low_balance") && w.matches("budget.soft_limit_reached"));
        assert!(!w.matches("breaker.opened"));
    }

    #[test]
    fn webhooks_are_validated_naming_the_field() {
        let ok = json!({"url": "https://hooks.example.com/x", "events": ["budget.*", "credit.low_balance", "breaker.opened", "canary.rolled_back"], "format": "slack"});
        let w = parse_webhook(&ok, "webhooks[0]", false).unwrap();
        assert_eq!((w.events.len(), w.format), (4, WebhookFormat::Slack));
        let at = |v: Value| param(parse_webhook(&v, "webhooks[0]", false).unwrap_err());
        assert_eq!(
            at(json!({"url": "http://hooks.example.com", "events": ["*"]})),
            "webhooks[0].url"
        );
        assert_eq!(at(json!({"events": ["*"]})), "webhooks[0].url");
        assert_eq!(
            at(json!({"url": "https://a.example", "events": []})),
            "webhooks[0].events"
        );
        assert_eq!(
            at(json!({"url": "https://a.example", "events": ["budget.*", "budgte.*"]})),
            "webhooks[0].events[1]"
        );
        assert_eq!(
            at(json!({"url": "https://a.example", "events": ["bud*get"]})),
            "webhooks[0].events[0]"
        );
        assert_eq!(
            at(json!({"url": "https://a.example", "events": ["*"], "format": "xml"})),
            "webhooks[0].format"
        );
        assert_eq!(
            at(json!({"url": "https://a.example", "events": ["*"], "secret": "x"})),
            "webhooks[0].secret"
        );
        // Loopback http only in local dev.
        let local = json!({"url": "http://127.0.0.1:9/x", "events": ["*"]});
        assert!(parse_webhook(&local, "w", true).is_ok());
        assert!(parse_webhook(&local, "w", false).is_err());
        let many: Vec<Value> = (0..9).map(|_| ok.clone()).collect();
        assert_eq!(
            param(parse_webhooks(&json!(many), "webhooks", false).unwrap_err()),
            "webhooks"
        );
        assert!(parse_webhooks(&Value::Null, "webhooks", false)
            .unwrap()
            .is_empty());
        // The stored shape reads back.
        let back: WebhookConfig = serde_json::from_value(json!(w)).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn only_matching_webhooks_get_the_notice_in_their_format() {
        let hooks = vec![
            WebhookConfig {
                url: "https://a.example".into(),
                events: vec!["budget.*".into()],
                format: WebhookFormat::Json,
            },
            WebhookConfig {
                url: "https://b.example".into(),
                events: vec!["credit.*".into()],
                format: WebhookFormat::Json,
            },
            WebhookConfig {
                url: "https://c.example".into(),
                events: vec!["*".into()],
                format: WebhookFormat::Slack,
            },
        ];
        let queued = pending_for(&hooks, &notice(), 7);
        let urls: Vec<&str> = queued.iter().map(|p| p.url.as_str()).collect();
        assert_eq!(urls, ["https://b.example", "https://c.example"]);
        assert_ne!(queued[0].id, queued[1].id);
        assert_eq!(queued[0].next_at_ms, 7);
        let body: Value = serde_json::from_str(&queued[0].body).unwrap();
        for k in [
            "id",
            "type",
            "severity",
            "tenant_id",
            "summary",
            "at_ms",
            "data",
        ] {
            assert!(body.get(k).is_some(), "{k}");
        }
        assert_eq!(body["type"], "credit.low_balance");
        assert_eq!(body["severity"], "warning");
        let slack: Value = serde_json::from_str(&queued[1].body).unwrap();
        assert_eq!(slack["text"], ":warning: edgerelay: low");
    }

    #[test]
    fn deliveries_are_signed_with_the_shared_scheme() {
        let body = notice().body(WebhookFormat::Json);
        let h = delivery_headers("credit.low_balance", "d1", &body, Some("secret"), 42);
        let sig = h
            .iter()
            .find(|(k, _)| *k == "x-relay-signature")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(sig, signature("secret", 42, &body));
        assert!(sig.starts_with("t=42,v1="));
        assert!(h.contains(&("x-relay-event", "credit.low_balance".to_string())));
        let unsigned = delivery_headers("x", "d1", &body, None, 42);
        assert!(unsigned.iter().all(|(k, _)| *k != "x-relay-signature"));
    }
}
