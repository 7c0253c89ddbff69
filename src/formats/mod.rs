//! Wire formats: one file per format, each with private serde shapes and conversions to and
//! from what the relay needs, plus the SSE framing they share.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod eventstream;
pub mod gemini;
pub mod neutral;
pub mod openai;
pub mod sse;
