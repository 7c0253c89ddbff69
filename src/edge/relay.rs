//! [edge] The relay path, as the order of what it awaits: authenticate the key (from the
//! isolate's cached grant), read the body, resolve the model and its candidate channels (cached
//! configuration), hold the request's worst case at its limiters when it has any (from a lease
//! in the isolate, unless the tenant is strict), then the attempts the pure planner
//! (`routing::attempts`) decides, and the reply piped back; usage is recorded after the
//! response is under way. Every storage wait is named in the response's `Server-Timing`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use worker::js_sys::Reflect;
use worker::wasm_bindgen::JsValue;
use worker::{Cache, Context, Delay, Env, Headers, Request, Response};

use super::config::{self, Reader};
use super::http::{header, json_response, json_value, read_body};
use super::objects::health;
use super::objects::limiter;
use super::state::{now_ms, Settings};
use super::store::usage_log::record_later;
use super::stream::stream_response;
use super::upstream::{
    attempt, breaker_config, deadline, draw_u32, hedged_attempt, key_index, read_with_deadline,
    report_failure, report_outcome, send, Abort, Failed, Sent, Served,
};
use crate::api::server_timing::{ServerTiming, Wait};
use crate::error::RelayError;
use crate::formats::client::{self, ClientFormat, ClientRequest};
use crate::formats::neutral::Usage;
use crate::formats::openai::{self, Endpoint};
use crate::formats::translate::{self, StreamPipe};
use crate::governance::access;
use crate::governance::auth;
use crate::governance::budget::OnHard;
use crate::governance::grant::{KeyGrant, Status};
use crate::governance::limits::{self, Ask, RateInfo};
use crate::ledger::pricing::Pricer;
use crate::ledger::response_cache::{self, CacheMode};
use crate::ledger::row::{loggable, AttemptRow, Bodies, UsageRow};
use crate::ledger::usage::{self, Provenance};
use crate::providers::endpoint;
use crate::providers::mock::{self, MockReply};
use crate::providers::ProviderKind;
use crate::routing::attempts::{CandidateFacts, Failure, Planner, Step};
use crate::routing::channel::{key_fingerprint, Channel};
use crate::routing::health::Gate;
use crate::routing::model_map::{self, ModelTarget, Route};
use crate::routing::retry::RetryBudget;
use crate::routing::{geo, order};

/// What every handler on the relay path shares.
pub struct RelayCtx<'a> {
    pub env: &'a Env,
    pub ctx: &'a Context,
    pub settings: &'a Settings,
    pub request_id: &'a str,
    pub started_ms: i64,
    /// What the request waited on, for its `Server-Timing` header.
    pub timing: RefCell<ServerTiming>,
}

impl RelayCtx<'_> {
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            env: self.env,
            ctx: self.ctx,
            ttl_ms: self.settings.cache_ttl_ms,
            timing: &self.timing,
        }
    }

    /// The `Server-Timing` header of the response now being handed back.
    pub fn server_timing(&self, response: &mut Response) {
        let ttfb = worker::js_sys::Date::now() - self.started_ms as f64;
        let _ = response
            .headers_mut()
            .set("server-timing", &self.timing.borrow().header_value(ttfb));
    }
}

pub async fn authenticate(req: &Request, rc: &RelayCtx<'_>) -> Result<Rc<KeyGrant>, RelayError> {
    let credential = auth::credential_from_headers(
        header(req, "authorization").as_deref(),
        header(req, "x-api-key").as_deref(),
    )
    .ok_or(RelayError::MissingApiKey)?;
    let hash = auth::hash_key(&credential);
    let grant = config::key_grant(&rc.reader(), &hash)
        .await?
        .ok_or(RelayError::InvalidApiKey)?;
    let now = now_ms();
    auth::check_key(&grant, now)?;
    let ip = header(req, "cf-connecting-ip");
    let country = req.cf().and_then(|cf| cf.country());
    access::check_rules(&grant, ip.as_deref(), country.as_deref(), now)?;
    Ok(grant)
}

