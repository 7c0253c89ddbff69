//! [edge] OAuth access tokens for Vertex AI channels: the service account's JWT is signed with
//! WebCrypto (RS256), exchanged at the account's token endpoint, and cached per isolate until
//! shortly before it expires, so a request pays for a token only about once an hour.

use std::cell::RefCell;
use std::collections::HashMap;

use worker::js_sys::{
    self, futures::JsFuture, Array, Function, Object, Promise, Reflect, Uint8Array,
};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Fetch, Headers, Method, Request, RequestInit};

use super::state::now_ms;
use crate::error::RelayError;
use crate::providers::gcp::{self, AccessToken, ServiceAccount};

thread_local! {
    static TOKENS: RefCell<HashMap<String, AccessToken>> = RefCell::new(HashMap::new());
}

fn auth_failure(why: impl std::fmt::Display) -> RelayError {
    // The client's key was fine; the channel's credentials are the operator's to fix.
    worker::console_error!("vertex auth: {}", why);
    RelayError::UpstreamAuthFailed
}

/// A current access token for the service account in `key_file`.
pub async fn access_token(key_file: &str) -> Result<String, RelayError> {
    let sa = gcp::parse_service_account(key_file)
        .map_err(|why| auth_failure(format!("key file {why}")))?;
    let cache_key = cache_key(&sa);
    let now = now_ms();
    if let Some(token) =
        TOKENS.with(|t| t.borrow().get(&cache_key).filter(|t| t.fresh(now)).cloned())
    {
        return Ok(token.token);
    }
    // Each request fetches for itself on a miss: the Workers runtime does not let one request
    // wait on I/O started by another (it cancels the waiter as hung), so a burst on a cold
    // isolate may exchange a few tokens at once; every request after that uses the cache.
    let result = fetch_token(&sa, now).await;
    let token = result?;
    let value = token.token.clone();
    TOKENS.with(|t| t.borrow_mut().insert(cache_key, token));
    Ok(value)
}

/// The upstream refused a token: drop it so the next request fetches a new one instead of
/// failing until the old one would have expired.
pub fn forget(key_file: &str) {
    if let Ok(sa) = gcp::parse_service_account(key_file) {
        let key = cache_key(&sa);
        TOKENS.with(|t| t.borrow_mut().remove(&key));
    }
}

fn cache_key(sa: &ServiceAccount) -> String {
    format!("{}|{}", sa.client_email, sa.token_uri)
}

async fn fetch_token(sa: &ServiceAccount, now: i64) -> Result<AccessToken, RelayError> {
    let input = gcp::jwt_signing_input(sa, now / 1000);
    let signature = rs256(&sa.private_key_der, input.as_bytes())
        .await
        .map_err(auth_failure)?;
    let body = gcp::token_request_body(&gcp::jwt(&input, &signature));

    let headers = Headers::new();
    let _ = headers.set("content-type", "application/x-www-form-urlencoded");
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&body)));
    let request = Request::new_with_init(&sa.token_uri, &init).map_err(auth_failure)?;
    let mut response = Fetch::Request(request).send().await.map_err(|e| {
        worker::console_warn!("vertex token endpoint unreachable: {}", e);
        RelayError::UpstreamUnreachable
    })?;
    let bytes = response.bytes().await.map_err(auth_failure)?;
    if response.status_code() != 200 {
        return Err(auth_failure(format!(
            "token endpoint status {}",
            response.status_code()
        )));
    }
    gcp::parse_token_response(&bytes, now_ms()).map_err(auth_failure)
}

/// RSASSA-PKCS1-v1_5 with SHA-256 through `crypto.subtle`, called by reflection so the
/// Worker needs no web-sys feature beyond what `worker` already has.
async fn rs256(pkcs8_der: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    let subtle = Reflect::get(&js_sys::global(), &"crypto".into())
        .and_then(|c| Reflect::get(&c, &"subtle".into()))
        .map_err(|_| "WebCrypto is not available".to_string())?;
    let algorithm = Object::new();
    let hash = Object::new();
    let set = |o: &Object, k: &str, v: &JsValue| Reflect::set(o, &k.into(), v).map(drop);
    set(&algorithm, "name", &"RSASSA-PKCS1-v1_5".into()).map_err(|_| "algorithm")?;
    set(&hash, "name", &"SHA-256".into()).map_err(|_| "algorithm")?;
    set(&algorithm, "hash", &hash).map_err(|_| "algorithm")?;

    let import_args = Array::of5(
        &"pkcs8".into(),
        &Uint8Array::from(pkcs8_der).into(),
        &algorithm,
        &JsValue::FALSE,
        &Array::of1(&"sign".into()),
    );
    let key = call(&subtle, "importKey", &import_args)
        .await
        .map_err(|e| format!("the private key was refused: {e}"))?;
    let sign_args = Array::of3(&algorithm, &key, &Uint8Array::from(data).into());
    let signature = call(&subtle, "sign", &sign_args)
        .await
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok(Uint8Array::new(&signature).to_vec())
}

async fn call(target: &JsValue, method: &str, args: &Array) -> Result<JsValue, String> {
    let function: Function = Reflect::get(target, &method.into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| format!("crypto.subtle.{method} missing"))?;
    let promise: Promise = function
        .apply(target, args)
        .ok()
        .and_then(|p| p.dyn_into().ok())
        .ok_or_else(|| format!("crypto.subtle.{method} failed"))?;
    JsFuture::from(promise)
        .await
        .map_err(|e| e.as_string().unwrap_or_else(|| format!("{e:?}")))
}
