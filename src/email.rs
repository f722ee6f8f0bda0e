//! Outgoing email: a durable outbox in PostgreSQL, delivered by a background worker through Resend
//! (or, in development, written to a local folder).

mod local;
pub mod outbox;
mod resend;

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::Config;

pub use outbox::Worker;

/// An email to queue.
#[derive(Debug, Clone)]
pub struct NewEmail {
    /// What it is, for logs and metrics: `sign_in`.
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Not worth delivering after this.
    pub deliver_before: Option<DateTime<Utc>>,
}

/// An email claimed from the outbox for delivery.
#[derive(Debug, Clone)]
pub struct QueuedEmail {
    /// Also the idempotency key sent to the provider.
    pub id: Uuid,
    pub kind: String,
    pub to_address: String,
    pub subject: String,
    pub html_body: Option<String>,
    pub text_body: Option<String>,
    pub attempts: i32,
    pub deliver_before: Option<DateTime<Utc>>,
}

impl crate::db::FromRow for QueuedEmail {
    fn from_row(row: &crate::db::Row) -> Result<Self, crate::db::Error> {
        Ok(QueuedEmail {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            to_address: row.try_get("to_address")?,
            subject: row.try_get("subject")?,
            html_body: row.try_get("html_body")?,
            text_body: row.try_get("text_body")?,
            attempts: row.try_get("attempts")?,
            deliver_before: row.try_get("deliver_before")?,
        })
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth trying again, after `after` when the provider said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Will never work (a refused address, a bad API key).
    Permanent(String),
}

/// Delivers one email. The real provider or the local stand-in, chosen by configuration.
#[derive(Debug, Clone)]
pub enum Mailer {
    Resend(resend::Resend),
    Local(local::LocalOutbox),
}

impl Mailer {
    /// Resend when RESEND_API_KEY is set, the local outbox folder otherwise (configuration refuses
    /// that outside development).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        match &config.email.resend_api_key {
            Some(key) => Ok(Mailer::Resend(resend::Resend::new(
                config.email.resend_api_url.clone(),
                key.expose_secret(),
                config.email.from.clone(),
            )?)),
            None => Ok(Mailer::Local(local::LocalOutbox::new(
                config.data_dir.join("outbox"),
                config.email.from.clone(),
                config.ops.log_format == crate::config::LogFormat::Text,
            ))),
        }
    }

    /// Sends `email`; returns the provider's message id when it gives one.
    pub async fn send(&self, email: &QueuedEmail) -> Result<Option<String>, SendError> {
        match self {
            Mailer::Resend(resend) => resend.send(email).await,
            Mailer::Local(local) => local.send(email).await,
        }
    }
}
