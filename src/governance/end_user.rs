//! Which end user a request is for — the person behind an app, not the tenant or the key — and
//! the name of the limiter that counts that user's requests.
//!
//! Sources, strongest first: the `sub` of a verified tenant-signed token; OpenAI's `user`
//! field; Anthropic's `metadata.user_id`; the relay's own `x-relay-user` header. A token's
//! `sub` is signed by the tenant, so an end user holding a token cannot pose as another; the
//! other three are whatever the caller sends, so they mean something only when the caller is
//! the tenant's own server (with a relay key). Only the strongest source present counts: a
//! token's `sub` is not overridden by a body field, and a weaker source is not even read.
//!
//! A user id is 1 to [`MAX_USER_ID_BYTES`] bytes of text without control characters. A chosen
//! source that is not one is refused with a 400 naming it, rather than ignored: ignoring it
//! would silently move the request to the next source (another user's counters) or to none
//! (no per-user limit at all), and the caller could not tell. Anthropic documents the same
//! 256-character bound for `metadata.user_id`.

use crate::error::RelayError;
use crate::support::crypto::{hex, sha256};

pub const MAX_USER_ID_BYTES: usize = 256;

/// Where the end user's id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `sub` of a verified tenant-signed token.
    Token,
    /// OpenAI's `user` request field.
    OpenAiUser,
    /// Anthropic's `metadata.user_id` request field.
    AnthropicMetadata,
    /// The `x-relay-user` request header.
    Header,
}

impl Source {
    /// The field a 400 names.
    pub fn param(self) -> &'static str {
        match self {
            Source::Token => "sub",
            Source::OpenAiUser => "user",
            Source::AnthropicMetadata => "metadata.user_id",
            Source::Header => "x-relay-user",
        }
    }

    /// Only a token's `sub` is vouched for by the tenant.
    pub fn is_signed(self) -> bool {
        match self {
            Source::Token => true,
            Source::OpenAiUser | Source::AnthropicMetadata | Source::Header => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUser {
    pub id: String,
    pub source: Source,
}

/// Why a user id is not one.
pub fn check_user_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES {
        return Err("must be 1 to 256 bytes");
    }
    // Control characters (C0, DEL, C1) would break log lines and CSV exports; line and
    // paragraph separators too.
    if id
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return Err("must not contain control characters");
    }
    if id.trim().is_empty() {
        return Err("must not be only spaces");
    }
    Ok(())
}

/// The end user of a request from its four possible sources (each as the request has it,
/// `None` when absent), strongest first; `Ok(None)` when none is present.
pub fn end_user(
    token_sub: Option<&str>,
    openai_user: Option<&str>,
    anthropic_user_id: Option<&str>,
    header: Option<&str>,
) -> Result<Option<EndUser>, RelayError> {
    let chosen = [
        (Source::Token, token_sub),
        (Source::OpenAiUser, openai_user),
        (Source::AnthropicMetadata, anthropic_user_id),
        (Source::Header, header),
    ]
    .into_iter()
    .find_map(|(source, id)| id.map(|id| (source, id)));
    let Some((source, id)) = chosen else {
        return Ok(None);
    };
    check_user_id(id).map_err(|why| RelayError::invalid_value(source.param(), why))?;
    Ok(Some(EndUser {
        id: id.to_string(),
        source,
    }))
}

/// The limiter object that counts one end user of one tenant: `user:<tenant>:<32 hex digits>`.
/// The user id is hashed so object names stay short whatever the id, and an id (often an
/// email address) never appears in object names, logs of them, or the dashboard. 128 bits of
/// SHA-256 make a collision between two users of a tenant negligible.
pub fn limiter_name(tenant_id: &str, user_id: &str) -> String {
    let digest = hex(&sha256(user_id.as_bytes()));
    format!("user:{tenant_id}:{}", &digest[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(
        sub: Option<&str>,
        user: Option<&str>,
        meta: Option<&str>,
        header: Option<&str>,
    ) -> Result<Option<(String, Source)>, RelayError> {
        end_user(sub, user, meta, header).map(|u| u.map(|u| (u.id, u.source)))
    }

    #[test]
    fn the_strongest_source_present_wins() {
        let all = pick(Some("s"), Some("u"), Some("m"), Some("h")).unwrap();
        assert_eq!(all, Some(("s".into(), Source::Token)));
        assert_eq!(
            pick(None, Some("u"), Some("m"), Some("h")).unwrap(),
            Some(("u".into(), Source::OpenAiUser))
        );
        assert_eq!(
            pick(None, None, Some("m"), Some("h")).unwrap(),
            Some(("m".into(), Source::AnthropicMetadata))
        );
        assert_eq!(
            pick(None, None, None, Some("h")).unwrap(),
            Some(("h".into(), Source::Header))
        );
        assert_eq!(pick(None, None, None, None).unwrap(), None);
        assert!(Source::Token.is_signed());
        assert!(!Source::Header.is_signed());
    }

    #[test]
    fn a_bad_chosen_id_is_a_400_naming_its_source_and_weaker_ones_are_not_read() {
        let param = |r: Result<Option<(String, Source)>, RelayError>| {
            r.unwrap_err().param().unwrap_or_default().to_string()
        };
        assert_eq!(param(pick(None, Some(""), None, None)), "user");
        assert_eq!(
            param(pick(None, None, Some("a\nb"), None)),
            "metadata.user_id"
        );
        assert_eq!(param(pick(None, None, None, Some("   "))), "x-relay-user");
        assert_eq!(param(pick(Some("x\u{7f}"), None, None, None)), "sub");
        // A bad weaker source does not matter when a stronger one is present.
        assert_eq!(
            pick(None, Some("u"), Some(""), Some("\u{0}")).unwrap(),
            Some(("u".into(), Source::OpenAiUser))
        );
    }

    #[test]
    fn user_ids_are_bounded_printable_text() {
        assert_eq!(check_user_id("alice@example.com"), Ok(()));
        assert_eq!(check_user_id("user 42 / team a"), Ok(()));
        assert_eq!(check_user_id("ユーザー"), Ok(()));
        assert_eq!(check_user_id(&"x".repeat(256)), Ok(()));
        assert!(check_user_id(&"x".repeat(257)).is_err());
        // Bytes count, not characters: 86 three-byte characters are 258 bytes.
        assert!(check_user_id(&"ユ".repeat(86)).is_err());
        for bad in [
            "",
            " ",
            "a\tb",
            "a\rb",
            "\u{1b}[31m",
            "a\u{85}b",
            "a\u{2028}b",
        ] {
            assert!(check_user_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limiter_names_are_bounded_and_do_not_leak_the_id() {
        // sha256("alice@example.com") = ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976
        assert_eq!(
            limiter_name("ten_1", "alice@example.com"),
            "user:ten_1:ff8d9819fc0e12bf0d24892e45987e24"
        );
        let long = limiter_name("ten_1", &"x".repeat(256));
        assert_eq!(long.len(), "user:ten_1:".len() + 32);
        assert!(!limiter_name("t", "alice").contains("alice"));
        assert_ne!(limiter_name("t1", "a"), limiter_name("t2", "a"));
        assert_ne!(limiter_name("t", "a"), limiter_name("t", "b"));
    }
}
