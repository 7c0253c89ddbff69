//! The composition of a client format with an upstream one: whether a reply passes through or
//! is translated (`Mode`), whole replies in the client's format, and streams translated by a
//! pure state machine per pair — bytes in, bytes out — watching usage on the way.

use crate::error::RelayError;
use crate::formats::client::ClientFormat;
use crate::formats::eventstream::EventStreamError;
use crate::formats::neutral::{ChatResponse, Drop, StreamEvent, Usage};
use crate::formats::openai::{self, StreamPassThrough};
use crate::formats::sse::SseError;
use crate::formats::{anthropic, anthropic_inbound, bedrock, cohere, gemini};

/// The format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    OpenAi,
    Anthropic,
    Gemini,
    Cohere,
    Bedrock,
}

/// How the reply must be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// OpenAI on both sides: bytes pass through, watched for usage.
    PassOpenAi,
    /// Anthropic on both sides: likewise.
    PassAnthropic,
    /// Through the neutral model.
    Translate {
        upstream: WireFormat,
        client: ClientFormat,
    },
}

/// A whole (non-stream) reply in the client's format, with its usage and generated size.
pub struct Reply {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
    pub completion_bytes: usize,
}

/// The reply in the client's format. `model` is what the client is told served it.
pub fn reply(
    mode: Mode,
    bytes: Vec<u8>,
    model: &str,
    id: &str,
    created_s: i64,
) -> Result<Reply, RelayError> {
    let bad = |detail: String| RelayError::UpstreamBadResponse { detail };
    let response = match mode {
        Mode::PassOpenAi => {
            let s = openai::summarize_reply(&bytes);
            return Ok(Reply {
                body: bytes,
                usage: s.usage,
                completion_bytes: s.completion_bytes,
            });
        }
        Mode::PassAnthropic => {
            // A pass-through reply the relay cannot read is still the upstream's to give.
            let r = anthropic::decode_response(&bytes).ok();
            let (usage, completion_bytes) = r.map_or((None, 0), |r| (r.usage, generated_bytes(&r)));
            return Ok(Reply {
                usage,
                completion_bytes,
                body: bytes,
            });
        }
        Mode::Translate {
            upstream: WireFormat::Gemini,
            ..
        } => gemini::decode_response(&bytes, model, id, created_s).map_err(bad)?,
        Mode::Translate {
            upstream: WireFormat::OpenAi,
            ..
        } => openai::decode_response(&bytes).map_err(bad)?,
        Mode::Translate {
            upstream: WireFormat::Cohere,
            ..
        } => cohere::decode_response(&bytes, model, created_s).map_err(bad)?,
        Mode::Translate {
            upstream: WireFormat::Bedrock,
            ..
        } => bedrock::decode_response(&bytes, model, id, created_s).map_err(bad)?,
        Mode::Translate {
            upstream: WireFormat::Anthropic,
            ..
        } => anthropic::decode_response(&bytes).map_err(bad)?,
    };
    // A translated reply is the relay's: it carries the relay's id in the client's style.
    let mut response = response;
    response.id = id.to_string();
    let body = match mode {
        Mode::Translate {
            client: ClientFormat::Anthropic,
            ..
        } => anthropic_inbound::encode_response(&response, model),
        _ => openai::encode_response(&response, model),
    };
    Ok(Reply {
        body: body.to_string().into_bytes(),
        usage: response.usage,
        completion_bytes: generated_bytes(&response),
    })
}

fn generated_bytes(r: &ChatResponse) -> usize {
    r.message.joined_text().len()
        + r.message.reasoning.as_ref().map_or(0, String::len)
        + r.message
            .tool_calls
            .iter()
            .map(|c| c.arguments.len())
            .sum::<usize>()
}

enum Decoder {
    OpenAi(openai::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
    Cohere(cohere::StreamDecoder),
    Bedrock(bedrock::StreamDecoder),
}

enum Encoder {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic_inbound::StreamEncoder),
}

/// An upstream stream whose framing could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError(pub String);

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SseError> for StreamError {
    fn from(e: SseError) -> Self {
        StreamError(e.to_string())
    }
}

impl From<EventStreamError> for StreamError {
    fn from(e: EventStreamError) -> Self {
        StreamError(e.to_string())
    }
}

