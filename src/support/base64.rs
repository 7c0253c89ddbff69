//! Base64 (RFC 4648), standard and URL-safe alphabets: JWTs for Google service accounts,
//! PEM keys, and inline images. Small enough to own rather than add a crate for.

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_with(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

pub fn encode(data: &[u8]) -> String {
    encode_with(data, STANDARD, true)
}

/// URL-safe without padding, as JWTs use it.
pub fn encode_url(data: &[u8]) -> String {
    encode_with(data, URL_SAFE, false)
}

/// Decodes either alphabet, with or without padding, ignoring whitespace (PEM bodies wrap).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = false;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                padding = true;
                continue;
            }
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        if padding {
            // Data after padding.
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be the zero padding of the last symbol.
    if bits >= 6 || acc != 0 {
        return None;
    }
    Some(out)
}

/// Strict base64url as JWS uses it (RFC 7515 §2): only the URL-safe alphabet, no padding, no
/// whitespace, and zero trailing bits, so each byte string has exactly one spelling. Tokens
/// are compared and cached by their text, which a lenient decoder would make ambiguous.
pub fn decode_url_strict(text: &str) -> Option<Vec<u8>> {
    let alphabet_only = text
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !alphabet_only || text.len() % 4 == 1 {
        return None;
    }
    // The alphabet is checked; `decode` still refuses non-zero padding bits.
    decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).as_deref(), Some(plain.as_bytes()));
            assert_eq!(
                decode(coded.trim_end_matches('=')).as_deref(),
                Some(plain.as_bytes())
            );
        }
    }

    #[test]
    fn url_safe_and_round_trip() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..data.len() {
            assert_eq!(decode(&encode(&data[..n])).as_deref(), Some(&data[..n]));
            let url = encode_url(&data[..n]);
            assert!(!url.contains(['+', '/', '=']));
            assert_eq!(decode(&url).as_deref(), Some(&data[..n]));
        }
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode("Zm9v!"), None);
        assert_eq!(decode("Zg==Zg"), None);
        assert_eq!(decode("Zh"), None, "non-zero padding bits");
        assert_eq!(decode("Z"), None, "a lone symbol carries no byte");
        assert_eq!(decode("Zm9v\nYmFy").as_deref(), Some(&b"foobar"[..]));
    }

    #[test]
    fn strict_url_decoding_has_one_spelling() {
        assert_eq!(decode_url_strict("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_url_strict("Zm9vYg").as_deref(), Some(&b"foob"[..]));
        assert_eq!(decode_url_strict("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        for bad in [
            "Zm9vYg==", "Zm9v Yg", "Zm9v\nYg", "+/8", "Zh", "Z", "Zm9vY", "é",
        ] {
            assert_eq!(decode_url_strict(bad), None, "{bad:?}");
        }
    }
}
