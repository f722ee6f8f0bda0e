//! Posting to a Slack incoming webhook: `{"text": ...}` as JSON, one message at a time and at
//! most one a second from this process, `Retry-After` honoured on 429, anything but 200 a
//! failure tried again a bounded number of times. Interpolated values go through [`escape`], so
//! a value such as `<!channel>` arrives as text, not as a mention.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

/// Tries per message.
pub const ATTEMPTS: u32 = 3;

/// The least time between two posts from this process.
pub const SPACING: Duration = Duration::from_secs(1);

/// The longest Retry-After waited for; a longer one fails the message.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A Slack incoming webhook.
#[derive(Debug)]
pub struct Slack {
    client: reqwest::Client,
    url: SecretString,
    /// When the last post was made; held while posting, so posts go one at a time, in order.
    last: tokio::sync::Mutex<Option<Instant>>,
    /// Messages Slack accepted.
    pub sent: AtomicU64,
    /// Messages given up on.
    pub failed: AtomicU64,
}

impl Slack {
    pub fn new(url: &SecretString) -> Self {
        Slack {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            url: url.clone(),
            last: tokio::sync::Mutex::new(None),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Posts `text` (already escaped where it interpolates values). True once Slack answers 200.
    pub async fn post(&self, text: &str) -> bool {
        let mut last = self.last.lock().await;
        let body = serde_json::json!({ "text": text });
        for attempt in 1..=ATTEMPTS {
            if let Some(at) = *last {
                tokio::time::sleep_until((at + SPACING).into()).await;
            }
            *last = Some(Instant::now());
            let answer = self
                .client
                .post(self.url.expose_secret())
                .json(&body)
                .send()
                .await;
            let wait = match answer {
                Ok(answer) if answer.status() == reqwest::StatusCode::OK => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Ok(answer) if answer.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    let asked = answer
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map_or(SPACING, Duration::from_secs);
                    tracing::warn!(
                        retry_after_s = asked.as_secs(),
                        attempt,
                        "Slack asked us to slow down"
                    );
                    if asked > MAX_RETRY_AFTER {
                        break;
                    }
                    asked
                }
                Ok(answer) => {
                    tracing::warn!(
                        status = answer.status().as_u16(),
                        attempt,
                        "Slack refused an alert"
                    );
                    Duration::from_secs(u64::from(attempt))
                }
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), attempt, "could not reach Slack");
                    Duration::from_secs(u64::from(attempt))
                }
            };
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
            }
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!("an alert could not be posted to Slack");
        false
    }
}

/// `value` with Slack's control characters `&`, `<` and `>` escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping_leaves_no_mention_or_link() {
        assert_eq!(
            super::escape("<!channel> & <https://x.example|click>"),
            "&lt;!channel&gt; &amp; &lt;https://x.example|click&gt;"
        );
    }
}
