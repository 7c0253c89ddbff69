//! [edge] The `Limiter` Durable Object — one per key and one per tenant — and the relay's
//! calls to it. The object is a thin shell: it keeps `limits::LimiterState` in its SQLite
//! storage and hands each call to the pure state machine with the current time.

use std::cell::RefCell;

use serde::Deserialize;
use worker::wasm_bindgen::JsValue;
use worker::{
    durable_object, Date, DurableObject, Env, Method, Request, RequestInit, Response, Result,
    SqlStorage, State,
};

use crate::config::KeyGrant;
use crate::error::RelayError;
use crate::limits::{Ask, Decision, LimitHit, LimiterCall, LimiterState, Limits, RateInfo};

#[durable_object]
pub struct Limiter {
    sql: SqlStorage,
    state: RefCell<Option<LimiterState>>,
}

#[derive(Deserialize)]
struct Row {
    state: String,
}

impl DurableObject for Limiter {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(
            "CREATE TABLE IF NOT EXISTS limiter (id INTEGER PRIMARY KEY, state TEXT NOT NULL)",
            None,
        ) {
            worker::console_error!("limiter table: {}", e);
        }
        Limiter {
            sql,
            state: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: LimiterCall = req.json().await?;
        // From here to the reply nothing awaits: each call is applied whole, in arrival order.
        let mut state = self
            .state
            .borrow_mut()
            .take()
            .unwrap_or_else(|| self.load());
        let (reply, changed) = state.handle(call, Date::now().as_millis() as i64);
        if changed {
            let json = serde_json::to_string(&state)
                .map_err(|e| worker::Error::RustError(e.to_string()))?;
            self.sql.exec(
                "INSERT INTO limiter (id, state) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                vec![json.into()],
            )?;
        }
        *self.state.borrow_mut() = Some(state);
        Response::from_json(&reply)
    }
}

impl Limiter {
    fn load(&self) -> LimiterState {
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT state FROM limiter WHERE id = 1", None)
            .and_then(|c| c.to_array())
            .unwrap_or_default();
        rows.first()
            .and_then(|r| serde_json::from_str(&r.state).ok())
            .unwrap_or_default()
    }
}

// ---- the relay's side ----------------------------------------------------------------

fn internal(what: &str, e: impl std::fmt::Display) -> RelayError {
    RelayError::Internal {
        detail: format!("limiter {what}: {e}"),
    }
}

pub fn key_object(key_id: &str) -> String {
    format!("key:{key_id}")
}

pub fn tenant_object(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}")
}

async fn call<T: serde::de::DeserializeOwned>(
    env: &Env,
    object: &str,
    call: &LimiterCall,
) -> Result<T, RelayError> {
    let namespace = env
        .durable_object("LIMITER")
        .map_err(|e| internal("binding", e))?;
    let stub = namespace
        .id_from_name(object)
        .and_then(|id| id.get_stub())
        .map_err(|e| internal("stub", e))?;
    let body = serde_json::to_string(call).map_err(|e| internal("call", e))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let request =
        Request::new_with_init("https://limiter/", &init).map_err(|e| internal("request", e))?;
    let mut response = stub
        .fetch_with_request(request)
        .await
        .map_err(|e| internal("call", e))?;
    response.json::<T>().await.map_err(|e| internal("reply", e))
}

/// What a reservation holds, to be settled when the request is done.
#[derive(Clone)]
pub struct Held {
    key_id: String,
    key_limits: Limits,
    /// The tenant's limiter, when the tenant has limits of its own.
    tenant: Option<(String, Limits)>,
    request_id: String,
}

