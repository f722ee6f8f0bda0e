//! A thin Stripe client on the service's reqwest: the handful of calls billing needs, behind one
//! trait. Requests are form-encoded with Stripe's bracketed keys, pinned to [`API_VERSION`], and
//! every POST carries an `Idempotency-Key` chosen before the first attempt and sent again on each
//! retry. Only connection errors, 429 and 5xx are retried (or what `Stripe-Should-Retry` says),
//! and a 409 `idempotency_key_in_use` (the same key still running elsewhere: Stripe asks to try
//! again later), at most [`ATTEMPTS`] times, honouring `Retry-After`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use crate::config::BillingConfig;

/// The API version every request runs at (the one the official libraries pin). The webhook
/// endpoint must be created with it too, so events arrive in the same shape.
pub const API_VERSION: &str = "2026-10-28.endive";

/// Tries of one call at most, and the longest wait between two.
const ATTEMPTS: u32 = 3;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What billing asks of Stripe. Nothing else in the service talks to Stripe.
pub trait StripeApi: Send + Sync + std::fmt::Debug {
    /// Creates the user's customer. The idempotency key is derived from the user, so concurrent
    /// or repeated calls for one user make one customer.
    fn create_customer<'a>(
        &'a self,
        user: Uuid,
        email: &'a str,
    ) -> BoxFuture<'a, Result<String, StripeError>>;
    fn create_checkout_session<'a>(
        &'a self,
        checkout: &'a NewCheckout,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>>;
    fn retrieve_checkout_session<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>>;
    /// A Billing Portal session's URL.
    fn create_portal_session<'a>(
        &'a self,
        customer: &'a str,
        return_url: &'a str,
    ) -> BoxFuture<'a, Result<String, StripeError>>;
    /// Every subscription of the customer, canceled ones included.
    fn list_subscriptions<'a>(
        &'a self,
        customer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Subscription>, StripeError>>;
    /// Cancels a subscription at once.
    fn cancel_subscription<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StripeError>>;
    /// Deletes a customer (cancelling its subscriptions); a customer already gone is no error.
    fn delete_customer<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StripeError>>;
}

/// What a Checkout Session is made of.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    pub user: Uuid,
    pub customer: String,
    pub price: String,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
    pub customer: Option<String>,
}

/// A subscription as billing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    pub created: i64,
    pub cancel_at_period_end: bool,
    /// The date it ends when cancelled for a date (`cancel_at`), if any.
    pub cancel_at: Option<DateTime<Utc>>,
    /// The prices it charges for.
    pub prices: Vec<String>,
    /// The end of the current period: the latest of its items' (the field moved from the
    /// subscription to its items in API version 2025-03-31).
    pub current_period_end: Option<DateTime<Utc>>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe could not be reached, or kept failing (connection errors, 429, 5xx), after retries.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe refused the request (a 4xx that retrying cannot fix).
    #[error("Stripe refused the request ({status} {kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        code: Option<String>,
        message: String,
    },
    /// An answer we could not read.
    #[error("unexpected answer from Stripe: {0}")]
    Malformed(String),
}

impl StripeError {
    /// A 404 for the object asked about.
    pub fn is_missing(&self) -> bool {
        matches!(self, StripeError::Refused { status: 404, .. })
    }
}

/// The client over HTTP.
pub struct StripeClient {
    client: reqwest::Client,
    api_url: Url,
    key: SecretString,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_url", &self.api_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

impl StripeClient {
    pub fn new(config: &BillingConfig) -> Self {
        Self::with_timeout(config, Duration::from_secs(30))
    }

    /// A client whose every attempt gives up after `timeout` (and is then retried).
    pub fn with_timeout(config: &BillingConfig, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        StripeClient {
            client,
            api_url: config.api_url.clone(),
            key: config.secret_key.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url.as_str().trim_end_matches('/'))
    }

