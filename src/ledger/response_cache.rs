//! The exact-match response cache's decisions: whether a request may use or fill the cache
//! (opt-in per key or per request with `Cache-Control`), and the key it is stored under — a
//! canonical form of the request, scoped to the tenant, the same whatever the order of its
//! JSON fields. Pure; the Workers Cache API calls are the edge's.

use serde_json::Value;

use crate::support::crypto::{hex, sha256};

/// Longest a cached reply is kept, whatever is asked: a day.
pub const MAX_TTL_S: u32 = 86_400;
/// Replies larger than this are not cached (the Cache API has limits, and replaying a huge
/// reply from the edge is no saving).
pub const MAX_CACHED_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Neither read nor write the cache.
    Off,
    /// Answer from the cache when it holds a reply; else fetch and store for `ttl_s`.
    Use { ttl_s: u32 },
    /// Fetch afresh (`Cache-Control: no-cache`) and store for `ttl_s`.
    Refresh { ttl_s: u32 },
}

/// The mode for a request: `key_ttl_s` is the key's opt-in (its default TTL), and the
/// request's `Cache-Control` may opt in (`max-age=N`), force a refresh (`no-cache`) or opt out
/// (`no-store`, `max-age=0`).
pub fn mode(cache_control: Option<&str>, key_ttl_s: Option<u32>) -> CacheMode {
    let mut max_age: Option<u32> = None;
    let (mut no_cache, mut no_store) = (false, false);
    for directive in cache_control.unwrap_or("").split(',') {
        let d = directive.trim().to_ascii_lowercase();
        if d == "no-store" {
            no_store = true;
        } else if d == "no-cache" {
            no_cache = true;
        } else if let Some(n) = d.strip_prefix("max-age=") {
            max_age = n
                .trim()
                .parse::<u64>()
                .ok()
                .map(|n| n.min(u64::from(MAX_TTL_S)) as u32);
        }
    }
    let ttl_s = match (max_age, key_ttl_s) {
        (Some(0), _) => return CacheMode::Off,
        (Some(n), _) => n,
        (None, Some(k)) if k > 0 => k.min(MAX_TTL_S),
        _ => return CacheMode::Off,
    };
    if no_store {
        CacheMode::Off
    } else if no_cache {
        CacheMode::Refresh { ttl_s }
    } else {
        CacheMode::Use { ttl_s }
    }
}

/// Fields that do not change what the model answers, so requests differing only in them share
/// an entry. `stream` stays: a stream is cached as the SSE it was.
const IGNORED: &[&str] = &["user", "metadata", "stream_options"];

/// The cache key of a request: SHA-256 over the tenant, the endpoint, the public model and the
/// canonical JSON of the body (object keys sorted at every depth), as a URL for the Cache API.
pub fn cache_url(tenant_id: &str, endpoint: &str, body: &Value) -> String {
    let mut canonical = String::new();
    if let Value::Object(map) = body {
        let trimmed: serde_json::Map<String, Value> = map
            .iter()
            .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        write_canonical(&Value::Object(trimmed), &mut canonical);
    } else {
        write_canonical(body, &mut canonical);
    }
    let digest = hex(&sha256(
        format!("{tenant_id}\n{endpoint}\n{canonical}").as_bytes(),
    ));
    format!("https://response-cache.edgerelay.invalid/{tenant_id}/{digest}")
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn opt_in_by_request_or_key_and_opt_out_by_request() {
        assert_eq!(mode(None, None), CacheMode::Off);
        assert_eq!(mode(Some("max-age=60"), None), CacheMode::Use { ttl_s: 60 });
        assert_eq!(mode(None, Some(300)), CacheMode::Use { ttl_s: 300 });
        assert_eq!(
            mode(Some("max-age=10"), Some(300)),
            CacheMode::Use { ttl_s: 10 }
        );
        assert_eq!(
            mode(Some("no-cache"), Some(300)),
            CacheMode::Refresh { ttl_s: 300 }
        );
        assert_eq!(
            mode(Some("no-cache, max-age=5"), None),
            CacheMode::Refresh { ttl_s: 5 }
        );
        assert_eq!(
            mode(Some("no-cache"), None),
            CacheMode::Off,
            "no opt-in, nothing to refresh"
        );
        assert_eq!(mode(Some("no-store"), Some(300)), CacheMode::Off);
        assert_eq!(mode(Some("max-age=0"), Some(300)), CacheMode::Off);
        assert_eq!(
            mode(Some("Max-Age=999999999"), None),
            CacheMode::Use { ttl_s: MAX_TTL_S }
        );
        assert_eq!(mode(Some("max-age=junk"), None), CacheMode::Off);
    }

    #[test]
    fn keys_ignore_field_order_but_not_content() {
        let a = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let b = json!({"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"});
        assert_eq!(cache_url("t", "chat", &a), cache_url("t", "chat", &b));
        let c = json!({"model": "m", "messages": [{"role": "user", "content": "hi!"}], "temperature": 0});
        assert_ne!(cache_url("t", "chat", &a), cache_url("t", "chat", &c));
        // Order of messages is content.
        let d = json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
        let e = json!({"model": "m", "messages": [{"role": "user", "content": "b"}, {"role": "user", "content": "a"}]});
        assert_ne!(cache_url("t", "chat", &d), cache_url("t", "chat", &e));
    }

    #[test]
    fn keys_are_per_tenant_endpoint_and_stream_flag() {
        let a = json!({"model": "m", "prompt": "x"});
        assert_ne!(cache_url("t1", "chat", &a), cache_url("t2", "chat", &a));
        assert_ne!(
            cache_url("t1", "chat", &a),
            cache_url("t1", "completions", &a)
        );
        let s = json!({"model": "m", "prompt": "x", "stream": true});
        assert_ne!(cache_url("t1", "chat", &a), cache_url("t1", "chat", &s));
        let u = json!({"model": "m", "prompt": "x", "user": "someone", "metadata": {"a": 1}});
        assert_eq!(cache_url("t1", "chat", &a), cache_url("t1", "chat", &u));
        assert!(
            cache_url("t1", "chat", &a).starts_with("https://response-cache.edgerelay.invalid/t1/")
        );
    }

    #[test]
    fn canonical_json_escapes_keys_and_keeps_numbers() {
        let mut out = String::new();
        write_canonical(&json!({"b\"": 1.5, "a": [true, null, "x"]}), &mut out);
        assert_eq!(out, r#"{"a":[true,null,"x"],"b\"":1.5}"#);
    }
}
