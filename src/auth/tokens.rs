//! Sign-in secrets: the link token and the one-time code. Only their SHA-256 hashes are stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::Rng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Digits in a one-time code.
pub const CODE_DIGITS: usize = 6;

/// A new link token: 32 random bytes, base64url (43 characters).
pub fn new_link_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// Whether `token` has the shape of a link token (so garbage is refused before any lookup).
pub fn is_link_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn hash_link_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new one-time code: six digits, uniformly drawn.
pub fn new_code() -> String {
    let n: u32 = rand::rng().random_range(0..1_000_000);
    format!("{n:06}")
}

/// The code with spaces and dashes removed, if it is then six digits.
pub fn normalise_code(raw: &str) -> Option<String> {
    let digits: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (digits.len() == CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The code's hash, salted with its link's id so equal codes of different links differ.
pub fn hash_code(link_id: Uuid, code: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"aide-sign-in-code:");
    hasher.update(link_id.as_bytes());
    hasher.update(code.as_bytes());
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_expected_shape_and_differ() {
        let a = new_link_token();
        let b = new_link_token();
        assert!(is_link_token(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_link_token("short"));
        assert!(!is_link_token(&format!("{}!", &a[..42])));
        assert_eq!(hash_link_token(&a).len(), 32);
    }

    #[test]
    fn codes_are_six_digits_and_normalised() {
        for _ in 0..100 {
            let code = new_code();
            assert_eq!(normalise_code(&code), Some(code.clone()));
        }
        assert_eq!(normalise_code(" 123-456 "), Some("123456".into()));
        assert_eq!(normalise_code("12345"), None);
        assert_eq!(normalise_code("12345a"), None);
        let id = Uuid::new_v4();
        assert_ne!(hash_code(id, "123456"), hash_code(Uuid::new_v4(), "123456"));
        assert_eq!(hash_code(id, "123456"), hash_code(id, "123456"));
    }
}
