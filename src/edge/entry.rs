//! [edge] The Worker's fetch entry point: request id, routing, CORS, and turning every failure
//! into an OpenAI-shaped error response.

use serde_json::json;
use worker::{event, Context, Env, Request, Response};

use super::admin;
use super::http::{header, json_value};
use super::relay::{self, Inbound, RelayCtx};
use super::state::{now_ms, random_bytes, Settings};
use super::store::Store;
use crate::api::paths::{self, Resource};
use crate::error::RelayError;
use crate::formats::client::ClientFormat;
use crate::governance::auth;

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let started_ms = now_ms();
    let request_id = auth::new_id("req", &random_bytes::<12>());
    let path = req.path();
    let browser_facing = path.starts_with("/v1/") || path == "/health";
    let mut response = if req.method().to_string() == "OPTIONS" && browser_facing {
        preflight(&req)
    } else {
        dispatch(req, &env, &ctx, &request_id, started_ms).await
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

/// The admin dashboard (`GET /admin/ui`): one static page.
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dispatch(
    req: Request,
    env: &Env,
    ctx: &Context,
    request_id: &str,
    started_ms: i64,
) -> Response {
    let method = req.method().to_string();
    let path = req.path();
    // Anthropic's SDKs read errors in Anthropic's shape; everything else gets OpenAI's.
    let format = if path.starts_with("/v1/messages") {
        ClientFormat::Anthropic
    } else {
        ClientFormat::OpenAi
    };
    let resource = match paths::route(&method, &path) {
        Ok(r) => r,
        Err(e) => return relay::client_error(format, &e),
    };
    if resource == Resource::Health {
        return json_value(
            200,
            &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    if resource == Resource::Dashboard {
        // The page is static and holds no data; every number on it comes from the admin API
        // with the token the user types in.
        let headers = worker::Headers::new();
        let _ = headers.set("content-type", "text/html; charset=utf-8");
        let _ = headers.set("cache-control", "no-store");
        let _ = headers.set(
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'",
        );
        return match Response::ok(DASHBOARD) {
            Ok(r) => r.with_headers(headers),
            Err(e) => relay::client_error(
                format,
                &RelayError::Internal {
                    detail: format!("dashboard: {e}"),
                },
            ),
        };
    }
    let settings = Settings::get(env);
    let result = match Store::new(env) {
        Err(e) => Err(e),
        Ok(store) if resource.is_admin() => match admin::check_admin(&req, &settings, &store).await
        {
            Ok(actor) => match resource {
                Resource::Analytics(view) => admin::analytics(&req, view, &store, &actor).await,
                _ => admin::handle(req, resource, &store, env, request_id, &actor)
                    .await
                    .map(|(status, body)| json_value(status, &body)),
            },
            Err(e) => Err(e),
        },
        Ok(store) => {
            let rc = RelayCtx {
                env,
                ctx,
                settings: &settings,
                store: &store,
                request_id,
                started_ms,
            };
            match relay::authenticate(&req, &rc).await {
                Err(e) => Err(e),
                Ok(grant) => match resource {
                    Resource::Models => relay::models(&rc, &grant, None).await,
                    Resource::Model(model) => relay::models(&rc, &grant, Some(&model)).await,
                    Resource::Relay(endpoint) => {
                        Ok(relay::relay(req, Inbound::OpenAi(endpoint), &grant, &rc).await)
                    }
                    Resource::Messages => {
                        Ok(relay::relay(req, Inbound::AnthropicMessages, &grant, &rc).await)
                    }
                    Resource::CountTokens => relay::count_tokens(req, &grant, &rc).await,
                    other => Err(RelayError::Internal {
                        detail: format!("no handler for {other:?}"),
                    }),
                },
            }
        }
    };
    result.unwrap_or_else(|e| {
        if let RelayError::Internal { detail } = &e {
            worker::console_error!("request {}: {}", request_id, detail);
        }
        relay::client_error(format, &e)
    })
}
