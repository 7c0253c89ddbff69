//! Redaction of bodies an opt-in body log keeps: relay and provider keys, bearer tokens,
//! secret-named JSON values, email addresses and card numbers become `[REDACTED:<kind>]`,
//! in one linear pass.

/// A `"password"` or `"secret"` value longer than this is not taken for one: the closing quote
/// found is then more likely a later string's, and redacting to it would eat the body.
const MAX_SECRET_VALUE: usize = 8192;

/// Key names longer than this are not inspected (real ones are short), which bounds each try.
const MAX_KEY_NAME: usize = 64;

/// Shortest credential-shaped value after a `"…key"`/`"…token"` name, and shortest `sk-` tail:
/// below it, ordinary words (`sk-learn`, `"key": "model"`) would be caught.
const MIN_SECRET_LEN: usize = 16;

/// Replace credentials and personal data in `text` with `[REDACTED:<kind>]`, for bodies kept by
/// the opt-in body log. Kinds: `relay_key` (sk-er-…), `anthropic_key` (sk-ant-…), `api_key`
/// (other sk-…), `google_key` (AIza…), `aws_key` (AKIA…/ASIA…), `bearer` (the token after
/// "Bearer"), `password`/`secret` (string values of JSON keys naming a password, secret,
/// private key, or a key/token with a credential-shaped value; also inside JSON-encoded strings
/// such as tool-call arguments), `email`, and `card` (13–19 digits, single spaces or dashes
/// between groups, passing Luhn).
///
/// One forward pass: every matcher starts only where its pattern can begin (a word start, a
/// quote, an `@`) and scans only its own characters, so no byte is rescanned more than a few
/// times. Matches are ASCII, so cuts always fall on UTF-8 boundaries; the text around them is
/// copied untouched.
pub fn redact(text: &str) -> String {
    let mut r = Redactor {
        text,
        bytes: text.as_bytes(),
        out: String::with_capacity(text.len()),
        emitted: 0,
        closes: None,
    };
    let mut i = 0;
    while i < r.bytes.len() {
        i = r.step(i);
    }
    if let Some(rest) = text.get(r.emitted..) {
        r.out.push_str(rest);
    }
    r.out
}

struct Redactor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    out: String,
    /// `text[..emitted]` is already in `out`, verbatim or redacted.
    emitted: usize,
    /// Closing-quote positions, computed on the first secret-named key only.
    closes: Option<Closes>,
}

/// Where JSON strings can end. `plain`: quotes preceded by an even run of backslashes.
/// `escaped`: the backslash of `\"` ending a string that is itself inside a JSON string (a run
/// of 4k+1 backslashes before the quote).
struct Closes {
    plain: Vec<usize>,
    escaped: Vec<usize>,
}

impl Closes {
    fn of(bytes: &[u8]) -> Closes {
        let mut closes = Closes {
            plain: Vec::new(),
            escaped: Vec::new(),
        };
        let mut backslashes = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\\' => backslashes += 1,
                b'"' => {
                    if backslashes.is_multiple_of(2) {
                        closes.plain.push(i);
                    } else if backslashes % 4 == 1 {
                        closes.escaped.push(i - 1);
                    }
                    backslashes = 0;
                }
                _ => backslashes = 0,
            }
        }
        closes
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_bearer_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)
}

fn is_secret_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/=_.-".contains(&b)
}

fn is_email_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

