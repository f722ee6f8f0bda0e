//! Resend's API: `POST /emails`, with Bearer auth and an Idempotency-Key so a retry never sends
//! twice.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{QueuedEmail, SendError};

#[derive(Clone)]
pub struct Resend {
    client: reqwest::Client,
    endpoint: Url,
    from: String,
}

impl std::fmt::Debug for Resend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resend")
            .field("endpoint", &self.endpoint.as_str())
            .finish()
    }
}

#[derive(Serialize)]
struct SendBody<'a> {
    from: &'a str,
    to: [&'a str; 1],
    subject: &'a str,
    html: &'a str,
    text: &'a str,
}

#[derive(Deserialize)]
struct SendResponse {
    id: Option<String>,
}

impl Resend {
    pub fn new(base: Url, api_key: &str, from: String) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {api_key}"))
            .map_err(|_| anyhow::anyhow!("RESEND_API_KEY holds characters a header cannot"))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let client = reqwest::Client::builder()
            .user_agent(concat!("aide/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(Duration::from_secs(15))
            .build()?;
        let endpoint = base.join("emails")?;
        Ok(Resend {
            client,
            endpoint,
            from,
        })
    }

    pub async fn send(&self, email: &QueuedEmail) -> Result<Option<String>, SendError> {
        let body = SendBody {
            from: &self.from,
            to: [&email.to_address],
            subject: &email.subject,
            html: email.html_body.as_deref().unwrap_or_default(),
            text: email.text_body.as_deref().unwrap_or_default(),
        };
        let response = self
            .client
            .post(self.endpoint.clone())
            .header("Idempotency-Key", email.id.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::Retry {
                after: None,
                reason: format!("request failed: {}", without_url(&e)),
            })?;
        let status = response.status();
        if status.is_success() {
            let parsed: Option<SendResponse> = response.json().await.ok();
            return Ok(parsed.and_then(|r| r.id));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Resend's error bodies are short JSON ({"name", "message"}); keep a bounded excerpt.
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(300).collect();
        let reason = format!("Resend answered {status}: {excerpt}");
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::CONFLICT | StatusCode::REQUEST_TIMEOUT => {
                Err(SendError::Retry {
                    after: retry_after,
                    reason,
                })
            }
            s if s.is_server_error() => Err(SendError::Retry {
                after: retry_after,
                reason,
            }),
            _ => Err(SendError::Permanent(reason)),
        }
    }
}

/// reqwest's errors can include the URL; ours has no secret in it, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<resend>");
    }
    text
}
