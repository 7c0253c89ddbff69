//! Shared by the fuzz targets: how an input becomes two network chunks, and the checks a
//! relayed stream must pass whatever bytes the upstream sent.
//!
//! Each target includes this file as `mod common;` and uses the parts it needs.
#![allow(dead_code)]

use edgerelay::formats::sse::{SseEvent, SseParser};
use edgerelay::formats::client::ClientFormat;
use edgerelay::formats::translate::{Mode, StreamError, StreamPipe, WireFormat};
use edgerelay::formats::neutral::Usage;
use serde_json::Value;

/// Every stream mode: both pass-throughs and a translation for each upstream × client pair.
pub fn all_modes() -> Vec<Mode> {
    let upstreams = [
        WireFormat::OpenAi,
        WireFormat::Anthropic,
        WireFormat::Gemini,
        WireFormat::Cohere,
        WireFormat::Bedrock,
    ];
    // Exhaustive on purpose: a new wire format does not compile here until it is listed above.
    for w in upstreams {
        match w {
            WireFormat::OpenAi
            | WireFormat::Anthropic
            | WireFormat::Gemini
            | WireFormat::Cohere
            | WireFormat::Bedrock => {}
        }
    }
    let clients = [ClientFormat::OpenAi, ClientFormat::Anthropic];
    for c in clients {
        match c {
            ClientFormat::OpenAi | ClientFormat::Anthropic => {}
        }
    }
    let mut modes = vec![Mode::PassOpenAi, Mode::PassAnthropic];
    for upstream in upstreams {
        for client in clients {
            modes.push(Mode::Translate { upstream, client });
        }
    }
    modes
}

/// What a client and the usage row get from one relayed stream.
#[derive(Debug, PartialEq)]
pub struct Relayed {
    pub out: Vec<u8>,
    pub usage: Option<Usage>,
    pub completion_bytes: usize,
    pub completed: bool,
    pub errored: bool,
    /// The upstream's framing broke (only binary framings can fail on fuzz-sized input); the
    /// relay stops reading there, as the edge does.
    pub error: Option<StreamError>,
}

/// Relays `chunks` through a fresh pipe and finishes it, stopping at the first error.
pub fn relay(mode: Mode, include_usage: bool, chunks: &[&[u8]]) -> Relayed {
    let mut pipe = StreamPipe::new(mode, include_usage, "model-fuzz", "id-fuzz", 1_700_000_000);
    let mut out = Vec::new();
    let mut error = None;
    for chunk in chunks {
        if let Err(e) = pipe.push(chunk, &mut out) {
            error = Some(e);
            break;
        }
    }
    if error.is_none() {
        error = pipe.finish(&mut out).err();
    }
    Relayed {
        out,
        usage: pipe.usage(),
        completion_bytes: pipe.completion_bytes(),
        completed: pipe.completed(),
        errored: pipe.errored(),
        error,
    }
}

/// Relays `input` whole and cut in two, in `mode`, and checks what the client got: the cut
/// changes nothing; only a binary upstream framing can fail; the Anthropic pass-through copies
/// bytes exactly and the OpenAI one writes UTF-8; a translated stream is well formed for its
/// client and, unless the framing broke, ends properly (with its end marker or an error) exactly
/// when the pipe says the upstream completed or reported an error; output and counted text grow
/// at most linearly with the input.
pub fn check_relay(mode: Mode, input: &Input) {
    let (a, b) = input.halves();
    let include_usage = input.first & 1 == 1;
    let whole = relay(mode, include_usage, &[input.body]);
    let split = relay(mode, include_usage, &[a, b]);
    assert_eq!(whole, split, "{mode:?}: cut at {}", input.cut);
    assert_output_bounded(whole.out.len(), input.body.len());
    assert!(
        whole.completion_bytes <= 8 * input.body.len() + 8,
        "{mode:?}: {} completion bytes from {} bytes",
        whole.completion_bytes,
        input.body.len()
    );
    let binary = matches!(
        mode,
        Mode::Translate {
            upstream: WireFormat::Bedrock,
            ..
        }
    );
    if !binary {
        assert_eq!(whole.error, None, "{mode:?}");
    }
    let ended = match mode {
        Mode::PassOpenAi => {
            assert!(std::str::from_utf8(&whole.out).is_ok(), "invalid UTF-8");
            return;
        }
        Mode::PassAnthropic => {
            assert_eq!(whole.out, input.body);
            return;
        }
        Mode::Translate {
            client: ClientFormat::OpenAi,
            ..
        } => check_openai_client_stream(&whole.out),
        Mode::Translate {
            client: ClientFormat::Anthropic,
            ..
        } => check_anthropic_client_stream(&whole.out),
    };
    assert!(
        !(whole.completed && whole.errored),
        "{mode:?}: completed and errored"
    );
    if whole.error.is_none() {
        assert_eq!(
            ended,
            whole.completed || whole.errored,
            "{mode:?}: ended properly ≠ completed or errored"
        );
    }
}

/// A fuzz input: the first byte chooses where `body` is cut into two network chunks.
pub struct Input<'a> {
    pub first: u8,
    pub body: &'a [u8],
    pub cut: usize,
}

