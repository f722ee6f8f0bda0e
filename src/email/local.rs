//! The development stand-in for an email provider: each email becomes a file in the data folder.
//! With text logs (a person at a terminal) its plain-text part, with the sign-in link, is logged
//! at INFO too; JSON logs go to a collector and get only the file's name.

use std::path::PathBuf;

use super::{QueuedEmail, SendError};

#[derive(Debug, Clone)]
pub struct LocalOutbox {
    dir: PathBuf,
    from: String,
    /// Log the email's text (the sign-in link and code) as well as its file.
    show_text: bool,
}

impl LocalOutbox {
    pub fn new(dir: PathBuf, from: String, show_text: bool) -> Self {
        LocalOutbox {
            dir,
            from,
            show_text,
        }
    }

    pub async fn send(&self, email: &QueuedEmail) -> Result<Option<String>, SendError> {
        let text = email.text_body.as_deref().unwrap_or_default();
        let html = email.html_body.as_deref().unwrap_or_default();
        let content = format!(
            "From: {}\nTo: {}\nSubject: {}\nIdempotency-Key: {}\n\n{text}\n\n--- HTML ---\n{html}\n",
            self.from, email.to_address, email.subject, email.id
        );
        let retry = |e: std::io::Error| SendError::Retry {
            after: None,
            reason: format!("could not write to {}: {e}", self.dir.display()),
        };
        tokio::fs::create_dir_all(&self.dir).await.map_err(retry)?;
        // Named by id, written whole then renamed: a retry rewrites the same file.
        let path = self.dir.join(format!("{}.txt", email.id));
        let partial = self.dir.join(format!(".{}.partial", email.id));
        tokio::fs::write(&partial, content).await.map_err(retry)?;
        tokio::fs::rename(&partial, &path).await.map_err(retry)?;
        if self.show_text {
            tracing::info!(
                email.id = %email.id,
                email.kind = %email.kind,
                path = %path.display(),
                "email written to the local outbox (development only):\n{text}"
            );
        } else {
            tracing::info!(
                email.id = %email.id,
                email.kind = %email.kind,
                path = %path.display(),
                "email written to the local outbox (development only)"
            );
        }
        Ok(None)
    }
}
