//! Rate limits, concurrency and calendar quotas of one key (or one tenant), as a pure state
//! machine that a Durable Object holds: `reserve` before a request goes upstream, `settle`
//! after, with the time passed in.
//!
//! Exactness comes from where this runs: one Durable Object per key serialises every reserve
//! and settle, so "N requests a day" admits exactly N however many isolates ask at once.
//! A request reserves its worst case (prompt estimate + maximum output) and settles to what it
//! used, so a token quota is never exceeded by more than one request's under-estimate.
//!
//! Per-minute limits are token buckets in exact integer arithmetic: a bucket's level is kept
//! in units of 1/60000 of a request (or token), so refilling `rate` per minute adds exactly
//! `elapsed_ms × rate` and nothing drifts. Capacity is the rate plus the burst allowance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const MINUTE_MS: i64 = 60_000;
/// A reservation not settled within this long is settled at its reserved amount: the isolate
/// that made it is gone, and its concurrency slot must not leak.
pub const RESERVATION_TTL_MS: i64 = 15 * MINUTE_MS;
/// Output tokens reserved when a request names no maximum.
pub const DEFAULT_OUTPUT_RESERVE: u64 = 4096;
/// Absurd limits are refused rather than stored (they would overflow nothing, but they are
/// always a typo).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

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
pub fn parse_limits(value: &serde_json::Value, param: &str) -> Result<Limits, (String, String)> {
    let limits: Limits =
        serde_json::from_value(value.clone()).map_err(|e| (param.to_string(), e.to_string()))?;
    let check = |field: &str, v: Option<u64>, min: u64| -> Result<(), (String, String)> {
        match v {
            Some(n) if n < min || n > MAX_LIMIT => Err((
                format!("{param}.{field}"),
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
        return Err((
            format!("{param}.utc_offset_minutes"),
            "must be between -720 and 840".into(),
        ));
    }
    Ok(limits)
}

// ---- calendar periods ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    pub fn name(&self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm: exact for every
/// Gregorian date, leap years included).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1–12, day 1–31) of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `[start, end)` in UTC ms of the period containing `now_ms`, with periods starting at local
/// midnight `offset_minutes` east of UTC. Weeks start on Monday (ISO 8601).
pub fn period_bounds(period: Period, now_ms: i64, offset_minutes: i32) -> (i64, i64) {
    const DAY_MS: i64 = 86_400_000;
    let offset_ms = i64::from(offset_minutes) * MINUTE_MS;
    let local_day = (now_ms + offset_ms).div_euclid(DAY_MS);
    let (start_day, end_day) = match period {
        Period::Day => (local_day, local_day + 1),
        Period::Week => {
            // 1970-01-01 was a Thursday: day 0 has ISO weekday 4 (Monday = 1).
            let weekday = (local_day + 3).rem_euclid(7);
            (local_day - weekday, local_day - weekday + 7)
        }
        Period::Month => {
            let (y, m, _) = civil_from_days(local_day);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
        }
    };
    (start_day * DAY_MS - offset_ms, end_day * DAY_MS - offset_ms)
}

// ---- the state machine ----------------------------------------------------------------

/// A token bucket in units of 1/60000: `rate` per minute refills `elapsed_ms × rate` units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    /// May go negative: a request that used more than it reserved leaves a debt.
    level: i128,
    at_ms: i64,
    started: bool,
}

const UNIT: i128 = MINUTE_MS as i128;

impl Bucket {
    fn refill(&mut self, now_ms: i64, rate: u64, capacity: u64) {
        let cap = i128::from(capacity) * UNIT;
        if !self.started {
            *self = Bucket {
                level: cap,
                at_ms: now_ms,
                started: true,
            };
            return;
        }
        let elapsed = i128::from((now_ms - self.at_ms).max(0));
        self.level = (self.level + elapsed * i128::from(rate)).min(cap);
        self.at_ms = self.at_ms.max(now_ms);
    }

    fn can_take(&self, amount: u64) -> bool {
        self.level >= i128::from(amount) * UNIT
    }

    fn take(&mut self, amount: i128) {
        self.level -= amount * UNIT;
    }

    fn remaining(&self) -> u64 {
        u64::try_from(self.level.max(0) / UNIT).unwrap_or(u64::MAX)
    }

    /// Milliseconds until `amount` can be taken (0 if it can now).
    fn wait_ms(&self, amount: u64, rate: u64) -> u64 {
        let missing = i128::from(amount) * UNIT - self.level;
        if missing <= 0 || rate == 0 {
            return 0;
        }
        let rate = i128::from(rate);
        u64::try_from((missing + rate - 1) / rate).unwrap_or(u64::MAX)
    }

    /// Milliseconds until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    fn full_in_ms(&self, rate: u64, capacity: u64) -> u64 {
        self.wait_ms(capacity, rate)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PeriodUsage {
    start_ms: i64,
    end_ms: i64,
    requests: u64,
    tokens: u64,
    cost_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    tokens: u64,
    cost_micros: u64,
    at_ms: i64,
}

/// Everything a limiter remembers; the Durable Object stores it as one JSON value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimiterState {
    /// The key was revoked: every request is refused, worldwide, from the next one on.
    #[serde(default)]
    revoked: bool,
    requests: Bucket,
    tokens: Bucket,
    periods: [PeriodUsage; 3],
    in_flight: BTreeMap<String, Reservation>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "limit")]
pub enum LimitHit {
    Revoked,
    Concurrency,
    RequestsPerMinute,
    TokensPerMinute,
    Quota { period: Period, measure: Measure },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Requests,
    Tokens,
    Cost,
}

impl LimitHit {
    pub fn describe(&self) -> String {
        match self {
            LimitHit::Revoked => "revoked".into(),
            LimitHit::Concurrency => "concurrent requests".into(),
            LimitHit::RequestsPerMinute => "requests per minute".into(),
            LimitHit::TokensPerMinute => "tokens per minute".into(),
            LimitHit::Quota { period, measure } => {
                let what = match measure {
                    Measure::Requests => "requests",
                    Measure::Tokens => "tokens",
                    Measure::Cost => "spend",
                };
                format!("{what} per {}", period.name())
            }
        }
    }
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub admitted: bool,
    pub hit: Option<LimitHit>,
    /// When a refused request may succeed (for `Retry-After`).
    pub retry_after_ms: Option<u64>,
    pub rate: RateInfo,
}

/// What one request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub tokens: u64,
    pub cost_micros: u64,
}