    /// One call, retried as the module says. `idempotency_key` goes on POSTs.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let builder = match method {
                Method::Get => self.client.get(self.url(path)).query(params),
                Method::Post => self.client.post(self.url(path)).form(params),
                Method::Delete => self.client.delete(self.url(path)),
            };
            let mut builder = builder
                .bearer_auth(self.key.expose_secret())
                .header("Stripe-Version", API_VERSION);
            if let (Method::Post, Some(key)) = (method, idempotency_key) {
                builder = builder.header("Idempotency-Key", key);
            }
            let (wait, reason) = match builder.send().await {
                Err(e) => (None, format!("could not reach Stripe: {e}")),
                Ok(response) => {
                    let status = response.status();
                    let should_retry = response
                        .headers()
                        .get("stripe-should-retry")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v == "true");
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64);
                    let body = response.bytes().await.map_err(|e| {
                        StripeError::Unavailable(format!("the answer was cut off: {e}"))
                    });
                    if status.is_success() {
                        let body = body?;
                        return serde_json::from_slice(&body)
                            .map_err(|e| StripeError::Malformed(e.to_string()));
                    }
                    let refused = refusal(status.as_u16(), body.as_deref().unwrap_or_default());
                    // Another request with the same idempotency key is still running (another
                    // server's, for the same user): Stripe asks to try again later.
                    let key_in_use = matches!(&refused, StripeError::Refused { code: Some(c), .. } if c == "idempotency_key_in_use");
                    let retryable = should_retry.unwrap_or(
                        status.as_u16() == 429 || status.is_server_error() || key_in_use,
                    );
                    if !retryable {
                        // Stripe's own trouble, even when it says a retry would not help.
                        if status.as_u16() == 429 || status.is_server_error() {
                            return Err(StripeError::Unavailable(refused.to_string()));
                        }
                        return Err(refused);
                    }
                    (retry_after, refused.to_string())
                }
            };
            last = reason;
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait.unwrap_or_else(|| backoff(attempt)).min(MAX_RETRY_WAIT))
                    .await;
            }
        }
        Err(StripeError::Unavailable(last))
    }
}

impl StripeClient {
    /// Deletes the object at `path`; one already gone is no error.
    async fn delete(&self, path: &str) -> Result<(), StripeError> {
        match self
            .call::<serde_json::Value>(Method::Delete, path, &[], None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_missing() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// About 0.5 s, then 1 s, with jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.pow(attempt.saturating_sub(1).min(4));
    base.mul_f64(rand::rng().random_range(0.75..1.25))
}

/// Stripe's error shape: `{"error": {"type", "code", "message"}}`.
fn refusal(status: u16, body: &[u8]) -> StripeError {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { error }) => StripeError::Refused {
            status,
            kind: error.kind.unwrap_or_else(|| "unknown".into()),
            code: error.code,
            message: error.message.unwrap_or_default(),
        },
        Err(_) => StripeError::Refused {
            status,
            kind: "unknown".into(),
            code: None,
            message: format!("HTTP {status}"),
        },
    }
}

fn pair(key: &str, value: impl Into<String>) -> (String, String) {
    (key.to_string(), value.into())
}

/// The form of a Checkout Session in subscription mode for one price.
pub fn checkout_params(checkout: &NewCheckout) -> Vec<(String, String)> {
    let user = checkout.user.to_string();
    vec![
        pair("mode", "subscription"),
        pair("customer", checkout.customer.clone()),
        pair("client_reference_id", user.clone()),
        pair("line_items[0][price]", checkout.price.clone()),
        pair("line_items[0][quantity]", "1"),
        pair("success_url", checkout.success_url.clone()),
        pair("cancel_url", checkout.cancel_url.clone()),
        pair("metadata[user_id]", user.clone()),
        pair("subscription_data[metadata][user_id]", user),
    ]
}

/// The wire shape of a subscription, read leniently.
#[derive(Deserialize)]
struct RawSubscription {
    id: String,
    status: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    cancel_at_period_end: bool,
    cancel_at: Option<i64>,
    items: Option<RawList<RawItem>>,
}

#[derive(Deserialize)]
struct RawList<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct RawItem {
    price: Option<RawPrice>,
    current_period_end: Option<i64>,
}

#[derive(Deserialize)]
struct RawPrice {
    id: String,
}

