//! The circuit breaker of one (channel, upstream model): a sliding window of outcomes, opened
//! at a failure threshold after a minimum of requests, one probe worldwide when half-open, and
//! a cooldown that doubles with each failed probe. Integer arithmetic only; the state is what
//! the channel's health Durable Object keeps as JSON.

use serde::{Deserialize, Serialize};

// ---- circuit breaker -------------------------------------------------------------------

/// How a breaker judges a (channel, upstream model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Outcomes older than this no longer count.
    pub window_ms: i64,
    /// Fewer outcomes than this in the window never open the breaker: two failures out of
    /// three requests are noise, not an outage.
    pub min_requests: u32,
    /// Opens when failures are at least this share of the window's outcomes (1–100).
    pub failure_percent: u32,
    /// How long the first opening lasts; each reopening without a close doubles it.
    pub cooldown_ms: i64,
    pub max_cooldown_ms: i64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_ms: 30_000,
            min_requests: 10,
            failure_percent: 50,
            cooldown_ms: 10_000,
            max_cooldown_ms: 120_000,
        }
    }
}

/// The window is this many fixed sub-buckets: memory stays constant however many isolates
/// report, and an outcome leaves the window at most one bucket late.
const BREAKER_BUCKETS: i64 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    /// `now_ms / bucket_ms` of the bucket.
    slot: i64,
    successes: u32,
    failures: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    #[default]
    Closed,
    /// Half-open once `until_ms` has passed; `probe_since_ms` is the probe let through then.
    Open {
        until_ms: i64,
        #[serde(default)]
        probe_since_ms: Option<i64>,
    },
}

/// A circuit breaker over one (channel, upstream model); a Durable Object stores it as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    #[serde(default)]
    config: BreakerConfig,
    #[serde(default)]
    phase: Phase,
    #[serde(default)]
    tallies: Vec<Tally>,
    /// Openings since the last close: the exponent of the cooldown.
    #[serde(default)]
    consecutive_opens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until_ms: i64 },
    HalfOpen,
}

