//! Lease mode, the isolate's side: capacity taken from a key's (or tenant's) limiter in one
//! call and spent locally, so steady traffic is decided without a Durable Object round trip.
//!
//! A lease is held at the limiter like a reservation of several requests. Requests take
//! their worst case from a live lease and give back what they did not use when they settle.
//! A lease ends at its expiry; once its last request has settled it is returned — settled at
//! the limiter with what it used — and the rest becomes available to every isolate again.
//! Pure: the Durable Object calls are the caller's; time comes in as `now_ms`.

use crate::governance::limits::protocol::LeaseGrant;
use crate::governance::limits::{Ask, RateInfo};

/// How long a lease lasts unless the tenant chose otherwise (`lease_ms`): the same bound as
/// the config cache, so a limit change reaches every isolate within about `CONFIG_CACHE_TTL_MS`
/// either way.
pub const DEFAULT_LEASE_MS: u64 = 2_000;

/// A new lease is fetched ahead of need once the live ones have less than this fraction of
/// their requests or time left, so steady traffic never waits for one.
const REFRESH_DIVISOR: u64 = 2;

#[derive(Debug, Clone)]
struct Local {
    id: String,
    expires_ms: i64,
    granted_ms: i64,
    granted_requests: u64,
    requests_left: u64,
    tokens_left: Option<u64>,
    cost_left: Option<u64>,
    /// Settled use so far; reservations of unsettled requests are not in it.
    used: Ask,
    outstanding: u32,
    rate: RateInfo,
    /// Takes no more requests; goes back once its last outstanding request settles.
    closing: bool,
}

impl Local {
    fn live(&self, now_ms: i64) -> bool {
        now_ms < self.expires_ms && !self.closing
    }

    fn fits(&self, ask: Ask) -> bool {
        self.requests_left >= 1
            && self.tokens_left.is_none_or(|t| t >= ask.tokens)
            && self.cost_left.is_none_or(|c| c >= ask.cost_micros)
    }

    /// Low on requests or on time: worth fetching the next lease now.
    fn low(&self, now_ms: i64) -> bool {
        let span = self.expires_ms - self.granted_ms;
        self.requests_left * REFRESH_DIVISOR < self.granted_requests
            || (self.expires_ms - now_ms) * REFRESH_DIVISOR as i64 <= span
    }
}

/// A request admitted from a lease: settle it with `LeaseBook::settle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub lease_id: String,
    pub reserved: Ask,
    /// The limiter's rate figures at grant time, less what this isolate spent since.
    pub rate: RateInfo,
}

/// A finished lease, to be settled at the limiter with what it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    pub lease_id: String,
    pub used: Ask,
}

/// The leases one isolate holds for one limiter.
#[derive(Debug, Clone, Default)]
pub struct LeaseBook {
    leases: Vec<Local>,
    /// A lease is being fetched in the background; do not start another.
    pub refreshing: bool,
}

impl LeaseBook {
    /// Take `ask` from a live lease, if one has room.
    pub fn take(&mut self, ask: Ask, now_ms: i64) -> Option<Taken> {
        let lease = self
            .leases
            .iter_mut()
            .find(|l| l.live(now_ms) && l.fits(ask))?;
        lease.requests_left -= 1;
        if let Some(t) = lease.tokens_left.as_mut() {
            *t -= ask.tokens;
        }
        if let Some(c) = lease.cost_left.as_mut() {
            *c -= ask.cost_micros;
        }
        lease.outstanding += 1;
        let mut rate = lease.rate;
        // What this isolate still holds counts as remaining: it is this key's to spend.
        rate.remaining_requests = rate
            .remaining_requests
            .map(|r| r.saturating_add(lease.requests_left));
        if let (Some(r), Some(t)) = (rate.remaining_tokens, lease.tokens_left) {
            rate.remaining_tokens = Some(r.saturating_add(t));
        }
        Some(Taken {
            lease_id: lease.id.clone(),
            reserved: Ask::request(ask.tokens, ask.cost_micros),
            rate,
        })
    }

