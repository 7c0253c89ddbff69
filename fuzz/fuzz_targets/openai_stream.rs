//! OpenAI-format upstream streams: `StreamPassThrough` (keeping and stripping usage) and
//! `StreamDecoder`, on arbitrary bytes cut into two chunks.
//!
//! Checks: no panic and no error (no line reaches the default limit); the cut changes nothing;
//! the pass-through writes UTF-8 SSE that reads back as the upstream's events (ids dropped,
//! `[DONE]` normalised) when it keeps usage, and never more events when it strips it; the
//! decoder's event count is bounded by the input.
#![no_main]

mod common;

use common::{assert_output_bounded, max_neutral_events, parse_sse, Input};
use edgerelay::formats::neutral::StreamEvent;
use edgerelay::formats::openai::{StreamDecoder, StreamPassThrough};
use edgerelay::formats::sse::SseEvent;
use edgerelay::formats::neutral::Usage;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Passed {
    out: Vec<u8>,
    usage: Option<Usage>,
    completion_bytes: usize,
    saw_done: bool,
}

fn pass(strip_usage: bool, chunks: &[&[u8]]) -> Passed {
    let mut p = StreamPassThrough::new(strip_usage);
    let mut out = Vec::new();
    for chunk in chunks {
        p.push(chunk, &mut out).expect("push");
    }
    p.finish(&mut out).expect("finish");
    Passed {
        out,
        usage: p.usage(),
        completion_bytes: p.completion_bytes(),
        saw_done: p.saw_done(),
    }
}

fn decode(chunks: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
    let mut d = StreamDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        d.push(chunk, &mut events).expect("push");
    }
    d.finish(&mut events).expect("finish");
    (events, d.saw_done())
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let (a, b) = input.halves();
    let upstream = parse_sse(input.body);

    for strip_usage in [false, true] {
        let whole = pass(strip_usage, &[input.body]);
        assert_eq!(whole, pass(strip_usage, &[a, b]), "cut at {}", input.cut);
        assert_output_bounded(whole.out.len(), input.body.len());
        let text = std::str::from_utf8(&whole.out).expect("pass-through wrote invalid UTF-8");
        let relayed = parse_sse(text.as_bytes());
        if strip_usage {
            assert!(relayed.len() <= upstream.len());
        } else {
            let expected: Vec<SseEvent> = upstream
                .iter()
                .map(|e| {
                    if e.data.trim() == "[DONE]" {
                        SseEvent {
                            data: "[DONE]".into(),
                            ..SseEvent::default()
                        }
                    } else {
                        SseEvent {
                            id: None,
                            ..e.clone()
                        }
                    }
                })
                .collect();
            assert_eq!(relayed, expected, "the pass-through changed an event");
        }
    }

    let (events, saw_done) = decode(&[input.body]);
    assert_eq!(
        (events.clone(), saw_done),
        decode(&[a, b]),
        "cut at {}",
        input.cut
    );
    assert!(events.len() <= max_neutral_events(input.body.len()));
    let starts = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Start { .. }))
        .count();
    assert!(starts <= 1, "{starts} Start events");
});
