//! What a browser or phone may send the relay directly: a bearer credential that may be a
//! tenant-signed JWT (`governance::tokens`), an `Origin` (`governance::cors`) and an end-user id
//! (`governance::end_user`), all attacker-controlled.
//!
//! The first byte chooses the tenant config (HS256 or a JWKS with an RSA, an EC and an Ed25519
//! key) and whether WebCrypto is told the signature held; the rest is the credential, also
//! read as an origin and a user id.
//!
//! Checks: no panic; whatever `parse` accepts `looks_like_jwt`, and so does whatever has an
//! issuer to peek; a refusal of a token is a 401, of an origin a 403; a token verified and
//! checked names a valid end user and lives at most a day; an origin the config admits is
//! among its lookup keys' reach, and preflights/response headers never echo an origin the
//! config does not admit.
#![no_main]

use edgerelay::error::RelayError;
use edgerelay::governance::cors;
use edgerelay::governance::end_user;
use edgerelay::governance::tokens::{self, JwtConfig, Verifier};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const NOW_MS: i64 = 1_700_000_600_000;

fn configs() -> [JwtConfig; 2] {
    let hs = json!({"issuer": "https://auth.example.com", "audience": "edgerelay",
                    "hs256_secret": "edgerelay-test-secret-0123456789abcdef"});
    let jwks = json!({"issuer": "https://auth.example.com", "audience": "edgerelay", "jwks": {"keys": [
        {"kty": "RSA", "kid": "rsa", "e": "AQAB", "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    ]}});
    let parse = |v| {
        tokens::parse_jwt(&v, None)
            .ok()
            .flatten()
            .expect("fixed config is valid")
    };
    [parse(hs), parse(jwks)]
}

fn token_refusal(e: tokens::TokenError) {
    let e = RelayError::from(e);
    assert_eq!(e.status(), 401, "{e:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text = text.as_ref();

    // ---- tokens ----
    let config = &configs()[usize::from(flags & 1)];
    let looks = tokens::looks_like_jwt(text);
    if tokens::peek_issuer(text).is_some() {
        assert!(looks, "peeked an issuer of a non-JWT");
    }
    match tokens::parse(text) {
        Err(e) => token_refusal(e),
        Ok(parsed) => {
            assert!(looks, "parsed a non-JWT");
            assert!(text.len() <= tokens::MAX_TOKEN_BYTES);
            assert!(text.as_bytes().starts_with(parsed.signing_input()));
            let verified = match tokens::select_key(parsed, config) {
                Err(e) => return token_refusal(e),
                Ok(Verifier::Hmac(check)) => check.verify(),
                Ok(Verifier::WebCrypto(check)) => {
                    assert!(check.jwk.is_object());
                    assert!(matches!(check.signature.len(), 64 | 256));
                    check.conclude(flags & 2 != 0)
                }
            };
            match verified.and_then(|v| tokens::check_claims(&v, config, NOW_MS)) {
                Err(e) => token_refusal(e),
                Ok(claims) => {
                    assert!(end_user::check_user_id(&claims.subject).is_ok());
                    assert!(claims.expires_at_ms + tokens::CLOCK_SKEW_MS > NOW_MS);
                    let from = claims.issued_at_ms.unwrap_or(NOW_MS);
                    assert!(claims.expires_at_ms - from <= tokens::MAX_LIFETIME_MS);
                }
            }
        }
    }

    // ---- origins ----
    let cors_config = cors::parse_cors(&json!({
        "origins": ["https://app.example.com", "https://*.example.org", "http://localhost:3000"],
        "refuse_others": true,
    }))
    .ok()
    .flatten()
    .expect("fixed CORS config is valid");
    let admitted = cors::match_origin(&cors_config, text);
    if admitted {
        let keys = cors::lookup_keys(text);
        assert!(
            keys.iter().any(|k| cors_config.origins.contains(k)),
            "{keys:?}"
        );
    }
    let echoed = |headers: &[(&'static str, String)]| {
        headers
            .iter()
            .any(|(n, _)| *n == "access-control-allow-origin")
    };
    assert_eq!(
        echoed(&cors::response_headers(Some(&cors_config), Some(text))),
        admitted
    );
    assert_eq!(
        echoed(&cors::preflight(Some(&cors_config), Some(text), Some(text))),
        admitted
    );
    match cors::check_origin(Some(&cors_config), Some(text), false) {
        Ok(()) => assert!(admitted),
        Err(e) => assert_eq!(e.status(), 403),
    }
    // An admin may type anything: it is a config or a 400.
    if let Err(e) = cors::parse_cors(&json!({"origins": [text]})) {
        assert_eq!(e.status(), 400);
    }

    // ---- end users ----
    match end_user::end_user(None, Some(text), None, None) {
        Ok(Some(user)) => {
            assert!(user.id.len() <= end_user::MAX_USER_ID_BYTES);
            assert_eq!(
                end_user::limiter_name("ten_1", &user.id).len(),
                "user:ten_1:".len() + 32
            );
        }
        Ok(None) => unreachable!("a user id was given"),
        Err(e) => assert_eq!(e.status(), 400),
    }
});
