//! Rate limits, concurrency and calendar quotas of one key or tenant: what a limit is, how an
//! admin sets one (validated field by field), what a request asks of its limiter (`Ask`), and
//! the OpenAI-style `x-ratelimit-*` headers of the answer. The limiter's state machine is
//! `state.rs`, the calls to it `protocol.rs`, a rate bucket `bucket.rs`, and the isolate's side
//! of lease mode `lease.rs`.

pub mod bucket;
pub mod lease;
pub mod protocol;
pub mod state;

use serde::{Deserialize, Serialize};

use crate::error::RelayError;
pub use crate::governance::MAX_LIMIT;
use crate::support::calendar::{Period, MINUTE_MS};

/// A reservation not settled within this long is settled at its reserved amount: the isolate
/// that made it is gone, and its concurrency slot must not leak.
pub const RESERVATION_TTL_MS: i64 = 15 * MINUTE_MS;

/// Output tokens reserved when a request names no maximum.
pub const DEFAULT_OUTPUT_RESERVE: u64 = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// In micro-units of the tenant's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
}

/// The limits of a key or a tenant. Every field is optional: absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests allowed above `rpm` in a burst (bucket capacity = rpm + burst).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_tokens: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<Quota>,
    /// Calendar periods start at local midnight at this offset east of UTC (minutes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub utc_offset_minutes: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self
            == Limits {
                utc_offset_minutes: self.utc_offset_minutes,
                ..Limits::default()
            }
    }

    fn quota(&self, period: Period) -> Option<&Quota> {
        match period {
            Period::Day => self.day.as_ref(),
            Period::Week => self.week.as_ref(),
            Period::Month => self.month.as_ref(),
        }
    }
}

/// Validates limits from the admin API; errors name the field (`limits.day.tokens`).
pub fn parse_limits(value: &serde_json::Value, param: &str) -> Result<Limits, RelayError> {
    let limits: Limits = serde_json::from_value(value.clone())
        .map_err(|e| RelayError::invalid_value(param, e.to_string()))?;
    let check = |field: &str, v: Option<u64>, min: u64| -> Result<(), RelayError> {
        match v {
            Some(n) if n < min || n > MAX_LIMIT => Err(RelayError::invalid_value(
                &format!("{param}.{field}"),
                format!("must be between {min} and {MAX_LIMIT}"),
            )),
            _ => Ok(()),
        }
    };
    check("rpm", limits.rpm, 1)?;
    check("tpm", limits.tpm, 1)?;
    check("burst_requests", limits.burst_requests, 0)?;
    check("burst_tokens", limits.burst_tokens, 0)?;
    check("concurrency", limits.concurrency, 1)?;
    for period in Period::ALL {
        if let Some(q) = limits.quota(period) {
            let name = period.name();
            check(&format!("{name}.requests"), q.requests, 0)?;
            check(&format!("{name}.tokens"), q.tokens, 0)?;
            check(&format!("{name}.cost_micros"), q.cost_micros, 0)?;
        }
    }
    if !(-12 * 60..=14 * 60).contains(&limits.utc_offset_minutes) {
        return Err(RelayError::invalid_value(
            &format!("{param}.utc_offset_minutes"),
            "must be between -720 and 840",
        ));
    }
    Ok(limits)
}

/// What the relay needs to answer with OpenAI's rate-limit headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateInfo {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub reset_requests_ms: Option<u64>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens_ms: Option<u64>,
}

/// What one request (or one lease) asks for, or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    #[serde(default = "one")]
    pub requests: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}

impl Ask {
    /// One request's worth.
    pub fn request(tokens: u64, cost_micros: u64) -> Ask {
        Ask {
            requests: 1,
            tokens,
            cost_micros,
        }
    }
}

pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// OpenAI's rate-limit response headers for what a limiter reported.
pub fn rate_headers(rate: &RateInfo) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let mut add = |name: &'static str, value: Option<String>| {
        if let Some(v) = value {
            headers.push((name, v));
        }
    };
    add(
        "x-ratelimit-limit-requests",
        rate.limit_requests.map(|v| v.to_string()),
    );
    add(
        "x-ratelimit-remaining-requests",
        rate.remaining_requests.map(|v| v.to_string()),
    );
    add(
        "x-ratelimit-reset-requests",
        rate.reset_requests_ms.map(format_reset),
    );
    add(
        "x-ratelimit-limit-tokens",
        rate.limit_tokens.map(|v| v.to_string()),
    );
    add(
        "x-ratelimit-remaining-tokens",
        rate.remaining_tokens.map(|v| v.to_string()),
    );
    add(
        "x-ratelimit-reset-tokens",
        rate.reset_tokens_ms.map(format_reset),
    );
    headers
}

/// OpenAI's duration format for `x-ratelimit-reset-*`: "1s", "6m0s", "120ms".
pub fn format_reset(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// The worst case a request may use: its prompt estimate and its maximum output.
pub fn worst_case_tokens(prompt_tokens: u64, max_output_tokens: Option<u64>) -> u64 {
    prompt_tokens.saturating_add(max_output_tokens.unwrap_or(DEFAULT_OUTPUT_RESERVE))
}

pub(crate) fn one() -> u64 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated() {
        let ok = serde_json::json!({"rpm": 60, "day": {"tokens": 1000}, "utc_offset_minutes": 60});
        assert!(parse_limits(&ok, "limits").is_ok());
        assert_eq!(
            parse_limits(&serde_json::json!({"rpm": 0}), "limits")
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "limits.rpm"
        );
        assert_eq!(
            parse_limits(
                &serde_json::json!({"day": {"tokens": 1e15 as u64}}),
                "limits"
            )
            .unwrap_err()
            .param()
            .unwrap_or_default(),
            "limits.day.tokens"
        );
        assert_eq!(
            parse_limits(&serde_json::json!({"rpm": -1}), "limits")
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "limits"
        );
        assert_eq!(
            parse_limits(&serde_json::json!({"rmp": 5}), "limits")
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "limits"
        );
        assert_eq!(
            parse_limits(&serde_json::json!({"utc_offset_minutes": 900}), "limits")
                .unwrap_err()
                .param()
                .unwrap_or_default(),
            "limits.utc_offset_minutes"
        );
        assert!(Limits::default().is_empty());
        assert!(!parse_limits(&ok, "l").unwrap().is_empty());
    }

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(format_reset(20), "20ms");
        assert_eq!(format_reset(1000), "1s");
        assert_eq!(format_reset(360_000), "6m0s");
        assert_eq!(format_reset(3_600_500), "1h0m1s");
        assert_eq!(worst_case_tokens(10, None), 10 + DEFAULT_OUTPUT_RESERVE);
        let rate = RateInfo {
            limit_requests: Some(60),
            remaining_requests: Some(59),
            reset_requests_ms: Some(1000),
            ..RateInfo::default()
        };
        assert_eq!(
            rate_headers(&rate),
            vec![
                ("x-ratelimit-limit-requests", "60".to_string()),
                ("x-ratelimit-remaining-requests", "59".to_string()),
                ("x-ratelimit-reset-requests", "1s".to_string())
            ]
        );
    }
}
