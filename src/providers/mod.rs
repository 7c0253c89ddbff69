//! The closed set of upstream providers and what differs per provider as data: names, the
//! endpoints each serves, required options, the OpenAI-compatible presets' quirks, and how an
//! upstream's failure becomes a client-facing error. The HTTP request for each provider (URL,
//! auth, signing) is `endpoint.rs`; SigV4 and Google service-account tokens have their own
//! files; the built-in mock is `mock.rs`. Adding a provider is one variant here plus its
//! wire-format file under `formats/`; the compiler lists every match to extend.

pub mod endpoint;
pub mod gcp;
pub mod mock;
pub mod sigv4;

use crate::error::RelayError;
use crate::formats::neutral::Drop;
use crate::formats::openai::{self, Endpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI itself, or any upstream speaking its API exactly.
    OpenAi,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure,
    /// An OpenAI-compatible provider with known quirks.
    Compatible(Preset),
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (generativelanguage.googleapis.com).
    Gemini,
    /// Cohere's Chat API v2.
    Cohere,
    /// AWS Bedrock Runtime's Converse API (SigV4-signed, binary event-stream responses).
    Bedrock,
    /// Gemini models on Google Cloud Vertex AI (service-account auth, regional endpoints).
    VertexGemini,
    /// Anthropic's models on Vertex AI (`rawPredict`, Anthropic's format).
    VertexAnthropic,
    /// Built in: answers inside the Worker with a deterministic reply, for demos and tests.
    Mock,
}

/// OpenAI-compatible providers: one adapter, their differences as data ([`Quirks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    DeepSeek,
    Groq,
    Mistral,
    Together,
    Fireworks,
    Xai,
    OpenRouter,
    Perplexity,
    Ollama,
    Vllm,
}

/// How an OpenAI-format upstream departs from OpenAI.
#[derive(Debug)]
pub struct Quirks {
    pub name: &'static str,
    pub default_base_url: Option<&'static str>,
    /// Request fields it rejects or ignores: removed and reported as dropped.
    pub unsupported: &'static [&'static str],
    /// Fields it knows under another name: renamed, nothing lost.
    pub renames: &'static [(&'static str, &'static str)],
    /// Whether it honours `stream_options.include_usage` (else the relay must not send it).
    pub stream_usage: bool,
    pub needs_key: bool,
}

const OPENAI: Quirks = Quirks {
    name: "openai",
    default_base_url: Some("https://api.openai.com/v1"),
    unsupported: &[],
    renames: &[],
    stream_usage: true,
    needs_key: true,
};

const AZURE: Quirks = Quirks {
    name: "azure",
    default_base_url: None,
    ..OPENAI
};

/// `ALL` lists every provider once, each at its `position`, and nothing lies past the end.
const _: () = {
    let mut i = 0;
    while i < ProviderKind::ALL.len() {
        assert!(ProviderKind::ALL[i].position() == i);
        i += 1;
    }
    let mut j = 0;
    while j < Preset::ALL.len() {
        assert!(Preset::ALL[j].position() == j);
        j += 1;
    }
    assert!(ProviderKind::Mock.position() == ProviderKind::ALL.len() - 1);
    assert!(Preset::Vllm.position() == Preset::ALL.len() - 1);
};

impl Preset {
    /// Where a preset stands in [`Preset::ALL`]; exhaustive, as `ProviderKind::position`.
    const fn position(self) -> usize {
        match self {
            Preset::DeepSeek => 0,
            Preset::Groq => 1,
            Preset::Mistral => 2,
            Preset::Together => 3,
            Preset::Fireworks => 4,
            Preset::Xai => 5,
            Preset::OpenRouter => 6,
            Preset::Perplexity => 7,
            Preset::Ollama => 8,
            Preset::Vllm => 9,
        }
    }

    pub const ALL: [Preset; 10] = [
        Preset::DeepSeek,
        Preset::Groq,
        Preset::Mistral,
        Preset::Together,
        Preset::Fireworks,
        Preset::Xai,
        Preset::OpenRouter,
        Preset::Perplexity,
        Preset::Ollama,
        Preset::Vllm,
    ];

