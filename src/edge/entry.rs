//! [edge] The Worker's fetch entry point: request id, routing, CORS, and turning every failure
//! into an OpenAI-shaped error response.

use std::rc::Rc;

use serde_json::json;
use worker::wasm_bindgen::JsValue;
use worker::{event, Context, Env, MessageBatch, Request, Response};

use super::admin;
use super::http::{header, json_value};
use super::relay::{self, Inbound, RelayCtx};
use super::state::{now_ms, random_bytes, Settings};
use super::store::Store;
use crate::api::routes::{self, Method, Route};
use crate::error::RelayError;
use crate::formats::client::ClientFormat;
use crate::governance::auth;
use crate::governance::grant::KeyGrant;

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let started_ms = now_ms();
    let request_id = auth::new_id("req", &random_bytes::<12>());
    let path = req.path();
    let browser_facing = path.starts_with("/v1/") || path == "/health";
    // The request's own method: `worker::Method` reads an unknown one as GET.
    let method = Method::parse(&req.inner().method());
    let mut response = if method == Method::Options && browser_facing {
        preflight(&req)
    } else {
        dispatch(req, &method, &env, &ctx, &request_id, started_ms).await
    };
    let headers = response.headers_mut();
    let _ = headers.set("x-request-id", &request_id);
    if browser_facing {
        // Browser apps may call the relay directly; keys are bearer tokens, never cookies.
        let _ = headers.set("access-control-allow-origin", "*");
        let _ = headers.set("access-control-expose-headers", "x-request-id, retry-after");
    }
    Ok(response)
}

/// The usage queue's consumer (`USAGE_QUEUE`): batches of usage rows into D1.
#[event(queue)]
async fn queue(batch: MessageBatch<JsValue>, env: Env, _ctx: Context) -> worker::Result<()> {
    super::store::usage_log::consume(batch, &env).await
}

fn preflight(req: &Request) -> Response {
    let response = json_value(204, &json!(null));
    let headers = response.headers();
    let _ = headers.set("access-control-allow-methods", "GET, POST, OPTIONS");
    let requested = header(req, "access-control-request-headers");
    let _ = headers.set(
        "access-control-allow-headers",
        requested
            .as_deref()
            .unwrap_or("authorization, content-type, x-api-key"),
    );
    let _ = headers.set("access-control-max-age", "86400");
    let _ = headers.delete("content-type");
    response
}

/// The admin dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dispatch(
    req: Request,
    method: &Method,
    env: &Env,
    ctx: &Context,
    request_id: &str,
    started_ms: i64,
) -> Response {
    let path = req.path();
    // Anthropic's SDKs read errors in Anthropic's shape; everything else gets OpenAI's.
    let format = if path.starts_with("/v1/messages") {
        ClientFormat::Anthropic
    } else {
        ClientFormat::OpenAi
    };
    let route = match routes::route(method, &path) {
        Ok(r) => r,
        Err(e) => return relay::client_error(format, &e),
    };
    let settings = Settings::get(env);
    // The relay path reads through the isolate's caches and builds a store only for what it
    // must load; the admin API works on the store directly.
    let rc = RelayCtx {
        env,
        ctx,
        settings: &settings,
        request_id,
        started_ms,
        timing: Default::default(),
    };
    let is_admin = route.is_admin();
    let result = match route {
        Route::Health => Ok(json_value(
            200,
            &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        )),
        Route::Dashboard => dashboard(),
        Route::Admin(route) => {
            async {
                let store = Store::new(env)?;
                let actor = admin::check_admin(&req, &settings, &store).await?;
                admin::handle(req, route, &store, env, request_id, &actor).await
            }
            .await
        }
        Route::ListModels => {
            async {
                let (rc, grant) = with_key(&req, &rc).await?;
                relay::models(rc, &grant, None).await
            }
            .await
        }
        Route::GetModel(model) => {
            async {
                let (rc, grant) = with_key(&req, &rc).await?;
                relay::models(rc, &grant, Some(&model)).await
            }
            .await
        }
        Route::Relay(endpoint) => {
            async {
                let (rc, grant) = with_key(&req, &rc).await?;
                Ok(relay::relay(req, Inbound::OpenAi(endpoint), &grant, rc).await)
            }
            .await
        }
        Route::Messages => {
            async {
                let (rc, grant) = with_key(&req, &rc).await?;
                Ok(relay::relay(req, Inbound::AnthropicMessages, &grant, rc).await)
            }
            .await
        }
        Route::CountTokens => {
            async {
                let (rc, grant) = with_key(&req, &rc).await?;
                relay::count_tokens(req, &grant, rc).await
            }
            .await
        }
    };
    let mut response = result.unwrap_or_else(|e| {
        if let RelayError::Internal { detail } = &e {
            worker::console_error!("request {}: {}", request_id, detail);
        }
        relay::client_error(format, &e)
    });
    // Every relay response says what it waited on, refusals before the relay path included.
    if !is_admin && !response.headers().has("server-timing").unwrap_or(false) {
        rc.server_timing(&mut response);
    }
    response
}

/// The relay API's caller, by its key.
async fn with_key<'r, 'a>(
    req: &Request,
    rc: &'r RelayCtx<'a>,
) -> Result<(&'r RelayCtx<'a>, Rc<KeyGrant>), RelayError> {
    Ok((rc, relay::authenticate(req, rc).await?))
}

/// The admin dashboard (`GET /admin/ui`): the page is static and holds no data; every number
/// on it comes from the admin API with the token the user types in.
fn dashboard() -> Result<Response, RelayError> {
    let headers = worker::Headers::new();
    let _ = headers.set("content-type", "text/html; charset=utf-8");
    let _ = headers.set("cache-control", "no-store");
    let _ = headers.set(
        "content-security-policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'",
    );
    Response::ok(DASHBOARD)
        .map(|r| r.with_headers(headers))
        .map_err(|e| RelayError::Internal {
            detail: format!("dashboard: {e}"),
        })
}