/// A relayed stream as the client receives it. Watches usage and generated text either way.
pub struct StreamPipe(Pipe);

enum Pipe {
    /// OpenAI to OpenAI: bytes through, usage chunk removed if the client did not ask for it.
    OpenAiPass(StreamPassThrough),
    /// Anthropic to Anthropic: bytes through untouched, decoded on the side for usage.
    AnthropicPass {
        decoder: anthropic::StreamDecoder,
        watch: Watch,
    },
    Translate {
        decoder: Decoder,
        encoder: Encoder,
        watch: Watch,
    },
}

/// What a stream carried, gathered from its neutral events.
#[derive(Default)]
pub struct Watch {
    events: Vec<StreamEvent>,
    usage: Option<Usage>,
    completion_bytes: usize,
    finished: bool,
    /// The upstream reported an error inside the stream (already passed on to the client).
    errored: bool,
}

impl Watch {
    fn see(&mut self, e: &StreamEvent) {
        match e {
            StreamEvent::TextDelta(t) | StreamEvent::ReasoningDelta(t) => {
                self.completion_bytes += t.len()
            }
            StreamEvent::ToolCallDelta { arguments, .. } => {
                self.completion_bytes += arguments.len()
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { .. } => self.finished = true,
            StreamEvent::Error { .. } => self.errored = true,
            StreamEvent::Start { .. }
            | StreamEvent::ReasoningSignature(_)
            | StreamEvent::ToolCallStart { .. } => {}
        }
    }
}

impl StreamPipe {
    pub fn new(
        mode: Mode,
        include_usage: bool,
        model: &str,
        id: &str,
        created_s: i64,
    ) -> StreamPipe {
        let decoder = |wire: WireFormat| match wire {
            WireFormat::OpenAi => Decoder::OpenAi(openai::StreamDecoder::new()),
            WireFormat::Anthropic => Decoder::Anthropic(anthropic::StreamDecoder::new()),
            WireFormat::Gemini => Decoder::Gemini(gemini::StreamDecoder::new(model, id)),
            WireFormat::Cohere => Decoder::Cohere(cohere::StreamDecoder::new(model)),
            WireFormat::Bedrock => Decoder::Bedrock(bedrock::StreamDecoder::new(model, id)),
        };
        StreamPipe(match mode {
            Mode::PassOpenAi => Pipe::OpenAiPass(StreamPassThrough::new(!include_usage)),
            Mode::PassAnthropic => Pipe::AnthropicPass {
                decoder: anthropic::StreamDecoder::new(),
                watch: Watch::default(),
            },
            Mode::Translate { upstream, client } => Pipe::Translate {
                decoder: decoder(upstream),
                encoder: match client {
                    ClientFormat::OpenAi => Encoder::OpenAi(openai::StreamEncoder::new(
                        id,
                        model,
                        created_s,
                        include_usage,
                    )),
                    ClientFormat::Anthropic => {
                        Encoder::Anthropic(anthropic_inbound::StreamEncoder::new(id, model))
                    }
                },
                watch: Watch::default(),
            },
        })
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.step(Some(chunk), out)
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.step(None, out)
    }

