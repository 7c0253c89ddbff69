//! Gemini streams (`streamGenerateContent?alt=sse`): `StreamDecoder` on arbitrary bytes cut
//! into two chunks.
//!
//! Checks: no panic and no error; the cut changes nothing; the event count is bounded by the
//! input; one `Start` at most and nothing before it but an error; one `Finish` at most; tool
//! calls numbered 0, 1, 2… in the order they start, each delta after its start.
#![no_main]

mod common;

use common::{max_neutral_events, Input};
use edgerelay::formats::gemini::StreamDecoder;
use edgerelay::formats::neutral::StreamEvent;
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut d = StreamDecoder::new("gemini-fuzz", "chatcmpl-fuzz");
    let mut events = Vec::new();
    for chunk in chunks {
        d.push(chunk, &mut events).expect("push");
    }
    d.finish(&mut events).expect("finish");
    events
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let (a, b) = input.halves();
    let events = decode(&[input.body]);
    assert_eq!(events, decode(&[a, b]), "cut at {}", input.cut);
    assert!(events.len() <= max_neutral_events(input.body.len()));

    let mut started = false;
    let mut finishes = 0;
    let mut tools = 0usize;
    for e in &events {
        match e {
            StreamEvent::Start { id, model } => {
                assert!(!started, "second Start");
                assert_eq!(
                    (id.as_str(), model.as_str()),
                    ("chatcmpl-fuzz", "gemini-fuzz")
                );
                started = true;
            }
            StreamEvent::Error { status, .. } => {
                assert!((400..=599).contains(status), "status {status}")
            }
            other => {
                assert!(started, "{other:?} before Start");
                match other {
                    StreamEvent::Finish { .. } => finishes += 1,
                    StreamEvent::ToolCallStart { index, .. } => {
                        assert_eq!(*index, tools, "tool calls out of order");
                        tools += 1;
                    }
                    StreamEvent::ToolCallDelta { index, .. } => {
                        assert!(*index < tools, "delta before its tool call starts")
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(finishes <= 1, "{finishes} Finish events");
});
