//! CORS per tenant, and keys browsers may never use. Owns a tenant's CORS config as the admin
//! API sets it, matching an `Origin` against it, the headers of a preflight answer and of an
//! actual response, and the refusal of a browser request a key or tenant does not admit.
//!
//! Decisions worth knowing:
//! - A tenant without a CORS config keeps today's behaviour: every `/v1/*` answer says
//!   `Access-Control-Allow-Origin: *`. That is safe because relay credentials are bearer
//!   tokens a page must hold and send itself, never cookies: `*` lets no site act with a
//!   credential it does not already have, and browsers refuse `*` with credentialed requests
//!   anyway. Changing it would break every browser app that works today.
//! - Server-to-server callers send no `Origin`, and nothing changes for them: no refusal, and
//!   the same headers as today for a tenant without a config.
//! - A preflight (`OPTIONS`) carries no `Authorization`, so it cannot say which tenant it is
//!   for. The edge may find candidates by origin ([`lookup_keys`]); otherwise it answers
//!   permissively ([`preflight`] with `None`), because the actual request, which does carry
//!   the credential, is where a tenant's config is enforced: no `Access-Control-Allow-Origin`
//!   for an origin it does not list (the browser then withholds the reply), and with
//!   `refuse_others` a 403 before any upstream work is done or billed.
//! - Origins match case-insensitively on scheme and host, exactly on the port (a default port
//!   is the same as none). `https://*.example.com` matches every subdomain at any depth, never
//!   `example.com` itself; `"*"` matches every origin.
//! - `server_only` keys refuse any request with an `Origin` (403 `origin_not_allowed`): a key
//!   meant for a backend that shows up in a browser has leaked.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::RelayError;
use crate::support::fields::refuse_unknown;

pub const MAX_ORIGINS: usize = 100;
pub const MAX_EXTRA_HEADERS: usize = 50;
/// Firefox's cap; Chromium caps at 2 h, so longer would only mislead.
pub const MAX_MAX_AGE_S: u32 = 86_400;
pub const DEFAULT_MAX_AGE_S: u32 = 600;
/// What today's permissive preflight says, kept for tenants without a config.
const PERMISSIVE_MAX_AGE_S: u32 = 86_400;

/// The methods `/v1/*` routes have.
pub const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";

/// Request headers every tenant's browser clients may send: credentials in the three
/// providers' spellings, their SDKs' version and beta headers, and the relay's own.
pub const STANDARD_REQUEST_HEADERS: &[&str] = &[
    "accept",
    "authorization",
    "content-type",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    // Anthropic's SDK refuses to run in a browser without it.
    "anthropic-dangerous-direct-browser-access",
    "x-goog-api-key",
    "x-goog-api-client",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "idempotency-key",
];
/// Header families allowed by prefix: the relay's own (`x-relay-strict`, `x-relay-retries`,
/// `x-relay-user`) and the telemetry headers the OpenAI and Anthropic SDKs add.
pub const STANDARD_REQUEST_PREFIXES: &[&str] = &["x-relay-", "x-stainless-"];

/// Response headers a browser app may read: the request id, rate-limit state and the relay's
/// notes (`x-relay-*` as the relay sets them; CORS takes names, not patterns).
pub const EXPOSED_HEADERS: &[&str] = &[
    "x-request-id",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "server-timing",
    "x-relay-approximated",
    "x-relay-attempts",
    "x-relay-budget-warning",
    "x-relay-cache",
    "x-relay-channel",
    "x-relay-downgraded",
    "x-relay-dropped",
    "x-relay-hedged",
    "x-relay-region",
];

/// A tenant's CORS config as stored and shown (no secrets), normalised by [`parse_cors`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsConfig {
    /// `scheme://host[:port]` (lower case, default ports dropped), `scheme://*.domain[:port]`,
    /// or `*`.
    pub origins: Vec<String>,
    /// Request headers allowed beyond the standard ones (lower case).
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default = "default_max_age")]
    pub max_age_s: u32,
    /// Refuse (403) a request from an origin not listed, instead of only withholding CORS
    /// headers: the request is then not even run.
    #[serde(default)]
    pub refuse_others: bool,
}

fn default_max_age() -> u32 {
    DEFAULT_MAX_AGE_S
}

const CORS_FIELDS: &[&str] = &["origins", "headers", "max_age_s", "refuse_others"];

