//! `EventStreamDecoder` (AWS's binary `application/vnd.amazon.eventstream` framing) on
//! arbitrary bytes cut into two chunks.
//!
//! Checks: no panic; the cut changes nothing (same frames, same error); after an error every
//! later call repeats it; frames take at least 16 bytes each and never hold more payload than
//! the input; and the frames read, encoded again with `encode_frame`, give back exactly the
//! bytes they were read from (all of the input when there was no error).
#![no_main]

mod common;

use common::Input;
use edgerelay::formats::eventstream::{
    encode_frame, EventStreamDecoder, EventStreamError, Frame, HeaderValue,
};
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> (Vec<Frame>, Option<EventStreamError>) {
    let mut d = EventStreamDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        if let Err(e) = d.push(chunk, &mut frames) {
            let mut none = Vec::new();
            assert_eq!(
                d.push(b"\0", &mut none),
                Err(e.clone()),
                "the error did not stick"
            );
            assert!(none.is_empty());
            assert_eq!(d.finish(), Err(e.clone()), "the error did not stick");
            return (frames, Some(e));
        }
    }
    let error = d.finish().err();
    (frames, error)
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let (a, b) = input.halves();
    let (frames, error) = run(&[input.body]);
    assert_eq!(
        (frames.clone(), error.clone()),
        run(&[a, b]),
        "cut at {}",
        input.cut
    );

    assert!(frames.len() <= input.body.len() / 16);
    let payload: usize = frames.iter().map(|f| f.payload.len()).sum();
    assert!(payload <= input.body.len());

    let mut again = Vec::new();
    for f in &frames {
        let headers: Vec<(&str, HeaderValue)> = f
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        again.extend_from_slice(&encode_frame(&headers, &f.payload));
    }
    if error.is_none() {
        assert_eq!(again, input.body, "re-encoded frames differ from the input");
    } else {
        assert!(
            input.body.starts_with(&again),
            "re-encoded frames differ from the input"
        );
    }
});
