//! The pure core compiled to wasm32 and run under wasm-bindgen-test (node): the Worker runs
//! this exact code, where `usize` is 32 bits and there is no clock or OS randomness, so the
//! properties that matter most are checked there too, not only on the 64-bit host.
#![cfg(target_arch = "wasm32")]

use edgerelay::formats::openai::{parse_request, Endpoint, StreamPassThrough};
use edgerelay::formats::sse::{SseEvent, SseParser};
use edgerelay::governance::auth;
use edgerelay::providers::mock;
use edgerelay::support::crypto;
use wasm_bindgen_test::wasm_bindgen_test;

const STREAM: &[u8] = include_bytes!("fixtures/openai/stream_text_usage.sse");

#[wasm_bindgen_test]
fn sha256_matches_the_host_and_node() {
    assert_eq!(
        crypto::hex(&crypto::sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // The dev seed computes key hashes with node's crypto; the Worker must agree.
    let demo = auth::hash_key("sk-er-demo-0123456789abcdefghijklmnopqrstuv");
    assert_eq!(demo.len(), 64);
    assert_eq!(
        demo,
        crypto::hex(&crypto::sha256(
            b"sk-er-demo-0123456789abcdefghijklmnopqrstuv"
        ))
    );
}

#[wasm_bindgen_test]
fn sse_parsing_is_independent_of_chunking() {
    let parse = |pieces: &[&[u8]]| -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        out
    };
    let whole = parse(&[STREAM]);
    assert!(whole.len() > 5);
    for cut in 0..=STREAM.len() {
        assert_eq!(
            parse(&[&STREAM[..cut], &STREAM[cut..]]),
            whole,
            "cut at {cut}"
        );
    }
}

#[wasm_bindgen_test]
fn stream_pass_through_counts_usage() {
    let mut p = StreamPassThrough::new(true);
    let mut out = Vec::new();
    for byte in STREAM.chunks(7) {
        p.push(byte, &mut out).unwrap();
    }
    p.finish(&mut out).unwrap();
    assert!(p.saw_done());
    assert!(p.usage().is_some_and(|u| u.total_tokens() > 0));
}

#[wasm_bindgen_test]
fn mock_replies_on_wasm32() {
    let req = parse_request(
        Endpoint::ChatCompletions,
        br#"{"model":"demo","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    )
    .unwrap();
    let chunks = mock::stream_chunks(&req, "mock-1", "id", 0);
    assert!(chunks.len() > 4);
    let key = auth::generate_key(&[7u8; 32]);
    assert!(key.starts_with(auth::KEY_PREFIX));
}
