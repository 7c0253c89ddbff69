//! Which conversion a request needs, and the conversions composed: the client's format
//! (OpenAI or Anthropic) on one side, the channel's wire format on the other.
//!
//! When both sides speak the same format the body passes through with only `model`
//! rewritten, so fields the relay does not know still reach the upstream; otherwise the
//! request goes through the neutral model and every field that could not be carried is
//! reported. Streams are translated by a pure state machine per pair: bytes in, bytes out.

use serde_json::{json, Map, Value};

use crate::admin::config::Channel;
use crate::error::RelayError;
use crate::formats::eventstream::EventStreamError;
use crate::formats::neutral::{ChatRequest, ChatResponse, Drop, StreamEvent};
use crate::formats::openai::{self, Endpoint, InboundRequest, StreamPassThrough};
use crate::formats::sse::SseError;
use crate::formats::{anthropic, bedrock, cohere, gemini};
use crate::formats::neutral::{estimate_tokens, Usage};
use crate::providers::{self, mock, ProviderKind, UpstreamRequest};

/// The API a client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    OpenAi,
    Anthropic,
}

/// The format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    OpenAi,
    Anthropic,
    Gemini,
    Cohere,
    Bedrock,
}

impl ProviderKind {
    pub fn wire_format(&self) -> WireFormat {
        match self {
            // The mock answers in OpenAI's format, from inside the Worker.
            ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::Compatible(_)
            | ProviderKind::Mock => WireFormat::OpenAi,
            ProviderKind::Anthropic | ProviderKind::VertexAnthropic => WireFormat::Anthropic,
            ProviderKind::Gemini | ProviderKind::VertexGemini => WireFormat::Gemini,
            ProviderKind::Cohere => WireFormat::Cohere,
            ProviderKind::Bedrock => WireFormat::Bedrock,
        }
    }
}

/// A validated client request.
#[derive(Debug, Clone)]
pub enum ClientRequest {
    OpenAi(InboundRequest),
    /// An Anthropic Messages request: the raw body (for Anthropic upstreams, untouched but for
    /// `model`) and its neutral form (for every other upstream).
    Anthropic {
        body: Map<String, Value>,
        neutral: Box<ChatRequest>,
        prompt_bytes: usize,
    },
}

impl ClientRequest {
    pub fn format(&self) -> ClientFormat {
        match self {
            ClientRequest::OpenAi(_) => ClientFormat::OpenAi,
            ClientRequest::Anthropic { .. } => ClientFormat::Anthropic,
        }
    }

    pub fn model(&self) -> &str {
        match self {
            ClientRequest::OpenAi(r) => &r.model,
            ClientRequest::Anthropic { neutral, .. } => &neutral.model,
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            ClientRequest::OpenAi(r) => r.stream,
            ClientRequest::Anthropic { neutral, .. } => neutral.stream,
        }
    }

    /// The client asked for usage in the stream. Anthropic streams always carry it.
    pub fn include_usage(&self) -> bool {
        match self {
            ClientRequest::OpenAi(r) => r.include_usage,
            ClientRequest::Anthropic { .. } => true,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        match self {
            ClientRequest::OpenAi(r) => r.endpoint,
            ClientRequest::Anthropic { .. } => Endpoint::ChatCompletions,
        }
    }

    /// The most output the client allows (`None`: the upstream's default).
    pub fn max_tokens(&self) -> Option<u64> {
        match self {
            ClientRequest::OpenAi(r) => ["max_completion_tokens", "max_tokens"]
                .iter()
                .find_map(|k| r.body.get(*k).and_then(Value::as_u64)),
            ClientRequest::Anthropic { neutral, .. } => neutral.max_tokens,
        }
    }

    /// The name the usage row records.
    pub fn endpoint_name(&self) -> &'static str {
        match self {
            ClientRequest::OpenAi(r) => r.endpoint.name(),
            ClientRequest::Anthropic { .. } => "messages",
        }
    }

    pub fn prompt_bytes(&self) -> usize {
        match self {
            ClientRequest::OpenAi(r) => r.prompt_bytes,
            ClientRequest::Anthropic { prompt_bytes, .. } => *prompt_bytes,
        }
    }

    /// The request in the neutral model, addressed to `upstream_model`.
    fn neutral(&self, upstream_model: &str) -> (ChatRequest, Vec<Drop>) {
        let (mut neutral, drops) = match self {
            ClientRequest::OpenAi(r) => openai::to_neutral(r),
            ClientRequest::Anthropic { neutral, .. } => (neutral.as_ref().clone(), Vec::new()),
        };
        neutral.model = upstream_model.to_string();
        (neutral, drops)
    }
}

