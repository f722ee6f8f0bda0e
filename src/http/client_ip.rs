//! The client's IP address: the socket's peer, unless TRUSTED_PROXY_HEADER names a header set by
//! a proxy in front of the server.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::AppState;
use crate::error::AppError;

/// The address rate limits and audit rows are keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(header) = &state.config.trusted_proxy_header {
            // The proxy appends the address it saw; with X-Forwarded-For the last entry is the
            // one our proxy added, the earlier ones are whatever the client claimed.
            let from_header = parts
                .headers
                .get_all(header.as_str())
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if let Some(ip) = from_header {
                return Ok(ClientIp(ip));
            }
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| ClientIp(addr.ip()))
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("no peer address on the request")))
    }
}
