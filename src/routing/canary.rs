//! Canary and shadow routes of a model-map entry: their settings and validation, which
//! requests go to the canary and which are mirrored to the shadow (from draws), a sliding
//! window of outcomes for the stable routes and the canary, and the automatic rollback.
//!
//! A canary takes `percent` of a model's requests, compared with the rest (the stable routes)
//! over the last `window_s`: once both sides have `min_requests` outcomes there, the canary is
//! rolled back — its share set to 0 and an alert raised — when its error rate exceeds the
//! stable one by more than `max_error_rate_delta_bps`, or its p95 latency is more than
//! `max_p95_ratio_pct` of the stable p95. Both sides see the same kind of traffic (the split is
//! random), so every status of 400 and above counts as an error: a canary model that refuses
//! requests the stable one serves is a regression too.
//!
//! A shadow gets a copy of `percent` of the requests; its answers are discarded and it never
//! affects the client. Integer arithmetic only, like `breaker.rs`: latencies go into a
//! log-linear histogram (16 buckets per doubling, exact below 16 ms), so the p95 is the upper
//! bound of the bucket that holds it, within 1/16 of the true value, on both sides alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::governance::notices::{Notice, Severity};
use crate::routing::below;
use crate::support::fields::refuse_unknown;

/// A route named by its channel and upstream model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteRef {
    pub channel_id: String,
    pub upstream_model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub route: RouteRef,
    /// Share of the model's requests, 0–99 (0 pauses the canary and keeps its settings).
    pub percent: u8,
    #[serde(default = "default_window_s")]
    pub window_s: u32,
    /// Basis points the canary's error rate may exceed the stable one by.
    #[serde(default = "default_delta_bps")]
    pub max_error_rate_delta_bps: u32,
    /// The canary's p95 may be at most this percentage of the stable p95.
    #[serde(default = "default_ratio_pct")]
    pub max_p95_ratio_pct: u32,
    /// Outcomes each side needs in the window before it is judged.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

fn default_window_s() -> u32 {
    300
}
fn default_delta_bps() -> u32 {
    500
}
fn default_ratio_pct() -> u32 {
    150
}
fn default_min_requests() -> u32 {
    50
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    pub route: RouteRef,
    /// Share of the model's requests copied to the shadow, 0–100.
    pub percent: u8,
}

impl Canary {
    /// Whether a request goes to the canary, from one uniform draw.
    pub fn selects(&self, draw: u32) -> bool {
        below(draw, 100) < u64::from(self.percent)
    }

    fn window_ms(&self) -> i64 {
        i64::from(self.window_s.max(1)) * 1000
    }
}

impl Shadow {
    /// Whether a request is mirrored to the shadow, from one uniform draw.
    pub fn mirrors(&self, draw: u32) -> bool {
        below(draw, 100) < u64::from(self.percent)
    }
}

// ---- validation --------------------------------------------------------------------------

fn object<'a>(value: &'a Value, param: &str) -> Result<&'a Map<String, Value>, RelayError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(RelayError::invalid_type(param, "an object")),
    }
}

fn integer(
    map: &Map<String, Value>,
    prefix: &str,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
    why: &str,
) -> Result<Option<u64>, RelayError> {
    let param = format!("{prefix}{field}");
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(RelayError::invalid_value(
                &param,
                format!(
                    "must be an integer between {} and {}{why}",
                    range.start(),
                    range.end()
                ),
            )),
        },
        Some(_) => Err(RelayError::invalid_type(&param, "an integer")),
    }
}