/// Parses an Anthropic Messages request body.
pub fn parse_anthropic(bytes: &[u8]) -> Result<ClientRequest, RelayError> {
    let neutral = anthropic::decode_request(bytes)?;
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(body)) => body,
        _ => {
            return Err(RelayError::InvalidJson {
                detail: "the body must be a JSON object".into(),
            })
        }
    };
    let prompt_bytes = prompt_bytes_of(&neutral);
    Ok(ClientRequest::Anthropic {
        body,
        neutral: Box::new(neutral),
        prompt_bytes,
    })
}

/// A `count_tokens` body: a Messages request without `max_tokens` (and never a stream).
pub fn parse_count_tokens(bytes: &[u8]) -> Result<ClientRequest, RelayError> {
    let mut body = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(body)) => body,
        Ok(_) => {
            return Err(RelayError::InvalidJson {
                detail: "the body must be a JSON object".into(),
            })
        }
        Err(e) => {
            return Err(RelayError::InvalidJson {
                detail: e.to_string(),
            })
        }
    };
    body.entry("max_tokens")
        .or_insert(json!(anthropic::DEFAULT_MAX_TOKENS));
    body.remove("stream");
    parse_anthropic(&serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

/// The request to an Anthropic channel's own token counter.
pub fn count_tokens_request(
    channel: &Channel,
    api_key: &str,
    req: &ClientRequest,
    upstream_model: &str,
) -> UpstreamRequest {
    let mut body = match req {
        ClientRequest::Anthropic { body, .. } => body.clone(),
        ClientRequest::OpenAi(_) => Map::new(),
    };
    body.insert("model".into(), json!(upstream_model));
    // The counter refuses generation parameters.
    for field in [
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
    ] {
        body.remove(field);
    }
    UpstreamRequest {
        url: format!(
            "{}/messages/count_tokens",
            channel.base_url.trim_end_matches('/')
        ),
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-api-key", api_key.to_string()),
            ("anthropic-version", ANTHROPIC_VERSION.into()),
        ],
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    }
}

fn prompt_bytes_of(req: &ChatRequest) -> usize {
    let system: usize = req.system.iter().map(String::len).sum();
    let messages: usize = req
        .messages
        .iter()
        .map(|m| {
            m.joined_text().len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.arguments.len())
                    .sum::<usize>()
        })
        .sum();
    let tools: usize = req
        .tools
        .iter()
        .map(|t| t.parameters.to_string().len() + t.name.len())
        .sum();
    system + messages + tools
}

