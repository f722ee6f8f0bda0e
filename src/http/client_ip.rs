//! The client's IP address: the socket's peer, unless TRUSTED_PROXY_HEADER names a header set by
//! a proxy in front of the server.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::error::AppError;
use crate::state::AppState;

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

/// The part of a client's address that limits are keyed on: the whole IPv4 address, but only the
/// /64 network of an IPv6 address (one subscriber commonly holds a whole /64, so keying on the
/// full address would give each client unlimited keys). IPv4-mapped IPv6 addresses count as IPv4.
pub fn network_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(network_key(a), network_key(b));
        assert_ne!(network_key(a), network_key(c));
        assert_eq!(network_key(a), "2001:db8:1:2::/64");
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(network_key(v4), "192.0.2.7");
        assert_eq!(network_key(mapped), "192.0.2.7");
    }
}