/// `GET /v1/models` and `GET /v1/models/{model}`: only what this key may use.
pub async fn models(
    rc: &RelayCtx<'_>,
    grant: &KeyGrant,
    one: Option<&str>,
) -> Result<Response, RelayError> {
    let r = rc.reader();
    let (map, groups) = futures::try_join!(config::model_map(&r), config::model_groups(&r, grant))?;
    let entry = |id: &str, created: i64| json!({"id": id, "object": "model", "created": created, "owned_by": "edgerelay"});
    match one {
        Some(model) => {
            let target = model_map::resolve(&map, &groups, grant, model)?;
            Ok(json_value(200, &entry(model, target.created)))
        }
        None => {
            let data: Vec<_> = model_map::visible_models(&map, &groups, grant)
                .into_iter()
                .map(|(id, t)| entry(id, t.created))
                .collect();
            Ok(json_value(200, &json!({"object": "list", "data": data})))
        }
    }
}

/// The routes of a target that may serve this tenant now, with their channels (read at once):
/// the channel exists, is enabled, and lies in the tenant's jurisdiction when it is pinned.
async fn candidates(
    rc: &RelayCtx<'_>,
    grant: &KeyGrant,
    target: &ModelTarget,
    model: &str,
) -> Result<Vec<(Route, Rc<Channel>)>, RelayError> {
    let r = rc.reader();
    let routes = target.all_routes();
    let channels = futures::future::try_join_all(
        routes
            .iter()
            .map(|route| config::channel(&r, &route.channel_id)),
    )
    .await?;
    let mut out = Vec::new();
    let mut outside_jurisdiction = false;
    for (route, channel) in routes.into_iter().zip(channels) {
        let Some(channel) = channel else {
            continue;
        };
        if let Some(j) = &grant.jurisdiction {
            if !geo::region_allowed(Some(j), channel.region.as_deref()) {
                outside_jurisdiction = true;
                continue;
            }
        }
        if channel.status == Status::Active {
            out.push((route, channel));
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    Err(match &grant.jurisdiction {
        Some(j) if outside_jurisdiction => RelayError::RegionNotServed {
            model: model.to_string(),
            jurisdiction: j.clone(),
        },
        _ => RelayError::ChannelUnavailable {
            reason: "its channels are disabled or gone".into(),
        },
    })
}

/// What is known about a request for its usage row, filled in as the request progresses.
#[derive(Clone)]
pub(crate) struct Ledger {
    /// The row as far as it is known before the outcome: who asked for what, where it went, each
    /// attempt, and the logged request when the tenant opted in to body logging (`bodies` is
    /// `Some` from the start then). `row` completes a copy.
    pub(crate) draft: UsageRow,
    /// The reservation at the key's (and tenant's) limiter, settled with the row.
    pub(crate) held: Option<limiter::Held>,
    /// Prices the usage for the settlement and the row.
    pub(crate) pricer: Option<Rc<Pricer>>,
    /// What the limiter said, for the `x-ratelimit-*` headers.
    pub(crate) rate: RateInfo,
    /// More response headers decided on the way (budget warning, downgrade).
    pub(crate) notes: Vec<(&'static str, String)>,
    /// Store a successful reply in the response cache under this URL for this many seconds.
    pub(crate) cache_fill: Option<(String, u32)>,
}

impl Ledger {
    pub(crate) fn log_bodies(&self) -> bool {
        self.draft.bodies.is_some()
    }

    pub(crate) fn log_attempt(
        &mut self,
        served: &Served<'_>,
        key: Option<&str>,
        status: Option<u16>,
        error: Option<&RelayError>,
        outcome: &str,
    ) {
        let log = &mut self.draft.attempt_log;
        log.push(AttemptRow {
            request_id: self.draft.request_id.clone(),
            n: u32::try_from(log.len() + 1).unwrap_or(u32::MAX),
            channel_id: served.channel.id.clone(),
            upstream_model: served.route.upstream_model.clone(),
            upstream_key: key.map(key_fingerprint),
            status,
            error_code: error.map(|e| e.code().to_string()),
            outcome: outcome.to_string(),
            at: now_ms(),
        });
    }

    /// Record the row `row` resolves to, after settling the reservation with its tokens: a
    /// failed request settles at zero, a broken or abandoned stream at what it produced.
    pub(crate) fn record(
        &self,
        rc: &RelayCtx<'_>,
        row: impl std::future::Future<Output = Option<UsageRow>> + 'static,
    ) {
        let held = self.held.clone();
        let env = rc.env.clone();
        record_later(rc.env, rc.ctx, async move {
            let row = row.await;
            if let Some(held) = held {
                let (tokens, cost) = row
                    .as_ref()
                    .map_or((0, 0), |r| (r.total_tokens, r.cost_micros));
                limiter::settle(&env, &held, Ask::request(tokens, cost)).await;
            }
            row
        });
    }

    /// The row of a request. `complete`: false for a stream that broke or whose client left.
    pub(crate) fn row(
        &self,
        status: u16,
        error: Option<&RelayError>,
        usage: Usage,
        source: usage::UsageSource,
        ttfb_ms: Option<i64>,
        complete: bool,
    ) -> UsageRow {
        let now = now_ms();
        let provenance = Provenance::of(source, complete);
        // What was not billed costs nothing, whatever its counts say.
        let cost_micros = match (&self.pricer, provenance.billed()) {
            (Some(p), true) => p.cost(&usage),
            _ => 0,
        };
        let mut row = self.draft.clone();
        row.status = status;
        row.error_code = error.map(|e| e.code().to_string());
        row.prompt_tokens = usage.prompt_tokens;
        row.completion_tokens = usage.completion_tokens;
        row.total_tokens = usage.total_tokens();
        row.cost_micros = cost_micros;
        row.provenance = provenance.as_str().to_string();
        row.cache_read_tokens = usage.cache_read_tokens;
        row.cache_write_tokens = usage.cache_write_tokens;
        row.reasoning_tokens = usage.reasoning_tokens;
        row.usage_source = source.as_str().to_string();
        row.latency_ms = (now - row.created_at).max(0);
        row.ttfb_ms = ttfb_ms;
        // Only a request that needed more than one attempt itemises them.
        if row.attempt_log.len() < 2 {
            row.attempt_log = Vec::new();
        }
        row
    }
}

/// Which API a relay request came in on.
#[derive(Clone, Copy)]
pub enum Inbound {
    OpenAi(Endpoint),
    AnthropicMessages,
}

impl Inbound {
    pub fn format(&self) -> ClientFormat {
        match self {
            Inbound::OpenAi(_) => ClientFormat::OpenAi,
            Inbound::AnthropicMessages => ClientFormat::Anthropic,
        }
    }

    fn endpoint_name(&self) -> &'static str {
        match self {
            Inbound::OpenAi(e) => e.name(),
            Inbound::AnthropicMessages => "messages",
        }
    }
}

/// An error response in the client's format.
pub fn client_error(format: ClientFormat, err: &RelayError) -> Response {
    let (status, body) = client::error_response(format, err);
    let response = json_response(status, body);
    for (name, value) in err.headers() {
        let _ = response.headers().set(name, &value);
    }
    response
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/messages`.
pub async fn relay(
    mut req: Request,
    inbound: Inbound,
    grant: &KeyGrant,
    rc: &RelayCtx<'_>,
) -> Response {
    let mut ledger = Ledger {
        draft: UsageRow {
            request_id: rc.request_id.to_string(),
            created_at: rc.started_ms,
            tenant_id: grant.tenant_id.clone(),
            key_id: grant.key_id.clone(),
            endpoint: inbound.endpoint_name().to_string(),
            inbound: Some(
                match inbound.format() {
                    ClientFormat::OpenAi => "openai",
                    ClientFormat::Anthropic => "anthropic",
                }
                .to_string(),
            ),
            bodies: grant.settings.log_bodies.then(Bodies::default),
            ..UsageRow::default()
        },
        held: None,
        pricer: None,
        rate: RateInfo::default(),
        notes: Vec::new(),
        cache_fill: None,
    };
    let caller = caller_of(&req);
    ledger.draft.colo = caller.colo.clone();
    match relay_inner(&mut req, inbound, grant, rc, &mut ledger, &caller).await {
        Ok(mut response) => {
            for (name, value) in limits::rate_headers(&ledger.rate) {
                let _ = response.headers_mut().set(name, &value);
            }
            for (name, value) in &ledger.notes {
                let _ = response.headers_mut().set(name, value);
            }
            rc.server_timing(&mut response);
            response
        }
        Err(err) => {
            if let RelayError::Internal { detail } = &err {
                worker::console_error!("request {}: {}", rc.request_id, detail);
            }
            let row = ledger.row(
                err.status(),
                Some(&err),
                Usage::default(),
                usage::UsageSource::None,
                None,
                true,
            );
            ledger.record(rc, async move { Some(row) });
            let mut response = client_error(inbound.format(), &err);
            rc.server_timing(&mut response);
            response
        }
    }
}

async fn relay_inner(
    req: &mut Request,
    inbound: Inbound,
    grant: &KeyGrant,
    rc: &RelayCtx<'_>,
    ledger: &mut Ledger,
    caller: &geo::Caller,
) -> Result<Response, RelayError> {
    let strict = truthy(header(req, "x-relay-strict"));
    let beta = header(req, "anthropic-beta");
    let body = read_body(req, rc.settings.max_body_bytes).await?;
    let client = match inbound {
        Inbound::OpenAi(endpoint) => ClientRequest::OpenAi(openai::parse_request(endpoint, &body)?),
        Inbound::AnthropicMessages => client::parse_anthropic(&body)?,
    };
    if let Some(bodies) = ledger.draft.bodies.as_mut() {
        bodies.request = Some(loggable(&body));
    }
    let cache_mode = response_cache::mode(
        header(req, "cache-control").as_deref(),
        grant.key_cache_ttl_s,
    );
    // Only a request that opted in pays for the canonical key.
    let cache_url = match cache_mode {
        CacheMode::Off => None,
        _ => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .map(|v| response_cache::cache_url(&grant.tenant_id, inbound.endpoint_name(), &v)),
    };
    drop(body);
    ledger.draft.model = Some(client.model().to_string());
    ledger.draft.stream = client.stream();

    // Everything the request needs to know, read at once (each from the isolate's cache unless
    // it is older than the config TTL).
    let r = rc.reader();
    let (map, groups, prices, group_ratios) = futures::try_join!(
        config::model_map(&r),
        config::model_groups(&r, grant),
        config::prices(&r),
        config::group_multipliers_for(&r, client.model()),
    )?;
    let mut target = model_map::resolve(&map, &groups, grant, client.model())?;
    let mut cands = candidates(rc, grant, target, client.model()).await?;
    // The tenant's price ratio, if it has one, applies to every cost it is charged; so does the
    // ratio of every model group that lists the model asked for.
    let mut multipliers: Vec<u64> = grant.settings.price_multiplier_ppm.into_iter().collect();
    multipliers.extend(group_ratios);
    let prompt_tokens = crate::formats::neutral::estimate_tokens(client.prompt_bytes());
    let max_output = client
        .max_tokens()
        .unwrap_or(limits::DEFAULT_OUTPUT_RESERVE);
    let ask = |pricer: &Pricer| {
        Ask::request(
            limits::worst_case_tokens(prompt_tokens, Some(max_output)),
            pricer.worst_case(prompt_tokens, max_output),
        )
    };
    // Hold the request's worst case at the key's (and tenant's) limiter before anything is
    // spent upstream; it is settled to what was used when the usage row is written.
    let mut pricer = Rc::new(Pricer::new(
        &prices,
        &target.upstream_model,
        multipliers.clone(),
    ));
    let reserve = |pricer: &Pricer, downgraded: bool| {
        limiter::reserve(
            rc.env,
            rc.ctx,
            &rc.timing,
            grant,
            rc.request_id,
            ask(pricer),
            downgraded,
        )
    };
    let admitted = match reserve(&pricer, false).await {
        // Over the hard budget, a tenant that chose to downgrade is served by its fallback.
        Err(err @ RelayError::BudgetExceeded { .. }) => {
            let fallback = grant
                .settings
                .budget
                .as_ref()
                .filter(|b| b.on_hard == OnHard::Downgrade)
                .and_then(|b| b.fallback_model.as_deref())
                .and_then(|m| map.get(m).map(|t| (m, t)));
            let Some((fallback, fallback_target)) = fallback else {
                return Err(err);
            };
            target = fallback_target;
            cands = candidates(rc, grant, target, fallback).await?;
            pricer = Rc::new(Pricer::new(
                &prices,
                &target.upstream_model,
                multipliers.clone(),
            ));
            ledger.notes.push((
                "x-relay-downgraded",
                format!("{} -> {fallback}", client.model()),
            ));
            reserve(&pricer, true).await?
        }
        other => other?,
    };
    ledger.held = Some(admitted.held);
    ledger.rate = admitted.rate;
    if let Some(warning) = admitted.budget_warning {
        ledger.notes.push(("x-relay-budget-warning", warning));
    }
    if let Some(url) = &cache_url {
        if let CacheMode::Use { .. } = cache_mode {
            let t0 = worker::js_sys::Date::now();
            let hit = cached(url).await;
            rc.timing
                .borrow_mut()
                .add(Wait::Cache, worker::js_sys::Date::now() - t0);
            if let Some(hit) = hit {
                let row = ledger.row(
                    200,
                    None,
                    Usage::default(),
                    usage::UsageSource::Cache,
                    Some(0),
                    true,
                );
                ledger.record(rc, async move { Some(row) });
                return Ok(hit);
            }
        }
        if let CacheMode::Use { ttl_s } | CacheMode::Refresh { ttl_s } = cache_mode {
            ledger.cache_fill = Some((url.clone(), ttl_s));
            ledger.notes.push((
                "x-relay-cache",
                if matches!(cache_mode, CacheMode::Refresh { .. }) {
                    "refresh"
                } else {
                    "miss"
                }
                .into(),
            ));
        }
    }
    let created_s = rc.started_ms / 1000;
    // The request id's random part names the reply too, in the client format's style.
    let random = &rc.request_id[rc.request_id.len().saturating_sub(24)..];
    let reply_id = reply_id(random, inbound.format());

    // Which candidates are worth trying, in what order: breakers and key cooldowns from this
    // isolate's copy of each channel's health, then priority, geography and weight.
    let now = now_ms();
    let gate_of = |i: usize| -> Gate {
        let (route, channel) = &cands[i];
        health::view(rc.env, rc.ctx, &channel.id, breaker_config(channel), |h| {
            let has_key = !channel.provider.needs_api_key()
                || key_index(channel, h, now_ms(), &mut draw_u32).is_some();
            if has_key {
                h.gate(&route.upstream_model, now)
            } else {
                Gate::Shut
            }
        })
    };
    let gates: Vec<Gate> = (0..cands.len()).map(gate_of).collect();
    let routing_cands: Vec<order::Candidate<'_>> = cands
        .iter()
        .map(|(route, channel)| order::Candidate {
            channel_id: &channel.id,
            priority: route.priority,
            weight: route.weight,
            region: channel.region.as_deref(),
        })
        .collect();
    let order = order::attempt_order(
        &routing_cands,
        caller,
        |i| gates.get(i).is_some_and(|g| *g != Gate::Shut),
        &mut draw_u32,
    );
    if order.is_empty() {
        return Err(RelayError::ChannelUnavailable {
            reason: "every channel for it is failing or out of upstream keys; retry shortly".into(),
        });
    }
    // `x-relay-retries: N` (0–4) asks for at most N retries of this request (0: fail fast).
    let mut budget = RetryBudget::default();
    if let Some(n) = header(req, "x-relay-retries").and_then(|v| v.trim().parse::<u32>().ok()) {
        budget.max_attempts = n.min(4) + 1;
    }
    let facts = cands
        .iter()
        .zip(&gates)
        .map(|((_, channel), gate)| CandidateFacts {
            channel: cands
                .iter()
                .position(|(_, c)| c.id == channel.id)
                .unwrap_or(0),
            mock: channel.provider == ProviderKind::Mock,
            gate: *gate,
        })
        .collect();
    let mut planner = Planner::new(order, facts, budget, target.hedge_ms, rc.started_ms);
    let served_at = |i: usize, attempts: u32| Served {
        route: &cands[i].0,
        channel: &cands[i].1,
        region: order::explain(&routing_cands[i], caller).header_value(),
        attempts,
    };
    // What a served route is priced at: the route asked for, or a fallback to another model.
    let pricer_for = |route: &Route| {
        if route.upstream_model == target.upstream_model {
            pricer.clone()
        } else {
            Rc::new(Pricer::new(
                &prices,
                &route.upstream_model,
                multipliers.clone(),
            ))
        }
    };
    loop {
        match planner.next(|i| {
            let (route, channel) = &cands[i];
            health::view(rc.env, rc.ctx, &channel.id, breaker_config(channel), |h| {
                h.gate(&route.upstream_model, now_ms())
            })
        }) {
            Step::AskProbe { candidate } => {
                let (route, channel) = &cands[candidate];
                let t0 = worker::js_sys::Date::now();
                let admitted = health::admit_probe(
                    rc.env,
                    &channel.id,
                    &route.upstream_model,
                    breaker_config(channel),
                )
                .await;
                rc.timing
                    .borrow_mut()
                    .add(Wait::Health, worker::js_sys::Date::now() - t0);
                planner.probe_answered(admitted);
            }
            Step::Mock { candidate } => {
                let served = served_at(candidate, planner.attempts());
                ledger.draft.upstream_model = Some(served.route.upstream_model.clone());
                ledger.draft.channel_id = Some(served.channel.id.clone());
                ledger.draft.attempts = planner.attempts();
                ledger.pricer = Some(pricer_for(served.route));
                return serve_mock(&client, &served, &reply_id, random, created_s, rc, ledger);
            }
            Step::Wait { ms } => Delay::from(Duration::from_millis(ms)).await,
            Step::GiveUp(err) => return Err(err),
            Step::Attempt {
                candidate,
                probe,
                hedge,
            } => {
                let served = served_at(candidate, planner.attempts());
                ledger.draft.upstream_model = Some(served.route.upstream_model.clone());
                ledger.draft.channel_id = Some(served.channel.id.clone());
                let controller = Abort::new();
                let t0 = worker::js_sys::Date::now();
                let (result, controller, served, hedged) = match hedge {
                    None => (
                        attempt(&client, &served, strict, beta.as_deref(), rc, &controller).await,
                        controller,
                        served,
                        None,
                    ),
                    Some(h) => {
                        let other = served_at(h.candidate, 2);
                        hedged_attempt(
                            &client,
                            served,
                            other,
                            h.after_ms,
                            controller,
                            strict,
                            beta.as_deref(),
                            rc,
                        )
                        .await
                    }
                };
                rc.timing
                    .borrow_mut()
                    .add(Wait::Upstream, worker::js_sys::Date::now() - t0);
                let (route, channel) = (served.route, served.channel);
                let was_hedged = hedged.is_some();
                if was_hedged {
                    planner.hedge_started();
                }
                match &hedged {
                    Some((loser, Some(failed))) => {
                        report_failure(
                            rc,
                            loser.channel,
                            &loser.route.upstream_model,
                            failed,
                            false,
                        );
                        ledger.log_attempt(
                            loser,
                            failed.key_used.as_deref(),
                            failed.status,
                            Some(&failed.err),
                            "failed",
                        );
                    }
                    Some((loser, None)) => ledger.log_attempt(loser, None, None, None, "cancelled"),
                    None => {}
                }
                ledger.draft.upstream_model = Some(route.upstream_model.clone());
                ledger.draft.channel_id = Some(channel.id.clone());
                ledger.draft.attempts = planner.attempts();
                ledger.draft.hedged |= was_hedged;
                match result {
                    Ok(sent) => {
                        ledger.draft.upstream_key = sent.key_used.as_deref().map(key_fingerprint);
                        ledger.log_attempt(
                            &served,
                            sent.key_used.as_deref(),
                            Some(sent.status),
                            None,
                            "served",
                        );
                        report_outcome(
                            rc,
                            channel,
                            &route.upstream_model,
                            Some(sent.status),
                            sent.key_used.as_deref(),
                            None,
                            probe,
                        );
                        ledger.pricer = Some(pricer_for(route));
                        if was_hedged {
                            ledger.notes.push(("x-relay-hedged", "true".into()));
                        }
                        let mut served = served;
                        served.attempts = planner.attempts();
                        return finish_upstream(
                            (sent, controller),
                            &client,
                            &served,
                            &reply_id,
                            created_s,
                            rc,
                            ledger,
                        )
                        .await;
                    }
                    Err(failed) => {
                        report_failure(rc, channel, &route.upstream_model, &failed, probe);
                        ledger.log_attempt(
                            &served,
                            failed.key_used.as_deref(),
                            failed.status,
                            Some(&failed.err),
                            "failed",
                        );
                        let failure = failure_of(rc, channel, failed);
                        planner.failed(failure, now_ms(), &mut draw_u32);
                    }
                }
            }
        }
    }
}

/// What the planner needs of a failed attempt: whether the channel's pool has another usable
/// key when the failure was this key's own (its 429 or rejected credential cooled or disabled
/// it just now).
fn failure_of(rc: &RelayCtx<'_>, channel: &Channel, failed: Failed) -> Failure {
    let key_trouble = matches!(failed.status, Some(401 | 403 | 429));
    let other_key_usable = key_trouble
        && channel.api_keys.len() > 1
        && health::view(rc.env, rc.ctx, &channel.id, breaker_config(channel), |h| {
            key_index(channel, h, now_ms(), &mut draw_u32).is_some()
        });
    Failure {
        err: failed.err,
        status: failed.status,
        retry_after_ms: failed.retry_after_ms,
        other_key_usable,
    }
}

/// The built-in mock answers inside the Worker.
fn serve_mock(
    client: &ClientRequest,
    served: &Served<'_>,
    reply_id: &str,
    random: &str,
    created_s: i64,
    rc: &RelayCtx<'_>,
    ledger: &Ledger,
) -> Result<Response, RelayError> {
    if !served.channel.provider.supports(client.endpoint()) {
        return Err(RelayError::UnsupportedEndpoint {
            endpoint: client.endpoint().name(),
            provider: "mock",
        });
    }
    let upstream_model = &served.route.upstream_model;
    let (reply, mode) = mock::answer(client, upstream_model, random, created_s)?;
    let mut out = match reply {
        MockReply::Chunks(chunks) => {
            let upstream = futures::stream::iter(chunks.into_iter().map(Ok)).boxed_local();
            let pipe = StreamPipe::new(
                mode,
                client.include_usage(),
                upstream_model,
                reply_id,
                created_s,
            );
            stream_response(upstream, pipe, client, None, rc, ledger.clone())
        }
        MockReply::Whole(bytes) => {
            let reply = translate::reply(mode, bytes, upstream_model, reply_id, created_s)?;
            finish_reply(reply, client, rc, ledger)
        }
    };
    served.headers(&mut out);
    Ok(out)
}

/// Relay what a 2xx upstream sends: a stream piped through, or a whole reply translated.
async fn finish_upstream(
    (mut sent, controller): (Sent, Abort),
    client: &ClientRequest,
    served: &Served<'_>,
    reply_id: &str,
    created_s: i64,
    rc: &RelayCtx<'_>,
    ledger: &Ledger,
) -> Result<Response, RelayError> {
    let upstream_model = &served.route.upstream_model;
    let mut out = if client.stream() {
        let upstream = sent
            .response
            .stream()
            .map_err(|_| RelayError::UpstreamStreamBroken)?
            .boxed_local();
        let pipe = StreamPipe::new(
            sent.plan.mode,
            client.include_usage(),
            upstream_model,
            reply_id,
            created_s,
        );
        stream_response(
            upstream,
            pipe,
            client,
            controller
                .into_controller()
                .map(|c| (c, sent.timeout_ms, sent.total_until_ms)),
            rc,
            ledger.clone(),
        )
    } else {
        let bytes = read_with_deadline(sent.response, &mut sent.deadline, sent.timeout_ms).await?;
        let reply = translate::reply(sent.plan.mode, bytes, upstream_model, reply_id, created_s)?;
        finish_reply(reply, client, rc, ledger)
    };
    for (name, value) in translate::fidelity_headers(&sent.plan.drops) {
        let _ = out.headers_mut().set(name, &value);
    }
    served.headers(&mut out);
    Ok(out)
}

/// The id of a generated reply: the request id's random part, in the client format's style.
fn reply_id(random: &str, format: ClientFormat) -> String {
    match format {
        ClientFormat::OpenAi => format!("chatcmpl-{random}"),
        ClientFormat::Anthropic => format!("msg_{random}"),
    }
}

/// `POST /v1/messages/count_tokens`: Anthropic channels are asked; for every other upstream
/// the relay estimates, since they have no counting endpoint.
pub async fn count_tokens(
    mut req: Request,
    grant: &KeyGrant,
    rc: &RelayCtx<'_>,
) -> Result<Response, RelayError> {
    let body = read_body(&mut req, rc.settings.max_body_bytes).await?;
    let client = client::parse_count_tokens(&body)?;
    let r = rc.reader();
    let (map, groups) = futures::try_join!(config::model_map(&r), config::model_groups(&r, grant))?;
    let target = model_map::resolve(&map, &groups, grant, client.model())?;
    let channel = config::channel(&r, &target.channel_id).await?;
    if let Some(channel) =
        channel.filter(|c| c.provider == ProviderKind::Anthropic && c.status == Status::Active)
    {
        // The same pick as a chat attempt: a key cooling down or disabled is not used.
        let key = health::view(rc.env, rc.ctx, &channel.id, breaker_config(&channel), |h| {
            key_index(&channel, h, now_ms(), &mut draw_u32)
        })
        .and_then(|i| channel.api_keys.get(i));
        if let Some(key) = key {
            let plan = endpoint::count_tokens_request(
                &channel.upstream(),
                key,
                &client,
                &target.upstream_model,
            );
            let timeout_ms = channel
                .timeout_ms
                .unwrap_or(rc.settings.upstream_timeout_ms);
            let mut deadline = deadline(timeout_ms);
            let controller = Abort::new();
            if let Ok(response) = send(&plan, &mut deadline, timeout_ms, &controller).await {
                if response.status_code() == 200 {
                    if let Ok(bytes) = read_with_deadline(response, &mut deadline, timeout_ms).await
                    {
                        return Ok(json_response(200, bytes));
                    }
                }
            }
        }
    }
    Ok(json_value(
        200,
        &json!({"input_tokens": client::estimate_prompt_tokens(&client)}),
    ))
}

fn finish_reply(
    reply: translate::Reply,
    client: &ClientRequest,
    rc: &RelayCtx<'_>,
    ledger: &Ledger,
) -> Response {
    let (usage, source) = usage::settle(
        reply.usage,
        client.prompt_bytes(),
        reply.completion_bytes,
        true,
    );
    let ttfb = Some((now_ms() - rc.started_ms).max(0));
    let mut row = ledger.row(200, None, usage, source, ttfb, true);
    if let Some(bodies) = row.bodies.as_mut() {
        bodies.response = Some(loggable(&reply.body));
    }
    ledger.record(rc, async move { Some(row) });
    if let Some((url, ttl_s)) = &ledger.cache_fill {
        store_later(rc, url, *ttl_s, "application/json", reply.body.clone());
    }
    json_response(200, reply.body)
}

/// A cached reply, marked as a hit. Rebuilt, because a response from the Cache API has
/// immutable headers.
async fn cached(url: &str) -> Option<Response> {
    let mut stored = Cache::default().get(url, true).await.ok()??;
    let content_type = stored.headers().get("content-type").ok().flatten();
    let body = stored.bytes().await.ok()?;
    let headers = Headers::new();
    let _ = headers.set(
        "content-type",
        content_type.as_deref().unwrap_or("application/json"),
    );
    let _ = headers.set("x-relay-cache", "hit");
    Some(Response::from_bytes(body).ok()?.with_headers(headers))
}

/// Put a reply in the response cache after the response is under way.
fn store_later(
    rc: &RelayCtx<'_>,
    url: &str,
    ttl_s: u32,
    content_type: &'static str,
    body: Vec<u8>,
) {
    if body.len() > response_cache::MAX_CACHED_BYTES {
        return;
    }
    let url = url.to_string();
    rc.ctx
        .wait_until(async move { put_cached(&url, ttl_s, content_type, body).await });
}

pub(crate) async fn put_cached(url: &str, ttl_s: u32, content_type: &str, body: Vec<u8>) {
    if body.len() > response_cache::MAX_CACHED_BYTES {
        return;
    }
    let headers = Headers::new();
    let _ = headers.set("content-type", content_type);
    let _ = headers.set("cache-control", &format!("max-age={ttl_s}"));
    let Ok(response) = Response::from_bytes(body) else {
        return;
    };
    if let Err(e) = Cache::default()
        .put(url, response.with_headers(headers))
        .await
    {
        worker::console_warn!("response cache put: {}", e);
    }
}

/// Where the caller is, from `request.cf`. Read field by field without trusting types:
/// workers-rs's accessors panic on a missing `colo` or an unparsable latitude.
fn caller_of(req: &Request) -> geo::Caller {
    let cf = Reflect::get(req.inner(), &JsValue::from_str("cf")).ok();
    let field = |name: &str| -> Option<String> {
        let cf = cf.as_ref().filter(|v| v.is_object())?;
        let v = Reflect::get(cf, &JsValue::from_str(name)).ok()?;
        v.as_string()
            .or_else(|| v.as_f64().map(|n| n.to_string()))
            .filter(|s| !s.is_empty())
    };
    let coordinate = |name: &str| field(name).and_then(|v| v.trim().parse::<f64>().ok());
    geo::Caller {
        country: field("country"),
        continent: field("continent"),
        colo: field("colo"),
        lat_lon: coordinate("latitude").zip(coordinate("longitude")),
    }
}
