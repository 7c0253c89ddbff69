//! [edge] The `ChannelHealth` Durable Object — one per channel — and the isolate's copy of it.
//! The object is a thin shell over `health::ChannelHealth`. Isolates read their copy without
//! waiting (refreshing it in the background once it is a second old), fold their own outcomes
//! into it at once, and report failures to the object immediately and successes with the next
//! refresh: every isolate sees a breaker open within about a second.

use std::cell::RefCell;
use std::collections::HashMap;

use worker::{durable_object, Context, DurableObject, Env, Request, Response, Result, State};

use super::{self as objects, JsonRow};
use crate::error::RelayError;
use crate::governance::alerts::WebhookFormat;
use crate::routing::breaker::{Admit, BreakerConfig};
use crate::routing::channel::key_fingerprint;
use crate::routing::health::{self, AlertTarget, ChannelHealth, HealthCall, Report};

#[durable_object]
pub struct Health {
    row: JsonRow,
    storage: worker::Storage,
    state: RefCell<Option<ChannelHealth>>,
    /// Where operator alerts go (`ALERT_WEBHOOK_URL`); none when unset.
    alerts: Option<AlertTarget>,
    webhook_secret: Option<String>,
}

impl DurableObject for Health {
    fn new(state: State, env: Env) -> Self {
        let format = match crate::edge::state::secret(&env, "ALERT_WEBHOOK_FORMAT").as_deref() {
            Some("slack") => WebhookFormat::Slack,
            _ => WebhookFormat::Json,
        };
        Health {
            row: JsonRow::new(state.storage().sql(), "health"),
            storage: state.storage(),
            state: RefCell::new(None),
            alerts: crate::edge::state::secret(&env, "ALERT_WEBHOOK_URL")
                .map(|url| AlertTarget { url, format }),
            webhook_secret: crate::edge::state::secret(&env, "WEBHOOK_SECRET"),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: HealthCall = req.json().await?;
        // Nothing awaits from here to the reply: each call is applied whole, in order.
        let mut state = self
            .state
            .borrow_mut()
            .take()
            .unwrap_or_else(|| self.row.load());
        let (reply, changed) =
            state.handle(call, crate::edge::state::now_ms(), self.alerts.as_ref());
        let wake = state.alerts.next_ms();
        if changed {
            self.row.save(&state)?;
        }
        *self.state.borrow_mut() = Some(state);
        if let (true, Some(at)) = (changed, wake) {
            objects::wake_at(&self.storage, at).await;
        }
        Response::from_json(&reply)
    }

    /// Deliver the operator alerts that are due; failures are retried at the next alarm.
    async fn alarm(&self) -> Result<Response> {
        objects::run_alarm(
            &self.state,
            &self.row,
            &self.storage,
            self.webhook_secret.as_deref(),
            |h: &mut ChannelHealth| &mut h.alerts,
        )
        .await?;
        Response::ok("")
    }
}

// ---- the relay's side ----------------------------------------------------------------

/// How old an isolate's copy may be before it is refreshed (in the background).
const FRESH_MS: i64 = 1_000;

async fn call(
    env: &Env,
    channel_id: &str,
    call: &HealthCall,
) -> Result<serde_json::Value, RelayError> {
    let ns = env
        .durable_object("HEALTH")
        .map_err(|e| RelayError::internal("health binding", e))?;
    let stub = ns
        .id_from_name(channel_id)
        .and_then(|id| id.get_stub())
        .map_err(|e| RelayError::internal("health stub", e))?;
    objects::call(&stub, "health", call).await
}

#[derive(Default)]
struct Copy {
    state: ChannelHealth,
    fetched_ms: i64,
    pending: Report,
    refreshing: bool,
}

thread_local! {
    static COPIES: RefCell<HashMap<String, Copy>> = RefCell::new(HashMap::new());
}

fn with_copy<R>(channel_id: &str, f: impl FnOnce(&mut Copy) -> R) -> R {
    COPIES.with(|c| f(c.borrow_mut().entry(channel_id.to_string()).or_default()))
}

/// Work with this isolate's view of a channel now, never waited for and never copied: a stale
/// copy is refreshed in the background (carrying the successes gathered meanwhile).
pub fn view<R>(
    env: &Env,
    ctx: &Context,
    channel_id: &str,
    config: BreakerConfig,
    f: impl FnOnce(&ChannelHealth) -> R,
) -> R {
    let now = crate::edge::state::now_ms();
    let (result, stale) = with_copy(channel_id, |c| {
        let stale = !c.refreshing && now - c.fetched_ms >= FRESH_MS;
        if stale {
            c.refreshing = true;
        }
        (f(&c.state), stale)
    });
    if stale {
        flush(env, ctx, channel_id, config);
    }
    result
}

/// Send what this isolate gathered and take the object's state, in the background. News that
/// arrives meanwhile and others must hear at once goes in another round of the same task.
fn flush(env: &Env, ctx: &Context, channel_id: &str, config: BreakerConfig) {
    let env = env.clone();
    let channel_id = channel_id.to_string();
    ctx.wait_until(async move {
        let mut report = with_copy(&channel_id, |c| std::mem::take(&mut c.pending));
        loop {
            let reply = call(
                &env,
                &channel_id,
                &HealthCall::Report {
                    report: report.clone(),
                    breaker: config,
                    channel: channel_id.clone(),
                },
            )
            .await;
            let now = crate::edge::state::now_ms();
            let again = with_copy(&channel_id, |c| {
                match reply
                    .ok()
                    .and_then(|v| serde_json::from_value::<ChannelHealth>(v).ok())
                {
                    Some(mut state) => {
                        // What happened here since the report left is not in the reply yet.
                        state.apply(&c.pending, config, now);
                        c.state = state;
                        c.fetched_ms = now;
                        if c.pending.urgent() {
                            return Some(std::mem::take(&mut c.pending));
                        }
                    }
                    None => {
                        // Not delivered: keep it for the next report.
                        let mut merged = std::mem::take(&mut report);
                        merge(&mut merged, std::mem::take(&mut c.pending));
                        c.pending = merged;
                    }
                }
                c.refreshing = false;
                None
            });
            match again {
                Some(next) => report = next,
                None => break,
            }
        }
    });
}

fn merge(into: &mut Report, from: Report) {
    for (m, (ok, failed)) in from.outcomes {
        let e = into.outcomes.entry(m).or_default();
        e.0 = e.0.saturating_add(ok);
        e.1 = e.1.saturating_add(failed);
    }
    for (m, probes) in from.probes {
        into.probes.entry(m).or_default().extend(probes);
    }
    into.keys.extend(from.keys);
}

/// What one attempt at a channel came to.
pub struct Outcome<'a> {
    pub model: &'a str,
    /// `None`: no answer (connection error or timeout).
    pub status: Option<u16>,
    pub key: Option<(&'a str, Option<u64>)>,
    pub probe: bool,
}

/// Fold an outcome into this isolate's copy at once, and report it: now when others need to
/// know (a failure, a key's trouble, a probe), else with the next refresh.
pub fn record(env: &Env, ctx: &Context, channel_id: &str, config: BreakerConfig, o: Outcome<'_>) {
    let now = crate::edge::state::now_ms();
    let ok = o.status.is_some_and(|s| (200..300).contains(&s));
    let failed = crate::routing::breaker::is_failure(o.status);
    let mut report = Report::default();
    if o.probe {
        report.probes.insert(o.model.to_string(), vec![ok]);
    } else if ok || failed {
        report
            .outcomes
            .insert(o.model.to_string(), (u32::from(ok), u32::from(failed)));
    }
    if let (Some((key, retry_after_ms)), Some(status)) = (o.key, o.status) {
        if matches!(status, 401 | 403 | 429)
            || (ok && with_copy(channel_id, |c| !c.state.keys.view(now).is_empty()))
        {
            report
                .keys
                .push((key_fingerprint(key), status, retry_after_ms));
        }
    }
    let urgent = report.urgent();
    let start = with_copy(channel_id, |c| {
        c.state.apply(&report, config, now);
        merge(&mut c.pending, report);
        let start = urgent && !c.refreshing;
        if start {
            c.refreshing = true;
        }
        start
    });
    if start {
        flush(env, ctx, channel_id, config);
    }
}

/// May this attempt probe a half-open breaker? Asked of the object: one probe worldwide.
pub async fn admit_probe(env: &Env, channel_id: &str, model: &str, config: BreakerConfig) -> bool {
    let reply = call(
        env,
        channel_id,
        &HealthCall::Admit {
            model: model.to_string(),
            breaker: config,
        },
    )
    .await;
    match reply {
        Ok(v) => health::parse_admit(&v) == Admit::Probe,
        Err(e) => {
            worker::console_warn!("probe admission for {}: {:?}", channel_id, e);
            false
        }
    }
}

/// The object's own state, for the admin API (and this isolate's copy refreshed with it).
pub async fn admin_view(env: &Env, channel_id: &str) -> Result<serde_json::Value, RelayError> {
    let v = call(
        env,
        channel_id,
        &HealthCall::Report {
            report: Report::default(),
            breaker: BreakerConfig::default(),
            channel: channel_id.to_string(),
        },
    )
    .await?;
    let state: ChannelHealth =
        serde_json::from_value(v).map_err(|e| RelayError::internal("health state", e))?;
    let now = crate::edge::state::now_ms();
    Ok(serde_json::to_value(state.view(now)).unwrap_or_default())
}

pub async fn enable_key(env: &Env, channel_id: &str, fp: &str) -> Result<(), RelayError> {
    call(
        env,
        channel_id,
        &HealthCall::EnableKey {
            fingerprint: fp.to_string(),
        },
    )
    .await?;
    with_copy(channel_id, |c| c.state.keys.enable(fp));
    Ok(())
}