/// The `cors` field of a tenant write: `null` returns to the default (`Ok(None)`); otherwise
/// `{"origins": [...], "headers"?: [...], "max_age_s"?: n, "refuse_others"?: bool}`. Errors name
/// the field: `cors.origins[2]`.
pub fn parse_cors(value: &Value) -> Result<Option<CorsConfig>, RelayError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => parse_map(map).map(Some).map_err(|e| e.prefixed("cors.")),
        _ => Err(RelayError::invalid_type("cors", "an object or null")),
    }
}

fn string_items<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Vec<&'a str>, RelayError> {
    let items = match map.get(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(RelayError::invalid_type(field, "an array of strings")),
    };
    if items.len() > max {
        return Err(RelayError::invalid_value(
            field,
            format!("must have at most {max} entries"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::trim)
                .ok_or_else(|| RelayError::invalid_type(&format!("{field}[{i}]"), "a string"))
        })
        .collect()
}

fn parse_map(map: &Map<String, Value>) -> Result<CorsConfig, RelayError> {
    refuse_unknown(map, CORS_FIELDS)?;
    if !map.contains_key("origins") {
        return Err(RelayError::missing("origins"));
    }
    let mut origins: Vec<String> = Vec::new();
    for (i, origin) in string_items(map, "origins", MAX_ORIGINS)?
        .into_iter()
        .enumerate()
    {
        let pattern = Pattern::parse_config(origin)
            .map_err(|why| RelayError::invalid_value(&format!("origins[{i}]"), why))?;
        let normalised = pattern.to_string();
        if !origins.contains(&normalised) {
            origins.push(normalised);
        }
    }
    let mut headers: Vec<String> = Vec::new();
    for (i, header) in string_items(map, "headers", MAX_EXTRA_HEADERS)?
        .into_iter()
        .enumerate()
    {
        if !is_token(header) {
            return Err(RelayError::invalid_value(
                &format!("headers[{i}]"),
                "must be a header name (letters, digits and !#$%&'*+-.^_`|~)",
            ));
        }
        let header = header.to_ascii_lowercase();
        if !headers.contains(&header) {
            headers.push(header);
        }
    }
    let max_age_s = match map.get("max_age_s") {
        None | Some(Value::Null) => DEFAULT_MAX_AGE_S,
        Some(v) => v
            .as_u64()
            .filter(|s| *s <= u64::from(MAX_MAX_AGE_S))
            .map(|s| s as u32)
            .ok_or_else(|| {
                RelayError::invalid_value(
                    "max_age_s",
                    format!("must be an integer from 0 to {MAX_MAX_AGE_S}"),
                )
            })?,
    };
    let refuse_others = match map.get("refuse_others") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(RelayError::invalid_type("refuse_others", "a boolean")),
    };
    Ok(CorsConfig {
        origins,
        headers,
        max_age_s,
        refuse_others,
    })
}

