//! The built-in mock provider: answers inside the Worker, deterministically, in OpenAI's wire
//! format, with realistic `usage`. Its output goes through the same pass-through and usage
//! accounting as a real upstream's, so the demo exercises the real path.

use serde_json::{json, Value};

use crate::error::RelayError;
use crate::formats::client::{ClientFormat, ClientRequest};
use crate::formats::neutral::estimate_tokens;
use crate::formats::openai::{self, Endpoint, InboundRequest};
use crate::formats::sse;
use crate::formats::translate::{Mode, WireFormat};
use crate::support::crypto::sha256;

/// Words per streamed chunk: small enough that a short reply still arrives in several chunks.
const WORDS_PER_CHUNK: usize = 3;

/// The reply text: the same request always gets the same answer.
pub fn reply_text(req: &InboundRequest) -> String {
    let said = last_user_text(req);
    let said: String = said.chars().take(120).collect();
    if said.is_empty() {
        "Hello from edgerelay's mock provider! This reply is deterministic, so demos and tests can rely on it.".to_string()
    } else {
        format!("Hello from edgerelay's mock provider! You said: \"{said}\". This reply is deterministic, so demos and tests can rely on it.")
    }
}

fn last_user_text(req: &InboundRequest) -> String {
    match req.endpoint {
        Endpoint::ChatCompletions => {
            let messages = req.body.get("messages").and_then(Value::as_array);
            let last_user = messages.and_then(|m| {
                m.iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            });
            match last_user.and_then(|m| m.get("content")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            }
        }
        Endpoint::Completions => match req.body.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        },
        Endpoint::Embeddings => String::new(),
    }
}

fn prompt_tokens(req: &InboundRequest) -> u64 {
    // Chat formats add a few tokens of framing per message, as OpenAI's counts do.
    let messages = req
        .body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as u64;
    estimate_tokens(req.prompt_bytes) + 3 * messages + if messages > 0 { 3 } else { 0 }
}