fn parse_route(value: Option<&Value>, param: &str) -> Result<RouteRef, RelayError> {
    let value = value.ok_or_else(|| RelayError::missing(param))?;
    let map = object(value, param)?;
    refuse_unknown(map, &["channel_id", "upstream_model"])
        .map_err(|e| e.prefixed(&format!("{param}.")))?;
    let get = |field: &str| -> Result<String, RelayError> {
        let at = format!("{param}.{field}");
        match map.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 256 => {
                Ok(s.trim().to_string())
            }
            Some(Value::String(_)) => Err(RelayError::invalid_value(
                &at,
                "must be 1 to 256 characters",
            )),
            None | Some(Value::Null) => Err(RelayError::missing(&at)),
            Some(_) => Err(RelayError::invalid_type(&at, "a string")),
        }
    };
    Ok(RouteRef {
        channel_id: get("channel_id")?,
        upstream_model: get("upstream_model")?,
    })
}

/// A model-map entry's `canary` from the admin API; `prefix` is where it sits
/// (`gpt-4o.canary.`), `primaries` the entry's own routes, which the canary must not be one
/// of (it would be compared with itself). The thresholds must be able to trigger.
pub fn parse_canary(
    value: &Value,
    prefix: &str,
    primaries: &[RouteRef],
) -> Result<Canary, RelayError> {
    let whole = prefix.trim_end_matches('.');
    let map = object(value, whole)?;
    refuse_unknown(
        map,
        &[
            "route",
            "percent",
            "window_s",
            "max_error_rate_delta_bps",
            "max_p95_ratio_pct",
            "min_requests",
        ],
    )
    .map_err(|e| e.prefixed(prefix))?;
    let route = parse_route(map.get("route"), &format!("{prefix}route"))?;
    if primaries.contains(&route) {
        return Err(RelayError::invalid_value(
            &format!("{prefix}route"),
            "is one of the entry's routes; a canary must be a route the entry does not have",
        ));
    }
    let percent = integer(
        map,
        prefix,
        "percent",
        0..=99,
        " (at 100 no stable traffic is left to compare with: make it a route instead)",
    )?
    .ok_or_else(|| RelayError::missing(&format!("{prefix}percent")))?;
    let window_s = integer(map, prefix, "window_s", 10..=86_400, " (seconds)")?;
    let delta = integer(
        map,
        prefix,
        "max_error_rate_delta_bps",
        0..=9_999,
        " (basis points; 10000 or more could never trigger)",
    )?;
    let ratio = integer(
        map,
        prefix,
        "max_p95_ratio_pct",
        100..=10_000,
        " (percent of the stable p95; below 100 would roll back a faster canary)",
    )?;
    let min_requests = integer(map, prefix, "min_requests", 1..=1_000_000, "")?;
    // Each value is within a range that fits its field, as checked just above.
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Canary {
        route,
        percent: u8::try_from(percent).unwrap_or(0),
        window_s: window_s.map_or_else(default_window_s, narrow),
        max_error_rate_delta_bps: delta.map_or_else(default_delta_bps, narrow),
        max_p95_ratio_pct: ratio.map_or_else(default_ratio_pct, narrow),
        min_requests: min_requests.map_or_else(default_min_requests, narrow),
    })
}

/// A model-map entry's `shadow`; it must not be one of the entry's routes (the request is
/// already going there).
pub fn parse_shadow(
    value: &Value,
    prefix: &str,
    primaries: &[RouteRef],
) -> Result<Shadow, RelayError> {
    let whole = prefix.trim_end_matches('.');
    let map = object(value, whole)?;
    refuse_unknown(map, &["route", "percent"]).map_err(|e| e.prefixed(prefix))?;
    let route = parse_route(map.get("route"), &format!("{prefix}route"))?;
    if primaries.contains(&route) {
        return Err(RelayError::invalid_value(
            &format!("{prefix}route"),
            "is one of the entry's routes; a shadow must be another route",
        ));
    }
    let percent = integer(map, prefix, "percent", 0..=100, "")?
        .ok_or_else(|| RelayError::missing(&format!("{prefix}percent")))?;
    Ok(Shadow {
        route,
        percent: u8::try_from(percent).unwrap_or(0),
    })
}

// ---- latency histogram -------------------------------------------------------------------

