//! [edge] One upstream attempt: the planned request sent with a deadline and an abort handle,
//! the response headers judged (2xx, or a failure mapped to the client's error with secrets
//! scrubbed), the first attempt hedged onto a second channel when it is slow, and what each
//! attempt came to reported to its channel's shared health.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{AbortController, AbortSignal, Delay, Response};

use super::gcp_auth;
use super::http::response_bytes;
use super::objects::health::{self, Outcome};
use super::relay::RelayCtx;
use super::state::{now_ms, random_bytes};
use crate::error::RelayError;
use crate::formats::client::ClientRequest;
use crate::providers::endpoint;
use crate::providers::{self, ProviderKind, UpstreamRequest};
use crate::routing::breaker::BreakerConfig;
use crate::routing::channel::{key_fingerprint, Channel};
use crate::routing::health::ChannelHealth;
use crate::routing::model_map::Route;

/// An upstream abort handle that can be fired through a shared reference (workers-rs's
/// controller consumes itself), so a hedge that lost can be cut short while borrowed.
pub(crate) struct Abort {
    controller: RefCell<Option<AbortController>>,
    signal: AbortSignal,
}

impl Abort {
    pub(crate) fn new() -> Abort {
        let controller = AbortController::default();
        let signal = controller.signal();
        Abort {
            controller: RefCell::new(Some(controller)),
            signal,
        }
    }

    pub(crate) fn abort(&self) {
        if let Some(c) = self.controller.borrow_mut().take() {
            c.abort();
        }
    }

    pub(crate) fn into_controller(self) -> Option<AbortController> {
        self.controller.into_inner()
    }
}

/// Tell a channel's health what a failed attempt came to.
pub(crate) fn report_failure(
    rc: &RelayCtx<'_>,
    channel: &Channel,
    model: &str,
    failed: &Failed,
    probe: bool,
) {
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
pub(crate) fn report_outcome(
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
pub(crate) type Hedged<'a> = (
    Result<Sent, Failed>,
    Abort,
    Served<'a>,
    Option<(Served<'a>, Option<Failed>)>,
);

/// The first attempt, and after `hedge_ms` without response headers the same request on
/// `other` as well: the first 2xx wins and the other is aborted; if one fails, the other's
/// outcome counts.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn hedged_attempt<'a>(
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
pub(crate) struct Served<'a> {
    pub(crate) route: &'a Route,
    pub(crate) channel: &'a Rc<Channel>,
    pub(crate) region: String,
    pub(crate) attempts: u32,
}

impl Served<'_> {
    pub(crate) fn headers(&self, response: &mut Response) {
        let h = response.headers_mut();
        let _ = h.set("x-relay-channel", &self.channel.id);
        let _ = h.set("x-relay-region", &self.region);
        let _ = h.set("x-relay-attempts", &self.attempts.to_string());
    }
}

/// An upstream that answered 2xx, before anything is read from its body.
pub(crate) struct Sent {
    pub(crate) response: Response,
    /// When the channel's total time limit ends the exchange, if it has one.
    pub(crate) total_until_ms: Option<i64>,
    pub(crate) deadline: Deadline,
    pub(crate) timeout_ms: u64,
    pub(crate) plan: endpoint::Plan,
    pub(crate) status: u16,
    pub(crate) key_used: Option<String>,
}

/// An attempt that failed before the client saw anything.
pub(crate) struct Failed {
    pub(crate) err: RelayError,
    /// The upstream's status; `None` when it never answered.
    pub(crate) status: Option<u16>,
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) key_used: Option<String>,
}

pub(crate) fn draw_u32() -> u32 {
    u32::from_le_bytes(random_bytes::<4>())
}

pub(crate) fn breaker_config(channel: &Channel) -> BreakerConfig {
    channel.breaker.unwrap_or_default()
}

/// A usable upstream key of the channel (not cooling, not disabled), by its index. A
/// channel's only key is always used: cooling or disabling it would take the channel down,
/// and the upstream's own answer says more than the relay's guess.
pub(crate) fn key_index(
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

/// One attempt at one channel: plan, send, and judge the response headers.
pub(crate) async fn attempt(
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
    let api_key = health::view(rc.env, rc.ctx, &channel.id, breaker_config(channel), |h| {
        key_index(channel, h, now_ms(), &mut draw_u32)
    })
    .and_then(|i| channel.api_keys.get(i));
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
    let response = match send(&plan.request, &mut deadline, first_ms, controller).await {
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
    let body = read_with_deadline(response, &mut deadline, timeout_ms)
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

/// One timer for a whole upstream exchange: response headers and (non-stream) body must both
/// arrive before it fires. A timer is a JS callback; one per request, not one per stage.
pub(crate) type Deadline = Pin<Box<Delay>>;

pub(crate) fn deadline(timeout_ms: u64) -> Deadline {
    Box::pin(Delay::from(Duration::from_millis(timeout_ms)))
}

/// Fetch before the deadline. The caller keeps the controller, to abort the upstream later (an
/// idle stream, a hedge that lost). The runtime's `fetch(url, init)` is called directly: no
/// `Request` object is built for it.
pub(crate) async fn send(
    plan: &UpstreamRequest,
    deadline: &mut Deadline,
    timeout_ms: u64,
    controller: &Abort,
) -> Result<Response, RelayError> {
    let bad = |what: &str| RelayError::internal("upstream request", what);
    let headers = worker::web_sys::Headers::new().map_err(|_| bad("headers"))?;
    for (name, value) in &plan.headers {
        headers
            .set(name, value)
            .map_err(|_| bad(&format!("bad header {name}")))?;
    }
    let init = worker::web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&worker::js_sys::Uint8Array::from(plan.body.as_slice()));
    init.set_signal(Some(&controller.signal));
    let global: worker::web_sys::WorkerGlobalScope = worker::js_sys::global().unchecked_into();
    let fetch = JsFuture::from(global.fetch_with_str_and_init(&plan.url, &init));
    match select(fetch, deadline).await {
        Either::Left((Ok(response), _)) => Ok(Response::from(
            response.unchecked_into::<worker::web_sys::Response>(),
        )),
        Either::Left((Err(e), _)) => {
            worker::console_warn!("upstream fetch failed: {:?}", e);
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

pub(crate) async fn read_with_deadline(
    response: Response,
    deadline: &mut Deadline,
    timeout_ms: u64,
) -> Result<Vec<u8>, RelayError> {
    let read = Box::pin(response_bytes(response));
    match select(read, deadline).await {
        Either::Left((Ok(bytes), _)) => Ok(bytes),
        Either::Left((Err(_), _)) => Err(RelayError::UpstreamStreamBroken),
        Either::Right(_) => Err(RelayError::UpstreamTimeout {
            after_ms: timeout_ms,
        }),
    }
}