    pub fn quirks(&self) -> &'static Quirks {
        const DEEPSEEK: Quirks = Quirks {
            name: "deepseek",
            default_base_url: Some("https://api.deepseek.com/v1"),
            unsupported: &[
                "n",
                "logit_bias",
                "parallel_tool_calls",
                "service_tier",
                "store",
                "metadata",
            ],
            ..OPENAI
        };
        const GROQ: Quirks = Quirks {
            name: "groq",
            default_base_url: Some("https://api.groq.com/openai/v1"),
            unsupported: &[
                "logprobs",
                "top_logprobs",
                "logit_bias",
                "n",
                "store",
                "metadata",
                "service_tier",
            ],
            ..OPENAI
        };
        const MISTRAL: Quirks = Quirks {
            name: "mistral",
            default_base_url: Some("https://api.mistral.ai/v1"),
            unsupported: &[
                "logit_bias",
                "logprobs",
                "top_logprobs",
                "user",
                "store",
                "metadata",
                "service_tier",
            ],
            renames: &[
                ("seed", "random_seed"),
                ("max_completion_tokens", "max_tokens"),
            ],
            // Mistral sends usage in its last chunk unasked, and rejects stream_options.
            stream_usage: false,
            ..OPENAI
        };
        const TOGETHER: Quirks = Quirks {
            name: "together",
            default_base_url: Some("https://api.together.xyz/v1"),
            unsupported: &["store", "metadata", "service_tier"],
            ..OPENAI
        };
        const FIREWORKS: Quirks = Quirks {
            name: "fireworks",
            default_base_url: Some("https://api.fireworks.ai/inference/v1"),
            unsupported: &["store", "metadata", "service_tier"],
            ..OPENAI
        };
        const XAI: Quirks = Quirks {
            name: "xai",
            default_base_url: Some("https://api.x.ai/v1"),
            unsupported: &["logit_bias", "store", "metadata", "service_tier"],
            ..OPENAI
        };
        const OPENROUTER: Quirks = Quirks {
            name: "openrouter",
            default_base_url: Some("https://openrouter.ai/api/v1"),
            ..OPENAI
        };
        const PERPLEXITY: Quirks = Quirks {
            name: "perplexity",
            default_base_url: Some("https://api.perplexity.ai"),
            unsupported: &[
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "logit_bias",
                "logprobs",
                "top_logprobs",
                "n",
                "seed",
                "user",
                "store",
                "metadata",
                "service_tier",
            ],
            // Perplexity puts usage in every chunk unasked.
            stream_usage: false,
            ..OPENAI
        };
        const OLLAMA: Quirks = Quirks {
            name: "ollama",
            default_base_url: Some("http://127.0.0.1:11434/v1"),
            unsupported: &[
                "logit_bias",
                "logprobs",
                "top_logprobs",
                "n",
                "user",
                "store",
                "metadata",
                "service_tier",
                "parallel_tool_calls",
            ],
            needs_key: false,
            ..OPENAI
        };
        const VLLM: Quirks = Quirks {
            name: "vllm",
            default_base_url: Some("http://127.0.0.1:8000/v1"),
            unsupported: &["store", "metadata", "service_tier"],
            needs_key: false,
            ..OPENAI
        };
        match self {
            Preset::DeepSeek => &DEEPSEEK,
            Preset::Groq => &GROQ,
            Preset::Mistral => &MISTRAL,
            Preset::Together => &TOGETHER,
            Preset::Fireworks => &FIREWORKS,
            Preset::Xai => &XAI,
            Preset::OpenRouter => &OPENROUTER,
            Preset::Perplexity => &PERPLEXITY,
            Preset::Ollama => &OLLAMA,
            Preset::Vllm => &VLLM,
        }
    }
}

