//! The model provider behind one trait: start a response, then read its events. The HTTP
//! provider speaks either wire protocol over the reqwest client the service already has, retries
//! before the first byte (connection errors, 429, 529, 5xx; honouring `retry-after`), and fails
//! a response that goes silent.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::model::{Decoder, ErrorKind, ModelEvent, ModelRequest, ProviderError};
use super::sse::Parser;
use super::{anthropic, openai};
use crate::config::{AiConfig, AiProvider};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A model provider.
pub trait ModelProvider: Send + Sync {
    /// `anthropic` or `openai`, as recorded per turn.
    fn name(&self) -> &'static str;
    fn model(&self) -> &str;
    /// Sends `request` and waits for the response to begin (retrying before that).
    fn start<'a>(
        &'a self,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<Box<dyn ModelStream>, ProviderError>>;
}

/// A response being streamed.
pub trait ModelStream: Send {
    /// The next event; None once the response is complete.
    fn next(&mut self) -> BoxFuture<'_, Option<Result<ModelEvent, ProviderError>>>;
    /// The provider's id for the request, for support.
    fn request_id(&self) -> Option<&str>;
}

/// Retries before the first byte: at most this many, and no wait past [`MAX_RETRY_WAIT`].
const RETRIES: u32 = 2;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(20);

/// A provider over HTTP.
pub struct HttpProvider {
    client: reqwest::Client,
    protocol: AiProvider,
    base_url: Url,
    api_key: Option<SecretString>,
    model: String,
    stall: Duration,
}

impl HttpProvider {
    pub fn new(config: &AiConfig) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        HttpProvider {
            client,
            protocol: config.provider,
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
            model: config.model.clone(),
            stall: config.stall_timeout,
        }
    }

    fn request(&self, request: &ModelRequest) -> reqwest::RequestBuilder {
        let base = self.base_url.as_str().trim_end_matches('/');
        match self.protocol {
            AiProvider::Anthropic => {
                let mut builder = self
                    .client
                    .post(format!("{base}/v1/messages"))
                    .header("anthropic-version", anthropic::VERSION)
                    .json(&anthropic::body(&self.model, request));
                if let Some(key) = &self.api_key {
                    builder = builder.header("x-api-key", key.expose_secret());
                }
                builder
            }
            AiProvider::OpenAi => {
                let mut builder = self
                    .client
                    .post(format!("{base}/chat/completions"))
                    .json(&openai::body(&self.model, request));
                if let Some(key) = &self.api_key {
                    builder = builder.bearer_auth(key.expose_secret());
                }
                builder
            }
        }
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        match self.protocol {
            AiProvider::Anthropic => Box::<anthropic::AnthropicDecoder>::default(),
            AiProvider::OpenAi => Box::<openai::OpenAiDecoder>::default(),
        }
    }

    /// One attempt: the response once it has begun, or why not.
    async fn attempt(&self, request: &ModelRequest) -> Result<HttpStream, ProviderError> {
        let response = self.request(request).send().await.map_err(|e| {
            ProviderError::new(
                if e.is_timeout() {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Connection
                },
                format!("could not reach the model provider: {}", e.without_url()),
            )
        })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = header("request-id").or_else(|| header("x-request-id"));
        if !(200..300).contains(&status) {
            let retry_after = header("retry-after")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            let should_retry = header("x-should-retry");
            let kind = ProviderError::kind_of_status(status);
            let body = response.text().await.unwrap_or_default();
            let mut error = match self.protocol {
                AiProvider::Anthropic => anthropic::error_from_body(kind, &body),
                AiProvider::OpenAi => openai::error_from_body(kind, &body),
            };
            error.retry_after = retry_after;
            if should_retry.as_deref() == Some("false") {
                error.kind = ErrorKind::Request;
            }
            return Err(error);
        }
        Ok(HttpStream {
            response,
            parser: Parser::new(),
            decoder: self.decoder(),
            queue: VecDeque::new(),
            ended: false,
            stall: self.stall,
            request_id,
        })
    }
}

impl ModelProvider for HttpProvider {
    fn name(&self) -> &'static str {
        self.protocol.as_str()
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn start<'a>(
        &'a self,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<Box<dyn ModelStream>, ProviderError>> {
        Box::pin(async move {
            let mut waited = Duration::ZERO;
            let mut attempt = 0;
            loop {
                match self.attempt(request).await {
                    Ok(stream) => return Ok(Box::new(stream) as Box<dyn ModelStream>),
                    Err(error) if error.is_transient() && attempt < RETRIES => {
                        let wait = error
                            .retry_after
                            .unwrap_or(Duration::from_millis(500 * 2_u64.pow(attempt)));
                        if waited + wait > MAX_RETRY_WAIT {
                            return Err(error);
                        }
                        tracing::info!(
                            ai.error = ?error.kind,
                            retry.wait_ms = wait.as_millis() as u64,
                            "model provider refused for now; retrying"
                        );
                        tokio::time::sleep(wait).await;
                        waited += wait;
                        attempt += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
        })
    }
}

struct HttpStream {
    response: reqwest::Response,
    parser: Parser,
    decoder: Box<dyn Decoder>,
    queue: VecDeque<ModelEvent>,
    ended: bool,
    stall: Duration,
    request_id: Option<String>,
}

impl HttpStream {
    async fn next_event(&mut self) -> Option<Result<ModelEvent, ProviderError>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout(self.stall, self.response.chunk()).await {
                Err(_) => {
                    self.ended = true;
                    return Some(Err(ProviderError::new(
                        ErrorKind::Timeout,
                        format!(
                            "the model provider sent nothing for {} s",
                            self.stall.as_secs()
                        ),
                    )));
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Some(Err(ProviderError::new(
                        ErrorKind::Connection,
                        format!("the response broke off: {}", e.without_url()),
                    )));
                }
                Ok(Ok(None)) => {
                    self.ended = true;
                    match self.decoder.finish() {
                        Ok(events) => self.queue.extend(events),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Ok(Ok(Some(bytes))) => {
                    let events = match self.parser.feed(&bytes) {
                        Ok(events) => events,
                        Err(e) => {
                            self.ended = true;
                            return Some(Err(ProviderError::protocol(e.to_string())));
                        }
                    };
                    for event in events {
                        match self.decoder.event(event) {
                            Ok(decoded) => self.queue.extend(decoded),
                            Err(e) => {
                                self.ended = true;
                                return Some(Err(e));
                            }
                        }
                    }
                }
            }
        }
    }
}

impl ModelStream for HttpStream {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<ModelEvent, ProviderError>>> {
        Box::pin(self.next_event())
    }

    fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

impl std::fmt::Debug for dyn ModelProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelProvider({}, {})", self.name(), self.model())
    }
}
