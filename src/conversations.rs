//! Each aide's chat history: one row per message, so appending stays cheap however long the
//! conversation grows. A user message consumes one of the week's turns.

pub(crate) mod repo;
mod routes;

pub use routes::router;
pub(crate) use routes::{WEEK, conversation_full, turn_limit};
