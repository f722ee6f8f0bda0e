//! What a turn says to a model and hears back, the same for every provider: a request of
//! messages and tools, and a stream of normalised events.

use std::time::Duration;

use serde_json::Value;

/// One request to a model.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// The system prompt: the same for every turn (the provider may cache it).
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub max_tokens: u32,
    /// The index in `messages` of the last message the next request will start with unchanged
    /// (the conversation so far): a cache breakpoint goes there.
    pub cache_through: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

impl Message {
    pub fn user_text(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: vec![Block::Text(text.into())],
        }
    }

    pub fn assistant_text(text: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: vec![Block::Text(text.into())],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Text(String),
    /// A call the model made (assistant messages only).
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The answer to a call (user messages only; every call is answered in the next message).
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
}

/// A tool the model may call: a name, what it is for, and a JSON Schema of its input.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
}

/// Tokens of one response, normalised: `input` excludes tokens read from or written to the
/// cache (Anthropic reports it that way; OpenAI's `prompt_tokens` includes cached tokens, and is
/// converted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    ToolUse,
    /// The output limit cut the response.
    MaxTokens,
    Other(String),
}

/// One thing the model did, as it streams.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    TextDelta(String),
    /// A tool call begins.
    ToolStart {
        id: String,
        name: String,
    },
    /// More of a call's input, as JSON text (concatenated, the fragments make its input).
    ToolDelta {
        id: String,
        json: String,
    },
    /// A call's input is complete: parsed, or why it could not be.
    ToolEnd {
        id: String,
        input: Result<Value, String>,
    },
    /// Tokens so far in this response (each report replaces the last).
    Usage(Usage),
    Stop(StopReason),
}

/// What went wrong talking to the provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
    /// How long the provider asked us to wait.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect, or the connection broke.
    Connection,
    /// Nothing arrived for too long.
    Timeout,
    /// 429.
    RateLimited,
    /// 529, or an `overloaded_error`.
    Overloaded,
    /// 5xx.
    Server,
    /// 401 or 403: the key is wrong.
    Auth,
    /// Any other 4xx: our request was refused.
    Request,
    /// The stream did not follow the protocol.
    Protocol,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        ProviderError::new(ErrorKind::Protocol, message)
    }

    /// Worth trying again (before anything was streamed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connection
                | ErrorKind::Timeout
                | ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::Server
        )
    }

    /// The kind an HTTP status means.
    pub fn kind_of_status(status: u16) -> ErrorKind {
        match status {
            429 => ErrorKind::RateLimited,
            529 => ErrorKind::Overloaded,
            401 | 403 => ErrorKind::Auth,
            408 => ErrorKind::Timeout,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Request,
        }
    }
}

/// Turns one provider's event stream into [`ModelEvent`]s.
pub trait Decoder: Send {
    /// Handles one server-sent event.
    fn event(&mut self, event: super::sse::Event) -> Result<Vec<ModelEvent>, ProviderError>;
    /// The stream ended: anything still open, or an error when it ended too early.
    fn finish(&mut self) -> Result<Vec<ModelEvent>, ProviderError>;
}
