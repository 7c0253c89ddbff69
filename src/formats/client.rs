//! A validated client request in the API it came in on (OpenAI or Anthropic), what the relay
//! reads off it (model, stream, maximum output, prompt size), and errors in that API's shape.

use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::formats::neutral::{estimate_tokens, ChatRequest, Drop};
use crate::formats::openai::{self, Endpoint, InboundRequest};
use crate::formats::{anthropic_inbound, claude};

/// The API a client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    OpenAi,
    Anthropic,
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
    pub fn neutral(&self, upstream_model: &str) -> (ChatRequest, Vec<Drop>) {
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
    let neutral = anthropic_inbound::decode_request(bytes)?;
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
        .or_insert(json!(claude::DEFAULT_MAX_TOKENS));
    body.remove("stream");
    parse_anthropic(&serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
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
            (status, anthropic_inbound::error_body(err).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
