//! Tenant-signed tokens for end users: an app's backend signs a short-lived JWT (JWS compact
//! serialization, RFC 7515/7518/7519, EdDSA per RFC 8037) for its user, and the user's browser
//! or phone calls the relay with it directly. This module owns a tenant's verification config
//! (issuer, audience, public keys or an HS256 secret) as the admin API sets it, parsing a token,
//! choosing the one key that may verify it, verifying HS256 itself, handing RS256/ES256/EdDSA
//! to WebCrypto in the edge, and checking the claims once the signature holds.
//!
//! The order a request goes through, and why:
//! 1. [`looks_like_jwt`] tells a JWT from a relay key (`sk-er-…`) without decoding anything.
//! 2. [`peek_issuer`] reads `iss` unverified, only to find the tenant whose config applies.
//! 3. [`parse`] decodes strictly (one spelling per token, size-capped, `alg: none` and `crit`
//!    refused) — nothing from the token is trusted yet.
//! 4. [`select_key`] picks the key by `kid` and insists the header's `alg` is that key's own:
//!    a token never chooses how it is verified (no RSA public key used as an HMAC secret, no
//!    HS256 against a JWKS config, no asymmetric alg against an HS256 config).
//! 5. The [`Verifier`] checks the signature: HS256 here, in constant time; the others through
//!    `crypto.subtle` with exactly what [`WebCryptoCheck`] lists. Only that yields
//!    [`VerifiedClaims`], so claims cannot be checked — or trusted — before the signature.
//! 6. [`check_claims`]: issuer, audience, expiry with 60 s of skew, a 24 h lifetime cap, the end
//!    user (`sub`), and the optional narrowing claims `models`, `plan`, `key`.
//!
//! Refusals are 401s with distinct codes that help a developer fix their signer, and nothing
//! that helps forge a token: they never echo the expected issuer, audience or secret, nor say
//! which key would have matched.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::governance::auth::KEY_PREFIX;
use crate::governance::end_user;
use crate::governance::plans;
use crate::support::base64;
use crate::support::crypto::{constant_time_eq, hex, hmac_sha256, sha256};
use crate::support::fields::refuse_unknown;

/// Larger tokens are refused before any decoding: a JWT for one end user is a few hundred
/// bytes, and the cap bounds the work an anonymous caller can ask for.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clocks of the tenant's signer and of Cloudflare's edge disagree a little.
pub const CLOCK_SKEW_MS: i64 = 60_000;
/// Tokens are bearer credentials held by end users' devices; a day bounds what a leaked one is
/// worth, and the app's backend can always sign a fresh one.
pub const MAX_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
pub const MIN_HS256_SECRET_BYTES: usize = 32;
pub const MAX_HS256_SECRET_BYTES: usize = 1024;
/// Enough for a current key, the next one and the previous one several times over.
pub const MAX_JWKS_KEYS: usize = 10;
/// NIST SP 800-131A: RSA keys below 2048 bits are not acceptable for signatures.
pub const MIN_RSA_BITS: usize = 2048;
pub const MAX_RSA_BITS: usize = 8192;
pub const MAX_ISSUER_BYTES: usize = 256;
pub const MAX_KID_BYTES: usize = 128;
/// At most this many entries in a token's `models` claim.
pub const MAX_MODELS_CLAIM: usize = 64;
/// A relay key id (`key_` and 20 hex digits) fits with room to spare.
pub const MAX_KEY_CLAIM_BYTES: usize = 64;

// ---- errors -----------------------------------------------------------------------------------

/// Why a token was refused. `Invalid` carries a reason that is safe to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Invalid(&'static str),
    Expired,
    NotYetValid,
    LifetimeTooLong,
    WrongIssuer,
    WrongAudience,
}

const NOT_COMPACT: &str = "it is not a JWS in compact serialization (three base64url parts)";
const BAD_SIGNATURE: &str = "its signature does not verify";
const WRONG_ALG: &str = "its alg is not the one this issuer signs with";

impl TokenError {
    /// For the caller that looks the `plan` claim up among the tenant's plans.
    pub const UNKNOWN_PLAN: TokenError =
        TokenError::Invalid("its plan claim names no plan of the tenant");
    /// For the caller that looks the `key` claim up among the tenant's active keys.
    pub const UNKNOWN_KEY: TokenError =
        TokenError::Invalid("its key claim names no active key of the tenant");
}

impl From<TokenError> for RelayError {
    fn from(e: TokenError) -> RelayError {
        match e {
            TokenError::Invalid(reason) => RelayError::TokenInvalid { reason },
            TokenError::Expired => RelayError::TokenExpired,
            TokenError::NotYetValid => RelayError::TokenNotYetValid,
            TokenError::LifetimeTooLong => RelayError::TokenLifetimeTooLong,
            TokenError::WrongIssuer => RelayError::TokenWrongIssuer,
            TokenError::WrongAudience => RelayError::TokenWrongAudience,
        }
    }
}

// ---- algorithms -------------------------------------------------------------------------------

/// The signature algorithms accepted (RFC 7518 §3.1, RFC 8037 §3.1). Nothing else: not
/// `none`, not the RSA-PSS or larger-hash variants no tenant has asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
        }
    }

    /// Header values are case-sensitive (RFC 7515 §4.1.1): `None` or `hs256` are not aliases.
    fn parse(alg: &str) -> Result<Alg, TokenError> {
        match alg {
            "RS256" => Ok(Alg::Rs256),
            "ES256" => Ok(Alg::Es256),
            "EdDSA" => Ok(Alg::EdDsa),
            "HS256" => Ok(Alg::Hs256),
            "none" => Err(TokenError::Invalid(
                "alg 'none' (an unsigned token) is not accepted",
            )),
            _ => Err(TokenError::Invalid(
                "its alg is not one of RS256, ES256, EdDSA, HS256",
            )),
        }
    }
}

// ---- a tenant's verification config ------------------------------------------------------------

/// How a tenant's tokens are verified. Holds the HS256 secret, so it deliberately has no
/// `Serialize`: what the admin API shows is [`JwtConfig::view`], what the store keeps is
/// [`JwtConfig::to_stored`], and neither can be reached by accident through `json!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    issuer: String,
    audience: String,
    keys: Keys,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    Hs256(Secret),
    Jwks(Vec<PublicKey>),
}

/// An HS256 secret; its `Debug` never prints it, so a logged config leaks nothing.
#[derive(Clone, PartialEq, Eq)]
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// One public key of a tenant's JWKS, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: Option<String>,
    material: Material,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    /// Big-endian modulus and exponent without leading zero bytes.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// A P-256 point, checked to be on the curve.
    Ec {
        x: [u8; 32],
        y: [u8; 32],
    },
    Ed25519 {
        x: [u8; 32],
    },
}

impl PublicKey {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self.material {
            Material::Rsa { .. } => Alg::Rs256,
            Material::Ec { .. } => Alg::Es256,
            Material::Ed25519 { .. } => Alg::EdDsa,
        }
    }

    fn kty(&self) -> &'static str {
        match self.material {
            Material::Rsa { .. } => "RSA",
            Material::Ec { .. } => "EC",
            Material::Ed25519 { .. } => "OKP",
        }
    }

    /// The public JWK as stored: what was validated, in canonical form, and nothing else.
    fn to_jwk(&self) -> Value {
        let mut jwk = self.import_jwk();
        if let (Some(kid), Value::Object(map)) = (&self.kid, &mut jwk) {
            map.insert("kid".into(), json!(kid));
        }
        jwk
    }

    /// What `crypto.subtle.importKey("jwk", …)` takes. `alg` is included for RSA and EC, where
    /// WebCrypto checks it against the import algorithm; it is left out for Ed25519, where
    /// runtimes have disagreed on whether `EdDSA` or `Ed25519` is the right value and the
    /// algorithm is fixed by the import parameters anyway.
    fn import_jwk(&self) -> Value {
        match &self.material {
            Material::Rsa { n, e } => json!({
                "kty": "RSA",
                "n": base64::encode_url(n),
                "e": base64::encode_url(e),
                "alg": "RS256",
            }),
            Material::Ec { x, y } => json!({
                "kty": "EC",
                "crv": "P-256",
                "x": base64::encode_url(x),
                "y": base64::encode_url(y),
                "alg": "ES256",
            }),
            Material::Ed25519 { x } => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": base64::encode_url(x),
            }),
        }
    }

    /// `crypto.subtle.importKey`'s algorithm parameter.
    fn import_algorithm(&self) -> Value {
        match self.material {
            Material::Rsa { .. } => json!({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}),
            Material::Ec { .. } => json!({"name": "ECDSA", "namedCurve": "P-256"}),
            Material::Ed25519 { .. } => json!({"name": "Ed25519"}),
        }
    }

    /// `crypto.subtle.verify`'s algorithm parameter.
    fn verify_algorithm(&self) -> Value {
        match self.material {
            Material::Rsa { .. } => json!({"name": "RSASSA-PKCS1-v1_5"}),
            Material::Ec { .. } => json!({"name": "ECDSA", "hash": "SHA-256"}),
            Material::Ed25519 { .. } => json!({"name": "Ed25519"}),
        }
    }

    /// RSASSA-PKCS1-v1_5 signatures are exactly as long as the modulus (RFC 8017 §8.2.2);
    /// ES256 is r‖s, 32 bytes each (RFC 7518 §3.4); Ed25519 is 64 bytes (RFC 8032 §5.1.6).
    fn signature_len(&self) -> usize {
        match &self.material {
            Material::Rsa { n, .. } => n.len(),
            Material::Ec { .. } | Material::Ed25519 { .. } => 64,
        }
    }
}

/// What the admin API shows of a tenant's JWT config: never the secret, never key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwtConfigView {
    pub issuer: String,
    pub audience: String,
    /// Tokens are HS256 under a write-only secret.
    pub hs256: bool,
    /// The public keys by id and type (empty for HS256).
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyView {
    pub kid: Option<String>,
    pub kty: &'static str,
    pub alg: &'static str,
}

const CONFIG_FIELDS: &[&str] = &[
    "issuer",
    "audience",
    "jwks",
    "hs256_secret",
    // Shown by the view; ignored on a write (they say nothing the keys do not).
    "hs256",
    "keys",
];
const STORED_FIELDS: &[&str] = &["issuer", "audience", "jwks", "hs256_key"];

/// The `jwt` field of a tenant write: `null` turns tenant-signed tokens off (`Ok(None)`);
/// otherwise `{"issuer","audience","jwks":{"keys":[…]}}` or `{"issuer","audience",
/// "hs256_secret":"…"}`. With neither `jwks` nor `hs256_secret` the `current` keys stay, so the
/// GET's view written back (its `hs256`/`keys` are ignored) changes nothing, and a new issuer
/// or audience can be set without resending the secret. Errors name the field (`jwt.issuer`,
/// `jwt.jwks.keys[1].n`, `jwt.hs256_secret`). The issuer's uniqueness across tenants is the
/// caller's to check, on [`JwtConfig::issuer`].
pub fn parse_jwt(
    value: &Value,
    current: Option<&JwtConfig>,
) -> Result<Option<JwtConfig>, RelayError> {
    let map = match value {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        _ => return Err(RelayError::invalid_type("jwt", "an object or null")),
    };
    parse_config(map, current, false)
        .map(Some)
        .map_err(|e| e.prefixed("jwt."))
}