impl BreakerState {
    pub fn phase(&self) -> BreakerPhase {
        match self {
            BreakerState::Closed => BreakerPhase::Closed,
            BreakerState::Open { .. } => BreakerPhase::Open,
            BreakerState::HalfOpen => BreakerPhase::HalfOpen,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerPhase {
    Closed,
    Open,
    HalfOpen,
}

/// Whether a request may go to the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "admit")]
pub enum Admit {
    Yes,
    /// The one request that tests a half-open channel: report it with `record_probe`.
    Probe,
    No {
        retry_in_ms: u64,
    },
}

/// A breaker as the admin API and the relay's isolates see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerView {
    pub state: BreakerPhase,
    pub successes: u64,
    pub failures: u64,
    pub open_until_ms: Option<i64>,
    pub consecutive_opens: u32,
    pub probe_in_flight: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            ..Breaker::default()
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The operator changed the settings: the state stays, the next decision uses the new ones.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    pub fn state(&self, now_ms: i64) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until_ms, .. } if now_ms < until_ms => BreakerState::Open { until_ms },
            Phase::Open { .. } => BreakerState::HalfOpen,
        }
    }

    /// Closed admits everything; open nothing; half-open exactly one probe at a time. A probe
    /// whose outcome has not come back within `cooldown_ms` is taken as lost (its isolate died),
    /// and the next request becomes the probe.
    pub fn admit(&mut self, now_ms: i64) -> Admit {
        let cooldown = self.config.cooldown_ms.max(0);
        match &mut self.phase {
            Phase::Closed => Admit::Yes,
            Phase::Open { until_ms, .. } if now_ms < *until_ms => Admit::No {
                retry_in_ms: u64::try_from(*until_ms - now_ms).unwrap_or(0),
            },
            Phase::Open { probe_since_ms, .. } => match *probe_since_ms {
                Some(since) if now_ms.saturating_sub(since) < cooldown => Admit::No {
                    retry_in_ms: u64::try_from(since.saturating_add(cooldown) - now_ms)
                        .unwrap_or(0),
                },
                _ => {
                    *probe_since_ms = Some(now_ms);
                    Admit::Probe
                }
            },
        }
    }

    fn bucket_ms(&self) -> i64 {
        (self.config.window_ms / BREAKER_BUCKETS).max(1)
    }

    fn forget_old(&mut self, now_ms: i64) {
        let oldest = now_ms.div_euclid(self.bucket_ms()) - BREAKER_BUCKETS;
        self.tallies.retain(|t| t.slot > oldest);
    }

    fn window_counts(&self, now_ms: i64) -> (u64, u64) {
        let oldest = now_ms.div_euclid(self.bucket_ms()) - BREAKER_BUCKETS;
        self.tallies
            .iter()
            .filter(|t| t.slot > oldest)
            .fold((0, 0), |(s, f), t| {
                (s + u64::from(t.successes), f + u64::from(t.failures))
            })
    }

    /// Outcomes an isolate batched up. Only a closed breaker counts them: while open or
    /// half-open, late reports from before the opening say nothing about the channel now, and
    /// only the probe decides.
    pub fn record(&mut self, success: u32, failure: u32, now_ms: i64) {
        if self.phase != Phase::Closed || success.saturating_add(failure) == 0 {
            return;
        }
        self.forget_old(now_ms);
        let slot = now_ms.div_euclid(self.bucket_ms());
        match self.tallies.iter_mut().find(|t| t.slot == slot) {
            Some(t) => {
                t.successes = t.successes.saturating_add(success);
                t.failures = t.failures.saturating_add(failure);
            }
            None => self.tallies.push(Tally {
                slot,
                successes: success,
                failures: failure,
            }),
        }
        let (successes, failures) = self.window_counts(now_ms);
        let total = successes + failures;
        let percent = u64::from(self.config.failure_percent.clamp(1, 100));
        if total >= u64::from(self.config.min_requests.max(1)) && failures * 100 >= total * percent
        {
            self.trip(now_ms);
        }
    }

    /// The probe's outcome. Success closes and starts a fresh window; failure reopens for twice
    /// the last cooldown (up to the maximum). An outcome arriving while closed is an ordinary
    /// one; while open (a stale probe after a reopening) it is ignored.
    pub fn record_probe(&mut self, success: bool, now_ms: i64) {
        match self.state(now_ms) {
            BreakerState::HalfOpen if success => {
                self.phase = Phase::Closed;
                self.tallies.clear();
                self.consecutive_opens = 0;
            }
            BreakerState::HalfOpen => self.trip(now_ms),
            BreakerState::Closed => self.record(u32::from(success), u32::from(!success), now_ms),
            BreakerState::Open { .. } => {}
        }
    }

    fn trip(&mut self, now_ms: i64) {
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        let base = self.config.cooldown_ms.max(0);
        let doubling = 2i64.saturating_pow(self.consecutive_opens - 1);
        let cooldown = base
            .saturating_mul(doubling)
            .min(self.config.max_cooldown_ms.max(base));
        self.phase = Phase::Open {
            until_ms: now_ms.saturating_add(cooldown),
            probe_since_ms: None,
        };
    }

    pub fn view(&self, now_ms: i64) -> BreakerView {
        let (successes, failures) = self.window_counts(now_ms);
        let (open_until_ms, probe_in_flight) = match self.phase {
            Phase::Closed => (None, false),
            Phase::Open {
                until_ms,
                probe_since_ms,
            } => (
                Some(until_ms),
                probe_since_ms.is_some_and(|since| {
                    now_ms.saturating_sub(since) < self.config.cooldown_ms.max(0)
                }),
            ),
        };
        BreakerView {
            state: self.state(now_ms).phase(),
            successes,
            failures,
            open_until_ms,
            consecutive_opens: self.consecutive_opens,
            probe_in_flight,
        }
    }
}