impl LimiterState {
    fn roll_periods(&mut self, limits: &Limits, now_ms: i64) {
        for (i, period) in Period::ALL.iter().enumerate() {
            let usage = &mut self.periods[i];
            if now_ms >= usage.end_ms || now_ms < usage.start_ms {
                let (start_ms, end_ms) = period_bounds(*period, now_ms, limits.utc_offset_minutes);
                *usage = PeriodUsage {
                    start_ms,
                    end_ms,
                    ..PeriodUsage::default()
                };
            }
        }
    }

    /// Settles reservations whose request was never settled, at what they reserved.
    fn expire(&mut self, now_ms: i64) {
        self.in_flight
            .retain(|_, r| now_ms - r.at_ms < RESERVATION_TTL_MS);
    }

    fn rate_info(&self, limits: &Limits) -> RateInfo {
        let rpm_cap = limits.rpm.map(|r| r + limits.burst_requests.unwrap_or(0));
        let tpm_cap = limits.tpm.map(|t| t + limits.burst_tokens.unwrap_or(0));
        RateInfo {
            limit_requests: limits.rpm,
            remaining_requests: limits.rpm.map(|_| self.requests.remaining()),
            reset_requests_ms: limits
                .rpm
                .zip(rpm_cap)
                .map(|(r, c)| self.requests.full_in_ms(r, c)),
            limit_tokens: limits.tpm,
            remaining_tokens: limits.tpm.map(|_| self.tokens.remaining()),
            reset_tokens_ms: limits
                .tpm
                .zip(tpm_cap)
                .map(|(t, c)| self.tokens.full_in_ms(t, c)),
        }
    }

