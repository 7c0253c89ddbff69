//! AWS Signature Version 4 (header form) for requests the relay sends to AWS services other than
//! S3 — in practice Bedrock Runtime, whose signing name is `bedrock`. It owns HMAC-SHA256 (on
//! the crate's own SHA-256), channel credentials, the canonical request, the signing key chain,
//! and the `x-amz-date` stamp computed from a time the caller passes in.
//!
//! The procedure is AWS's "Create a signed AWS API request"
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>), checked
//! against AWS's own test suite (the vectors in `aws-c-auth`'s `aws-signing-test-suite/v4`).
//! Two rules of it decide whether Bedrock accepts a signature at all:
//! - The canonical URI is the request path *as sent*, normalized (no `.`/`..`/empty segments)
//!   and then URI-encoded once more. A model id such as `anthropic.claude-3-haiku-20240307-v1:0`
//!   travels as `…-v1%3A0` and is signed as `…-v1%253A0`; signing `%3A` is the classic
//!   "signature does not match" bug. S3 is the one service signed without this second encoding,
//!   which is why this module is not for S3.
//! - Every header listed in `SignedHeaders` must reach AWS byte-identical, so callers pass only
//!   headers the runtime will not rewrite.

use crate::support::calendar::civil_from_days;
use crate::support::crypto::{hex, hmac_sha256, sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Headers that proxies and HTTP stacks add, drop or rewrite on the way; signing them would
/// make the signature depend on the path the request takes.
const UNSIGNABLE: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "user-agent",
    "x-amzn-trace-id",
];

/// Headers [`sign`] sets itself; a caller's copy is ignored rather than signed twice.
const OWN_HEADERS: &[&str] = &["x-amz-date", "x-amz-content-sha256", "x-amz-security-token"];

/// An AWS access key, as a channel stores it. `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Present for temporary (STS) credentials, which AWS only accepts with their token.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Parses a channel key "ACCESS_KEY_ID:SECRET_ACCESS_KEY" or
/// "ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN". Neither a key id nor a secret contains ':'
/// (they are base-32 and base-64 text), so the first two colons separate; the token is taken
/// whole. Any empty part makes the key unusable, so it is refused rather than half-used.
pub fn parse_credentials(s: &str) -> Option<Credentials> {
    let mut parts = s.trim().splitn(3, ':');
    let access_key_id = parts.next()?.trim();
    let secret_access_key = parts.next()?.trim();
    let session_token = match parts.next() {
        None => None,
        Some(token) if token.trim().is_empty() => return None,
        Some(token) => Some(token.trim().to_string()),
    };
    if access_key_id.is_empty() || secret_access_key.is_empty() {
        return None;
    }
    Some(Credentials {
        access_key_id: access_key_id.to_string(),
        secret_access_key: secret_access_key.to_string(),
        session_token,
    })
}

/// One request to sign. `url` is exactly what will be fetched (already percent-encoded);
/// `headers` are the ones to sign besides `host` and the `x-amz-*` ones [`sign`] adds.
pub struct SignInput<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
    /// "20150830T123600Z", supplied by the caller (see [`amz_date`]).
    pub amz_date: &'a str,
}

/// Headers to add to the request: authorization, x-amz-date, x-amz-content-sha256, and
/// x-amz-security-token when there is a session token. `host` is signed from the URL (or from
/// a `host` entry in the input) but not returned: the runtime sets it.
pub fn sign(input: &SignInput, creds: &Credentials) -> Vec<(String, String)> {
    sign_parts(input, creds, true).headers
}

/// The intermediate strings too, so tests can compare them with AWS's published ones (only
/// tests read them).
#[cfg_attr(not(test), expect(dead_code))]
struct Signed {
    canonical_request: String,
    string_to_sign: String,
    headers: Vec<(String, String)>,
}