/// An estimate of the prompt's tokens, for `/v1/messages/count_tokens` when the upstream has
/// no counting API.
pub fn estimate_prompt_tokens(req: &ClientRequest) -> u64 {
    estimate_tokens(req.prompt_bytes())
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

pub struct Plan {
    pub request: UpstreamRequest,
    pub mode: Mode,
    /// Request fields dropped or approximated for this upstream.
    pub drops: Vec<Drop>,
}

/// The Anthropic API version sent upstream; clients' `anthropic-version` is accepted and
/// this one used, since the relay's translation is written against it.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// What Vertex AI wants in the body of an Anthropic request instead.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The upstream request for this client request on this channel. `beta` is the client's
/// `anthropic-beta` header, forwarded only to Anthropic upstreams.
pub fn plan(
    channel: &Channel,
    api_key: Option<&str>,
    req: &ClientRequest,
    upstream_model: &str,
    beta: Option<&str>,
    now_ms: i64,
) -> Result<Plan, RelayError> {
    if !channel.provider.supports(req.endpoint()) {
        return Err(RelayError::UnsupportedEndpoint {
            endpoint: req.endpoint().name(),
            provider: channel.provider.as_str(),
        });
    }
    let wire = channel.provider.wire_format();
    // Vertex and Bedrock endpoints follow from the channel's region unless it names one.
    let derived_base;
    let base = match channel.provider {
        ProviderKind::VertexGemini | ProviderKind::VertexAnthropic
            if channel.base_url.is_empty() =>
        {
            derived_base = crate::providers::gcp::vertex_base_url(
                channel.option("region").unwrap_or("global"),
            );
            derived_base.as_str()
        }
        ProviderKind::Bedrock if channel.base_url.is_empty() => {
            let region = channel.option("region").unwrap_or("us-east-1");
            derived_base = format!("https://bedrock-runtime.{region}.amazonaws.com");
            derived_base.as_str()
        }
        _ => channel.base_url.trim_end_matches('/'),
    };
    let stream = req.stream();
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut headers: Vec<(&'static str, String)> = vec![
        ("content-type", "application/json".into()),
        ("accept", accept.into()),
    ];
    let (body, mode, mut drops) = match (wire, req) {
        (WireFormat::OpenAi, ClientRequest::OpenAi(r)) => {
            let ask_usage = channel
                .provider
                .openai_quirks()
                .is_some_and(|q| q.stream_usage);
            (
                Value::Object(openai::upstream_body(r, upstream_model, ask_usage)),
                Mode::PassOpenAi,
                Vec::new(),
            )
        }
        (WireFormat::Anthropic, ClientRequest::Anthropic { body, .. }) => {
            let mut body = body.clone();
            body.insert("model".into(), json!(upstream_model));
            (Value::Object(body), Mode::PassAnthropic, Vec::new())
        }
        (wire, req) => {
            let (neutral, mut drops) = req.neutral(upstream_model);
            let (body, more) = match wire {
                WireFormat::OpenAi => openai::encode_request(&neutral),
                WireFormat::Anthropic => anthropic::encode_request(&neutral),
                WireFormat::Gemini => gemini::encode_request(&neutral),
                WireFormat::Cohere => cohere::encode_request(&neutral),
                WireFormat::Bedrock => bedrock::encode_request(&neutral),
            };
            drops.extend(more);
            (
                body,
                Mode::Translate {
                    upstream: wire,
                    client: req.format(),
                },
                drops,
            )
        }
    };
    let mut body = body;
    if let (Some(quirks), Value::Object(map)) = (channel.provider.openai_quirks(), &mut body) {
        drops.extend(providers::apply_quirks(map, quirks));
    }
    if channel.provider == ProviderKind::VertexAnthropic {
        if let Value::Object(map) = &mut body {
            // Vertex takes the model from the URL and the API version in the body.
            map.remove("model");
            map.insert("anthropic_version".into(), json!(VERTEX_ANTHROPIC_VERSION));
        }
    }
    let vertex_path = |publisher: &str| {
        format!(
            "{base}/projects/{}/locations/{}/publishers/{publisher}",
            crate::support::url::percent_encode(channel.option("project").unwrap_or_default()),
            crate::support::url::percent_encode(channel.option("region").unwrap_or("global")),
        )
    };
    let url = match (channel.provider, wire) {
        (ProviderKind::VertexGemini, _) => {
            format!(
                "{}{}",
                vertex_path("google"),
                gemini::request_path(upstream_model, stream)
            )
        }
        (ProviderKind::VertexAnthropic, _) => format!(
            "{}/models/{}:{}",
            vertex_path("anthropic"),
            crate::support::url::percent_encode(upstream_model),
            if stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            }
        ),
        (ProviderKind::Azure, _) => {
            let version = channel
                .option("api_version")
                .unwrap_or(providers::AZURE_DEFAULT_API_VERSION);
            format!(
                "{base}/openai/deployments/{}{}?api-version={}",
                crate::support::url::percent_encode(upstream_model),
                req.endpoint().path(),
                crate::support::url::percent_encode(version)
            )
        }
        (_, WireFormat::OpenAi) => format!("{base}{}", req.endpoint().path()),
        (_, WireFormat::Anthropic) => format!("{base}/messages"),
        (_, WireFormat::Gemini) => {
            format!("{base}{}", gemini::request_path(upstream_model, stream))
        }
        (_, WireFormat::Cohere) => format!("{base}/chat"),
        (_, WireFormat::Bedrock) => {
            format!("{base}{}", bedrock::request_path(upstream_model, stream))
        }
    };
    if let Some(key) = api_key {
        match (channel.provider, wire) {
            // For Vertex the "key" is the OAuth access token the edge got for the service account.
            (ProviderKind::VertexGemini | ProviderKind::VertexAnthropic, _) => {
                headers.push(("authorization", format!("Bearer {key}")))
            }
            (ProviderKind::Azure, _) => headers.push(("api-key", key.to_string())),
            (_, WireFormat::OpenAi | WireFormat::Cohere) => {
                headers.push(("authorization", format!("Bearer {key}")))
            }
            (_, WireFormat::Anthropic) => headers.push(("x-api-key", key.to_string())),
            (_, WireFormat::Gemini) => headers.push(("x-goog-api-key", key.to_string())),
            // Signed below, once the body is final.
            (_, WireFormat::Bedrock) => {}
        }
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    if wire == WireFormat::Bedrock {
        if stream {
            // ConverseStream answers in AWS's binary event-stream framing, not SSE.
            headers.retain(|(name, _)| *name != "accept");
            headers.push(("accept", "application/vnd.amazon.eventstream".into()));
        }
        let credentials = api_key
            .and_then(crate::providers::sigv4::parse_credentials)
            .ok_or_else(|| RelayError::ChannelUnavailable {
                reason: "its channel has no AWS credentials".into(),
            })?;
        let signed_over: Vec<(String, String)> =
            vec![("content-type".into(), "application/json".into())];
        let input = crate::providers::sigv4::SignInput {
            method: "POST",
            url: &url,
            headers: &signed_over,
            body: &body,
            region: channel.option("region").unwrap_or("us-east-1"),
            service: "bedrock",
            amz_date: &crate::providers::sigv4::amz_date(now_ms),
        };
        for (name, value) in crate::providers::sigv4::sign(&input, &credentials) {
            let name: &'static str = match name.as_str() {
                "authorization" => "authorization",
                "x-amz-date" => "x-amz-date",
                "x-amz-content-sha256" => "x-amz-content-sha256",
                "x-amz-security-token" => "x-amz-security-token",
                _ => continue,
            };
            headers.push((name, value));
        }
    }
    if wire == WireFormat::Anthropic {
        if channel.provider == ProviderKind::Anthropic {
            headers.push(("anthropic-version", ANTHROPIC_VERSION.into()));
        }
        if let (Some(beta), ClientFormat::Anthropic) = (beta, req.format()) {
            headers.push(("anthropic-beta", beta.to_string()));
        }
    }
    Ok(Plan {
        request: UpstreamRequest { url, headers, body },
        mode,
        drops,
    })
}