    /// Admit `id` and hold its worst case, or say which limit refuses it. A refused request
    /// changes nothing. Reserving an id twice is answered as the first time (a retried call).
    pub fn reserve(&mut self, limits: &Limits, id: &str, ask: Ask, now_ms: i64) -> Decision {
        self.expire(now_ms);
        self.roll_periods(limits, now_ms);
        if let (Some(rpm), true) = (limits.rpm, true) {
            self.requests
                .refill(now_ms, rpm, rpm + limits.burst_requests.unwrap_or(0));
        }
        if let Some(tpm) = limits.tpm {
            self.tokens
                .refill(now_ms, tpm, tpm + limits.burst_tokens.unwrap_or(0));
        }
        let admitted = |s: &LimiterState| Decision {
            admitted: true,
            hit: None,
            retry_after_ms: None,
            rate: s.rate_info(limits),
        };
        if self.revoked {
            return Decision {
                admitted: false,
                hit: Some(LimitHit::Revoked),
                retry_after_ms: None,
                rate: RateInfo::default(),
            };
        }
        // A key without limits is consulted only for revocation: nothing to hold or settle.
        if limits.is_empty() || self.in_flight.contains_key(id) {
            return admitted(self);
        }
        let refuse = |s: &LimiterState, hit: LimitHit, retry_after_ms: Option<u64>| Decision {
            admitted: false,
            hit: Some(hit),
            retry_after_ms,
            rate: s.rate_info(limits),
        };
        if limits
            .concurrency
            .is_some_and(|c| self.in_flight.len() as u64 >= c)
        {
            return refuse(self, LimitHit::Concurrency, Some(1000));
        }
        if let Some(rpm) = limits.rpm {
            if !self.requests.can_take(1) {
                return refuse(
                    self,
                    LimitHit::RequestsPerMinute,
                    Some(self.requests.wait_ms(1, rpm)),
                );
            }
        }
        if let Some(tpm) = limits.tpm {
            // A request larger than the whole bucket could never pass: let it through when the
            // bucket is full rather than refuse it forever.
            let cap = tpm + limits.burst_tokens.unwrap_or(0);
            let need = ask.tokens.min(cap);
            if !self.tokens.can_take(need) {
                return refuse(
                    self,
                    LimitHit::TokensPerMinute,
                    Some(self.tokens.wait_ms(need, tpm)),
                );
            }
        }
        for (i, period) in Period::ALL.iter().enumerate() {
            let Some(quota) = limits.quota(*period) else {
                continue;
            };
            let used = &self.periods[i];
            let until_reset = u64::try_from(used.end_ms - now_ms).unwrap_or(0);
            let over = |quota: Option<u64>, used: u64, more: u64| {
                quota.is_some_and(|q| used.saturating_add(more) > q)
            };
            let measure = if over(quota.requests, used.requests, 1) {
                Some(Measure::Requests)
            } else if over(quota.tokens, used.tokens, ask.tokens) {
                Some(Measure::Tokens)
            } else if over(quota.cost_micros, used.cost_micros, ask.cost_micros) {
                Some(Measure::Cost)
            } else {
                None
            };
            if let Some(measure) = measure {
                return refuse(
                    self,
                    LimitHit::Quota {
                        period: *period,
                        measure,
                    },
                    Some(until_reset),
                );
            }
        }
        // Admitted: hold everything it may use.
        if limits.rpm.is_some() {
            self.requests.take(1);
        }
        if limits.tpm.is_some() {
            self.tokens.take(i128::from(ask.tokens));
        }
        for usage in &mut self.periods {
            usage.requests += 1;
            usage.tokens = usage.tokens.saturating_add(ask.tokens);
            usage.cost_micros = usage.cost_micros.saturating_add(ask.cost_micros);
        }
        self.in_flight.insert(
            id.to_string(),
            Reservation {
                tokens: ask.tokens,
                cost_micros: ask.cost_micros,
                at_ms: now_ms,
            },
        );
        admitted(self)
    }