impl ProviderKind {
    /// Every provider, in the order listings show them.
    pub const ALL: [ProviderKind; 19] = [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Compatible(Preset::DeepSeek),
        ProviderKind::Compatible(Preset::Groq),
        ProviderKind::Compatible(Preset::Mistral),
        ProviderKind::Compatible(Preset::Together),
        ProviderKind::Compatible(Preset::Fireworks),
        ProviderKind::Compatible(Preset::Xai),
        ProviderKind::Compatible(Preset::OpenRouter),
        ProviderKind::Compatible(Preset::Perplexity),
        ProviderKind::Compatible(Preset::Ollama),
        ProviderKind::Compatible(Preset::Vllm),
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Cohere,
        ProviderKind::Bedrock,
        ProviderKind::VertexGemini,
        ProviderKind::VertexAnthropic,
        ProviderKind::Mock,
    ];

    /// Where a provider stands in [`ProviderKind::ALL`]. The match is exhaustive, so a new
    /// provider does not compile until it is given a place, and the check below fails the
    /// build until `ALL` holds it there.
    const fn position(self) -> usize {
        match self {
            ProviderKind::OpenAi => 0,
            ProviderKind::Azure => 1,
            ProviderKind::Compatible(preset) => 2 + preset.position(),
            ProviderKind::Anthropic => 12,
            ProviderKind::Gemini => 13,
            ProviderKind::Cohere => 14,
            ProviderKind::Bedrock => 15,
            ProviderKind::VertexGemini => 16,
            ProviderKind::VertexAnthropic => 17,
            ProviderKind::Mock => 18,
        }
    }

    pub fn parse(name: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|p| p.as_str() == name)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Compatible(p) => p.quirks().name,
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Cohere => "cohere",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::VertexGemini => "vertex",
            ProviderKind::VertexAnthropic => "vertex-anthropic",
            ProviderKind::Mock => "mock",
        }
    }

    /// Options a channel of this provider cannot do without.
    pub fn required_options(&self) -> &'static [&'static str] {
        match self {
            ProviderKind::VertexGemini | ProviderKind::VertexAnthropic => &["project", "region"],
            ProviderKind::Bedrock => &["region"],
            ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::Compatible(_)
            | ProviderKind::Anthropic
            | ProviderKind::Gemini
            | ProviderKind::Cohere
            | ProviderKind::Mock => &[],
        }
    }

    /// The base URL follows from the channel's options when it gives none.
    pub fn derives_base_url(&self) -> bool {
        !self.required_options().is_empty()
    }

    /// Vertex AI channels hold service-account key files, not API keys.
    pub fn uses_service_accounts(&self) -> bool {
        matches!(
            self,
            ProviderKind::VertexGemini | ProviderKind::VertexAnthropic
        )
    }

    pub fn names() -> Vec<&'static str> {
        ProviderKind::ALL.iter().map(ProviderKind::as_str).collect()
    }

    /// The OpenAI-format family's differences from OpenAI; `None` for other formats.
    pub fn openai_quirks(&self) -> Option<&'static Quirks> {
        match self {
            ProviderKind::OpenAi | ProviderKind::Mock => Some(&OPENAI),
            ProviderKind::Azure => Some(&AZURE),
            ProviderKind::Compatible(p) => Some(p.quirks()),
            ProviderKind::Anthropic
            | ProviderKind::Gemini
            | ProviderKind::Cohere
            | ProviderKind::Bedrock
            | ProviderKind::VertexGemini
            | ProviderKind::VertexAnthropic => None,
        }
    }

    /// Whether requests leave the Worker (and so need a base URL).
    pub fn needs_network(&self) -> bool {
        match self {
            ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::Compatible(_)
            | ProviderKind::Anthropic
            | ProviderKind::Gemini
            | ProviderKind::Cohere
            | ProviderKind::Bedrock
            | ProviderKind::VertexGemini
            | ProviderKind::VertexAnthropic => true,
            ProviderKind::Mock => false,
        }
    }

    /// The base URL used when a channel gives none (Azure has none: it is per resource).
    pub fn default_base_url(&self) -> Option<&'static str> {
        match self {
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            ProviderKind::Cohere => Some("https://api.cohere.com/v2"),
            // Derived from the `region` option when the channel gives none.
            ProviderKind::VertexGemini | ProviderKind::VertexAnthropic | ProviderKind::Bedrock => {
                None
            }
            ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::Compatible(_)
            | ProviderKind::Mock => self
                .openai_quirks()
                .and_then(|q| q.default_base_url)
                .filter(|_| *self != ProviderKind::Mock),
        }
    }

    /// Whether it needs an upstream API key to be usable (local Ollama and vLLM do not).
    pub fn needs_api_key(&self) -> bool {
        self.needs_network() && self.openai_quirks().is_none_or(|q| q.needs_key)
    }

    /// Channel `options` this provider understands.
    pub fn option_names(&self) -> &'static [&'static str] {
        match self {
            ProviderKind::Azure => &["api_version"],
            ProviderKind::VertexGemini | ProviderKind::VertexAnthropic => &["project", "region"],
            ProviderKind::Bedrock => &["region"],
            ProviderKind::OpenAi
            | ProviderKind::Compatible(_)
            | ProviderKind::Anthropic
            | ProviderKind::Gemini
            | ProviderKind::Cohere
            | ProviderKind::Mock => &[],
        }
    }

    pub fn supports(&self, endpoint: Endpoint) -> bool {
        match (self, endpoint) {
            (ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Mock, _) => true,
            (ProviderKind::Compatible(p), Endpoint::Embeddings) => {
                matches!(
                    p,
                    Preset::Mistral
                        | Preset::Together
                        | Preset::Fireworks
                        | Preset::Ollama
                        | Preset::Vllm
                )
            }
            (ProviderKind::Compatible(_), Endpoint::ChatCompletions | Endpoint::Completions) => {
                true
            }
            (
                ProviderKind::Anthropic
                | ProviderKind::Gemini
                | ProviderKind::Cohere
                | ProviderKind::Bedrock
                | ProviderKind::VertexGemini
                | ProviderKind::VertexAnthropic,
                Endpoint::ChatCompletions,
            ) => true,
            (
                ProviderKind::Anthropic
                | ProviderKind::Gemini
                | ProviderKind::Cohere
                | ProviderKind::Bedrock
                | ProviderKind::VertexGemini
                | ProviderKind::VertexAnthropic,
                Endpoint::Completions | Endpoint::Embeddings,
            ) => false,
        }
    }
}

