//! The attempts of one request, decided purely: which candidate route to try next (in the order
//! `order::attempt_order` gave), whether a half-open breaker's probe must be asked for first,
//! whether to hedge the first attempt on another channel, and what a failure leads to — another
//! channel at once, the same channel after a backoff, or giving up with the error the client
//! should see. The edge performs each step and reports back; time and randomness come in as
//! arguments, so every sequence of outcomes is a table test.

use crate::error::RelayError;
use crate::routing::health::Gate;
use crate::routing::retry::{retryable, RetryBudget};

/// What the planner knows of a candidate besides its gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateFacts {
    /// Which channel it is on (candidates with equal numbers share one).
    pub channel: usize,
    /// The built-in mock: answered inside the Worker, never hedged.
    pub mock: bool,
    /// Its gate when the order was made (a hedge goes only to a channel open then and now).
    pub gate: Gate,
}

/// The second attempt of a hedged first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hedge {
    pub candidate: usize,
    /// Start it when the first has no response headers after this long.
    pub after_ms: u64,
}

/// What the edge does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Ask the candidate's channel health whether this attempt may be its breaker's probe, and
    /// answer with [`Planner::probe_answered`].
    AskProbe { candidate: usize },
    /// Send the request to the candidate (`probe`: as its breaker's probe).
    Attempt {
        candidate: usize,
        probe: bool,
        hedge: Option<Hedge>,
    },
    /// Answer from the built-in mock.
    Mock { candidate: usize },
    /// Wait this long, then ask for the next step.
    Wait { ms: u64 },
    /// Nothing more is worth trying.
    GiveUp(RelayError),
}

/// How an attempt failed, before anything reached the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub err: RelayError,
    /// The upstream's status; `None` when it never answered.
    pub status: Option<u16>,
    pub retry_after_ms: Option<u64>,
    /// The failure was the upstream key's own (401/403/429) and the channel's pool still has
    /// another usable key: worth trying the same channel again at once.
    pub other_key_usable: bool,
}

pub struct Planner {
    order: Vec<usize>,
    facts: Vec<CandidateFacts>,
    budget: RetryBudget,
    hedge_ms: Option<u64>,
    started_ms: i64,
    at: usize,
    attempts: u32,
    last_err: Option<RelayError>,
    /// A wait or the end, decided by the last failure.
    pending: Option<Step>,
    /// The answer to the last `AskProbe`.
    probe_answer: Option<bool>,
}

impl Planner {
    /// `order`: candidate indices in the order to try; `facts[i]` describes candidate `i`.
    pub fn new(
        order: Vec<usize>,
        facts: Vec<CandidateFacts>,
        budget: RetryBudget,
        hedge_ms: Option<u64>,
        started_ms: i64,
    ) -> Planner {
        Planner {
            order,
            facts,
            budget,
            hedge_ms,
            started_ms,
            at: 0,
            attempts: 0,
            last_err: None,
            pending: None,
            probe_answer: None,
        }
    }

    /// Upstream attempts made so far (a hedge counts once it started).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next step; `gate(i)` is candidate `i`'s gate now (breakers change while a request
    /// retries).
    pub fn next(&mut self, gate: impl Fn(usize) -> Gate) -> Step {
        if let Some(step) = self.pending.take() {
            return step;
        }
        loop {
            let Some(&candidate) = self.order.get(self.at) else {
                return Step::GiveUp(self.last_err.take().unwrap_or_else(|| {
                    RelayError::ChannelUnavailable {
                        reason: "every channel for it is failing; retry shortly".into(),
                    }
                }));
            };
            let probe = match self.probe_answer.take() {
                Some(true) => true,
                Some(false) => {
                    // Another isolate holds the probe: this channel is not ours to try now.
                    self.at += 1;
                    continue;
                }
                None => match gate(candidate) {
                    Gate::Open => false,
                    Gate::NeedsProbe => return Step::AskProbe { candidate },
                    Gate::Shut => {
                        self.at += 1;
                        continue;
                    }
                },
            };
            self.attempts += 1;
            let facts = self.facts.get(candidate).copied();
            if facts.is_some_and(|f| f.mock) {
                return Step::Mock { candidate };
            }
            let hedge = self
                .hedge_ms
                .filter(|_| self.attempts == 1 && !probe)
                .and_then(|after_ms| {
                    let other = *self.order.get(self.at + 1)?;
                    let (mine, theirs) = (facts?, *self.facts.get(other)?);
                    let usable = theirs.channel != mine.channel
                        && !theirs.mock
                        && theirs.gate == Gate::Open
                        && gate(other) == Gate::Open;
                    usable.then_some(Hedge {
                        candidate: other,
                        after_ms,
                    })
                });
            return Step::Attempt {
                candidate,
                probe,
                hedge,
            };
        }
    }

