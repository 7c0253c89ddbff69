//! Anthropic-format streams: `StreamDecoder` on arbitrary bytes cut into two chunks, then
//! `StreamEncoder` fed the decoded events (what an Anthropic client of an Anthropic-shaped
//! upstream would see after translation).
//!
//! Checks: no panic and no error; the cut changes nothing; the decoder's event count is bounded
//! by the input; the encoder writes a well-formed Anthropic stream (see
//! `check_anthropic_client_stream`) that always ends with `message_stop` or `error`.
#![no_main]

mod common;

use common::{assert_output_bounded, check_anthropic_client_stream, max_neutral_events, Input};
use edgerelay::formats::anthropic::StreamDecoder;
use edgerelay::formats::anthropic_inbound::StreamEncoder;
use edgerelay::formats::neutral::StreamEvent;
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
    let mut d = StreamDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        d.push(chunk, &mut events).expect("push");
    }
    d.finish(&mut events).expect("finish");
    (events, d.saw_stop())
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let (a, b) = input.halves();
    let (events, saw_stop) = decode(&[input.body]);
    assert_eq!(
        (events.clone(), saw_stop),
        decode(&[a, b]),
        "cut at {}",
        input.cut
    );
    assert!(events.len() <= max_neutral_events(input.body.len()));

    let mut encoder = StreamEncoder::new("msg_fuzz", "claude-fuzz");
    let mut out = Vec::new();
    for e in &events {
        encoder.push(e, &mut out);
    }
    encoder.finish(&mut out);
    assert_output_bounded(out.len(), input.body.len());
    assert!(
        check_anthropic_client_stream(&out),
        "the encoder's stream does not end with message_stop or error"
    );
});
