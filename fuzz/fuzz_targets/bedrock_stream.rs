//! Bedrock `ConverseStream` streams, built from the input so the fuzzer works on their JSON
//! rather than on CRCs (the `eventstream` target covers the framing): the body is a list of
//! records separated by 0x1E; each record's first byte picks the frame kind ('0'–'9', see
//! `KINDS`) and the rest is its payload. The frames, cut in two at a position the first byte
//! of the input chooses, go through `bedrock::StreamDecoder` and through `StreamPipe` to both
//! client formats.
//!
//! Checks: no panic and no framing error; the cut changes nothing; the decoder's event count
//! is bounded by the input; and `common::check_relay`'s checks on what each client gets.
#![no_main]

mod common;

use common::{check_relay, max_neutral_events, Input};
use edgerelay::formats::bedrock::StreamDecoder;
use edgerelay::formats::eventstream::{encode_frame, HeaderValue};
use edgerelay::formats::neutral::StreamEvent;
use edgerelay::formats::client::ClientFormat;
use edgerelay::formats::translate::{Mode, WireFormat};
use libfuzzer_sys::fuzz_target;

/// `(:message-type, the header naming the kind, its value)` for each record kind.
const KINDS: [(&str, &str, &str); 10] = [
    ("event", ":event-type", "messageStart"),
    ("event", ":event-type", "contentBlockStart"),
    ("event", ":event-type", "contentBlockDelta"),
    ("event", ":event-type", "contentBlockStop"),
    ("event", ":event-type", "messageStop"),
    ("event", ":event-type", "metadata"),
    ("exception", ":exception-type", "throttlingException"),
    ("exception", ":exception-type", "modelStreamErrorException"),
    ("error", ":error-code", "InternalFailure"),
    ("event", ":event-type", "somethingNew"),
];

fn frames(records: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    for record in records.split(|&b| b == 0x1e) {
        let Some((&kind, payload)) = record.split_first() else {
            continue;
        };
        let (message_type, name, value) = KINDS[usize::from(kind.wrapping_sub(b'0')) % 10];
        let headers = [
            (name, HeaderValue::String(value.into())),
            (
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            (":message-type", HeaderValue::String(message_type.into())),
        ];
        wire.extend_from_slice(&encode_frame(&headers, payload));
    }
    wire
}

fn decode(chunks: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
    let mut d = StreamDecoder::new("bedrock-fuzz", "id-fuzz");
    let mut events = Vec::new();
    for chunk in chunks {
        d.push(chunk, &mut events).expect("push");
    }
    d.finish(&mut events).expect("finish");
    (events, d.saw_stop())
}

fuzz_target!(|data: &[u8]| {
    let Some(records) = Input::new(data) else {
        return;
    };
    let wire = frames(records.body);
    // The same cut, now through the framed stream.
    let cut = usize::from(records.first) * wire.len() / 255;
    let input = Input {
        first: records.first,
        body: &wire,
        cut,
    };
    let (a, b) = input.halves();
    let (events, saw_stop) = decode(&[&wire]);
    assert_eq!((events.clone(), saw_stop), decode(&[a, b]), "cut at {cut}");
    assert!(events.len() <= max_neutral_events(records.body.len()));

    for client in [ClientFormat::OpenAi, ClientFormat::Anthropic] {
        let mode = Mode::Translate {
            upstream: WireFormat::Bedrock,
            client,
        };
        check_relay(mode, &input);
    }
});