    /// Replace `id`'s reservation by what it used (zero for a request that failed upstream),
    /// releasing the rest. Settling an unknown or already settled id only records usage it
    /// brings beyond nothing (a late settle after expiry), and settling twice is harmless.
    pub fn settle(&mut self, limits: &Limits, id: &str, used: Ask, now_ms: i64) -> RateInfo {
        self.roll_periods(limits, now_ms);
        let reserved = self.in_flight.remove(id);
        if let Some(r) = &reserved {
            // What the request used beyond (or below) its reservation, in this period only:
            // a reservation made in a period that has since ended is that period's business.
            let tokens_delta = i128::from(used.tokens) - i128::from(r.tokens);
            let cost_delta = i128::from(used.cost_micros) - i128::from(r.cost_micros);
            for usage in &mut self.periods {
                if r.at_ms >= usage.start_ms {
                    usage.tokens = apply(usage.tokens, tokens_delta);
                    usage.cost_micros = apply(usage.cost_micros, cost_delta);
                }
            }
            if limits.tpm.is_some() {
                self.tokens.take(tokens_delta);
                let cap =
                    i128::from(limits.tpm.unwrap_or(0) + limits.burst_tokens.unwrap_or(0)) * UNIT;
                self.tokens.level = self.tokens.level.min(cap);
            }
        }
        self.rate_info(limits)
    }

