//! Who is calling, and may they: relay API keys (format, generation, the SHA-256 hash stored
//! for them, the credential presented in request headers), the state a key must be in to be
//! used, and who is calling the admin API (what each admin route lets a tenant token touch is
//! a fact of the route, in `api::routes`). Also opaque row ids.
//!
//! Randomness is an input: callers pass the random bytes (the edge reads `getrandom`), so
//! everything here is deterministic and testable on the host.

use crate::error::RelayError;
use crate::governance::grant::{KeyGrant, KeyStatus, Status};
use crate::support::crypto::{hex, sha256};

/// Every relay key starts with this, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "sk-er-";

/// `KEY_PREFIX` plus 4 characters: enough for an admin to tell keys apart, far too little
/// (≈24 bits) to help guess the rest.
pub const VISIBLE_PREFIX_CHARS: usize = 10;

/// 62^43 ≥ 2^256 > 62^42, so 43 base-62 digits hold any 32-byte value and no fewer do.
const KEY_BODY_CHARS: usize = 43;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What is stored in D1 for a key: lowercase hex SHA-256 of the plaintext's UTF-8 bytes.
/// A plain unsalted hash is enough because keys carry 256 random bits; salting or stretching
/// defends low-entropy passwords, and would prevent looking a key up by its hash.
pub fn hash_key(plaintext: &str) -> String {
    hex(&sha256(plaintext.as_bytes()))
}

/// A new key: `KEY_PREFIX` followed by the 32 random bytes written in base 62, 43 digits.
///
/// No modulo bias: the bytes are read as one 256-bit big-endian integer and converted to
/// base 62 exactly (repeated long division), not one byte per character. The map from the
/// 2^256 inputs to strings is injective, so a uniform input gives a uniformly random key with
/// the full 256 bits of entropy. (Individual characters are not all uniform — the leading
/// digit is at most 60, `y` — which costs no entropy.)
pub fn generate_key(random: &[u8; 32]) -> String {
    let mut number = *random;
    let mut digits = [0u8; KEY_BODY_CHARS];
    for digit in digits.iter_mut().rev() {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            // value < 62 * 256, so the quotient fits a byte.
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        *digit = BASE62[remainder as usize];
    }
    let mut key = String::with_capacity(KEY_PREFIX.len() + KEY_BODY_CHARS);
    key.push_str(KEY_PREFIX);
    key.extend(digits.iter().map(|&d| char::from(d)));
    key
}

/// What admin listings show: the first `VISIBLE_PREFIX_CHARS` characters.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(VISIBLE_PREFIX_CHARS).collect()
}

