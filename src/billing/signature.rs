//! Stripe's webhook signature: `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]`, where
//! each `v1` is HMAC-SHA256 of `"{t}.{raw body}"` under an endpoint's signing secret. While a
//! secret is rolled, Stripe signs with the old and the new one: any `v1` may match. Checked on
//! the raw bytes, in constant time, within a tolerance of the timestamp.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far from now the signed timestamp may be.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused (logged and counted; the sender gets one answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Stale => "stale",
            Refusal::Mismatch => "mismatch",
        }
    }
}

/// Checks `header` over `body` with `secret` at time `now` (unix seconds).
pub fn verify(header: Option<&str>, body: &[u8], secret: &str, now: i64) -> Result<(), Refusal> {
    let header = header.ok_or(Refusal::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| Refusal::Malformed)?),
            // Other schemes (v0 is Stripe's test scheme) are not ours to accept.
            "v1" => {
                if let Some(bytes) = decode_hex(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refusal::Malformed)?;
    if signatures.is_empty() {
        return Err(Refusal::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(Refusal::Stale);
    }
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).map_err(|_| Refusal::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    if signatures
        .iter()
        .any(|signature| mac.clone().verify_slice(signature).is_ok())
    {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

/// The header Stripe would send for `body` at `timestamp` (for tests and the stand-in).
pub fn sign(body: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Stripe's own library (`stripe` 16.1.0 on PyPI, see scripts/stripe-signature-vector.py):
    /// `stripe.WebhookSignature.generate_signature_header(PAYLOAD, SECRET, timestamp=T)`.
    const SECRET: &str = "whsec_aideTestVectorSecret0123456789";
    const T: i64 = 1_764_400_000;
    const PAYLOAD: &str = r#"{"id":"evt_vector_1","object":"event","type":"customer.subscription.updated","api_version":"2026-10-28.endive","created":1764400000,"data":{"object":{"id":"sub_vector","object":"subscription","customer":"cus_vector","status":"active"}}}"#;
    const HEADER: &str =
        "t=1764400000,v1=bb6d06e854c2525c706b6f4347ba056f6e682492f053e8c7c349d7a64140315b";

    #[test]
    fn stripes_own_vector_verifies_and_we_sign_it_the_same() {
        assert_eq!(
            verify(Some(HEADER), PAYLOAD.as_bytes(), SECRET, T + 10),
            Ok(())
        );
        assert_eq!(sign(PAYLOAD.as_bytes(), SECRET, T), HEADER);
    }

    #[test]
    fn every_bad_variant_is_refused() {
        let body = PAYLOAD.as_bytes();
        assert_eq!(verify(None, body, SECRET, T), Err(Refusal::Missing));
        assert_eq!(
            verify(Some("nonsense"), body, SECRET, T),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            verify(Some("t=x,v1=00"), body, SECRET, T),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            verify(Some("t=1764400000"), body, SECRET, T),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            verify(Some(HEADER), body, SECRET, T + TOLERANCE_SECS + 1),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify(Some(HEADER), body, SECRET, T - TOLERANCE_SECS - 1),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify(Some(HEADER), body, "whsec_other", T),
            Err(Refusal::Mismatch)
        );
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify(Some(HEADER), &tampered, SECRET, T),
            Err(Refusal::Mismatch)
        );
        // A v0 (test scheme) signature of the right value is not a v1.
        let v0 = HEADER.replace("v1=", "v0=");
        assert_eq!(verify(Some(&v0), body, SECRET, T), Err(Refusal::Malformed));
    }

    #[test]
    fn any_v1_may_match_while_a_secret_rolls() {
        let body = PAYLOAD.as_bytes();
        let old = sign(body, "whsec_old", T);
        let new_v1 = HEADER
            .split_once(",v1=")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let both = format!("{old},v1={new_v1}");
        assert_eq!(verify(Some(&both), body, SECRET, T), Ok(()));
        assert_eq!(verify(Some(&both), body, "whsec_old", T), Ok(()));
        assert_eq!(
            verify(Some(&both), body, "whsec_third", T),
            Err(Refusal::Mismatch)
        );
    }
}