/// Reserve `ask` for a request at the key's limiter (always: it also knows whether the key
/// was revoked) and, when the tenant has limits, at the tenant's, both at once. A request one
/// of them refuses is released at the other.
pub async fn reserve(
    env: &Env,
    grant: &KeyGrant,
    request_id: &str,
    ask: Ask,
) -> Result<(Held, RateInfo), RelayError> {
    let held = Held {
        key_id: grant.key_id.clone(),
        key_limits: grant.key_limits.clone(),
        tenant: (!grant.tenant_limits.is_empty())
            .then(|| (grant.tenant_id.clone(), grant.tenant_limits.clone())),
        request_id: request_id.to_string(),
    };
    let reserve_at = |limits: &Limits| LimiterCall::Reserve {
        id: request_id.to_string(),
        ask,
        limits: limits.clone(),
    };
    let key_call = reserve_at(&held.key_limits);
    let key_object = key_object(&held.key_id);
    let key = call::<Decision>(env, &key_object, &key_call);
    let (key, tenant) = match &held.tenant {
        Some((tenant_id, limits)) => {
            let tenant_call = reserve_at(limits);
            let tenant_object = tenant_object(tenant_id);
            let (k, t) = futures::join!(key, call::<Decision>(env, &tenant_object, &tenant_call));
            (k?, Some(t?))
        }
        None => (key.await?, None),
    };
    let refused = |d: &Decision, scope: &'static str| -> Option<RelayError> {
        if d.admitted {
            return None;
        }
        Some(match d.hit {
            Some(LimitHit::Revoked) => RelayError::KeyRevoked,
            hit => RelayError::LimitExceeded {
                limit: hit.map_or_else(|| "requests".to_string(), |h| h.describe()),
                scope,
                quota: matches!(hit, Some(LimitHit::Quota { .. })),
                retry_after_ms: d.retry_after_ms,
                rate: Box::new(d.rate),
            },
        })
    };
    let failure =
        refused(&key, "key").or_else(|| tenant.as_ref().and_then(|t| refused(t, "tenant")));
    if let Some(err) = failure {
        // Whichever side admitted must not keep the reservation.
        let release = Held {
            tenant: held
                .tenant
                .clone()
                .filter(|_| tenant.as_ref().is_some_and(|t| t.admitted)),
            ..held.clone()
        };
        if key.admitted || release.tenant.is_some() {
            release_parts(env, &release, key.admitted).await;
        }
        return Err(err);
    }
    // The headers describe the tighter of the two when both limit the same thing.
    let rate = match (key.rate.limit_requests.or(key.rate.limit_tokens), tenant) {
        (None, Some(t)) => t.rate,
        _ => key.rate,
    };
    Ok((held, rate))
}

/// Replace the reservation by what the request used (zero when it failed). A key without
/// limits held nothing (its limiter only checked revocation), so it is not called again.
pub async fn settle(env: &Env, held: &Held, used: Ask) {
    let id = held.request_id.clone();
    let key = !held.key_limits.is_empty();
    each_side(env, held, key, "settle", |limits| LimiterCall::Settle {
        id: id.clone(),
        used,
        limits,
    })
    .await;
}

/// Undo the reservations of a request one limiter refused: it never ran, so it costs neither
/// requests nor tokens at the other.
async fn release_parts(env: &Env, held: &Held, key: bool) {
    let id = held.request_id.clone();
    each_side(env, held, key, "release", |limits| LimiterCall::Release {
        id: id.clone(),
        limits,
    })
    .await;
}

/// The same call at the key's limiter (when `key`) and at the tenant's (when held there).
/// Failures are logged: the reservation then lapses after `RESERVATION_TTL_MS`.
async fn each_side(
    env: &Env,
    held: &Held,
    key: bool,
    what: &str,
    make: impl Fn(Limits) -> LimiterCall,
) {
    let mut sides: Vec<(String, LimiterCall)> = Vec::new();
    if key {
        sides.push((key_object(&held.key_id), make(held.key_limits.clone())));
    }
    if let Some((tenant_id, limits)) = &held.tenant {
        sides.push((tenant_object(tenant_id), make(limits.clone())));
    }
    for (object, c) in sides {
        if let Err(e) = call::<RateInfo>(env, &object, &c).await {
            worker::console_error!("{} {} at {}: {:?}", what, held.request_id, object, e);
        }
    }
}

/// Revocation reaches every isolate's next request through the key's limiter.
pub async fn revoke(env: &Env, key_id: &str) -> Result<(), RelayError> {
    call::<RateInfo>(env, &key_object(key_id), &LimiterCall::Revoke)
        .await
        .map(drop)
}

/// Current usage held by a key's or tenant's limiter, for the admin API.
pub async fn peek(
    env: &Env,
    object: &str,
    limits: &Limits,
) -> Result<serde_json::Value, RelayError> {
    call::<serde_json::Value>(
        env,
        object,
        &LimiterCall::Peek {
            limits: limits.clone(),
        },
    )
    .await
}
