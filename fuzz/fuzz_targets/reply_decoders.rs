//! Whole (non-stream) upstream replies and error bodies: `translate::reply` in every mode
//! (every upstream format to both clients, and both pass-throughs),
//! `openai::summarize_reply`, each format's `parse_error_body`, and
//! `providers::upstream_failure` (the client-facing error for a failed upstream call).
//!
//! The first byte chooses the upstream status for `upstream_failure`; the rest is the body.
//!
//! Checks: no panic; a pass-through reply is the upstream's bytes; a translated one is a JSON
//! object, and a reply the relay cannot read is a 502 `upstream_bad_response`; the error shown
//! to a client is JSON and never contains the channel's key.
#![no_main]

mod common;

use edgerelay::formats::{anthropic, bedrock, cohere, gemini, openai};
use edgerelay::providers;
use edgerelay::formats::translate::{self, Mode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const STATUSES: [u16; 16] = [
    400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 500, 502, 503, 504, 529, 418,
];
const SECRET: &str = "up-key-fuzz-0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };

    for mode in [Mode::PassOpenAi, Mode::PassAnthropic] {
        let r = translate::reply(mode, body.to_vec(), "model-fuzz", "id-fuzz", 1)
            .expect("a pass-through reply is never refused");
        assert_eq!(r.body, body);
    }
    for mode in common::all_modes() {
        if matches!(mode, Mode::PassOpenAi | Mode::PassAnthropic) {
            continue;
        }
        match translate::reply(mode, body.to_vec(), "model-fuzz", "id-fuzz", 1) {
            Ok(r) => {
                let v: Value =
                    serde_json::from_slice(&r.body).expect("translated reply is not JSON");
                assert!(v.is_object(), "{mode:?}: {v}");
                assert_eq!(v["model"], "model-fuzz", "{mode:?}");
            }
            Err(e) => {
                assert_eq!(
                    (e.status(), e.code()),
                    (502, "upstream_bad_response"),
                    "{e:?}"
                )
            }
        }
    }

    let _ = openai::summarize_reply(body);
    let _ = openai::parse_error_body(body);
    let _ = anthropic::parse_error_body(body);
    let _ = gemini::parse_error_body(body);
    let _ = cohere::parse_error_body(body);
    let _ = bedrock::parse_error_body(body);

    let status = STATUSES[usize::from(first) % STATUSES.len()];
    let retry_after = std::str::from_utf8(&body[..body.len().min(16)])
        .ok()
        .map(str::to_string);
    let (err, _log) = providers::upstream_failure(status, body, retry_after, &[SECRET.to_string()]);
    let shown = err.body();
    let _: Value = serde_json::from_str(&shown).expect("error body is not JSON");
    assert!(
        !shown.contains(SECRET),
        "the channel key reached the client: {shown}"
    );
    let anthropic_shown = edgerelay::formats::anthropic_inbound::error_body(&err).to_string();
    assert!(!anthropic_shown.contains(SECRET), "{anthropic_shown}");
});
