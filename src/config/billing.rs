//! Stripe, for the Pro plan. Without any STRIPE_ variable billing is off (its routes answer
//! `503 BILLING_NOT_CONFIGURED`) and everything else works; with some but not all of the three
//! keys the server refuses to start.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::source::Source;

/// How the server reaches Stripe.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// STRIPE_SECRET_KEY: a secret (`sk_`) or restricted (`rk_`) API key.
    pub secret_key: SecretString,
    /// STRIPE_WEBHOOK_SECRET: the signing secret of the webhook endpoint (`whsec_`).
    pub webhook_secret: SecretString,
    /// STRIPE_PRICE_ID: the Pro plan's monthly price (`price_`).
    pub price_id: String,
    /// STRIPE_API_URL: Stripe's API (default https://api.stripe.com); a local stand-in in tests.
    pub api_url: Url,
    /// BILLING_PAST_DUE_GRACE_DAYS: how long a subscription whose payment failed keeps Pro
    /// (default 7).
    pub past_due_grace: Duration,
}

impl BillingConfig {
    /// Reads every STRIPE_ and BILLING_ variable (all are shown by `aide config check`); None
    /// without Stripe.
    pub(super) fn from_source(src: &mut Source<'_>) -> Option<BillingConfig> {
        let secret_key = src.secret_with(
            "STRIPE_SECRET_KEY",
            Some("billing off: its routes answer 503 BILLING_NOT_CONFIGURED"),
            |key| {
                if key.starts_with("sk_") || key.starts_with("rk_") {
                    Ok(())
                } else {
                    Err("must be a Stripe secret key (sk_...) or restricted key (rk_...)".into())
                }
            },
        );
        let webhook_secret = src.secret_with("STRIPE_WEBHOOK_SECRET", None, |secret| {
            if secret.starts_with("whsec_") && secret.len() > "whsec_".len() {
                Ok(())
            } else {
                Err("must be the webhook endpoint's signing secret (whsec_...)".into())
            }
        });
        let price_id = src.parse_opt("STRIPE_PRICE_ID", "billing off", |v| {
            if v.starts_with("price_") && v.len() > "price_".len() {
                Ok(v.to_string())
            } else {
                Err("must be the Pro plan's price id (price_...)".into())
            }
        });
        let api_url = src.http_url("STRIPE_API_URL", "https://api.stripe.com");
        let grace_days = src.number("BILLING_PAST_DUE_GRACE_DAYS", 7_u64, 0, 60);
        let complete = src.all_or_none(&[
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "STRIPE_PRICE_ID",
        ]);
        if !complete {
            return None;
        }
        Some(BillingConfig {
            secret_key: secret_key?,
            webhook_secret: webhook_secret?,
            price_id: price_id?,
            api_url: api_url?,
            past_due_grace: Duration::from_secs(grace_days * 86_400),
        })
    }
}
