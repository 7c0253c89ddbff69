//! The limiter's state machine — one per key and one per tenant, held by a Durable Object:
//! reserve before a request goes upstream, settle after, lease capacity to isolates, hold a
//! prepaid tenant's credit balance, and keep the budget's and the balance's webhook queue, with
//! the time passed in.
//!
//! Exactness comes from where this runs: one Durable Object per key serialises every reserve
//! and settle, so "N requests a day" admits exactly N however many isolates ask at once.
//! A request reserves its worst case (prompt estimate + maximum output) and settles to what it
//! used, so a token quota is never exceeded by more than one request's under-estimate. The
//! credit balance (`governance::credits`) is held the same way: each reservation and lease
//! records what it holds against it, and every way a reservation ends (settle, release,
//! expiry, revocation) gives that hold back or charges it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::governance::alerts::{AlertQueue, PendingAlert};
use crate::governance::budget::{self, Budget, BudgetStatus};
use crate::governance::credits::{
    self, CreditBalance, CreditCtx, CreditEntry, CreditView, TopUpOutcome,
};
use crate::governance::limits::bucket::{Bucket, UNIT};
use crate::governance::limits::protocol::{
    BudgetCtx, Decision, LeaseDecision, LeaseGrant, LimitHit, LimiterCall, LimiterReply, Measure,
    PeriodView, TopUpReply, UsageView,
};
use crate::governance::limits::{one, Ask, Limits, RateInfo, RESERVATION_TTL_MS};
use crate::support::calendar::{period_bounds, Period, MINUTE_MS};

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
    /// One for a request; a lease holds several.
    #[serde(default = "one")]
    requests: u64,
    tokens: u64,
    cost_micros: u64,
    at_ms: i64,
    /// When an unsettled reservation lapses, if not `RESERVATION_TTL_MS` after `at_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_ms: Option<i64>,
    /// Held against the prepaid balance (0 for a tenant that is not prepaid).
    #[serde(default, skip_serializing_if = "is_zero")]
    credit_micros: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What a call brings beside the limits: the tenant's budget, whether the request was
/// downgraded past it, and the prepaid balance's context.
#[derive(Debug, Clone, Copy, Default)]
pub struct Governed<'a> {
    pub budget: Option<&'a BudgetCtx>,
    pub downgraded: bool,
    pub credit: Option<&'a CreditCtx>,
}

/// A lease not returned this long after its expiry is taken as used in full: its isolate is
/// gone. Long enough for the last stream begun under it to finish.
pub const LEASE_GRACE_MS: i64 = 2 * MINUTE_MS;

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
    /// Budget webhooks not yet delivered (the Durable Object's alarm sends them).
    #[serde(default, skip_serializing_if = "AlertQueue::is_empty")]
    alerts: AlertQueue,
    /// Start of the budget period whose soft limit has been announced already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    soft_announced: Option<i64>,
    /// A prepaid tenant's balance (its tenant limiter only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credit: Option<CreditBalance>,
}