fn parse_config(
    map: &Map<String, Value>,
    current: Option<&JwtConfig>,
    stored: bool,
) -> Result<JwtConfig, RelayError> {
    refuse_unknown(map, if stored { STORED_FIELDS } else { CONFIG_FIELDS })?;
    let text = |field: &'static str, kept: Option<&String>| -> Result<String, RelayError> {
        match map.get(field) {
            None | Some(Value::Null) => kept.cloned().ok_or_else(|| RelayError::missing(field)),
            Some(Value::String(s)) => check_text(field, s.trim(), MAX_ISSUER_BYTES),
            Some(_) => Err(RelayError::invalid_type(field, "a string")),
        }
    };
    // RFC 7519 §4.1.1/§4.1.3: iss and aud are compared as exact, case-sensitive strings, so the
    // only normalisation is trimming what an admin could not have meant.
    let issuer = text("issuer", current.map(|c| &c.issuer))?;
    let audience = text("audience", current.map(|c| &c.audience))?;
    let secret_field = if stored { "hs256_key" } else { "hs256_secret" };
    let keys = match (map.get("jwks"), map.get(secret_field)) {
        (Some(_), Some(_)) => {
            return Err(RelayError::invalid_value(
                secret_field,
                "send either jwks or hs256_secret, not both",
            ))
        }
        (Some(jwks), None) => Keys::Jwks(parse_jwks(jwks)?),
        (None, Some(secret)) => Keys::Hs256(parse_secret(secret_field, secret, stored)?),
        (None, None) => match current {
            Some(c) => c.keys.clone(),
            None => return Err(RelayError::missing("jwks")),
        },
    };
    Ok(JwtConfig {
        issuer,
        audience,
        keys,
    })
}

fn parse_secret(field: &str, value: &Value, stored: bool) -> Result<Secret, RelayError> {
    let Value::String(text) = value else {
        return Err(RelayError::invalid_type(field, "a string"));
    };
    // The admin gives the secret as text, whose UTF-8 bytes are the key (what jose,
    // jsonwebtoken and Supabase do); the store keeps the bytes in base64url. Never trimmed:
    // the signer uses the exact bytes.
    let bytes = if stored {
        base64::decode_url_strict(text)
            .ok_or_else(|| RelayError::invalid_value(field, "must be base64url"))?
    } else {
        text.as_bytes().to_vec()
    };
    check_secret(field, bytes)
}

fn check_secret(field: &str, bytes: Vec<u8>) -> Result<Secret, RelayError> {
    if bytes.len() < MIN_HS256_SECRET_BYTES {
        return Err(RelayError::invalid_value(
            field,
            format!("must be at least {MIN_HS256_SECRET_BYTES} bytes (a random secret; 64 or more is better)"),
        ));
    }
    if bytes.len() > MAX_HS256_SECRET_BYTES {
        return Err(RelayError::invalid_value(
            field,
            format!("must be at most {MAX_HS256_SECRET_BYTES} bytes"),
        ));
    }
    Ok(Secret(bytes))
}

/// A printable, bounded string; the error names `field` and never echoes the value.
fn check_text(field: &str, s: &str, max: usize) -> Result<String, RelayError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(RelayError::invalid_value(
            field,
            format!("must be 1 to {max} bytes of printable text"),
        ));
    }
    Ok(s.to_string())
}

fn parse_jwks(value: &Value) -> Result<Vec<PublicKey>, RelayError> {
    let Value::Object(jwks) = value else {
        return Err(RelayError::invalid_type(
            "jwks",
            "a JWK Set object {\"keys\": [...]}",
        ));
    };
    refuse_unknown(jwks, &["keys"]).map_err(|e| e.prefixed("jwks."))?;
    let items = match jwks.get("keys") {
        Some(Value::Array(items)) => items,
        None => return Err(RelayError::missing("jwks.keys")),
        Some(_) => return Err(RelayError::invalid_type("jwks.keys", "an array of JWKs")),
    };
    if items.is_empty() || items.len() > MAX_JWKS_KEYS {
        return Err(RelayError::invalid_value(
            "jwks.keys",
            format!("must hold 1 to {MAX_JWKS_KEYS} keys"),
        ));
    }
    let mut keys: Vec<PublicKey> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = parse_jwk(item).map_err(|e| e.prefixed(&format!("jwks.keys[{i}].")))?;
        if items.len() > 1 && key.kid.is_none() {
            // Without ids a token could not say which key signed it.
            return Err(RelayError::invalid_value(
                &format!("jwks.keys[{i}].kid"),
                "is required when there is more than one key",
            ));
        }
        if let Some(j) = keys
            .iter()
            .position(|k| k.kid.is_some() && k.kid == key.kid)
        {
            return Err(RelayError::invalid_value(
                &format!("jwks.keys[{i}].kid"),
                format!("must be unique; keys[{j}] has the same kid"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// RFC 7517/7518 members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn parse_jwk(value: &Value) -> Result<PublicKey, RelayError> {
    let Value::Object(jwk) = value else {
        return Err(RelayError::invalid_type("", "a JSON Web Key object"));
    };
    let string = |field: &str| -> Result<Option<&str>, RelayError> {
        match jwk.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(RelayError::invalid_type(field, "a string")),
        }
    };
    let required = |field: &str| string(field)?.ok_or_else(|| RelayError::missing(field));
    let kty = required("kty")?;
    if kty == "oct" {
        return Err(RelayError::invalid_value(
            "kty",
            "symmetric keys do not belong in jwks; set hs256_secret instead",
        ));
    }
    // A private key pasted by mistake must not be stored, even if only its public half is used.
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(RelayError::invalid_value(
            member,
            "is a private key member; send only the public key",
        ));
    }
    if string("use")?.is_some_and(|u| u != "sig") {
        return Err(RelayError::invalid_value(
            "use",
            "must be sig: the key verifies signatures",
        ));
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|op| op == "verify") => {}
        Some(_) => return Err(RelayError::invalid_value("key_ops", "must include verify")),
    }
    let kid = match string("kid")? {
        None => None,
        Some(kid) => Some(check_text("kid", kid, MAX_KID_BYTES)?),
    };
    let material = match kty {
        "RSA" => {
            let n = unsigned(required("n")?, "n")?;
            let bits = bit_len(&n);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits)
                || n.last().is_some_and(|b| b % 2 == 0)
            {
                return Err(RelayError::invalid_value(
                    "n",
                    format!("must be an odd modulus of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"),
                ));
            }
            let e = unsigned(required("e")?, "e")?;
            // BoringSSL (WebCrypto in workerd) takes public exponents up to 33 bits; 3 and 65537
            // are what keys use.
            if e.len() > 4 || e.last().is_none_or(|b| b % 2 == 0) || e == [1] {
                return Err(RelayError::invalid_value(
                    "e",
                    "must be an odd public exponent from 3 to 2^32 (usually AQAB, 65537)",
                ));
            }
            Material::Rsa { n, e }
        }
        "EC" => {
            if required("crv")? != "P-256" {
                return Err(RelayError::invalid_value("crv", "must be P-256 (ES256)"));
            }
            let x = coordinate(required("x")?, "x")?;
            let y = coordinate(required("y")?, "y")?;
            if !p256::on_curve(&x, &y) {
                return Err(RelayError::invalid_value(
                    "x",
                    "(x, y) is not a point of the P-256 curve",
                ));
            }
            Material::Ec { x, y }
        }
        "OKP" => {
            if required("crv")? != "Ed25519" {
                return Err(RelayError::invalid_value("crv", "must be Ed25519 (EdDSA)"));
            }
            Material::Ed25519 {
                x: coordinate(required("x")?, "x")?,
            }
        }
        _ => {
            return Err(RelayError::invalid_value(
                "kty",
                "must be RSA, EC or OKP (the relay verifies RS256, ES256 and EdDSA)",
            ))
        }
    };
    let key = PublicKey { kid, material };
    if let Some(alg) = string("alg")? {
        if alg != key.alg().as_str() {
            return Err(RelayError::invalid_value(
                "alg",
                format!("must be {} for this key type", key.alg().as_str()),
            ));
        }
    }
    Ok(key)
}

/// A base64url unsigned integer (RFC 7518 §2), leading zero bytes dropped.
fn unsigned(text: &str, field: &str) -> Result<Vec<u8>, RelayError> {
    let bytes = base64::decode_url_strict(text)
        .ok_or_else(|| RelayError::invalid_value(field, "must be base64url without padding"))?;
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    Ok(bytes[first..].to_vec())
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
    }
}

/// A 32-byte curve coordinate, base64url.
fn coordinate(text: &str, field: &str) -> Result<[u8; 32], RelayError> {
    base64::decode_url_strict(text)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| RelayError::invalid_value(field, "must be 32 bytes in base64url"))
}

impl JwtConfig {
    /// An HS256 config from raw key bytes (an RFC 7515 A.1-style binary key, or a secret the
    /// caller has already decoded).
    pub fn with_hs256_key(
        issuer: &str,
        audience: &str,
        key: Vec<u8>,
    ) -> Result<JwtConfig, RelayError> {
        Ok(JwtConfig {
            issuer: check_text("issuer", issuer.trim(), MAX_ISSUER_BYTES)?,
            audience: check_text("audience", audience.trim(), MAX_ISSUER_BYTES)?,
            keys: Keys::Hs256(check_secret("hs256_secret", key)?),
        })
    }

    /// The normalised issuer: what a token's `iss` must equal, and what the caller keeps unique
    /// across tenants (the tenant of a token is found by it).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn view(&self) -> JwtConfigView {
        let keys = match &self.keys {
            Keys::Hs256(_) => Vec::new(),
            Keys::Jwks(keys) => keys
                .iter()
                .map(|k| KeyView {
                    kid: k.kid.clone(),
                    kty: k.kty(),
                    alg: k.alg().as_str(),
                })
                .collect(),
        };
        JwtConfigView {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            hs256: matches!(self.keys, Keys::Hs256(_)),
            keys,
        }
    }

    /// The form the store keeps, secret included: never put it in an admin reply.
    pub fn to_stored(&self) -> Value {
        let mut stored = json!({"issuer": self.issuer, "audience": self.audience});
        match &self.keys {
            Keys::Hs256(secret) => stored["hs256_key"] = json!(base64::encode_url(&secret.0)),
            Keys::Jwks(keys) => {
                stored["jwks"] =
                    json!({"keys": keys.iter().map(PublicKey::to_jwk).collect::<Vec<_>>()})
            }
        }
        stored
    }

    /// Reads [`JwtConfig::to_stored`]'s form back, validated again: a row edited by hand
    /// cannot smuggle in a key the admin API would refuse.
    pub fn from_stored(value: &Value) -> Result<JwtConfig, RelayError> {
        let Value::Object(map) = value else {
            return Err(RelayError::invalid_type("jwt", "an object"));
        };
        parse_config(map, None, true).map_err(|e| e.prefixed("jwt."))
    }
}

