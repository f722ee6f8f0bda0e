//! Talking to a language model: the server-sent-event parser both providers stream with, the
//! request and event types every provider shares, and one module per wire protocol.

pub mod anthropic;
pub mod model;
pub mod openai;
pub mod provider;
pub mod sse;
