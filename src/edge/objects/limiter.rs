//! [edge] The `Limiter` Durable Object — one per key and one per tenant — and the relay's
//! calls to it. The object is a thin shell: it keeps `limits::state::LimiterState` in its SQLite
//! storage and hands each call to the pure state machine with the current time.

use std::cell::RefCell;
use std::collections::HashMap;

use worker::js_sys::{Function, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{
    durable_object, Context, DurableObject, Env, ObjectNamespace, Request, Response, Result, State,
};

use super::{self as objects, JsonRow};
use crate::api::server_timing::{ServerTiming, Wait};
use crate::edge::state::random_bytes;
use crate::error::RelayError;
use crate::governance::budget::BudgetStatus;
use crate::governance::grant::KeyGrant;
use crate::governance::limits::lease::{LeaseBook, Return, Taken, DEFAULT_LEASE_MS};
use crate::governance::limits::protocol::{
    BudgetCtx, Decision, LeaseDecision, LeaseReturn, LimitHit, LimiterCall,
};
use crate::governance::limits::state::LimiterState;
use crate::governance::limits::{Ask, Limits, RateInfo};

#[durable_object]
pub struct Limiter {
    row: JsonRow,
    storage: worker::Storage,
    state: RefCell<Option<LimiterState>>,
    /// Signs webhook notices (`WEBHOOK_SECRET`); unsigned when unset.
    webhook_secret: Option<String>,
}

impl DurableObject for Limiter {
    fn new(state: State, env: Env) -> Self {
        Limiter {
            row: JsonRow::new(state.storage().sql(), "limiter"),
            storage: state.storage(),
            state: RefCell::new(None),
            webhook_secret: crate::edge::state::secret(&env, "WEBHOOK_SECRET"),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: LimiterCall = req.json().await?;
        // From here to the reply nothing awaits: each call is applied whole, in arrival order.
        let mut state = self
            .state
            .borrow_mut()
            .take()
            .unwrap_or_else(|| self.row.load());
        let (reply, changed) = state.handle(call, crate::edge::state::now_ms());
        let wake = state.next_alert_ms();
        if changed {
            self.row.save(&state)?;
        }
        *self.state.borrow_mut() = Some(state);
        if changed {
            if let Some(at) = wake {
                objects::wake_at(&self.storage, at).await;
            }
        }
        Response::from_json(&reply)
    }

    /// Deliver the budget webhooks that are due; failures are retried at the next alarm.
    async fn alarm(&self) -> Result<Response> {
        objects::run_alarm(
            &self.state,
            &self.row,
            &self.storage,
            self.webhook_secret.as_deref(),
            LimiterState::alerts_mut,
        )
        .await?;
        Response::ok("")
    }
}

// ---- the relay's side ----------------------------------------------------------------

pub fn key_object(key_id: &str) -> String {
    format!("key:{key_id}")
}

pub fn tenant_object(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}")
}

/// Where a limiter lives: its name, and the jurisdiction of its tenant (its Durable Object
/// is created there and never leaves it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place {
    pub object: String,
    pub jurisdiction: Option<String>,
}

impl Place {
    pub fn key(key_id: &str, jurisdiction: Option<&str>) -> Place {
        Place {
            object: key_object(key_id),
            jurisdiction: jurisdiction.map(str::to_string),
        }
    }

    pub fn tenant(tenant_id: &str, jurisdiction: Option<&str>) -> Place {
        Place {
            object: tenant_object(tenant_id),
            jurisdiction: jurisdiction.map(str::to_string),
        }
    }

    fn book_key(&self) -> String {
        match &self.jurisdiction {
            Some(j) => format!("{j}/{}", self.object),
            None => self.object.clone(),
        }
    }
}