fn timestamp(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

impl From<RawSubscription> for Subscription {
    fn from(raw: RawSubscription) -> Self {
        let items = raw.items.map(|l| l.data).unwrap_or_default();
        Subscription {
            id: raw.id,
            status: raw.status,
            created: raw.created,
            cancel_at_period_end: raw.cancel_at_period_end,
            cancel_at: raw.cancel_at.and_then(timestamp),
            prices: items
                .iter()
                .filter_map(|i| i.price.as_ref().map(|p| p.id.clone()))
                .collect(),
            current_period_end: items
                .iter()
                .filter_map(|i| i.current_period_end)
                .max()
                .and_then(timestamp),
        }
    }
}

impl StripeApi for StripeClient {
    fn create_customer<'a>(
        &'a self,
        user: Uuid,
        email: &'a str,
    ) -> BoxFuture<'a, Result<String, StripeError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Customer {
                id: String,
            }
            let params = vec![
                pair("email", email),
                pair("metadata[user_id]", user.to_string()),
            ];
            // The user's, so every attempt for them is one customer; with the address, so a
            // key is never reused with other parameters (Stripe refuses that for a day).
            let key = format!("aide-customer-{user}-{}", short_hash(email));
            let customer: Customer = self
                .call(Method::Post, "/v1/customers", &params, Some(&key))
                .await?;
            Ok(customer.id)
        })
    }

    fn create_checkout_session<'a>(
        &'a self,
        checkout: &'a NewCheckout,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>> {
        Box::pin(async move {
            let key = Uuid::new_v4().to_string();
            self.call(
                Method::Post,
                "/v1/checkout/sessions",
                &checkout_params(checkout),
                Some(&key),
            )
            .await
        })
    }

    fn retrieve_checkout_session<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>> {
        Box::pin(async move {
            let path = format!("/v1/checkout/sessions/{}", path_segment(id));
            self.call(Method::Get, &path, &[], None).await
        })
    }

    fn create_portal_session<'a>(
        &'a self,
        customer: &'a str,
        return_url: &'a str,
    ) -> BoxFuture<'a, Result<String, StripeError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Portal {
                url: String,
            }
            let key = Uuid::new_v4().to_string();
            let params = vec![pair("customer", customer), pair("return_url", return_url)];
            let portal: Portal = self
                .call(
                    Method::Post,
                    "/v1/billing_portal/sessions",
                    &params,
                    Some(&key),
                )
                .await?;
            Ok(portal.url)
        })
    }

    fn list_subscriptions<'a>(
        &'a self,
        customer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Subscription>, StripeError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            // A customer has a handful; the pages are bounded all the same.
            for _ in 0..10 {
                let mut params = vec![
                    pair("customer", customer),
                    pair("status", "all"),
                    pair("limit", "100"),
                ];
                if let Some(after) = &after {
                    params.push(pair("starting_after", after.clone()));
                }
                let page: RawList<RawSubscription> = self
                    .call(Method::Get, "/v1/subscriptions", &params, None)
                    .await?;
                let more = page.has_more;
                after = page.data.last().map(|s| s.id.clone());
                all.extend(page.data.into_iter().map(Subscription::from));
                if !more || after.is_none() {
                    break;
                }
            }
            Ok(all)
        })
    }

    fn cancel_subscription<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StripeError>> {
        Box::pin(async move {
            self.delete(&format!("/v1/subscriptions/{}", path_segment(id)))
                .await
        })
    }

    fn delete_customer<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StripeError>> {
        Box::pin(async move {
            self.delete(&format!("/v1/customers/{}", path_segment(id)))
                .await
        })
    }
}

/// Eight hex digits of SHA-256: enough to tell two addresses apart in a key.
fn short_hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An id as one path segment: Stripe ids are letters, digits and underscores; anything else is
/// percent-encoded so it cannot change the path.
fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_params_use_bracketed_keys() {
        let user = Uuid::nil();
        let params = checkout_params(&NewCheckout {
            user,
            customer: "cus_1".into(),
            price: "price_1".into(),
            success_url: "https://app.example/billing/success?session_id={CHECKOUT_SESSION_ID}"
                .into(),
            cancel_url: "https://app.example/".into(),
        });
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        assert!(
            encoded.contains("line_items%5B0%5D%5Bprice%5D=price_1"),
            "{encoded}"
        );
        assert!(encoded.contains("subscription_data%5Bmetadata%5D%5Buser_id%5D=00000000-"));
        assert!(encoded.contains("mode=subscription"));
        assert!(encoded.contains("%7BCHECKOUT_SESSION_ID%7D"));
    }

    #[test]
    fn the_period_end_is_read_from_the_items() {
        let raw: RawSubscription = serde_json::from_value(serde_json::json!({
            "id": "sub_1", "object": "subscription", "status": "active", "created": 10,
            "cancel_at_period_end": true, "cancel_at": null,
            "items": {"object": "list", "data": [
                {"id": "si_1", "price": {"id": "price_1"}, "current_period_end": 1_800_000_000},
                {"id": "si_2", "price": {"id": "price_2"}, "current_period_end": 1_700_000_000}
            ], "has_more": false}
        }))
        .expect("parses");
        let sub = Subscription::from(raw);
        assert_eq!(sub.prices, vec!["price_1", "price_2"]);
        assert_eq!(
            sub.current_period_end.map(|t| t.timestamp()),
            Some(1_800_000_000)
        );
        assert!(sub.cancel_at_period_end);
    }

    #[test]
    fn refusals_keep_stripes_words() {
        let e = refusal(
            400,
            br#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_x'"}}"#,
        );
        assert!(
            matches!(&e, StripeError::Refused { status: 400, code: Some(c), .. } if c == "resource_missing")
        );
        assert!(matches!(
            refusal(502, b"<html>"),
            StripeError::Refused { status: 502, .. }
        ));
        assert_eq!(path_segment("cus_1/../x"), "cus_1%2F..%2Fx");
    }
}
