//! The HTTP request each provider wants for a client request: the URL, the auth and version
//! headers, the body (passed through when the formats match, translated otherwise, with the
//! provider's quirks applied), and the signature where a provider signs (Bedrock's SigV4).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::error::RelayError;
use crate::formats::client::{ClientFormat, ClientRequest};
use crate::formats::neutral::Drop;
use crate::formats::translate::{Mode, WireFormat};
use crate::formats::{anthropic, bedrock, cohere, gemini, openai};
use crate::providers::{self, ProviderKind, UpstreamRequest};

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

/// The request to an Anthropic channel's own token counter.
pub fn count_tokens_request(
    channel: &Upstream<'_>,
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

/// What planning a request needs of its channel: the provider, where it is, and its settings.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    pub provider: ProviderKind,
    /// The channel's base URL; empty where the provider derives one (Vertex, Bedrock).
    pub base_url: &'a str,
    /// Provider-specific settings (`region`, `project`, `api_version`).
    pub options: &'a BTreeMap<String, String>,
}

impl Upstream<'_> {
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }
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
    channel: &Upstream<'_>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::client::parse_anthropic;
    use crate::formats::openai::Endpoint;
    use crate::formats::translate::{fidelity_headers, reply, run_pipe, StreamPipe};

    /// A channel as a test holds it: owned, with one upstream key.
    struct Ch {
        provider: ProviderKind,
        base_url: String,
        api_keys: Vec<String>,
        options: BTreeMap<String, String>,
    }

    impl Ch {
        fn up(&self) -> Upstream<'_> {
            Upstream {
                provider: self.provider,
                base_url: &self.base_url,
                options: &self.options,
            }
        }
    }

    fn channel(provider: &str, base_url: &str) -> Ch {
        Ch {
            provider: ProviderKind::parse(provider).unwrap(),
            base_url: base_url.into(),
            api_keys: vec!["up-key".into()],
            options: BTreeMap::new(),
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
        include_bytes!("../../tests/fixtures/anthropic/request_claude_code.json");

    #[test]
    fn openai_to_openai_passes_through_with_model_rewritten() {
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true,"x_custom":{"a":1}}),
        );
        let plan = plan(
            &channel("openai", "https://up.example/v1").up(),
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
            &channel("mistral", "https://api.mistral.ai/v1").up(),
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
            &channel("groq", "https://api.groq.com/openai/v1").up(),
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
            &channel("ollama", "http://127.0.0.1:11434/v1").up(),
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
        let p = plan(&azure.up(), Some("az-key"), &req, "my-gpt4o", None, 0).unwrap();
        assert_eq!(p.request.url, "https://res.openai.azure.com/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21");
        assert_eq!(
            (header(&p, "api-key"), header(&p, "authorization")),
            (Some("az-key"), None)
        );
        azure
            .options
            .insert("api_version".into(), "2025-01-01-preview".into());
        let p = plan(&azure.up(), Some("az-key"), &req, "my-gpt4o", None, 0).unwrap();
        assert!(p.request.url.ends_with("?api-version=2025-01-01-preview"));
    }

    #[test]
    fn openai_client_to_anthropic_and_gemini_is_translated() {
        let req = openai_client(
            json!({"model":"pub","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"seed":3}),
        );
        let p = plan(
            &channel("anthropic", "https://api.anthropic.com/v1").up(),
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
            &channel("gemini", "https://generativelanguage.googleapis.com/v1beta").up(),
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
            &channel("anthropic", "https://api.anthropic.com/v1").up(),
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
            &channel("openai", "https://up/v1").up(),
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
        let p = plan(&g.up(), Some("ya29.token"), &req, "gemini-2.5-pro", None, 0).unwrap();
        assert_eq!(p.request.url, "https://us-east5-aiplatform.googleapis.com/v1/projects/proj-1/locations/us-east5/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
        assert_eq!(header(&p, "authorization"), Some("Bearer ya29.token"));

        let mut a = channel("vertex-anthropic", "http://127.0.0.1:9/v1");
        a.options = g.options.clone();
        let claude = parse_anthropic(CLAUDE_CODE).unwrap();
        let p = plan(
            &a.up(),
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
            &channel("cohere", "https://api.cohere.com/v2").up(),
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
            include_bytes!("../../tests/fixtures/cohere/reply_text.json").to_vec(),
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
            &b.up(),
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
        let no_keys = plan(&b.up(), None, &req, "m", None, 0).err().unwrap();
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
            &channel("anthropic", "https://a/v1").up(),
            Some("k"),
            &original,
            "claude",
            None,
            0,
        )
        .unwrap();
        assert!(p.drops.is_empty(), "{:?}", p.drops);
        let back = crate::formats::anthropic_inbound::decode_request(&p.request.body).unwrap();
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
            let p = plan(&ch.up(), Some(&key), &req, model, None, 0).unwrap();
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
    fn endpoints_a_provider_cannot_serve_are_refused() {
        let req = ClientRequest::OpenAi(
            openai::parse_request(Endpoint::Embeddings, br#"{"model":"e","input":"x"}"#).unwrap(),
        );
        let e = plan(
            &channel("anthropic", "https://a/v1").up(),
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

    /// Claude Code's current default request: a `system` message inside `messages` (beta
    /// `mid-conversation-system-2026-04-07`), adaptive thinking at an effort, context management.
    const CLAUDE_CODE_MID_SYSTEM: &[u8] =
        include_bytes!("../../tests/fixtures/anthropic/request_claude_code_mid_system.json");

    #[test]
    fn claude_code_system_messages_pass_through_and_keep_their_place_where_they_can() {
        let req = parse_anthropic(CLAUDE_CODE_MID_SYSTEM).unwrap();
        const NOTE: &str = "The user switched to plan mode: propose changes before making them.";
        // Pass-through: byte for byte but for the model, the beta header forwarded.
        let beta = Some("mid-conversation-system-2026-04-07,context-management-2025-06-27");
        let p = plan(
            &channel("anthropic", "https://api.anthropic.com/v1").up(),
            Some("ak"),
            &req,
            "claude-up",
            beta,
            0,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::PassAnthropic);
        let mut expected: Value = serde_json::from_slice(CLAUDE_CODE_MID_SYSTEM).unwrap();
        expected["model"] = json!("claude-up");
        assert_eq!(body(&p), expected);
        assert_eq!(header(&p, "anthropic-beta"), beta);
        assert!(p.drops.is_empty());

        // OpenAI keeps system messages anywhere: in place, nothing approximated.
        let o = plan(
            &channel("openai", "https://up/v1").up(),
            Some("k"),
            &req,
            "gpt-up",
            beta,
            0,
        )
        .unwrap();
        let b = body(&o);
        let roles: Vec<&str> = b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["system", "system", "user", "system", "assistant", "tool"]
        );
        assert_eq!(b["messages"][3]["content"], NOTE);
        assert_eq!(b["reasoning_effort"], "high");
        assert!(
            !o.drops.iter().any(|d| d.field == "messages.system"),
            "{:?}",
            o.drops
        );

        // Gemini keeps system text apart: it joins the system instruction, approximated.
        let g = plan(
            &channel("gemini", "https://g/v1beta").up(),
            Some("k"),
            &req,
            "gemini-up",
            beta,
            0,
        )
        .unwrap();
        let b = body(&g);
        let parts = b["systemInstruction"]["parts"].as_array().unwrap();
        assert_eq!(parts.last().unwrap()["text"], NOTE);
        assert!(!b["contents"].to_string().contains(NOTE));
        assert!(
            g.drops.contains(&Drop::approximated("messages.system")),
            "{:?}",
            g.drops
        );
        let headers = fidelity_headers(&g.drops);
        assert!(headers
            .iter()
            .any(|(n, v)| *n == "x-relay-approximated" && v.contains("messages.system")));
    }
}
