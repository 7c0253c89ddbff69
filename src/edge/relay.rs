//! [edge] The relay path: authenticate the key, resolve the model to a channel, send the
//! request upstream (or to the built-in mock), pipe the reply back, and record usage after the
//! response is under way.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::stream::LocalBoxStream;
use futures::{FutureExt, Stream, StreamExt};
use serde_json::json;
use worker::js_sys::Reflect;
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{
    AbortController, AbortSignal, Cache, Context, Delay, Env, Fetch, Headers, Method, Request,
    RequestInit, Response,
};

use super::gcp_auth;
use super::http::{error_response, header, json_response, json_value, read_body};
use super::objects::health::{self, Outcome};
use super::objects::limiter;
use super::state::{now_ms, random_bytes, with_caches, Caches, Settings};
use super::store::usage_log::record_later;
use super::store::Store;
use crate::error::RelayError;
use crate::formats::client::{self, ClientFormat, ClientRequest};
use crate::formats::neutral::Usage;
use crate::formats::openai::{self, Endpoint};
use crate::formats::translate::{self, StreamPipe};
use crate::governance::access;
use crate::governance::access::{ModelGroups, GROUP_PREFIX};
use crate::governance::auth;
use crate::governance::budget::OnHard;
use crate::governance::grant::{KeyGrant, Status};
use crate::governance::limits::{self, Ask, RateInfo};
use crate::ledger::pricing::{PriceTable, Pricer};
use crate::ledger::response_cache::{self, CacheMode};
use crate::ledger::row::{loggable, AttemptRow, Bodies, UsageRow};
use crate::ledger::usage::{self, Provenance};
use crate::providers::endpoint;
use crate::providers::mock::{self, MockReply};
use crate::providers::{self, ProviderKind, UpstreamRequest};
use crate::routing::breaker::BreakerConfig;
use crate::routing::channel::{key_fingerprint, Channel};
use crate::routing::health::{ChannelHealth, Gate};
use crate::routing::model_map::{self, ModelMap, ModelTarget, Route};
use crate::routing::retry::RetryBudget;
use crate::routing::{geo, order, retry};
use crate::support::ttl_cache::TtlCache;

/// What every handler on the relay path shares.
pub struct RelayCtx<'a> {
    pub env: &'a Env,
    pub ctx: &'a Context,
    pub settings: &'a Settings,
    pub store: &'a Store,
    pub request_id: &'a str,
    pub started_ms: i64,
}

pub async fn authenticate(req: &Request, rc: &RelayCtx<'_>) -> Result<KeyGrant, RelayError> {
    let credential = auth::credential_from_headers(
        header(req, "authorization").as_deref(),
        header(req, "x-api-key").as_deref(),
    )
    .ok_or(RelayError::MissingApiKey)?;
    let hash = auth::hash_key(&credential);
    let ttl = rc.settings.cache_ttl_ms;
    let now = now_ms();
    let grant = match with_caches(ttl, |c| c.grants.get(&hash, now)) {
        Some(grant) => grant,
        None => {
            let grant = rc
                .store
                .key_grant(&hash)
                .await?
                .ok_or(RelayError::InvalidApiKey)?;
            with_caches(ttl, |c| c.grants.insert(hash, grant.clone(), now));
            grant
        }
    };
    auth::check_key(&grant, now)?;
    let ip = header(req, "cf-connecting-ip");
    let country = req.cf().and_then(|cf| cf.country());
    access::check_rules(&grant, ip.as_deref(), country.as_deref(), now)?;
    Ok(grant)
}

/// One per-isolate document (model map, groups, prices…): from its cache slot while fresh,
/// else loaded and cached for `CONFIG_CACHE_TTL_MS`.
async fn cached_doc<T, Fut>(
    rc: &RelayCtx<'_>,
    slot: fn(&mut Caches) -> &mut TtlCache<(), Rc<T>>,
    load: impl FnOnce() -> Fut,
) -> Result<Rc<T>, RelayError>
where
    Fut: std::future::Future<Output = Result<T, RelayError>>,
{
    let ttl = rc.settings.cache_ttl_ms;
    let now = now_ms();
    if let Some(value) = with_caches(ttl, |c| slot(c).get(&(), now)) {
        return Ok(value);
    }
    let value = Rc::new(load().await?);
    with_caches(ttl, |c| slot(c).insert((), value.clone(), now));
    Ok(value)
}

async fn model_map(rc: &RelayCtx<'_>) -> Result<Rc<ModelMap>, RelayError> {
    cached_doc(rc, |c| &mut c.model_map, || rc.store.model_map()).await
}

async fn all_model_groups(rc: &RelayCtx<'_>) -> Result<Rc<ModelGroups>, RelayError> {
    cached_doc(rc, |c| &mut c.model_groups, || rc.store.model_groups()).await
}