/// Sub-buckets per doubling: the p95 is known to within 1/16.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies above about 4.6 hours are counted as that: nothing waits so long.
const MAX_LATENCY_MS: u64 = (1 << 24) - 1;

/// The bucket of a latency: exact below 16 ms, then 16 buckets per doubling.
fn bucket_of(ms: u64) -> u16 {
    let ms = ms.min(MAX_LATENCY_MS);
    if ms < SUB {
        return ms as u16;
    }
    let exp = 63 - ms.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let mantissa = (ms >> shift) - SUB; // 0..16
    (SUB + u64::from(shift) * SUB + mantissa) as u16
}

/// The largest latency in bucket `b`.
fn upper_bound(b: u16) -> u64 {
    let b = u64::from(b);
    if b < SUB {
        return b;
    }
    let shift = (b - SUB) / SUB;
    let mantissa = (b - SUB) % SUB;
    ((SUB + mantissa + 1) << shift) - 1
}

// ---- the window of outcomes --------------------------------------------------------------

/// Which side of the comparison an outcome belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Stable,
    Canary,
}

/// Outcomes of one side in one sub-bucket of the window, by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ArmTally {
    #[serde(default)]
    ok: u32,
    /// 4xx.
    #[serde(default)]
    client: u32,
    /// 5xx.
    #[serde(default)]
    server: u32,
    /// No answer: a connection error or a timeout.
    #[serde(default)]
    none: u32,
    /// Latency bucket → outcomes (sparse, so a quiet window stays small).
    #[serde(default)]
    latency: BTreeMap<u16, u32>,
}

impl ArmTally {
    fn record(&mut self, status: Option<u16>, latency_ms: u64) {
        let class = match status {
            None => &mut self.none,
            Some(s) if s >= 500 => &mut self.server,
            Some(s) if s >= 400 => &mut self.client,
            Some(_) => &mut self.ok,
        };
        *class = class.saturating_add(1);
        let n = self.latency.entry(bucket_of(latency_ms)).or_default();
        *n = n.saturating_add(1);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    /// `now_ms / bucket_ms` of the sub-bucket.
    slot: i64,
    stable: ArmTally,
    canary: ArmTally,
}

/// The window is this many sub-buckets: constant memory, and an outcome leaves it at most
/// one sub-bucket late.
const WINDOW_SLOTS: i64 = 10;

/// One side's outcomes in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmStats {
    pub requests: u64,
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub no_answer: u64,
    /// Statuses of 400 and above, and no answer.
    pub errors: u64,
    /// `errors / requests` in basis points, rounded half up (0 without requests).
    pub error_rate_bps: u32,
    /// Nearest-rank p95 of the latencies, as the upper bound of its histogram bucket.
    pub p95_ms: Option<u64>,
}

/// Why a canary was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    ErrorRate {
        stable_bps: u32,
        canary_bps: u32,
        max_delta_bps: u32,
    },
    Latency {
        stable_p95_ms: u64,
        canary_p95_ms: u64,
        max_ratio_pct: u32,
    },
}

/// Where a canary stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// A side has fewer than `min_requests` outcomes in the window.
    Gathering {
        stable: ArmStats,
        canary: ArmStats,
    },
    Healthy {
        stable: ArmStats,
        canary: ArmStats,
    },
    RollBack {
        reason: Reason,
        stable: ArmStats,
        canary: ArmStats,
    },
}

/// The rollback of a canary: what happened, as the state records it and the alert says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub at_ms: i64,
    pub reason: Reason,
    pub stable: ArmStats,
    pub canary: ArmStats,
}

