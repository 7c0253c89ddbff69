//! `SseParser` on arbitrary bytes cut into two chunks, with the default line limit and with
//! small ones (so `LineTooLong` is reached).
//!
//! Checks: no panic; the cut changes nothing (same events, same error); an error leaves the
//! parser reusable; no event is longer than the limit; the event count is bounded by the input;
//! and the parsed events survive `encode_event` → parse unchanged.
#![no_main]

mod common;

use common::{max_sse_events, parse_sse, Input};
use edgerelay::formats::sse::{encode_event, SseError, SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

/// Feeds `chunks` then finishes, stopping at the first error (a broken stream is abandoned).
fn run(limit: Option<usize>, chunks: &[&[u8]]) -> (Vec<SseEvent>, Option<SseError>) {
    let mut parser = match limit {
        Some(limit) => SseParser::with_max_line_bytes(limit),
        None => SseParser::new(),
    };
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(e) = parser.push(chunk, &mut events) {
            return (events, Some(e));
        }
    }
    let error = parser.finish(&mut events).err();
    (events, error)
}

fn check(limit: Option<usize>, input: &Input) {
    let (a, b) = input.halves();
    let whole = run(limit, &[input.body]);
    let split = run(limit, &[a, b]);
    assert_eq!(whole, split, "cut at {} changes the result", input.cut);

    let (events, error) = whole;
    assert!(events.len() <= max_sse_events(input.body.len()));
    match limit {
        // No line of a fuzz input (at most a few MB) reaches the 16 MB default.
        None => assert_eq!(error, None),
        Some(limit) => {
            for e in &events {
                assert!(e.data.len() <= limit, "data of {} bytes", e.data.len());
            }
            if let Some(err) = &error {
                assert_eq!(*err, SseError::LineTooLong { limit });
            }
        }
    }

    // After an error the parser starts afresh: the same bytes again give the same result.
    let mut parser = match limit {
        Some(limit) => SseParser::with_max_line_bytes(limit),
        None => SseParser::new(),
    };
    let mut first = Vec::new();
    let first_error = parser.push(input.body, &mut first).err();
    if first_error.is_some() {
        let mut again = Vec::new();
        let again_error = parser.push(input.body, &mut again).err();
        assert_eq!((first, first_error), (again, again_error));
    }

    // What the parser read, written back out, reads the same (ids are not re-encoded).
    let mut wire = Vec::new();
    for e in &events {
        encode_event(e.event.as_deref(), &e.data, &mut wire);
    }
    let reread = parse_sse(&wire);
    let expected: Vec<SseEvent> = events
        .iter()
        .map(|e| SseEvent {
            id: None,
            ..e.clone()
        })
        .collect();
    assert_eq!(reread, expected, "encode → parse is not the identity");
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    for limit in [None, Some(0), Some(7), Some(64)] {
        check(limit, &input);
    }
});
