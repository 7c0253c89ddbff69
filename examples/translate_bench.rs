//! Host micro-benchmark of the translation core: what one request, one whole reply and one
//! stream chunk cost the relay, per upstream format, against the targets of a Worker's budget
//! (≤ 0.2 ms per request, ≤ 10 µs per stream chunk).
//!
//!     cargo run --release --example translate_bench
//!
//! Each figure is the median (and 90th percentile) of 2,000 timed runs after 200 untimed ones.
//! The host is not the Workers runtime: V8 running the same code as WASM is slower by a factor
//! (typically 1.5–3×), so read these as the relay's own share, to compare formats and catch
//! regressions, not as the latency a client sees.
//!
//! - request: an OpenAI client body → `endpoint::plan` for the channel's provider (validation,
//!   the neutral model, the provider's encoder, and the serialised upstream body).
//! - reply: the provider's recorded reply → `translate::reply` to an OpenAI client.
//! - chunk: the provider's recorded stream through a `StreamPipe` to an OpenAI client, one
//!   network chunk per upstream event, divided by the number of events.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use edgerelay::formats::client::{ClientFormat, ClientRequest};
use edgerelay::formats::openai::{self, Endpoint};
use edgerelay::formats::translate::{self, Mode, StreamPipe, WireFormat};
use edgerelay::governance::grant::Status;
use edgerelay::providers::endpoint;
use edgerelay::providers::ProviderKind;
use edgerelay::routing::channel::Channel;

const WARMUP: usize = 200;
const ITERATIONS: usize = 2_000;
const REQUEST_TARGET_US: f64 = 200.0;
const CHUNK_TARGET_US: f64 = 10.0;
const NOW_MS: i64 = 1_700_000_000_000;

/// A typical agent turn: system prompt, a short history with a tool call and its result, and
/// two tools with JSON-schema parameters.
const CLIENT_BODY: &str = r#"{
  "model": "relay-model",
  "stream": false,
  "temperature": 0.2,
  "max_tokens": 1024,
  "messages": [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly and use the tools when a question needs live data."},
    {"role": "user", "content": "What's the weather in Paris, and should I take an umbrella?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\":14,\"conditions\":\"light rain\",\"precipitation_probability\":0.8}"},
    {"role": "user", "content": [{"type": "text", "text": "And tomorrow? Give me the forecast as a list."}]}
  ],
  "tools": [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"], "additionalProperties": false}}},
    {"type": "function", "function": {"name": "get_forecast", "description": "Forecast for the next days", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"]}}}
  ],
  "tool_choice": "auto"
}"#;

/// An OpenAI chat completion (there is no recorded one among the fixtures): the baseline reply.
const OPENAI_REPLY: &str = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}"#;

struct Provider {
    name: &'static str,
    kind: ProviderKind,
    key: &'static str,
    reply: &'static [u8],
    streams: &'static [(&'static str, &'static [u8])],
}

const PROVIDERS: &[Provider] = &[
    Provider {
        name: "openai (pass-through)",
        kind: ProviderKind::OpenAi,
        key: "sk-bench",
        reply: OPENAI_REPLY.as_bytes(),
        streams: &[
            (
                "text",
                include_bytes!("../tests/fixtures/openai/stream_text_usage.sse"),
            ),
            (
                "tools",
                include_bytes!("../tests/fixtures/openai/stream_tool_calls.sse"),
            ),
        ],
    },
    Provider {
        name: "anthropic",
        kind: ProviderKind::Anthropic,
        key: "sk-ant-bench",
        reply: include_bytes!("../tests/fixtures/anthropic/reply_text.json"),
        streams: &[
            (
                "text",
                include_bytes!("../tests/fixtures/anthropic/stream_text.sse"),
            ),
            (
                "tools",
                include_bytes!("../tests/fixtures/anthropic/stream_tool_use.sse"),
            ),
        ],
    },
    Provider {
        name: "gemini",
        kind: ProviderKind::Gemini,
        key: "gm-bench",
        reply: include_bytes!("../tests/fixtures/gemini/reply_text.json"),
        streams: &[
            (
                "text",
                include_bytes!("../tests/fixtures/gemini/stream_text.sse"),
            ),
            (
                "tools",
                include_bytes!("../tests/fixtures/gemini/stream_function_call.sse"),
            ),
        ],
    },
    Provider {
        name: "cohere",
        kind: ProviderKind::Cohere,
        key: "co-bench",
        reply: include_bytes!("../tests/fixtures/cohere/reply_text.json"),
        streams: &[
            (
                "text",
                include_bytes!("../tests/fixtures/cohere/stream_text.sse"),
            ),
            (
                "tools",
                include_bytes!("../tests/fixtures/cohere/stream_tool_call.sse"),
            ),
        ],
    },
    Provider {
        name: "bedrock",
        kind: ProviderKind::Bedrock,
        key: "AKIABENCH:bench-secret",
        reply: include_bytes!("../tests/fixtures/bedrock/reply_text.json"),
        streams: &[
            (
                "text",
                include_bytes!("../tests/fixtures/bedrock/stream_text.bin"),
            ),
            (
                "tools",
                include_bytes!("../tests/fixtures/bedrock/stream_tool_use.bin"),
            ),
        ],
    },
];

