//! Server-Sent Events framing: network byte chunks → [`SseEvent`]s ([`SseParser`]), and events
//! → wire bytes ([`encode_event`], [`encode_done`]).
//!
//! Parsing follows the WHATWG "event stream interpretation" algorithm
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>)
//! as an incremental state machine: it holds at most one partial line and one pending event,
//! never the whole response, and looks at each input byte once however the stream is chunked.
//!
//! Where this parser deliberately differs from what a browser's `EventSource` does:
//! - An event is dispatched when it has at least one `data` line *or* a non-empty `event` type.
//!   Browsers drop data-less events; a relay would rather show the caller an `event: ping`
//!   than silently swallow it.
//! - [`SseEvent::id`] is set only on the event whose block carried an `id` line. The spec's
//!   sticky "last event ID" is still tracked, in [`SseParser::last_event_id`], for callers that
//!   need reconnection semantics.
//! - [`SseParser::finish`] dispatches a final event that lacks its terminating blank line.
//!   Browsers discard it; upstreams that close the connection right after their last `data:`
//!   line would otherwise lose it (often the one carrying usage).

use std::fmt;

/// One dispatched event. `data` lines are joined with `\n`, without a trailing newline.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A single line, or the joined `data` of one event, exceeded `limit` bytes.
    LineTooLong { limit: usize },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::LineTooLong { limit } => {
                write!(f, "server-sent event line longer than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// Large enough for any real completion chunk, small enough that a hostile or broken upstream
/// that never sends a newline cannot exhaust a Worker's 128 MB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Incremental SSE parser. Feed chunks with [`push`](Self::push), then call
/// [`finish`](Self::finish) at end of stream.
///
/// After an error the parser's state is cleared; the stream should be treated as broken.
#[derive(Debug, Clone)]
pub struct SseParser {
    max_line_bytes: usize,
    /// Bytes of a line whose terminator has not arrived yet. Kept as bytes so a UTF-8
    /// character split across chunks is decoded only once it is whole.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting the next chunk belongs to the same
    /// line ending and must not produce an empty line (which would dispatch an event).
    pending_cr: bool,
    /// Until the first bytes are seen we cannot know whether they start with a BOM; the
    /// BOM itself may arrive split across chunks, so its bytes wait in `line`.
    bom_checked: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    last_event_id: Option<String>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_max_line_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// A line (without its terminator) or an event's joined data longer than `limit` bytes
    /// makes [`push`](Self::push) / [`finish`](Self::finish) return [`SseError::LineTooLong`].
    pub fn with_max_line_bytes(limit: usize) -> Self {
        SseParser {
            max_line_bytes: limit,
            line: Vec::new(),
            pending_cr: false,
            bom_checked: false,
            data: String::new(),
            has_data: false,
            event: None,
            id: None,
            last_event_id: None,
        }
    }

    /// The most recent `id` seen on the stream (sticky across events, as in the spec).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Feed one network chunk; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let result = self.push_inner(chunk, out);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// End of stream: processes a last line without terminator and dispatches a pending
    /// event even though no blank line closed it (see the module docs for why), then clears
    /// all state so the parser can be reused for a new stream.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let result = self.finish_inner(out);
        self.reset();
        result
    }

    fn finish_inner(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            self.process_buffered_line(out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn reset(&mut self) {
        self.line.clear();
        self.pending_cr = false;
        self.bom_checked = false;
        self.data.clear();
        self.has_data = false;
        self.event = None;
        self.id = None;
        self.last_event_id = None;
    }

    fn push_inner(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = chunk;
        if !self.bom_checked {
            rest = self.skip_bom(rest);
        }
        // An empty chunk says nothing about whether a LF follows a trailing CR.
        if rest.is_empty() {
            return Ok(());
        }
        if self.pending_cr {
            self.pending_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }

        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let segment = &rest[..end];
            if self.line.is_empty() {
                // Common case: the whole line is inside this chunk, so skip the copy.
                self.check_line_len(segment.len())?;
                self.process_line(segment, out)?;
            } else {
                self.append_to_line(segment)?;
                self.process_buffered_line(out)?;
            }

            let mut consumed = end + 1;
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => consumed += 1,
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            rest = &rest[consumed..];
        }
        self.append_to_line(rest)
    }

    /// Consumes the stream's leading bytes for as long as they could still be a BOM.
    fn skip_bom<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let mut taken = 0;
        while let Some(&byte) = chunk.get(taken) {
            let Some(&expected) = BOM.get(self.line.len()) else {
                break;
            };
            if byte != expected {
                // Not a BOM after all: the bytes held so far are ordinary line content.
                self.bom_checked = true;
                return &chunk[taken..];
            }
            self.line.push(byte);
            taken += 1;
        }
        if self.line.len() == BOM.len() {
            self.line.clear();
            self.bom_checked = true;
        }
        &chunk[taken..]
    }

    fn check_line_len(&self, len: usize) -> Result<(), SseError> {
        if len > self.max_line_bytes {
            return Err(SseError::LineTooLong {
                limit: self.max_line_bytes,
            });
        }
        Ok(())
    }

    fn append_to_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.check_line_len(self.line.len().saturating_add(bytes.len()))?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_buffered_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        // Taken out so `process_line` can borrow `self` mutably; put back to keep capacity.
        let line = std::mem::take(&mut self.line);
        let result = self.process_line(&line, out);
        self.line = line;
        self.line.clear();
        result
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                let value = String::from_utf8_lossy(value);
                let separator = usize::from(self.has_data);
                let new_len = self
                    .data
                    .len()
                    .saturating_add(separator)
                    .saturating_add(value.len());
                self.check_line_len(new_len)?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => {
                self.event = if value.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(value).into_owned())
                };
            }
            // Per spec an id containing NUL is ignored entirely; it does not clear the last id.
            b"id" if !value.contains(&0) => {
                let id = String::from_utf8_lossy(value).into_owned();
                self.last_event_id = Some(id.clone());
                self.id = Some(id);
            }
            // `retry` only matters to a reconnecting browser; unknown fields are ignored per spec.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data || self.event.is_some() {
            out.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.take(),
            });
        }
        self.data.clear();
        self.has_data = false;
        self.event = None;
        self.id = None;
    }
}