impl Rollback {
    /// The `canary.rolled_back` notice (`governance::notices`): its `body(format)` is the
    /// operator alert's body.
    pub fn notice(&self, model: &str, canary: &Canary) -> Notice {
        let why = match self.reason {
            Reason::ErrorRate {
                stable_bps,
                canary_bps,
                max_delta_bps,
            } => format!(
                "error rate {canary_bps} bps against {stable_bps} bps on the stable routes (allowed: +{max_delta_bps})"
            ),
            Reason::Latency {
                stable_p95_ms,
                canary_p95_ms,
                max_ratio_pct,
            } => format!(
                "p95 latency {canary_p95_ms} ms against {stable_p95_ms} ms on the stable routes (allowed: {max_ratio_pct}%)"
            ),
        };
        Notice {
            id: format!(
                "canary.rolled_back:{model}:{}:{}:{}",
                canary.route.channel_id, canary.route.upstream_model, self.at_ms
            ),
            event_type: "canary.rolled_back",
            severity: Severity::Critical,
            tenant_id: None,
            summary: format!(
                "Canary {}/{} of model {model} rolled back: {why}.",
                canary.route.channel_id, canary.route.upstream_model
            ),
            at_ms: self.at_ms,
            data: json!({
                "model": model,
                "canary": canary.route,
                "reason": self.reason,
                "stable": self.stable,
                "canary_stats": self.canary,
            }),
        }
    }
}

/// The canary state of one model: the window of outcomes, and the rollback once it happened.
/// A Durable Object keeps it as JSON; a new canary route, or a new window length, starts it
/// afresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryState {
    /// The canary this state is about; another one resets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<RouteRef>,
    #[serde(default)]
    window_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    slots: Vec<Slot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rolled_back: Option<Rollback>,
}

impl CanaryState {
    /// Start over when the canary or its window is not the one this state counted for.
    fn align(&mut self, canary: &Canary) {
        if self.route.as_ref() != Some(&canary.route) || self.window_ms != canary.window_ms() {
            *self = CanaryState {
                route: Some(canary.route.clone()),
                window_ms: canary.window_ms(),
                ..CanaryState::default()
            };
        }
    }

    fn slot_ms(&self) -> i64 {
        (self.window_ms / WINDOW_SLOTS).max(1)
    }

