//! Reading a request body into memory with a size limit and a stall timeout, for the routes that
//! take files: a client that stops sending is cut off instead of holding its request open.

use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;

/// How long an upload may go without a byte arriving.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit arrived (or was announced by Content-Length).
    TooLarge,
    /// Nothing arrived for the stall timeout.
    Stalled,
    /// The connection broke or the framing was invalid.
    Broken,
}

/// Reads all of `body`, at most `max` bytes, giving up when no data arrives for `stall`.
/// `declared` is the Content-Length, if any: a body announced as too large is refused before a
/// byte is read, and one of known size is read into a buffer of that size.
pub async fn read_limited(
    body: Body,
    declared: Option<u64>,
    max: u64,
    stall: Duration,
) -> Result<Bytes, BodyError> {
    if declared.is_some_and(|len| len > max) {
        return Err(BodyError::TooLarge);
    }
    let capacity = declared.unwrap_or(0).min(max).min(8 * 1024 * 1024) as usize;
    let mut buffer = Vec::with_capacity(capacity);
    let mut stream = body.into_data_stream();
    loop {
        match tokio::time::timeout(stall, stream.next()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(None) => return Ok(Bytes::from(buffer)),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(chunk))) => {
                if (buffer.len() + chunk.len()) as u64 > max {
                    return Err(BodyError::TooLarge);
                }
                buffer.extend_from_slice(&chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_within_the_limit_and_refuses_past_it() {
        let ok = read_limited(Body::from("hello"), Some(5), 5, STALL_TIMEOUT).await;
        assert_eq!(ok, Ok(Bytes::from_static(b"hello")));
        let announced = read_limited(Body::from("hello"), Some(6), 5, STALL_TIMEOUT).await;
        assert_eq!(announced, Err(BodyError::TooLarge));
        let unannounced = read_limited(Body::from("hello!"), None, 5, STALL_TIMEOUT).await;
        assert_eq!(unannounced, Err(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_cut_off() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"start")))
            .await
            .expect("send");
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let read = read_limited(
            Body::from_stream(stream),
            None,
            100,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(read, Err(BodyError::Stalled));
        drop(tx);
    }
}
