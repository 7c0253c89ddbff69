//! Percent-encoding (RFC 3986) of path segments and query values, and query-string parsing.

/// Decode `%XX` escapes; malformed escapes are kept literally rather than rejected, because an
/// id containing a stray `%` is simply an id that will not be found.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encode everything but RFC 3986's unreserved characters, for a path segment or query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Split a query string into decoded `(name, value)` pairs (`+` is a space, as forms send it).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["gpt-4o", "a b/c:d?e", "é"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_encode("anthropic.claude:0"), "anthropic.claude%3A0");
    }

    #[test]
    fn query_pairs_decode() {
        assert_eq!(
            query_pairs("tenant_id=t%201&limit=5&flag&x=a+b"),
            vec![
                ("tenant_id".into(), "t 1".into()),
                ("limit".into(), "5".into()),
                ("flag".into(), "".into()),
                ("x".into(), "a b".into())
            ]
        );
    }
}