// ---- parsing a token ----------------------------------------------------------------------------

/// The JOSE header fields the relay reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// A decoded token, nothing of it verified yet. Only [`parse`] makes one, so its claims are
/// always the payload its signature covers: nothing can pair a good signature with other
/// claims on the way to [`VerifiedClaims`].
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    header: Header,
    claims: Map<String, Value>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl Parsed {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Untrusted until a [`Verifier`] turns them into [`VerifiedClaims`].
    pub fn unverified_claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// `BASE64URL(header) '.' BASE64URL(payload)` exactly as the token spells it: the bytes
    /// the signature covers (RFC 7515 §5.2 step 8).
    pub fn signing_input(&self) -> &[u8] {
        &self.signing_input
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// The JWS layer: header, payload bytes, signing input, signature.
#[derive(Debug, Clone, PartialEq)]
struct Jws {
    header: Header,
    payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

/// Duplicate header names are refused, not resolved to the last one: two readers of the
/// same token must never see different algorithms (serde refuses a field named twice).
#[derive(Deserialize)]
struct HeaderFields {
    alg: Option<Value>,
    kid: Option<Value>,
    typ: Option<Value>,
}

/// The claims the relay reads, so a token naming one twice is refused rather than read as
/// whichever came last.
#[derive(Deserialize)]
#[allow(dead_code)]
struct ClaimNames {
    iss: Option<IgnoredAny>,
    sub: Option<IgnoredAny>,
    aud: Option<IgnoredAny>,
    exp: Option<IgnoredAny>,
    nbf: Option<IgnoredAny>,
    iat: Option<IgnoredAny>,
    models: Option<IgnoredAny>,
    plan: Option<IgnoredAny>,
    key: Option<IgnoredAny>,
}

/// `typ` values that say "a JWT" (RFC 7519 §5.1, RFC 9068 for access tokens). Any other
/// explicit type (a logout token, a DPoP proof, …) is some other kind of JWT and refused.
const JWT_TYPES: &[&str] = &["jwt", "application/jwt", "at+jwt", "application/at+jwt"];

fn parse_compact(token: &str) -> Result<Jws, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Invalid("it is larger than 8 KiB"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
        return Err(TokenError::Invalid(if parts.len() == 5 {
            "encrypted tokens (JWE) are not accepted"
        } else {
            NOT_COMPACT
        }));
    };
    let header_bytes =
        base64::decode_url_strict(header_b64).ok_or(TokenError::Invalid(NOT_COMPACT))?;
    let header = parse_header(&header_bytes)?;
    let payload = base64::decode_url_strict(payload_b64).ok_or(TokenError::Invalid(NOT_COMPACT))?;
    let signature =
        base64::decode_url_strict(signature_b64).ok_or(TokenError::Invalid(NOT_COMPACT))?;
    if signature.is_empty() {
        return Err(TokenError::Invalid("it has no signature"));
    }
    let signing_input = token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()].to_vec();
    Ok(Jws {
        header,
        payload,
        signing_input,
        signature,
    })
}

fn parse_header(bytes: &[u8]) -> Result<Header, TokenError> {
    const NOT_JSON: TokenError = TokenError::Invalid("its header is not a JSON object");
    let map: Map<String, Value> = serde_json::from_slice(bytes).map_err(|_| NOT_JSON)?;
    let fields: HeaderFields = serde_json::from_slice(bytes)
        .map_err(|_| TokenError::Invalid("its header names a field twice"))?;
    // RFC 7515 §4.1.11: a recipient that does not understand every extension listed in crit
    // must refuse the token; the relay understands none.
    if map.contains_key("crit") {
        return Err(TokenError::Invalid(
            "its header has crit, which the relay does not support",
        ));
    }
    if map.contains_key("enc") {
        return Err(TokenError::Invalid(
            "encrypted tokens (JWE) are not accepted",
        ));
    }
    let alg = match fields.alg {
        Some(Value::String(alg)) => Alg::parse(&alg)?,
        Some(_) => return Err(TokenError::Invalid("its alg is not a string")),
        None => return Err(TokenError::Invalid("its header has no alg")),
    };
    let kid = match fields.kid {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_BYTES => Some(kid),
        Some(_) => return Err(TokenError::Invalid("its kid is not a short string")),
    };
    let typ = match fields.typ {
        None => None,
        Some(Value::String(typ)) if JWT_TYPES.contains(&typ.to_ascii_lowercase().as_str()) => {
            Some(typ)
        }
        Some(_) => return Err(TokenError::Invalid("its typ says it is not a JWT")),
    };
    Ok(Header { alg, kid, typ })
}

/// Decodes a token strictly: three base64url parts without padding, at most
/// [`MAX_TOKEN_BYTES`], a header with a supported `alg` (never `none`) and no `crit`, and
/// claims that are a JSON object naming none of the claims the relay reads twice.
pub fn parse(token: &str) -> Result<Parsed, TokenError> {
    let jws = parse_compact(token)?;
    const NOT_OBJECT: TokenError = TokenError::Invalid("its claims are not a JSON object");
    let claims: Map<String, Value> =
        serde_json::from_slice(&jws.payload).map_err(|_| NOT_OBJECT)?;
    serde_json::from_slice::<ClaimNames>(&jws.payload)
        .map_err(|_| TokenError::Invalid("its claims name a claim twice"))?;
    Ok(Parsed {
        header: jws.header,
        claims,
        signing_input: jws.signing_input,
        signature: jws.signature,
    })
}

/// Is this bearer credential a JWT (three base64url parts) rather than a relay key? Cheap and
/// conservative: it decodes nothing, and a relay key (`sk-er-…`) is never one.
pub fn looks_like_jwt(credential: &str) -> bool {
    if credential.starts_with(KEY_PREFIX) || credential.len() > MAX_TOKEN_BYTES {
        return false;
    }
    let b64url = |part: &str| {
        part.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    };
    let parts: Vec<&str> = credential.split('.').collect();
    // The signature may be empty here so that an unsigned token is refused as one, by `parse`.
    matches!(parts.as_slice(), [h, p, s] if !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s))
}

/// The token's `iss`, read WITHOUT verifying anything: only to find which tenant's config
/// verifies it. Bounded like [`parse`]; `None` for anything that is not a JWT with a string
/// issuer of at most [`MAX_ISSUER_BYTES`].
pub fn peek_issuer(token: &str) -> Option<String> {
    if !looks_like_jwt(token) {
        return None;
    }
    let payload = base64::decode_url_strict(token.split('.').nth(1)?)?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload).ok()?;
    match claims.get("iss") {
        Some(Value::String(iss)) if !iss.is_empty() && iss.len() <= MAX_ISSUER_BYTES => {
            Some(iss.clone())
        }
        _ => None,
    }
}

// ---- choosing the key and verifying -------------------------------------------------------------

/// The check a token's signature must pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Verifier {
    /// HS256, verified here: [`HmacCheck::verify`].
    Hmac(HmacCheck),
    /// RS256/ES256/EdDSA: the edge runs `crypto.subtle` and reports the result to
    /// [`WebCryptoCheck::conclude`].
    WebCrypto(WebCryptoCheck),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HmacCheck {
    key: Secret,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

impl HmacCheck {
    /// HMAC-SHA256 over the signing input, compared in constant time with the signature.
    pub fn verify(self) -> Result<VerifiedClaims, TokenError> {
        let mac = hmac_sha256(&self.key.0, &self.signing_input);
        if constant_time_eq(&mac, &self.signature) {
            Ok(VerifiedClaims(self.claims))
        } else {
            Err(TokenError::Invalid(BAD_SIGNATURE))
        }
    }
}

/// Everything `crypto.subtle` needs to verify one token:
///
/// ```js
/// const key = await crypto.subtle.importKey("jwk", jwk, import_algorithm, false, ["verify"]);
/// const ok = await crypto.subtle.verify(verify_algorithm, key, signature, signing_input);
/// ```
///
/// For ES256 the signature is the JWS form, r‖s as two 32-byte big-endian integers (RFC 7518
/// §3.4) — which is exactly what WebCrypto's ECDSA verify takes (the IEEE P1363 form, not DER),
/// so it is passed on unchanged. RS256 and Ed25519 signatures are the raw bytes both sides use.
#[derive(Debug, Clone, PartialEq)]
pub struct WebCryptoCheck {
    pub jwk: Value,
    pub import_algorithm: Value,
    pub verify_algorithm: Value,
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
    /// Hex SHA-256 (first 32 digits) of the key's JWK: a cache key for the imported
    /// `CryptoKey` that changes whenever the key does, even under the same `kid`.
    pub key_fingerprint: String,
    claims: Map<String, Value>,
}

impl WebCryptoCheck {
    /// `signature_ok`: what `crypto.subtle.verify` answered (an import or verify that threw
    /// counts as `false`).
    pub fn conclude(self, signature_ok: bool) -> Result<VerifiedClaims, TokenError> {
        if signature_ok {
            Ok(VerifiedClaims(self.claims))
        } else {
            Err(TokenError::Invalid(BAD_SIGNATURE))
        }
    }
}

/// Claims whose signature has been verified; only a [`Verifier`] makes them.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims(Map<String, Value>);

impl VerifiedClaims {
    pub fn get(&self, claim: &str) -> Option<&Value> {
        self.0.get(claim)
    }

    #[cfg(test)]
    pub(crate) fn assume_verified(claims: Value) -> VerifiedClaims {
        match claims {
            Value::Object(map) => VerifiedClaims(map),
            _ => VerifiedClaims(Map::new()),
        }
    }
}

/// The key that must verify `parsed`, and how. The token's `alg` must be the key's own: an
/// HS256 config accepts only HS256, a JWKS config never HS256, and a JWK verifies only its one
/// algorithm. With a JWKS the key is the one the `kid` names (an unknown kid is refused, never
/// "try them all"); a token without a kid is accepted only when there is one key.
pub fn select_key(parsed: Parsed, config: &JwtConfig) -> Result<Verifier, TokenError> {
    let Parsed {
        header,
        claims,
        signing_input,
        signature,
    } = parsed;
    match &config.keys {
        Keys::Hs256(secret) => {
            if header.alg != Alg::Hs256 {
                return Err(TokenError::Invalid(WRONG_ALG));
            }
            Ok(Verifier::Hmac(HmacCheck {
                key: secret.clone(),
                signing_input,
                signature,
                claims,
            }))
        }
        Keys::Jwks(keys) => {
            if header.alg == Alg::Hs256 {
                // The classic confusion: a public key must never become an HMAC secret.
                return Err(TokenError::Invalid(WRONG_ALG));
            }
            let key = match (&header.kid, keys.as_slice()) {
                (Some(kid), _) => keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .ok_or(TokenError::Invalid(
                        "its kid is not one of the issuer's keys",
                    ))?,
                (None, [only]) => only,
                (None, _) => {
                    return Err(TokenError::Invalid(
                        "it has no kid, and the issuer has several keys",
                    ))
                }
            };
            if key.alg() != header.alg {
                return Err(TokenError::Invalid(WRONG_ALG));
            }
            if signature.len() != key.signature_len() {
                return Err(TokenError::Invalid(BAD_SIGNATURE));
            }
            let jwk = key.import_jwk();
            let key_fingerprint = hex(&sha256(jwk.to_string().as_bytes()))[..32].to_string();
            Ok(Verifier::WebCrypto(WebCryptoCheck {
                jwk,
                import_algorithm: key.import_algorithm(),
                verify_algorithm: key.verify_algorithm(),
                signing_input,
                signature,
                key_fingerprint,
                claims,
            }))
        }
    }
}

// ---- claims -------------------------------------------------------------------------------------

/// What a verified token says about its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The end user (`sub`): per-user limits and the ledger's user column key off it.
    pub subject: String,
    pub expires_at_ms: i64,
    pub issued_at_ms: Option<i64>,
    /// Public model names (or `@groups`) the token is limited to: narrows what the tenant or
    /// key allows, never widens it.
    pub models: Option<Vec<String>>,
    /// A plan of the tenant whose limits apply (the caller checks it exists).
    pub plan: Option<String>,
    /// A key of the tenant whose models, rules and limits the token inherits and may only
    /// narrow (the caller checks it is the tenant's and active).
    pub key: Option<String>,
}