/// The built-in mock's answer, in OpenAI's format (it is an OpenAI-format upstream that lives
/// in the Worker), with the mode that turns it into the client's format.
pub enum MockReply {
    Whole(Vec<u8>),
    Chunks(Vec<Vec<u8>>),
}

pub fn mock(
    req: &ClientRequest,
    upstream_model: &str,
    id: &str,
    created_s: i64,
) -> Result<(MockReply, Mode), RelayError> {
    let (openai_req, mode) = match req {
        ClientRequest::OpenAi(r) => (r.clone(), Mode::PassOpenAi),
        ClientRequest::Anthropic { .. } => {
            let (neutral, _) = req.neutral(upstream_model);
            let (body, _) = openai::encode_request(&neutral);
            let parsed =
                openai::parse_request(Endpoint::ChatCompletions, body.to_string().as_bytes())?;
            (
                parsed,
                Mode::Translate {
                    upstream: WireFormat::OpenAi,
                    client: ClientFormat::Anthropic,
                },
            )
        }
    };
    let reply = if openai_req.stream {
        MockReply::Chunks(mock::stream_chunks(
            &openai_req,
            upstream_model,
            id,
            created_s,
        ))
    } else {
        MockReply::Whole(mock::reply(&openai_req, upstream_model, id, created_s))
    };
    Ok((reply, mode))
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
        } => anthropic::encode_response(&response, model),
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
    Anthropic(anthropic::StreamEncoder),
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
                        Encoder::Anthropic(anthropic::StreamEncoder::new(id, model))
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
                &anthropic::error_body(err).to_string(),
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

/// The status and error body in the client's format. Anthropic clients expect 529 for an
/// overloaded upstream, where OpenAI clients get 503.
pub fn error_response(format: ClientFormat, err: &RelayError) -> (u16, String) {
    match format {
        ClientFormat::OpenAi => (err.status(), err.body()),
        ClientFormat::Anthropic => {
            let status = match err {
                RelayError::UpstreamOverloaded { .. } => 529,
                _ => err.status(),
            };
            (status, anthropic::error_body(err).to_string())
        }
    }
}