impl<'a> Input<'a> {
    /// `None` for the empty input. The cut is proportional to the first byte (0 → everything
    /// in the second chunk, 255 → everything in the first), so every cut of a body up to 255
    /// bytes is reachable and long bodies are still cut anywhere.
    pub fn new(data: &'a [u8]) -> Option<Input<'a>> {
        let (&first, body) = data.split_first()?;
        let cut = usize::from(first) * body.len() / 255;
        Some(Input { first, body, cut })
    }

    pub fn halves(&self) -> (&'a [u8], &'a [u8]) {
        self.body.split_at(self.cut)
    }
}

/// Most events a stream of `len` bytes can hold: the smallest event is `data` and two line
/// ends (six bytes), and `finish` may dispatch one more that lacks its blank line.
pub fn max_sse_events(len: usize) -> usize {
    len / 6 + 1
}

/// Neutral events decoded from `len` bytes of upstream stream. Every neutral event needs a few
/// bytes of its own in the input (a `{}` tool call in an array is the cheapest), so the count
/// is below the input size; one `Start` comes from nothing.
pub fn max_neutral_events(len: usize) -> usize {
    len + 1
}

/// What the relay writes for a stream may be larger than what it read (framing, ids, JSON
/// escapes), but only by a constant factor, never by something that grows with the stream.
pub fn assert_output_bounded(out_len: usize, in_len: usize) {
    assert!(
        out_len <= 512 * (in_len + 4),
        "{out_len} bytes out for {in_len} bytes in"
    );
}

/// Parses a whole stream the way a client would; the relay's own output must never be too
/// long for the default limit.
pub fn parse_sse(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser
        .push(bytes, &mut events)
        .expect("the relay wrote an SSE line longer than the default limit");
    parser
        .finish(&mut events)
        .expect("the relay wrote an SSE line longer than the default limit");
    events
}

fn json_object(data: &str, what: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(o)) => o,
        other => panic!("{what}: data is not a JSON object: {data:?} ({other:?})"),
    }
}

/// A stream the relay produced for an OpenAI client from neutral events: unnamed events, each a
/// JSON chunk (or an in-band error, after which nothing follows), at most one chunk with a
/// finish reason, and `[DONE]` only as the last event. Returns whether it ended properly
/// (`[DONE]` or an error).
pub fn check_openai_client_stream(out: &[u8]) -> bool {
    let text = std::str::from_utf8(out).expect("OpenAI client stream is not UTF-8");
    let events = parse_sse(text.as_bytes());
    let mut finishes = 0;
    let mut ended = false;
    for e in &events {
        assert!(!ended, "an event after [DONE] or an error: {text:?}");
        assert_eq!(e.event, None, "named event in an OpenAI stream: {text:?}");
        if e.data == "[DONE]" {
            ended = true;
            continue;
        }
        let chunk = json_object(&e.data, "OpenAI chunk");
        if chunk.contains_key("error") {
            ended = true;
            continue;
        }
        assert_eq!(
            chunk.get("object").and_then(Value::as_str),
            Some("chat.completion.chunk"),
            "{text:?}"
        );
        let choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .expect("chunk without choices");
        for choice in choices {
            if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
                finishes += 1;
            }
        }
    }
    assert!(finishes <= 1, "{finishes} finish reasons: {text:?}");
    ended
}

/// A stream the relay produced for an Anthropic client: every event named after its JSON
/// `type`; `message_start` first and once; content blocks opened with consecutive indices, one
/// at a time, each closed by its own `content_block_stop`; deltas only to blocks that were
/// started; `message_delta` with no block open; nothing after `message_stop` or `error`.
/// Returns whether it ended properly (`message_stop` or `error`).
pub fn check_anthropic_client_stream(out: &[u8]) -> bool {
    let text = std::str::from_utf8(out).expect("Anthropic client stream is not UTF-8");
    let events = parse_sse(text.as_bytes());
    let mut started = false;
    let mut ended = false;
    let mut open: Option<u64> = None;
    let mut next_block = 0u64;
    for e in &events {
        assert!(!ended, "an event after message_stop or error: {text:?}");
        let name = e
            .event
            .as_deref()
            .expect("unnamed event in an Anthropic stream");
        let data = json_object(&e.data, name);
        assert_eq!(
            data.get("type").and_then(Value::as_str),
            Some(name),
            "event name and type differ: {text:?}"
        );
        let index = data.get("index").and_then(Value::as_u64);
        match name {
            "error" => {
                ended = true;
                continue;
            }
            "message_start" => {
                assert!(!started, "second message_start: {text:?}");
                started = true;
                continue;
            }
            _ => assert!(started, "{name} before message_start: {text:?}"),
        }
        match name {
            "content_block_start" => {
                assert_eq!(open, None, "block started while another is open: {text:?}");
                assert_eq!(
                    index,
                    Some(next_block),
                    "block index out of order: {text:?}"
                );
                open = index;
                next_block += 1;
            }
            "content_block_delta" => {
                let index = index.expect("delta without index");
                assert!(
                    index < next_block,
                    "delta to a block never started: {text:?}"
                );
            }
            "content_block_stop" => {
                assert!(
                    open.is_some() && open == index,
                    "stop of a block not open: {text:?}"
                );
                open = None;
            }
            "message_delta" => assert_eq!(open, None, "message_delta with a block open: {text:?}"),
            "message_stop" => {
                assert_eq!(open, None, "message_stop with a block open: {text:?}");
                ended = true;
            }
            other => panic!("unexpected event {other}: {text:?}"),
        }
    }
    ended
}
