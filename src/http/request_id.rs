//! The request id: the client's `x-request-id` when it is well-formed, a fresh random one
//! otherwise.

use axum::http::{HeaderName, HeaderValue};

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id for a request whose `x-request-id` header is `sent`.
pub fn for_request(sent: Option<&HeaderValue>) -> HeaderValue {
    sent.filter(|value| acceptable(value))
        .cloned()
        .unwrap_or_else(fresh)
}

/// A client's id is kept when it is 1 to 128 visible ASCII characters without spaces; anything
/// else (which could forge log lines) is replaced.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
}

/// A random UUID (version 4) from the thread's generator: no system call per request, which
/// `Uuid::new_v4` makes.
fn fresh() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_well_formed_ids_and_replaces_the_rest() {
        let kept = HeaderValue::from_static("client-chosen-42");
        assert_eq!(for_request(Some(&kept)), kept);
        for bad in ["", "has spaces", &"x".repeat(129)] {
            let replaced = for_request(Some(&HeaderValue::from_str(bad).expect("value")));
            assert_ne!(replaced.as_bytes(), bad.as_bytes());
        }
        let a = for_request(None);
        let b = for_request(None);
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a.to_str().expect("ascii")).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
    }
}