/// The model groups, fetched only when an allowlist of this key names one.
async fn model_groups(rc: &RelayCtx<'_>, grant: &KeyGrant) -> Result<Rc<ModelGroups>, RelayError> {
    let names_a_group = [&grant.key_models, &grant.tenant_models]
        .iter()
        .any(|l| l.iter().flatten().any(|m| m.starts_with(GROUP_PREFIX)));
    if !names_a_group {
        return Ok(Rc::new(ModelGroups::new()));
    }
    all_model_groups(rc).await
}

async fn channel(rc: &RelayCtx<'_>, id: &str) -> Result<Option<Rc<Channel>>, RelayError> {
    let ttl = rc.settings.cache_ttl_ms;
    let now = now_ms();
    if let Some(channel) = with_caches(ttl, |c| c.channels.get(&id.to_string(), now)) {
        return Ok(Some(channel));
    }
    let Some(channel) = rc.store.channel(id).await? else {
        return Ok(None);
    };
    let channel = Rc::new(channel);
    with_caches(ttl, |c| {
        c.channels.insert(id.to_string(), channel.clone(), now)
    });
    Ok(Some(channel))
}

/// The price ratios of the model groups that list `model`.
async fn group_multipliers_for(rc: &RelayCtx<'_>, model: &str) -> Result<Vec<u64>, RelayError> {
    let ratios = cached_doc(
        rc,
        |c| &mut c.group_multipliers,
        || rc.store.group_multipliers(),
    )
    .await?;
    if ratios.is_empty() {
        return Ok(Vec::new());
    }
    let groups = all_model_groups(rc).await?;
    Ok(ratios
        .iter()
        .filter(|(group, _)| {
            groups
                .get(*group)
                .is_some_and(|m| m.iter().any(|m| m == model))
        })
        .map(|(_, ppm)| *ppm)
        .collect())
}

/// The price overrides.
async fn prices(rc: &RelayCtx<'_>) -> Result<Rc<PriceTable>, RelayError> {
    cached_doc(rc, |c| &mut c.prices, || rc.store.custom_prices()).await
}