/// Append one event in wire form: optional `event: x\n`, then each line of `data` as
/// `data: line\n`, then `\n`.
///
/// `data` is split on LF, CRLF and lone CR, because a parser treats all three as line ends;
/// parsing the output therefore yields `data` with its line endings normalised to `\n`.
/// An event name cannot contain a line break on the wire, so it is cut at the first one.
pub fn encode_event(event: Option<&str>, data: &str, out: &mut Vec<u8>) {
    if let Some(name) = event {
        let name = name.split(['\r', '\n']).next().unwrap_or_default();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    let mut rest = data.as_bytes();
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..end.unwrap_or(rest.len())]);
        out.push(b'\n');
        let Some(end) = end else { break };
        let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
        rest = &rest[end + 1 + usize::from(crlf)..];
    }
    out.push(b'\n');
}

/// `data: [DONE]\n\n`, OpenAI's end-of-stream sentinel.
pub fn encode_done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT_USAGE: &[u8] = include_bytes!("../../tests/fixtures/openai/stream_text_usage.sse");
    const TOOL_CALLS: &[u8] = include_bytes!("../../tests/fixtures/openai/stream_tool_calls.sse");
    const CRLF_COMMENTS: &[u8] =
        include_bytes!("../../tests/fixtures/openai/stream_crlf_comments.sse");

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out).expect("push");
        }
        parser.finish(&mut out).expect("finish");
        out
    }

    fn parse(bytes: &[u8]) -> Vec<SseEvent> {
        parse_chunks(&[bytes])
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            data: d.to_owned(),
            ..SseEvent::default()
        }
    }

    fn assert_chunking_invariant(bytes: &[u8]) -> Vec<SseEvent> {
        let whole = parse(bytes);
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(parse_chunks(&[a, b]), whole, "split at byte {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&singles), whole, "one byte at a time");
        whole
    }

    #[test]
    fn text_usage_fixture() {
        let events = assert_chunking_invariant(TEXT_USAGE);
        assert_eq!(events.len(), 13);
        assert!(events[0].data.contains(r#""role":"assistant""#));
        assert!(events[10].data.contains(r#""finish_reason":"stop""#));
        assert!(events[11].data.contains(r#""choices":[]"#));
        assert!(events[11].data.contains(r#""completion_tokens_details""#));
        assert_eq!(events[12], data("[DONE]"));
        let content: String = events[1..10]
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.data).expect("json");
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(content, "Hello! How can I help you today?");
        assert!(events.iter().all(|e| e.event.is_none() && e.id.is_none()));
    }

    #[test]
    fn tool_calls_fixture() {
        let events = assert_chunking_invariant(TOOL_CALLS);
        assert_eq!(events.last(), Some(&data("[DONE]")));
        let mut args = [String::new(), String::new()];
        for event in &events[..events.len() - 1] {
            let v: serde_json::Value = serde_json::from_str(&event.data).expect("json");
            if let Some(calls) = v["choices"][0]["delta"]["tool_calls"].as_array() {
                for call in calls {
                    let index = call["index"].as_u64().expect("index") as usize;
                    args[index].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                }
            }
        }
        assert_eq!(args[0], r#"{"location":"Paris, France"}"#);
        assert_eq!(args[1], r#"{"location":"Bogotá, Colombia"}"#);
    }

    #[test]
    fn crlf_comments_fixture_matches_lf_text_fixture() {
        let events = assert_chunking_invariant(CRLF_COMMENTS);
        let mut expected = parse(TEXT_USAGE);
        expected[5].event = Some("message".to_owned());
        expected[5].id = Some("5".to_owned());
        assert_eq!(events, expected);
    }

    #[test]
    fn line_endings_are_equivalent() {
        let lf = parse(b"data: a\ndata: b\n\ndata: c\n\n");
        assert_eq!(lf, vec![data("a\nb"), data("c")]);
        assert_eq!(parse(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"), lf);
        assert_eq!(parse(b"data: a\rdata: b\r\rdata: c\r\r"), lf);
        assert_eq!(parse(b"data: a\r\ndata: b\r\rdata: c\n\r\n"), lf);
    }

    #[test]
    fn cr_and_lf_split_across_chunks_is_one_line_ending() {
        let events = parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(events, vec![data("a\nb")]);
        // An empty chunk between CR and LF must not break the pair either.
        let events = parse_chunks(&[b"data: a\r", b"", b"\ndata: b\n\n"]);
        assert_eq!(events, vec![data("a\nb")]);
    }

    #[test]
    fn lone_cr_at_chunk_end_then_more_text() {
        let events = parse_chunks(&[b"data: a\r", b"data: b\r\r"]);
        assert_eq!(events, vec![data("a\nb")]);
    }

    #[test]
    fn leading_bom_is_dropped_even_when_split() {
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        assert_eq!(parse(stream), vec![data("x")]);
        assert_chunking_invariant(stream);
        // Only at stream start: later it is content of the field name, so unknown field.
        assert_eq!(
            parse(b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"),
            vec![data("x")]
        );
    }

    #[test]
    fn partial_bom_prefix_is_content() {
        assert_eq!(parse(b"\xEF\xBBdata: x\n\ndata: y\n\n"), vec![data("y")]);
    }

    #[test]
    fn comments_are_ignored() {
        let events = parse(b": keep-alive\n\n:\ndata: x\n: inside\ndata: y\n\n");
        assert_eq!(events, vec![data("x\ny")]);
    }

    #[test]
    fn field_parsing() {
        // One optional space removed, not more; no colon means empty value.
        let events = parse(b"data:a\ndata:  b\ndata\ndata: \n\n");
        assert_eq!(events, vec![data("a\n b\n\n")]);
        // `data:` with an empty value still makes an event with empty data.
        assert_eq!(parse(b"data:\n\n"), vec![data("")]);
        // Unknown fields and retry are ignored, so this block dispatches nothing.
        assert!(parse(b"retry: 10\nfoo: bar\n\n").is_empty());
        // Colons after the first belong to the value.
        assert_eq!(parse(b"data: a:b: c\n\n"), vec![data("a:b: c")]);
    }

    #[test]
    fn event_and_id_fields() {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        let stream =
            b"event: message_start\nid: 1\ndata: {}\n\ndata: next\n\nid: bad\0id\ndata: z\n\n";
        parser.push(stream, &mut out).expect("push");
        assert_eq!(
            out,
            vec![
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{}".into(),
                    id: Some("1".into()),
                },
                data("next"),
                data("z"),
            ]
        );
        assert_eq!(parser.last_event_id(), Some("1"));
    }

    #[test]
    fn event_type_without_data_is_dispatched() {
        let events = parse(b"event: ping\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some("ping".into()),
                ..SseEvent::default()
            }]
        );
        // An empty event type is the default type, so this block is empty.
        assert!(parse(b"event:\n\n").is_empty());
        assert!(parse(b"id: 3\n\n").is_empty());
    }

    #[test]
    fn finish_flushes_trailing_event() {
        assert_eq!(parse(b"data: a\n\ndata: b"), vec![data("a"), data("b")]);
        assert_eq!(parse(b"data: a\ndata: b\n"), vec![data("a\nb")]);
        assert_eq!(parse(b"data: a\r"), vec![data("a")]);
        assert!(parse(b"").is_empty());
    }

    #[test]
    fn finish_resets_for_reuse() {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        parser.push(b"data: a\r", &mut out).expect("push");
        parser.finish(&mut out).expect("finish");
        parser
            .push(b"\xEF\xBB\xBF\ndata: b\n\n", &mut out)
            .expect("push");
        assert_eq!(out, vec![data("a"), data("b")]);
    }

    #[test]
    fn line_too_long() {
        let limit = 16;
        let mut ok = b"data: ".to_vec();
        ok.resize(limit, b'x');
        ok.extend_from_slice(b"\n\n");
        let mut parser = SseParser::with_max_line_bytes(limit);
        let mut out = Vec::new();
        assert_eq!(parser.push(&ok, &mut out), Ok(()));
        assert_eq!(out.len(), 1);

        // One byte over, even before the line ends and even when fed byte by byte.
        let mut parser = SseParser::with_max_line_bytes(limit);
        let long = [b'x'; 17];
        let err = long
            .chunks(1)
            .map(|c| parser.push(c, &mut out))
            .find(Result::is_err);
        assert_eq!(err, Some(Err(SseError::LineTooLong { limit })));

        // Joined data across many short lines is bounded too.
        let mut parser = SseParser::with_max_line_bytes(limit);
        let result = parser.push(b"data: 12345678\ndata: 12345678\n", &mut out);
        assert_eq!(result, Err(SseError::LineTooLong { limit }));
        assert_eq!(
            SseError::LineTooLong { limit }.to_string(),
            "server-sent event line longer than 16 bytes"
        );
    }

    #[test]
    fn megabyte_line_in_one_byte_chunks() {
        // Linear by construction: each push scans only its own bytes, never the buffer.
        let mut stream = b"data: ".to_vec();
        stream.resize(1024 * 1024, b'x');
        stream.extend_from_slice(b"\n\n");
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for byte in stream.chunks(1) {
            parser.push(byte, &mut out).expect("push");
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len(), 1024 * 1024 - 6);
    }

    #[test]
    fn utf8_split_across_chunks() {
        let stream = "data: é😀ü\n\n".as_bytes();
        assert_eq!(parse(stream), vec![data("é😀ü")]);
        assert_chunking_invariant(stream);
        // Invalid bytes become U+FFFD instead of failing the stream.
        assert_eq!(parse(b"data: a\xFFb\n\n"), vec![data("a\u{FFFD}b")]);
    }

    #[test]
    fn encode_round_trip() {
        let cases: [(Option<&str>, &str); 6] = [
            (None, "hello"),
            (Some("content_block_delta"), r#"{"a":1}"#),
            (None, "line one\nline two\n\nline four"),
            (None, ""),
            (None, "trailing\n"),
            (Some("x"), "é😀"),
        ];
        let mut wire = Vec::new();
        for (event, data) in cases {
            encode_event(event, data, &mut wire);
        }
        encode_done(&mut wire);
        let mut expected: Vec<SseEvent> = cases
            .iter()
            .map(|(event, data)| SseEvent {
                event: event.map(str::to_owned),
                data: (*data).to_owned(),
                id: None,
            })
            .collect();
        expected.push(data("[DONE]"));
        assert_eq!(assert_chunking_invariant(&wire), expected);
    }

    #[test]
    fn encode_wire_form() {
        let mut wire = Vec::new();
        encode_event(Some("ping"), "a\r\nb\rc", &mut wire);
        assert_eq!(wire, b"event: ping\ndata: a\ndata: b\ndata: c\n\n");
        wire.clear();
        encode_event(Some("bad\nname"), "x", &mut wire);
        assert_eq!(wire, b"event: bad\ndata: x\n\n");
        wire.clear();
        encode_done(&mut wire);
        assert_eq!(wire, b"data: [DONE]\n\n");
    }
}