/// Whether an upstream outcome counts against the channel's breaker: no answer at all
/// (`None`: connection error or timeout) and 5xx do. 429 does not: it says one key's quota is
/// spent, which the key pool handles, while the channel itself is healthy; other 4xx are the
/// request's fault.
pub fn is_failure(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => (500..=599).contains(&s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            window_ms: 10_000,
            min_requests: 4,
            failure_percent: 50,
            cooldown_ms: 1_000,
            max_cooldown_ms: 3_000,
        })
    }

    #[test]
    fn breaker_opens_at_the_threshold_only_after_min_requests() {
        let mut b = small_breaker();
        b.record(0, 3, 0);
        assert_eq!(b.state(0), BreakerState::Closed, "3 < min_requests");
        assert_eq!(b.admit(0), Admit::Yes);
        // Successes bring the window to min_requests, and 3 failures of 6 is exactly 50%.
        b.record(3, 0, 10);
        assert_eq!(b.state(10), BreakerState::Open { until_ms: 1_010 });
        let mut b = small_breaker();
        b.record(3, 2, 0);
        assert_eq!(b.state(0), BreakerState::Closed, "40% is below 50%");
        b.record(0, 1, 5);
        assert_eq!(b.state(5), BreakerState::Open { until_ms: 1_005 });
        assert_eq!(b.admit(500), Admit::No { retry_in_ms: 505 });
        let v = b.view(500);
        assert_eq!(
            (
                v.state,
                v.failures,
                v.successes,
                v.open_until_ms,
                v.consecutive_opens
            ),
            (BreakerPhase::Open, 3, 3, Some(1_005), 1)
        );
    }

    #[test]
    fn the_window_slides_and_forgets_old_failures() {
        let mut b = small_breaker();
        b.record(0, 3, 0);
        // 10 s later the first failures have left the window: 1 failure of 4 stays closed.
        b.record(3, 1, 10_000);
        assert_eq!(b.state(10_000), BreakerState::Closed);
        assert_eq!(b.view(10_000).failures, 1);
        // Within the window they count: 3 + 1 failures of 7.
        let mut b = small_breaker();
        b.record(0, 3, 0);
        b.record(3, 1, 8_999);
        assert_eq!(b.state(8_999), BreakerState::Open { until_ms: 9_999 });
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let mut b = small_breaker();
        b.record(0, 4, 0);
        assert_eq!(b.state(1_000), BreakerState::HalfOpen);
        assert_eq!(b.admit(1_000), Admit::Probe);
        assert_eq!(b.admit(1_001), Admit::No { retry_in_ms: 999 });
        assert!(b.view(1_001).probe_in_flight);
        // Reports from before the opening do not count while half-open.
        b.record(0, 50, 1_100);
        assert_eq!(b.view(1_100).failures, 4);
        b.record_probe(true, 1_200);
        assert_eq!(b.state(1_200), BreakerState::Closed);
        let v = b.view(1_200);
        assert_eq!(
            (v.failures, v.consecutive_opens, v.probe_in_flight),
            (0, 0, false)
        );
        assert_eq!(b.admit(1_200), Admit::Yes);
    }

    #[test]
    fn a_lost_probe_lets_another_through() {
        let mut b = small_breaker();
        b.record(0, 4, 0);
        assert_eq!(b.admit(1_000), Admit::Probe);
        assert_eq!(b.admit(1_999), Admit::No { retry_in_ms: 1 });
        assert_eq!(b.admit(2_000), Admit::Probe);
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_maximum() {
        let mut b = small_breaker();
        b.record(0, 4, 0);
        let mut now = 1_000;
        for expected in [2_000, 3_000, 3_000] {
            assert_eq!(b.admit(now), Admit::Probe);
            b.record_probe(false, now + 10);
            assert_eq!(
                b.state(now + 10),
                BreakerState::Open {
                    until_ms: now + 10 + expected
                }
            );
            now += 10 + expected;
        }
        assert_eq!(b.view(now).consecutive_opens, 4);
        // A stale probe outcome while open changes nothing.
        let before = b.clone();
        b.record_probe(true, now - 1);
        assert_eq!(b, before);
        assert_eq!(b.admit(now), Admit::Probe);
        b.record_probe(true, now);
        assert_eq!(b.state(now), BreakerState::Closed);
        // After a close the next opening starts from the base cooldown again.
        b.record(0, 4, now);
        assert_eq!(
            b.state(now),
            BreakerState::Open {
                until_ms: now + 1_000
            }
        );
    }

    #[test]
    fn breaker_state_round_trips_as_json() {
        let mut b = Breaker::default();
        b.record(1, 20, 5);
        assert_eq!(b.admit(10_005), Admit::Probe);
        let json = serde_json::to_string(&b).unwrap();
        let back: Breaker = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        let empty: Breaker = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Breaker::default());
        let view = serde_json::to_value(b.view(10_006)).unwrap();
        assert_eq!(view["state"], "half_open");
        assert_eq!(view["probe_in_flight"], true);
        assert_eq!(
            serde_json::to_value(Admit::No { retry_in_ms: 3 }).unwrap(),
            serde_json::json!({"admit": "no", "retry_in_ms": 3})
        );
    }

    #[test]
    fn degenerate_breaker_settings_stay_safe() {
        let mut b = Breaker::new(BreakerConfig {
            window_ms: 0,
            min_requests: 0,
            failure_percent: 0,
            cooldown_ms: -5,
            max_cooldown_ms: -5,
        });
        b.record(0, 0, 0);
        assert_eq!(
            b.state(0),
            BreakerState::Closed,
            "nothing recorded opens nothing"
        );
        b.record(1, 0, 0);
        // failure_percent 0 is taken as 1%: successes alone never open.
        assert_eq!(b.state(0), BreakerState::Closed);
        b.record(0, 1, 1);
        assert_eq!(b.state(1), BreakerState::HalfOpen);
    }

    #[test]
    fn what_counts_against_a_breaker() {
        assert!(is_failure(None));
        for s in [500, 502, 503, 504, 529] {
            assert!(is_failure(Some(s)), "{s}");
        }
        for s in [200, 400, 401, 404, 408, 429] {
            assert!(!is_failure(Some(s)), "{s}");
        }
    }
}