/// The routes of a target that may serve this tenant now, with their channels: the channel
/// exists, is enabled, and lies in the tenant's jurisdiction when the tenant is pinned to one.
async fn candidates(
    rc: &RelayCtx<'_>,
    grant: &KeyGrant,
    target: &ModelTarget,
    model: &str,
) -> Result<Vec<(Route, Rc<Channel>)>, RelayError> {
    let mut out = Vec::new();
    let mut outside_jurisdiction = false;
    for route in target.all_routes() {
        let Some(channel) = channel(rc, &route.channel_id).await? else {
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

/// `GET /v1/models` and `GET /v1/models/{model}`: only what this key may use.
pub async fn models(
    rc: &RelayCtx<'_>,
    grant: &KeyGrant,
    one: Option<&str>,
) -> Result<Response, RelayError> {
    let map = model_map(rc).await?;
    let entry = |id: &str, created: i64| json!({"id": id, "object": "model", "created": created, "owned_by": "edgerelay"});
    match one {
        Some(model) => {
            let target = model_map::resolve(&map, &*model_groups(rc, grant).await?, grant, model)?;
            Ok(json_value(200, &entry(model, target.created)))
        }
        None => {
            let data: Vec<_> =
                model_map::visible_models(&map, &*model_groups(rc, grant).await?, grant)
                    .into_iter()
                    .map(|(id, t)| entry(id, t.created))
                    .collect();
            Ok(json_value(200, &json!({"object": "list", "data": data})))
        }
    }
}

/// What is known about a request for its usage row, filled in as the request progresses.
#[derive(Clone)]
struct Ledger {
    /// The row as far as it is known before the outcome: who asked for what, where it went, each
    /// attempt, and the logged request when the tenant opted in to body logging (`bodies` is
    /// `Some` from the start then). `row` completes a copy.
    draft: UsageRow,
    /// The reservation at the key's (and tenant's) limiter, settled with the row.
    held: Option<limiter::Held>,
    /// Prices the usage for the settlement and the row.
    pricer: Option<Rc<Pricer>>,
    /// What the limiter said, for the `x-ratelimit-*` headers.
    rate: RateInfo,
    /// More response headers decided on the way (budget warning, downgrade).
    notes: Vec<(&'static str, String)>,
    /// Store a successful reply in the response cache under this URL for this many seconds.
    cache_fill: Option<(String, u32)>,
}

impl Ledger {
    fn log_bodies(&self) -> bool {
        self.draft.bodies.is_some()
    }

    fn log_attempt(
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
    fn record(
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
    fn row(
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
            client_error(inbound.format(), &err)
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

    let map = model_map(rc).await?;
    let mut target = model_map::resolve(
        &map,
        &*model_groups(rc, grant).await?,
        grant,
        client.model(),
    )?;
    let mut cands = candidates(rc, grant, target, client.model()).await?;
    let prices = prices(rc).await?;
    // The tenant's price ratio, if it has one, applies to every cost it is charged; so does the
    // ratio of every model group that lists the model asked for.
    let mut multipliers: Vec<u64> = grant.settings.price_multiplier_ppm.into_iter().collect();
    multipliers.extend(group_multipliers_for(rc, client.model()).await?);
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
    let pricer = Pricer::new(&prices, &target.upstream_model, multipliers.clone());
    let admitted =
        match limiter::reserve(rc.env, rc.ctx, grant, rc.request_id, ask(&pricer), false).await {
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
                let pricer = Pricer::new(&prices, &target.upstream_model, multipliers.clone());
                ledger.notes.push((
                    "x-relay-downgraded",
                    format!("{} -> {fallback}", client.model()),
                ));
                limiter::reserve(rc.env, rc.ctx, grant, rc.request_id, ask(&pricer), true).await?
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
            if let Some(hit) = cached(url).await {
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
    let healths: Vec<ChannelHealth> = cands
        .iter()
        .map(|(_, c)| health::snapshot(rc.env, rc.ctx, &c.id, breaker_config(c)))
        .collect();
    let gates: Vec<Gate> = cands
        .iter()
        .zip(&healths)
        .map(|((route, channel), h)| {
            let has_key = !channel.provider.needs_api_key()
                || key_index(channel, h, now, &mut draw_u32).is_some();
            if has_key {
                health::gate(h, &route.upstream_model)
            } else {
                Gate::Shut
            }
        })
        .collect();
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
    let mut attempts = 0u32;
    let mut last_err: Option<RelayError> = None;
    let mut at = 0usize;
    while let Some(&idx) = order.get(at) {
        let (route, channel) = &cands[idx];
        let config = breaker_config(channel);
        let probe = match health::gate(
            &health::snapshot(rc.env, rc.ctx, &channel.id, config),
            &route.upstream_model,
        ) {
            Gate::Open => false,
            Gate::NeedsProbe => {
                if !health::admit_probe(rc.env, &channel.id, &route.upstream_model, config).await {
                    at += 1;
                    continue;
                }
                true
            }
            Gate::Shut => {
                at += 1;
                continue;
            }
        };
        attempts += 1;
        ledger.draft.upstream_model = Some(route.upstream_model.clone());
        ledger.draft.channel_id = Some(channel.id.clone());
        let placement = order::explain(&routing_cands[idx], caller);
        let served = Served {
            route,
            channel,
            region: placement.header_value(),
            attempts,
        };
        if channel.provider == ProviderKind::Mock {
            ledger.pricer = Some(Rc::new(Pricer::new(
                &prices,
                &route.upstream_model,
                multipliers.clone(),
            )));
            return serve_mock(&client, &served, &reply_id, random, created_s, rc, ledger);
        }
        // Hedging (opt-in per model): if the first attempt has no response headers within
        // `hedge_ms`, the next route on another channel starts too; the first to answer 2xx
        // wins and the other is aborted.
        let hedge = target
            .hedge_ms
            .filter(|_| attempts == 1 && !probe)
            .and_then(|ms| order.get(at + 1).map(|&j| (ms, j)))
            .filter(|&(_, j)| {
                let (r, c) = &cands[j];
                c.id != channel.id
                    && c.provider != ProviderKind::Mock
                    && gates.get(j) == Some(&Gate::Open)
                    && health::gate(
                        &health::snapshot(rc.env, rc.ctx, &c.id, breaker_config(c)),
                        &r.upstream_model,
                    ) == Gate::Open
            });
        let controller = Abort::new();
        let (result, controller, served, hedged) = match hedge {
            None => (
                attempt(&client, &served, strict, beta.as_deref(), rc, &controller).await,
                controller,
                served,
                None,
            ),
            Some((hedge_ms, j)) => {
                let other = Served {
                    route: &cands[j].0,
                    channel: &cands[j].1,
                    region: order::explain(&routing_cands[j], caller).header_value(),
                    attempts: 2,
                };
                hedged_attempt(
                    &client,
                    served,
                    other,
                    hedge_ms,
                    controller,
                    strict,
                    beta.as_deref(),
                    rc,
                )
                .await
            }
        };
        let (route, channel) = (served.route, served.channel);
        let was_hedged = hedged.is_some();
        if was_hedged {
            // The hedge counts as an attempt, and a failed loser is reported like any other.
            attempts += 1;
            at += 1;
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
        ledger.draft.attempts = attempts;
        ledger.draft.hedged |= was_hedged;
        let config = breaker_config(channel);
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
                ledger.pricer = Some(Rc::new(Pricer::new(
                    &prices,
                    &route.upstream_model,
                    multipliers.clone(),
                )));
                if was_hedged {
                    ledger.notes.push(("x-relay-hedged", "true".into()));
                }
                let mut served = served;
                served.attempts = attempts;
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
                let same_channel_next = at + 1 >= order.len();
                // Another key of this channel's pool, when the failure was this key's own
                // (its 429 or rejected credential cooled or disabled it just now).
                let key_trouble = matches!(failed.status, Some(401 | 403 | 429));
                let other_key = key_trouble && channel.api_keys.len() > 1 && {
                    let h = health::snapshot(rc.env, rc.ctx, &channel.id, config);
                    key_index(channel, &h, now_ms(), &mut draw_u32).is_some()
                };
                // The caller's own mistake fails the same everywhere: never retried. A rejected
                // credential is worth another key or channel, not the same key again.
                let auth = matches!(failed.status, Some(401 | 403));
                let worth_retrying = if auth {
                    !same_channel_next || other_key
                } else {
                    retry::retryable(failed.status)
                };
                if !worth_retrying || attempts >= budget.max_attempts {
                    return Err(failed.err);
                }
                let delay = if other_key || !same_channel_next {
                    // Another key or channel: go at once, within the budget's time.
                    budget.delay_before(
                        false,
                        attempts,
                        None,
                        rc.started_ms,
                        now_ms(),
                        &mut draw_u32,
                    )
                } else if failed
                    .retry_after_ms
                    .is_some_and(|ra| ra > budget.max_backoff_ms)
                {
                    // An upstream asking for a long pause gets it: the client hears its
                    // Retry-After rather than wait on a held connection.
                    return Err(failed.err);
                } else {
                    budget.delay_before(
                        true,
                        attempts,
                        failed.retry_after_ms,
                        rc.started_ms,
                        now_ms(),
                        &mut draw_u32,
                    )
                };
                last_err = Some(failed.err);
                let Some(delay) = delay else { break };
                if !same_channel_next && !other_key {
                    at += 1;
                } else if delay > 0 {
                    Delay::from(Duration::from_millis(delay)).await;
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| RelayError::ChannelUnavailable {
        reason: "every channel for it is failing; retry shortly".into(),
    }))
}

/// An upstream abort handle that can be fired through a shared reference (workers-rs's
/// controller consumes itself), so a hedge that lost can be cut short while borrowed.
struct Abort {
    controller: RefCell<Option<AbortController>>,
    signal: AbortSignal,
}

impl Abort {
    fn new() -> Abort {
        let controller = AbortController::default();
        let signal = controller.signal();
        Abort {
            controller: RefCell::new(Some(controller)),
            signal,
        }
    }

    fn abort(&self) {
        if let Some(c) = self.controller.borrow_mut().take() {
            c.abort();
        }
    }

    fn into_controller(self) -> Option<AbortController> {
        self.controller.into_inner()
    }
}

/// Tell a channel's health what a failed attempt came to.
fn report_failure(rc: &RelayCtx<'_>, channel: &Channel, model: &str, failed: &Failed, probe: bool) {
    report_outcome(
        rc,
        channel,
        model,
        failed.status,
        failed.key_used.as_deref(),
        failed.retry_after_ms,
        probe,
    );
}

/// Tell a channel's health what an attempt came to. Only a pool's keys are reported: a
/// channel's only key is never cooled or disabled.
fn report_outcome(
    rc: &RelayCtx<'_>,
    channel: &Channel,
    model: &str,
    status: Option<u16>,
    key_used: Option<&str>,
    retry_after_ms: Option<u64>,
    probe: bool,
) {
    health::record(
        rc.env,
        rc.ctx,
        &channel.id,
        breaker_config(channel),
        Outcome {
            model,
            status,
            key: key_used
                .filter(|_| channel.api_keys.len() > 1)
                .map(|k| (k, retry_after_ms)),
            probe,
        },
    );
}

/// What a hedged attempt came to: the result that counts, its controller and candidate, and —
/// when the hedge was started — the loser, if it failed (a loser cut short is not a failure).
type Hedged<'a> = (
    Result<Sent, Failed>,
    Abort,
    Served<'a>,
    Option<(Served<'a>, Option<Failed>)>,
);

/// The first attempt, and after `hedge_ms` without response headers the same request on
/// `other` as well: the first 2xx wins and the other is aborted; if one fails, the other's
/// outcome counts.
#[allow(clippy::too_many_arguments)]
async fn hedged_attempt<'a>(
    client: &ClientRequest,
    first: Served<'a>,
    other: Served<'a>,
    hedge_ms: u64,
    first_controller: Abort,
    strict: bool,
    beta: Option<&str>,
    rc: &RelayCtx<'_>,
) -> Hedged<'a> {
    enum Race {
        Alone(Result<Sent, Failed>),
        FirstWon(Sent),
        OtherWon(Sent),
        FirstFailed(Failed, Result<Sent, Failed>),
        OtherFailed(Failed, Result<Sent, Failed>),
    }
    let other_controller = Abort::new();
    // The attempts borrow their candidates and controllers: decide the race in here, so both
    // are dropped before the loser is aborted and the winner handed on.
    let race = {
        let a = Box::pin(attempt(client, &first, strict, beta, rc, &first_controller));
        let delay = Box::pin(Delay::from(Duration::from_millis(hedge_ms)));
        match select(a, delay).await {
            Either::Left((result, _)) => Race::Alone(result),
            Either::Right((_, a)) => {
                let b = Box::pin(attempt(client, &other, strict, beta, rc, &other_controller));
                match select(a, b).await {
                    Either::Left((Ok(sent), _b)) => Race::FirstWon(sent),
                    Either::Right((Ok(sent), _a)) => Race::OtherWon(sent),
                    Either::Left((Err(failed), b)) => Race::FirstFailed(failed, b.await),
                    Either::Right((Err(failed), a)) => Race::OtherFailed(failed, a.await),
                }
            }
        }
    };
    match race {
        Race::Alone(result) => (result, first_controller, first, None),
        Race::FirstWon(sent) => {
            other_controller.abort();
            (Ok(sent), first_controller, first, Some((other, None)))
        }
        Race::OtherWon(sent) => {
            first_controller.abort();
            (Ok(sent), other_controller, other, Some((first, None)))
        }
        Race::FirstFailed(failed, result) => {
            (result, other_controller, other, Some((first, Some(failed))))
        }
        Race::OtherFailed(failed, result) => {
            (result, first_controller, first, Some((other, Some(failed))))
        }
    }
}

/// The candidate an attempt goes to, and how it was chosen (for the response headers).
struct Served<'a> {
    route: &'a Route,
    channel: &'a Rc<Channel>,
    region: String,
    attempts: u32,
}

impl Served<'_> {
    fn headers(&self, response: &mut Response) {
        let h = response.headers_mut();
        let _ = h.set("x-relay-channel", &self.channel.id);
        let _ = h.set("x-relay-region", &self.region);
        let _ = h.set("x-relay-attempts", &self.attempts.to_string());
    }
}

/// An upstream that answered 2xx, before anything is read from its body.
struct Sent {
    response: Response,
    /// When the channel's total time limit ends the exchange, if it has one.
    total_until_ms: Option<i64>,
    deadline: Deadline,
    timeout_ms: u64,
    plan: endpoint::Plan,
    status: u16,
    key_used: Option<String>,
}

/// An attempt that failed before the client saw anything.
struct Failed {
    err: RelayError,
    /// The upstream's status; `None` when it never answered.
    status: Option<u16>,
    retry_after_ms: Option<u64>,
    key_used: Option<String>,
}

fn draw_u32() -> u32 {
    u32::from_le_bytes(random_bytes::<4>())
}

fn breaker_config(channel: &Channel) -> BreakerConfig {
    channel.breaker.unwrap_or_default()
}

/// A usable upstream key of the channel (not cooling, not disabled), by its index. A
/// channel's only key is always used: cooling or disabling it would take the channel down,
/// and the upstream's own answer says more than the relay's guess.
fn key_index(
    channel: &Channel,
    health: &ChannelHealth,
    now: i64,
    draw: &mut impl FnMut() -> u32,
) -> Option<usize> {
    if channel.api_keys.len() <= 1 {
        return (!channel.api_keys.is_empty()).then_some(0);
    }
    let fps: Vec<String> = channel
        .api_keys
        .iter()
        .map(|k| key_fingerprint(k))
        .collect();
    let fps: Vec<&str> = fps.iter().map(String::as_str).collect();
    health.keys.pick(&fps, now, draw)
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

/// One attempt at one channel: plan, send, and judge the response headers.
async fn attempt(
    client: &ClientRequest,
    served: &Served<'_>,
    strict: bool,
    beta: Option<&str>,
    rc: &RelayCtx<'_>,
    controller: &Abort,
) -> Result<Sent, Failed> {
    let channel = served.channel;
    let fail = |err: RelayError| Failed {
        err,
        status: None,
        retry_after_ms: None,
        key_used: None,
    };
    let now = now_ms();
    let health = health::snapshot(rc.env, rc.ctx, &channel.id, breaker_config(channel));
    let api_key =
        key_index(channel, &health, now, &mut draw_u32).and_then(|i| channel.api_keys.get(i));
    if api_key.is_none() && channel.provider.needs_api_key() {
        return Err(fail(RelayError::ChannelUnavailable {
            reason: "its channel has no usable upstream key".into(),
        }));
    }
    // Vertex channels hold service-account files: what goes upstream is an access token.
    let access_token = match (channel.provider.uses_service_accounts(), api_key) {
        (true, Some(key_file)) => Some(gcp_auth::access_token(key_file).await.map_err(fail)?),
        _ => None,
    };
    let key_used = api_key.cloned();
    let credential = access_token.as_deref().or(api_key.map(String::as_str));
    let plan = endpoint::plan(
        &channel.upstream(),
        credential,
        client,
        &served.route.upstream_model,
        beta,
        now_ms(),
    )
    .map_err(fail)?;
    if strict {
        endpoint::check_strict(&plan.drops, channel.provider).map_err(fail)?;
    }
    let timeout_ms = channel
        .timeout_ms
        .unwrap_or(rc.settings.upstream_timeout_ms);
    // The channel's total limit also bounds the wait for headers (and a whole non-stream reply).
    let first_ms = channel
        .total_timeout_ms
        .map_or(timeout_ms, |t| t.min(timeout_ms));
    let total_until_ms = channel.total_timeout_ms.map(|t| now_ms() + t as i64);
    let mut deadline = deadline(first_ms);
    let mut response = match send(&plan.request, &mut deadline, first_ms, controller).await {
        Ok(sent) => sent,
        Err(err) => {
            worker::console_warn!("request {} channel {}: {}", rc.request_id, channel.id, err);
            return Err(Failed {
                err,
                status: None,
                retry_after_ms: None,
                key_used,
            });
        }
    };
    let status = response.status_code();
    if (200..300).contains(&status) {
        return Ok(Sent {
            response,
            total_until_ms,
            deadline,
            timeout_ms,
            plan,
            status,
            key_used,
        });
    }
    let retry_after = response.headers().get("retry-after").ok().flatten();
    let body = read_with_deadline(&mut response, &mut deadline, timeout_ms)
        .await
        .unwrap_or_default();
    if channel.provider.uses_service_accounts() && matches!(status, 401 | 403) {
        if let Some(key_file) = api_key {
            gcp_auth::forget(key_file);
        }
    }
    let (err, detail) = {
        // AWS keys are "id:secret:token"; its errors may echo a part, never the whole.
        let mut secrets = channel.api_keys.clone();
        if channel.provider == ProviderKind::Bedrock {
            secrets.extend(
                channel
                    .api_keys
                    .iter()
                    .flat_map(|k| k.split(':').map(str::to_string)),
            );
        }
        secrets.extend(access_token.clone());
        providers::upstream_failure(status, &body, retry_after.clone(), &secrets)
    };
    worker::console_warn!(
        "request {} channel {}: {}",
        rc.request_id,
        channel.id,
        detail
    );
    Err(Failed {
        err,
        status: Some(status),
        retry_after_ms: retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s.saturating_mul(1000)),
        key_used,
    })
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
        let bytes =
            read_with_deadline(&mut sent.response, &mut sent.deadline, sent.timeout_ms).await?;
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
    let map = model_map(rc).await?;
    let target = model_map::resolve(
        &map,
        &*model_groups(rc, grant).await?,
        grant,
        client.model(),
    )?;
    let channel = channel(rc, &target.channel_id).await?;
    if let Some(channel) =
        channel.filter(|c| c.provider == ProviderKind::Anthropic && c.status == Status::Active)
    {
        // The same pick as a chat attempt: a key cooling down or disabled is not used.
        let health = health::snapshot(rc.env, rc.ctx, &channel.id, breaker_config(&channel));
        let key = key_index(&channel, &health, now_ms(), &mut draw_u32)
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
            if let Ok(mut response) = send(&plan, &mut deadline, timeout_ms, &controller).await {
                if response.status_code() == 200 {
                    if let Ok(bytes) =
                        read_with_deadline(&mut response, &mut deadline, timeout_ms).await
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

/// A timer for a stream body. workers-rs's `Delay` keeps the waker of its first poll only, but
/// a response stream is polled by a new task for every read the runtime makes: the first
/// task is gone by the time the timer fires, and nothing would wake the stream. This one wakes
/// whichever task polled it last.
struct StreamTimer {
    state: Rc<TimerState>,
    timeout_id: i32,
    _callback: Closure<dyn FnMut()>,
}

#[derive(Default)]
struct TimerState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl StreamTimer {
    fn new(ms: u64) -> StreamTimer {
        let state = Rc::new(TimerState::default());
        let for_callback = state.clone();
        let callback = Closure::wrap(Box::new(move || {
            for_callback.fired.set(true);
            if let Some(waker) = for_callback.waker.borrow_mut().take() {
                waker.wake();
            }
        }) as Box<dyn FnMut()>);
        let global: worker::web_sys::WorkerGlobalScope = worker::js_sys::global().unchecked_into();
        let timeout_id = global
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                i32::try_from(ms).unwrap_or(i32::MAX),
            )
            .unwrap_or(0);
        StreamTimer {
            state,
            timeout_id,
            _callback: callback,
        }
    }
}

impl std::future::Future for StreamTimer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.state.fired.get() {
            return Poll::Ready(());
        }
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for StreamTimer {
    fn drop(&mut self) {
        let global: worker::web_sys::WorkerGlobalScope = worker::js_sys::global().unchecked_into();
        global.clear_timeout_with_handle(self.timeout_id);
    }
}

/// One timer for a whole upstream exchange: response headers and (non-stream) body must both
/// arrive before it fires. A timer is a JS callback; one per request, not one per stage.
type Deadline = Pin<Box<Delay>>;

fn deadline(timeout_ms: u64) -> Deadline {
    Box::pin(Delay::from(Duration::from_millis(timeout_ms)))
}

/// Fetch before the deadline. The caller keeps the controller, to abort the upstream later (an
/// idle stream, a hedge that lost).
async fn send(
    plan: &UpstreamRequest,
    deadline: &mut Deadline,
    timeout_ms: u64,
    controller: &Abort,
) -> Result<Response, RelayError> {
    let headers = Headers::new();
    for (name, value) in &plan.headers {
        headers.set(name, value).map_err(|_| RelayError::Internal {
            detail: format!("bad upstream header {name}"),
        })?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(
            worker::js_sys::Uint8Array::from(plan.body.as_slice()).into(),
        ));
    let request = Request::new_with_init(&plan.url, &init).map_err(|e| RelayError::Internal {
        detail: format!("upstream request: {e}"),
    })?;
    let signal = controller.signal.clone();
    let fetch = Box::pin(async move { Fetch::Request(request).send_with_signal(&signal).await });
    match select(fetch, deadline).await {
        Either::Left((Ok(response), _)) => Ok(response),
        Either::Left((Err(e), _)) => {
            worker::console_warn!("upstream fetch failed: {}", e);
            Err(RelayError::UpstreamUnreachable)
        }
        Either::Right(_) => {
            controller.abort();
            Err(RelayError::UpstreamTimeout {
                after_ms: timeout_ms,
            })
        }
    }
}

async fn read_with_deadline(
    response: &mut Response,
    deadline: &mut Deadline,
    timeout_ms: u64,
) -> Result<Vec<u8>, RelayError> {
    let read = Box::pin(response.bytes());
    match select(read, deadline).await {
        Either::Left((Ok(bytes), _)) => Ok(bytes),
        Either::Left((Err(_), _)) => Err(RelayError::UpstreamStreamBroken),
        Either::Right(_) => Err(RelayError::UpstreamTimeout {
            after_ms: timeout_ms,
        }),
    }
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

async fn put_cached(url: &str, ttl_s: u32, content_type: &str, body: Vec<u8>) {
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

/// How a relayed stream ended, reported once to the usage writer.
struct StreamReport {
    usage: Option<Usage>,
    completion_bytes: usize,
    produced: bool,
    first_byte_ms: Option<i64>,
    broken: bool,
    /// What the client received (up to the cache's size limit), when it is to be cached or
    /// logged; the cache takes it only from a stream that completed.
    captured: Option<Vec<u8>>,
    /// The stream ended as the upstream finished it (not broken, not abandoned).
    completed: bool,
}

fn stream_response(
    upstream: LocalBoxStream<'static, Result<Vec<u8>, worker::Error>>,
    pipe: StreamPipe,
    client: &ClientRequest,
    abort: Option<(AbortController, u64, Option<i64>)>,
    rc: &RelayCtx<'_>,
    ledger: Ledger,
) -> Response {
    let (report_tx, report_rx) = oneshot::channel::<StreamReport>();
    let idle_ms = abort.as_ref().map(|(_, ms, _)| *ms);
    let total_until_ms = abort.as_ref().and_then(|(_, _, t)| *t);
    let first_wait = idle_ms
        .map(|ms| total_until_ms.map_or(ms, |t| ms.min(u64::try_from(t - now_ms()).unwrap_or(0))));
    let relayed = Relayed {
        upstream,
        pass: pipe,
        report: Some(report_tx),
        first_byte_ms: None,
        ended: false,
        broken: false,
        idle_ms,
        idle: first_wait.map(|ms| Box::pin(StreamTimer::new(ms))),
        total_until_ms,
        last_data_ms: now_ms(),
        abort: abort.map(|(c, _, _)| c),
        capture: (ledger.cache_fill.is_some() || ledger.log_bodies()).then(Vec::new),
    };
    let prompt_bytes = client.prompt_bytes();
    ledger.clone().record(rc, async move {
        let report = report_rx.await.ok()?;
        let logged = report
            .captured
            .as_deref()
            .filter(|_| ledger.log_bodies())
            .map(loggable);
        if let (Some((url, ttl_s)), Some(body), true) =
            (&ledger.cache_fill, report.captured, report.completed)
        {
            put_cached(url, *ttl_s, "text/event-stream; charset=utf-8", body).await;
        }
        let (usage, source) = usage::settle(
            report.usage,
            prompt_bytes,
            report.completion_bytes,
            report.produced,
        );
        let ttfb = report
            .first_byte_ms
            .map(|t| (t - ledger.draft.created_at).max(0));
        let (status, err) = if report.broken {
            (502, Some(RelayError::UpstreamStreamBroken))
        } else {
            (200, None)
        };
        let mut row = ledger.row(status, err.as_ref(), usage, source, ttfb, report.completed);
        if let Some(bodies) = row.bodies.as_mut() {
            bodies.response = logged;
        }
        Some(row)
    });
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    match Response::from_stream(relayed) {
        Ok(r) => r.with_headers(headers),
        Err(e) => error_response(&RelayError::Internal {
            detail: format!("stream response: {e}"),
        }),
    }
}

/// The upstream stream as the client receives it: passed through `StreamPassThrough`, with an
/// idle deadline between chunks, ended with an error event if the upstream breaks, and reporting
/// what it carried exactly once — at the end, or when dropped because the client went away.
struct Relayed {
    upstream: LocalBoxStream<'static, Result<Vec<u8>, worker::Error>>,
    pass: StreamPipe,
    report: Option<oneshot::Sender<StreamReport>>,
    first_byte_ms: Option<i64>,
    ended: bool,
    broken: bool,
    idle_ms: Option<u64>,
    /// Fires at the earliest moment the stream could have been idle for `idle_ms`; when it
    /// does, data that came meanwhile re-arms it for the rest (one timer per idle window,
    /// not one per chunk).
    idle: Option<Pin<Box<StreamTimer>>>,
    /// The channel's total time limit, as a moment.
    total_until_ms: Option<i64>,
    last_data_ms: i64,
    abort: Option<AbortController>,
    /// The stream as sent, when it is to be cached.
    capture: Option<Vec<u8>>,
}

impl Relayed {
    fn send_report(&mut self) {
        if let Some(tx) = self.report.take() {
            let _ = tx.send(StreamReport {
                usage: self.pass.usage(),
                completion_bytes: self.pass.completion_bytes(),
                produced: self.first_byte_ms.is_some(),
                first_byte_ms: self.first_byte_ms,
                broken: self.broken,
                captured: self.capture.take(),
                completed: self.ended && !self.broken,
            });
        }
    }

    /// Keep what the client receives, for the cache, while it stays under the size limit.
    fn capture_chunk(&mut self, chunk: &[u8]) {
        if let Some(buf) = self.capture.as_mut() {
            if buf.len() + chunk.len() > response_cache::MAX_CACHED_BYTES {
                self.capture = None;
            } else {
                buf.extend_from_slice(chunk);
            }
        }
    }

    /// End the client's stream with an OpenAI-shaped error event, the way OpenAI reports a
    /// failure after a stream has started.
    fn break_off(&mut self, why: &str) -> Vec<u8> {
        worker::console_warn!("stream broke: {}", why);
        self.broken = true;
        self.ended = true;
        if let Some(controller) = self.abort.take() {
            controller.abort();
        }
        let mut out = Vec::new();
        // An error the upstream sent in-stream has already reached the client in its format.
        if !self.pass.errored() {
            self.pass
                .break_off(&RelayError::UpstreamStreamBroken, &mut out);
        }
        self.send_report();
        out
    }
}

impl Stream for Relayed {
    type Item = Result<Vec<u8>, worker::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                this.send_report();
                return Poll::Ready(None);
            }
            match this.upstream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    let now = now_ms();
                    this.first_byte_ms.get_or_insert(now);
                    this.last_data_ms = now;
                    if this.total_until_ms.is_some_and(|t| now >= t) {
                        return Poll::Ready(Some(Ok(
                            this.break_off("the stream ran past the channel's total timeout")
                        )));
                    }
                    let mut out = Vec::new();
                    if let Err(e) = this.pass.push(&bytes, &mut out) {
                        return Poll::Ready(Some(Ok(this.break_off(&e.to_string()))));
                    }
                    if !out.is_empty() {
                        this.capture_chunk(&out);
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Ok(this.break_off(&e.to_string()))))
                }
                Poll::Ready(None) => {
                    let mut out = Vec::new();
                    let finished = this.pass.finish(&mut out);
                    if finished.is_err() || !this.pass.completed() {
                        // The upstream closed without finishing (no `[DONE]`, no finish reason),
                        // or reported an error: it broke off, whatever it sent.
                        let mut tail = this.break_off("upstream closed the stream early");
                        out.append(&mut tail);
                        return Poll::Ready(Some(Ok(out)));
                    }
                    this.ended = true;
                    this.capture_chunk(&out);
                    this.send_report();
                    return Poll::Ready(if out.is_empty() { None } else { Some(Ok(out)) });
                }
                Poll::Pending => {
                    let (Some(idle_ms), Some(idle)) = (this.idle_ms, this.idle.as_mut()) else {
                        return Poll::Pending;
                    };
                    if idle.poll_unpin(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = now_ms();
                    let quiet_ms = u64::try_from(now - this.last_data_ms).unwrap_or(0);
                    if quiet_ms >= idle_ms {
                        return Poll::Ready(Some(Ok(
                            this.break_off("no data from the upstream within the channel timeout")
                        )));
                    }
                    let total_left = this
                        .total_until_ms
                        .map(|t| u64::try_from(t - now).unwrap_or(0));
                    if total_left == Some(0) {
                        return Poll::Ready(Some(Ok(
                            this.break_off("the stream ran past the channel's total timeout")
                        )));
                    }
                    let wait = total_left.map_or(idle_ms - quiet_ms, |t| t.min(idle_ms - quiet_ms));
                    let mut rearmed = Box::pin(StreamTimer::new(wait));
                    // Polled once so it holds this task's waker.
                    let _ = rearmed.poll_unpin(cx);
                    this.idle = Some(rearmed);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // The client went away mid-stream: still record what was produced.
        if let Some(controller) = self.abort.take() {
            if !self.ended {
                controller.abort();
            }
        }
        self.send_report();
    }
}