/// Checks verified claims against the tenant's config at `now_ms`: `iss` equal to the issuer,
/// `aud` (a string or an array) containing the audience, `exp` present and not passed, `nbf`
/// and `iat` not in the future — each with [`CLOCK_SKEW_MS`] of slack — a lifetime (`exp - iat`,
/// or `exp - now` without `iat`) of at most [`MAX_LIFETIME_MS`], and a printable `sub` of at
/// most 256 bytes; `models`, `plan` and `key` are optional.
pub fn check_claims(
    claims: &VerifiedClaims,
    config: &JwtConfig,
    now_ms: i64,
) -> Result<TokenClaims, TokenError> {
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    let audience = config.audience.as_str();
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::WrongAudience);
    }
    let exp = numeric_date(claims, "exp", "its exp is not a NumericDate")?
        .ok_or(TokenError::Invalid("it has no exp claim"))?;
    let nbf = numeric_date(claims, "nbf", "its nbf is not a NumericDate")?;
    let iat = numeric_date(claims, "iat", "its iat is not a NumericDate")?;
    if now_ms >= exp.saturating_add(CLOCK_SKEW_MS) {
        return Err(TokenError::Expired);
    }
    let future = |at: Option<i64>| at.is_some_and(|at| at > now_ms.saturating_add(CLOCK_SKEW_MS));
    if future(nbf) || future(iat) {
        return Err(TokenError::NotYetValid);
    }
    if exp.saturating_sub(iat.unwrap_or(now_ms)) > MAX_LIFETIME_MS {
        return Err(TokenError::LifetimeTooLong);
    }
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if end_user::check_user_id(sub).is_ok() => sub.clone(),
        _ => {
            return Err(TokenError::Invalid(
                "its sub (the end user) is missing or not 1 to 256 bytes of printable text",
            ))
        }
    };
    let models = match claims.get("models") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.len() <= MAX_MODELS_CLAIM => Some(
            items
                .iter()
                .map(|m| match m {
                    Value::String(m)
                        if !m.is_empty() && m.len() <= 256 && !m.chars().any(char::is_control) =>
                    {
                        Ok(m.clone())
                    }
                    _ => Err(()),
                })
                .collect::<Result<Vec<_>, ()>>()
                .map_err(|()| {
                    TokenError::Invalid("its models claim is not a list of model names")
                })?,
        ),
        Some(_) => {
            return Err(TokenError::Invalid(
                "its models claim is not a list of at most 64 model names",
            ))
        }
    };
    let plan = match claims.get("plan") {
        None | Some(Value::Null) => None,
        Some(Value::String(plan)) if plans::check_plan_name("plan", plan).is_ok() => {
            Some(plan.clone())
        }
        Some(_) => return Err(TokenError::Invalid("its plan claim is not a plan name")),
    };
    let key = match claims.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key))
            if !key.is_empty()
                && key.len() <= MAX_KEY_CLAIM_BYTES
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(key.clone())
        }
        Some(_) => return Err(TokenError::Invalid("its key claim is not a key id")),
    };
    Ok(TokenClaims {
        subject,
        expires_at_ms: exp,
        issued_at_ms: iat,
        models,
        plan,
        key,
    })
}

/// A NumericDate claim (RFC 7519 §2: seconds since the epoch, fractions allowed) in ms.
fn numeric_date(
    claims: &VerifiedClaims,
    claim: &str,
    invalid: &'static str,
) -> Result<Option<i64>, TokenError> {
    // Up to the year 5138: far beyond any real token, well inside i64 milliseconds.
    const MAX_SECONDS: f64 = 1e11;
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && (0.0..=MAX_SECONDS).contains(&s) => {
                Ok(Some((s * 1000.0).floor() as i64))
            }
            _ => Err(TokenError::Invalid(invalid)),
        },
        Some(_) => Err(TokenError::Invalid(invalid)),
    }
}

// ---- P-256 ------------------------------------------------------------------------------------

/// Whether (x, y) is a point of NIST P-256 (y² = x³ − 3x + b mod p), so an admin learns of a
/// mangled key when setting it rather than from every token failing. Plain shift-and-subtract
/// arithmetic: slow by crypto standards, ample for admin input, and public data only.
mod p256 {
    type U256 = [u64; 4]; // little-endian limbs

    const P: U256 = [
        0xffff_ffff_ffff_ffff,
        0x0000_0000_ffff_ffff,
        0x0000_0000_0000_0000,
        0xffff_ffff_0000_0001,
    ];
    const B: U256 = [
        0x3bce_3c3e_27d2_604b,
        0x651d_06b0_cc53_b0f6,
        0xb3eb_bd55_7698_86bc,
        0x5ac6_35d8_aa3a_93e7,
    ];

