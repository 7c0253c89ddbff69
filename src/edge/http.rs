//! [edge] Building responses and reading request bodies.

use futures::StreamExt;
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Headers, Request, Response};

use crate::error::RelayError;

pub fn json_response(status: u16, body: impl Into<Vec<u8>>) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    Response::builder()
        .with_status(status)
        .with_headers(headers)
        .fixed(body.into())
}

pub fn json_value(status: u16, value: &impl serde::Serialize) -> Response {
    json_response(status, serde_json::to_vec(value).unwrap_or_default())
}

pub fn error_response(err: &RelayError) -> Response {
    let response = json_response(err.status(), err.body());
    for (name, value) in err.headers() {
        let _ = response.headers().set(name, &value);
    }
    response
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// Reads the body, refusing it with 413 as soon as it passes `limit` bytes (also when the
/// client sent no Content-Length), so an oversized body is never held in memory whole. A body
/// with a Content-Length within the limit is read in one call (the runtime holds it to that
/// length); only a body of unknown length is read chunk by chunk, each JS call counted.
pub async fn read_body(req: &mut Request, limit: u64) -> Result<Vec<u8>, RelayError> {
    let too_large = || RelayError::RequestTooLarge { limit };
    let declared = header(req, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit => return Err(too_large()),
        Some(_) => {
            return whole_body(req.inner().array_buffer()).await.map_err(|e| {
                RelayError::InvalidJson {
                    detail: format!("could not read the body: {e:?}"),
                }
            })
        }
        None => {}
    }
    let mut stream = match req.stream() {
        Ok(s) => s,
        // No body at all.
        Err(_) => return Ok(Vec::new()),
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RelayError::InvalidJson {
            detail: format!("could not read the body: {e}"),
        })?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A whole body from `arrayBuffer()`: one call into the runtime and one copy out of it, where a
/// reader loop makes several JS calls per chunk.
pub async fn whole_body(
    buffer: Result<worker::js_sys::Promise, JsValue>,
) -> Result<Vec<u8>, JsValue> {
    let buffer = JsFuture::from(buffer?).await?;
    Ok(worker::js_sys::Uint8Array::new(&buffer).to_vec())
}

/// An upstream response's whole body (see `whole_body`).
pub async fn response_bytes(response: Response) -> Result<Vec<u8>, JsValue> {
    let raw: worker::web_sys::Response = response.into();
    whole_body(raw.array_buffer()).await
}