    /// Add a lease the limiter granted. `taken`: the request that fetched it, already
    /// admitted from it (as `take` would have); `None` for a lease fetched ahead of need.
    pub fn add(
        &mut self,
        id: String,
        grant: LeaseGrant,
        taken: Option<Ask>,
        rate: RateInfo,
        now_ms: i64,
    ) {
        let zero = Ask {
            requests: 0,
            tokens: 0,
            cost_micros: 0,
        };
        let need = taken.unwrap_or(zero);
        self.leases.push(Local {
            id,
            expires_ms: grant.expires_ms,
            granted_ms: now_ms,
            granted_requests: grant.requests,
            requests_left: grant.requests.saturating_sub(need.requests),
            tokens_left: grant.tokens.map(|t| t.saturating_sub(need.tokens)),
            cost_left: grant
                .cost_micros
                .map(|c| c.saturating_sub(need.cost_micros)),
            used: zero,
            outstanding: u32::from(taken.is_some()),
            rate,
            closing: false,
        });
    }

    /// A request taken from `lease_id` never ran (another limiter refused it): give all of
    /// it back, the request included.
    pub fn release(&mut self, lease_id: &str, reserved: Ask, now_ms: i64) -> Vec<Return> {
        if let Some(l) = self.leases.iter_mut().find(|l| l.id == lease_id) {
            l.outstanding = l.outstanding.saturating_sub(1);
            l.requests_left = l.requests_left.saturating_add(1);
            if let Some(t) = l.tokens_left.as_mut() {
                *t = t.saturating_add(reserved.tokens);
            }
            if let Some(c) = l.cost_left.as_mut() {
                *c = c.saturating_add(reserved.cost_micros);
            }
        }
        self.finished(now_ms)
    }

    /// A request taken from `lease_id` is done: record what it used and give back the rest of
    /// its reservation. Returns the leases that are now finished (expired with nothing
    /// outstanding), removed from the book, for the caller to settle at the limiter.
    pub fn settle(&mut self, lease_id: &str, reserved: Ask, used: Ask, now_ms: i64) -> Vec<Return> {
        if let Some(l) = self.leases.iter_mut().find(|l| l.id == lease_id) {
            l.outstanding = l.outstanding.saturating_sub(1);
            l.used.requests = l.used.requests.saturating_add(1);
            l.used.tokens = l.used.tokens.saturating_add(used.tokens);
            l.used.cost_micros = l.used.cost_micros.saturating_add(used.cost_micros);
            // Giving back never adds more than was taken; using more than reserved leaves
            // the lease with less (the limiter records the excess when the lease returns).
            if let Some(t) = l.tokens_left.as_mut() {
                *t = if used.tokens <= reserved.tokens {
                    t.saturating_add(reserved.tokens - used.tokens)
                } else {
                    t.saturating_sub(used.tokens - reserved.tokens)
                };
            }
            if let Some(c) = l.cost_left.as_mut() {
                *c = if used.cost_micros <= reserved.cost_micros {
                    c.saturating_add(reserved.cost_micros - used.cost_micros)
                } else {
                    c.saturating_sub(used.cost_micros - reserved.cost_micros)
                };
            }
        }
        self.finished(now_ms)
    }

    /// Leases past expiry with no request outstanding, removed and ready to return.
    pub fn finished(&mut self, now_ms: i64) -> Vec<Return> {
        let mut done = Vec::new();
        self.leases.retain(|l| {
            if l.live(now_ms) || l.outstanding > 0 {
                return true;
            }
            done.push(Return {
                lease_id: l.id.clone(),
                used: l.used,
            });
            false
        });
        done
    }

    /// No lease has room for a request: every lease with nothing outstanding goes back now,
    /// live or not, and the others take no more requests and go back when their last one
    /// settles — so capacity left in pieces too small for a request comes together again in
    /// the next lease instead of stranding while the pieces live. Returns what goes back now
    /// (expired leases included).
    pub fn consolidate(&mut self, now_ms: i64) -> Vec<Return> {
        for l in &mut self.leases {
            l.closing = true;
        }
        self.finished(now_ms)
    }

    /// Should the caller fetch the next lease in the background now?
    pub fn wants_refresh(&self, now_ms: i64) -> bool {
        !self.refreshing && !self.leases.iter().any(|l| l.live(now_ms) && !l.low(now_ms))
    }