/// The stub of a limiter: in its tenant's jurisdiction when the tenant is pinned to one
/// (`LIMITER.jurisdiction("eu")`, which workers-rs does not wrap). Local workerd has no
/// jurisdictions; in local development (`LOCAL_DEV=true`) the object is then named under its
/// jurisdiction instead, and anywhere else the call fails rather than place a pinned tenant's
/// counters outside its jurisdiction.
fn stub(env: &Env, place: &Place) -> Result<worker::Stub, RelayError> {
    let ns = env
        .durable_object("LIMITER")
        .map_err(|e| RelayError::internal("limiter binding", e))?;
    let stub = |ns: &ObjectNamespace, name: &str| {
        ns.id_from_name(name)
            .and_then(|id| id.get_stub())
            .map_err(|e| RelayError::internal("limiter stub", e))
    };
    let Some(j) = place.jurisdiction.as_deref() else {
        return stub(&ns, &place.object);
    };
    let raw: JsValue = ns.clone().into();
    let narrowed = Reflect::get(&raw, &JsValue::from_str("jurisdiction"))
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
        .ok_or_else(|| "this runtime has no jurisdictions".to_string())
        .and_then(|f| {
            f.call1(&raw, &JsValue::from_str(j))
                .map_err(|e| format!("{e:?}"))
        });
    match narrowed {
        Ok(narrowed) => stub(&ObjectNamespace::unchecked_from_js(narrowed), &place.object),
        Err(_) if local_dev(env) => stub(&ns, &format!("{j}/{}", place.object)),
        Err(e) => Err(RelayError::internal("limiter jurisdiction", e)),
    }
}

/// Local development (`LOCAL_DEV=true` in .dev.vars): no jurisdictions, and budget webhooks
/// may be plain http to loopback, where test listeners are.
pub fn local_dev(env: &Env) -> bool {
    env.var("LOCAL_DEV")
        .map(|v| v.to_string().trim() == "true")
        .unwrap_or(false)
}

async fn call<T: serde::de::DeserializeOwned>(
    env: &Env,
    place: &Place,
    call: &LimiterCall,
) -> Result<T, RelayError> {
    objects::call(&stub(env, place)?, "limiter", call).await
}

thread_local! {
    /// Lease mode: the capacity this isolate holds, per limiter.
    static BOOKS: RefCell<HashMap<String, LeaseBook>> = RefCell::new(HashMap::new());
}

fn with_book<R>(place: &Place, f: impl FnOnce(&mut LeaseBook) -> R) -> R {
    BOOKS.with(|b| f(b.borrow_mut().entry(place.book_key()).or_default()))
}

/// Leases are sized for about this many requests at least, and at most this many.
const LEASE_MIN_REQUESTS: u64 = 8;
const LEASE_MAX_REQUESTS: u64 = 1024;

/// How a request is decided at a limiter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// At the limiter, per request: exact per-minute buckets, concurrency, immediate revocation.
    Strict,
    /// From capacity leased to this isolate for this long (the default).
    Lease(u64),
}

/// One limiter's part in a request: what it holds there, and how.
#[derive(Clone)]
struct Side {
    place: Place,
    limits: Limits,
    budget: Option<BudgetCtx>,
    /// Lease mode: the lease the request was admitted from (settled in the isolate).
    lease: Option<Taken>,
    /// A direct reservation at the limiter (to settle there), unless it holds nothing.
    direct: bool,
}

/// What a reservation holds, to be settled when the request is done. A request of a key and
/// tenant without limits holds nothing and was never at a limiter.
#[derive(Clone)]
pub struct Held {
    request_id: String,
    sides: Vec<Side>,
}

/// What the limiters said about an admitted request.
pub struct Admitted {
    pub held: Held,
    pub rate: RateInfo,
    /// The `x-relay-budget-warning` header, when the tenant is past its soft budget.
    pub budget_warning: Option<String>,
}

fn new_lease_id() -> String {
    format!(
        "lease_{}",
        crate::support::crypto::hex(&random_bytes::<12>())
    )
}

fn admitted_from(taken: Taken, budget: Option<BudgetStatus>) -> Decision {
    Decision {
        admitted: true,
        hit: None,
        retry_after_ms: None,
        rate: taken.rate,
        budget,
    }
}

/// A limiter call the request waits for, timed in its Server-Timing.
async fn timed<T: serde::de::DeserializeOwned>(
    env: &Env,
    timing: &RefCell<ServerTiming>,
    place: &Place,
    c: &LimiterCall,
) -> Result<T, RelayError> {
    let t0 = worker::js_sys::Date::now();
    let reply = call(env, place, c).await;
    timing
        .borrow_mut()
        .add(Wait::Limiter, worker::js_sys::Date::now() - t0);
    reply
}