/// Strict mode refuses a request any of whose fields would be dropped or approximated.
pub fn check_strict(drops: &[Drop], provider: ProviderKind) -> Result<(), RelayError> {
    match drops.first() {
        Some(d) => Err(RelayError::FieldNotSupported {
            field: d.field.clone(),
            provider: provider.as_str(),
        }),
        None => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::config::Status;
    use std::collections::BTreeMap;

    fn channel(provider: &str, base_url: &str) -> Channel {
        let provider = ProviderKind::parse(provider).unwrap();
        Channel {
            id: "ch".into(),
            name: "ch".into(),
            provider,
            base_url: base_url.into(),
            api_keys: vec!["up-key".into()],
            models: vec![],
            status: Status::Active,
            timeout_ms: None,
            total_timeout_ms: None,
            region: None,
            breaker: None,
            options: BTreeMap::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn openai_client(body: Value) -> ClientRequest {
        ClientRequest::OpenAi(
            openai::parse_request(Endpoint::ChatCompletions, body.to_string().as_bytes()).unwrap(),
        )
    }

    fn header<'a>(plan: &'a Plan, name: &str) -> Option<&'a str> {
        plan.request
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(plan: &Plan) -> Value {
        serde_json::from_slice(&plan.request.body).unwrap()
    }

    const CLAUDE_CODE: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/claude_code_request.json");

    #[test]
    fn openai_to_openai_passes_through_with_model_rewritten() {
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true,"x_custom":{"a":1}}),
        );
        let plan = plan(
            &channel("openai", "https://up.example/v1"),
            Some("up-key"),
            &req,
            "gpt-x",
            None,
            0,
        )
        .unwrap();
        assert_eq!(plan.mode, Mode::PassOpenAi);
        assert_eq!(plan.request.url, "https://up.example/v1/chat/completions");
        assert_eq!(header(&plan, "authorization"), Some("Bearer up-key"));
        let b = body(&plan);
        assert_eq!(
            (b["model"].as_str(), &b["x_custom"]),
            (Some("gpt-x"), &json!({"a":1}))
        );
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(plan.drops.is_empty());
    }

    #[test]
    fn presets_apply_their_quirks() {
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true,
            "seed":1,"logit_bias":{"1":1},"stream_options":{"include_usage":true}}),
        );
        let mistral = plan(
            &channel("mistral", "https://api.mistral.ai/v1"),
            Some("k"),
            &req,
            "m",
            None,
            0,
        )
        .unwrap();
        let b = body(&mistral);
        assert_eq!((b.get("seed"), &b["random_seed"]), (None, &json!(1)));
        assert!(b.get("stream_options").is_none() && b.get("logit_bias").is_none());
        let fields: Vec<&str> = mistral.drops.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, vec!["logit_bias", "stream_options.include_usage"]);
        let groq = plan(
            &channel("groq", "https://api.groq.com/openai/v1"),
            Some("k"),
            &req,
            "llama",
            None,
            0,
        )
        .unwrap();
        assert_eq!(body(&groq)["stream_options"]["include_usage"], true);
        assert_eq!(
            check_strict(&groq.drops, ProviderKind::parse("groq").unwrap())
                .unwrap_err()
                .param(),
            Some("logit_bias")
        );
        let ollama = plan(
            &channel("ollama", "http://127.0.0.1:11434/v1"),
            None,
            &req,
            "llama3",
            None,
            0,
        )
        .unwrap();
        assert_eq!(header(&ollama, "authorization"), None);
    }

    #[test]
    fn azure_uses_deployments_api_version_and_api_key() {
        let mut azure = channel("azure", "https://res.openai.azure.com");
        let req = openai_client(json!({"model":"pub","messages":[{"role":"user","content":"hi"}]}));
        let p = plan(&azure, Some("az-key"), &req, "my-gpt4o", None, 0).unwrap();
        assert_eq!(p.request.url, "https://res.openai.azure.com/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21");
        assert_eq!(
            (header(&p, "api-key"), header(&p, "authorization")),
            (Some("az-key"), None)
        );
        azure
            .options
            .insert("api_version".into(), "2025-01-01-preview".into());
        let p = plan(&azure, Some("az-key"), &req, "my-gpt4o", None, 0).unwrap();
        assert!(p.request.url.ends_with("?api-version=2025-01-01-preview"));
    }

    #[test]
    fn openai_client_to_anthropic_and_gemini_is_translated() {
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"seed":3}),
        );
        let p = plan(
            &channel("anthropic", "https://api.anthropic.com/v1"),
            Some("ak"),
            &req,
            "claude-x",
            Some("beta-1"),
            0,
        )
        .unwrap();
        assert_eq!(
            p.mode,
            Mode::Translate {
                upstream: WireFormat::Anthropic,
                client: ClientFormat::OpenAi
            }
        );
        assert_eq!(p.request.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(
            (header(&p, "x-api-key"), header(&p, "anthropic-version")),
            (Some("ak"), Some(ANTHROPIC_VERSION))
        );
        // anthropic-beta only travels from Anthropic clients.
        assert_eq!(header(&p, "anthropic-beta"), None);
        let b = body(&p);
        assert_eq!(b["model"], "claude-x");
        assert!(b["max_tokens"].as_u64().is_some());
        assert_eq!(
            fidelity_headers(&p.drops),
            vec![("x-relay-dropped", "seed".to_string())]
        );

        let stream = openai_client(
            json!({"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true}),
        );
        let g = plan(
            &channel("gemini", "https://generativelanguage.googleapis.com/v1beta"),
            Some("gk"),
            &stream,
            "gemini-2.5-flash",
            None,
            0,
        )
        .unwrap();
        assert_eq!(g.request.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
        assert_eq!(header(&g, "x-goog-api-key"), Some("gk"));
    }

    #[test]
    fn anthropic_client_passes_through_to_anthropic_and_is_translated_elsewhere() {
        let req = parse_anthropic(CLAUDE_CODE).unwrap();
        assert_eq!(req.format(), ClientFormat::Anthropic);
        let p = plan(
            &channel("anthropic", "https://api.anthropic.com/v1"),
            Some("ak"),
            &req,
            "claude-up",
            Some("beta-1"),
            0,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::PassAnthropic);
        assert_eq!(header(&p, "anthropic-beta"), Some("beta-1"));
        let original: Value = serde_json::from_slice(CLAUDE_CODE).unwrap();
        let mut expected = original.clone();
        expected["model"] = json!("claude-up");
        assert_eq!(body(&p), expected);

        let o = plan(
            &channel("openai", "https://up/v1"),
            Some("k"),
            &req,
            "gpt-up",
            Some("beta-1"),
            0,
        )
        .unwrap();
        assert_eq!(
            o.mode,
            Mode::Translate {
                upstream: WireFormat::OpenAi,
                client: ClientFormat::Anthropic
            }
        );
        assert_eq!(header(&o, "anthropic-beta"), None);
        let b = body(&o);
        assert_eq!(b["messages"][0]["role"], "system");
        assert!(!o.request.body.windows(13).any(|w| w == b"cache_control"));
    }

    #[test]
    fn vertex_urls_bodies_and_bearer_tokens() {
        let mut g = channel("vertex", "");
        g.options.insert("project".into(), "proj-1".into());
        g.options.insert("region".into(), "us-east5".into());
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true}),
        );
        let p = plan(&g, Some("ya29.token"), &req, "gemini-2.5-pro", None, 0).unwrap();
        assert_eq!(p.request.url, "https://us-east5-aiplatform.googleapis.com/v1/projects/proj-1/locations/us-east5/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
        assert_eq!(header(&p, "authorization"), Some("Bearer ya29.token"));

        let mut a = channel("vertex-anthropic", "http://127.0.0.1:9/v1");
        a.options = g.options.clone();
        let claude = parse_anthropic(CLAUDE_CODE).unwrap();
        let p = plan(
            &a,
            Some("ya29.token"),
            &claude,
            "claude-sonnet-4@20250514",
            Some("b"),
            0,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::PassAnthropic);
        assert_eq!(p.request.url, "http://127.0.0.1:9/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4%4020250514:streamRawPredict");
        let b = body(&p);
        assert_eq!(
            (b.get("model"), b["anthropic_version"].as_str()),
            (None, Some(VERTEX_ANTHROPIC_VERSION))
        );
        assert_eq!(
            (
                header(&p, "anthropic-version"),
                header(&p, "anthropic-beta")
            ),
            (None, Some("b"))
        );
    }

    #[test]
    fn cohere_is_reached_through_the_neutral_model() {
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true}),
        );
        let p = plan(
            &channel("cohere", "https://api.cohere.com/v2"),
            Some("co"),
            &req,
            "command-a",
            None,
            0,
        )
        .unwrap();
        assert_eq!(p.request.url, "https://api.cohere.com/v2/chat");
        assert_eq!(header(&p, "authorization"), Some("Bearer co"));
        let mode = Mode::Translate {
            upstream: WireFormat::Cohere,
            client: ClientFormat::OpenAi,
        };
        let (out, pipe) = run_pipe(
            StreamPipe::new(mode, true, "command-a", "id", 1),
            include_bytes!("../../tests/fixtures/cohere/stream_tool_call.sse"),
        );
        assert!(pipe.completed() && pipe.usage().is_some());
        assert!(
            out.contains("\"tool_calls\"") && out.trim_end().ends_with("data: [DONE]"),
            "{out}"
        );
        let r = reply(
            mode,
            include_bytes!("../../tests/fixtures/cohere/text.json").to_vec(),
            "command-a",
            "id",
            1,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
    }

    #[test]
    fn bedrock_requests_are_signed_and_streams_are_event_streams() {
        let mut b = channel("bedrock", "");
        b.api_keys = vec!["AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()];
        b.options.insert("region".into(), "us-west-2".into());
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true}),
        );
        let key = b.api_keys[0].clone();
        let p = plan(
            &b,
            Some(&key),
            &req,
            "anthropic.claude-3-haiku-20240307-v1:0",
            None,
            1_440_938_160_000,
        )
        .unwrap();
        assert_eq!(p.request.url, "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream");
        assert_eq!(
            header(&p, "accept"),
            Some("application/vnd.amazon.eventstream")
        );
        assert_eq!(header(&p, "x-amz-date"), Some("20150830T123600Z"));
        let auth = header(&p, "authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-west-2/bedrock/aws4_request"
            ),
            "{auth}"
        );
        assert!(!auth.contains("wJalrXUtnFEMI"), "the secret never travels");
        assert!(body(&p)["messages"][0]["content"][0]["text"] == "hi");
        let mode = Mode::Translate {
            upstream: WireFormat::Bedrock,
            client: ClientFormat::OpenAi,
        };
        assert_eq!(p.mode, mode);
        let (out, pipe) = run_pipe(
            StreamPipe::new(mode, true, "claude", "id", 1),
            include_bytes!("../../tests/fixtures/bedrock/stream_tool_use.bin"),
        );
        assert!(pipe.completed(), "{out}");
        assert!(
            out.contains("\"tool_calls\"") && out.trim_end().ends_with("data: [DONE]"),
            "{out}"
        );
        let no_keys = plan(&b, None, &req, "m", None, 0).err().unwrap();
        assert_eq!(no_keys.code(), "channel_unavailable");
    }

    fn rich_openai_request() -> ClientRequest {
        openai_client(json!({"model":"pub","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":"what is the weather in Paris?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"18C and sunny"},
            {"role":"user","content":"and tomorrow?"}],
            "tools":[{"type":"function","function":{"name":"weather","description":"current weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],
            "tool_choice":"auto","max_tokens":200,"temperature":0.5,"top_p":0.9,"stop":["END"]}))
    }

    /// OpenAI → Anthropic → OpenAI: through Anthropic's own request decoder and back, the
    /// conversation, the tools and every parameter Anthropic supports survive.
    #[test]
    fn openai_to_anthropic_and_back_keeps_what_anthropic_supports() {
        let original = rich_openai_request();
        let p = plan(
            &channel("anthropic", "https://a/v1"),
            Some("k"),
            &original,
            "claude",
            None,
            0,
        )
        .unwrap();
        assert!(p.drops.is_empty(), "{:?}", p.drops);
        let back = anthropic::decode_request(&p.request.body).unwrap();
        let (again, _) = openai::encode_request(&back);
        let ClientRequest::OpenAi(first) = &original else {
            unreachable!()
        };
        let first = Value::Object(first.body.clone());
        assert_eq!(
            again["messages"].as_array().unwrap().len(),
            first["messages"].as_array().unwrap().len()
        );
        assert_eq!(
            again["messages"][0],
            json!({"role":"system","content":"be brief"})
        );
        assert_eq!(
            again["messages"][2]["tool_calls"][0]["function"]["name"],
            "weather"
        );
        assert_eq!(
            serde_json::from_str::<Value>(
                again["messages"][2]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            )
            .unwrap(),
            json!({"city":"Paris"})
        );
        assert_eq!(again["messages"][3]["content"], "18C and sunny");
        assert_eq!(
            again["tools"][0]["function"]["parameters"],
            first["tools"][0]["function"]["parameters"]
        );
        for k in ["max_tokens", "temperature", "top_p", "stop"] {
            assert_eq!(again[k], first[k], "{k}");
        }
    }

    /// OpenAI → X for every other format: the conversation and tools arrive, and nothing is
    /// reported dropped for a request using only what they all support.
    #[test]
    fn every_format_carries_a_plain_tool_conversation() {
        let req = rich_openai_request();
        let mut bedrock = channel("bedrock", "");
        bedrock.api_keys = vec!["AKID:SECRET".into()];
        bedrock.options.insert("region".into(), "us-east-1".into());
        for (ch, model, turns_path) in [
            (
                channel("gemini", "https://g/v1beta"),
                "gemini-2.5-flash",
                "contents",
            ),
            (channel("cohere", "https://c/v2"), "command-a", "messages"),
            (
                bedrock,
                "anthropic.claude-3-haiku-20240307-v1:0",
                "messages",
            ),
        ] {
            let key = ch.api_keys[0].clone();
            let p = plan(&ch, Some(&key), &req, model, None, 0).unwrap();
            let approximated: Vec<_> = p.drops.iter().filter(|d| !d.approximated).collect();
            assert!(
                approximated.is_empty(),
                "{}: {:?}",
                ch.provider.as_str(),
                p.drops
            );
            let b = body(&p);
            let turns = b[turns_path].as_array().unwrap();
            // Gemini merges the tool result and the next question into one user turn.
            assert!(turns.len() >= 3, "{}: {b}", ch.provider.as_str());
            assert!(
                b.to_string().contains("weather") && b.to_string().contains("Paris"),
                "{}: {b}",
                ch.provider.as_str()
            );
        }
    }

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
    fn endpoints_a_provider_cannot_serve_are_refused() {
        let req = ClientRequest::OpenAi(
            openai::parse_request(Endpoint::Embeddings, br#"{"model":"e","input":"x"}"#).unwrap(),
        );
        let e = plan(
            &channel("anthropic", "https://a/v1"),
            Some("k"),
            &req,
            "c",
            None,
            0,
        )
        .err()
        .unwrap();
        assert_eq!(e.code(), "unsupported_endpoint");
    }

    fn run_pipe(mut pipe: StreamPipe, bytes: &[u8]) -> (String, StreamPipe) {
        let mut out = Vec::new();
        pipe.push(bytes, &mut out).unwrap();
        pipe.finish(&mut out).unwrap();
        (String::from_utf8(out).unwrap(), pipe)
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
    fn mock_answers_anthropic_clients_in_their_format() {
        let req = parse_anthropic(br#"{"model":"demo","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#).unwrap();
        let (streamed, mode) = mock(&req, "mock-1", "msg_1", 1).unwrap();
        let MockReply::Chunks(chunks) = streamed else {
            panic!("a stream was asked for")
        };
        let mut pipe = StreamPipe::new(mode, true, "mock-1", "msg_1", 1);
        let mut out = Vec::new();
        for c in &chunks {
            pipe.push(c, &mut out).unwrap();
        }
        pipe.finish(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        for event in [
            "message_start",
            "content_block_delta",
            "message_delta",
            "message_stop",
        ] {
            assert!(
                out.contains(&format!("event: {event}")),
                "{event} missing in {out}"
            );
        }
        assert!(pipe.usage().is_some_and(|u| u.prompt_tokens > 0));

        let whole = parse_anthropic(
            br#"{"model":"demo","max_tokens":50,"messages":[{"role":"user","content":"Hello"}]}"#,
        )
        .unwrap();
        let (MockReply::Whole(bytes), mode) = mock(&whole, "mock-1", "msg_1", 1).unwrap() else {
            panic!()
        };
        let r = reply(mode, bytes, "mock-1", "msg_1", 1).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["role"].as_str()),
            (Some("message"), Some("assistant"))
        );
        assert!(v["content"][0]["text"].as_str().unwrap().contains("Hello"));
    }

    #[test]
    fn gemini_reply_reaches_openai_clients() {
        let mode = Mode::Translate {
            upstream: WireFormat::Gemini,
            client: ClientFormat::OpenAi,
        };
        let r = reply(
            mode,
            include_bytes!("../../tests/fixtures/gemini/function_call.json").to_vec(),
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

    #[test]
    fn errors_take_the_client_format() {
        let overloaded = RelayError::UpstreamOverloaded { retry_after: None };
        assert_eq!(error_response(ClientFormat::OpenAi, &overloaded).0, 503);
        let (status, body) = error_response(ClientFormat::Anthropic, &overloaded);
        assert_eq!(status, 529);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert!(v["error"]["message"].is_string());
    }
}