    fn from_be(bytes: &[u8; 32]) -> U256 {
        let mut out = [0u64; 4];
        for (i, limb) in out.iter_mut().enumerate() {
            let start = 32 - 8 * (i + 1);
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[start..start + 8]);
            *limb = u64::from_be_bytes(word);
        }
        out
    }

    fn less(a: &[u64], b: &[u64]) -> bool {
        for i in (0..a.len()).rev() {
            if a[i] != b[i] {
                return a[i] < b[i];
            }
        }
        false
    }

    /// a −= b, for a ≥ b of the same length.
    fn sub_assign(a: &mut [u64], b: &[u64]) {
        let mut borrow = 0u64;
        for (x, &y) in a.iter_mut().zip(b) {
            let (d1, b1) = x.overflowing_sub(y);
            let (d2, b2) = d1.overflowing_sub(borrow);
            *x = d2;
            borrow = u64::from(b1 || b2);
        }
    }

    fn p5() -> [u64; 5] {
        [P[0], P[1], P[2], P[3], 0]
    }

    /// `value` mod p, bit by bit from the top.
    fn reduce(value: &[u64]) -> U256 {
        let p = p5();
        let mut r = [0u64; 5];
        for bit in (0..value.len() * 64).rev() {
            let mut carry = (value[bit / 64] >> (bit % 64)) & 1;
            for limb in r.iter_mut() {
                let next = *limb >> 63;
                *limb = (*limb << 1) | carry;
                carry = next;
            }
            if !less(&r, &p) {
                sub_assign(&mut r, &p);
            }
        }
        [r[0], r[1], r[2], r[3]]
    }

    fn mul(a: &U256, b: &U256) -> U256 {
        let mut wide = [0u64; 8];
        for i in 0..4 {
            let mut carry = 0u128;
            for j in 0..4 {
                let t = u128::from(a[i]) * u128::from(b[j]) + u128::from(wide[i + j]) + carry;
                wide[i + j] = t as u64;
                carry = t >> 64;
            }
            wide[i + 4] = carry as u64;
        }
        reduce(&wide)
    }

    fn add(a: &U256, b: &U256) -> U256 {
        let mut sum = [0u64; 5];
        let mut carry = 0u128;
        for i in 0..4 {
            let t = u128::from(a[i]) + u128::from(b[i]) + carry;
            sum[i] = t as u64;
            carry = t >> 64;
        }
        sum[4] = carry as u64;
        reduce(&sum)
    }

    fn sub(a: &U256, b: &U256) -> U256 {
        // a − b = a + (p − b) for b < p.
        let mut neg = P;
        sub_assign(&mut neg, b);
        add(a, &neg)
    }

    pub fn on_curve(x: &[u8; 32], y: &[u8; 32]) -> bool {
        let (x, y) = (from_be(x), from_be(y));
        if !less(&x, &P) || !less(&y, &P) {
            return false;
        }
        let three_x = add(&add(&x, &x), &x);
        let rhs = add(&sub(&mul(&mul(&x, &x), &x), &three_x), &B);
        mul(&y, &y) == rhs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- fixtures ----

    /// RFC 7515 §A.1–A.3 and RFC 7519 §3.1 share this payload:
    /// `{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}`.
    const RFC_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

    /// RFC 7515 §A.1 (= RFC 7519 §3.1): HS256, header `{"typ":"JWT",\r\n "alg":"HS256"}`.
    const RFC_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    /// RFC 7515 §A.1's JWK `k` (base64url, 64 bytes).
    const RFC_A1_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

    /// RFC 7515 §A.2: RS256.
    const RFC_A2_SIGNATURE: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    const RFC_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    /// RFC 7515 §A.3: ES256 (r‖s, 64 bytes).
    const RFC_A3_SIGNATURE: &str =
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const RFC_A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const RFC_A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    /// RFC 8037 §A.4: EdDSA over the (non-JSON) payload "Example of Ed25519 signing".
    const RFC8037_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    // The RFC vectors above were also checked with node's crypto.verify (RS256, ES256 with
    // dsaEncoding "ieee-p1363", Ed25519) and createHmac, so a typo here would not go unseen.

    // Our own HS256 vectors, generated once with node (not with this crate's HMAC, which would
    // be circular) and pasted:
    //   const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    //   const input = `${enc(header)}.${enc(claims)}`;
    //   input + "." + crypto.createHmac("sha256", secret).update(input).digest("base64url")
    const SECRET: &str = "edgerelay-test-secret-0123456789abcdef";
    /// header {"alg":"HS256","typ":"JWT","kid":"k1"}, claims {"iss":"https://auth.example.com",
    /// "aud":"edgerelay","sub":"user_42","iat":1700000000,"exp":1700003600,
    /// "models":["gpt-4o-mini"],"plan":"free","key":"key_0123"}
    const GOOD: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJhdWQiOiJlZGdlcmVsYXkiLCJzdWIiOiJ1c2VyXzQyIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDAsIm1vZGVscyI6WyJncHQtNG8tbWluaSJdLCJwbGFuIjoiZnJlZSIsImtleSI6ImtleV8wMTIzIn0.lW4DWCu-no8sNXFzSJ4mxbMqhQLbXUAr68SoqqGLly0";
    /// header {"alg":"HS256"}, claims {"iss":"https://auth.example.com",
    /// "aud":["other","edgerelay"],"sub":"user_7","exp":1700003600}
    const AUD_ARRAY: &str = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJhdWQiOlsib3RoZXIiLCJlZGdlcmVsYXkiXSwic3ViIjoidXNlcl83IiwiZXhwIjoxNzAwMDAzNjAwfQ.RORJakI9DnUz0rhUwWs9P1knHM55d6MVvdK3zj_Q6cs";
    /// GOOD's header and claims under "another-secret-that-is-long-enough-000".
    const OTHER_SECRET: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJhdWQiOiJlZGdlcmVsYXkiLCJzdWIiOiJ1c2VyXzQyIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDAsIm1vZGVscyI6WyJncHQtNG8tbWluaSJdLCJwbGFuIjoiZnJlZSIsImtleSI6ImtleV8wMTIzIn0.rDqn2bMTORMan5Zyit57_IkcBTiQgv7h-IeeEVza824";
    /// The RS/HS confusion attack: header {"alg":"HS256","kid":"rsa-1"}, HMAC keyed with the
    /// SPKI PEM of RFC 7515 §A.2's public key.
    const CONFUSED: &str = "eyJhbGciOiJIUzI1NiIsImtpZCI6InJzYS0xIn0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJhdWQiOiJlZGdlcmVsYXkiLCJzdWIiOiJtYWxsb3J5IiwiZXhwIjoxNzAwMDAzNjAwfQ.a0k8bVEbaGC9n4rwn4DCmaLc0Dl2Lkk9hCknXPa3-fc";
    /// header {"alg":"none"}, an empty signature.
    const UNSIGNED: &str = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJhdWQiOiJlZGdlcmVsYXkiLCJzdWIiOiJtYWxsb3J5IiwiZXhwIjoxNzAwMDAzNjAwfQ.";

    const ISSUER: &str = "https://auth.example.com";
    /// 2023-11-14T22:43:20Z + 10 min: inside GOOD's hour.
    const NOW: i64 = 1_700_000_600_000;

    fn b64(text: &str) -> Vec<u8> {
        base64::decode_url_strict(text).unwrap()
    }

    fn enc(value: &Value) -> String {
        base64::encode_url(value.to_string().as_bytes())
    }

    fn hs_config() -> JwtConfig {
        let body = json!({"issuer": ISSUER, "audience": "edgerelay", "hs256_secret": SECRET});
        parse_jwt(&body, None).unwrap().unwrap()
    }

    fn rsa_jwk(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "n": RFC_A2_N, "e": "AQAB", "alg": "RS256", "use": "sig"})
    }

    fn ec_jwk(kid: &str) -> Value {
        json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": RFC_A3_X, "y": RFC_A3_Y})
    }

    fn ed_jwk(kid: &str) -> Value {
        json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": RFC8037_X})
    }

    fn jwks_config(keys: Vec<Value>) -> Result<JwtConfig, RelayError> {
        let body = json!({"issuer": ISSUER, "audience": "edgerelay", "jwks": {"keys": keys}});
        parse_jwt(&body, None).map(Option::unwrap)
    }

    fn param(e: RelayError) -> String {
        e.param().unwrap_or_default().to_string()
    }

    /// An unsigned-by-us token with this header and claims, and a 64-byte dummy signature.
    fn forged(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.{}",
            enc(&header),
            enc(&claims),
            base64::encode_url(&[7; 64])
        )
    }

    fn web_crypto(v: Verifier) -> WebCryptoCheck {
        match v {
            Verifier::WebCrypto(w) => w,
            Verifier::Hmac(_) => panic!("expected a WebCrypto check"),
        }
    }

    fn hmac(v: Verifier) -> HmacCheck {
        match v {
            Verifier::Hmac(h) => h,
            Verifier::WebCrypto(_) => panic!("expected an HMAC check"),
        }
    }

    // ---- RFC vectors ----

    #[test]
    fn rfc7515_a1_hs256_verifies_and_rfc7519_3_1_claims_read() {
        let config = JwtConfig::with_hs256_key("joe", "any", b64(RFC_A1_KEY)).unwrap();
        let parsed = parse(RFC_A1_TOKEN).unwrap();
        assert_eq!(
            parsed.header,
            Header {
                alg: Alg::Hs256,
                kid: None,
                typ: Some("JWT".into())
            }
        );
        // RFC 7519 §3.1's claims set, CRLFs and all.
        assert_eq!(
            Value::Object(parsed.claims.clone()),
            json!({"iss": "joe", "exp": 1300819380, "http://example.com/is_root": true})
        );
        assert_eq!(
            parsed.signing_input,
            format!("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{RFC_PAYLOAD}").into_bytes()
        );
        let verified = hmac(select_key(parsed, &config).unwrap()).verify().unwrap();
        assert_eq!(verified.get("iss"), Some(&json!("joe")));
        // Any other key fails.
        let mut other = b64(RFC_A1_KEY);
        other[0] ^= 1;
        let config = JwtConfig::with_hs256_key("joe", "any", other).unwrap();
        let parsed = parse(RFC_A1_TOKEN).unwrap();
        assert_eq!(
            hmac(select_key(parsed, &config).unwrap()).verify(),
            Err(TokenError::Invalid(BAD_SIGNATURE))
        );
    }

    #[test]
    fn rfc7515_a2_rs256_hands_webcrypto_the_exact_bytes() {
        let config = jwks_config(vec![rsa_jwk("rsa-1")]).unwrap();
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{RFC_PAYLOAD}.{RFC_A2_SIGNATURE}");
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.header.alg, Alg::Rs256);
        let check = web_crypto(select_key(parsed, &config).unwrap());
        // RFC 7515 §A.2.1 lists the signing input as these ASCII bytes.
        assert_eq!(
            check.signing_input,
            format!("eyJhbGciOiJSUzI1NiJ9.{RFC_PAYLOAD}").into_bytes()
        );
        assert_eq!(check.signature, b64(RFC_A2_SIGNATURE));
        assert_eq!(check.signature.len(), 256);
        assert_eq!(
            check.signature[..4],
            [112, 46, 33, 137],
            "RFC 7515 §A.2.1's first signature octets"
        );
        assert_eq!(
            check.jwk,
            json!({"kty": "RSA", "n": RFC_A2_N, "e": "AQAB", "alg": "RS256"})
        );
        assert_eq!(
            check.import_algorithm,
            json!({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"})
        );
        assert_eq!(check.verify_algorithm, json!({"name": "RSASSA-PKCS1-v1_5"}));
        assert_eq!(check.key_fingerprint.len(), 32);
        // The edge reports WebCrypto's answer.
        let verified = check.clone().conclude(true).unwrap();
        assert_eq!(verified.get("iss"), Some(&json!("joe")));
        assert_eq!(
            check.conclude(false),
            Err(TokenError::Invalid(BAD_SIGNATURE))
        );
    }

    #[test]
    fn rfc7515_a3_es256_signature_is_raw_r_and_s() {
        let config = jwks_config(vec![ec_jwk("ec-1")]).unwrap();
        let token = format!("eyJhbGciOiJFUzI1NiJ9.{RFC_PAYLOAD}.{RFC_A3_SIGNATURE}");
        let check = web_crypto(select_key(parse(&token).unwrap(), &config).unwrap());
        assert_eq!(
            check.signing_input,
            format!("eyJhbGciOiJFUzI1NiJ9.{RFC_PAYLOAD}").into_bytes()
        );
        // RFC 7515 §A.3.1: R and S, 32 octets each, concatenated — WebCrypto's ECDSA form.
        assert_eq!(check.signature.len(), 64);
        assert_eq!(check.signature[..3], [14, 209, 33]);
        assert_eq!(check.signature[32..35], [197, 10, 7]);
        assert_eq!(
            check.jwk,
            json!({"kty": "EC", "crv": "P-256", "x": RFC_A3_X, "y": RFC_A3_Y, "alg": "ES256"})
        );
        assert_eq!(
            check.import_algorithm,
            json!({"name": "ECDSA", "namedCurve": "P-256"})
        );
        assert_eq!(
            check.verify_algorithm,
            json!({"name": "ECDSA", "hash": "SHA-256"})
        );
        // A DER-encoded signature (70-72 bytes) is not the JWS form.
        let der = format!(
            "eyJhbGciOiJFUzI1NiJ9.{RFC_PAYLOAD}.{}",
            base64::encode_url(&[0x30; 71])
        );
        assert_eq!(
            select_key(parse(&der).unwrap(), &config),
            Err(TokenError::Invalid(BAD_SIGNATURE))
        );
    }

    #[test]
    fn rfc8037_a4_ed25519_hands_webcrypto_the_exact_bytes() {
        let config = jwks_config(vec![ed_jwk("ed-1")]).unwrap();
        // Its payload is text, not a claims set, so only the JWS layer applies; `parse` refuses
        // it as a JWT.
        let jws = parse_compact(RFC8037_TOKEN).unwrap();
        assert_eq!(jws.payload, b"Example of Ed25519 signing");
        assert_eq!(
            parse(RFC8037_TOKEN),
            Err(TokenError::Invalid("its claims are not a JSON object"))
        );
        let parsed = Parsed {
            header: jws.header,
            claims: Map::new(),
            signing_input: jws.signing_input,
            signature: jws.signature,
        };
        let check = web_crypto(select_key(parsed, &config).unwrap());
        assert_eq!(
            check.signing_input,
            b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc".to_vec()
        );
        // RFC 8037 §A.4's signature, in hex there.
        assert_eq!(
            hex(&check.signature),
            "860c98d2297f3060a33f42739672d61b53cf3adefed3d3c672f320dc021b411e\
             9d59b8628dc351e248b88b29468e0e41855b0fb7d83bb15be902bfccb8cd0a02"
        );
        assert_eq!(
            check.jwk,
            json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})
        );
        assert_eq!(check.import_algorithm, json!({"name": "Ed25519"}));
        assert_eq!(check.verify_algorithm, json!({"name": "Ed25519"}));
    }

    // ---- our HS256 vectors, end to end ----

    #[test]
    fn node_signed_hs256_token_verifies_and_its_claims_come_through() {
        let config = hs_config();
        let verified = hmac(select_key(parse(GOOD).unwrap(), &config).unwrap())
            .verify()
            .unwrap();
        assert_eq!(
            check_claims(&verified, &config, NOW),
            Ok(TokenClaims {
                subject: "user_42".into(),
                expires_at_ms: 1_700_003_600_000,
                issued_at_ms: Some(1_700_000_000_000),
                models: Some(vec!["gpt-4o-mini".into()]),
                plan: Some("free".into()),
                key: Some("key_0123".into()),
            })
        );
        let verified = hmac(select_key(parse(AUD_ARRAY).unwrap(), &config).unwrap())
            .verify()
            .unwrap();
        let claims = check_claims(&verified, &config, NOW).unwrap();
        assert_eq!(
            (claims.subject.as_str(), claims.issued_at_ms),
            ("user_7", None)
        );
    }

    #[test]
    fn hs256_under_another_secret_or_tampered_is_refused() {
        let config = hs_config();
        let bad = |token: &str| {
            parse(token)
                .and_then(|p| select_key(p, &config))
                .and_then(|v| hmac(v).verify())
                .map(|_| ())
        };
        assert_eq!(bad(OTHER_SECRET), Err(TokenError::Invalid(BAD_SIGNATURE)));
        // A changed claim (sub user_42 → user_43) keeps GOOD's signature and fails it.
        let (head, rest) = GOOD.split_once('.').unwrap();
        let (_, sig) = rest.rsplit_once('.').unwrap();
        let mut claims: Value =
            serde_json::from_slice(&b64(rest.split('.').next().unwrap())).unwrap();
        claims["sub"] = json!("user_43");
        assert_eq!(
            bad(&format!("{head}.{}.{sig}", enc(&claims))),
            Err(TokenError::Invalid(BAD_SIGNATURE))
        );
        // A truncated signature fails too (and is compared in constant time regardless).
        let truncated = base64::encode_url(&b64(sig)[..31]);
        assert_eq!(
            bad(&format!(
                "{}.{truncated}",
                &GOOD[..GOOD.len() - sig.len() - 1]
            )),
            Err(TokenError::Invalid(BAD_SIGNATURE))
        );
    }

    // ---- algorithm confusion and key choice ----

    #[test]
    fn a_public_key_is_never_an_hmac_secret() {
        let config = jwks_config(vec![rsa_jwk("rsa-1")]).unwrap();
        assert_eq!(
            select_key(parse(CONFUSED).unwrap(), &config),
            Err(TokenError::Invalid(WRONG_ALG))
        );
    }

    #[test]
    fn an_hs256_config_accepts_only_hs256() {
        let config = hs_config();
        for alg in ["RS256", "ES256", "EdDSA"] {
            let token = forged(json!({"alg": alg}), json!({"iss": ISSUER}));
            assert_eq!(
                select_key(parse(&token).unwrap(), &config),
                Err(TokenError::Invalid(WRONG_ALG)),
                "{alg}"
            );
        }
    }

    #[test]
    fn a_jwk_verifies_only_its_own_algorithm() {
        let config = jwks_config(vec![rsa_jwk("rsa-1"), ec_jwk("ec-1"), ed_jwk("ed-1")]).unwrap();
        let with = |alg: &str, kid: &str| {
            let token = forged(json!({"alg": alg, "kid": kid}), json!({}));
            select_key(parse(&token).unwrap(), &config).map(|v| web_crypto(v).import_algorithm)
        };
        assert_eq!(with("ES256", "rsa-1"), Err(TokenError::Invalid(WRONG_ALG)));
        assert_eq!(with("EdDSA", "ec-1"), Err(TokenError::Invalid(WRONG_ALG)));
        assert_eq!(with("RS256", "ed-1"), Err(TokenError::Invalid(WRONG_ALG)));
        assert_eq!(
            with("ES256", "ec-1"),
            Ok(json!({"name": "ECDSA", "namedCurve": "P-256"}))
        );
        assert_eq!(with("EdDSA", "ed-1"), Ok(json!({"name": "Ed25519"})));
    }

    #[test]
    fn keys_are_chosen_by_kid_and_never_guessed() {
        let two = jwks_config(vec![ec_jwk("old"), ed_jwk("new")]).unwrap();
        let choose = |config: &JwtConfig, header: Value| {
            select_key(parse(&forged(header, json!({}))).unwrap(), config)
        };
        assert_eq!(
            choose(&two, json!({"alg": "EdDSA", "kid": "gone"})),
            Err(TokenError::Invalid(
                "its kid is not one of the issuer's keys"
            ))
        );
        assert_eq!(
            choose(&two, json!({"alg": "EdDSA"})),
            Err(TokenError::Invalid(
                "it has no kid, and the issuer has several keys"
            ))
        );
        assert!(choose(&two, json!({"alg": "EdDSA", "kid": "new"})).is_ok());
        assert!(choose(&two, json!({"alg": "ES256", "kid": "old"})).is_ok());
        // One key: a token without a kid is unambiguous.
        let one = jwks_config(vec![ed_jwk("only")]).unwrap();
        assert!(choose(&one, json!({"alg": "EdDSA"})).is_ok());
        // The messages never name a key that would have matched.
        for e in [
            choose(&two, json!({"alg": "EdDSA", "kid": "gone"})),
            choose(&two, json!({"alg": "RS256", "kid": "new"})),
        ] {
            let message = RelayError::from(e.unwrap_err()).message();
            assert!(
                !message.contains("old") && !message.contains("new"),
                "{message}"
            );
        }
    }

    #[test]
    fn signature_lengths_are_checked_before_webcrypto() {
        let config = jwks_config(vec![rsa_jwk("rsa-1")]).unwrap();
        let short = format!(
            "eyJhbGciOiJSUzI1NiJ9.{RFC_PAYLOAD}.{}",
            base64::encode_url(&[1; 255])
        );
        assert_eq!(
            select_key(parse(&short).unwrap(), &config),
            Err(TokenError::Invalid(BAD_SIGNATURE))
        );
    }

    // ---- parsing refusals ----

    #[test]
    fn parse_refuses_what_is_not_a_plain_signed_jwt() {
        let claims = json!({"iss": ISSUER});
        let cases: Vec<(String, &str)> = vec![
            (
                UNSIGNED.into(),
                "alg 'none' (an unsigned token) is not accepted",
            ),
            (
                forged(json!({"alg": "none"}), claims.clone()),
                "alg 'none' (an unsigned token) is not accepted",
            ),
            (
                forged(json!({"alg": "None"}), claims.clone()),
                "its alg is not one of RS256, ES256, EdDSA, HS256",
            ),
            (
                forged(json!({"alg": "HS512"}), claims.clone()),
                "its alg is not one of RS256, ES256, EdDSA, HS256",
            ),
            (
                forged(json!({"alg": "PS256"}), claims.clone()),
                "its alg is not one of RS256, ES256, EdDSA, HS256",
            ),
            (
                forged(json!({"typ": "JWT"}), claims.clone()),
                "its header has no alg",
            ),
            (
                forged(json!({"alg": 256}), claims.clone()),
                "its alg is not a string",
            ),
            (
                forged(
                    json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
                    claims.clone(),
                ),
                "its header has crit, which the relay does not support",
            ),
            (
                forged(
                    json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
                    claims.clone(),
                ),
                "its header has crit, which the relay does not support",
            ),
            (
                forged(json!({"alg": "HS256", "enc": "A128GCM"}), claims.clone()),
                "encrypted tokens (JWE) are not accepted",
            ),
            (
                forged(json!({"alg": "HS256", "typ": "logout+jwt"}), claims.clone()),
                "its typ says it is not a JWT",
            ),
            (
                forged(json!({"alg": "HS256", "kid": ""}), claims.clone()),
                "its kid is not a short string",
            ),
            (
                forged(
                    json!({"alg": "HS256", "kid": "k".repeat(129)}),
                    claims.clone(),
                ),
                "its kid is not a short string",
            ),
            (
                forged(json!({"alg": "HS256"}), json!([1, 2])),
                "its claims are not a JSON object",
            ),
            (
                "a.b.c.d.e".into(),
                "encrypted tokens (JWE) are not accepted",
            ),
            ("a.b".into(), NOT_COMPACT),
            ("".into(), NOT_COMPACT),
            (
                format!("{}.e30.AAAA", enc(&json!(["alg"]))),
                "its header is not a JSON object",
            ),
            (
                "bm90IGpzb24.e30.AAAA".into(),
                "its header is not a JSON object",
            ),
            (
                format!("{}.e30", enc(&json!({"alg": "HS256"}))),
                NOT_COMPACT,
            ),
            (
                format!("{}.e30.", enc(&json!({"alg": "HS256"}))),
                "it has no signature",
            ),
        ];
        for (token, reason) in cases {
            assert_eq!(parse(&token), Err(TokenError::Invalid(reason)), "{token}");
        }
    }

    #[test]
    fn parse_is_strict_base64url_and_size_capped() {
        let (head, rest) = GOOD.split_once('.').unwrap();
        assert!(parse(GOOD).is_ok());
        for token in [
            format!("{head}=.{rest}"), // padding
            format!("{head} .{rest}"), // whitespace
            GOOD.replace('-', "+"),    // the standard alphabet
            format!("{head}.{rest}="),
            format!("{head}x.{rest}"), // a length no base64 has
        ] {
            assert!(parse(&token).is_err(), "{token}");
        }
        // The signature's last symbol carries 4 bits and 2 zero bits; the same symbol with a
        // padding bit set would decode to the same bytes under a lenient decoder.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = GOOD.as_bytes()[GOOD.len() - 1];
        let index = ALPHABET.iter().position(|&c| c == last).unwrap();
        assert_eq!(index % 4, 0, "GOOD's signature is 32 bytes");
        let twin = char::from(ALPHABET[index | 1]);
        let twin_token = format!("{}{twin}", &GOOD[..GOOD.len() - 1]);
        assert_eq!(parse(&twin_token), Err(TokenError::Invalid(NOT_COMPACT)));
        let big = forged(
            json!({"alg": "HS256"}),
            json!({"pad": "x".repeat(MAX_TOKEN_BYTES)}),
        );
        assert_eq!(
            parse(&big),
            Err(TokenError::Invalid("it is larger than 8 KiB"))
        );
    }

    #[test]
    fn names_given_twice_are_refused_not_resolved() {
        let header = base64::encode_url(br#"{"alg":"HS256","alg":"none"}"#);
        let token = format!("{header}.e30.AAAA");
        assert_eq!(
            parse(&token),
            Err(TokenError::Invalid("its header names a field twice"))
        );
        let claims = base64::encode_url(br#"{"sub":"alice","sub":"admin"}"#);
        let token = format!("{}.{claims}.AAAA", enc(&json!({"alg": "HS256"})));
        assert_eq!(
            parse(&token),
            Err(TokenError::Invalid("its claims name a claim twice"))
        );
        // Unread claims may repeat (RFC 7519 §4 allows taking the last).
        let claims = base64::encode_url(br#"{"x":1,"x":2}"#);
        assert!(parse(&format!("{}.{claims}.AAAA", enc(&json!({"alg": "HS256"})))).is_ok());
    }

    #[test]
    fn typ_may_say_jwt_in_any_of_its_spellings() {
        for typ in [
            "JWT",
            "jwt",
            "at+jwt",
            "application/jwt",
            "application/at+JWT",
        ] {
            let token = forged(json!({"alg": "HS256", "typ": typ}), json!({}));
            assert_eq!(parse(&token).unwrap().header.typ.as_deref(), Some(typ));
        }
    }

    // ---- claims ----

    fn claims(extra: Value) -> VerifiedClaims {
        let mut base = json!({
            "iss": ISSUER, "aud": "edgerelay", "sub": "u1",
            "iat": 1_700_000_000, "exp": 1_700_003_600,
        });
        if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
            for (k, v) in extra {
                if v.is_null() {
                    base.remove(&k);
                } else {
                    base.insert(k, v);
                }
            }
        }
        VerifiedClaims::assume_verified(base)
    }

    fn check(extra: Value, now_ms: i64) -> Result<TokenClaims, TokenError> {
        check_claims(&claims(extra), &hs_config(), now_ms)
    }

    #[test]
    fn issuer_and_audience_must_match_exactly() {
        assert!(check(json!({}), NOW).is_ok());
        for iss in [
            json!("https://auth.example.com/"),
            json!("HTTPS://AUTH.EXAMPLE.COM"),
            json!(7),
            json!(null),
        ] {
            assert_eq!(
                check(json!({"iss": iss}), NOW),
                Err(TokenError::WrongIssuer),
                "{iss}"
            );
        }
        for aud in [
            json!("EdgeRelay"),
            json!(["a", "b"]),
            json!([]),
            json!(1),
            json!(null),
        ] {
            assert_eq!(
                check(json!({"aud": aud}), NOW),
                Err(TokenError::WrongAudience),
                "{aud}"
            );
        }
        assert!(check(json!({"aud": ["x", "edgerelay"]}), NOW).is_ok());
        // The refusal never tells what was expected.
        for e in [TokenError::WrongIssuer, TokenError::WrongAudience] {
            let body = RelayError::from(e).body();
            assert!(
                !body.contains(ISSUER) && !body.contains("edgerelay"),
                "{body}"
            );
        }
    }

    #[test]
    fn expiry_and_validity_windows_allow_60_s_of_skew() {
        let exp = 1_700_003_600_000;
        assert!(check(json!({}), exp + CLOCK_SKEW_MS - 1).is_ok());
        assert_eq!(
            check(json!({}), exp + CLOCK_SKEW_MS),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check(json!({"exp": null}), NOW),
            Err(TokenError::Invalid("it has no exp claim"))
        );
        assert_eq!(
            check(json!({"exp": "1700003600"}), NOW),
            Err(TokenError::Invalid("its exp is not a NumericDate"))
        );
        assert_eq!(
            check(json!({"exp": -1}), NOW),
            Err(TokenError::Invalid("its exp is not a NumericDate"))
        );
        // Fractional seconds are NumericDates too.
        assert_eq!(
            check(json!({"exp": 1_700_003_600.5}), NOW).map(|c| c.expires_at_ms),
            Ok(1_700_003_600_500)
        );
        let nbf = 1_700_001_000_000;
        assert!(check(json!({"nbf": 1_700_001_000}), nbf - CLOCK_SKEW_MS).is_ok());
        assert_eq!(
            check(json!({"nbf": 1_700_001_000}), nbf - CLOCK_SKEW_MS - 1),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            check(json!({"nbf": "soon"}), NOW),
            Err(TokenError::Invalid("its nbf is not a NumericDate"))
        );
        // Issued in the future, beyond the skew.
        let iat = 1_700_000_000_000;
        assert_eq!(
            check(json!({}), iat - CLOCK_SKEW_MS - 1),
            Err(TokenError::NotYetValid)
        );
        assert!(check(json!({}), iat - CLOCK_SKEW_MS).is_ok());
    }

    #[test]
    fn lifetimes_over_a_day_are_refused() {
        let day = 24 * 3600;
        let iat = 1_700_000_000;
        assert!(check(json!({"exp": iat + day}), NOW).is_ok());
        assert_eq!(
            check(json!({"exp": iat + day + 1}), NOW),
            Err(TokenError::LifetimeTooLong)
        );
        // Without iat, the time left counts.
        let now_s = NOW / 1000;
        assert!(check(json!({"iat": null, "exp": now_s + day}), NOW).is_ok());
        assert_eq!(
            check(json!({"iat": null, "exp": now_s + day + 1}), NOW),
            Err(TokenError::LifetimeTooLong)
        );
    }

    #[test]
    fn the_end_user_and_narrowing_claims_are_checked() {
        let sub_reason =
            "its sub (the end user) is missing or not 1 to 256 bytes of printable text";
        for sub in [
            json!(null),
            json!(""),
            json!(42),
            json!("a\nb"),
            json!("x".repeat(257)),
        ] {
            assert_eq!(
                check(json!({"sub": sub}), NOW),
                Err(TokenError::Invalid(sub_reason)),
                "{sub}"
            );
        }
        assert_eq!(
            check(json!({"sub": "ü".repeat(128)}), NOW).map(|c| c.subject.len()),
            Ok(256)
        );
        let models_reason = "its models claim is not a list of model names";
        assert_eq!(
            check(json!({"models": ["a", ""]}), NOW),
            Err(TokenError::Invalid(models_reason))
        );
        assert_eq!(
            check(json!({"models": ["a", 1]}), NOW),
            Err(TokenError::Invalid(models_reason))
        );
        assert_eq!(
            check(json!({"models": "gpt-4o"}), NOW),
            Err(TokenError::Invalid(
                "its models claim is not a list of at most 64 model names"
            ))
        );
        assert!(check(json!({"models": vec!["m"; 65]}), NOW).is_err());
        assert_eq!(
            check(json!({"models": ["gpt-4o", "@cheap"]}), NOW).map(|c| c.models),
            Ok(Some(vec!["gpt-4o".into(), "@cheap".into()]))
        );
        assert_eq!(
            check(json!({"models": []}), NOW).map(|c| c.models),
            Ok(Some(vec![]))
        );
        assert_eq!(
            check(json!({"plan": "Free Plan"}), NOW),
            Err(TokenError::Invalid("its plan claim is not a plan name"))
        );
        assert_eq!(
            check(json!({"key": "key 1"}), NOW),
            Err(TokenError::Invalid("its key claim is not a key id"))
        );
        assert_eq!(
            check(json!({"plan": "pro", "key": "key_1"}), NOW).map(|c| (c.plan, c.key)),
            Ok((Some("pro".into()), Some("key_1".into())))
        );
    }

    #[test]
    fn token_errors_become_401s_with_their_own_codes() {
        let cases = [
            (TokenError::Invalid(BAD_SIGNATURE), "token_invalid"),
            (TokenError::Expired, "token_expired"),
            (TokenError::NotYetValid, "token_not_yet_valid"),
            (TokenError::LifetimeTooLong, "token_lifetime_too_long"),
            (TokenError::WrongIssuer, "token_wrong_issuer"),
            (TokenError::WrongAudience, "token_wrong_audience"),
            (TokenError::UNKNOWN_PLAN, "token_invalid"),
            (TokenError::UNKNOWN_KEY, "token_invalid"),
        ];
        for (e, code) in cases {
            let e = RelayError::from(e);
            assert_eq!((e.status(), e.code()), (401, code));
        }
        assert!(RelayError::from(TokenError::Invalid(BAD_SIGNATURE))
            .message()
            .contains("signature does not verify"));
    }

    // ---- telling tokens from keys ----

    #[test]
    fn jwts_are_told_from_relay_keys_and_their_issuer_peeked() {
        assert!(looks_like_jwt(GOOD));
        assert!(looks_like_jwt(RFC_A1_TOKEN));
        assert!(looks_like_jwt(UNSIGNED));
        for not in [
            "sk-er-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
            "sk-er-a.b.c",
            "er-tt-0123456789",
            "a.b",
            "a..c",
            ".b.c",
            "a.b.c.d",
            "a b.c.d",
            "a+b.c.d",
            "",
        ] {
            assert!(!looks_like_jwt(not), "{not}");
        }
        assert!(!looks_like_jwt(&format!(
            "{GOOD}{}",
            "A".repeat(MAX_TOKEN_BYTES)
        )));
        assert_eq!(peek_issuer(GOOD).as_deref(), Some(ISSUER));
        assert_eq!(peek_issuer(RFC_A1_TOKEN).as_deref(), Some("joe"));
        assert_eq!(peek_issuer(RFC8037_TOKEN), None, "not JSON");
        assert_eq!(peek_issuer("sk-er-abc"), None);
        let long = forged(json!({"alg": "HS256"}), json!({"iss": "i".repeat(257)}));
        assert_eq!(peek_issuer(&long), None);
        let numeric = forged(json!({"alg": "HS256"}), json!({"iss": 5}));
        assert_eq!(peek_issuer(&numeric), None);
    }

    // ---- the config ----

    #[test]
    fn hs256_config_is_write_only() {
        let config = hs_config();
        let view = serde_json::to_value(config.view()).unwrap();
        assert_eq!(
            view,
            json!({"issuer": ISSUER, "audience": "edgerelay", "hs256": true, "keys": []})
        );
        assert!(!view.to_string().contains(SECRET));
        assert!(
            !format!("{config:?}").contains(SECRET),
            "Debug hides the secret"
        );
        // The store keeps it, and reads it back.
        let stored = config.to_stored();
        assert_eq!(JwtConfig::from_stored(&stored), Ok(config.clone()));
        // The view written back changes nothing; a new audience keeps the secret.
        assert_eq!(parse_jwt(&view, Some(&config)), Ok(Some(config.clone())));
        let moved = parse_jwt(&json!({"audience": "app-2"}), Some(&config))
            .unwrap()
            .unwrap();
        assert_eq!(moved.audience(), "app-2");
        assert_eq!(moved.to_stored()["hs256_key"], stored["hs256_key"]);
        // Without a current config the view is not enough.
        assert_eq!(param(parse_jwt(&view, None).unwrap_err()), "jwt.jwks");
        assert_eq!(parse_jwt(&Value::Null, Some(&config)), Ok(None));
    }

    #[test]
    fn short_or_misplaced_secrets_are_refused() {
        let body =
            |secret: Value| json!({"issuer": ISSUER, "audience": "a", "hs256_secret": secret});
        let e = parse_jwt(&body(json!("x".repeat(31))), None).unwrap_err();
        assert_eq!(param(e.clone()), "jwt.hs256_secret");
        assert!(!e.message().contains("xxxx"), "the secret is not echoed");
        assert!(parse_jwt(&body(json!("x".repeat(32))), None).is_ok());
        assert_eq!(
            param(parse_jwt(&body(json!(12345)), None).unwrap_err()),
            "jwt.hs256_secret"
        );
        let both = json!({"issuer": ISSUER, "audience": "a", "hs256_secret": SECRET, "jwks": {"keys": [ed_jwk("e")]}});
        assert_eq!(
            param(parse_jwt(&both, None).unwrap_err()),
            "jwt.hs256_secret"
        );
        // The stored field is not an admin field.
        let stored = json!({"issuer": ISSUER, "audience": "a", "hs256_key": "AAAA"});
        assert_eq!(
            param(parse_jwt(&stored, None).unwrap_err()),
            "jwt.hs256_key"
        );
        assert!(JwtConfig::with_hs256_key(ISSUER, "a", vec![0; 31]).is_err());
    }

    #[test]
    fn issuer_and_audience_are_required_and_printable() {
        let base = json!({"issuer": ISSUER, "audience": "a", "hs256_secret": SECRET});
        let without = |field: &str| {
            let mut b = base.clone();
            b.as_object_mut().unwrap().remove(field);
            param(parse_jwt(&b, None).unwrap_err())
        };
        assert_eq!(without("issuer"), "jwt.issuer");
        assert_eq!(without("audience"), "jwt.audience");
        let mut b = base.clone();
        b["issuer"] = json!("  https://auth.example.com  ");
        assert_eq!(parse_jwt(&b, None).unwrap().unwrap().issuer(), ISSUER);
        for bad in [
            json!(""),
            json!("a\u{0}b"),
            json!("i".repeat(257)),
            json!(["x"]),
        ] {
            let mut b = base.clone();
            b["issuer"] = bad;
            assert_eq!(param(parse_jwt(&b, None).unwrap_err()), "jwt.issuer");
        }
        let mut b = base.clone();
        b["issuers"] = json!("x");
        assert_eq!(param(parse_jwt(&b, None).unwrap_err()), "jwt.issuers");
        assert_eq!(param(parse_jwt(&json!("x"), None).unwrap_err()), "jwt");
    }

    #[test]
    fn jwks_keys_are_validated_field_by_field() {
        let err = |keys: Vec<Value>| param(jwks_config(keys).unwrap_err());
        let with = |mut jwk: Value, field: &str, value: Value| {
            if value.is_null() {
                jwk.as_object_mut().unwrap().remove(field);
            } else {
                jwk[field] = value;
            }
            jwk
        };
        // RSA
        assert_eq!(
            err(vec![ed_jwk("a"), with(rsa_jwk("b"), "n", json!("AQAB"))]),
            "jwt.jwks.keys[1].n"
        );
        let n_1024 = base64::encode_url(&b64(RFC_A2_N)[..128]);
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "n", json!(n_1024))]),
            "jwt.jwks.keys[0].n"
        );
        let mut even = b64(RFC_A2_N);
        *even.last_mut().unwrap() &= 0xfe;
        assert_eq!(
            err(vec![with(
                rsa_jwk("r"),
                "n",
                json!(base64::encode_url(&even))
            )]),
            "jwt.jwks.keys[0].n"
        );
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "n", json!(format!("{RFC_A2_N}=")))]),
            "jwt.jwks.keys[0].n"
        );
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "n", json!(null))]),
            "jwt.jwks.keys[0].n"
        );
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "e", json!("AQ"))]),
            "jwt.jwks.keys[0].e"
        );
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "e", json!("AQAAAAAB"))]),
            "jwt.jwks.keys[0].e"
        );
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "alg", json!("PS256"))]),
            "jwt.jwks.keys[0].alg"
        );
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "use", json!("enc"))]),
            "jwt.jwks.keys[0].use"
        );
        assert_eq!(
            err(vec![with(rsa_jwk("r"), "key_ops", json!(["sign"]))]),
            "jwt.jwks.keys[0].key_ops"
        );
        // A leading zero byte is tolerated and dropped.
        let mut padded = vec![0];
        padded.extend(b64(RFC_A2_N));
        let config = jwks_config(vec![with(
            rsa_jwk("r"),
            "n",
            json!(base64::encode_url(&padded)),
        )])
        .unwrap();
        assert_eq!(config.to_stored()["jwks"]["keys"][0]["n"], json!(RFC_A2_N));
        // EC
        assert_eq!(
            err(vec![with(ec_jwk("e"), "crv", json!("P-384"))]),
            "jwt.jwks.keys[0].crv"
        );
        assert_eq!(
            err(vec![with(ec_jwk("e"), "x", json!("AAAA"))]),
            "jwt.jwks.keys[0].x"
        );
        assert_eq!(
            err(vec![with(ec_jwk("e"), "y", json!(null))]),
            "jwt.jwks.keys[0].y"
        );
        let mut y = b64(RFC_A3_Y);
        y[31] ^= 1;
        assert_eq!(
            err(vec![with(ec_jwk("e"), "y", json!(base64::encode_url(&y)))]),
            "jwt.jwks.keys[0].x",
            "a point off the curve"
        );
        assert_eq!(
            err(vec![with(ec_jwk("e"), "alg", json!("ES384"))]),
            "jwt.jwks.keys[0].alg"
        );
        // OKP
        assert_eq!(
            err(vec![with(ed_jwk("d"), "crv", json!("X25519"))]),
            "jwt.jwks.keys[0].crv"
        );
        assert_eq!(
            err(vec![with(
                ed_jwk("d"),
                "x",
                json!(RFC_A3_X.replace('f', "+"))
            )]),
            "jwt.jwks.keys[0].x"
        );
        assert_eq!(
            err(vec![with(ed_jwk("d"), "alg", json!("Ed25519"))]),
            "jwt.jwks.keys[0].alg"
        );
        // Types and sets
        assert_eq!(
            err(vec![with(ed_jwk("d"), "kty", json!("oct"))]),
            "jwt.jwks.keys[0].kty"
        );
        assert_eq!(
            err(vec![with(ed_jwk("d"), "kty", json!("RSA-PSS"))]),
            "jwt.jwks.keys[0].kty"
        );
        assert_eq!(
            err(vec![with(ed_jwk("d"), "kty", json!(null))]),
            "jwt.jwks.keys[0].kty"
        );
        assert_eq!(err(vec![json!("RSA")]), "jwt.jwks.keys[0]");
        assert_eq!(err(vec![]), "jwt.jwks.keys");
        assert_eq!(err(vec![ed_jwk("d"); 11]), "jwt.jwks.keys");
        // Several keys need distinct ids.
        assert_eq!(
            err(vec![ed_jwk("d"), with(ec_jwk("e"), "kid", json!(null))]),
            "jwt.jwks.keys[1].kid"
        );
        assert_eq!(err(vec![ed_jwk("d"), ec_jwk("d")]), "jwt.jwks.keys[1].kid");
        assert_eq!(
            err(vec![with(ed_jwk("d"), "kid", json!(""))]),
            "jwt.jwks.keys[0].kid"
        );
        // A lone key may go without.
        assert!(jwks_config(vec![with(ed_jwk("d"), "kid", json!(null))]).is_ok());
        // Public members other JWKS carry (x5c, x5t, …) are accepted and not kept.
        let config = jwks_config(vec![with(rsa_jwk("r"), "x5t", json!("abc"))]).unwrap();
        assert_eq!(config.to_stored()["jwks"]["keys"][0].get("x5t"), None);
        let body =
            json!({"issuer": ISSUER, "audience": "a", "jwks": {"keys": [ed_jwk("d")], "extra": 1}});
        assert_eq!(param(parse_jwt(&body, None).unwrap_err()), "jwt.jwks.extra");
    }

    #[test]
    fn private_key_members_are_refused() {
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
            let mut jwk = rsa_jwk("r");
            jwk[member] = json!("AQAB");
            let e = jwks_config(vec![ed_jwk("e"), jwk]).unwrap_err();
            assert_eq!(param(e.clone()), format!("jwt.jwks.keys[1].{member}"));
            assert_eq!(e.status(), 400);
        }
        let mut jwk = ed_jwk("e");
        jwk["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
        assert_eq!(
            param(jwks_config(vec![jwk]).unwrap_err()),
            "jwt.jwks.keys[0].d"
        );
    }

    #[test]
    fn several_keys_at_once_for_rotation() {
        let config = jwks_config(vec![rsa_jwk("2024"), ec_jwk("2025"), ed_jwk("next")]).unwrap();
        let view = serde_json::to_value(config.view()).unwrap();
        assert_eq!(
            view,
            json!({"issuer": ISSUER, "audience": "edgerelay", "hs256": false, "keys": [
                {"kid": "2024", "kty": "RSA", "alg": "RS256"},
                {"kid": "2025", "kty": "EC", "alg": "ES256"},
                {"kid": "next", "kty": "OKP", "alg": "EdDSA"},
            ]})
        );
        assert_eq!(
            JwtConfig::from_stored(&config.to_stored()),
            Ok(config.clone())
        );
        assert_eq!(parse_jwt(&view, Some(&config)), Ok(Some(config.clone())));
        // Replacing the keys replaces them all.
        let body = json!({"jwks": {"keys": [ed_jwk("next")]}});
        let rotated = parse_jwt(&body, Some(&config)).unwrap().unwrap();
        assert_eq!(rotated.view().keys.len(), 1);
        assert_eq!(rotated.issuer(), ISSUER);
        // An HS256 token never reaches a JWKS config's keys, nor the other way round.
        assert!(select_key(parse(GOOD).unwrap(), &config).is_err());
    }

    #[test]
    fn stored_configs_are_validated_again() {
        let mut stored = jwks_config(vec![ed_jwk("e")]).unwrap().to_stored();
        stored["jwks"]["keys"][0]["d"] = json!("AAAA");
        assert_eq!(
            param(JwtConfig::from_stored(&stored).unwrap_err()),
            "jwt.jwks.keys[0].d"
        );
        let short =
            json!({"issuer": "i", "audience": "a", "hs256_key": base64::encode_url(&[1; 16])});
        assert_eq!(
            param(JwtConfig::from_stored(&short).unwrap_err()),
            "jwt.hs256_key"
        );
    }

    #[test]
    fn p256_curve_membership() {
        let unhex = |s: &str| -> [u8; 32] {
            let bytes: Vec<u8> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            bytes.try_into().unwrap()
        };
        let point = |x: &str, y: &str| p256::on_curve(&unhex(x), &unhex(y));
        // The generator (FIPS 186-4 D.1.2.3).
        let gx = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
        let gy = "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
        assert!(point(gx, gy));
        assert!(!point(gx, &gy.replace("f5", "f6")));
        // -G = (gx, p - gy) is on the curve too.
        let neg_gy = "b01cbd1c01e58065711814b583f061e9d431cca994cea1313449bf97c840ae0a";
        assert!(point(gx, neg_gy));
        // Coordinates ≥ p are not field elements.
        let p = "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff";
        assert!(!point(p, gy));
        assert!(!point(&"0".repeat(64), &"0".repeat(64)));
        let (x, y) = (b64(RFC_A3_X), b64(RFC_A3_Y));
        assert!(p256::on_curve(
            &x.try_into().unwrap(),
            &y.try_into().unwrap()
        ));
    }
}
