//! The accept loop: hyper's HTTP/1 connections with the limits a public server needs, which
//! `axum::serve` does not set.
//!
//! * A header-read timeout: a client has a few seconds to send a request's
//!   head (HTTP_HEADER_TIMEOUT_SECONDS), counted from when the server starts waiting for it. That also bounds an idle
//!   keep-alive connection, and a connection that never sends anything (slowloris).
//! * A connection cap: past HTTP_MAX_CONNECTIONS open connections the loop stops accepting, so
//!   new clients wait in the kernel's listen queue instead of exhausting file descriptors.
//! * Graceful shutdown: on the signal the loop stops accepting, every connection finishes the
//!   request it is serving and closes, and the loop returns once all have (or after a grace
//!   period).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How the accept loop treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long a client may take to send a request's head (and how long an idle keep-alive
    /// connection stays open).
    pub header_timeout: Duration,
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
