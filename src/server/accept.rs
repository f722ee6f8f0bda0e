//! The accept loop: hyper's HTTP/1 connections with the limits a public server needs, which
//! `axum::serve` does not set.
//!
//! * A header-read timeout: a client has a few seconds to send a request's
//!   head (HTTP_HEADER_TIMEOUT_SECONDS), counted from when the server starts waiting for it. That also bounds an idle
//!   keep-alive connection, and a connection that never sends anything (slowloris).
//! * A write-stall timeout: a client that accepts none of an answer's bytes for three times the
//!   header timeout (a stalled event-stream reader, a download never read) is disconnected, so
//!   it cannot hold a connection, and what the answer keeps alive, without bound.
//! * A connection cap: past HTTP_MAX_CONNECTIONS open connections the loop stops accepting, so
//!   new clients wait in the kernel's listen queue instead of exhausting file descriptors.
//! * Graceful shutdown: on the signal the loop stops accepting, every connection finishes the
//!   request it is serving and closes, and the loop returns once all have (or after a grace
//!   period).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How the accept loop treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long a client may take to send a request's head (and how long an idle keep-alive
    /// connection stays open).
    pub header_timeout: Duration,
    /// How long a write may wait for the client to read before the connection is dropped.
    pub write_stall: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// How long in-flight requests get to finish after the shutdown signal.
    pub grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait a
                    // moment rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // The router, with the peer's address where axum's `ConnectInfo` extractor finds it.
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let stream = StallGuard::new(stream, options.write_stall);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are the client's doing (a reset, a timeout, a malformed head): the
            // request span already logged anything that reached the router.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, client.addr = %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(options.grace) => {
            tracing::warn!("connections still open after the grace period; closing them");
        }
    }
}

/// A connection whose writes fail once one has waited `limit` for the client to read: the
/// socket's send buffer stayed full that long.
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write or flush is pending.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a write or flush answered `poll`: disarms on progress; on `Pending`, arms the timer
    /// (once) and fails when it has run out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client read nothing for too long",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_and_one_it_reads_in_time_goes_on() {
        // A pipe with a 16-byte buffer, read by hand.
        let (writer, mut reader) = tokio::io::duplex(16);
        let limit = Duration::from_millis(300);
        let mut guard = StallGuard::new(writer, limit);
        guard.write_all(&[0; 16]).await.expect("fits the buffer");
        // Draining it before each stall runs out keeps the connection alive, however long the
        // whole answer takes.
        let drain = tokio::spawn(async move {
            let mut buf = [0; 16];
            for _ in 0..3 {
                tokio::time::sleep(limit / 3).await;
                tokio::io::AsyncReadExt::read_exact(&mut reader, &mut buf)
                    .await
                    .expect("read");
            }
            reader
        });
        guard.write_all(&[1; 32]).await.expect("drained in time");
        let _reader = drain.await.expect("drain");
        // Then nothing is read: the write that does not fit fails once the limit has passed.
        guard.write_all(&[2; 16]).await.expect("fits the buffer");
        let started = std::time::Instant::now();
        let error = guard.write_all(&[3; 16]).await.expect_err("stalled");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit, "not before the limit");
    }
}