/// `sign_payload_header` adds a signed `x-amz-content-sha256`. Bedrock does not need it, but
/// it is the payload hash AWS signed anyway and lets AWS's own logs show what was hashed; the
/// option exists because most of AWS's test vectors were made without it.
fn sign_parts(input: &SignInput, creds: &Credentials, sign_payload_header: bool) -> Signed {
    let payload_hash = hex(&sha256(input.body));
    let mut added = vec![("x-amz-date".to_string(), input.amz_date.to_string())];
    if sign_payload_header {
        added.push(("x-amz-content-sha256".to_string(), payload_hash.clone()));
    }
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }

    let (host, path, query) = split_url(input.url);
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut has_host = false;
    for (name, value) in input.headers {
        let name = name.trim().to_ascii_lowercase();
        if UNSIGNABLE.contains(&name.as_str()) || OWN_HEADERS.contains(&name.as_str()) {
            continue;
        }
        has_host |= name == "host";
        headers.push((name, canonical_header_value(value)));
    }
    if !has_host {
        headers.push(("host".to_string(), host));
    }
    headers.extend(added.iter().cloned());
    // Stable, so repeated headers keep their order when their values are joined.
    headers.sort_by(|a, b| a.0.cmp(&b.0));

    let mut canonical_headers = String::new();
    let mut signed_headers = String::new();
    let mut previous: Option<&str> = None;
    for (name, value) in &headers {
        if previous == Some(name.as_str()) {
            canonical_headers.pop();
            canonical_headers.push(',');
        } else {
            if previous.is_some() {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
            canonical_headers.push_str(name);
            canonical_headers.push(':');
        }
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
        previous = Some(name);
    }

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query(query),
        canonical_headers,
        signed_headers,
        payload_hash,
    );

    let date = input.amz_date.get(..8).unwrap_or(input.amz_date);
    let scope = format!("{date}/{}/{}/aws4_request", input.region, input.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        input.amz_date,
        hex(&sha256(canonical_request.as_bytes()))
    );

    let mut key = hmac_sha256(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [input.region, input.service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));

    let mut out = added;
    out.push((
        "authorization".to_string(),
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    Signed {
        canonical_request,
        string_to_sign,
        headers: out,
    }
}

/// `https://host:443/p?q#f` → (`host`, `/p`, `q`). The port stays unless it is the scheme's
/// default, because that is what the runtime will put in the Host header.
fn split_url(url: &str) -> (String, &str, &str) {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), url),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = match (scheme.as_str(), host.rsplit_once(':')) {
        ("https", Some((name, "443"))) | ("http", Some((name, "80"))) => name,
        _ => host,
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    (host.to_ascii_lowercase(), path, query)
}

/// Trimmed, with each run of whitespace (line folds included) as one space.
fn canonical_header_value(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 3986 dot-segment removal and empty-segment collapsing, then each segment encoded (a
/// `%` of the wire form becomes `%25`: the second encoding non-S3 services expect).
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode(segment.as_bytes(), &mut out);
    }
    if !segments.is_empty() && path.ends_with('/') {
        out.push('/');
    }
    out
}

/// Names and values decoded from the wire and encoded again the one canonical way, sorted by
/// name then value. `+` is a literal plus here, not a space: AWS reads queries that way.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut encoded_name = String::new();
            uri_encode(&percent_decode(name), &mut encoded_name);
            let mut encoded_value = String::new();
            uri_encode(&percent_decode(value), &mut encoded_value);
            (encoded_name, encoded_value)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Everything but RFC 3986's unreserved characters as `%XX`, upper-case hex.