/// The credential a client presented: `Authorization: Bearer <t>` (scheme case-insensitive,
/// whitespace trimmed), else `x-api-key: <t>` (what Anthropic SDKs send). Another scheme or an
/// empty bearer token falls through to `x-api-key`; nothing usable gives `None`.
pub fn credential_from_headers(
    authorization: Option<&str>,
    x_api_key: Option<&str>,
) -> Option<String> {
    let bearer = authorization.and_then(|value| {
        let (scheme, token) = value.trim().split_once(|c: char| c.is_ascii_whitespace())?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer
        .filter(|token| !token.is_empty())
        .or_else(|| x_api_key.map(str::trim).filter(|token| !token.is_empty()))
        .map(str::to_owned)
}

/// Opaque ids like `ten_5f2c…`: `prefix`, `_`, then lowercase hex of the caller's random bytes
/// (10 bytes give 20 hex characters, 80 bits: collisions are negligible at our row counts).
pub fn new_id(prefix: &str, random: &[u8]) -> String {
    let mut id = String::with_capacity(prefix.len() + 1 + random.len() * 2);
    id.push_str(prefix);
    id.push('_');
    id.push_str(&hex(random));
    id
}

/// Is this key usable at `now_ms`? Checked on every request, also when the record is cached,
/// so an expiry takes effect on the millisecond.
pub fn check_key(grant: &KeyGrant, now_ms: i64) -> Result<(), RelayError> {
    if grant.key_status == KeyStatus::Revoked {
        return Err(RelayError::KeyRevoked);
    }
    if grant.expires_at.is_some_and(|at| now_ms >= at) {
        return Err(RelayError::KeyExpired);
    }
    if grant.tenant_status == Status::Disabled {
        return Err(RelayError::TenantDisabled);
    }
    Ok(())
}

/// Who is calling the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The global admin token: everything.
    Admin,
    /// A tenant-scoped admin token: its own tenant's keys, limits, usage and audit rows only.
    Tenant { tenant_id: String, token_id: String },
}

impl Actor {
    /// How the audit log names it.
    pub fn name(&self) -> String {
        match self {
            Actor::Admin => "admin".into(),
            Actor::Tenant { token_id, .. } => format!("tenant_token:{token_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::grant::KeyGrant;

    fn grant() -> KeyGrant {
        KeyGrant {
            key_id: "k".into(),
            tenant_id: "t".into(),
            ..KeyGrant::default()
        }
    }

    #[test]
    fn hash_key_matches_node_crypto() {
        // node -e "console.log(require('crypto').createHash('sha256')
        //   .update('sk-er-demo-0123456789abcdefghijklmnopqrstuv').digest('hex'))"
        // The dev seed script stores this hash; the Worker must compute the same.
        assert_eq!(
            hash_key("sk-er-demo-0123456789abcdefghijklmnopqrstuv"),
            "72a6f57be4a242db8539369306539f9bba66bafa5b6821bf7b4025ba8aa7a000"
        );
    }

    fn assert_key_shape(key: &str) {
        assert_eq!(key.len(), KEY_PREFIX.len() + 43, "{key}");
        let body = key.strip_prefix(KEY_PREFIX).expect("prefix");
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    }

    #[test]
    fn generate_key_shape_and_extremes() {
        let zero = generate_key(&[0; 32]);
        assert_eq!(zero, format!("{KEY_PREFIX}{}", "0".repeat(43)));
        // Expected bodies from Python's base-62 conversion of int.from_bytes(..., "big").
        let max = generate_key(&[0xff; 32]);
        assert_key_shape(&max);
        assert_eq!(max, "sk-er-yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1");
        assert_eq!(
            generate_key(&[0x5a; 32]),
            "sk-er-LQNUGZHT5u543eF8cvF8tKdPlcVkNSYQAq1KIqZ6f74"
        );
        let mut one = [0u8; 32];
        one[31] = 61;
        assert_eq!(
            generate_key(&one),
            format!("{KEY_PREFIX}{}z", "0".repeat(42))
        );
        one[31] = 62;
        assert_eq!(
            generate_key(&one),
            format!("{KEY_PREFIX}{}10", "0".repeat(41))
        );
    }

    #[test]
    fn generate_key_distinct_inputs_give_distinct_keys() {
        let mut keys = std::collections::HashSet::new();
        for position in 0..32 {
            for bit in 0..8 {
                let mut random = [0x5au8; 32];
                random[position] ^= 1 << bit;
                let key = generate_key(&random);
                assert_key_shape(&key);
                assert!(keys.insert(key), "collision at byte {position} bit {bit}");
            }
        }
        assert!(keys.insert(generate_key(&[0x5a; 32])));
    }

    #[test]
    fn key_prefix_is_char_safe() {
        assert_eq!(key_prefix("sk-er-abcdefgh"), "sk-er-abcd");
        assert_eq!(key_prefix("sk-er"), "sk-er");
        assert_eq!(key_prefix("ééééééééééééé"), "éééééééééé");
        assert_eq!(key_prefix(""), "");
    }

    #[test]
    fn credential_extraction() {
        let got = |auth, key| credential_from_headers(auth, key);
        assert_eq!(
            got(Some("Bearer sk-er-1"), None).as_deref(),
            Some("sk-er-1")
        );
        assert_eq!(
            got(Some("bearer sk-er-1"), None).as_deref(),
            Some("sk-er-1")
        );
        assert_eq!(
            got(Some("BEARER sk-er-1"), None).as_deref(),
            Some("sk-er-1")
        );
        assert_eq!(
            got(Some("  Bearer    sk-er-1  "), None).as_deref(),
            Some("sk-er-1")
        );
        assert_eq!(
            got(Some("Bearer\tsk-er-1"), None).as_deref(),
            Some("sk-er-1")
        );
        // Bearer wins over x-api-key.
        assert_eq!(got(Some("Bearer a"), Some("b")).as_deref(), Some("a"));
        assert_eq!(got(None, Some(" sk-er-2 ")).as_deref(), Some("sk-er-2"));
        assert_eq!(
            got(Some("Basic x"), Some("sk-er-2")).as_deref(),
            Some("sk-er-2")
        );
        assert_eq!(got(Some("Basic x"), None), None);
        assert_eq!(got(Some("Bearer"), None), None);
        assert_eq!(got(Some("Bearer   "), Some("k")).as_deref(), Some("k"));
        assert_eq!(got(Some("sk-er-3"), None), None);
        assert_eq!(got(Some(""), Some("")), None);
        assert_eq!(got(None, Some("   ")), None);
        assert_eq!(got(None, None), None);
    }

    #[test]
    fn new_id_format() {
        let id = new_id("ten", &[0x5f, 0x2c, 0, 1, 2, 3, 4, 5, 0xab, 0xff]);
        assert_eq!(id, "ten_5f2c000102030405abff");
        assert_eq!(new_id("key", &[]), "key_");
    }

    #[test]
    fn key_state_checks_in_order() {
        let mut g = grant();
        assert_eq!(check_key(&g, 0), Ok(()));
        g.expires_at = Some(100);
        assert_eq!(check_key(&g, 99), Ok(()));
        assert_eq!(check_key(&g, 100), Err(RelayError::KeyExpired));
        g.tenant_status = Status::Disabled;
        g.expires_at = None;
        assert_eq!(check_key(&g, 0), Err(RelayError::TenantDisabled));
        g.key_status = KeyStatus::Revoked;
        assert_eq!(check_key(&g, 0), Err(RelayError::KeyRevoked));
    }

    #[test]
    fn actors_are_named_in_the_audit_log() {
        assert_eq!(
            Actor::Tenant {
                tenant_id: "t".into(),
                token_id: "tt_1".into()
            }
            .name(),
            "tenant_token:tt_1"
        );
    }
}