    /// Undo a reservation entirely, as if the request had never been admitted: for a request
    /// another limiter refused (a key's quota must not pay for its tenant's refusal).
    pub fn release(&mut self, limits: &Limits, id: &str, now_ms: i64) {
        self.roll_periods(limits, now_ms);
        let Some(r) = self.in_flight.remove(id) else {
            return;
        };
        for usage in &mut self.periods {
            if r.at_ms >= usage.start_ms {
                usage.requests = usage.requests.saturating_sub(1);
                usage.tokens = usage.tokens.saturating_sub(r.tokens);
                usage.cost_micros = usage.cost_micros.saturating_sub(r.cost_micros);
            }
        }
        if let Some(rpm) = limits.rpm {
            let cap = i128::from(rpm + limits.burst_requests.unwrap_or(0)) * UNIT;
            self.requests.level = (self.requests.level + UNIT).min(cap);
        }
        if let Some(tpm) = limits.tpm {
            let cap = i128::from(tpm + limits.burst_tokens.unwrap_or(0)) * UNIT;
            self.tokens.level = (self.tokens.level + i128::from(r.tokens) * UNIT).min(cap);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Usage in the current period (requests, tokens, cost), reservations included.
    pub fn period_usage(&self, period: Period) -> (u64, u64, u64) {
        let u = &self.periods[Period::ALL.iter().position(|p| *p == period).unwrap_or(0)];
        (u.requests, u.tokens, u.cost_micros)
    }
}

/// A call to a limiter Durable Object (JSON over its fetch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LimiterCall {
    Reserve {
        id: String,
        ask: Ask,
        limits: Limits,
    },
    Settle {
        id: String,
        used: Ask,
        limits: Limits,
    },
    /// Undo a reservation another limiter made pointless.
    Release {
        id: String,
        limits: Limits,
    },
    Revoke,
    /// Current usage, for the admin API.
    Peek {
        limits: Limits,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LimiterReply {
    Decision(Decision),
    Rate(RateInfo),
    Usage(UsageView),
}

/// What a limiter holds now, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageView {
    pub revoked: bool,
    pub in_flight: usize,
    pub day: PeriodView,
    pub week: PeriodView,
    pub month: PeriodView,
    pub rate: RateInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodView {
    pub start_ms: i64,
    pub end_ms: i64,
    pub requests: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}

impl LimiterState {
    /// One call, as the Durable Object receives it; returns whether the state changed.
    pub fn handle(&mut self, call: LimiterCall, now_ms: i64) -> (LimiterReply, bool) {
        match call {
            LimiterCall::Reserve { id, ask, limits } => {
                let d = self.reserve(&limits, &id, ask, now_ms);
                let changed = d.admitted;
                (LimiterReply::Decision(d), changed)
            }
            LimiterCall::Settle { id, used, limits } => (
                LimiterReply::Rate(self.settle(&limits, &id, used, now_ms)),
                true,
            ),
            LimiterCall::Release { id, limits } => {
                self.release(&limits, &id, now_ms);
                (LimiterReply::Rate(self.rate_info(&limits)), true)
            }
            LimiterCall::Revoke => {
                self.revoked = true;
                self.in_flight.clear();
                (LimiterReply::Rate(RateInfo::default()), true)
            }
            LimiterCall::Peek { limits } => {
                self.roll_periods(&limits, now_ms);
                let view = |p: &PeriodUsage| PeriodView {
                    start_ms: p.start_ms,
                    end_ms: p.end_ms,
                    requests: p.requests,
                    tokens: p.tokens,
                    cost_micros: p.cost_micros,
                };
                let usage = UsageView {
                    revoked: self.revoked,
                    in_flight: self.in_flight.len(),
                    day: view(&self.periods[0]),
                    week: view(&self.periods[1]),
                    month: view(&self.periods[2]),
                    rate: self.rate_info(&limits),
                };
                (LimiterReply::Usage(usage), false)
            }
        }
    }
}

fn apply(value: u64, delta: i128) -> u64 {
    u64::try_from((i128::from(value) + delta).max(0)).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    fn ask(tokens: u64) -> Ask {
        Ask {
            tokens,
            cost_micros: 0,
        }
    }

    #[test]
    fn civil_calendar_round_trips_across_leap_years() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2024, 2, 29),
            (2100, 3, 1),
            (1969, 12, 31),
            (2026, 11, 23),
        ] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
            2,
            "2024 is a leap year"
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1,
            "2100 is not"
        );
    }

    #[test]
    fn periods_start_at_local_midnight() {
        let day = 86_400_000;
        assert_eq!(period_bounds(Period::Day, T0 + 5, 0), (T0, T0 + day));
        assert_eq!(period_bounds(Period::Day, T0 - 1, 0), (T0 - day, T0));
        // UTC+2: local midnight is 22:00 UTC the day before.
        let two_h = 2 * 3_600_000;
        assert_eq!(
            period_bounds(Period::Day, T0, 120),
            (T0 - two_h, T0 - two_h + day)
        );
        assert_eq!(
            period_bounds(Period::Day, T0 - two_h - 1, 120).1,
            T0 - two_h
        );
        // UTC-5 at 03:00 UTC on Jan 1 is still Dec 31 locally.
        let (start, _) = period_bounds(Period::Day, T0 + 3 * 3_600_000, -300);
        assert_eq!(start, T0 - day + 5 * 3_600_000);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let day = 86_400_000;
        // 2026-01-01 is a Thursday: its week began Monday 2025-12-29.
        assert_eq!(
            period_bounds(Period::Week, T0, 0),
            (T0 - 3 * day, T0 + 4 * day)
        );
        let (s, e) = period_bounds(Period::Month, T0 + 40 * day, 0);
        assert_eq!(
            (s, e),
            (T0 + 31 * day, T0 + 59 * day),
            "February 2026 has 28 days"
        );
        let feb_2028 = days_from_civil(2028, 2, 10) * day;
        let (s, e) = period_bounds(Period::Month, feb_2028, 0);
        assert_eq!((e - s) / day, 29, "leap February");
        let dec = days_from_civil(2026, 12, 31) * day;
        assert_eq!(
            period_bounds(Period::Month, dec, 0).1,
            days_from_civil(2027, 1, 1) * day
        );
    }

    #[test]
    fn a_daily_request_quota_admits_exactly_n() {
        let limits = Limits {
            day: Some(Quota {
                requests: Some(5),
                ..Quota::default()
            }),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        let admitted = (0..64)
            .filter(|i| s.reserve(&limits, &format!("r{i}"), ask(1), T0).admitted)
            .count();
        assert_eq!(admitted, 5);
        let refused = s.reserve(&limits, "late", ask(1), T0 + 1);
        assert_eq!(
            refused.hit,
            Some(LimitHit::Quota {
                period: Period::Day,
                measure: Measure::Requests
            })
        );
        assert_eq!(refused.retry_after_ms, Some(86_400_000 - 1));
        // Settling does not give requests back; the next day does.
        s.settle(&limits, "r0", ask(0), T0 + 2);
        assert!(!s.reserve(&limits, "x", ask(1), T0 + 3).admitted);
        assert!(s.reserve(&limits, "y", ask(1), T0 + 86_400_000).admitted);
    }

    #[test]
    fn token_quota_holds_the_worst_case_and_settles_to_actual() {
        let limits = Limits {
            day: Some(Quota {
                tokens: Some(1000),
                ..Quota::default()
            }),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        assert!(s.reserve(&limits, "a", ask(600), T0).admitted);
        assert!(
            !s.reserve(&limits, "b", ask(600), T0).admitted,
            "600 + 600 > 1000 while a is in flight"
        );
        s.settle(&limits, "a", ask(100), T0 + 10);
        assert_eq!(s.period_usage(Period::Day).1, 100);
        assert!(s.reserve(&limits, "b", ask(600), T0 + 11).admitted);
        // A failed request settles at zero.
        s.settle(&limits, "b", ask(0), T0 + 12);
        assert_eq!(s.period_usage(Period::Day).1, 100);
    }

    #[test]
    fn concurrency_counts_in_flight_and_expired_reservations_free_their_slot() {
        let limits = Limits {
            concurrency: Some(2),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        assert!(s.reserve(&limits, "a", ask(1), T0).admitted);
        assert!(s.reserve(&limits, "b", ask(1), T0).admitted);
        let d = s.reserve(&limits, "c", ask(1), T0);
        assert_eq!(d.hit, Some(LimitHit::Concurrency));
        s.settle(&limits, "a", ask(1), T0 + 1);
        assert!(s.reserve(&limits, "c", ask(1), T0 + 1).admitted);
        // b never settles (its isolate died): after the TTL its slot is free again.
        assert!(!s.reserve(&limits, "d", ask(1), T0 + 2).admitted);
        assert!(
            s.reserve(&limits, "d", ask(1), T0 + RESERVATION_TTL_MS + 1)
                .admitted
        );
    }

    #[test]
    fn rpm_bucket_refills_exactly_with_burst() {
        let limits = Limits {
            rpm: Some(60),
            burst_requests: Some(10),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        let admitted = (0..100)
            .filter(|i| s.reserve(&limits, &format!("r{i}"), ask(0), T0).admitted)
            .count();
        assert_eq!(admitted, 70, "rate plus burst at once");
        for i in 0..70 {
            s.settle(&limits, &format!("r{i}"), ask(0), T0);
        }
        let d = s.reserve(&limits, "next", ask(0), T0);
        assert_eq!(
            (d.hit, d.retry_after_ms),
            (Some(LimitHit::RequestsPerMinute), Some(1000))
        );
        // One request per second refills: 999 ms is not enough, 1000 ms is.
        assert!(!s.reserve(&limits, "n1", ask(0), T0 + 999).admitted);
        assert!(s.reserve(&limits, "n1", ask(0), T0 + 1000).admitted);
        assert_eq!(s.rate_info(&limits).limit_requests, Some(60));
    }

    #[test]
    fn tpm_debt_from_an_underestimate_is_paid_back() {
        let limits = Limits {
            tpm: Some(600),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        assert!(s.reserve(&limits, "a", ask(100), T0).admitted);
        s.settle(&limits, "a", ask(900), T0); // used 800 more than reserved: the bucket is in debt
        assert_eq!(s.rate_info(&limits).remaining_tokens, Some(0));
        let d = s.reserve(&limits, "b", ask(10), T0);
        assert_eq!(d.hit, Some(LimitHit::TokensPerMinute));
        // Debt of 300 + 10 needed, at 10 tokens a second: 31 s.
        assert_eq!(d.retry_after_ms, Some(31_000));
        assert!(s.reserve(&limits, "b", ask(10), T0 + 31_000).admitted);
        // A request larger than the bucket passes once the bucket is full.
        let mut fresh = LimiterState::default();
        assert!(fresh.reserve(&limits, "huge", ask(5000), T0).admitted);
    }

    #[test]
    fn without_limits_nothing_is_held() {
        let mut s = LimiterState::default();
        let d = s.reserve(&Limits::default(), "a", ask(100), T0);
        assert!(d.admitted);
        assert_eq!((s.in_flight(), s.period_usage(Period::Day)), (0, (0, 0, 0)));
        s.handle(LimiterCall::Revoke, T0);
        assert_eq!(
            s.reserve(&Limits::default(), "b", ask(1), T0).hit,
            Some(LimitHit::Revoked)
        );
    }

    #[test]
    fn a_released_reservation_leaves_no_trace() {
        let limits = Limits {
            rpm: Some(2),
            tpm: Some(1000),
            day: Some(Quota {
                requests: Some(1),
                tokens: Some(500),
                ..Quota::default()
            }),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        let before = {
            let mut fresh = LimiterState::default();
            fresh.reserve(&limits, "warm", ask(0), T0);
            fresh.release(&limits, "warm", T0);
            fresh
        };
        assert!(s.reserve(&limits, "a", ask(300), T0).admitted);
        s.release(&limits, "a", T0);
        assert_eq!(s, before);
        assert_eq!(s.period_usage(Period::Day), (0, 0, 0));
        assert!(
            s.reserve(&limits, "b", ask(300), T0).admitted,
            "the day's one request is still there"
        );
        assert!(
            parse_limits(&serde_json::json!({"day": {"reqests": 5}}), "limits").is_err(),
            "a misspelt quota field"
        );
    }

    #[test]
    fn refused_requests_change_nothing_and_retries_are_idempotent() {
        let limits = Limits {
            rpm: Some(1),
            day: Some(Quota {
                tokens: Some(50),
                ..Quota::default()
            }),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        assert!(s.reserve(&limits, "a", ask(10), T0).admitted);
        let before = s.clone();
        assert!(!s.reserve(&limits, "b", ask(10), T0).admitted);
        assert_eq!(s, before);
        assert!(
            s.reserve(&limits, "a", ask(10), T0).admitted,
            "the same id again"
        );
        assert_eq!(s.period_usage(Period::Day), (1, 10, 0));
        s.settle(&limits, "a", ask(5), T0);
        s.settle(&limits, "a", ask(5), T0);
        assert_eq!(s.period_usage(Period::Day), (1, 5, 0));
    }

    #[test]
    fn limits_are_validated() {
        let ok = serde_json::json!({"rpm": 60, "day": {"tokens": 1000}, "utc_offset_minutes": 60});
        assert!(parse_limits(&ok, "limits").is_ok());
        assert_eq!(
            parse_limits(&serde_json::json!({"rpm": 0}), "limits")
                .unwrap_err()
                .0,
            "limits.rpm"
        );
        assert_eq!(
            parse_limits(
                &serde_json::json!({"day": {"tokens": 1e15 as u64}}),
                "limits"
            )
            .unwrap_err()
            .0,
            "limits.day.tokens"
        );
        assert_eq!(
            parse_limits(&serde_json::json!({"rpm": -1}), "limits")
                .unwrap_err()
                .0,
            "limits"
        );
        assert_eq!(
            parse_limits(&serde_json::json!({"rmp": 5}), "limits")
                .unwrap_err()
                .0,
            "limits"
        );
        assert_eq!(
            parse_limits(&serde_json::json!({"utc_offset_minutes": 900}), "limits")
                .unwrap_err()
                .0,
            "limits.utc_offset_minutes"
        );
        assert!(Limits::default().is_empty());
        assert!(!parse_limits(&ok, "l").unwrap().is_empty());
    }

    #[test]
    fn calls_round_trip_as_json_and_revocation_is_final() {
        let limits = Limits {
            rpm: Some(10),
            ..Limits::default()
        };
        let mut s = LimiterState::default();
        let call: LimiterCall = serde_json::from_value(serde_json::json!({
            "op": "reserve", "id": "r1", "ask": {"tokens": 5, "cost_micros": 0}, "limits": {"rpm": 10}
        }))
        .unwrap();
        let (reply, changed) = s.handle(call, T0);
        assert!(changed);
        let LimiterReply::Decision(d) = reply else {
            panic!("a decision")
        };
        assert!(d.admitted && d.rate.remaining_requests == Some(9));
        let json = serde_json::to_string(&LimiterReply::Decision(d.clone())).unwrap();
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
        s.handle(LimiterCall::Revoke, T0);
        let d = s.reserve(&limits, "r2", ask(1), T0 + 1);
        assert_eq!((d.admitted, d.hit), (false, Some(LimitHit::Revoked)));
        let (LimiterReply::Usage(u), changed) = s.handle(LimiterCall::Peek { limits }, T0) else {
            panic!()
        };
        assert!(u.revoked && !changed && u.in_flight == 0);
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