/// Decide one side: in lease mode from a lease this isolate holds (asking the limiter only
/// when none has room, and fetching the next one in the background before it runs out), else
/// at the limiter. Finished leases go back to the limiter with the next call made to it.
#[allow(clippy::too_many_arguments)]
async fn admit_side(
    env: &Env,
    ctx: &Context,
    timing: &RefCell<ServerTiming>,
    side: &mut Side,
    request_id: &str,
    ask: Ask,
    mode: Mode,
    downgraded: bool,
) -> Result<Decision, RelayError> {
    // Concurrency limits count requests in flight at the limiter, which a lease cannot;
    // downgraded requests pass the hard budget a lease is bounded by. Both go direct.
    let leasing = match mode {
        Mode::Lease(ms) if side.limits.concurrency.is_none() && !downgraded => Some(ms),
        Mode::Lease(_) | Mode::Strict => None,
    };
    let Some(lease_ms) = leasing else {
        let d: Decision = timed(
            env,
            timing,
            &side.place,
            &LimiterCall::Reserve {
                id: request_id.to_string(),
                ask,
                limits: side.limits.clone(),
                budget: side.budget.clone(),
                downgraded,
                credit: None,
            },
        )
        .await?;
        side.direct = d.admitted && !(side.limits.is_empty() && side.budget.is_none());
        return Ok(d);
    };
    let now = crate::edge::state::now_ms();
    let (taken, refresh, want, returns) = with_book(&side.place, |book| {
        let taken = book.take(ask, now);
        // A miss brings this isolate's pieces of capacity back together for the next lease.
        let returns = match &taken {
            Some(_) => book.finished(now),
            None => book.consolidate(now),
        };
        let returns: Vec<LeaseReturn> = returns.into_iter().map(lease_return).collect();
        let refresh = book.wants_refresh(now);
        if refresh {
            book.refreshing = true;
        }
        (
            taken,
            refresh,
            book.want(ask, LEASE_MIN_REQUESTS, LEASE_MAX_REQUESTS),
            returns,
        )
    });
    if let Some(taken) = taken {
        if refresh {
            refresh_lease(env, ctx, side, ask, want, lease_ms, returns);
        } else if !returns.is_empty() {
            return_leases_later(env, ctx, side, returns);
        }
        side.lease = Some(taken.clone());
        return Ok(admitted_from(taken, None));
    }
    // No lease with room: take one now, this request first in it.
    let id = new_lease_id();
    let reply: std::result::Result<LeaseDecision, RelayError> = timed(
        env,
        timing,
        &side.place,
        &LimiterCall::Lease {
            id: id.clone(),
            want,
            need: ask,
            lease_ms: lease_ms as i64,
            limits: side.limits.clone(),
            budget: side.budget.clone(),
            downgraded,
            credit: None,
            returns,
        },
    )
    .await;
    let now = crate::edge::state::now_ms();
    with_book(&side.place, |book| {
        if refresh {
            book.refreshing = false;
        }
    });
    let reply = reply?;
    if reply.grant.is_none() && reply.decision.hit != Some(LimitHit::Revoked) {
        // Refused because the rest is leased out — perhaps to this isolate, by a request that
        // overtook this one: what it holds here is this key's too.
        if let Some(taken) = with_book(&side.place, |book| book.take(ask, now)) {
            side.lease = Some(taken.clone());
            return Ok(admitted_from(taken, reply.decision.budget));
        }
    }
    if let Some(grant) = reply.grant {
        let rate = reply.decision.rate;
        with_book(&side.place, |book| {
            book.add(id.clone(), grant, Some(ask), rate, now)
        });
        side.lease = Some(Taken {
            lease_id: id,
            reserved: ask,
            rate,
        });
    }
    Ok(reply.decision)
}

fn lease_return(r: Return) -> LeaseReturn {
    LeaseReturn {
        id: r.lease_id,
        used: r.used,
    }
}

/// Fetch the next lease in the background, so steady traffic never waits for one; finished
/// leases go back with it.
fn refresh_lease(
    env: &Env,
    ctx: &Context,
    side: &Side,
    ask: Ask,
    want: Ask,
    lease_ms: u64,
    returns: Vec<LeaseReturn>,
) {
    let env = env.clone();
    let side = side.clone();
    ctx.wait_until(async move {
        let id = new_lease_id();
        let reply: std::result::Result<LeaseDecision, RelayError> = call(
            &env,
            &side.place,
            &LimiterCall::Lease {
                id: id.clone(),
                want,
                need: Ask {
                    requests: 1,
                    tokens: ask.tokens,
                    cost_micros: ask.cost_micros,
                },
                lease_ms: lease_ms as i64,
                limits: side.limits.clone(),
                budget: side.budget.clone(),
                downgraded: false,
                credit: None,
                returns,
            },
        )
        .await;
        let now = crate::edge::state::now_ms();
        with_book(&side.place, |book| {
            book.refreshing = false;
            if let Ok(LeaseDecision {
                grant: Some(grant),
                decision,
            }) = reply
            {
                book.add(id, grant, None, decision.rate, now);
            }
        });
    });
}

