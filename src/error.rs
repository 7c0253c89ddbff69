//! The one error type of the relay: every failure a client can see, its HTTP status, and the
//! OpenAI-shaped body `{"error":{"message","type","param","code"}}` it is answered with.
//!
//! The status mapping is an exhaustive match with no catch-all arm, so a new variant cannot
//! ship without a decided status. Upstream detail that could carry secrets (bodies of upstream
//! auth failures, internal errors) is held for the server log and never put in the body.

use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayError {
    /// The body is not JSON, or not a JSON object.
    InvalidJson {
        detail: String,
    },
    MissingParameter {
        param: String,
    },
    InvalidType {
        param: String,
        expected: &'static str,
    },
    InvalidValue {
        param: String,
        message: String,
    },
    MissingApiKey,
    InvalidApiKey,
    KeyRevoked,
    KeyExpired,
    InvalidAdminToken,
    /// A tenant-signed bearer token (JWT) that is not one: malformed, a bad signature, an
    /// algorithm or key id the tenant does not use. `reason` is safe to show: it never says what
    /// the tenant's configuration expects.
    TokenInvalid {
        reason: &'static str,
    },
    TokenExpired,
    /// `nbf` (or `iat`) is later than now, beyond the allowed clock skew.
    TokenNotYetValid,
    /// The token lives longer than the relay accepts (`exp - iat`, or `exp - now`).
    TokenLifetimeTooLong,
    TokenWrongIssuer,
    TokenWrongAudience,
    TenantDisabled,
    /// A tenant-scoped admin token reaching for what only the operator may touch.
    Forbidden,
    /// A tenant admin token whose role does not cover this admin operation.
    RoleForbidden {
        role: &'static str,
    },
    /// A browser request (it has an `Origin`) that the key or its tenant does not admit:
    /// `server_only` for a key that browsers may never use, else an origin not in the tenant's
    /// CORS list with `refuse_others` set.
    OriginNotAllowed {
        server_only: bool,
    },
    /// An access rule of the key or its tenant refuses this client.
    AccessDenied {
        reason: &'static str,
    },
    /// A rate limit, concurrency limit or quota of the key or its tenant.
    LimitExceeded {
        /// Which limit, in words ("requests per minute", "tokens per day").
        limit: String,
        /// Whose limit: "key" or "tenant".
        scope: &'static str,
        /// Per-minute and concurrency limits pass; quotas are spent until the period ends.
        quota: bool,
        retry_after_ms: Option<u64>,
        /// The limiter's `x-ratelimit-*` headers for the refusal (`Retry-After` is added here).
        rate_headers: Vec<(&'static str, String)>,
    },
    /// The tenant's hard budget is spent (and it chose to block rather than downgrade).
    BudgetExceeded {
        period: &'static str,
        retry_after_ms: Option<u64>,
    },
    /// A prepaid tenant's credit balance does not cover the request's worst-case cost. No
    /// `Retry-After`: only a top-up helps, and time does not.
    InsufficientBalance,
    /// The operator switched the relay off, for everyone (`scope` "relay") or for one tenant
    /// ("tenant"); `message` is the operator's own words, shown as they are.
    RelayDisabled {
        scope: &'static str,
        message: Option<String>,
        retry_after_s: Option<u32>,
    },
    /// The tenant is pinned to a jurisdiction and no channel there serves the model.
    RegionNotServed {
        model: String,
        jurisdiction: String,
    },
    ModelNotFound {
        model: String,
    },
    /// A route, or an admin resource, that does not exist.
    NotFound {
        what: String,
    },
    /// `allowed`: the methods the path has, as `Allow` lists them.
    MethodNotAllowed {
        allowed: Vec<String>,
    },
    RequestTooLarge {
        limit: u64,
    },
    /// An admin change that would break something else (e.g. deleting a channel in use).
    Conflict {
        message: String,
    },
    /// The chosen channel cannot serve this endpoint (e.g. embeddings on a chat-only upstream).
    UnsupportedEndpoint {
        endpoint: &'static str,
        provider: &'static str,
    },
    ChannelUnavailable {
        reason: String,
    },
    /// The upstream refused the request as the caller's fault; its status and message are kept.
    UpstreamInvalidRequest {
        status: u16,
        message: String,
        param: Option<String>,
    },
    UpstreamRateLimited {
        retry_after: Option<String>,
    },
    /// The upstream is overloaded (HTTP 503, or Anthropic's 529).
    UpstreamOverloaded {
        retry_after: Option<String>,
    },
    /// The upstream answered 2xx with a body that is not what its format promises.
    UpstreamBadResponse {
        detail: String,
    },
    /// Strict mode: a request field cannot be carried to the chosen upstream.
    FieldNotSupported {
        field: String,
        provider: &'static str,
    },
    /// The upstream rejected the channel's credentials: an operator problem, not the client's.
    UpstreamAuthFailed,
    UpstreamError {
        status: u16,
    },
    UpstreamUnreachable,
    UpstreamTimeout {
        after_ms: u64,
    },
    /// The upstream's stream broke after it had started.
    UpstreamStreamBroken,
    /// A bug or a storage failure; `detail` goes to the log only.
    Internal {
        detail: String,
    },
}

impl RelayError {
    /// 400 `missing_required_parameter` naming `param`.
    pub fn missing(param: &str) -> RelayError {
        RelayError::MissingParameter {
            param: param.into(),
        }
    }

    /// 400 `invalid_type`: `param` is not `expected` ("a string", "an array of …").
    pub fn invalid_type(param: &str, expected: &'static str) -> RelayError {
        RelayError::InvalidType {
            param: param.into(),
            expected,
        }
    }

    /// 400 `invalid_value`: `param` has the right type and a wrong value.
    pub fn invalid_value(param: &str, message: impl Into<String>) -> RelayError {
        RelayError::InvalidValue {
            param: param.into(),
            message: message.into(),
        }
    }

    /// 500 for a bug or a storage failure: `what` failed with `e`. The detail goes to the log
    /// only; the client sees a generic message.
    pub fn internal(what: impl std::fmt::Display, e: impl std::fmt::Display) -> RelayError {
        RelayError::Internal {
            detail: format!("{what}: {e}"),
        }
    }

    /// The same error with `prefix` put before the field it names (`breaker.` + `window_ms`),
    /// for input checked by a parser that knows only its own part of the body. An error about
    /// the part as a whole (an empty `param`) names the part.
    pub fn prefixed(self, prefix: &str) -> RelayError {
        let join = |param: String| {
            if param.is_empty() {
                prefix.trim_end_matches('.').to_string()
            } else {
                format!("{prefix}{param}")
            }
        };
        match self {
            RelayError::MissingParameter { param } => {
                RelayError::MissingParameter { param: join(param) }
            }
            RelayError::InvalidType { param, expected } => RelayError::InvalidType {
                param: join(param),
                expected,
            },
            RelayError::InvalidValue { param, message } => RelayError::InvalidValue {
                param: join(param),
                message,
            },
            other => other,
        }
    }

    pub fn status(&self) -> u16 {
        use RelayError::*;
        match self {
            InvalidJson { .. }
            | MissingParameter { .. }
            | InvalidType { .. }
            | InvalidValue { .. } => 400,
            UnsupportedEndpoint { .. } | FieldNotSupported { .. } => 400,
            MissingApiKey | InvalidApiKey | KeyRevoked | KeyExpired | InvalidAdminToken => 401,
            TokenInvalid { .. }
            | TokenExpired
            | TokenNotYetValid
            | TokenLifetimeTooLong
            | TokenWrongIssuer
            | TokenWrongAudience => 401,
            BudgetExceeded { .. } | InsufficientBalance => 402,
            TenantDisabled | AccessDenied { .. } | Forbidden | RegionNotServed { .. } => 403,
            RoleForbidden { .. } | OriginNotAllowed { .. } => 403,
            ModelNotFound { .. } | NotFound { .. } => 404,
            MethodNotAllowed { .. } => 405,
            Conflict { .. } => 409,
            RequestTooLarge { .. } => 413,
            UpstreamInvalidRequest { status, .. } => *status,
            UpstreamRateLimited { .. } | LimitExceeded { .. } => 429,
            Internal { .. } => 500,
            UpstreamAuthFailed
            | UpstreamError { .. }
            | UpstreamUnreachable
            | UpstreamStreamBroken
            | UpstreamBadResponse { .. } => 502,
            ChannelUnavailable { .. } | UpstreamOverloaded { .. } | RelayDisabled { .. } => 503,
            UpstreamTimeout { .. } => 504,
        }
    }

    /// OpenAI's `type` field: the family of the error.
    pub fn error_type(&self) -> &'static str {
        use RelayError::*;
        match self {
            InvalidJson { .. }
            | MissingParameter { .. }
            | InvalidType { .. }
            | InvalidValue { .. }
            | UnsupportedEndpoint { .. }
            | FieldNotSupported { .. }
            | ModelNotFound { .. }
            | NotFound { .. }
            | MethodNotAllowed { .. }
            | Conflict { .. }
            | RequestTooLarge { .. }
            | UpstreamInvalidRequest { .. }
            // OpenAI itself answers a bad key with invalid_request_error; SDKs key off the status.
            | MissingApiKey
            | InvalidApiKey
            | KeyRevoked
            | KeyExpired
            | InvalidAdminToken
            | TokenInvalid { .. }
            | TokenExpired
            | TokenNotYetValid
            | TokenLifetimeTooLong
            | TokenWrongIssuer
            | TokenWrongAudience => "invalid_request_error",
            TenantDisabled
            | AccessDenied { .. }
            | Forbidden
            | RoleForbidden { .. }
            | OriginNotAllowed { .. }
            | RegionNotServed { .. } => "permission_error",
            LimitExceeded { quota: true, .. } | BudgetExceeded { .. } | InsufficientBalance => {
                "insufficient_quota"
            }
            UpstreamRateLimited { .. } | LimitExceeded { quota: false, .. } => "rate_limit_error",
            ChannelUnavailable { .. }
            | UpstreamAuthFailed
            | UpstreamError { .. }
            | UpstreamUnreachable
            | UpstreamTimeout { .. }
            | UpstreamOverloaded { .. }
            | UpstreamBadResponse { .. }
            | UpstreamStreamBroken => "upstream_error",
            Internal { .. } | RelayDisabled { .. } => "server_error",
        }
    }

    /// A stable machine-readable `code`; the README lists them.
    pub fn code(&self) -> &'static str {
        use RelayError::*;
        match self {
            InvalidJson { .. } => "invalid_json",
            MissingParameter { .. } => "missing_required_parameter",
            InvalidType { .. } => "invalid_type",
            InvalidValue { .. } => "invalid_value",
            MissingApiKey => "missing_api_key",
            InvalidApiKey => "invalid_api_key",
            KeyRevoked => "key_revoked",
            KeyExpired => "key_expired",
            InvalidAdminToken => "invalid_admin_token",
            TokenInvalid { .. } => "token_invalid",
            TokenExpired => "token_expired",
            TokenNotYetValid => "token_not_yet_valid",
            TokenLifetimeTooLong => "token_lifetime_too_long",
            TokenWrongIssuer => "token_wrong_issuer",
            TokenWrongAudience => "token_wrong_audience",
            TenantDisabled => "tenant_disabled",
            AccessDenied { .. } => "access_denied",
            Forbidden => "forbidden",
            RoleForbidden { .. } => "role_forbidden",
            OriginNotAllowed { .. } => "origin_not_allowed",
            LimitExceeded { quota: false, .. } => "rate_limit_exceeded",
            LimitExceeded { quota: true, .. } => "insufficient_quota",
            BudgetExceeded { .. } => "budget_exceeded",
            InsufficientBalance => "insufficient_balance",
            RelayDisabled { .. } => "relay_disabled",
            RegionNotServed { .. } => "region_not_served",
            ModelNotFound { .. } => "model_not_found",
            NotFound { .. } => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            RequestTooLarge { .. } => "request_too_large",
            Conflict { .. } => "conflict",
            UnsupportedEndpoint { .. } => "unsupported_endpoint",
            ChannelUnavailable { .. } => "channel_unavailable",
            UpstreamInvalidRequest { .. } => "upstream_invalid_request",
            UpstreamRateLimited { .. } => "upstream_rate_limited",
            UpstreamOverloaded { .. } => "upstream_overloaded",
            UpstreamBadResponse { .. } => "upstream_bad_response",
            FieldNotSupported { .. } => "unsupported_parameter",
            UpstreamAuthFailed => "upstream_auth_failed",
            UpstreamError { .. } => "upstream_error",
            UpstreamUnreachable => "upstream_unreachable",
            UpstreamTimeout { .. } => "upstream_timeout",
            UpstreamStreamBroken => "upstream_stream_broken",
            Internal { .. } => "internal_error",
        }
    }

    pub fn param(&self) -> Option<&str> {
        use RelayError::*;
        match self {
            MissingParameter { param } | InvalidType { param, .. } | InvalidValue { param, .. } => {
                Some(param)
            }
            ModelNotFound { .. } | UnsupportedEndpoint { .. } | RegionNotServed { .. } => {
                Some("model")
            }
            FieldNotSupported { field, .. } => Some(field),
            UpstreamInvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// The human-readable message. Never contains upstream secrets or internal detail.
    pub fn message(&self) -> String {
        use RelayError::*;
        match self {
            InvalidJson { detail } => format!("We could not parse the JSON body of your request: {detail}"),
            MissingParameter { param } => format!("Missing required parameter: '{param}'."),
            InvalidType { param, expected } => format!("Invalid type for '{param}': expected {expected}."),
            InvalidValue { param, message } => format!("Invalid value for '{param}': {message}"),
            MissingApiKey => "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.".into(),
            InvalidApiKey => "Incorrect API key provided.".into(),
            KeyRevoked => "This API key has been revoked.".into(),
            KeyExpired => "This API key has expired.".into(),
            InvalidAdminToken => "Missing or incorrect admin token.".into(),
            TokenInvalid { reason } => format!("The bearer token was refused: {reason}."),
            TokenExpired => "The bearer token has expired; get a new one from the app's backend.".into(),
            TokenNotYetValid => "The bearer token is not valid yet (its nbf or iat is in the future, beyond 60 s of clock skew).".into(),
            TokenLifetimeTooLong => "The bearer token lives longer than 24 hours (exp - iat); issue shorter-lived tokens.".into(),
            TokenWrongIssuer => "The bearer token's iss is not the issuer configured for its tenant.".into(),
            TokenWrongAudience => "The bearer token's aud does not include the audience configured for its tenant.".into(),
            TenantDisabled => "The tenant this key belongs to is disabled.".into(),
            AccessDenied { reason } => format!("This key may not be used {reason}."),
            Forbidden => "This token manages only its own tenant's keys, limits, usage and audit log.".into(),
            RoleForbidden { role } => format!("This admin token has the role '{role}', which does not allow this operation."),
            OriginNotAllowed { server_only: true } => "This key is for servers only; requests from a browser (with an Origin header) are refused.".into(),
            OriginNotAllowed { server_only: false } => "Requests from this origin are not allowed by the tenant's CORS settings.".into(),
            LimitExceeded { limit, scope, quota, retry_after_ms, .. } => {
                let when = retry_after_ms.map(|ms| format!(" Try again in {}s.", ms.div_ceil(1000))).unwrap_or_default();
                let what = if *quota { "quota" } else { "limit" };
                format!("The {scope}'s {what} of {limit} has been reached.{when}")
            }
            BudgetExceeded { period, retry_after_ms } => {
                let when = retry_after_ms.map(|ms| format!(" It renews in {}s.", ms.div_ceil(1000))).unwrap_or_default();
                format!("The tenant's {period}ly budget is spent; requests are refused until it renews.{when}")
            }
            InsufficientBalance => "The tenant's prepaid credit balance is too low for this request; requests are refused until it is topped up.".into(),
            RelayDisabled { scope, message, retry_after_s } => {
                let whom = if *scope == "tenant" { "Requests for this tenant are" } else { "The relay is" };
                let when = retry_after_s.map(|s| format!(" Try again in {s}s.")).unwrap_or_default();
                match message {
                    Some(m) => format!("{whom} temporarily disabled by the operator: {m}{when}"),
                    None => format!("{whom} temporarily disabled by the operator.{when}"),
                }
            }
            RegionNotServed { model, jurisdiction } => format!(
                "The model '{model}' has no channel in this tenant's jurisdiction '{jurisdiction}'; requests are never sent outside it."
            ),
            ModelNotFound { model } => {
                format!("The model '{model}' does not exist or you do not have access to it.")
            }
            NotFound { what } => format!("{what} not found."),
            MethodNotAllowed { allowed } => {
                format!("Method not allowed. Allowed: {}.", allowed.join(", "))
            }
            RequestTooLarge { limit } => format!("Request body is larger than the limit of {limit} bytes."),
            Conflict { message } => message.clone(),
            UnsupportedEndpoint { endpoint, provider } => {
                format!("The model's channel ({provider}) does not support {endpoint}.")
            }
            ChannelUnavailable { reason } => format!("The model is temporarily unavailable: {reason}."),
            UpstreamInvalidRequest { message, .. } => message.clone(),
            UpstreamRateLimited { .. } => "The upstream provider is rate limiting requests; retry later.".into(),
            UpstreamOverloaded { .. } => "The upstream provider is overloaded; retry later.".into(),
            UpstreamBadResponse { .. } => "The upstream provider sent a reply the relay could not read.".into(),
            FieldNotSupported { field, provider } => format!(
                "'{field}' cannot be carried to this model's upstream ({provider}); send the request without it, or without strict mode."
            ),
            UpstreamAuthFailed => {
                "The upstream provider rejected the relay's credentials for this model. This is not a problem with your key; the operator has been told.".into()
            }
            UpstreamError { status } => format!("The upstream provider failed (status {status})."),
            UpstreamUnreachable => "The upstream provider could not be reached.".into(),
            UpstreamTimeout { after_ms } => {
                format!("The upstream provider did not respond within {after_ms} ms.")
            }
            UpstreamStreamBroken => "The upstream provider's stream broke off.".into(),
            Internal { .. } => "The relay hit an internal error.".into(),
        }
    }

    /// Extra response headers the error implies.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        use RelayError::*;
        let retry_after = |ms: &u64| ("retry-after", ms.div_ceil(1000).max(1).to_string());
        match self {
            MethodNotAllowed { allowed } => vec![("allow", allowed.join(", "))],
            LimitExceeded {
                retry_after_ms,
                rate_headers,
                ..
            } => {
                let mut h = rate_headers.clone();
                h.extend(retry_after_ms.as_ref().map(retry_after));
                h
            }
            BudgetExceeded { retry_after_ms, .. } => retry_after_ms
                .as_ref()
                .map(retry_after)
                .into_iter()
                .collect(),
            RelayDisabled { retry_after_s, .. } => retry_after_s
                .map(|s| ("retry-after", s.max(1).to_string()))
                .into_iter()
                .collect(),
            UpstreamRateLimited { retry_after } | UpstreamOverloaded { retry_after } => retry_after
                .as_ref()
                .map(|after| ("retry-after", after.clone()))
                .into_iter()
                .collect(),
            // RFC 6750 §3: a bearer token that was presented and refused.
            TokenInvalid { .. }
            | TokenExpired
            | TokenNotYetValid
            | TokenLifetimeTooLong
            | TokenWrongIssuer
            | TokenWrongAudience => {
                vec![("www-authenticate", r#"Bearer error="invalid_token""#.into())]
            }
            InvalidJson { .. }
            | MissingParameter { .. }
            | InvalidType { .. }
            | InvalidValue { .. }
            | MissingApiKey
            | InvalidApiKey
            | KeyRevoked
            | KeyExpired
            | InvalidAdminToken
            | TenantDisabled
            | InsufficientBalance
            | Forbidden
            | RoleForbidden { .. }
            | OriginNotAllowed { .. }
            | AccessDenied { .. }
            | RegionNotServed { .. }
            | ModelNotFound { .. }
            | NotFound { .. }
            | RequestTooLarge { .. }
            | Conflict { .. }
            | UnsupportedEndpoint { .. }
            | ChannelUnavailable { .. }
            | UpstreamInvalidRequest { .. }
            | UpstreamBadResponse { .. }
            | FieldNotSupported { .. }
            | UpstreamAuthFailed
            | UpstreamError { .. }
            | UpstreamUnreachable
            | UpstreamTimeout { .. }
            | UpstreamStreamBroken
            | Internal { .. } => Vec::new(),
        }
    }

    /// The JSON value of the body (the SSE error event of a broken stream reuses it).
    pub fn body_value(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }

    pub fn body(&self) -> String {
        self.body_value().to_string()
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status(), self.code(), self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<RelayError> {
        use RelayError::*;
        vec![
            InvalidJson { detail: "x".into() },
            MissingParameter {
                param: "model".into(),
            },
            InvalidType {
                param: "messages".into(),
                expected: "an array",
            },
            InvalidValue {
                param: "n".into(),
                message: "bad".into(),
            },
            MissingApiKey,
            InvalidApiKey,
            KeyRevoked,
            BudgetExceeded {
                period: "month",
                retry_after_ms: Some(1500),
            },
            RegionNotServed {
                model: "m".into(),
                jurisdiction: "eu".into(),
            },
            KeyExpired,
            InvalidAdminToken,
            TenantDisabled,
            ModelNotFound { model: "m".into() },
            NotFound {
                what: "Route".into(),
            },
            MethodNotAllowed {
                allowed: vec!["POST".into()],
            },
            RequestTooLarge { limit: 10 },
            Conflict {
                message: "in use".into(),
            },
            UnsupportedEndpoint {
                endpoint: "embeddings",
                provider: "mock",
            },
            ChannelUnavailable {
                reason: "disabled".into(),
            },
            UpstreamInvalidRequest {
                status: 422,
                message: "bad".into(),
                param: None,
            },
            UpstreamRateLimited {
                retry_after: Some("3".into()),
            },
            UpstreamOverloaded { retry_after: None },
            AccessDenied {
                reason: "from this address",
            },
            Forbidden,
            TokenInvalid {
                reason: "its signature does not verify",
            },
            TokenExpired,
            TokenNotYetValid,
            TokenLifetimeTooLong,
            TokenWrongIssuer,
            TokenWrongAudience,
            RoleForbidden { role: "viewer" },
            OriginNotAllowed { server_only: true },
            OriginNotAllowed { server_only: false },
            LimitExceeded {
                limit: "requests per minute".into(),
                scope: "key",
                quota: false,
                retry_after_ms: Some(1500),
                rate_headers: Vec::new(),
            },
            UpstreamBadResponse { detail: "x".into() },
            FieldNotSupported {
                field: "seed".into(),
                provider: "anthropic",
            },
            UpstreamAuthFailed,
            UpstreamError { status: 500 },
            UpstreamUnreachable,
            UpstreamTimeout { after_ms: 5 },
            UpstreamStreamBroken,
            Internal {
                detail: "secret detail".into(),
            },
            InsufficientBalance,
            RelayDisabled {
                scope: "relay",
                message: Some("maintenance".into()),
                retry_after_s: Some(300),
            },
        ]
    }

    #[test]
    fn every_body_has_the_four_openai_fields() {
        for e in all() {
            let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
            let err = v.get("error").and_then(|e| e.as_object()).unwrap();
            for k in ["message", "type", "param", "code"] {
                assert!(err.contains_key(k), "{e:?} lacks {k}");
            }
            assert_eq!(err["code"], e.code());
            assert!((400..600).contains(&e.status()), "{e:?}");
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        use RelayError::*;
        assert_eq!(MissingApiKey.status(), 401);
        assert_eq!(TenantDisabled.status(), 403);
        assert_eq!(ModelNotFound { model: "x".into() }.status(), 404);
        assert_eq!(RequestTooLarge { limit: 1 }.status(), 413);
        assert_eq!(UpstreamAuthFailed.status(), 502);
        assert_eq!(UpstreamTimeout { after_ms: 1 }.status(), 504);
        let e = UpstreamInvalidRequest {
            status: 422,
            message: "m".into(),
            param: Some("x".into()),
        };
        assert_eq!((e.status(), e.param()), (422, Some("x")));
    }

    #[test]
    fn internal_detail_never_reaches_the_body() {
        let body = RelayError::Internal {
            detail: "secret detail".into(),
        }
        .body();
        assert!(!body.contains("secret"));
    }

    #[test]
    fn prepaid_and_switch_refusals() {
        let e = RelayError::InsufficientBalance;
        assert_eq!((e.status(), e.code()), (402, "insufficient_balance"));
        assert!(
            e.headers().is_empty(),
            "no Retry-After: time does not top up"
        );
        let e = RelayError::RelayDisabled {
            scope: "relay",
            message: Some("Planned maintenance until 14:00 UTC.".into()),
            retry_after_s: Some(300),
        };
        assert_eq!((e.status(), e.code()), (503, "relay_disabled"));
        assert_eq!(e.headers(), vec![("retry-after", "300".to_string())]);
        assert!(e.message().contains("Planned maintenance until 14:00 UTC."));
        let e = RelayError::RelayDisabled {
            scope: "tenant",
            message: None,
            retry_after_s: None,
        };
        assert!(e.headers().is_empty());
        assert!(e.message().starts_with("Requests for this tenant"));
    }

    #[test]
    fn headers_carry_allow_and_retry_after() {
        let e = RelayError::MethodNotAllowed {
            allowed: vec!["GET".into(), "POST".into()],
        };
        assert_eq!(e.headers(), vec![("allow", "GET, POST".to_string())]);
        let e = RelayError::UpstreamRateLimited {
            retry_after: Some("7".into()),
        };
        assert_eq!(e.headers(), vec![("retry-after", "7".to_string())]);
    }

    #[test]
    fn token_refusals_are_401_with_distinct_codes_and_a_bearer_challenge() {
        use RelayError::*;
        let refusals = [
            TokenInvalid { reason: "x" },
            TokenExpired,
            TokenNotYetValid,
            TokenLifetimeTooLong,
            TokenWrongIssuer,
            TokenWrongAudience,
        ];
        let mut codes: Vec<_> = refusals.iter().map(RelayError::code).collect();
        codes.dedup();
        assert_eq!(codes.len(), refusals.len());
        for e in refusals {
            assert_eq!(e.status(), 401, "{e:?}");
            assert_eq!(
                e.headers(),
                vec![(
                    "www-authenticate",
                    r#"Bearer error="invalid_token""#.to_string()
                )]
            );
        }
        assert_eq!(RoleForbidden { role: "keys" }.status(), 403);
        assert_eq!(
            OriginNotAllowed { server_only: true }.code(),
            "origin_not_allowed"
        );
    }
}
