//! Client request bodies: `openai::parse_request` for each endpoint, `anthropic::decode_request`,
//! `translate::parse_anthropic` and `parse_count_tokens`; every request that parses is then
//! planned for a channel of every provider (`translate::plan`), counted, and answered by the
//! built-in mock, whose reply must go through `reply` / `StreamPipe` cleanly.
//!
//! The first byte chooses whether an upstream key and an `anthropic-beta` header are given;
//! the rest is the body.
//!
//! Checks: no panic; a refusal is a 4xx with a JSON body; a plan's body is a JSON object no
//! more than a constant factor larger than the request, and its URL starts at the channel's
//! base; the mock's own answer is always readable.
#![no_main]

mod common;

use std::collections::BTreeMap;

use edgerelay::governance::grant::Status;
use edgerelay::routing::channel::Channel;
use edgerelay::error::RelayError;
use edgerelay::formats::openai::{self, Endpoint};
use edgerelay::providers::ProviderKind;
use edgerelay::formats::client::{self, ClientRequest};
use edgerelay::formats::translate::{self, StreamPipe, WireFormat};
use edgerelay::providers::endpoint;
use edgerelay::providers::mock::{self, MockReply};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Time is an input of the pure core (it signs Bedrock requests); any fixed value will do.
const NOW_MS: i64 = 1_700_000_000_000;

fn channel(provider: ProviderKind, base_url: &str) -> Channel {
    let options = [
        ("api_version", "2025-01-01-preview"),
        ("project", "proj-fuzz"),
        ("region", "us-east5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect::<BTreeMap<_, _>>();
    Channel {
        id: "ch-fuzz".into(),
        name: "fuzz".into(),
        provider,
        base_url: base_url.into(),
        api_keys: vec!["up-key".into()],
        models: vec![],
        status: Status::Active,
        timeout_ms: None,
        total_timeout_ms: None,
        region: None,
        breaker: None,
        options,
        created_at: 0,
        updated_at: 0,
    }
}

fn assert_client_error(err: &RelayError) {
    assert!(
        (400..500).contains(&err.status()),
        "a bad body is not a client error: {err:?}"
    );
    let body: Value = serde_json::from_str(&err.body()).expect("error body is not JSON");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// An upstream body may restate the request in other words (and escape it differently), but it
/// must not be more than a constant factor larger: a request the relay accepted must never turn
/// into megabytes of upstream body (a Worker has 128 MB).
fn assert_body_bounded(upstream: usize, client: usize, provider: ProviderKind) {
    assert!(
        upstream <= 16 * client + 64 * 1024,
        "{provider:?}: a {client}-byte request became a {upstream}-byte upstream body"
    );
}

fn plan_everywhere(req: &ClientRequest, client_len: usize, with_key: bool, beta: Option<&str>) {
    // The client's model name stands in for the upstream's, to exercise URL building with it.
    let upstream_model = req.model().to_string();
    for provider in ProviderKind::ALL {
        let bedrock = provider.wire_format() == WireFormat::Bedrock;
        // Bedrock signs with AWS credentials; every other provider takes the key as a token.
        let key = with_key.then_some(if bedrock {
            "AKIAFUZZ:fuzz-secret"
        } else {
            "up-key"
        });
        for base in ["https://up.example/v1/", ""] {
            let ch = channel(provider, base);
            match endpoint::plan(&ch.upstream(), key, req, &upstream_model, beta, NOW_MS) {
                Ok(plan) => {
                    let body: Value = serde_json::from_slice(&plan.request.body)
                        .expect("the upstream body is not JSON");
                    assert!(body.is_object(), "the upstream body is not an object");
                    assert_body_bounded(plan.request.body.len(), client_len, provider);
                    if !base.is_empty() {
                        assert!(
                            plan.request.url.starts_with(base.trim_end_matches('/')),
                            "{}",
                            plan.request.url
                        );
                    }
                    let _ = endpoint::check_strict(&plan.drops, provider);
                    let _ = translate::fidelity_headers(&plan.drops);
                }
                // A provider without this endpoint; Bedrock without credentials.
                Err(e) => assert!(
                    e.code() == "unsupported_endpoint"
                        || (bedrock && key.is_none() && e.code() == "channel_unavailable"),
                    "{provider:?}: {e:?}"
                ),
            }
        }
    }
}

/// The mock is an upstream the relay wrote itself: whatever the request, its answer must come
/// back to the client without an error, and a stream must complete.
fn mock_round_trip(req: &ClientRequest) {
    let model = req.model().to_string();
    let (reply, mode) = match mock::answer(req, &model, "id-fuzz", 1_700_000_000) {
        Ok(r) => r,
        // The mock re-validates an Anthropic request as OpenAI's; a refusal there is a 4xx.
        Err(e) => return assert_client_error(&e),
    };
    match reply {
        MockReply::Whole(bytes) => {
            translate::reply(mode, bytes, &model, "id-fuzz", 1_700_000_000)
                .expect("the relay cannot read its own mock's reply");
        }
        MockReply::Chunks(chunks) => {
            let mut pipe =
                StreamPipe::new(mode, req.include_usage(), &model, "id-fuzz", 1_700_000_000);
            let mut out = Vec::new();
            for c in &chunks {
                pipe.push(c, &mut out).expect("push");
            }
            pipe.finish(&mut out).expect("finish");
            assert!(pipe.completed(), "the mock's stream did not complete");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let with_key = flags & 1 == 1;
    let beta = (flags & 2 == 2).then_some("beta-fuzz");

    for endpoint in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
    ] {
        match openai::parse_request(endpoint, body) {
            Ok(r) => {
                let req = ClientRequest::OpenAi(r);
                let _ = client::estimate_prompt_tokens(&req);
                plan_everywhere(&req, body.len(), with_key, beta);
                if endpoint == Endpoint::ChatCompletions {
                    mock_round_trip(&req);
                }
            }
            Err(e) => assert_client_error(&e),
        }
    }

    let decoded = edgerelay::formats::anthropic_inbound::decode_request(body);
    if let Err(e) = &decoded {
        assert_client_error(e);
    }
    match client::parse_anthropic(body) {
        Ok(req) => {
            assert!(
                decoded.is_ok(),
                "parse_anthropic accepts what decode_request refuses"
            );
            let _ = client::estimate_prompt_tokens(&req);
            plan_everywhere(&req, body.len(), with_key, beta);
            mock_round_trip(&req);
        }
        Err(e) => assert_client_error(&e),
    }
    match client::parse_count_tokens(body) {
        Ok(req) => {
            let anthropic_format = ProviderKind::ALL
                .into_iter()
                .filter(|p| p.wire_format() == WireFormat::Anthropic);
            for provider in anthropic_format {
                let ch = channel(provider, "https://up.example/v1");
                let r = endpoint::count_tokens_request(&ch.upstream(), "up-key", &req, req.model());
                let v: Value = serde_json::from_slice(&r.body).expect("count body is not JSON");
                assert!(v.is_object());
            }
        }
        Err(e) => assert_client_error(&e),
    }
});