    /// How many requests this isolate may still admit on its own.
    pub fn requests_left(&self, now_ms: i64) -> u64 {
        self.leases
            .iter()
            .filter(|l| l.live(now_ms))
            .map(|l| l.requests_left)
            .sum()
    }

    /// Forget every lease (the key was revoked or changed through this isolate). Their
    /// reservations lapse at the limiter; nothing more is admitted from them here.
    pub fn clear(&mut self) -> Vec<Return> {
        self.leases
            .drain(..)
            .map(|l| Return {
                lease_id: l.id,
                used: l.used,
            })
            .collect()
    }

    /// A size for the next lease: enough requests for about one lease period at the pace of
    /// the last one, at least `min_requests`, each with this request's worst case.
    pub fn want(&self, need: Ask, min_requests: u64, max_requests: u64) -> Ask {
        let recent = self
            .leases
            .iter()
            .map(|l| l.granted_requests - l.requests_left)
            .max()
            .unwrap_or(0);
        let requests = (recent * 2).clamp(min_requests.max(1), max_requests.max(1));
        Ask {
            requests,
            tokens: need.tokens.saturating_mul(requests),
            cost_micros: need.cost_micros.saturating_mul(requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(requests: u64, tokens: Option<u64>, expires_ms: i64) -> LeaseGrant {
        LeaseGrant {
            requests,
            tokens,
            cost_micros: None,
            expires_ms,
        }
    }

    #[test]
    fn requests_are_taken_until_the_lease_is_spent() {
        let mut book = LeaseBook::default();
        let need = Ask::request(10, 0);
        book.add(
            "l1".into(),
            grant(3, Some(30), 1000),
            Some(need),
            RateInfo::default(),
            0,
        );
        assert!(book.take(need, 1).is_some());
        assert!(book.take(need, 2).is_some());
        assert_eq!(
            book.take(need, 3),
            None,
            "three requests granted, three taken"
        );
        assert_eq!(book.requests_left(3), 0);
    }

    #[test]
    fn tokens_not_used_are_given_back() {
        let mut book = LeaseBook::default();
        let need = Ask::request(10, 0);
        book.add(
            "l1".into(),
            grant(10, Some(20), 1000),
            Some(need),
            RateInfo::default(),
            0,
        );
        let t = book.take(need, 1).unwrap();
        assert_eq!(
            book.take(need, 1),
            None,
            "20 tokens, two requests of 10 hold all"
        );
        book.settle(&t.lease_id, t.reserved, Ask::request(4, 0), 2);
        assert!(book.take(Ask::request(6, 0), 3).is_some(), "6 came back");
    }

    #[test]
    fn a_lease_returns_once_expired_and_idle_with_its_use() {
        let mut book = LeaseBook::default();
        let need = Ask::request(10, 5);
        let g = LeaseGrant {
            requests: 5,
            tokens: Some(100),
            cost_micros: Some(50),
            expires_ms: 1000,
        };
        book.add("l1".into(), g, Some(need), RateInfo::default(), 0);
        let t = book.take(need, 10).unwrap();
        assert!(
            book.finished(2000).is_empty(),
            "two requests still outstanding"
        );
        assert!(book.settle("l1", need, Ask::request(7, 3), 500).is_empty());
        assert_eq!(book.take(need, 1000), None, "expired leases admit nothing");
        let done = book.settle(&t.lease_id, t.reserved, Ask::request(12, 6), 1500);
        assert_eq!(
            done,
            vec![Return {
                lease_id: "l1".into(),
                used: Ask {
                    requests: 2,
                    tokens: 19,
                    cost_micros: 9
                }
            }]
        );
        assert_eq!(book.requests_left(1500), 0);
    }

    #[test]
    fn a_released_request_costs_the_lease_nothing() {
        let mut book = LeaseBook::default();
        let need = Ask::request(10, 0);
        book.add(
            "l1".into(),
            grant(2, Some(20), 1000),
            None,
            RateInfo::default(),
            0,
        );
        let t = book.take(need, 1).unwrap();
        book.release(&t.lease_id, t.reserved, 2);
        assert!(book.take(need, 3).is_some());
        assert!(
            book.take(need, 3).is_some(),
            "both requests and all tokens are back"
        );
        assert_eq!(book.clear()[0].used.requests, 0);
    }

    #[test]
    fn unlimited_measures_never_run_out() {
        let mut book = LeaseBook::default();
        let need = Ask::request(1_000_000, 1_000_000);
        book.add(
            "l1".into(),
            grant(100, None, 1000),
            Some(need),
            RateInfo::default(),
            0,
        );
        for _ in 0..99 {
            assert!(book.take(need, 1).is_some());
        }
        assert_eq!(book.take(need, 1), None);
    }

    #[test]
    fn refresh_is_wanted_when_low_on_requests_or_time_and_only_once() {
        let mut book = LeaseBook::default();
        assert!(book.wants_refresh(0), "no lease at all");
        let need = Ask::request(1, 0);
        book.add(
            "l1".into(),
            grant(10, None, 1000),
            Some(need),
            RateInfo::default(),
            0,
        );
        assert!(!book.wants_refresh(1));
        for _ in 0..4 {
            book.take(need, 1);
        }
        assert!(!book.wants_refresh(1), "5 of 10 left");
        book.take(need, 1);
        assert!(book.wants_refresh(1), "4 of 10 left");
        book.refreshing = true;
        assert!(!book.wants_refresh(1));
        let mut book = LeaseBook::default();
        book.add(
            "l2".into(),
            grant(10, None, 1000),
            Some(need),
            RateInfo::default(),
            0,
        );
        assert!(book.wants_refresh(500), "half the time gone");
    }

    #[test]
    fn the_next_lease_follows_the_pace() {
        let mut book = LeaseBook::default();
        let need = Ask::request(100, 2);
        assert_eq!(book.want(need, 4, 64).requests, 4);
        book.add(
            "l1".into(),
            grant(40, None, 1000),
            Some(need),
            RateInfo::default(),
            0,
        );
        for _ in 0..9 {
            book.take(need, 1);
        }
        let want = book.want(need, 4, 64);
        assert_eq!(want.requests, 20);
        assert_eq!(want.tokens, 2000);
        assert_eq!(want.cost_micros, 40);
        assert_eq!(book.want(need, 4, 8).requests, 8);
    }

    #[test]
    fn remaining_headers_count_what_the_isolate_holds() {
        let mut book = LeaseBook::default();
        let rate = RateInfo {
            limit_requests: Some(100),
            remaining_requests: Some(70),
            ..RateInfo::default()
        };
        book.add(
            "l1".into(),
            grant(10, None, 1000),
            Some(Ask::request(1, 0)),
            rate,
            0,
        );
        let t = book.take(Ask::request(1, 0), 1).unwrap();
        assert_eq!(t.rate.remaining_requests, Some(78));
    }

    #[test]
    fn a_miss_sends_idle_leases_back_and_closes_the_busy_ones() {
        let mut book = LeaseBook::default();
        let need = Ask::request(21, 0);
        // Two live leases, each with 16 tokens left: room for no request of 21.
        book.add(
            "idle".into(),
            grant(8, Some(16), 10_000),
            None,
            RateInfo::default(),
            0,
        );
        book.add(
            "busy".into(),
            grant(8, Some(37), 10_000),
            None,
            RateInfo::default(),
            0,
        );
        let busy = book.take(need, 1).unwrap();
        assert_eq!(busy.lease_id, "busy");
        assert_eq!(book.take(need, 2), None);
        let back = book.consolidate(2);
        assert_eq!(
            back,
            vec![Return {
                lease_id: "idle".into(),
                used: Ask {
                    requests: 0,
                    tokens: 0,
                    cost_micros: 0
                }
            }]
        );
        // The busy lease takes nothing more, and goes back with its request when that settles.
        book.add(
            "next".into(),
            grant(8, Some(100), 10_000),
            None,
            RateInfo::default(),
            3,
        );
        assert_eq!(book.take(need, 4).unwrap().lease_id, "next");
        let done = book.settle(&busy.lease_id, busy.reserved, Ask::request(20, 0), 5);
        assert_eq!(
            done,
            vec![Return {
                lease_id: "busy".into(),
                used: Ask {
                    requests: 1,
                    tokens: 20,
                    cost_micros: 0
                }
            }]
        );
    }
}
