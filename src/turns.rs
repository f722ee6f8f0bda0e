//! The AI turn: a person's message changes their page. See docs and issue 12 for the design.

pub mod engine;
pub mod preview;
pub mod workspace;