/// The Azure OpenAI API version used when a channel sets none (the latest GA version).
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Adjust an OpenAI-format body to a provider's quirks; returns what had to be dropped.
pub fn apply_quirks(
    body: &mut serde_json::Map<String, serde_json::Value>,
    quirks: &Quirks,
) -> Vec<Drop> {
    let mut drops = Vec::new();
    for field in quirks.unsupported {
        if body.remove(*field).is_some_and(|v| !v.is_null()) {
            drops.push(Drop::dropped(field));
        }
    }
    for (from, to) in quirks.renames {
        if let Some(v) = body.remove(*from) {
            body.entry(to.to_string()).or_insert(v);
        }
    }
    if !quirks.stream_usage {
        let asked = body
            .remove("stream_options")
            .and_then(|o| o.get("include_usage").and_then(serde_json::Value::as_bool))
            .unwrap_or(false);
        if asked {
            drops.push(Drop::dropped("stream_options.include_usage"));
        }
    }
    drops
}

/// An HTTP request ready for `fetch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// An upstream's non-2xx reply as the client's error, plus the detail for the server log.
/// Secrets (the channel's keys, and anything shaped like an API key) are scrubbed from both.
pub fn upstream_failure(
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
    secrets: &[String],
) -> (RelayError, String) {
    // OpenAI, Anthropic and Gemini put the message at `error.message`; AWS at `message`.
    let mut parsed = openai::parse_error_body(body);
    if parsed.message.is_none() {
        parsed.message = crate::formats::bedrock::parse_error_body(body);
    }
    let raw = parsed
        .message
        .clone()
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    let message = scrub_secrets(&raw, secrets);
    let log = format!("upstream status {status}: {message}");
    let error = match status {
        // The caller's request was at fault: keep the upstream's words so the caller can fix it.
        400 | 409 | 413 | 415 | 422 => RelayError::UpstreamInvalidRequest {
            status,
            message: if message.is_empty() {
                format!("The upstream provider rejected the request (status {status}).")
            } else {
                message
            },
            param: parsed.param,
        },
        // The channel's key or permissions: the operator's problem; the client's key was fine.
        401 | 403 => RelayError::UpstreamAuthFailed,
        408 => RelayError::UpstreamTimeout { after_ms: 0 },
        429 => RelayError::UpstreamRateLimited {
            retry_after: retry_after.filter(|v| is_retry_after(v)),
        },
        503 | 529 => RelayError::UpstreamOverloaded {
            retry_after: retry_after.filter(|v| is_retry_after(v)),
        },
        // 404 means a wrong base URL or upstream model name in the channel: also the operator's.
        _ => RelayError::UpstreamError { status },
    };
    (error, log)
}

