//! Session tokens: JWTs signed with HS256, and nothing else.
//!
//! Only the one algorithm is accepted, whatever the header says, so `alg: none` and algorithm
//! confusion have nowhere to go. The signature is checked in constant time before the claims are
//! even parsed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The session row, checked on every request so a session can be revoked.
    pub sid: Uuid,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// Why a token was refused. Never shown to clients (they get a plain 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not three dot-separated parts")]
    Shape,
    #[error("malformed header")]
    Header,
    #[error("algorithm {0:?} is not HS256")]
    Algorithm(String),
    #[error("bad signature")]
    Signature,
    #[error("malformed claims")]
    Claims,
    #[error("expired")]
    Expired,
    #[error("issued in the future")]
    NotYetValid,
}

/// Allowance for clocks that disagree a little between servers.
const LEEWAY_SECS: i64 = 60;

const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}

pub fn sign(key: &[u8], claims: &Claims) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!("{HEADER_B64}.{}", B64.encode(payload));
    let signature = mac(key, signing_input.as_bytes()).finalize().into_bytes();
    format!("{signing_input}.{}", B64.encode(signature))
}

pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let header: Header = B64
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Header)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm(header.alg));
    }
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(JwtError::Header);
    }
    let signature = B64.decode(signature).map_err(|_| JwtError::Signature)?;
    let signing_input_len = token.len() - signature_len(token);
    mac(key, &token.as_bytes()[..signing_input_len])
        .verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;
    let claims: Claims = B64
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Claims)?;
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    if claims.iat > now + LEEWAY_SECS {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

/// Length of ".signature" at the end of the token.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn mac(key: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(now: i64) -> Claims {
        Claims {
            sub: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            iat: now,
            exp: now + 3600,
        }
    }

    #[test]
    fn round_trip() {
        let c = claims(1_000_000);
        let token = sign(KEY, &c);
        assert_eq!(verify(KEY, &token, 1_000_001), Ok(c));
    }

    #[test]
    fn header_constant_is_what_it_says() {
        let decoded = B64.decode(HEADER_B64).expect("base64");
        assert_eq!(decoded, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    #[test]
    fn refuses_tampering_expiry_other_keys_and_other_algorithms() {
        let now = 1_000_000;
        let c = claims(now);
        let token = sign(KEY, &c);

        assert_eq!(verify(KEY, &token, now + 3600), Err(JwtError::Expired));
        assert_eq!(
            verify(b"another secret, also 32 bytes long", &token, now),
            Err(JwtError::Signature)
        );

        // Another user's id in the payload, signature unchanged.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut forged = c.clone();
        forged.sub = Uuid::new_v4();
        parts[1] = B64.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(verify(KEY, &parts.join("."), now), Err(JwtError::Signature));

        // alg: none, with and without a signature.
        let none = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(&c).expect("json"));
        assert_eq!(
            verify(KEY, &format!("{none}.{payload}."), now),
            Err(JwtError::Algorithm("none".into()))
        );
        assert_eq!(
            verify(KEY, &format!("{none}.{payload}"), now),
            Err(JwtError::Shape)
        );
        let hs512 = B64.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        assert_eq!(
            verify(KEY, &format!("{hs512}.{payload}.{}", parts[2]), now),
            Err(JwtError::Algorithm("HS512".into()))
        );

        assert_eq!(verify(KEY, "garbage", now), Err(JwtError::Shape));
        assert_eq!(verify(KEY, "a.b.c", now), Err(JwtError::Header));

        let mut future = claims(now + 3600);
        future.exp = now + 7200;
        assert_eq!(
            verify(KEY, &sign(KEY, &future), now),
            Err(JwtError::NotYetValid)
        );
    }
}