impl Redactor<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn before(&self, i: usize) -> Option<u8> {
        i.checked_sub(1).and_then(|p| self.at(p))
    }

    /// End of the run of `class` bytes starting at `i`.
    fn run_end(&self, mut i: usize, class: fn(u8) -> bool) -> usize {
        while self.at(i).is_some_and(class) {
            i += 1;
        }
        i
    }

    fn starts_with_at(&self, i: usize, prefix: &[u8]) -> bool {
        self.bytes.get(i..).is_some_and(|s| s.starts_with(prefix))
    }

    /// Emit `text[emitted..start]` and the placeholder in place of `text[start..end]`.
    fn replace(&mut self, start: usize, end: usize, kind: &str) -> bool {
        if start < self.emitted || end <= start {
            return false;
        }
        let (Some(kept), true) = (
            self.text.get(self.emitted..start),
            self.text.is_char_boundary(end),
        ) else {
            return false;
        };
        self.out.push_str(kept);
        self.out.push_str("[REDACTED:");
        self.out.push_str(kind);
        self.out.push(']');
        self.emitted = end;
        true
    }

    /// Try every matcher that can start at `i`; the position to look at next.
    fn step(&mut self, i: usize) -> usize {
        let Some(b) = self.at(i) else {
            return i + 1;
        };
        let matched = match b {
            b'"' if self.before(i) != Some(b'\\') => self.json_secret(i, false),
            b'\\' if self.at(i + 1) == Some(b'"') => self.json_secret(i, true),
            b'@' => self.email(i),
            b'0'..=b'9' => return self.cards(i),
            b'B' | b'b' => self.bearer(i),
            b's' => self.sk_key(i),
            b'A' => self.google_key(i).or_else(|| self.aws_key(i)),
            _ => None,
        };
        match matched {
            Some(end) => end.max(i + 1),
            None => i + 1,
        }
    }

    /// `sk-` keys (OpenAI, the relay's own `sk-er-`, Anthropic's `sk-ant-`, and the many
    /// OpenAI-compatible providers that copied the prefix).
    fn sk_key(&mut self, i: usize) -> Option<usize> {
        if self.before(i).is_some_and(is_key_char) || !self.starts_with_at(i, b"sk-") {
            return None;
        }
        let end = self.run_end(i + 3, is_key_char);
        if end - (i + 3) < MIN_SECRET_LEN {
            return None;
        }
        let kind = if self.starts_with_at(i, b"sk-er-") {
            "relay_key"
        } else if self.starts_with_at(i, b"sk-ant-") {
            "anthropic_key"
        } else {
            "api_key"
        };
        self.replace(i, end, kind).then_some(end)
    }

    /// Google API keys: `AIza` and 35 more characters.
    fn google_key(&mut self, i: usize) -> Option<usize> {
        if self.before(i).is_some_and(is_key_char) || !self.starts_with_at(i, b"AIza") {
            return None;
        }
        let end = self.run_end(i + 4, is_key_char);
        if end - (i + 4) < 35 {
            return None;
        }
        self.replace(i, end, "google_key").then_some(end)
    }

    /// AWS access key ids: `AKIA` (long-term) or `ASIA` (temporary) and 16 upper-case
    /// alphanumerics, as a whole word.
    fn aws_key(&mut self, i: usize) -> Option<usize> {
        if self.before(i).is_some_and(|b| b.is_ascii_alphanumeric())
            || !(self.starts_with_at(i, b"AKIA") || self.starts_with_at(i, b"ASIA"))
        {
            return None;
        }
        let end = self.run_end(i + 4, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if end - (i + 4) != 16 || self.at(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        self.replace(i, end, "aws_key").then_some(end)
    }

    /// The token after `Bearer` (any case); the word itself is kept so the log still shows
    /// what kind of credential was sent. Prose ("bearer of bad news", "Bearer authentication")
    /// is left alone by asking a token to hold a digit or to be long.
    fn bearer(&mut self, i: usize) -> Option<usize> {
        let word = self.bytes.get(i..i + 6)?;
        if !word.eq_ignore_ascii_case(b"bearer") || self.before(i).is_some_and(is_key_char) {
            return None;
        }
        let start = self.run_end(i + 6, |b| b == b' ' || b == b'\t');
        if start == i + 6 {
            return None;
        }
        let end = self.run_end(start, is_bearer_char);
        let token = self.bytes.get(start..end)?;
        let looks_secret = token.len() >= 24 || token.iter().any(u8::is_ascii_digit);
        if token.len() < 8 || !looks_secret {
            return None;
        }
        self.replace(start, end, "bearer").then_some(end)
    }

    /// `"name": "value"` where the name speaks of a secret. `escaped` is the same inside a
    /// JSON-encoded string (`\"name\": \"value\"`), as tool-call arguments carry it.
    fn json_secret(&mut self, i: usize, escaped: bool) -> Option<usize> {
        let quote: &[u8] = if escaped { b"\\\"" } else { b"\"" };
        let name_start = i + quote.len();
        let name_end = self.run_end(name_start, |b| b != b'"' && b != b'\\');
        if name_end - name_start > MAX_KEY_NAME || !self.starts_with_at(name_end, quote) {
            return None;
        }
        let name = self.text.get(name_start..name_end)?.to_ascii_lowercase();
        let any_value = if name.contains("password") || name.contains("passwd") {
            Some("password")
        } else if name.contains("secret")
            || name.contains("private_key")
            || name.contains("privatekey")
        {
            Some("secret")
        } else if name.contains("key") || name.contains("token") {
            None
        } else {
            return None;
        };
        let is_space = |b: u8| b" \t\r\n".contains(&b);
        let colon = self.run_end(name_end + quote.len(), is_space);
        if self.at(colon) != Some(b':') {
            return None;
        }
        let open = self.run_end(colon + 1, is_space);
        if !self.starts_with_at(open, quote) {
            return None;
        }
        let value_start = open + quote.len();
        let value_end = match any_value {
            Some(_) => {
                let closes = self.closes.get_or_insert_with(|| Closes::of(self.bytes));
                let list = if escaped {
                    &closes.escaped
                } else {
                    &closes.plain
                };
                let close = *list.get(list.partition_point(|&c| c < value_start))?;
                if close == value_start || close - value_start > MAX_SECRET_VALUE {
                    return None;
                }
                close
            }
            None => {
                let end = self.run_end(value_start, is_secret_char);
                let value = self.bytes.get(value_start..end)?;
                if !self.starts_with_at(end, quote)
                    || value.len() < MIN_SECRET_LEN
                    || !value.iter().any(u8::is_ascii_digit)
                {
                    return None;
                }
                end
            }
        };
        let kind = any_value.unwrap_or("secret");
        self.replace(value_start, value_end, kind)
            .then_some(value_end)
    }

    /// An address around the `@` at `at`: the local part is found by looking back (never into
    /// what was already emitted), the domain by looking ahead.
    fn email(&mut self, at: usize) -> Option<usize> {
        let mut start = at;
        while start > self.emitted && self.before(start).is_some_and(is_email_local_char) {
            start -= 1;
        }
        while start < at && self.at(start) == Some(b'.') {
            start += 1;
        }
        if start == at {
            return None;
        }
        let mut end = self.run_end(at + 1, is_domain_char);
        // A sentence may end right after the address.
        while end > at + 1 && matches!(self.before(end), Some(b'.' | b'-')) {
            end -= 1;
        }
        let domain = self.text.get(at + 1..end)?;
        let labels: Vec<&str> = domain.split('.').collect();
        let tld_ok = labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()));
        if labels.len() < 2 || !tld_ok || labels.iter().any(|l| l.is_empty()) {
            return None;
        }
        self.replace(start, end, "email").then_some(end)
    }

    /// Card numbers in the run of digit groups starting at `i` (groups joined by one space or
    /// dash). Every window of whole groups holding 13–19 digits is a candidate, the longest
    /// passing Luhn from each start wins, so "4111 1111 1111 1111 12/27" still finds the card
    /// before the expiry. Returns the run's end: the run is examined once, whatever it holds.
    fn cards(&mut self, i: usize) -> usize {
        let glued = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
        if self.before(i).is_some_and(glued) {
            return i + 1;
        }
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut pos = i;
        loop {
            let end = self.run_end(pos, |b| b.is_ascii_digit());
            groups.push((pos, end));
            let separated = matches!(self.at(end), Some(b' ' | b'-'))
                && self.at(end + 1).is_some_and(|b| b.is_ascii_digit());
            if !separated {
                pos = end;
                break;
            }
            pos = end + 1;
        }
        // A number glued to letters, or the integer part of a decimal, is not a card.
        let right_free = match self.at(pos) {
            Some(b'.') => !self.at(pos + 1).is_some_and(|b| b.is_ascii_digit()),
            Some(b) => !(b.is_ascii_alphanumeric() || b == b'_'),
            None => true,
        };
        let mut g = 0;
        while g < groups.len() {
            let mut digits = 0;
            let mut best = None;
            for (h, &(s, e)) in groups.iter().enumerate().skip(g) {
                digits += e - s;
                if digits > 19 {
                    break;
                }
                let at_right_edge = h + 1 == groups.len();
                let window = groups.get(g..=h).unwrap_or_default();
                if digits >= 13 && (!at_right_edge || right_free) && self.luhn_groups(window) {
                    best = Some(h);
                }
            }
            match best.and_then(|h| Some((groups.get(g)?.0, groups.get(h)?.1, h))) {
                Some((start, end, h)) => {
                    self.replace(start, end, "card");
                    g = h + 1;
                }
                None => g += 1,
            }
        }
        pos.max(i + 1)
    }

    fn luhn_groups(&self, groups: &[(usize, usize)]) -> bool {
        let digits: Vec<u8> = groups
            .iter()
            .filter_map(|&(s, e)| self.bytes.get(s..e))
            .flatten()
            .map(|d| d - b'0')
            .collect();
        luhn(digits.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_api_keys_and_tokens() {
        let cases = [
            (
                "key sk-er-LQNUGZHT5u543eF8cvF8tKdPlcVkNSYQAq1KIqZ6f74 here",
                "key [REDACTED:relay_key] here",
            ),
            (
                "x-api-key: sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
                "x-api-key: [REDACTED:anthropic_key]",
            ),
            ("sk-proj-abcdefghijklmnop1234", "[REDACTED:api_key]"),
            (
                "?key=AIzaSyA1234567890abcdefghijklmnopqrstuv&alt=sse",
                "?key=[REDACTED:google_key]&alt=sse",
            ),
            (
                "id AKIAIOSFODNN7EXAMPLE, tmp ASIAIOSFODNN7EXAMPLE.",
                "id [REDACTED:aws_key], tmp [REDACTED:aws_key].",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_x-1",
                "Authorization: Bearer [REDACTED:bearer]",
            ),
            (
                "authorization: bearer tt-abc123xyz",
                "authorization: bearer [REDACTED:bearer]",
            ),
            // Not credentials: a library name, prose, a short test key, a longer word.
            ("pip install sk-learn", "pip install sk-learn"),
            ("the bearer of bad news", "the bearer of bad news"),
            ("Bearer authentication", "Bearer authentication"),
            (
                "ask-abcdefghijklmnopqrstuvwxyz",
                "ask-abcdefghijklmnopqrstuvwxyz",
            ),
            ("AKIAIOSFODNN7EXAMPLEX", "AKIAIOSFODNN7EXAMPLEX"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn redacts_secret_json_values() {
        let body = r#"{"api_key": "0123456789abcdef0123", "password":"hunter2", "max_tokens": 100, "client_secret" : "a b \" c", "key": "model", "model":"gpt-4o"}"#;
        assert_eq!(
            redact(body),
            r#"{"api_key": "[REDACTED:secret]", "password":"[REDACTED:password]", "max_tokens": 100, "client_secret" : "[REDACTED:secret]", "key": "model", "model":"gpt-4o"}"#
        );
        // Inside a JSON-encoded string, as tool-call arguments carry it.
        let args = r#"{"arguments":"{\"user\":\"bob\",\"password\":\"p@ss \\\"w\\\"\",\"access_token\":\"ghp_0123456789abcdefXYZ\"}"}"#;
        assert_eq!(
            redact(args),
            r#"{"arguments":"{\"user\":\"bob\",\"password\":\"[REDACTED:password]\",\"access_token\":\"[REDACTED:secret]\"}"}"#
        );
        // Unterminated: nothing to cut at, nothing eaten.
        assert_eq!(redact(r#"{"password": "abc"#), r#"{"password": "abc"#);
        assert_eq!(redact(r#""password":"""#), r#""password":"""#);
    }

    #[test]
    fn redacts_emails() {
        assert_eq!(
            redact("Mail jane.doe+ai@mail.example.co.uk."),
            "Mail [REDACTED:email]."
        );
        assert_eq!(
            redact("<a@b.io>,c_d@e-f.org"),
            "<[REDACTED:email]>,[REDACTED:email]"
        );
        for keep in [
            "@handle",
            "a@b",
            "x@y.z1",
            "user@localhost",
            "a@@b.com",
            "@.com",
        ] {
            assert_eq!(redact(keep), keep);
        }
    }

    #[test]
    fn redacts_only_cards_passing_luhn() {
        assert_eq!(redact("card 4111111111111111"), "card [REDACTED:card]");
        assert_eq!(redact("4111 1111 1111 1111"), "[REDACTED:card]");
        assert_eq!(redact("5500-0000-0000-0004 ok"), "[REDACTED:card] ok");
        assert_eq!(redact("amex 378282246310005."), "amex [REDACTED:card].");
        // The expiry after the number stays; the card is still found.
        assert_eq!(redact("4111 1111 1111 1111 12/27"), "[REDACTED:card] 12/27");
        assert_eq!(
            redact("4111111111111111 4012888888881881"),
            "[REDACTED:card] [REDACTED:card]"
        );
        // Luhn failures, wrong lengths, and numbers glued to other text stay.
        for keep in [
            "4111111111111112",
            "4111 1111 1111 1112",
            "411111111111",
            "41111111111111111111",
            "order4111111111111111",
            "4111111111111111x",
            "3.4111111111111111",
            "4111111111111111.5",
            "4111  1111 1111 1111",
        ] {
            assert_eq!(redact(keep), keep, "{keep}");
        }
    }

    #[test]
    fn redaction_keeps_multibyte_text_around_matches() {
        assert_eq!(
            redact("カード番号4111111111111111です、メールはjane@example.comまで😀sk-er-0123456789abcdefghij😀"),
            "カード番号[REDACTED:card]です、メールは[REDACTED:email]まで😀[REDACTED:relay_key]😀"
        );
        // Addresses are ASCII-only: letters of other scripts are never taken into one, so
        // unspaced text around an address is not swallowed (and IDN addresses are not caught).
        assert_eq!(redact("josé@exämple.com"), "josé@exämple.com");
        assert_eq!(redact("ñ a@b.cc ñ"), "ñ [REDACTED:email] ñ");
        assert_eq!(
            redact("{\"пароль\":\"x\",\"password\":\"пароль\"}"),
            "{\"пароль\":\"x\",\"password\":\"[REDACTED:password]\"}"
        );
        // Every cut of a mixed string: no panic, and text without secrets comes back whole.
        let s = "é\"\\@ 4-1 sk-Bé€\"password\":\"😀\u{0}A𝄞";
        for (i, _) in s.char_indices() {
            let head = s.get(..i).unwrap();
            let tail = s.get(i..).unwrap();
            let _ = redact(head);
            let _ = redact(tail);
        }
        assert_eq!(redact(""), "");
    }

    #[test]
    fn redaction_stays_linear_on_hostile_input() {
        let hostile = [
            "sk-".repeat(200_000),
            "@a".repeat(200_000),
            "a@".repeat(200_000),
            "1 ".repeat(200_000),
            "4111111111111111 ".repeat(40_000),
            "\"password\":\"\\".repeat(50_000),
            "\\\"secret\\\":\\\"".repeat(50_000),
            "\"api_key\":\"0123456789abcdef".repeat(30_000),
            "Bearer ".repeat(100_000),
            "a.".repeat(200_000) + "@",
        ];
        let started = std::time::Instant::now();
        for text in &hostile {
            let out = redact(text);
            assert!(!out.is_empty());
        }
        // Quadratic behaviour on any of these would take minutes, not seconds.
        assert!(started.elapsed().as_secs() < 20);
    }
}