    fn step(&mut self, chunk: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        match &mut self.0 {
            Pipe::OpenAiPass(p) => match chunk {
                Some(c) => p.push(c, out).map_err(StreamError::from),
                None => p.finish(out).map_err(StreamError::from),
            },
            Pipe::AnthropicPass { decoder, watch } => {
                let mut events = std::mem::take(&mut watch.events);
                let result = match chunk {
                    Some(c) => {
                        out.extend_from_slice(c);
                        decoder.push(c, &mut events)
                    }
                    None => decoder.finish(&mut events),
                };
                for e in events.drain(..) {
                    watch.see(&e);
                }
                watch.events = events;
                result.map_err(StreamError::from)
            }
            Pipe::Translate {
                decoder,
                encoder,
                watch,
            } => {
                let mut events = std::mem::take(&mut watch.events);
                let result = match (decoder, chunk) {
                    (Decoder::OpenAi(d), Some(c)) => {
                        d.push(c, &mut events).map_err(StreamError::from)
                    }
                    (Decoder::OpenAi(d), None) => d.finish(&mut events).map_err(StreamError::from),
                    (Decoder::Anthropic(d), Some(c)) => {
                        d.push(c, &mut events).map_err(StreamError::from)
                    }
                    (Decoder::Anthropic(d), None) => {
                        d.finish(&mut events).map_err(StreamError::from)
                    }
                    (Decoder::Gemini(d), Some(c)) => {
                        d.push(c, &mut events).map_err(StreamError::from)
                    }
                    (Decoder::Gemini(d), None) => d.finish(&mut events).map_err(StreamError::from),
                    (Decoder::Cohere(d), Some(c)) => {
                        d.push(c, &mut events).map_err(StreamError::from)
                    }
                    (Decoder::Cohere(d), None) => d.finish(&mut events).map_err(StreamError::from),
                    (Decoder::Bedrock(d), Some(c)) => {
                        d.push(c, &mut events).map_err(StreamError::from)
                    }
                    (Decoder::Bedrock(d), None) => d.finish(&mut events).map_err(StreamError::from),
                };
                for e in events.drain(..) {
                    watch.see(&e);
                    match encoder {
                        Encoder::OpenAi(enc) => enc.push(&e, out),
                        Encoder::Anthropic(enc) => enc.push(&e, out),
                    }
                }
                watch.events = events;
                if chunk.is_none() && watch.finished && !watch.errored {
                    match encoder {
                        Encoder::OpenAi(enc) => enc.finish(out),
                        Encoder::Anthropic(enc) => enc.finish(out),
                    }
                }
                result
            }
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        match &self.0 {
            Pipe::OpenAiPass(p) => p.usage(),
            Pipe::AnthropicPass { watch, .. } | Pipe::Translate { watch, .. } => watch.usage,
        }
    }

    pub fn completion_bytes(&self) -> usize {
        match &self.0 {
            Pipe::OpenAiPass(p) => p.completion_bytes(),
            Pipe::AnthropicPass { watch, .. } | Pipe::Translate { watch, .. } => {
                watch.completion_bytes
            }
        }
    }

    /// The upstream ended the stream properly (OpenAI `[DONE]`, a finish reason otherwise).
    pub fn completed(&self) -> bool {
        match &self.0 {
            Pipe::OpenAiPass(p) => p.saw_done(),
            Pipe::AnthropicPass { watch, .. } | Pipe::Translate { watch, .. } => {
                watch.finished && !watch.errored
            }
        }
    }

    /// The upstream reported an error mid-stream, and the client has already been told in
    /// its own format: the stream is broken, but needs no second error event.
    pub fn errored(&self) -> bool {
        match &self.0 {
            Pipe::OpenAiPass(_) => false,
            Pipe::AnthropicPass { watch, .. } | Pipe::Translate { watch, .. } => watch.errored,
        }
    }

    /// The client's stream ended with an error in its own format (the upstream broke off).
    pub fn break_off(&self, err: &RelayError, out: &mut Vec<u8>) {
        match self.client_format() {
            ClientFormat::OpenAi => crate::formats::sse::encode_event(None, &err.body(), out),
            ClientFormat::Anthropic => crate::formats::sse::encode_event(
                Some("error"),
                &anthropic_inbound::error_body(err).to_string(),
                out,
            ),
        }
    }

    fn client_format(&self) -> ClientFormat {
        match &self.0 {
            Pipe::OpenAiPass(_) => ClientFormat::OpenAi,
            Pipe::AnthropicPass { .. } => ClientFormat::Anthropic,
            Pipe::Translate {
                encoder: Encoder::OpenAi(_),
                ..
            } => ClientFormat::OpenAi,
            Pipe::Translate {
                encoder: Encoder::Anthropic(_),
                ..
            } => ClientFormat::Anthropic,
        }
    }
}

/// The fidelity response headers: fields dropped, and fields approximated, comma-separated.
/// Field names can come from the client (an unknown top-level key), so only header-safe names
/// are listed, and the list is capped: a header the runtime refused would lose all of it.
pub fn fidelity_headers(drops: &[Drop]) -> Vec<(&'static str, String)> {
    let safe = |f: &&str| {
        !f.is_empty() && f.len() <= 128 && f.bytes().all(|b| b.is_ascii_graphic() && b != b',')
    };
    let list = |approximated: bool| {
        let mut fields: Vec<&str> = drops
            .iter()
            .filter(|d| d.approximated == approximated)
            .map(|d| d.field.as_str())
            .filter(safe)
            .take(64)
            .collect();
        fields.sort_unstable();
        fields.dedup();
        fields.join(", ")
    };
    let mut headers = Vec::new();
    for (name, approximated) in [("x-relay-dropped", false), ("x-relay-approximated", true)] {
        let value = list(approximated);
        if !value.is_empty() {
            headers.push((name, value));
        }
    }
    headers
}

/// The client's bytes for a whole upstream stream pushed at once, and the pipe after it.
#[cfg(test)]
pub fn run_pipe(mut pipe: StreamPipe, bytes: &[u8]) -> (String, StreamPipe) {
    let mut out = Vec::new();
    pipe.push(bytes, &mut out).unwrap();
    pipe.finish(&mut out).unwrap();
    (String::from_utf8(out).unwrap(), pipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn an_error_inside_the_stream_breaks_it_once() {
        let mode = Mode::Translate {
            upstream: WireFormat::Bedrock,
            client: ClientFormat::OpenAi,
        };
        let (out, pipe) = run_pipe(
            StreamPipe::new(mode, true, "m", "id", 1),
            include_bytes!("../../tests/fixtures/bedrock/stream_exception.bin"),
        );
        assert!(pipe.errored() && !pipe.completed(), "{out}");
        assert_eq!(out.matches("\"error\"").count(), 1, "{out}");
        assert!(
            out.contains("upstream_stream_broken") && !out.contains("[DONE]"),
            "{out}"
        );
    }

    #[test]
    fn fidelity_headers_carry_only_header_safe_names() {
        let drops = vec![
            Drop::dropped("seed"),
            Drop::dropped("bad\r\nx-evil: 1"),
            Drop::dropped("a,b"),
            Drop::approximated("temperature"),
        ];
        assert_eq!(
            fidelity_headers(&drops),
            vec![
                ("x-relay-dropped", "seed".to_string()),
                ("x-relay-approximated", "temperature".to_string())
            ]
        );
    }

    #[test]
    fn anthropic_stream_reaches_an_openai_client_as_chunks() {
        let mode = Mode::Translate {
            upstream: WireFormat::Anthropic,
            client: ClientFormat::OpenAi,
        };
        let fixture = include_bytes!("../../tests/fixtures/anthropic/stream_tool_use.sse");
        let (out, pipe) = run_pipe(StreamPipe::new(mode, true, "claude", "id", 1), fixture);
        assert!(pipe.completed());
        assert!(out.contains("\"tool_calls\""), "{out}");
        assert!(out.contains("\"finish_reason\":\"tool_calls\""), "{out}");
        assert!(out.trim_end().ends_with("data: [DONE]"));
        let usage = pipe.usage().unwrap();
        assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
        // Split anywhere, the client sees the same bytes.
        for cut in (0..fixture.len()).step_by(5) {
            let mut p = StreamPipe::new(mode, true, "claude", "id", 1);
            let mut o = Vec::new();
            p.push(&fixture[..cut], &mut o).unwrap();
            p.push(&fixture[cut..], &mut o).unwrap();
            p.finish(&mut o).unwrap();
            assert_eq!(String::from_utf8(o).unwrap(), out, "cut {cut}");
        }
    }

    #[test]
    fn anthropic_pass_through_keeps_bytes_and_reads_usage() {
        let fixture = include_bytes!("../../tests/fixtures/anthropic/stream_text.sse");
        let (out, pipe) = run_pipe(
            StreamPipe::new(Mode::PassAnthropic, true, "c", "id", 1),
            fixture,
        );
        assert_eq!(out.as_bytes(), fixture);
        assert!(pipe.completed() && pipe.usage().is_some());
    }

    #[test]
    fn gemini_reply_reaches_openai_clients() {
        let mode = Mode::Translate {
            upstream: WireFormat::Gemini,
            client: ClientFormat::OpenAi,
        };
        let r = reply(
            mode,
            include_bytes!("../../tests/fixtures/gemini/reply_function_call.json").to_vec(),
            "gemini-x",
            "id",
            1,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["model"], "gemini-x");
        assert!(r.usage.is_some());
        let bad = reply(mode, b"<html>".to_vec(), "g", "id", 1).err().unwrap();
        assert_eq!(bad.code(), "upstream_bad_response");
    }
}