fn uri_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// `%XX` → byte; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    fn hex_value(byte: u8) -> Option<u8> {
        char::from(byte)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&hi), Some(&lo)) if byte == b'%' => {
                hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h * 16 + l)
            }
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// "20150830T123600Z" from Unix milliseconds (pure calendar math, no clock). Times before 1970
/// are floored, so the last millisecond of 1969 is still 1969.
pub fn amz_date(unix_ms: i64) -> String {
    let seconds = unix_ms.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_with_and_without_token() {
        assert_eq!(
            parse_credentials("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            Some(Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            })
        );
        let with_token = parse_credentials(" AKID : secret/+= : tok:en/== \n").expect("parses");
        assert_eq!(with_token.access_key_id, "AKID");
        assert_eq!(with_token.secret_access_key, "secret/+=");
        assert_eq!(with_token.session_token.as_deref(), Some("tok:en/=="));
        for bad in ["", "AKID", "AKID:", ":secret", "AKID:secret:", "AKID: :tok"] {
            assert_eq!(parse_credentials(bad), None, "{bad:?}");
        }
        let shown = format!("{with_token:?}");
        assert!(shown.contains("AKID") && !shown.contains("secret/") && !shown.contains("tok:en"));
    }

    #[test]
    fn amz_dates_follow_the_calendar() {
        let cases = [
            (1_440_938_160_000, "20150830T123600Z"),
            (0, "19700101T000000Z"),
            (-1, "19691231T235959Z"),
            (951_782_400_000, "20000229T000000Z"),
            (951_868_799_999, "20000229T235959Z"),
            (1_709_251_199_000, "20240229T235959Z"),
            (1_709_251_200_000, "20240301T000000Z"),
            (4_107_456_000_000, "21000228T000000Z"),
            (4_107_542_400_000, "21000301T000000Z"),
            (-2_203_891_200_000, "19000301T000000Z"),
            (253_402_300_799_999, "99991231T235959Z"),
        ];
        for (ms, expected) in cases {
            assert_eq!(amz_date(ms), expected, "{ms}");
        }
        // No input panics, however far from now.
        amz_date(i64::MIN);
        amz_date(i64::MAX);
    }

    fn suite_credentials(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
        }
    }

    fn suite_sign(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        token: Option<&str>,
        payload_header: bool,
    ) -> Signed {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let input = SignInput {
            method,
            url,
            headers: &headers,
            body,
            region: "us-east-1",
            service: "service",
            amz_date: "20150830T123600Z",
        };
        sign_parts(&input, &suite_credentials(token), payload_header)
    }

    fn authorization(signed: &Signed) -> &str {
        signed
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_str())
            .expect("authorization")
    }

    fn expected_authorization(signed_headers: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
SignedHeaders={signed_headers}, Signature={signature}"
        )
    }

    const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// AWS's SigV4 test suite (aws-c-auth `tests/aws-signing-test-suite/v4`, header-signed
    /// variants with path normalization): URL, extra headers, SignedHeaders, signature.
    #[test]
    fn matches_the_aws_test_suite() {
        let host = "https://example.amazonaws.com";
        /// Method, path and query, extra headers, SignedHeaders, signature.
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                "GET",
                "/",
                &[],
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                "/",
                &[],
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "GET",
                "/?Param2=value2&Param1=value1",
                &[],
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "GET",
                "/?Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
                &[],
                "host;x-amz-date",
                "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
            ),
            (
                "GET",
                "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                &[],
                "host;x-amz-date",
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
            ),
            (
                "GET",
                "/?\u{1234}=bar",
                &[],
                "host;x-amz-date",
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            ),
            (
                "POST",
                "/?Param1=value1",
                &[],
                "host;x-amz-date",
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
            ),
            (
                "GET",
                "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                &[],
                "host;x-amz-date",
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
            ),
            (
                "GET",
                "/\u{1234}",
                &[],
                "host;x-amz-date",
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
            ),
            (
                "GET",
                "/example space/",
                &[],
                "host;x-amz-date",
                "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
            ),
            (
                "GET",
                "/example/..",
                &[],
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "/example1/example2/../..",
                &[],
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "/./",
                &[],
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "//",
                &[],
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "/./example",
                &[],
                "host;x-amz-date",
                "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
            ),
            (
                "GET",
                "//example//",
                &[],
                "host;x-amz-date",
                "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
            ),
            (
                "GET",
                "/",
                &[("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")],
                "host;my-header1;x-amz-date",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ),
            (
                "GET",
                "/",
                &[("My-Header1", "value1\n  value2\n     value3")],
                "host;my-header1;x-amz-date",
                "cfd34249e4b1c8d6b91ef74165d41a32e5fab3306300901bb65a51a73575eefd",
            ),
            (
                "GET",
                "/",
                &[
                    ("My-Header1", "value4"),
                    ("My-Header1", "value1"),
                    ("My-Header1", "value3"),
                    ("My-Header1", "value2"),
                ],
                "host;my-header1;x-amz-date",
                "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
            ),
            (
                "GET",
                "/",
                &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
            (
                "POST",
                "/",
                &[("My-Header1", "value1")],
                "host;my-header1;x-amz-date",
                "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
            ),
            (
                "POST",
                "/",
                &[("My-Header1", "VALUE1")],
                "host;my-header1;x-amz-date",
                "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
            ),
        ];
        for (method, path, headers, signed_headers, signature) in cases {
            let url = format!("{host}{path}");
            let signed = suite_sign(method, &url, headers, b"", None, false);
            assert_eq!(
                authorization(&signed),
                expected_authorization(signed_headers, signature),
                "{method} {path}\n{}",
                signed.canonical_request
            );
        }
    }

    #[test]
    fn matches_the_suite_intermediate_strings() {
        let signed = suite_sign(
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            &[],
            b"",
            None,
            false,
        );
        assert_eq!(
            signed.canonical_request,
            format!(
                "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\n\
x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_HASH}"
            )
        );
        assert_eq!(
            signed.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"
        );
        let space = suite_sign(
            "GET",
            "https://example.amazonaws.com/example space/",
            &[],
            b"",
            None,
            false,
        );
        assert_eq!(
            space.string_to_sign.rsplit('\n').next(),
            Some("63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86")
        );
    }

    /// The suite's form-encoded POSTs, both as first published (content-type signed, no
    /// payload header) and in aws-c-auth's `sign_body` form, which is exactly what [`sign`]
    /// produces: a signed `x-amz-content-sha256`.
    #[test]
    fn signs_a_body_like_the_suite() {
        let body = b"Param1=value1";
        let url = "https://example.amazonaws.com/";
        let plain = suite_sign(
            "POST",
            url,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body,
            None,
            false,
        );
        assert_eq!(
            authorization(&plain),
            expected_authorization(
                "content-type;host;x-amz-date",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            )
        );

        let body_hash = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";
        for (content_type, signature) in [
            (
                "application/x-www-form-urlencoded",
                "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
            ),
            (
                "application/x-www-form-urlencoded; charset=utf-8",
                "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422",
            ),
        ] {
            let headers = vec![
                ("Content-Type".to_string(), content_type.to_string()),
                ("Content-Length".to_string(), "13".to_string()),
            ];
            let input = SignInput {
                method: "POST",
                url,
                headers: &headers,
                body,
                region: "us-east-1",
                service: "service",
                amz_date: "20150830T123600Z",
            };
            let signed = sign(&input, &suite_credentials(None));
            assert_eq!(
                signed,
                vec![
                    ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
                    ("x-amz-content-sha256".to_string(), body_hash.to_string()),
                    (
                        "authorization".to_string(),
                        expected_authorization(
                            "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
                            signature
                        )
                    ),
                ]
            );
        }
    }

    #[test]
    fn session_tokens_are_signed_and_sent() {
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let signed = suite_sign(
            "POST",
            "https://example.amazonaws.com/",
            &[],
            b"",
            Some(token),
            false,
        );
        assert_eq!(
            authorization(&signed),
            expected_authorization(
                "host;x-amz-date;x-amz-security-token",
                "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
            )
        );
        assert!(signed
            .headers
            .contains(&("x-amz-security-token".to_string(), token.to_string())));

        let short = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let signed = suite_sign(
            "GET",
            "https://example.amazonaws.com/",
            &[],
            b"",
            Some(short),
            false,
        );
        assert_eq!(
            authorization(&signed),
            expected_authorization(
                "host;x-amz-date;x-amz-security-token",
                "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
            )
        );
    }

    /// A model id's ':' travels as %3A and is signed as %253A. The expected canonical request
    /// is the one AWS itself printed in a SignatureDoesNotMatch reply for this path
    /// (BerriAI/litellm#14763); only the body hash is ours.
    #[test]
    fn bedrock_paths_are_encoded_twice() {
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        let body = br#"{"messages":[]}"#;
        let input = SignInput {
            method: "POST",
            url: "https://bedrock-runtime.us-east-2.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream",
            headers: &headers,
            body,
            region: "us-east-2",
            service: "bedrock",
            amz_date: "20250921T101604Z",
        };
        let signed = sign_parts(&input, &suite_credentials(None), false);
        assert_eq!(
            signed.canonical_request,
            format!(
                "POST\n/model/us.anthropic.claude-sonnet-4-20250514-v1%253A0/converse-stream\n\n\
content-type:application/json\nhost:bedrock-runtime.us-east-2.amazonaws.com\n\
x-amz-date:20250921T101604Z\n\ncontent-type;host;x-amz-date\n{}",
                hex(&sha256(body))
            )
        );
        assert!(signed
            .string_to_sign
            .contains("\n20250921/us-east-2/bedrock/aws4_request\n"));

        // An inference-profile ARN: its '/' travels as %2F and is signed as %252F.
        assert_eq!(
            canonical_uri("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.x/converse"),
            "/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A123%253Ainference-profile%252Fus.x/converse"
        );
    }

    #[test]
    fn host_comes_from_the_url_unless_given() {
        assert_eq!(
            split_url("https://user@Example.com:443/a/b?x=1#frag"),
            ("example.com".to_string(), "/a/b", "x=1")
        );
        assert_eq!(
            split_url("http://localhost:8787?x"),
            ("localhost:8787".to_string(), "", "x")
        );
        assert_eq!(split_url("/relative"), (String::new(), "/relative", ""));
        assert_eq!(canonical_uri(""), "/");

        let given = suite_sign(
            "GET",
            "https://ignored.example/",
            &[("Host", "example.amazonaws.com")],
            b"",
            None,
            false,
        );
        assert_eq!(
            authorization(&given),
            expected_authorization(
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    #[test]
    fn own_and_unsignable_headers_from_the_caller_are_not_signed() {
        let signed = suite_sign(
            "GET",
            "https://example.amazonaws.com/",
            &[
                ("User-Agent", "edgerelay"),
                ("X-Amz-Date", "19990101T000000Z"),
                ("Authorization", "Bearer x"),
                ("X-Amzn-Trace-Id", "Root=1"),
            ],
            b"",
            None,
            false,
        );
        assert_eq!(
            authorization(&signed),
            expected_authorization(
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    #[test]
    fn queries_are_decoded_then_encoded_once() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0&&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("x=%2f+%zz%"), "x=%2F%2B%25zz%25");
        assert_eq!(
            percent_decode("%E1%88%B4%4"),
            vec![0xe1, 0x88, 0xb4, b'%', b'4']
        );
    }
}