fn usage_json(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

/// A non-stream reply body for `endpoint`.
pub fn reply(req: &InboundRequest, upstream_model: &str, id: &str, created_s: i64) -> Vec<u8> {
    let text = reply_text(req);
    let prompt = prompt_tokens(req);
    let completion = estimate_tokens(text.len());
    let body = match req.endpoint {
        Endpoint::ChatCompletions => json!({
            "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created_s, "model": upstream_model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage_json(prompt, completion), "system_fingerprint": "fp_edgerelay_mock"
        }),
        Endpoint::Completions => json!({
            "id": format!("cmpl-{id}"), "object": "text_completion", "created": created_s, "model": upstream_model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage_json(prompt, completion)
        }),
        Endpoint::Embeddings => embeddings(req, upstream_model),
    };
    body.to_string().into_bytes()
}

fn embeddings(req: &InboundRequest, upstream_model: &str) -> Value {
    let inputs: Vec<String> = match req.body.get("input") {
        Some(Value::Array(items)) => items.iter().map(Value::to_string).collect(),
        Some(other) => vec![other.to_string()],
        None => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            // Eight dimensions from the input's hash: stable, distinct per input, in [-1, 1].
            let digest = sha256(input.as_bytes());
            let embedding: Vec<f64> = digest[..8]
                .iter()
                .map(|b| (f64::from(*b) - 127.5) / 127.5)
                .collect();
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = estimate_tokens(req.prompt_bytes);
    json!({"object": "list", "data": data, "model": upstream_model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// A streamed reply as separate network chunks of SSE, always with the final usage chunk (as a
/// real upstream asked for it would send; the pass-through hides it if the client did not ask).
pub fn stream_chunks(
    req: &InboundRequest,
    upstream_model: &str,
    id: &str,
    created_s: i64,
) -> Vec<Vec<u8>> {
    let text = reply_text(req);
    let chat = req.endpoint == Endpoint::ChatCompletions;
    let (object, id) = if chat {
        ("chat.completion.chunk", format!("chatcmpl-{id}"))
    } else {
        ("text_completion", format!("cmpl-{id}"))
    };
    let chunk = |choice: Value, usage: Value| {
        let mut c = json!({"id": id, "object": object, "created": created_s, "model": upstream_model, "choices": [choice], "usage": usage});
        if chat {
            c["system_fingerprint"] = json!("fp_edgerelay_mock");
        }
        c
    };
    let piece = |content: &str, finish: Value| {
        if chat {
            json!({"index": 0, "delta": {"content": content}, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"text": content, "index": 0, "logprobs": null, "finish_reason": finish})
        }
    };
    let mut events: Vec<Value> = Vec::new();
    if chat {
        events.push(chunk(json!({"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}), Value::Null));
    }
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for group in words.chunks(WORDS_PER_CHUNK) {
        events.push(chunk(piece(&group.concat(), Value::Null), Value::Null));
    }
    let finish = if chat {
        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"})
    } else {
        piece("", json!("stop"))
    };
    events.push(chunk(finish, Value::Null));
    let mut usage = chunk(
        Value::Null,
        usage_json(prompt_tokens(req), estimate_tokens(text.len())),
    );
    usage["choices"] = json!([]);
    events.push(usage);

    let mut chunks: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            sse::encode_event(None, &e.to_string(), &mut out);
            out
        })
        .collect();
    let mut done = Vec::new();
    sse::encode_done(&mut done);
    chunks.push(done);
    chunks
}

/// The built-in mock's answer, in OpenAI's format (it is an OpenAI-format upstream that lives
/// in the Worker), with the mode that turns it into the client's format.
pub enum MockReply {
    Whole(Vec<u8>),
    Chunks(Vec<Vec<u8>>),
}

pub fn answer(
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
        MockReply::Chunks(stream_chunks(&openai_req, upstream_model, id, created_s))
    } else {
        MockReply::Whole(reply(&openai_req, upstream_model, id, created_s))
    };
    Ok((reply, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::client::parse_anthropic;
    use crate::formats::openai::{parse_request, StreamPassThrough};
    use crate::formats::translate::StreamPipe;

    fn chat(stream: bool) -> InboundRequest {
        let body = format!(
            r#"{{"model":"demo","messages":[{{"role":"system","content":"be brief"}},{{"role":"user","content":"Hello there"}}],"stream":{stream}}}"#
        );
        parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap()
    }

    #[test]
    fn replies_are_deterministic_and_echo_the_user() {
        let a = reply(&chat(false), "mock-1", "x", 1);
        assert_eq!(a, reply(&chat(false), "mock-1", "x", 1));
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert!(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Hello there"));
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        assert_eq!(
            v["usage"]["total_tokens"].as_u64(),
            Some(
                v["usage"]["prompt_tokens"].as_u64().unwrap()
                    + v["usage"]["completion_tokens"].as_u64().unwrap()
            )
        );
    }

    #[test]
    fn stream_comes_in_several_chunks_and_agrees_with_the_reply() {
        let chunks = stream_chunks(&chat(true), "mock-1", "x", 1);
        assert!(chunks.len() > 4);
        let mut p = StreamPassThrough::new(false);
        let mut out = Vec::new();
        for c in &chunks {
            p.push(c, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        assert!(p.saw_done());
        let whole: Value = serde_json::from_slice(&reply(&chat(false), "mock-1", "x", 1)).unwrap();
        let u = p.usage().unwrap();
        assert_eq!(
            u.prompt_tokens,
            whole["usage"]["prompt_tokens"].as_u64().unwrap()
        );
        assert_eq!(
            u.completion_tokens,
            whole["usage"]["completion_tokens"].as_u64().unwrap()
        );
        assert_eq!(p.completion_bytes(), reply_text(&chat(true)).len());
    }

    #[test]
    fn embeddings_are_stable_per_input() {
        let r = parse_request(
            Endpoint::Embeddings,
            br#"{"model":"e","input":["a","b","a"]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&reply(&r, "emb", "x", 1)).unwrap();
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data[0]["embedding"], data[2]["embedding"]);
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    }

    #[test]
    fn mock_answers_anthropic_clients_in_their_format() {
        let req = parse_anthropic(br#"{"model":"demo","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#).unwrap();
        let (streamed, mode) = answer(&req, "mock-1", "msg_1", 1).unwrap();
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
        let (MockReply::Whole(bytes), mode) = answer(&whole, "mock-1", "msg_1", 1).unwrap() else {
            panic!()
        };
        let r = crate::formats::translate::reply(mode, bytes, "mock-1", "msg_1", 1).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["role"].as_str()),
            (Some("message"), Some("assistant"))
        );
        assert!(v["content"][0]["text"].as_str().unwrap().contains("Hello"));
    }
}