    fn oldest_slot(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.slot_ms()) - WINDOW_SLOTS
    }

    /// Whether this request goes to the canary: its share from one draw, none once it was
    /// rolled back (weight 0) — until the operator sets a new canary.
    pub fn goes_to_canary(&self, canary: &Canary, draw: u32) -> bool {
        let same = self.route.is_none() || self.route.as_ref() == Some(&canary.route);
        !(same && self.rolled_back.is_some()) && canary.selects(draw)
    }

    /// The share the canary has now: its `percent`, or 0 once rolled back.
    pub fn percent_now(&self, canary: &Canary) -> u8 {
        let same = self.route.as_ref() == Some(&canary.route);
        if same && self.rolled_back.is_some() {
            0
        } else {
            canary.percent
        }
    }

    pub fn rolled_back(&self) -> Option<&Rollback> {
        self.rolled_back.as_ref()
    }

    /// One outcome of a request the split sent to `arm` (the canary's own attempt, not a
    /// fallback after it): its status (`None`: no answer) and latency.
    pub fn record(
        &mut self,
        canary: &Canary,
        arm: Arm,
        status: Option<u16>,
        latency_ms: u64,
        now_ms: i64,
    ) {
        self.align(canary);
        let oldest = self.oldest_slot(now_ms);
        self.slots.retain(|s| s.slot > oldest);
        let slot = now_ms.div_euclid(self.slot_ms());
        if slot <= oldest {
            return;
        }
        let i = match self.slots.iter().position(|s| s.slot == slot) {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    slot,
                    ..Slot::default()
                });
                self.slots.len() - 1
            }
        };
        if let Some(s) = self.slots.get_mut(i) {
            match arm {
                Arm::Stable => s.stable.record(status, latency_ms),
                Arm::Canary => s.canary.record(status, latency_ms),
            }
        }
    }

    /// One side's outcomes in the window ending at `now_ms`.
    pub fn stats(&self, arm: Arm, now_ms: i64) -> ArmStats {
        let oldest = self.oldest_slot(now_ms);
        let mut stats = ArmStats::default();
        let mut latency: BTreeMap<u16, u64> = BTreeMap::new();
        for s in self.slots.iter().filter(|s| s.slot > oldest) {
            let t = match arm {
                Arm::Stable => &s.stable,
                Arm::Canary => &s.canary,
            };
            stats.ok += u64::from(t.ok);
            stats.client_errors += u64::from(t.client);
            stats.server_errors += u64::from(t.server);
            stats.no_answer += u64::from(t.none);
            for (b, n) in &t.latency {
                *latency.entry(*b).or_default() += u64::from(*n);
            }
        }
        stats.errors = stats.client_errors + stats.server_errors + stats.no_answer;
        stats.requests = stats.ok + stats.errors;
        if stats.requests > 0 {
            let bps = (u128::from(stats.errors) * 10_000 + u128::from(stats.requests) / 2)
                / u128::from(stats.requests);
            stats.error_rate_bps = u32::try_from(bps).unwrap_or(10_000);
        }
        let counted: u64 = latency.values().sum();
        if counted > 0 {
            let rank = (95 * counted).div_ceil(100).max(1);
            let mut seen = 0;
            for (b, n) in &latency {
                seen += n;
                if seen >= rank {
                    stats.p95_ms = Some(upper_bound(*b));
                    break;
                }
            }
        }
        stats
    }

    /// Where the canary stands at `now_ms`. Changes nothing.
    pub fn verdict(&self, canary: &Canary, now_ms: i64) -> Verdict {
        let (stable, canary_stats) =
            if self.route.as_ref() == Some(&canary.route) && self.window_ms == canary.window_ms() {
                (
                    self.stats(Arm::Stable, now_ms),
                    self.stats(Arm::Canary, now_ms),
                )
            } else {
                (ArmStats::default(), ArmStats::default())
            };
        let min = u64::from(canary.min_requests.max(1));
        if stable.requests < min || canary_stats.requests < min {
            return Verdict::Gathering {
                stable,
                canary: canary_stats,
            };
        }
        // canary/cn − stable/sn > delta/10000, cross-multiplied so it stays exact.
        let (ce, cn) = (
            u128::from(canary_stats.errors),
            u128::from(canary_stats.requests),
        );
        let (se, sn) = (u128::from(stable.errors), u128::from(stable.requests));
        let delta = u128::from(canary.max_error_rate_delta_bps);
        if ce * sn * 10_000 > se * cn * 10_000 + delta * cn * sn {
            return Verdict::RollBack {
                reason: Reason::ErrorRate {
                    stable_bps: stable.error_rate_bps,
                    canary_bps: canary_stats.error_rate_bps,
                    max_delta_bps: canary.max_error_rate_delta_bps,
                },
                stable,
                canary: canary_stats,
            };
        }
        if let (Some(sp), Some(cp)) = (stable.p95_ms, canary_stats.p95_ms) {
            let ratio = u128::from(canary.max_p95_ratio_pct);
            if u128::from(cp) * 100 > u128::from(sp) * ratio {
                return Verdict::RollBack {
                    reason: Reason::Latency {
                        stable_p95_ms: sp,
                        canary_p95_ms: cp,
                        max_ratio_pct: canary.max_p95_ratio_pct,
                    },
                    stable,
                    canary: canary_stats,
                };
            }
        }
        Verdict::Healthy {
            stable,
            canary: canary_stats,
        }
    }

    /// Judge the canary at `now_ms` and roll it back when the verdict says so. Returns the
    /// rollback the first time only, for its alert; after that the canary gets no traffic.
    pub fn evaluate(&mut self, canary: &Canary, now_ms: i64) -> Option<Rollback> {
        self.align(canary);
        if self.rolled_back.is_some() {
            return None;
        }
        let Verdict::RollBack {
            reason,
            stable,
            canary: canary_stats,
        } = self.verdict(canary, now_ms)
        else {
            return None;
        };
        let rollback = Rollback {
            at_ms: now_ms,
            reason,
            stable,
            canary: canary_stats,
        };
        self.rolled_back = Some(rollback.clone());
        Some(rollback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::alerts::WebhookFormat;
    use crate::routing::xorshift;

    fn route(c: &str, m: &str) -> RouteRef {
        RouteRef {
            channel_id: c.into(),
            upstream_model: m.into(),
        }
    }

    fn canary() -> Canary {
        Canary {
            route: route("c2", "gpt-next"),
            percent: 5,
            window_s: 300,
            max_error_rate_delta_bps: 500,
            max_p95_ratio_pct: 150,
            min_requests: 50,
        }
    }

    fn param(e: RelayError) -> String {
        e.param().unwrap_or_default().to_string()
    }

    #[test]
    fn the_histogram_is_exact_below_16_ms_and_within_a_sixteenth_above() {
        for ms in 0..16 {
            assert_eq!(upper_bound(bucket_of(ms)), ms);
        }
        let mut last = 0;
        for ms in [
            16,
            17,
            31,
            32,
            33,
            100,
            999,
            1000,
            1234,
            65_535,
            1_000_000,
            u64::MAX,
        ] {
            let b = bucket_of(ms);
            assert!(b >= last, "monotonic");
            last = b;
            let hi = upper_bound(b);
            let ms = ms.min(MAX_LATENCY_MS);
            assert!(hi >= ms && hi - ms <= ms / 16 + 1, "{ms} -> {hi}");
            assert!(
                b == 0 || upper_bound(b - 1) < ms,
                "{ms}: the bucket before ends below it"
            );
        }
        // Every bucket boundary is consistent: the value after an upper bound is the next bucket.
        for b in 0..bucket_of(MAX_LATENCY_MS) {
            assert_eq!(bucket_of(upper_bound(b) + 1), b + 1);
        }
    }

    #[test]
    fn draws_split_by_percent() {
        let c = canary();
        let mut draw = xorshift(7);
        let n = 100_000;
        let hits = (0..n).filter(|_| c.selects(draw())).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
        assert!(!Canary {
            percent: 0,
            ..c.clone()
        }
        .selects(u32::MAX));
        assert!(Canary { percent: 99, ..c }.selects(u32::MAX - (u32::MAX / 100) - 1));
        let s = Shadow {
            route: route("c3", "m"),
            percent: 100,
        };
        assert!(s.mirrors(u32::MAX) && s.mirrors(0));
        assert!(!Shadow { percent: 0, ..s }.mirrors(0));
    }

    fn feed(state: &mut CanaryState, c: &Canary, arm: Arm, n: u32, errors: u32, ms: u64, at: i64) {
        for i in 0..n {
            let status = if i < errors { Some(502) } else { Some(200) };
            state.record(c, arm, status, ms, at);
        }
    }

    #[test]
    fn nothing_is_judged_before_both_sides_have_min_requests() {
        let c = canary();
        let mut s = CanaryState::default();
        feed(&mut s, &c, Arm::Stable, 500, 0, 100, 0);
        feed(&mut s, &c, Arm::Canary, 49, 49, 100, 0);
        assert!(matches!(s.verdict(&c, 0), Verdict::Gathering { .. }));
        assert_eq!(s.evaluate(&c, 0), None);
        feed(&mut s, &c, Arm::Canary, 1, 1, 100, 1);
        let r = s.evaluate(&c, 1).expect("50 of 50 failed");
        assert!(matches!(
            r.reason,
            Reason::ErrorRate {
                canary_bps: 10_000,
                stable_bps: 0,
                ..
            }
        ));
        assert_eq!(s.evaluate(&c, 2), None, "rolled back once");
        assert_eq!(s.percent_now(&c), 0);
        assert!((0..1000).all(|d| !s.goes_to_canary(&c, d * 4_000_000)));
    }

    #[test]
    fn the_error_rate_delta_is_exact_at_the_boundary() {
        let c = canary(); // +500 bps allowed
                          // Stable 10 of 1000 (1%), canary 6 of 100 (6%): exactly +5%, allowed.
        let mut s = CanaryState::default();
        feed(&mut s, &c, Arm::Stable, 1000, 10, 100, 0);
        feed(&mut s, &c, Arm::Canary, 100, 6, 100, 0);
        assert!(matches!(s.verdict(&c, 0), Verdict::Healthy { .. }));
        // One more canary error of 101: 6.93%, over.
        feed(&mut s, &c, Arm::Canary, 1, 1, 100, 0);
        assert!(matches!(
            s.verdict(&c, 0),
            Verdict::RollBack {
                reason: Reason::ErrorRate { .. },
                ..
            }
        ));
        // Client errors count too (the split is random).
        let mut s = CanaryState::default();
        feed(&mut s, &c, Arm::Stable, 100, 0, 100, 0);
        for _ in 0..100 {
            s.record(&c, Arm::Canary, Some(400), 100, 0);
        }
        assert_eq!(s.stats(Arm::Canary, 0).client_errors, 100);
        assert!(s.evaluate(&c, 0).is_some());
    }

    #[test]
    fn a_slow_canary_is_rolled_back_by_its_p95() {
        let c = canary(); // 150%
        let mut s = CanaryState::default();
        feed(&mut s, &c, Arm::Stable, 100, 0, 1000, 0);
        feed(&mut s, &c, Arm::Canary, 100, 0, 1400, 0);
        assert!(matches!(s.verdict(&c, 0), Verdict::Healthy { .. }), "140%");
        let mut s = CanaryState::default();
        feed(&mut s, &c, Arm::Stable, 100, 0, 1000, 0);
        feed(&mut s, &c, Arm::Canary, 90, 0, 1000, 0);
        feed(&mut s, &c, Arm::Canary, 10, 0, 2000, 0);
        let stats = s.stats(Arm::Canary, 0);
        assert_eq!(stats.p95_ms, Some(upper_bound(bucket_of(2000))));
        let r = s.evaluate(&c, 5).expect("p95 doubled");
        assert!(matches!(
            r.reason,
            Reason::Latency {
                max_ratio_pct: 150,
                ..
            }
        ));
        // The alert.
        let notice = r.notice("gpt-4o", &c);
        assert_eq!(notice.event_type, "canary.rolled_back");
        let body: Value = serde_json::from_str(&notice.body(WebhookFormat::Json)).unwrap();
        assert_eq!(body["data"]["model"], "gpt-4o");
        assert_eq!(body["data"]["canary"]["channel_id"], "c2");
        assert_eq!(body["data"]["reason"]["kind"], "latency");
        let slack: Value = serde_json::from_str(&notice.body(WebhookFormat::Slack)).unwrap();
        assert!(slack["text"].as_str().unwrap().contains("rolled back"));
    }

    #[test]
    fn the_window_slides_and_a_new_canary_starts_afresh() {
        let c = canary(); // 300 s window, 30 s slots
        let mut s = CanaryState::default();
        feed(&mut s, &c, Arm::Canary, 100, 100, 100, 0);
        feed(&mut s, &c, Arm::Stable, 100, 0, 100, 0);
        // Ten slots later the failures have left the window.
        let later = 300_000;
        feed(&mut s, &c, Arm::Canary, 100, 0, 100, later);
        feed(&mut s, &c, Arm::Stable, 100, 0, 100, later);
        assert_eq!(s.stats(Arm::Canary, later).errors, 0);
        assert!(matches!(s.verdict(&c, later), Verdict::Healthy { .. }));
        // Just within the window they count.
        let mut s = CanaryState::default();
        feed(&mut s, &c, Arm::Canary, 100, 100, 100, 0);
        assert_eq!(s.stats(Arm::Canary, later - 30_001).errors, 100);
        // Rolled back, then a new canary route: traffic again, and a fresh window.
        feed(&mut s, &c, Arm::Stable, 100, 0, 100, 0);
        assert!(s.evaluate(&c, 0).is_some());
        let next = Canary {
            route: route("c9", "gpt-next-2"),
            ..c.clone()
        };
        assert!(s.goes_to_canary(&next, 0));
        assert!(!s.goes_to_canary(&c, 0));
        s.record(&next, Arm::Canary, Some(200), 5, 1);
        assert!(s.rolled_back().is_none());
        assert_eq!(s.stats(Arm::Canary, 1).requests, 1);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<CanaryState>(&json).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<CanaryState>("{}").unwrap(),
            CanaryState::default()
        );
    }

    #[test]
    fn canaries_are_validated_naming_the_field() {
        let primaries = [route("c1", "gpt-4o")];
        let ok = json!({"route": {"channel_id": "c2", "upstream_model": "gpt-next"}, "percent": 5, "window_s": 300,
            "max_error_rate_delta_bps": 500, "max_p95_ratio_pct": 150, "min_requests": 50});
        assert_eq!(
            parse_canary(&ok, "m.canary.", &primaries).unwrap(),
            canary()
        );
        let defaults = parse_canary(
            &json!({"route": {"channel_id": "c2", "upstream_model": "gpt-next"}, "percent": 5}),
            "",
            &primaries,
        )
        .unwrap();
        assert_eq!(defaults, canary());
        let with = |k: &str, v: Value| {
            let mut o = ok.clone();
            o[k] = v;
            param(parse_canary(&o, "m.canary.", &primaries).unwrap_err())
        };
        assert_eq!(with("percent", json!(100)), "m.canary.percent");
        assert_eq!(with("percent", json!(-1)), "m.canary.percent");
        assert_eq!(with("percent", json!("5")), "m.canary.percent");
        assert_eq!(with("window_s", json!(5)), "m.canary.window_s");
        assert_eq!(
            with("max_error_rate_delta_bps", json!(10_000)),
            "m.canary.max_error_rate_delta_bps"
        );
        assert_eq!(
            with("max_p95_ratio_pct", json!(99)),
            "m.canary.max_p95_ratio_pct"
        );
        assert_eq!(with("min_requests", json!(0)), "m.canary.min_requests");
        assert_eq!(
            with(
                "route",
                json!({"channel_id": "c1", "upstream_model": "gpt-4o"})
            ),
            "m.canary.route"
        );
        assert_eq!(
            with("route", json!({"channel_id": "c2"})),
            "m.canary.route.upstream_model"
        );
        assert_eq!(
            with(
                "route",
                json!({"channel_id": "c2", "upstream_model": "x", "w": 1})
            ),
            "m.canary.route.w"
        );
        assert_eq!(with("route", json!("c2")), "m.canary.route");
        assert_eq!(with("extra", json!(1)), "m.canary.extra");
        let mut no_percent = ok.clone();
        no_percent.as_object_mut().unwrap().remove("percent");
        assert_eq!(
            param(parse_canary(&no_percent, "m.canary.", &primaries).unwrap_err()),
            "m.canary.percent"
        );
        assert_eq!(
            param(parse_canary(&json!(5), "m.canary.", &primaries).unwrap_err()),
            "m.canary"
        );

        let shadow =
            json!({"route": {"channel_id": "c3", "upstream_model": "gpt-4o"}, "percent": 100});
        assert_eq!(
            parse_shadow(&shadow, "m.shadow.", &primaries)
                .unwrap()
                .percent,
            100
        );
        let same =
            json!({"route": {"channel_id": "c1", "upstream_model": "gpt-4o"}, "percent": 10});
        assert_eq!(
            param(parse_shadow(&same, "m.shadow.", &primaries).unwrap_err()),
            "m.shadow.route"
        );
        let over =
            json!({"route": {"channel_id": "c3", "upstream_model": "gpt-4o"}, "percent": 101});
        assert_eq!(
            param(parse_shadow(&over, "m.shadow.", &primaries).unwrap_err()),
            "m.shadow.percent"
        );
    }
}
