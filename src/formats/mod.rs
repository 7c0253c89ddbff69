//! Wire formats: one file per format, each with private serde shapes and conversions to and
//! from the neutral model, plus the framings they share (SSE, AWS event-stream, Google's
//! streamed JSON array) and the composition of a client format with an upstream one
//! (`translate`).

pub mod anthropic;
pub mod anthropic_inbound;
pub mod bedrock;
pub mod claude;
pub mod client;
pub mod cohere;
pub mod eventstream;
pub mod gemini;
pub mod gemini_inbound;
pub mod json_array;
pub mod neutral;
pub mod openai;
pub mod responses;
pub mod sse;
pub mod translate;