/// RFC 9110 §5.6.2 `token`: what a header name may be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// ---- origins ------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Origin {
        scheme: String,
        /// `*.`-stripped for a wildcard.
        host: String,
        wildcard: bool,
        /// `None`: the scheme's default port.
        port: Option<u16>,
    },
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Any => write!(f, "*"),
            Pattern::Origin {
                scheme,
                host,
                wildcard,
                port,
            } => {
                write!(f, "{scheme}://{}{host}", if *wildcard { "*." } else { "" })?;
                match port {
                    Some(port) => write!(f, ":{port}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Pattern {
    /// An origin or origin pattern an admin wrote.
    fn parse_config(text: &str) -> Result<Pattern, &'static str> {
        if text == "*" {
            return Ok(Pattern::Any);
        }
        Pattern::parse(text, true)
    }

    /// `scheme://host[:port]`, nothing before or after; `allow_wildcard` for admin patterns.
    fn parse(text: &str, allow_wildcard: bool) -> Result<Pattern, &'static str> {
        const SHAPE: &str = "must be an origin like https://app.example.com or https://*.example.com:8443, without a path, or exactly *";
        if !text.is_ascii() {
            return Err("must be ASCII (write an international domain in its xn-- form)");
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or(SHAPE)?;
        if scheme != "https" && scheme != "http" {
            return Err("must start with https:// or http://");
        }
        if rest.contains(['/', '?', '#']) {
            return Err("must not have a path, query or fragment (not even a trailing /)");
        }
        if rest.contains('@') {
            return Err(SHAPE);
        }
        let (host, port) = split_port(rest).ok_or(SHAPE)?;
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = port.filter(|p| *p != default_port);
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(base) if allow_wildcard => (true, base),
            Some(_) => return Err(SHAPE),
            None => (false, host),
        };
        let valid_host = if host.starts_with('[') {
            !wildcard
                && host.ends_with(']')
                && host[1..host.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()
        } else {
            is_domain(host) && (!wildcard || host.contains('.'))
        };
        if !valid_host {
            return Err(if wildcard {
                "a wildcard must be the first label, over a domain of at least two labels (https://*.example.com)"
            } else {
                SHAPE
            });
        }
        Ok(Pattern::Origin {
            scheme: scheme.to_string(),
            host: host.to_string(),
            wildcard,
            port,
        })
    }

    fn matches(&self, origin: &Pattern) -> bool {
        let Pattern::Origin {
            scheme: os,
            host: oh,
            port: op,
            ..
        } = origin
        else {
            return false;
        };
        match self {
            Pattern::Any => true,
            Pattern::Origin {
                scheme,
                host,
                wildcard,
                port,
            } => {
                let host_ok = if *wildcard {
                    oh.len() > host.len() + 1
                        && oh.ends_with(host.as_str())
                        && oh.as_bytes()[oh.len() - host.len() - 1] == b'.'
                } else {
                    oh == host
                };
                scheme == os && port == op && host_ok
            }
        }
    }
}

/// `host` and an optional explicit port; `None` for a malformed port.
fn split_port(rest: &str) -> Option<(&str, Option<u16>)> {
    let port_start = match rest.rfind(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some(i) if !rest[i..].contains(']') => i,
        _ => return Some((rest, None)),
    };
    let digits = &rest[port_start + 1..];
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = digits.parse().ok().filter(|p| *p != 0)?;
    Some((&rest[..port_start], Some(port)))
}

/// A DNS name (or IPv4 address) in lower case: labels of 1 to 63 of `a-z0-9-`, not starting
/// or ending with `-`, 253 bytes in all.
fn is_domain(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Does the tenant's config admit this `Origin` header value? (`null` — sandboxed frames,
/// `file:` pages — is admitted only by `*`.)
pub fn match_origin(config: &CorsConfig, origin: &str) -> bool {
    let any = config.origins.iter().any(|o| o == "*");
    if any {
        return true;
    }
    let Ok(origin) = Pattern::parse(origin.trim(), false) else {
        return false;
    };
    config
        .origins
        .iter()
        .filter_map(|p| Pattern::parse_config(p).ok())
        .any(|p| p.matches(&origin))
}

/// The keys under which an index from origin patterns to tenants would hold this origin: the
/// origin itself, then each wildcard pattern that covers it, nearest first
/// (`https://a.b.example.com` → itself, `https://*.b.example.com`, `https://*.example.com`).
/// Empty for something that is not an origin.
pub fn lookup_keys(origin: &str) -> Vec<String> {
    let Ok(Pattern::Origin {
        scheme, host, port, ..
    }) = Pattern::parse(origin.trim(), false)
    else {
        return Vec::new();
    };
    let exact = Pattern::Origin {
        scheme: scheme.clone(),
        host: host.clone(),
        wildcard: false,
        port,
    };
    let mut keys = vec![exact.to_string()];
    let labels: Vec<&str> = host.split('.').collect();
    // A wildcard covers at least one label over a base of at least two.
    for start in 1..labels.len().saturating_sub(1) {
        let base = labels[start..].join(".");
        keys.push(
            Pattern::Origin {
                scheme: scheme.clone(),
                host: base,
                wildcard: true,
                port,
            }
            .to_string(),
        );
    }
    keys
}

// ---- answers ------------------------------------------------------------------------------------

/// The value for `Access-Control-Allow-Origin` when `origin` is admitted: `*` when the config
/// admits every origin (cache-friendlier, and honest), else the origin echoed.
fn allow_origin(config: &CorsConfig, origin: &str) -> Option<String> {
    if config.origins.iter().any(|o| o == "*") {
        return Some("*".into());
    }
    match_origin(config, origin).then(|| origin.trim().to_string())
}

/// The names of an `Access-Control-Request-Headers` value, lower case, valid, deduplicated.
fn requested_names(requested: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in requested.unwrap_or_default().split(',').map(str::trim) {
        let name = name.to_ascii_lowercase();
        if is_token(&name) && !names.contains(&name) && names.len() < 100 {
            names.push(name);
        }
    }
    names
}

fn standard_header(name: &str) -> bool {
    STANDARD_REQUEST_HEADERS.contains(&name)
        || STANDARD_REQUEST_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// The headers of the answer to a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-*`). `config`: the tenant's, when the edge could tell the tenant
/// (see [`lookup_keys`]); `None` gives today's permissive answer — any origin, the requested
/// headers, a day's max-age.
pub fn preflight(
    config: Option<&CorsConfig>,
    origin: Option<&str>,
    request_headers: Option<&str>,
) -> Vec<(&'static str, String)> {
    let requested = requested_names(request_headers);
    let Some(config) = config else {
        let allowed = if requested.is_empty() {
            "authorization, content-type, x-api-key".to_string()
        } else {
            requested.join(", ")
        };
        return vec![
            ("access-control-allow-origin", "*".into()),
            ("access-control-allow-methods", ALLOWED_METHODS.into()),
            ("access-control-allow-headers", allowed),
            ("access-control-max-age", PERMISSIVE_MAX_AGE_S.to_string()),
        ];
    };
    let mut headers = vec![("vary", "Origin".to_string())];
    let Some(allow) = origin.and_then(|o| allow_origin(config, o)) else {
        // No Access-Control-Allow-Origin: the browser will not send the request.
        return headers;
    };
    let allowed: Vec<String> = requested
        .into_iter()
        .filter(|name| standard_header(name) || config.headers.contains(name))
        .collect();
    headers.push(("access-control-allow-origin", allow));
    headers.push(("access-control-allow-methods", ALLOWED_METHODS.into()));
    if !allowed.is_empty() {
        headers.push(("access-control-allow-headers", allowed.join(", ")));
    }
    headers.push(("access-control-max-age", config.max_age_s.to_string()));
    headers
}

/// The CORS headers of an actual `/v1/*` response. Without a config: today's (`*` and the
/// exposed headers, whatever the request). With one: `Vary: Origin` always (the answer depends
/// on it), and the origin echoed with the exposed headers when it is admitted.
pub fn response_headers(
    config: Option<&CorsConfig>,
    origin: Option<&str>,
) -> Vec<(&'static str, String)> {
    let expose = ("access-control-expose-headers", EXPOSED_HEADERS.join(", "));
    let Some(config) = config else {
        return vec![("access-control-allow-origin", "*".into()), expose];
    };
    let mut headers = vec![("vary", "Origin".to_string())];
    if let Some(allow) = origin.and_then(|o| allow_origin(config, o)) {
        headers.push(("access-control-allow-origin", allow));
        headers.push(expose);
    }
    headers
}

/// Refuses, before any work, a browser request (one with an `Origin`) that a `server_only`
/// key makes, or that comes from an origin the tenant does not list while it has
/// `refuse_others` set. A request without `Origin` always passes.
pub fn check_origin(
    config: Option<&CorsConfig>,
    origin: Option<&str>,
    server_only: bool,
) -> Result<(), RelayError> {
    let Some(origin) = origin else {
        return Ok(());
    };
    if server_only {
        return Err(RelayError::OriginNotAllowed { server_only: true });
    }
    match config {
        Some(config) if config.refuse_others && !match_origin(config, origin) => {
            Err(RelayError::OriginNotAllowed { server_only: false })
        }
        Some(_) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> CorsConfig {
        parse_cors(&v).unwrap().unwrap()
    }

    fn param(v: Value) -> String {
        parse_cors(&v)
            .unwrap_err()
            .param()
            .unwrap_or_default()
            .to_string()
    }

    fn get<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn configs_are_normalised() {
        let c = config(json!({
            "origins": ["HTTPS://App.Example.com", "https://app.example.com:443", "http://localhost:3000",
                        "https://*.Example.com", "http://[::1]:8080", "http://127.0.0.1"],
            "headers": ["X-Custom", "x-custom"],
        }));
        assert_eq!(
            c.origins,
            vec![
                "https://app.example.com",
                "http://localhost:3000",
                "https://*.example.com",
                "http://[::1]:8080",
                "http://127.0.0.1",
            ]
        );
        assert_eq!(c.headers, vec!["x-custom"]);
        assert_eq!((c.max_age_s, c.refuse_others), (DEFAULT_MAX_AGE_S, false));
        // What the GET shows is accepted back unchanged.
        let shown = serde_json::to_value(&c).unwrap();
        assert_eq!(parse_cors(&shown), Ok(Some(c)));
        assert_eq!(parse_cors(&Value::Null), Ok(None));
        assert_eq!(
            config(json!({"origins": ["*"], "max_age_s": 86400})).max_age_s,
            86400
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let origins = |o: &str| {
            param(json!({"origins": ["https://a.example.com", "http://b.example.com", o]}))
        };
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x=1",
            "https://app.example.com#x",
            "ftp://app.example.com",
            "app.example.com",
            "https://",
            "https://user@app.example.com",
            "https://app.example.com:0",
            "https://app.example.com:65536",
            "https://app.example.com:",
            "https://app..example.com",
            "https://-app.example.com",
            "https://app_1.example.com",
            "https://*.com",
            "https://a.*.example.com",
            "https://*example.com",
            "https://**.example.com",
            "https://*.[::1]",
            "http://[::g]",
            "https://bücher.example",
            "**",
            "",
        ] {
            assert_eq!(origins(bad), "cors.origins[2]", "{bad:?}");
        }
        assert_eq!(param(json!({"origins": "*"})), "cors.origins");
        assert_eq!(param(json!({"origins": [1]})), "cors.origins[0]");
        assert_eq!(param(json!({})), "cors.origins");
        assert_eq!(param(json!({"origins": vec!["*"; 101]})), "cors.origins");
        assert_eq!(
            param(json!({"origins": ["*"], "headers": ["x custom"]})),
            "cors.headers[0]"
        );
        assert_eq!(
            param(json!({"origins": ["*"], "headers": ["x:y"]})),
            "cors.headers[0]"
        );
        assert_eq!(
            param(json!({"origins": ["*"], "max_age_s": 86401})),
            "cors.max_age_s"
        );
        assert_eq!(
            param(json!({"origins": ["*"], "max_age_s": -1})),
            "cors.max_age_s"
        );
        assert_eq!(
            param(json!({"origins": ["*"], "refuse_others": "yes"})),
            "cors.refuse_others"
        );
        assert_eq!(
            param(json!({"origins": ["*"], "origin": "x"})),
            "cors.origin"
        );
        assert_eq!(param(json!(["*"])), "cors");
    }

    #[test]
    fn origins_match_on_scheme_host_and_port() {
        let c = config(
            json!({"origins": ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]}),
        );
        let yes = [
            "https://app.example.com",
            "HTTPS://APP.EXAMPLE.COM",
            "https://app.example.com:443",
            "https://a.example.org",
            "https://a.b.example.org",
            "http://localhost:3000",
        ];
        let no = [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://evil-app.example.com",
            "https://app.example.com.evil.com",
            "https://example.org",
            "https://aexample.org",
            "http://a.example.org",
            "http://localhost",
            "http://localhost:3001",
            "null",
            "",
            "https://app.example.com/",
        ];
        for o in yes {
            assert!(match_origin(&c, o), "{o}");
        }
        for o in no {
            assert!(!match_origin(&c, o), "{o}");
        }
        let any = config(json!({"origins": ["*"]}));
        assert!(match_origin(&any, "null"));
        assert!(match_origin(&any, "https://anything.example"));
    }

    #[test]
    fn lookup_keys_cover_every_pattern_that_could_match() {
        assert_eq!(
            lookup_keys("https://A.b.example.com:443"),
            vec![
                "https://a.b.example.com",
                "https://*.b.example.com",
                "https://*.example.com"
            ]
        );
        assert_eq!(
            lookup_keys("http://localhost:3000"),
            vec!["http://localhost:3000"]
        );
        assert_eq!(
            lookup_keys("https://example.com"),
            vec!["https://example.com"]
        );
        assert!(lookup_keys("null").is_empty());
        // Every key that a config could hold for this origin is among them.
        let origin = "https://x.y.example.com:8443";
        for pattern in [
            "https://x.y.example.com:8443",
            "https://*.y.example.com:8443",
            "https://*.example.com:8443",
        ] {
            let c = config(json!({"origins": [pattern]}));
            assert!(match_origin(&c, origin));
            assert!(lookup_keys(origin).contains(&c.origins[0]), "{pattern}");
        }
    }

    #[test]
    fn without_a_config_browsers_get_todays_permissive_answers() {
        let pre = preflight(
            None,
            Some("https://any.example"),
            Some("Authorization, X-Custom, content-type"),
        );
        assert_eq!(get(&pre, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            get(&pre, "access-control-allow-methods"),
            Some("GET, POST, OPTIONS")
        );
        assert_eq!(
            get(&pre, "access-control-allow-headers"),
            Some("authorization, x-custom, content-type")
        );
        assert_eq!(get(&pre, "access-control-max-age"), Some("86400"));
        let pre = preflight(None, None, None);
        assert_eq!(
            get(&pre, "access-control-allow-headers"),
            Some("authorization, content-type, x-api-key")
        );
        // Garbage in the request header is not echoed.
        let pre = preflight(None, None, Some("x-ok, bad header, a\u{7f}b"));
        assert_eq!(get(&pre, "access-control-allow-headers"), Some("x-ok"));
        for origin in [None, Some("https://any.example")] {
            let h = response_headers(None, origin);
            assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
            assert_eq!(get(&h, "vary"), None);
            let exposed = get(&h, "access-control-expose-headers").unwrap();
            for name in [
                "x-request-id",
                "retry-after",
                "x-ratelimit-remaining-tokens",
                "server-timing",
                "x-relay-cache",
            ] {
                assert!(exposed.split(", ").any(|n| n == name), "{name}");
            }
        }
    }

    #[test]
    fn a_tenant_config_echoes_admitted_origins_only() {
        let c = config(
            json!({"origins": ["https://app.example.com"], "headers": ["x-custom"], "max_age_s": 600}),
        );
        let pre = preflight(
            Some(&c),
            Some("https://app.example.com"),
            Some("authorization, content-type, x-custom, x-secret, x-stainless-os, x-relay-user, anthropic-dangerous-direct-browser-access"),
        );
        assert_eq!(
            get(&pre, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(get(&pre, "vary"), Some("Origin"));
        assert_eq!(
            get(&pre, "access-control-allow-headers"),
            Some("authorization, content-type, x-custom, x-stainless-os, x-relay-user, anthropic-dangerous-direct-browser-access")
        );
        assert_eq!(get(&pre, "access-control-max-age"), Some("600"));
        // Another origin: no allow-origin, so the browser stops there.
        let pre = preflight(
            Some(&c),
            Some("https://evil.example"),
            Some("authorization"),
        );
        assert_eq!(pre, vec![("vary", "Origin".to_string())]);
        let h = response_headers(Some(&c), Some("https://app.example.com"));
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(get(&h, "vary"), Some("Origin"));
        assert!(get(&h, "access-control-expose-headers").is_some());
        assert_eq!(
            response_headers(Some(&c), Some("https://evil.example")),
            vec![("vary", "Origin".to_string())]
        );
        // A server caller sends no Origin: nothing to echo.
        assert_eq!(
            response_headers(Some(&c), None),
            vec![("vary", "Origin".to_string())]
        );
        // A config of "*" answers "*".
        let any = config(json!({"origins": ["*"]}));
        assert_eq!(
            get(
                &response_headers(Some(&any), Some("https://x.example")),
                "access-control-allow-origin"
            ),
            Some("*")
        );
    }

    #[test]
    fn server_only_keys_and_refuse_others() {
        let listed = config(json!({"origins": ["https://app.example.com"], "refuse_others": true}));
        let lenient = config(json!({"origins": ["https://app.example.com"]}));
        let code = |r: Result<(), RelayError>| r.map_err(|e| (e.status(), e.code()));
        let refused = Err((403, "origin_not_allowed"));
        // No Origin: servers always pass.
        assert_eq!(code(check_origin(Some(&listed), None, true)), Ok(()));
        assert_eq!(code(check_origin(None, None, true)), Ok(()));
        // A server-only key refuses every browser.
        assert_eq!(
            code(check_origin(None, Some("https://app.example.com"), true)),
            refused
        );
        assert_eq!(
            check_origin(Some(&lenient), Some("https://app.example.com"), true),
            Err(RelayError::OriginNotAllowed { server_only: true })
        );
        // refuse_others refuses unlisted origins only.
        assert_eq!(
            code(check_origin(
                Some(&listed),
                Some("https://app.example.com"),
                false
            )),
            Ok(())
        );
        assert_eq!(
            code(check_origin(
                Some(&listed),
                Some("https://evil.example"),
                false
            )),
            refused
        );
        assert_eq!(
            code(check_origin(Some(&listed), Some("null"), false)),
            refused
        );
        assert_eq!(
            code(check_origin(
                Some(&lenient),
                Some("https://evil.example"),
                false
            )),
            Ok(())
        );
        assert_eq!(
            code(check_origin(None, Some("https://evil.example"), false)),
            Ok(())
        );
    }
}
