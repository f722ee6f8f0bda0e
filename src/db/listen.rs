//! A connection of its own that receives notifications (`LISTEN`).

use futures_util::future::poll_fn;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::Error;

/// A listening connection. [`Listener::recv`] returns `None` once the connection is lost, after
/// which notifications may have been missed.
pub struct Listener {
    client: Client,
    notifications: mpsc::UnboundedReceiver<(String, String)>,
}

impl Listener {
    pub(super) async fn connect(config: &Config) -> Result<Self, Error> {
        let (client, mut connection) = config.connect(NoTls).await?;
        let (tx, notifications) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Drives the connection; ends when it closes or the listener is dropped.
            while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx
                            .send((n.channel().to_string(), n.payload().to_string()))
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "the listening connection ended");
                        break;
                    }
                }
            }
        });
        Ok(Listener {
            client,
            notifications,
        })
    }

    /// Subscribes to `channel`, a constant identifier of this crate.
    pub async fn listen(&self, channel: &'static str) -> Result<(), Error> {
        self.client
            .batch_execute(&format!("listen {channel}"))
            .await?;
        Ok(())
    }

    /// The next notification's channel and payload; `None` when the connection is lost.
    pub async fn recv(&mut self) -> Option<(String, String)> {
        self.notifications.recv().await
    }
}