/// Send finished leases back when no other call to their limiter is due.
fn return_leases_later(env: &Env, ctx: &Context, side: &Side, returns: Vec<LeaseReturn>) {
    let env = env.clone();
    let side = side.clone();
    ctx.wait_until(async move { return_leases(&env, &side, returns).await });
}

/// `admit_side` for a side that exists; nothing for one that does not.
#[allow(clippy::too_many_arguments)]
async fn admit_optional(
    env: &Env,
    ctx: &Context,
    timing: &RefCell<ServerTiming>,
    side: Option<&mut Side>,
    request_id: &str,
    ask: Ask,
    mode: Mode,
    downgraded: bool,
) -> Result<Option<Decision>, RelayError> {
    match side {
        Some(side) => admit_side(env, ctx, timing, side, request_id, ask, mode, downgraded)
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// How a tenant's requests are decided: strict when it asked for per-request decisions, else
/// from leases of `lease_ms` (2 s unless the tenant chose otherwise).
fn mode_of(grant: &KeyGrant) -> Mode {
    if grant.settings.strict_limits {
        Mode::Strict
    } else {
        Mode::Lease(grant.settings.lease_ms.unwrap_or(DEFAULT_LEASE_MS))
    }
}

/// Reserve `ask` for a request at the limiters that have something to decide: the key's when
/// it has limits (or its tenant is strict, where the key's limiter also answers for
/// revocation at once), the tenant's when it has limits or a budget — both at once. A request
/// one of them refuses is released at the other. A key and tenant without limits are never at
/// a limiter: revocation reaches them through the key's cached grant within the config TTL.
pub async fn reserve(
    env: &Env,
    ctx: &Context,
    timing: &RefCell<ServerTiming>,
    grant: &KeyGrant,
    request_id: &str,
    ask: Ask,
    downgraded: bool,
) -> Result<Admitted, RelayError> {
    let jurisdiction = grant.jurisdiction.as_deref();
    let mode = mode_of(grant);
    let budget = grant.settings.budget.clone().map(|budget| BudgetCtx {
        tenant_id: grant.tenant_id.clone(),
        budget,
        tag: None,
    });
    let mut key = (!grant.key_limits.is_empty() || mode == Mode::Strict).then(|| Side {
        place: Place::key(&grant.key_id, jurisdiction),
        limits: grant.key_limits.clone(),
        budget: None,
        lease: None,
        direct: false,
    });
    let mut tenant = (!grant.tenant_limits.is_empty() || budget.is_some()).then(|| Side {
        place: Place::tenant(&grant.tenant_id, jurisdiction),
        limits: grant.tenant_limits.clone(),
        budget,
        lease: None,
        direct: false,
    });
    let (key_decision, tenant_decision) = futures::join!(
        admit_optional(
            env,
            ctx,
            timing,
            key.as_mut(),
            request_id,
            ask,
            mode,
            downgraded
        ),
        admit_optional(
            env,
            ctx,
            timing,
            tenant.as_mut(),
            request_id,
            ask,
            mode,
            downgraded
        ),
    );
    let (key_decision, tenant_decision) = (key_decision?, tenant_decision?);
    let refused = |d: &Decision, scope: &'static str| -> Option<RelayError> {
        if d.admitted {
            return None;
        }
        Some(match d.hit {
            Some(LimitHit::Revoked) => RelayError::KeyRevoked,
            Some(LimitHit::Budget { period }) => RelayError::BudgetExceeded {
                period: period.name(),
                retry_after_ms: d.retry_after_ms,
            },
            hit => RelayError::LimitExceeded {
                limit: hit.map_or_else(|| "requests".to_string(), |h| h.describe()),
                scope,
                quota: matches!(hit, Some(LimitHit::Quota { .. })),
                retry_after_ms: d.retry_after_ms,
                rate_headers: crate::governance::limits::rate_headers(&d.rate),
            },
        })
    };
    let failure = key_decision
        .as_ref()
        .and_then(|k| refused(k, "key"))
        .or_else(|| tenant_decision.as_ref().and_then(|t| refused(t, "tenant")));
    let held = Held {
        request_id: request_id.to_string(),
        sides: key.into_iter().chain(tenant).collect(),
    };
    if let Some(err) = failure {
        // Whichever side admitted must not keep the reservation.
        release(env, &held).await;
        return Err(err);
    }
    // The headers describe the tighter of the two when both limit the same thing.
    let key_rate = key_decision.as_ref().map(|k| k.rate);
    let rate = match (
        key_rate.and_then(|r| r.limit_requests.or(r.limit_tokens)),
        &tenant_decision,
    ) {
        (None, Some(t)) => t.rate,
        _ => key_rate.unwrap_or_default(),
    };
    let budget_warning = tenant_decision
        .as_ref()
        .and_then(|t| t.budget)
        .and_then(|b| b.warning());
    Ok(Admitted {
        held,
        rate,
        budget_warning,
    })
}

/// Give back every side a refused request holds: it never ran.
async fn release(env: &Env, held: &Held) {
    close(env, held, None).await
}

/// Replace the reservation by what the request used (zero when it failed). A request admitted
/// from a lease settles in the isolate, and only a finished lease is settled at the limiter.
pub async fn settle(env: &Env, held: &Held, used: Ask) {
    close(env, held, Some(used)).await
}

/// Settle (`Some`) or release (`None`) every side of a request, the sides at once.
async fn close(env: &Env, held: &Held, used: Option<Ask>) {
    let now = crate::edge::state::now_ms();
    let sides = held.sides.iter().map(|side| async move {
        if let Some(t) = &side.lease {
            let done = with_book(&side.place, |b| match used {
                Some(used) => b.settle(&t.lease_id, t.reserved, used, now),
                None => b.release(&t.lease_id, t.reserved, now),
            });
            return_leases(env, side, done.into_iter().map(lease_return).collect()).await;
        }
        if !side.direct {
            return;
        }
        let id = held.request_id.clone();
        let limits = side.limits.clone();
        let c = match used {
            Some(used) => LimiterCall::Settle {
                id,
                used,
                limits,
                budget: side.budget.clone(),
                credit: None,
            },
            None => LimiterCall::Release { id, limits },
        };
        if let Err(e) = call::<serde_json::Value>(env, &side.place, &c).await {
            worker::console_error!("{:?} at {}: {:?}", c, side.place.object, e);
        }
    });
    futures::future::join_all(sides).await;
}

/// Settle finished leases at their limiter. Failures are logged: the lease then lapses at the
/// limiter `LEASE_GRACE_MS` after its expiry, counted as fully used.
async fn return_leases(env: &Env, side: &Side, returns: Vec<LeaseReturn>) {
    for r in returns {
        let c = LimiterCall::Settle {
            id: r.id.clone(),
            used: r.used,
            limits: side.limits.clone(),
            budget: side.budget.clone(),
            credit: None,
        };
        if let Err(e) = call::<Decision>(env, &side.place, &c).await {
            worker::console_error!("return {} at {}: {:?}", r.id, side.place.object, e);
        }
    }
}

/// Revocation reaches every isolate's next request through the key's limiter (within one
/// lease period for lease-mode tenants, whose isolates decide on their own meanwhile; this
/// isolate forgets its leases at once).
pub async fn revoke(env: &Env, key_id: &str, jurisdiction: Option<&str>) -> Result<(), RelayError> {
    let place = Place::key(key_id, jurisdiction);
    with_book(&place, |b| drop(b.clear()));
    call::<RateInfo>(env, &place, &LimiterCall::Revoke)
        .await
        .map(drop)
}

/// Current usage held by a key's or tenant's limiter, for the admin API.
pub async fn peek(
    env: &Env,
    place: &Place,
    limits: &Limits,
    budget: Option<BudgetCtx>,
) -> Result<serde_json::Value, RelayError> {
    call::<serde_json::Value>(
        env,
        place,
        &LimiterCall::Peek {
            limits: limits.clone(),
            budget,
        },
    )
    .await
}
