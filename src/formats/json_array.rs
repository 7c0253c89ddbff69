//! The streamed-JSON-array framing Google uses for `streamGenerateContent` without `alt=sse`:
//! one JSON array whose elements arrive over time (`[{…}\n,{…}\n]`). Network chunks →
//! whole element texts ([`JsonArrayParser`]), and elements → wire bytes ([`encode_element`],
//! [`encode_end`]).
//!
//! The parser is an incremental state machine like the SSE one: it holds at most one partial
//! element, looks at each byte once however the stream is chunked, and does not parse the
//! element itself (the format's decoder does that), only finds where it ends.

use crate::formats::sse::{SseError, DEFAULT_MAX_LINE_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// Between elements: whitespace and the `,` separators.
    Between,
    /// Inside an element.
    Element,
    /// After the closing `]`: anything more is ignored.
    Done,
}

/// Incremental splitter of a streamed JSON array into its elements. Feed chunks with
/// [`push`](Self::push), then call [`finish`](Self::finish) at end of stream.
#[derive(Debug, Clone)]
pub struct JsonArrayParser {
    max_element_bytes: usize,
    state: State,
    /// Bytes of the element being read. Kept as bytes so a UTF-8 character split across
    /// chunks is decoded only once whole.
    element: Vec<u8>,
    /// Nesting of `{`/`[` inside the element; 0 for a scalar element.
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Default for JsonArrayParser {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonArrayParser {
    pub fn new() -> Self {
        Self::with_max_element_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// An element longer than `limit` bytes makes [`push`](Self::push) fail, so an upstream
    /// that never closes its object cannot exhaust a Worker's memory.
    pub fn with_max_element_bytes(limit: usize) -> Self {
        JsonArrayParser {
            max_element_bytes: limit,
            state: State::Start,
            element: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// Feed one network chunk; the text of each complete element is appended to `out`. A byte
    /// that cannot start the array (the upstream sent something else) starts an element, so
    /// the decoder sees it and reports it as not JSON instead of it vanishing.
    ///
    /// The error is the SSE one so that both framings of a stream fail the same way.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<String>) -> Result<(), SseError> {
        for &byte in chunk {
            match self.state {
                State::Done => return Ok(()),
                State::Start => match byte {
                    b'[' => self.state = State::Between,
                    _ if byte.is_ascii_whitespace() => {}
                    _ => self.begin(byte),
                },
                State::Between => match byte {
                    b']' => self.state = State::Done,
                    b',' => {}
                    _ if byte.is_ascii_whitespace() => {}
                    _ => self.begin(byte),
                },
                State::Element => self.step(byte, out),
            }
            if self.element.len() > self.max_element_bytes {
                self.reset();
                return Err(SseError::LineTooLong {
                    limit: self.max_element_bytes,
                });
            }
        }
        Ok(())
    }

    /// End of stream: an element cut off mid-way is still handed on (its parse will fail and
    /// say so), then the state is cleared for reuse.
    pub fn finish(&mut self, out: &mut Vec<String>) -> Result<(), SseError> {
        if self.state == State::Element {
            self.emit(out);
        }
        self.reset();
        Ok(())
    }

    fn reset(&mut self) {
        self.state = State::Start;
        self.element.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    fn begin(&mut self, byte: u8) {
        self.state = State::Element;
        self.element.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.track(byte);
        self.element.push(byte);
    }

    fn step(&mut self, byte: u8, out: &mut Vec<String>) {
        // A scalar element ends at the separator or the closing bracket, which are not its own.
        if self.depth == 0 && !self.in_string && matches!(byte, b',' | b']') {
            self.emit(out);
            self.state = if byte == b']' {
                State::Done
            } else {
                State::Between
            };
            return;
        }
        let was_nested = self.depth > 0;
        self.track(byte);
        self.element.push(byte);
        if was_nested && self.depth == 0 && !self.in_string {
            self.emit(out);
            self.state = State::Between;
        }
    }

    /// Follows strings (so braces inside them do not count) and nesting.
    fn track(&mut self, byte: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
            return;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
    }

    fn emit(&mut self, out: &mut Vec<String>) {
        let bytes = std::mem::take(&mut self.element);
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let text = text.trim();
        if !text.is_empty() {
            out.push(text.to_string());
        }
    }
}

/// One element of the array: `[` before the first, `,` before the others, `\n` after each
/// (Google's layout).
pub fn encode_element(first: bool, json: &str, out: &mut Vec<u8>) {
    out.push(if first { b'[' } else { b',' });
    out.extend_from_slice(json.as_bytes());
    out.push(b'\n');
}

/// The closing bracket; an array that had no element still opens, so the body is valid JSON.
pub fn encode_end(any_element: bool, out: &mut Vec<u8>) {
    if !any_element {
        out.push(b'[');
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = JsonArrayParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out).expect("push");
        }
        parser.finish(&mut out).expect("finish");
        out
    }

    #[test]
    fn splits_elements_at_any_chunking() {
        let wire = "[{\"a\":\"x}]\\\"{\",\"b\":[1,{\"c\":2}]}\n,\r\n{\"t\":\"é😀\"}\n]";
        let whole = split(&[wire.as_bytes()]);
        assert_eq!(
            whole,
            vec![
                "{\"a\":\"x}]\\\"{\",\"b\":[1,{\"c\":2}]}".to_string(),
                "{\"t\":\"é😀\"}".to_string()
            ]
        );
        let bytes = wire.as_bytes();
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(split(&[a, b]), whole, "split at {at}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split(&singles), whole);
    }

    #[test]
    fn writes_what_it_reads() {
        let mut out = Vec::new();
        encode_element(true, "{\"a\":1}", &mut out);
        encode_element(false, "{\"b\":2}", &mut out);
        encode_end(true, &mut out);
        assert_eq!(out, b"[{\"a\":1}\n,{\"b\":2}\n]");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v, serde_json::json!([{"a": 1}, {"b": 2}]));
        assert_eq!(split(&[&out]), vec!["{\"a\":1}", "{\"b\":2}"]);
        let mut empty = Vec::new();
        encode_end(false, &mut empty);
        assert_eq!(empty, b"[]");
        assert!(split(&[&empty]).is_empty());
    }

    #[test]
    fn odd_input_is_handed_on_not_lost() {
        // Not an array at all, a cut-off element, scalars, and bytes after the end.
        assert_eq!(split(&[b"<html>"]), vec!["<html>"]);
        assert_eq!(
            split(&[b"[{\"a\":1}\n,{\"b\""]),
            vec!["{\"a\":1}", "{\"b\""]
        );
        assert_eq!(split(&[b"[1, \"x\" ,null]"]), vec!["1", "\"x\"", "null"]);
        assert_eq!(split(&[b"[{}] trailing {"]), vec!["{}"]);
    }

    #[test]
    fn a_runaway_element_is_refused() {
        let mut parser = JsonArrayParser::with_max_element_bytes(8);
        let mut out = Vec::new();
        assert_eq!(
            parser.push(b"[{\"aaaaaaaaaaaa", &mut out),
            Err(SseError::LineTooLong { limit: 8 })
        );
        assert!(out.is_empty());
    }
}