    pub fn probe_answered(&mut self, admitted: bool) {
        self.probe_answer = Some(admitted);
    }

    /// The hedge of the last attempt started: it counts as an attempt, and its candidate is
    /// spent.
    pub fn hedge_started(&mut self) {
        self.attempts += 1;
        self.at += 1;
    }

    /// The last attempt failed. Decides the next step: the caller's own mistake fails the same
    /// everywhere and is never retried; a rejected credential is worth another key or channel,
    /// never the same key again; a transient failure moves to the next channel at once, or
    /// backs off on the same one when no other is left; an upstream asking for a pause longer
    /// than the backoff cap gets it, and the client hears its Retry-After instead of waiting.
    pub fn failed(&mut self, failure: Failure, now_ms: i64, draw: &mut impl FnMut() -> u32) {
        let Failure {
            err,
            status,
            retry_after_ms,
            other_key_usable,
        } = failure;
        let same_channel_next = self.at + 1 >= self.order.len();
        let worth_retrying = if matches!(status, Some(401 | 403)) {
            !same_channel_next || other_key_usable
        } else {
            retryable(status)
        };
        if !worth_retrying || self.attempts >= self.budget.max_attempts {
            self.pending = Some(Step::GiveUp(err));
            return;
        }
        let moving_on = other_key_usable || !same_channel_next;
        if !moving_on && retry_after_ms.is_some_and(|ra| ra > self.budget.max_backoff_ms) {
            self.pending = Some(Step::GiveUp(err));
            return;
        }
        let delay = self.budget.delay_before(
            !moving_on,
            self.attempts,
            if moving_on { None } else { retry_after_ms },
            self.started_ms,
            now_ms,
            draw,
        );
        self.last_err = Some(err);
        match delay {
            None => {
                let err = self.last_err.take();
                self.pending = err.map(Step::GiveUp);
            }
            Some(_) if !same_channel_next && !other_key_usable => self.at += 1,
            Some(ms) if ms > 0 => self.pending = Some(Step::Wait { ms }),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(channel: usize) -> CandidateFacts {
        CandidateFacts {
            channel,
            mock: false,
            gate: Gate::Open,
        }
    }

    fn open(_: usize) -> Gate {
        Gate::Open
    }

    fn planner(channels: &[usize], hedge_ms: Option<u64>) -> Planner {
        Planner::new(
            (0..channels.len()).collect(),
            channels.iter().map(|&c| fact(c)).collect(),
            RetryBudget::default(),
            hedge_ms,
            0,
        )
    }

    fn failure(status: Option<u16>) -> Failure {
        Failure {
            err: RelayError::UpstreamError {
                status: status.unwrap_or(502),
            },
            status,
            retry_after_ms: None,
            other_key_usable: false,
        }
    }

    fn attempt(candidate: usize) -> Step {
        Step::Attempt {
            candidate,
            probe: false,
            hedge: None,
        }
    }

    /// A draw that always asks for the largest backoff, so waits are visible.
    fn high() -> u32 {
        u32::MAX
    }

    #[test]
    fn a_transient_failure_moves_to_the_next_channel_at_once() {
        let mut p = planner(&[0, 1], None);
        assert_eq!(p.next(open), attempt(0));
        p.failed(failure(Some(500)), 10, &mut high);
        assert_eq!(p.next(open), attempt(1));
        assert_eq!(p.attempts(), 2);
    }

    #[test]
    fn the_last_channel_is_retried_after_a_backoff() {
        let mut p = planner(&[0], None);
        assert_eq!(p.next(open), attempt(0));
        p.failed(failure(Some(503)), 10, &mut high);
        assert_eq!(p.next(open), Step::Wait { ms: 100 });
        assert_eq!(p.next(open), attempt(0));
        p.failed(failure(None), 20, &mut high);
        assert_eq!(p.next(open), Step::Wait { ms: 200 });
        assert_eq!(p.next(open), attempt(0));
        // The third attempt is the default budget's last.
        p.failed(failure(Some(503)), 30, &mut high);
        assert_eq!(
            p.next(open),
            Step::GiveUp(RelayError::UpstreamError { status: 503 })
        );
    }

    #[test]
    fn the_callers_own_mistake_is_never_retried() {
        let mut p = planner(&[0, 1], None);
        p.next(open);
        let e = RelayError::UpstreamInvalidRequest {
            status: 400,
            message: "bad".into(),
            param: None,
        };
        p.failed(
            Failure {
                err: e.clone(),
                ..failure(Some(400))
            },
            0,
            &mut high,
        );
        assert_eq!(p.next(open), Step::GiveUp(e));
    }

    #[test]
    fn a_rejected_credential_tries_another_key_or_channel_never_the_same_key() {
        // One channel, one key: nothing else to try.
        let mut p = planner(&[0], None);
        p.next(open);
        p.failed(failure(Some(401)), 0, &mut high);
        assert!(matches!(p.next(open), Step::GiveUp(_)));
        // One channel whose pool has another usable key: again at once.
        let mut p = planner(&[0], None);
        p.next(open);
        p.failed(
            Failure {
                other_key_usable: true,
                ..failure(Some(401))
            },
            0,
            &mut high,
        );
        assert_eq!(p.next(open), attempt(0));
        // Another channel: that one.
        let mut p = planner(&[0, 1], None);
        p.next(open);
        p.failed(failure(Some(403)), 0, &mut high);
        assert_eq!(p.next(open), attempt(1));
    }

    #[test]
    fn a_long_retry_after_is_the_clients_to_wait_for() {
        let mut p = planner(&[0], None);
        p.next(open);
        p.failed(
            Failure {
                retry_after_ms: Some(30_000),
                ..failure(Some(429))
            },
            0,
            &mut high,
        );
        assert_eq!(
            p.next(open),
            Step::GiveUp(RelayError::UpstreamError { status: 429 })
        );
        // A short one is honoured as a floor.
        let mut p = planner(&[0], None);
        p.next(open);
        p.failed(
            Failure {
                retry_after_ms: Some(1_500),
                ..failure(Some(429))
            },
            0,
            &mut high,
        );
        assert_eq!(p.next(open), Step::Wait { ms: 1_500 });
    }

    #[test]
    fn shut_channels_are_skipped_and_nothing_open_is_unavailable() {
        let mut p = planner(&[0, 1], None);
        let gates = |i: usize| if i == 0 { Gate::Shut } else { Gate::Open };
        assert_eq!(p.next(gates), attempt(1));
        let mut p = planner(&[0, 1], None);
        assert!(matches!(
            p.next(|_| Gate::Shut),
            Step::GiveUp(RelayError::ChannelUnavailable { .. })
        ));
    }

    #[test]
    fn a_half_open_breaker_asks_for_the_probe_first() {
        let mut p = planner(&[0, 1], None);
        let gates = |i: usize| if i == 0 { Gate::NeedsProbe } else { Gate::Open };
        assert_eq!(p.next(gates), Step::AskProbe { candidate: 0 });
        p.probe_answered(true);
        assert_eq!(
            p.next(gates),
            Step::Attempt {
                candidate: 0,
                probe: true,
                hedge: None
            }
        );
        let mut p = planner(&[0, 1], None);
        assert_eq!(p.next(gates), Step::AskProbe { candidate: 0 });
        p.probe_answered(false);
        assert_eq!(
            p.next(gates),
            attempt(1),
            "someone else probes: next channel"
        );
        assert_eq!(p.attempts(), 1);
    }

    #[test]
    fn the_first_attempt_hedges_onto_another_open_channel() {
        let mut p = planner(&[0, 0, 1], Some(300));
        // The next candidate is on the same channel: no hedge there.
        assert_eq!(p.next(open), attempt(0));
        let mut p = planner(&[0, 1], Some(300));
        assert_eq!(
            p.next(open),
            Step::Attempt {
                candidate: 0,
                probe: false,
                hedge: Some(Hedge {
                    candidate: 1,
                    after_ms: 300
                })
            }
        );
        p.hedge_started();
        assert_eq!(p.attempts(), 2);
        // Both failed: nothing is left, and the last failure is what the client sees.
        p.failed(failure(Some(500)), 0, &mut high);
        assert_eq!(p.next(open), Step::Wait { ms: 200 });
        // A channel that was half-open when the order was made is not hedged onto.
        let mut p = Planner::new(
            vec![0, 1],
            vec![
                fact(0),
                CandidateFacts {
                    gate: Gate::NeedsProbe,
                    ..fact(1)
                },
            ],
            RetryBudget::default(),
            Some(300),
            0,
        );
        assert_eq!(p.next(open), attempt(0));
    }

    #[test]
    fn the_mock_answers_without_a_network_attempt() {
        let mut p = Planner::new(
            vec![0],
            vec![CandidateFacts {
                mock: true,
                ..fact(0)
            }],
            RetryBudget::default(),
            Some(100),
            0,
        );
        assert_eq!(p.next(open), Step::Mock { candidate: 0 });
    }

    #[test]
    fn the_time_budget_ends_retries() {
        let mut p = Planner::new(
            vec![0],
            vec![fact(0)],
            RetryBudget {
                max_attempts: 10,
                total_ms: 1_000,
                ..RetryBudget::default()
            },
            None,
            0,
        );
        p.next(open);
        p.failed(failure(Some(500)), 999, &mut high);
        assert_eq!(
            p.next(open),
            Step::GiveUp(RelayError::UpstreamError { status: 500 })
        );
    }
}
