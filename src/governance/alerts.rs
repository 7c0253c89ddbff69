//! Notices the relay POSTs to someone else's endpoint — budget warnings to a tenant, breaker and
//! error-rate alerts to the operator: where they may go, how they are signed, and the queue a
//! Durable Object keeps them in until they are delivered or given up on. Pure: the objects
//! deliver and pass the time in.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

impl WebhookFormat {
    pub fn is_json(&self) -> bool {
        *self == WebhookFormat::Json
    }
}

/// `x-relay-signature: t=<ms>,v1=<hex>`: HMAC-SHA256 under the deployment's `WEBHOOK_SECRET`
/// of `<ms>.<body>`, so a receiver can check a notice came from this relay and is fresh.
pub fn signature(secret: &str, t_ms: i64, body: &str) -> String {
    let mac =
        crate::support::crypto::hmac_sha256(secret.as_bytes(), format!("{t_ms}.{body}").as_bytes());
    format!("t={t_ms},v1={}", crate::support::crypto::hex(&mac))
}

/// A webhook target must be https, so a budget notice never crosses the network in clear
/// text; loopback http is accepted only when the deployment says it is local development.
pub fn check_webhook_url(url: &str, allow_loopback_http: bool) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "must be an absolute https:// URL".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() || url.len() > 2048 || url.chars().any(|c| c.is_whitespace()) {
        return Err("must be an absolute https:// URL".into());
    }
    let loopback = matches!(host, "localhost" | "::1") || host.starts_with("127.");
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if loopback && allow_loopback_http => Ok(()),
        "http" if loopback => {
            Err("must be https (plain http to loopback is allowed only in local dev)".into())
        }
        _ => Err("must be https".into()),
    }
}

/// A webhook the limiter has yet to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAlert {
    pub id: String,
    pub url: String,
    pub body: String,
    pub attempts: u32,
    pub next_at_ms: i64,
}

/// Webhooks an object has yet to deliver, with their retry schedule. Stored inside the
/// object's state (as a plain list, so older states read back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlertQueue(Vec<PendingAlert>);

impl AlertQueue {
    pub fn push(&mut self, alert: PendingAlert) {
        self.0.push(alert);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// When the object should next wake to deliver.
    pub fn next_ms(&self) -> Option<i64> {
        self.0.iter().map(|a| a.next_at_ms).min()
    }

    pub fn due(&self, now_ms: i64) -> Vec<PendingAlert> {
        self.0
            .iter()
            .filter(|a| a.next_at_ms <= now_ms)
            .cloned()
            .collect()
    }

    /// Record a delivery attempt. Returns true when the alert was given up on.
    pub fn attempted(&mut self, id: &str, delivered: bool, now_ms: i64) -> bool {
        let Some(i) = self.0.iter().position(|a| a.id == id) else {
            return false;
        };
        if delivered {
            self.0.remove(i);
            return false;
        }
        let Some(alert) = self.0.get_mut(i) else {
            return false;
        };
        alert.attempts += 1;
        if alert.attempts >= MAX_ATTEMPTS {
            self.0.remove(i);
            return true;
        }
        alert.next_at_ms = now_ms + retry_delay_ms(alert.attempts);
        false
    }
}

/// Deliveries are retried with doubling waits (1 s, 2 s, 4 s … capped at 5 min) for about
/// about two hours; after that the alert is dropped and logged.
pub const MAX_ATTEMPTS: u32 = 30;

pub fn retry_delay_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (1000i64 << exp).min(300_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_must_be_https_except_loopback_in_dev() {
        assert!(check_webhook_url("https://example.com/x", false).is_ok());
        assert!(check_webhook_url("HTTPS://example.com", false).is_ok());
        assert!(check_webhook_url("http://example.com/x", true).is_err());
        assert!(check_webhook_url("http://127.0.0.1:9999/hook", true).is_ok());
        assert!(check_webhook_url("http://localhost:9999/hook", true).is_ok());
        assert!(check_webhook_url("http://[::1]:9999/hook", true).is_ok());
        assert!(check_webhook_url("http://127.0.0.1:9999/hook", false).is_err());
        // A loopback-looking user part does not make a host loopback.
        assert!(check_webhook_url("http://127.0.0.1@evil.example/", true).is_err());
        assert!(check_webhook_url("ftp://example.com", true).is_err());
        assert!(check_webhook_url("example.com", true).is_err());
        assert!(check_webhook_url("https://", true).is_err());
        assert!(check_webhook_url("https://exa mple.com", true).is_err());
    }

    #[test]
    fn retries_back_off_to_a_cap() {
        assert_eq!(retry_delay_ms(1), 1000);
        assert_eq!(retry_delay_ms(2), 2000);
        assert_eq!(retry_delay_ms(4), 8000);
        assert_eq!(retry_delay_ms(30), 300_000);
        let total: i64 = (1..MAX_ATTEMPTS).map(retry_delay_ms).sum();
        assert!(total > 3_600_000, "retries span hours, not seconds");
    }
}