/// Median and 90th percentile of `op`, in microseconds.
fn measure(mut op: impl FnMut()) -> (f64, f64) {
    for _ in 0..WARMUP {
        op();
    }
    let mut samples: Vec<f64> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[ITERATIONS / 2], samples[ITERATIONS * 9 / 10])
}

fn channel(kind: ProviderKind) -> Channel {
    Channel {
        id: "ch-bench".into(),
        name: "bench".into(),
        provider: kind,
        base_url: kind
            .default_base_url()
            .unwrap_or("https://up.example/v1")
            .into(),
        api_keys: vec![],
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

/// The stream as the network would deliver it: one chunk per upstream event (SSE events end
/// at a blank line; AWS event-stream frames start with their length).
fn event_chunks(stream: &[u8], wire: WireFormat) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let end = match wire {
            WireFormat::Bedrock => rest
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .unwrap_or(rest.len()),
            WireFormat::OpenAi
            | WireFormat::Anthropic
            | WireFormat::Gemini
            | WireFormat::Cohere => {
                let text = String::from_utf8_lossy(rest);
                let lf = text.find("\n\n").map(|i| i + 2);
                let crlf = text.find("\r\n\r\n").map(|i| i + 4);
                lf.into_iter().chain(crlf).min().unwrap_or(rest.len())
            }
        };
        let (chunk, tail) = rest.split_at(end.min(rest.len()));
        if !chunk.iter().all(u8::is_ascii_whitespace) {
            chunks.push(chunk);
        }
        rest = tail;
    }
    chunks
}

fn mode_to_openai_client(kind: ProviderKind) -> Mode {
    match kind.wire_format() {
        WireFormat::OpenAi => Mode::PassOpenAi,
        upstream => Mode::Translate {
            upstream,
            client: ClientFormat::OpenAi,
        },
    }
}

fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "ok"
    } else {
        "OVER"
    }
}

fn row(what: &str, (median, p90): (f64, f64), target: f64) {
    println!(
        "{what:<44} {median:>9.2} {p90:>9.2}   ≤ {target:<5} {}",
        verdict(p90, target)
    );
}

fn main() {
    println!(
        "edgerelay translate_bench: host, release profile; median and p90 of {ITERATIONS} runs \
         after {WARMUP} warm-up, in µs\n"
    );
    println!(
        "{:<44} {:>9} {:>9}   {:<7} p90",
        "", "median", "p90", "target"
    );

    println!("request: OpenAI client body → plan (parse, neutral, encode, serialise)");
    for p in PROVIDERS {
        let ch = channel(p.kind);
        let timing = measure(|| {
            let parsed = openai::parse_request(Endpoint::ChatCompletions, CLIENT_BODY.as_bytes())
                .expect("the benchmark body is valid");
            let req = ClientRequest::OpenAi(parsed);
            let plan = endpoint::plan(
                &ch.upstream(),
                Some(p.key),
                &req,
                "upstream-model",
                None,
                NOW_MS,
            )
            .expect("plan");
            black_box(plan.request.body.len());
        });
        row(&format!("  {}", p.name), timing, REQUEST_TARGET_US);
    }

    println!("\nreply: recorded reply → OpenAI client body");
    for p in PROVIDERS {
        let mode = mode_to_openai_client(p.kind);
        let timing = measure(|| {
            let reply = translate::reply(mode, p.reply.to_vec(), "relay-model", "chatcmpl-1", 1)
                .expect("the fixture is a valid reply");
            black_box(reply.body.len());
        });
        row(
            &format!("  {} ({} B)", p.name, p.reply.len()),
            timing,
            REQUEST_TARGET_US,
        );
    }

    println!("\nstream: per upstream event, recorded stream → OpenAI client chunks");
    for p in PROVIDERS {
        let mode = mode_to_openai_client(p.kind);
        for (scenario, stream) in p.streams {
            let chunks = event_chunks(stream, p.kind.wire_format());
            let events = chunks.len() as f64;
            let mut out = Vec::with_capacity(16 * 1024);
            let (median, p90) = measure(|| {
                out.clear();
                let mut pipe = StreamPipe::new(mode, true, "relay-model", "chatcmpl-1", 1);
                for c in &chunks {
                    pipe.push(c, &mut out).expect("push");
                }
                pipe.finish(&mut out).expect("finish");
                black_box(pipe.completed());
            });
            row(
                &format!("  {} {scenario} ({} events)", p.name, chunks.len()),
                (median / events, p90 / events),
                CHUNK_TARGET_US,
            );
        }
    }
}