/// A lease takes at most this fraction of what remains under a limit, so capacity left in
/// idle isolates' leases stays a small part of any limit and the last units go one by one.
pub const LEASE_SHARE_DIVISOR: u64 = 4;

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

    /// Settles reservations whose request was never settled, at what they reserved (credit
    /// included: an isolate that died may have spent all of it).
    fn expire(&mut self, now_ms: i64) {
        let lapsed: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, r)| now_ms >= r.until_ms.unwrap_or(r.at_ms + RESERVATION_TTL_MS))
            .map(|(id, _)| id.clone())
            .collect();
        for id in lapsed {
            if let Some(r) = self.in_flight.remove(&id) {
                self.charge_credit(&r, r.credit_micros);
            }
        }
    }

    /// End `r`'s hold on the prepaid balance, charging `actual`.
    fn charge_credit(&mut self, r: &Reservation, actual: u64) {
        if let Some(balance) = self.credit.as_mut() {
            balance.settle(
                credits::Reservation {
                    micros: r.credit_micros,
                },
                actual,
            );
        }
    }

    /// Queue the low-balance notice when the balance has just dipped below the tenant's
    /// threshold (once per crossing).
    fn announce_low_balance(&mut self, ctx: Option<&CreditCtx>, now_ms: i64) {
        let (Some(ctx), Some(balance)) = (ctx, self.credit.as_mut()) else {
            return;
        };
        let Some(threshold) = ctx.low_balance_micros else {
            return;
        };
        if let Some(notice) = balance.low_balance_notice(&ctx.tenant_id, threshold, now_ms) {
            for alert in ctx.deliveries(&notice, now_ms) {
                self.alerts.push(alert);
            }
        }
    }

    fn available_credit(&self) -> i64 {
        self.credit
            .as_ref()
            .map_or(0, CreditBalance::available_micros)
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

    /// Expire stale reservations, roll the calendar and refill the buckets to `now_ms`.
    fn advance(&mut self, limits: &Limits, now_ms: i64) {
        self.expire(now_ms);
        self.roll_periods(limits, now_ms);
        if let Some(rpm) = limits.rpm {
            self.requests
                .refill(now_ms, rpm, rpm + limits.burst_requests.unwrap_or(0));
        }
        if let Some(tpm) = limits.tpm {
            self.tokens
                .refill(now_ms, tpm, tpm + limits.burst_tokens.unwrap_or(0));
        }
    }

    fn decision(
        &self,
        limits: &Limits,
        budget: Option<&BudgetCtx>,
        refused: Option<(LimitHit, Option<u64>)>,
    ) -> Decision {
        let (hit, retry_after_ms) = refused.unzip();
        Decision {
            admitted: hit.is_none(),
            hit,
            retry_after_ms: retry_after_ms.flatten(),
            rate: if hit == Some(LimitHit::Revoked) {
                RateInfo::default()
            } else {
                self.rate_info(limits)
            },
            budget: budget.map(|b| self.budget_status(&b.budget)),
        }
    }

    /// Which limit, if any, refuses `ask` now (and when it may pass). Changes nothing.
    fn refusal(
        &self,
        limits: &Limits,
        ask: Ask,
        gov: Governed<'_>,
        now_ms: i64,
    ) -> Option<(LimitHit, Option<u64>)> {
        let Governed {
            budget,
            downgraded,
            credit,
        } = gov;
        if limits
            .concurrency
            .is_some_and(|c| self.in_flight.len() as u64 >= c)
        {
            return Some((LimitHit::Concurrency, Some(1000)));
        }
        if let Some(rpm) = limits.rpm {
            if !self.requests.can_take(ask.requests) {
                return Some((
                    LimitHit::RequestsPerMinute,
                    Some(self.requests.wait_ms(ask.requests, rpm)),
                ));
            }
        }
        if let Some(tpm) = limits.tpm {
            // A request larger than the whole bucket could never pass: let it through when the
            // bucket is full rather than refuse it forever.
            let cap = tpm + limits.burst_tokens.unwrap_or(0);
            let need = ask.tokens.min(cap);
            if !self.tokens.can_take(need) {
                return Some((
                    LimitHit::TokensPerMinute,
                    Some(self.tokens.wait_ms(need, tpm)),
                ));
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
            let measure = if over(quota.requests, used.requests, ask.requests) {
                Some(Measure::Requests)
            } else if over(quota.tokens, used.tokens, ask.tokens) {
                Some(Measure::Tokens)
            } else if over(quota.cost_micros, used.cost_micros, ask.cost_micros) {
                Some(Measure::Cost)
            } else {
                None
            };
            if let Some(measure) = measure {
                return Some((
                    LimitHit::Quota {
                        period: *period,
                        measure,
                    },
                    Some(until_reset),
                ));
            }
        }
        // A downgraded request is the hard budget's own answer: only the quotas above bind it.
        if let (Some(ctx), false) = (budget, downgraded) {
            let b = &ctx.budget;
            let used = &self.periods[period_index(b.period)];
            if b.hard_micros
                .is_some_and(|h| used.cost_micros.saturating_add(ask.cost_micros) > h)
            {
                let until_reset = u64::try_from(used.end_ms - now_ms).unwrap_or(0);
                return Some((LimitHit::Budget { period: b.period }, Some(until_reset)));
            }
        }
        // Prepaid money binds downgraded requests too; no retry time, since only a top-up helps.
        if credit.is_some() && i128::from(self.available_credit()) < i128::from(ask.cost_micros) {
            return Some((LimitHit::Credit, None));
        }
        None
    }

    /// Hold `ask` under `id` until it is settled or released; with `credit`, its cost is held
    /// against the prepaid balance too (`refusal` has made sure that it fits).
    fn hold(&mut self, limits: &Limits, id: &str, ask: Ask, credit: bool, now_ms: i64) {
        let credit_micros = if credit {
            self.credit
                .get_or_insert_with(CreditBalance::default)
                .reserve(ask.cost_micros)
                .map_or(0, |r| r.micros)
        } else {
            0
        };
        if limits.rpm.is_some() {
            self.requests.take(i128::from(ask.requests));
        }
        if limits.tpm.is_some() {
            self.tokens.take(i128::from(ask.tokens));
        }
        for usage in &mut self.periods {
            usage.requests = usage.requests.saturating_add(ask.requests);
            usage.tokens = usage.tokens.saturating_add(ask.tokens);
            usage.cost_micros = usage.cost_micros.saturating_add(ask.cost_micros);
        }
        self.in_flight.insert(
            id.to_string(),
            Reservation {
                requests: ask.requests,
                tokens: ask.tokens,
                cost_micros: ask.cost_micros,
                at_ms: now_ms,
                until_ms: None,
                credit_micros,
            },
        );
    }

    /// Admit `id` and hold its worst case, or say which limit refuses it. A refused request
    /// changes nothing. Reserving an id twice is answered as the first time (a retried call).
    pub fn reserve(&mut self, limits: &Limits, id: &str, ask: Ask, now_ms: i64) -> Decision {
        self.reserve_within(limits, None, false, id, ask, now_ms)
    }

    /// `reserve`, also under a tenant's budget; `downgraded` requests pass its hard limit.
    pub fn reserve_within(
        &mut self,
        limits: &Limits,
        budget: Option<&BudgetCtx>,
        downgraded: bool,
        id: &str,
        ask: Ask,
        now_ms: i64,
    ) -> Decision {
        let gov = Governed {
            budget,
            downgraded,
            credit: None,
        };
        self.reserve_governed(limits, gov, id, ask, now_ms)
    }

    /// `reserve` under everything a call may bring: budget, downgrade and prepaid credit.
    pub fn reserve_governed(
        &mut self,
        limits: &Limits,
        gov: Governed<'_>,
        id: &str,
        ask: Ask,
        now_ms: i64,
    ) -> Decision {
        let budget = gov.budget;
        self.advance(limits, now_ms);
        // Expiry may have charged a lapsed hold.
        self.announce_low_balance(gov.credit, now_ms);
        if self.revoked {
            return self.decision(limits, budget, Some((LimitHit::Revoked, None)));
        }
        // A key without limits is consulted only for revocation: nothing to hold or settle.
        let nothing_to_hold = limits.is_empty() && budget.is_none() && gov.credit.is_none();
        if nothing_to_hold || self.in_flight.contains_key(id) {
            return self.decision(limits, budget, None);
        }
        let refused = self.refusal(limits, ask, gov, now_ms);
        if refused.is_none() {
            self.hold(limits, id, ask, gov.credit.is_some(), now_ms);
        }
        self.decision(limits, budget, refused)
    }

    /// Grant an isolate a lease: up to `want`, at least `need` (the request at hand), at most
    /// a `LEASE_SHARE_DIVISOR`th of what remains under each limit, until `lease_ms` from now
    /// or the end of the current calendar period, whichever is first — so a lease never
    /// spends one period's quota in the next. The grant is held like a reservation and
    /// settled when the isolate returns it with what it used.
    #[allow(clippy::too_many_arguments)]
    pub fn lease(
        &mut self,
        limits: &Limits,
        budget: Option<&BudgetCtx>,
        downgraded: bool,
        id: &str,
        want: Ask,
        need: Ask,
        lease_ms: i64,
        now_ms: i64,
    ) -> LeaseDecision {
        let gov = Governed {
            budget,
            downgraded,
            credit: None,
        };
        self.lease_governed(limits, gov, id, want, need, lease_ms, now_ms)
    }

    /// `lease` under everything a call may bring. A prepaid tenant's lease holds its spend
    /// grant against the balance (a quarter of what is available, at least the request at
    /// hand), and is settled against it when returned, as a reservation is.
    #[allow(clippy::too_many_arguments)]
    pub fn lease_governed(
        &mut self,
        limits: &Limits,
        gov: Governed<'_>,
        id: &str,
        want: Ask,
        need: Ask,
        lease_ms: i64,
        now_ms: i64,
    ) -> LeaseDecision {
        let budget = gov.budget;
        self.advance(limits, now_ms);
        self.announce_low_balance(gov.credit, now_ms);
        if self.revoked {
            let decision = self.decision(limits, budget, Some((LimitHit::Revoked, None)));
            return LeaseDecision {
                decision,
                grant: None,
            };
        }
        if let Some(refused) = self.refusal(limits, need, gov, now_ms) {
            let decision = self.decision(limits, budget, Some(refused));
            return LeaseDecision {
                decision,
                grant: None,
            };
        }
        let mut room = self.room(limits, budget, gov.downgraded);
        if gov.credit.is_some() {
            let available = u64::try_from(self.available_credit()).unwrap_or(0);
            room.cost_micros = min_opt(room.cost_micros, Some(available));
        }
        let share = |room: Option<u64>, want: u64, need: u64| -> Option<u64> {
            room.map(|r| {
                (r / LEASE_SHARE_DIVISOR)
                    .min(want)
                    .max(need)
                    .min(r.max(need))
            })
        };
        let requests =
            share(room.requests, want.requests.max(1), 1).unwrap_or(want.requests.max(1));
        let tokens = share(room.tokens, want.tokens, need.tokens);
        let cost_micros = share(room.cost_micros, want.cost_micros, need.cost_micros);
        let period_end = self
            .periods
            .iter()
            .map(|p| p.end_ms)
            .min()
            .unwrap_or(i64::MAX);
        let grant = LeaseGrant {
            requests,
            tokens,
            cost_micros,
            expires_ms: (now_ms + lease_ms.max(1)).min(period_end),
        };
        self.hold(
            limits,
            id,
            Ask {
                requests,
                tokens: tokens.unwrap_or(0),
                cost_micros: cost_micros.unwrap_or(0),
            },
            gov.credit.is_some(),
            now_ms,
        );
        if let Some(r) = self.in_flight.get_mut(id) {
            r.until_ms = Some(grant.expires_ms + LEASE_GRACE_MS);
        }
        LeaseDecision {
            decision: self.decision(limits, budget, None),
            grant: Some(grant),
        }
    }

    /// What remains under every limit that applies, per measure (`None`: unlimited).
    fn room(&self, limits: &Limits, budget: Option<&BudgetCtx>, downgraded: bool) -> Ask3 {
        let mut room = Ask3::default();
        if limits.rpm.is_some() {
            room.requests = min_opt(room.requests, Some(self.requests.remaining()));
        }
        if limits.tpm.is_some() {
            room.tokens = min_opt(room.tokens, Some(self.tokens.remaining()));
        }
        for (i, period) in Period::ALL.iter().enumerate() {
            let Some(q) = limits.quota(*period) else {
                continue;
            };
            let used = &self.periods[i];
            let left = |q: Option<u64>, used: u64| q.map(|q| q.saturating_sub(used));
            room.requests = min_opt(room.requests, left(q.requests, used.requests));
            room.tokens = min_opt(room.tokens, left(q.tokens, used.tokens));
            room.cost_micros = min_opt(room.cost_micros, left(q.cost_micros, used.cost_micros));
        }
        if let (Some(ctx), false) = (budget, downgraded) {
            let used = &self.periods[period_index(ctx.budget.period)];
            let left = ctx
                .budget
                .hard_micros
                .map(|h| h.saturating_sub(used.cost_micros));
            room.cost_micros = min_opt(room.cost_micros, left);
        }
        room
    }

    /// Settled spend in the budget's period: what was charged, less what is only reserved.
    fn budget_status(&self, budget: &Budget) -> BudgetStatus {
        let p = &self.periods[period_index(budget.period)];
        let reserved: u64 = self
            .in_flight
            .values()
            .filter(|r| r.at_ms >= p.start_ms)
            .map(|r| r.cost_micros)
            .fold(0, u64::saturating_add);
        BudgetStatus {
            spent_micros: p.cost_micros.saturating_sub(reserved),
            soft_micros: budget.soft_micros,
            hard_micros: budget.hard_micros,
        }
    }

    /// Queue the soft-limit webhook once per budget period, the first time settled spend
    /// reaches it.
    fn announce_soft_limit(&mut self, ctx: &BudgetCtx, now_ms: i64) {
        let status = self.budget_status(&ctx.budget);
        let p = self.periods[period_index(ctx.budget.period)];
        if !status.over_soft() || self.soft_announced == Some(p.start_ms) {
            return;
        }
        self.soft_announced = Some(p.start_ms);
        if let Some(url) = &ctx.budget.webhook_url {
            let id = match &ctx.tag {
                Some(tag) => format!("soft:{}:{tag}:{}", ctx.tenant_id, p.start_ms),
                None => format!("soft:{}:{}", ctx.tenant_id, p.start_ms),
            };
            self.alerts.push(PendingAlert {
                id,
                url: url.clone(),
                body: budget::soft_limit_body(
                    &ctx.tenant_id,
                    ctx.tag.as_deref(),
                    &ctx.budget,
                    p.start_ms,
                    p.end_ms,
                    status.spent_micros,
                    now_ms,
                ),
                attempts: 0,
                next_at_ms: now_ms,
            });
        }
    }

    /// The budget webhooks waiting to be delivered.
    pub fn alerts_mut(&mut self) -> &mut AlertQueue {
        &mut self.alerts
    }

    /// When the Durable Object should next wake to deliver webhooks.
    pub fn next_alert_ms(&self) -> Option<i64> {
        self.alerts.next_ms()
    }

    /// Webhooks due now.
    pub fn due_alerts(&self, now_ms: i64) -> Vec<PendingAlert> {
        self.alerts.due(now_ms)
    }

    /// Record a delivery attempt. Returns true when the alert was given up on.
    pub fn alert_attempted(&mut self, id: &str, delivered: bool, now_ms: i64) -> bool {
        self.alerts.attempted(id, delivered, now_ms)
    }

    /// Replace `id`'s reservation by what it used (zero for a request that failed upstream),
    /// releasing the rest. Settling an unknown or already settled id only records usage it
    /// brings beyond nothing (a late settle after expiry), and settling twice is harmless.
    pub fn settle(&mut self, limits: &Limits, id: &str, used: Ask, now_ms: i64) -> RateInfo {
        self.settle_within(limits, None, id, used, now_ms);
        self.rate_info(limits)
    }

    /// `settle`, under a tenant's budget: reaching its soft limit queues the webhook.
    pub fn settle_within(
        &mut self,
        limits: &Limits,
        budget: Option<&BudgetCtx>,
        id: &str,
        used: Ask,
        now_ms: i64,
    ) -> Decision {
        self.settle_governed(limits, budget, None, id, used, now_ms)
    }

    /// `settle` under a budget and a prepaid balance: the reservation's credit hold is
    /// replaced by the cost exactly, and a dip below the threshold queues the notice.
    pub fn settle_governed(
        &mut self,
        limits: &Limits,
        budget: Option<&BudgetCtx>,
        credit: Option<&CreditCtx>,
        id: &str,
        used: Ask,
        now_ms: i64,
    ) -> Decision {
        self.roll_periods(limits, now_ms);
        let reserved = self.in_flight.remove(id);
        if let Some(r) = &reserved {
            // A request admitted against the balance pays from it even if the tenant has
            // stopped being prepaid since; one made prepaid while it was in flight held
            // nothing, and pays now.
            if credit.is_some() || r.credit_micros > 0 {
                if self.credit.is_none() {
                    self.credit = Some(CreditBalance::default());
                }
                self.charge_credit(r, used.cost_micros);
            }
            // What the request used beyond (or below) its reservation, in this period only:
            // a reservation made in a period that has since ended is that period's business.
            let requests_delta = i128::from(used.requests) - i128::from(r.requests);
            let tokens_delta = i128::from(used.tokens) - i128::from(r.tokens);
            let cost_delta = i128::from(used.cost_micros) - i128::from(r.cost_micros);
            for usage in &mut self.periods {
                if r.at_ms >= usage.start_ms {
                    usage.requests = apply(usage.requests, requests_delta);
                    usage.tokens = apply(usage.tokens, tokens_delta);
                    usage.cost_micros = apply(usage.cost_micros, cost_delta);
                }
            }
            // A lease gives back the requests it did not use; a request uses its one.
            if let Some(rpm) = limits.rpm.filter(|_| requests_delta < 0) {
                let cap = i128::from(rpm + limits.burst_requests.unwrap_or(0)) * UNIT;
                self.requests.take(requests_delta);
                self.requests.level = self.requests.level.min(cap);
            }
            if limits.tpm.is_some() {
                self.tokens.take(tokens_delta);
                let cap =
                    i128::from(limits.tpm.unwrap_or(0) + limits.burst_tokens.unwrap_or(0)) * UNIT;
                self.tokens.level = self.tokens.level.min(cap);
            }
        }
        if let Some(ctx) = budget {
            self.announce_soft_limit(ctx, now_ms);
        }
        self.announce_low_balance(credit, now_ms);
        self.decision(limits, budget, None)
    }

    /// Undo a reservation entirely, as if the request had never been admitted: for a request
    /// another limiter refused (a key's quota must not pay for its tenant's refusal).
    pub fn release(&mut self, limits: &Limits, id: &str, now_ms: i64) {
        self.roll_periods(limits, now_ms);
        let Some(r) = self.in_flight.remove(id) else {
            return;
        };
        if let Some(balance) = self.credit.as_mut() {
            balance.release(credits::Reservation {
                micros: r.credit_micros,
            });
        }
        for usage in &mut self.periods {
            if r.at_ms >= usage.start_ms {
                usage.requests = usage.requests.saturating_sub(r.requests);
                usage.tokens = usage.tokens.saturating_sub(r.tokens);
                usage.cost_micros = usage.cost_micros.saturating_sub(r.cost_micros);
            }
        }
        if let Some(rpm) = limits.rpm {
            let cap = i128::from(rpm + limits.burst_requests.unwrap_or(0)) * UNIT;
            self.requests.level = (self.requests.level + i128::from(r.requests) * UNIT).min(cap);
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
        let u = &self.periods[period_index(period)];
        (u.requests, u.tokens, u.cost_micros)
    }
}

fn period_index(period: Period) -> usize {
    match period {
        Period::Day => 0,
        Period::Week => 1,
        Period::Month => 2,
    }
}

/// Room left per measure; `None` where nothing limits it.
#[derive(Debug, Clone, Copy, Default)]
struct Ask3 {
    requests: Option<u64>,
    tokens: Option<u64>,
    cost_micros: Option<u64>,
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl LimiterState {
    /// One call, as the Durable Object receives it; returns whether the state changed.
    pub fn handle(&mut self, call: LimiterCall, now_ms: i64) -> (LimiterReply, bool) {
        match call {
            LimiterCall::Reserve {
                id,
                ask,
                limits,
                budget,
                downgraded,
                credit,
            } => {
                let gov = Governed {
                    budget: budget.as_ref(),
                    downgraded,
                    credit: credit.as_ref(),
                };
                let alerts = self.alerts.len();
                let d = self.reserve_governed(&limits, gov, &id, ask, now_ms);
                // Expiry may have charged lapsed holds and queued a notice: that is a change.
                let changed = d.admitted || self.alerts.len() != alerts;
                (LimiterReply::Decision(d), changed)
            }
            LimiterCall::Lease {
                id,
                want,
                need,
                lease_ms,
                limits,
                budget,
                downgraded,
                credit,
                returns,
            } => {
                let returned = !returns.is_empty();
                for r in returns {
                    self.settle_governed(
                        &limits,
                        budget.as_ref(),
                        credit.as_ref(),
                        &r.id,
                        r.used,
                        now_ms,
                    );
                }
                let gov = Governed {
                    budget: budget.as_ref(),
                    downgraded,
                    credit: credit.as_ref(),
                };
                let alerts = self.alerts.len();
                let d = self.lease_governed(&limits, gov, &id, want, need, lease_ms, now_ms);
                let changed = returned || d.grant.is_some() || self.alerts.len() != alerts;
                (LimiterReply::Lease(d), changed)
            }
            LimiterCall::Settle {
                id,
                used,
                limits,
                budget,
                credit,
            } => (
                LimiterReply::Decision(self.settle_governed(
                    &limits,
                    budget.as_ref(),
                    credit.as_ref(),
                    &id,
                    used,
                    now_ms,
                )),
                true,
            ),
            LimiterCall::Release { id, limits } => {
                self.release(&limits, &id, now_ms);
                (LimiterReply::Rate(self.rate_info(&limits)), true)
            }
            LimiterCall::Revoke => {
                self.revoked = true;
                // As at expiry: what was held is taken as spent.
                for r in std::mem::take(&mut self.in_flight).into_values() {
                    self.charge_credit(&r, r.credit_micros);
                }
                (LimiterReply::Rate(RateInfo::default()), true)
            }
            LimiterCall::TopUp { entry, credit } => {
                let (reply, applied) = self.top_up(entry, &credit);
                (LimiterReply::TopUp(reply), applied)
            }
            LimiterCall::Credits { last } => {
                let last = last.unwrap_or(credits::DEFAULT_VIEW_ENTRIES);
                (LimiterReply::Credit(self.credit_view(last)), false)
            }
            LimiterCall::Peek { limits, budget } => {
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
                    budget: budget.as_ref().map(|b| self.budget_status(&b.budget)),
                    pending_alerts: self.alerts.len(),
                    credit: self.credit.as_ref().map(|c| c.view(0)),
                };
                (LimiterReply::Usage(usage), false)
            }
        }
    }

    /// Apply a top-up once (a retried call with the same entry id changes nothing). Returns
    /// the reply and whether the state changed.
    pub fn top_up(&mut self, entry: CreditEntry, ctx: &CreditCtx) -> (TopUpReply, bool) {
        let id = entry.id.clone();
        let balance = self.credit.get_or_insert_with(CreditBalance::default);
        let outcome = balance.top_up(entry, ctx.low_balance_micros);
        let reply = TopUpReply {
            outcome,
            entry: balance.entry(&id).cloned(),
            credit: balance.view(credits::DEFAULT_VIEW_ENTRIES),
        };
        (reply, outcome == TopUpOutcome::Applied)
    }

    /// The prepaid balance and its last `last` entries (zero for a tenant never topped up).
    pub fn credit_view(&self, last: usize) -> CreditView {
        self.credit
            .as_ref()
            .map_or_else(|| CreditBalance::default().view(0), |c| c.view(last))
    }
}

fn apply(value: u64, delta: i128) -> u64 {
    u64::try_from((i128::from(value) + delta).max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::limits::protocol::LeaseReturn;
    use crate::governance::limits::{parse_limits, Quota};

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    fn ask(tokens: u64) -> Ask {
        Ask::request(tokens, 0)
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
        let (LimiterReply::Usage(u), changed) = s.handle(
            LimiterCall::Peek {
                limits,
                budget: None,
            },
            T0,
        ) else {
            panic!()
        };
        assert!(u.revoked && !changed && u.in_flight == 0);
    }

    fn daily(requests: Option<u64>, tokens: Option<u64>, cost: Option<u64>) -> Limits {
        Limits {
            day: Some(Quota {
                requests,
                tokens,
                cost_micros: cost,
            }),
            ..Limits::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn lease(
        s: &mut LimiterState,
        limits: &Limits,
        id: &str,
        want: Ask,
        need: Ask,
        lease_ms: i64,
        now: i64,
    ) -> LeaseDecision {
        s.lease(limits, None, false, id, want, need, lease_ms, now)
    }

    #[test]
    fn leases_take_a_share_of_what_remains_and_never_more() {
        let limits = daily(Some(100), None, None);
        let mut s = LimiterState::default();
        let want = Ask {
            requests: 64,
            tokens: 0,
            cost_micros: 0,
        };
        let need = ask(0);
        let d = lease(&mut s, &limits, "l1", want, need, 5_000, T0);
        assert_eq!(d.grant.unwrap().requests, 25, "a quarter of 100");
        let d = lease(&mut s, &limits, "l2", want, need, 5_000, T0);
        assert_eq!(d.grant.unwrap().requests, 18, "a quarter of 75");
        // Grants shrink toward the end and the total never passes the quota.
        let mut total = 43;
        let mut i = 3;
        loop {
            let d = lease(&mut s, &limits, &format!("l{i}"), want, need, 5_000, T0);
            let Some(g) = d.grant else {
                assert_eq!(
                    d.decision.hit,
                    Some(LimitHit::Quota {
                        period: Period::Day,
                        measure: Measure::Requests
                    })
                );
                break;
            };
            assert!(g.requests >= 1);
            total += g.requests;
            i += 1;
        }
        assert_eq!(total, 100, "every request of the quota leased exactly once");
    }

    #[test]
    fn a_returned_lease_gives_back_what_it_did_not_use() {
        let limits = Limits {
            rpm: Some(60),
            ..daily(Some(100), Some(10_000), None)
        };
        let mut s = LimiterState::default();
        let want = Ask {
            requests: 40,
            tokens: 4_000,
            cost_micros: 0,
        };
        let g = lease(&mut s, &limits, "l1", want, ask(100), 5_000, T0)
            .grant
            .unwrap();
        assert_eq!(g.requests, 15, "a quarter of the 60 per minute");
        assert_eq!(g.tokens, Some(2_500), "a quarter of 10 000");
        assert_eq!(s.period_usage(Period::Day), (15, 2_500, 0));
        let used = Ask {
            requests: 3,
            tokens: 250,
            cost_micros: 0,
        };
        s.settle(&limits, "l1", used, T0 + 6_000);
        assert_eq!(s.period_usage(Period::Day), (3, 250, 0));
        assert_eq!(s.in_flight(), 0);
        // The per-minute bucket got the 12 unused requests back (plus 6 s of refill).
        assert_eq!(s.rate_info(&limits).remaining_requests, Some(57));
    }

    #[test]
    fn a_lease_ends_with_the_calendar_period() {
        let limits = daily(Some(100), None, None);
        let mut s = LimiterState::default();
        let day = 86_400_000;
        let late = T0 + day - 1_000;
        let g = lease(&mut s, &limits, "l1", ask(0), ask(0), 60_000, late)
            .grant
            .unwrap();
        assert_eq!(g.expires_ms, T0 + day, "not past midnight");
        let g = lease(&mut s, &limits, "l2", ask(0), ask(0), 2_000, T0)
            .grant
            .unwrap();
        assert_eq!(g.expires_ms, T0 + 2_000);
    }

    #[test]
    fn a_lease_needs_room_for_the_request_at_hand() {
        let limits = daily(None, Some(1_000), None);
        let mut s = LimiterState::default();
        let want = Ask {
            requests: 8,
            tokens: 8 * 600,
            cost_micros: 0,
        };
        let g = lease(&mut s, &limits, "l1", want, ask(600), 5_000, T0)
            .grant
            .unwrap();
        assert_eq!(
            g.tokens,
            Some(600),
            "the share is 250, but the request needs 600"
        );
        let d = lease(&mut s, &limits, "l2", want, ask(600), 5_000, T0);
        assert!(d.grant.is_none(), "400 left is not enough for 600");
        assert!(!d.decision.admitted);
        // Unlimited measures are granted as unlimited.
        let g = lease(&mut s, &limits, "l3", want, ask(100), 5_000, T0)
            .grant
            .unwrap();
        assert_eq!(g.cost_micros, None);
        assert_eq!(g.requests, 8);
    }

    #[test]
    fn an_unreturned_lease_lapses_soon_after_expiry_taken_as_used() {
        let limits = daily(Some(100), None, None);
        let mut s = LimiterState::default();
        let want = Ask {
            requests: 20,
            tokens: 0,
            cost_micros: 0,
        };
        let g = lease(&mut s, &limits, "l1", want, ask(0), 1_000, T0)
            .grant
            .unwrap();
        s.reserve(&limits, "probe", ask(0), g.expires_ms + LEASE_GRACE_MS - 1);
        assert_eq!(s.in_flight(), 1 + 1, "still held within the grace");
        s.reserve(&limits, "probe2", ask(0), g.expires_ms + LEASE_GRACE_MS);
        assert_eq!(s.in_flight(), 2, "the lease lapsed; the two probes remain");
        assert_eq!(
            s.period_usage(Period::Day).0,
            20 + 2,
            "its grant counts as used"
        );
    }

    #[test]
    fn revoked_keys_get_no_lease() {
        let mut s = LimiterState::default();
        s.handle(LimiterCall::Revoke, T0);
        let d = lease(&mut s, &Limits::default(), "l1", ask(0), ask(0), 5_000, T0);
        assert!(d.grant.is_none());
        assert_eq!(d.decision.hit, Some(LimitHit::Revoked));
    }

    #[test]
    fn leases_and_requests_share_one_quota_exactly() {
        // Direct reservations and leases interleaved never admit more than the quota.
        let limits = daily(Some(50), None, None);
        let mut s = LimiterState::default();
        let mut admitted = 0;
        for i in 0..200 {
            if i % 3 == 0 {
                let want = Ask {
                    requests: 10,
                    tokens: 0,
                    cost_micros: 0,
                };
                if let Some(g) = lease(&mut s, &limits, &format!("l{i}"), want, ask(0), 1, T0).grant
                {
                    admitted += g.requests;
                }
            } else if s.reserve(&limits, &format!("r{i}"), ask(0), T0).admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 50);
    }

    fn ctx(soft: Option<u64>, hard: Option<u64>) -> BudgetCtx {
        BudgetCtx {
            tenant_id: "t1".into(),
            budget: Budget {
                period: Period::Month,
                soft_micros: soft,
                hard_micros: hard,
                on_hard: crate::governance::budget::OnHard::Block,
                fallback_model: None,
                webhook_url: Some("https://hooks.example.com/b".into()),
                webhook_format: Default::default(),
            },
            tag: None,
        }
    }

    #[test]
    fn the_hard_budget_refuses_unless_downgraded() {
        let limits = Limits::default();
        let b = ctx(None, Some(1_000));
        let mut s = LimiterState::default();
        let a = Ask::request(0, 600);
        assert!(
            s.reserve_within(&limits, Some(&b), false, "r1", a, T0)
                .admitted
        );
        let d = s.reserve_within(&limits, Some(&b), false, "r2", a, T0);
        assert_eq!(
            d.hit,
            Some(LimitHit::Budget {
                period: Period::Month
            }),
            "600 reserved + 600 > 1000"
        );
        assert!(d.retry_after_ms.is_some());
        assert!(
            s.reserve_within(&limits, Some(&b), true, "r3", a, T0)
                .admitted,
            "a downgraded request passes the hard budget"
        );
        // Settling r1 at 100 makes room again.
        s.settle_within(&limits, Some(&b), "r1", Ask::request(0, 100), T0);
        s.settle_within(&limits, Some(&b), "r3", Ask::request(0, 0), T0);
        assert!(
            s.reserve_within(&limits, Some(&b), false, "r4", a, T0)
                .admitted
        );
    }

    #[test]
    fn the_soft_budget_warns_and_queues_one_webhook_per_period() {
        let limits = Limits::default();
        let b = ctx(Some(500), None);
        let mut s = LimiterState::default();
        let a = Ask::request(0, 400);
        let d = s.reserve_within(&limits, Some(&b), false, "r1", a, T0);
        assert_eq!(
            d.budget.unwrap().spent_micros,
            0,
            "reservations are not spend"
        );
        let d = s.settle_within(&limits, Some(&b), "r1", a, T0);
        assert!(!d.budget.unwrap().over_soft());
        assert_eq!(s.next_alert_ms(), None);
        s.reserve_within(&limits, Some(&b), false, "r2", a, T0);
        let d = s.settle_within(&limits, Some(&b), "r2", a, T0 + 5);
        assert!(d.budget.unwrap().warning().is_some());
        assert_eq!(s.next_alert_ms(), Some(T0 + 5));
        s.reserve_within(&limits, Some(&b), false, "r3", a, T0);
        s.settle_within(&limits, Some(&b), "r3", a, T0 + 6);
        assert_eq!(s.due_alerts(T0 + 6).len(), 1, "announced once per period");
        // Delivery fails, is retried later, then succeeds.
        let alert = s.due_alerts(T0 + 6).remove(0);
        assert!(alert.body.contains("\"spent_micros\":800"));
        assert!(!s.alert_attempted(&alert.id, false, T0 + 10));
        assert_eq!(s.next_alert_ms(), Some(T0 + 1_010));
        assert!(s.due_alerts(T0 + 500).is_empty());
        assert!(!s.alert_attempted(&alert.id, true, T0 + 1_010));
        assert_eq!(s.next_alert_ms(), None);
        // Next month announces again.
        let next_month = T0 + 31 * 86_400_000;
        s.reserve_within(
            &limits,
            Some(&b),
            false,
            "r4",
            Ask::request(0, 600),
            next_month,
        );
        s.settle_within(&limits, Some(&b), "r4", Ask::request(0, 600), next_month);
        assert_eq!(s.due_alerts(next_month).len(), 1);
    }

    #[test]
    fn undeliverable_alerts_are_given_up_eventually() {
        let limits = Limits::default();
        let b = ctx(Some(1), None);
        let mut s = LimiterState::default();
        s.reserve_within(&limits, Some(&b), false, "r1", Ask::request(0, 5), T0);
        s.settle_within(&limits, Some(&b), "r1", Ask::request(0, 5), T0);
        let id = s.due_alerts(T0)[0].id.clone();
        let mut gave_up = false;
        for i in 0..crate::governance::alerts::MAX_ATTEMPTS {
            gave_up = s.alert_attempted(&id, false, T0 + i64::from(i));
        }
        assert!(gave_up);
        assert_eq!(s.next_alert_ms(), None);
    }

    #[test]
    fn lease_calls_round_trip_as_json() {
        let call = LimiterCall::Lease {
            returns: vec![LeaseReturn {
                id: "l0".into(),
                used: ask(3),
            }],
            id: "l".into(),
            want: ask(5),
            need: ask(1),
            lease_ms: 2_000,
            limits: daily(Some(10), None, None),
            budget: Some(ctx(Some(1), None)),
            downgraded: true,
            credit: Some(credit_ctx(Some(5))),
        };
        let json = serde_json::to_string(&call).unwrap();
        assert_eq!(serde_json::from_str::<LimiterCall>(&json).unwrap(), call);
        // Calls from before leases and budgets still parse.
        let old = r#"{"op":"settle","id":"x","used":{"tokens":1,"cost_micros":0},"limits":{}}"#;
        let LimiterCall::Settle { used, budget, .. } = serde_json::from_str(old).unwrap() else {
            panic!("not a settle");
        };
        assert_eq!((used.requests, budget), (1, None));
    }

    // ---- prepaid credit -------------------------------------------------------------------

    fn credit_ctx(low: Option<u64>) -> CreditCtx {
        CreditCtx {
            tenant_id: "t1".into(),
            low_balance_micros: low,
            webhooks: vec![crate::governance::notices::WebhookConfig {
                url: "https://hooks.example.com/credit".into(),
                events: vec!["credit.*".into()],
                format: Default::default(),
            }],
        }
    }

    fn top_up_entry(id: &str, amount: u64) -> CreditEntry {
        CreditEntry {
            id: id.into(),
            amount_micros: amount,
            note: "test".into(),
            actor: "admin".into(),
            at_ms: T0,
            balance_after_micros: 0,
        }
    }

    fn prepaid(amount: u64, low: Option<u64>) -> (LimiterState, CreditCtx) {
        let mut s = LimiterState::default();
        let c = credit_ctx(low);
        s.top_up(top_up_entry("seed", amount), &c);
        (s, c)
    }

    fn gov(c: &CreditCtx) -> Governed<'_> {
        Governed {
            credit: Some(c),
            ..Governed::default()
        }
    }

    fn balance(s: &LimiterState) -> (i64, u64) {
        let c = s.credit.as_ref().expect("a balance");
        (c.balance_micros(), c.reserved_micros())
    }

    /// What the state holds against the balance, from the reservations themselves: it must
    /// always equal the balance's own `reserved_micros`.
    fn held(s: &LimiterState) -> u64 {
        s.in_flight.values().map(|r| r.credit_micros).sum()
    }

    fn cost(micros: u64) -> Ask {
        Ask::request(0, micros)
    }

    #[test]
    fn credit_is_reserved_at_worst_case_and_settled_exactly() {
        let limits = Limits::default();
        let (mut s, c) = prepaid(1_000, None);
        let d = s.reserve_governed(&limits, gov(&c), "a", cost(700), T0);
        assert!(d.admitted);
        assert_eq!(balance(&s), (1_000, 700));
        let d = s.reserve_governed(&limits, gov(&c), "b", cost(400), T0);
        assert_eq!(
            (d.admitted, d.hit, d.retry_after_ms),
            (false, Some(LimitHit::Credit), None)
        );
        assert_eq!(
            refusal_error(&d).map(|e| (e.status(), e.code())),
            Some((402, "insufficient_balance"))
        );
        // Settled below the reservation: the rest is free again.
        s.settle_governed(&limits, None, Some(&c), "a", cost(250), T0 + 1);
        assert_eq!(balance(&s), (750, 0));
        // Above it: the balance dips by exactly the excess, and then nothing passes.
        assert!(
            s.reserve_governed(&limits, gov(&c), "b", cost(700), T0 + 2)
                .admitted
        );
        s.settle_governed(&limits, None, Some(&c), "b", cost(800), T0 + 3);
        assert_eq!(balance(&s), (-50, 0));
        let d = s.reserve_governed(&limits, gov(&c), "z", cost(0), T0 + 4);
        assert_eq!(
            d.hit,
            Some(LimitHit::Credit),
            "an overdraft refuses even free requests"
        );
        // A top-up restores service.
        s.top_up(top_up_entry("t2", 1_050), &c);
        assert!(
            s.reserve_governed(&limits, gov(&c), "c", cost(1_000), T0 + 5)
                .admitted
        );
        // Released (another limiter refused): the hold comes back whole.
        s.release(&limits, "c", T0 + 6);
        assert_eq!(balance(&s), (1_000, 0));
        // Downgraded requests still pay.
        let downgraded = Governed {
            downgraded: true,
            ..gov(&c)
        };
        assert!(
            !s.reserve_governed(&limits, downgraded, "d", cost(1_001), T0 + 7)
                .admitted
        );
    }

    fn refusal_error(d: &Decision) -> Option<crate::error::RelayError> {
        crate::governance::limits::protocol::refusal_error(d, "tenant")
    }

    /// Deterministic xorshift32 for the interleaving below.
    fn prng(seed: u32) -> impl FnMut() -> u32 {
        let mut x = seed.max(1);
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    #[test]
    fn interleaved_reservations_never_overdraw_beyond_the_under_estimates_in_flight() {
        // 64 requests against a balance that covers a few at a time, reserved and settled in
        // an order a PRNG picks, with occasional top-ups; each uses less than it reserved, or
        // up to 40 % more. After every step: what is reserved fits the balance, the state's
        // holds and the balance agree, and the overdraft is at most the excesses of the
        // requests that were in flight together when the last of the settled ones was
        // admitted (so with one request at a time, one request's under-estimate).
        let limits = Limits::default();
        let mut overdrafts = 0;
        for seed in 1..=40u32 {
            let mut rnd = prng(seed.wrapping_mul(2_654_435_761));
            let (mut s, c) = prepaid(3_000, Some(500));
            let mut topped_up: i128 = 3_000;
            let mut next = 0u32;
            // id -> (reserved, will use)
            let mut in_flight: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            // id -> (reserved, used, the ids in flight just after its admission)
            let mut settled: BTreeMap<String, (u64, u64, Vec<String>)> = BTreeMap::new();
            let mut admissions: Vec<(String, Vec<String>)> = Vec::new();
            let mut spent: i128 = 0;
            let mut refused = 0;
            while next < 64 || !in_flight.is_empty() {
                let roll = rnd() % 100;
                if next < 64 && (roll < 50 || in_flight.is_empty()) {
                    let id = format!("r{next}");
                    next += 1;
                    let worst = 100 + u64::from(rnd() % 1_400);
                    let used = if rnd().is_multiple_of(3) {
                        worst + u64::from(rnd()) % (worst * 2 / 5 + 1)
                    } else {
                        u64::from(rnd()) % (worst + 1)
                    };
                    let before = s.clone();
                    let d = s.reserve_governed(&limits, gov(&c), &id, cost(worst), T0);
                    if d.admitted {
                        in_flight.insert(id.clone(), (worst, used));
                        let together: Vec<String> = in_flight.keys().cloned().collect();
                        admissions.push((id, together));
                        let credit = s.credit.as_ref().unwrap();
                        assert!(
                            credit.available_micros() >= 0,
                            "a reservation never overdraws"
                        );
                    } else {
                        refused += 1;
                        assert_eq!(d.hit, Some(LimitHit::Credit));
                        assert_eq!(s, before, "a refusal changes nothing");
                    }
                } else if roll < 95 && !in_flight.is_empty() {
                    let pick = usize::try_from(rnd()).unwrap_or(0) % in_flight.len();
                    let id = in_flight.keys().nth(pick).cloned().unwrap();
                    let (worst, used) = in_flight.remove(&id).unwrap();
                    s.settle_governed(&limits, None, Some(&c), &id, cost(used), T0);
                    spent += i128::from(used);
                    let together = admissions
                        .iter()
                        .find(|(a, _)| *a == id)
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default();
                    settled.insert(id, (worst, used, together));
                } else {
                    let amount = 200 + u64::from(rnd() % 800);
                    s.top_up(top_up_entry(&format!("t{seed}-{next}-{roll}"), amount), &c);
                    topped_up += i128::from(amount);
                }
                let (bal, reserved) = balance(&s);
                assert_eq!(reserved, held(&s), "holds and the balance agree");
                assert_eq!(i128::from(bal), topped_up - spent, "settled exactly");
                // The bound: the latest admitted among the settled requests.
                let last = admissions
                    .iter()
                    .rev()
                    .find(|(id, _)| settled.contains_key(id));
                let allowance: u64 = last.map_or(0, |(_, together)| {
                    together
                        .iter()
                        .filter_map(|id| settled.get(id))
                        .map(|(w, u, _)| u.saturating_sub(*w))
                        .sum()
                });
                assert!(
                    i128::from(bal) >= -i128::from(allowance),
                    "seed {seed}: balance {bal} below -{allowance}"
                );
                if bal < 0 {
                    overdrafts += 1;
                }
            }
            assert!(
                refused > 0,
                "seed {seed}: the balance is small enough to refuse some"
            );
            assert_eq!(balance(&s).1, 0);
        }
        assert!(
            overdrafts > 0,
            "under-estimates did overdraw, so the bound was tested"
        );
    }

    #[test]
    fn one_at_a_time_the_overdraft_is_one_under_estimate() {
        let limits = Limits::default();
        let (mut s, c) = prepaid(1_000, None);
        let mut largest_excess = 0;
        for i in 0..64u64 {
            let worst = 90 + i % 7;
            let used = worst + (i * 13) % 40;
            largest_excess = largest_excess.max(used - worst);
            let id = format!("r{i}");
            if s.reserve_governed(&limits, gov(&c), &id, cost(worst), T0)
                .admitted
            {
                s.settle_governed(&limits, None, Some(&c), &id, cost(used), T0);
            }
            assert!(balance(&s).0 >= -(largest_excess as i64));
        }
        assert!(balance(&s).0 < 0, "the loop ran the balance out");
    }

    #[test]
    fn leases_hold_credit_too() {
        let limits = Limits::default();
        let (mut s, c) = prepaid(10_000, None);
        let want = Ask {
            requests: 100,
            tokens: 0,
            cost_micros: 100_000,
        };
        let d = s.lease_governed(&limits, gov(&c), "l1", want, cost(500), 5_000, T0);
        let g = d.grant.expect("a lease");
        assert_eq!(g.cost_micros, Some(2_500), "a quarter of what is available");
        assert_eq!(balance(&s), (10_000, 2_500));
        // A reservation beside it sees only what the lease left.
        assert!(
            !s.reserve_governed(&limits, gov(&c), "r1", cost(7_501), T0)
                .admitted
        );
        assert!(
            s.reserve_governed(&limits, gov(&c), "r1", cost(7_500), T0)
                .admitted
        );
        // No room left for another lease's request.
        let d = s.lease_governed(&limits, gov(&c), "l2", want, cost(1), 5_000, T0);
        assert_eq!((d.grant, d.decision.hit), (None, Some(LimitHit::Credit)));
        // The lease comes back with what its requests used: settled exactly.
        s.settle_governed(&limits, None, Some(&c), "l1", cost(1_200), T0 + 6_000);
        s.settle_governed(&limits, None, Some(&c), "r1", cost(7_000), T0 + 6_000);
        assert_eq!(balance(&s), (1_800, 0));
        // A lease never returned lapses, charged in full.
        let g = s
            .lease_governed(&limits, gov(&c), "l3", want, cost(100), 1_000, T0 + 7_000)
            .grant
            .unwrap();
        assert_eq!(g.cost_micros, Some(450));
        let lapse = g.expires_ms + LEASE_GRACE_MS;
        s.reserve_governed(&limits, gov(&c), "probe", cost(0), lapse);
        assert_eq!(balance(&s), (1_350, 0));
        assert_eq!(held(&s), 0);
    }

    #[test]
    fn low_balance_notices_go_to_the_tenants_webhooks_once_per_crossing() {
        let limits = Limits::default();
        let (mut s, c) = prepaid(1_000, Some(400));
        for (i, used) in [300u64, 200, 100].into_iter().enumerate() {
            let id = format!("r{i}");
            assert!(
                s.reserve_governed(&limits, gov(&c), &id, cost(used), T0)
                    .admitted
            );
            s.settle_governed(&limits, None, Some(&c), &id, cost(used), T0 + 1);
        }
        // 1000 → 700 → 500 → 400: not below yet.
        assert_eq!(s.next_alert_ms(), None);
        assert!(
            s.reserve_governed(&limits, gov(&c), "r3", cost(1), T0)
                .admitted
        );
        s.settle_governed(&limits, None, Some(&c), "r3", cost(1), T0 + 2);
        let due = s.due_alerts(T0 + 2);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].url, "https://hooks.example.com/credit");
        let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["type"], "credit.low_balance");
        assert_eq!(body["data"]["balance_micros"], 399);
        // Further spend in the same dip: no second notice.
        assert!(
            s.reserve_governed(&limits, gov(&c), "r4", cost(9), T0)
                .admitted
        );
        s.settle_governed(&limits, None, Some(&c), "r4", cost(9), T0 + 3);
        assert_eq!(s.due_alerts(T0 + 3).len(), 1);
        // A top-up back above re-arms it; the next dip is announced again.
        s.top_up(top_up_entry("t2", 500), &c);
        assert!(
            s.reserve_governed(&limits, gov(&c), "r5", cost(600), T0)
                .admitted
        );
        s.settle_governed(&limits, None, Some(&c), "r5", cost(600), T0 + 4);
        assert_eq!(s.due_alerts(T0 + 4).len(), 2);
        // Webhooks that did not ask for credit events get nothing.
        let quiet = CreditCtx {
            webhooks: vec![crate::governance::notices::WebhookConfig {
                url: "https://hooks.example.com/budget".into(),
                events: vec!["budget.*".into()],
                format: Default::default(),
            }],
            ..c.clone()
        };
        let (mut q, _) = prepaid(100, Some(400));
        q.reserve_governed(&limits, gov(&quiet), "x", cost(1), T0);
        q.settle_governed(&limits, None, Some(&quiet), "x", cost(1), T0);
        assert_eq!(q.next_alert_ms(), None);
    }

    #[test]
    fn top_ups_and_the_credit_view_over_the_json_protocol() {
        let mut s = LimiterState::default();
        let call: LimiterCall = serde_json::from_value(serde_json::json!({
            "op": "top_up",
            "entry": {"id": "cr_1", "amount_micros": 5000, "note": "PO 7", "actor": "admin", "at_ms": T0},
            "credit": {"tenant_id": "t1", "low_balance_micros": 100}
        }))
        .unwrap();
        let (reply, changed) = s.handle(call.clone(), T0);
        assert!(changed);
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["outcome"], "applied");
        assert_eq!(json["entry"]["balance_after_micros"], 5000);
        let back: LimiterReply = serde_json::from_value(json).unwrap();
        assert_eq!(back, reply, "the untagged reply reads back as a top-up");
        // The same call again (a retry) changes nothing.
        let (reply, changed) = s.handle(call, T0 + 1);
        assert!(!changed);
        let LimiterReply::TopUp(r) = reply else {
            panic!("a top-up reply")
        };
        assert_eq!(
            (r.outcome, r.credit.balance_micros),
            (TopUpOutcome::Duplicate, 5000)
        );
        // A reservation over JSON holds credit; the credit view shows it.
        let call: LimiterCall = serde_json::from_value(serde_json::json!({
            "op": "reserve", "id": "r1", "ask": {"tokens": 0, "cost_micros": 1200},
            "limits": {}, "credit": {"tenant_id": "t1"}
        }))
        .unwrap();
        let json = serde_json::to_string(&call).unwrap();
        assert_eq!(serde_json::from_str::<LimiterCall>(&json).unwrap(), call);
        let (reply, changed) = s.handle(call, T0 + 2);
        assert!(
            changed
                && matches!(
                    reply,
                    LimiterReply::Decision(Decision { admitted: true, .. })
                )
        );
        let (reply, changed) = s.handle(LimiterCall::Credits { last: Some(5) }, T0 + 3);
        assert!(!changed);
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            (
                json["balance_micros"].clone(),
                json["reserved_micros"].clone(),
                json["available_micros"].clone()
            ),
            (
                serde_json::json!(5000),
                serde_json::json!(1200),
                serde_json::json!(3800)
            )
        );
        assert_eq!(json["entries"][0]["note"], "PO 7");
        assert_eq!(serde_json::from_value::<LimiterReply>(json).unwrap(), reply);
        // Peek shows the balance without the entries; settle over JSON settles it.
        let settle: LimiterCall = serde_json::from_value(serde_json::json!({
            "op": "settle", "id": "r1", "used": {"tokens": 0, "cost_micros": 1000},
            "limits": {}, "credit": {"tenant_id": "t1"}
        }))
        .unwrap();
        s.handle(settle, T0 + 4);
        let (LimiterReply::Usage(u), _) = s.handle(
            LimiterCall::Peek {
                limits: Limits::default(),
                budget: None,
            },
            T0 + 5,
        ) else {
            panic!("a usage view")
        };
        let credit = u.credit.unwrap();
        assert_eq!((credit.balance_micros, credit.reserved_micros), (4000, 0));
        assert!(credit.entries.is_empty());
        // A limiter that never held credit answers a zero view, and old states read back.
        let fresh = LimiterState::default();
        assert_eq!(fresh.credit_view(5).balance_micros, 0);
        let stored = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LimiterState>(&stored).unwrap(), s);
        // A limiter of a tenant that is not prepaid stores what it stored before.
        let mut plain = LimiterState::default();
        let day = daily(Some(5), None, None);
        assert!(plain.reserve(&day, "a", Ask::request(1, 2), T0).admitted);
        let stored = serde_json::to_string(&plain).unwrap();
        assert!(!stored.contains("credit"), "{stored}");
        let old: LimiterState = serde_json::from_str(&stored).unwrap();
        assert_eq!(old.in_flight.get("a").map(|r| r.credit_micros), Some(0));
    }

    #[test]
    fn expiry_and_revocation_charge_what_was_held() {
        let limits = Limits::default();
        let (mut s, c) = prepaid(1_000, None);
        assert!(
            s.reserve_governed(&limits, gov(&c), "a", cost(300), T0)
                .admitted
        );
        // Its isolate died: after the TTL the hold is taken as spent.
        s.reserve_governed(&limits, gov(&c), "b", cost(100), T0 + RESERVATION_TTL_MS);
        assert_eq!(balance(&s), (700, 100));
        s.handle(LimiterCall::Revoke, T0 + RESERVATION_TTL_MS + 1);
        assert_eq!(balance(&s), (600, 0));
        // A settle arriving after expiry finds nothing to settle: not charged twice.
        s.settle_governed(
            &limits,
            None,
            Some(&c),
            "a",
            cost(300),
            T0 + RESERVATION_TTL_MS + 2,
        );
        assert_eq!(balance(&s), (600, 0));
    }

    #[test]
    fn tag_budgets_announce_their_tag() {
        let limits = Limits::default();
        let mut b = ctx(Some(100), None);
        b.tag = Some("team:search".into());
        let mut s = LimiterState::default();
        s.reserve_within(&limits, Some(&b), false, "r1", Ask::request(0, 150), T0);
        s.settle_within(&limits, Some(&b), "r1", Ask::request(0, 150), T0);
        let due = s.due_alerts(T0);
        assert_eq!(due.len(), 1);
        assert!(due[0].id.contains("team:search"));
        let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["tag"], "team:search");
    }

    /// The quota an isolate's finished leases hold comes back with its next lease call, before
    /// the new grant is sized: even when every request since was refused, nothing stays stranded.
    #[test]
    fn finished_leases_return_with_the_next_lease_call() {
        let limits = daily(None, Some(400), None);
        let mut s = LimiterState::default();
        let want = Ask {
            requests: 8,
            tokens: 8 * 15,
            cost_micros: 0,
        };
        let lease_call = |id: &str, returns: Vec<LeaseReturn>| LimiterCall::Lease {
            id: id.into(),
            want,
            need: ask(15),
            lease_ms: 2_000,
            limits: limits.clone(),
            budget: None,
            downgraded: false,
            credit: None,
            returns,
        };
        let granted = |reply: LimiterReply| match reply {
            LimiterReply::Lease(d) => d.grant,
            other => panic!("{other:?}"),
        };
        let (reply, _) = s.handle(lease_call("l1", vec![]), T0);
        let g1 = granted(reply).unwrap();
        assert_eq!(g1.tokens, Some(100), "a quarter of what remains");
        // Leases keep coming while the first is held; the quota runs low.
        let (reply, _) = s.handle(lease_call("l2", vec![]), T0 + 10);
        assert_eq!(granted(reply).unwrap().tokens, Some(75));
        // The first lease expired having used 30 tokens: returned with the next call, its unused
        // 70 are free before this grant is made.
        let (reply, changed) = s.handle(
            lease_call(
                "l3",
                vec![LeaseReturn {
                    id: "l1".into(),
                    used: Ask {
                        requests: 2,
                        tokens: 30,
                        cost_micros: 0,
                    },
                }],
            ),
            T0 + 2_500,
        );
        assert!(changed);
        // 400 − 30 used − 75 held by l2 = 295 left: a quarter, at least the request's 15.
        assert_eq!(granted(reply).unwrap().tokens, Some(73));
        assert_eq!(s.period_usage(Period::Day).1, 30 + 75 + 73);
    }
}
