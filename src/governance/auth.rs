//! Relay API keys: their format and generation, the SHA-256 hash stored for them, extracting
//! the presented credential from request headers, comparing secrets in constant time, and
//! opaque row ids.
//!
//! Randomness is an input: callers pass the random bytes (the edge reads `getrandom`), so
//! everything here is deterministic and testable on the host.

/// Every relay key starts with this, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "sk-er-";

/// `KEY_PREFIX` plus 4 characters: enough for an admin to tell keys apart, far too little
/// (≈24 bits) to help guess the rest.
pub const VISIBLE_PREFIX_CHARS: usize = 10;

/// 62^43 ≥ 2^256 > 62^42, so 43 base-62 digits hold any 32-byte value and no fewer do.
const KEY_BODY_CHARS: usize = 43;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 (FIPS 180-4). Written here because the crate takes no dependencies beyond serde,
/// and Web Crypto's digest is async and wasm-only, which would push hashing out of the pure core.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    block_len: usize,
    /// Message length in bytes; u64 because usize is 32 bits on wasm32.
    total_len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Sha256 {
            state: H0,
            block: [0; 64],
            block_len: 0,
            total_len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.total_len = self.total_len.wrapping_add(data.len() as u64);
        let mut rest = data;
        if self.block_len > 0 {
            let take = rest.len().min(64 - self.block_len);
            self.block[self.block_len..self.block_len + take].copy_from_slice(&rest[..take]);
            self.block_len += take;
            rest = &rest[take..];
            if self.block_len < 64 {
                return;
            }
            let block = self.block;
            compress(&mut self.state, &block);
            self.block_len = 0;
        }
        let mut blocks = rest.chunks_exact(64);
        for block in &mut blocks {
            compress(&mut self.state, block);
        }
        let tail = blocks.remainder();
        self.block[..tail.len()].copy_from_slice(tail);
        self.block_len = tail.len();
    }

    pub fn finalize(mut self) -> [u8; 32] {
        let bit_len = self.total_len.wrapping_mul(8);
        // Padding: 0x80, zeros up to 56 mod 64, then the 64-bit big-endian bit length.
        let pad_len = if self.block_len < 56 {
            56 - self.block_len
        } else {
            120 - self.block_len
        };
        let mut padding = [0u8; 72];
        padding[0] = 0x80;
        padding[pad_len..pad_len + 8].copy_from_slice(&bit_len.to_be_bytes());
        // `update` would count the padding into the length; the length is already captured.
        let total_len = self.total_len;
        self.update(&padding[..pad_len + 8]);
        self.total_len = total_len;
        debug_assert_eq!(self.block_len, 0);

        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

fn compress(state: &mut [u32; 8], block: &[u8]) {
    let mut w = [0u32; 64];
    for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    for t in 16..64 {
        let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
        let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16]
            .wrapping_add(s0)
            .wrapping_add(w[t - 7])
            .wrapping_add(s1);
    }

    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (k, w) in K.iter().zip(w) {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(*k)
            .wrapping_add(w);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(data);
    hasher.finalize()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// What is stored in D1 for a key: lowercase hex SHA-256 of the plaintext's UTF-8 bytes.
/// A plain unsalted hash is enough because keys carry 256 random bits; salting or stretching
/// defends low-entropy passwords, and would prevent looking a key up by its hash.
pub fn hash_key(plaintext: &str) -> String {
    hex(&sha256(plaintext.as_bytes()))
}

/// Constant-time equality that also hides the secret's length: both inputs are hashed to
/// fixed-size digests, which are then compared with a branch-free fold. Timing depends only on
/// how many 64-byte blocks each input has, never on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let digest_a = sha256(a);
    let digest_b = sha256(b);
    let diff = digest_a
        .iter()
        .zip(digest_b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(data: &[u8]) -> String {
        hex(&sha256(data))
    }

    fn counting_bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    #[test]
    fn sha256_nist_vectors() {
        assert_eq!(
            sha_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            sha_hex(
                b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno\
                  ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
            ),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
        );
    }

    #[test]
    fn sha256_one_million_a_incremental() {
        let mut hasher = Sha256::new();
        let thousand = [b'a'; 1000];
        for _ in 0..1000 {
            hasher.update(&thousand);
        }
        assert_eq!(
            hex(&hasher.finalize()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn sha256_padding_boundaries() {
        // Expected values from Python: hashlib.sha256(bytes(range(n))).hexdigest()
        let cases = [
            (
                55,
                "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59",
            ),
            (
                56,
                "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562",
            ),
            (
                63,
                "29af2686fd53374a36b0846694cc342177e428d1647515f078784d69cdb9e488",
            ),
            (
                64,
                "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108",
            ),
            (
                65,
                "4bfd2c8b6f1eec7a2afeb48b934ee4b2694182027e6d0fc075074f2fabb31781",
            ),
            (
                119,
                "da18797ed7c3a777f0847f429724a2d8cd5138e6ed2895c3fa1a6d39d18f7ec6",
            ),
            (
                120,
                "f52b23db1fbb6ded89ef42a23ce0c8922c45f25c50b568a93bf1c075420bbb7c",
            ),
            (
                128,
                "471fb943aa23c511f6f72f8d1652d9c880cfa392ad80503120547703e56a2be5",
            ),
        ];
        for (len, expected) in cases {
            assert_eq!(sha_hex(&counting_bytes(len)), expected, "length {len}");
        }
    }

    #[test]
    fn sha256_incremental_split_everywhere() {
        let data = counting_bytes(200);
        let one_shot = sha256(&data);
        for split in 0..=data.len() {
            let mut hasher = Sha256::new();
            hasher.update(&data[..split]);
            hasher.update(&data[split..]);
            assert_eq!(hasher.finalize(), one_shot, "split at {split}");
        }
        let mut hasher = Sha256::new();
        for byte in data.chunks(1) {
            hasher.update(byte);
        }
        assert_eq!(hasher.finalize(), one_shot);
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

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn constant_time_eq_truth_table() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret "));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"x", b""));
        let long = [7u8; 1000];
        assert!(constant_time_eq(&long, &long));
        assert!(!constant_time_eq(&long, &long[..999]));
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
}