/// `Retry-After` is either delta-seconds or an HTTP date; anything else is not passed on.
fn is_retry_after(v: &str) -> bool {
    let v = v.trim();
    !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ,:-".contains(c))
}

/// Replace the channel's keys, and any token that looks like an API key (`sk-…`, even masked
/// as OpenAI does in "Incorrect API key provided: sk-abc*****wxyz"), with `[redacted]`.
pub fn scrub_secrets(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret.as_str(), "[redacted]");
    }
    out.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .map(|word| {
            let trimmed = word.trim_end_matches(|c: char| {
                c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '.'
            });
            let looks_like_key = trimmed.len() >= 8
                && (trimmed.starts_with("sk-")
                    || trimmed.starts_with("sk_")
                    || trimmed.starts_with("key-"))
                && trimmed
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_*.".contains(c));
            if looks_like_key {
                format!("[redacted]{}", &word[trimmed.len()..])
            } else {
                word.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = ProviderKind::ALL;
        for p in &all {
            assert_eq!(ProviderKind::parse(p.as_str()), Some(*p));
        }
        assert!(all.len() >= 15, "10 presets and 5 others");
        assert_eq!(ProviderKind::parse("OpenAI"), None);
    }

    #[test]
    fn failures_map_to_client_errors() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-up-se*****cret. You can find your API key at x.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let (e, log) = upstream_failure(401, body, None, &["sk-up-secret".into()]);
        assert_eq!((e.status(), e.code()), (502, "upstream_auth_failed"));
        assert!(!e.body().contains("sk-up"));
        assert!(!log.contains("sk-up-se"), "{log}");
        let (e, _) = upstream_failure(
            400,
            br#"{"error":{"message":"bad max_tokens","param":"max_tokens"}}"#,
            None,
            &[],
        );
        assert_eq!(
            (e.status(), e.param(), e.message()),
            (400, Some("max_tokens"), "bad max_tokens".to_string())
        );
        let (e, _) = upstream_failure(429, b"{}", Some("7".into()), &[]);
        assert_eq!(
            (e.status(), e.headers()),
            (429, vec![("retry-after", "7".to_string())])
        );
        let (e, _) = upstream_failure(429, b"{}", Some("7\r\nx: y".into()), &[]);
        assert!(e.headers().is_empty());
        assert_eq!(upstream_failure(500, b"<html>", None, &[]).0.status(), 502);
        let overloaded =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            upstream_failure(529, overloaded, None, &[]).0.code(),
            "upstream_overloaded"
        );
        assert_eq!(
            upstream_failure(404, b"", None, &[]).0.code(),
            "upstream_error"
        );
    }

    #[test]
    fn scrubbing_catches_exact_and_key_shaped_tokens() {
        let s = scrub_secrets(
            "key sk-proj-AbC123xyz, and MYSECRETVALUE here",
            &["MYSECRETVALUE".into()],
        );
        assert_eq!(s, "key [redacted], and [redacted] here");
        assert_eq!(scrub_secrets("no secrets here", &[]), "no secrets here");
    }
}
