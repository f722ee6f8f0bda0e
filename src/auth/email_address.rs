//! Email addresses, parsed once at the boundary: trimmed, lower-cased, all-ASCII and checked.
//!
//! The local part must be ASCII; the domain may be typed in Unicode and is stored in its IDNA
//! ASCII form (punycode), so `ｇmail.com` (fullwidth) and `gmail.com` are one address. A domain
//! label that mixes scripts people confuse (Latin with Cyrillic or Greek, say `gmаil.com` with a
//! Cyrillic `а`) is refused: it can only be meant to look like another domain.

use std::fmt;

use sha2::{Digest, Sha256};

/// A normalised email address: ASCII, lower case, the domain in punycode where it needs it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Domains whose mailboxes ignore dots in the local part, and the domain they all deliver to.
const DOTLESS_DOMAINS: &[&str] = &["gmail.com", "googlemail.com"];
const DOTLESS_CANONICAL: &str = "gmail.com";

impl EmailAddress {
    /// Trims `raw` and checks its shape: one `@`; a local part of 1 to 64 ASCII characters
    /// (lower-cased); a domain of at least two labels, converted to ASCII by IDNA (UTS 46,
    /// STD3 rules) with no label mixing look-alike scripts; at most 254 characters in all.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let email = raw.trim();
        if email.is_empty() {
            return Err("Enter your email address.");
        }
        if email.len() > 254 {
            return Err("That email address is too long.");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("That does not look like an email address: it has no @.");
        };
        let local = parse_local(local)?;
        let domain = parse_domain(domain)?;
        let email = format!("{local}@{domain}");
        if email.len() > 254 {
            return Err("That email address is too long.");
        }
        Ok(EmailAddress(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The mailbox this address delivers to, as far as we can tell, for the send limits only
    /// (accounts stay keyed on the exact address): the local part without its `+tag`, and for
    /// Gmail without dots and with googlemail.com read as gmail.com. So `V.ictim+1@googlemail.com`
    /// and `victim@gmail.com` share one budget.
    pub fn canonical_mailbox(&self) -> String {
        let (local, domain) = self.parts();
        let local = local.split_once('+').map_or(local, |(base, _)| base);
        if DOTLESS_DOMAINS.contains(&domain) {
            format!("{}@{DOTLESS_CANONICAL}", local.replace('.', ""))
        } else {
            format!("{local}@{domain}")
        }
    }

    /// The domain of [`EmailAddress::canonical_mailbox`], for the per-domain send budget.
    pub fn canonical_domain(&self) -> &str {
        let (_, domain) = self.parts();
        if DOTLESS_DOMAINS.contains(&domain) {
            DOTLESS_CANONICAL
        } else {
            domain
        }
    }

    /// The first 16 bytes of the canonical mailbox's SHA-256, in hex: what rate-limit keys hold
    /// instead of the address, which is personal data.
    pub fn mailbox_digest(&self) -> String {
        let digest = Sha256::digest(self.canonical_mailbox().as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// A short digest of [`EmailAddress::canonical_domain`], for the per-domain limit's key
    /// (a domain may be up to 253 characters; keys are kept short).
    pub fn domain_digest(&self) -> String {
        let digest = Sha256::digest(self.canonical_domain().as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn parts(&self) -> (&str, &str) {
        // `parse` guarantees exactly one `@`.
        self.0.split_once('@').unwrap_or((self.0.as_str(), ""))
    }
}

/// `email` as people may be shown it without giving it away: the first character of the local
/// part, bullets, then the domain (`a•••@example.com`). Takes any stored text, so addresses saved
/// under older rules still mask.
pub fn masked(email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let first: String = local.chars().take(1).collect();
    format!("{first}•••@{domain}")
}

/// The local part, lower-cased, if it is 1 to 64 ASCII characters of the usual kinds with no
/// leading, trailing or doubled dot.
fn parse_local(local: &str) -> Result<String, &'static str> {
    if !local.is_ascii() {
        return Err(
            "The part before the @ may only use the letters a to z, digits and . _ + - \
                    (no accented, non-Latin or full-width characters).",
        );
    }
    let ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if ok {
        Ok(local.to_ascii_lowercase())
    } else {
        Err("That does not look like an email address.")
    }
}

/// The domain in its ASCII form, if IDNA accepts it, it has at least two labels, and no label
/// mixes look-alike scripts.
fn parse_domain(domain: &str) -> Result<String, &'static str> {
    const MALFORMED: &str = "That does not look like an email address.";
    let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| MALFORMED)?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let shape_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !shape_ok {
        return Err(MALFORMED);
    }
    // Judge the scripts on the Unicode form IDNA maps to (fullwidth letters are plain Latin by
    // then), so punycode typed by hand is judged the same as the characters it stands for.
    let (unicode, decoded) = idna::domain_to_unicode(&ascii);
    if decoded.is_err() {
        return Err(MALFORMED);
    }
    if unicode.split('.').any(mixes_confusable_scripts) {
        return Err(
            "That email address's domain mixes alphabets (for example Latin and Cyrillic \
                    letters) the way look-alike addresses do. Type the address again.",
        );
    }
    Ok(ascii)
}

/// The scripts whose letters are classic homographs of one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
}

/// The confusable script `c` belongs to, by Unicode block; None for digits, hyphens, marks and
/// every other script (a label written wholly in, say, Arabic or Han is fine, and so is a label
/// mixing Han with Latin: those do not pass for one another).
fn script_of(c: char) -> Option<Script> {
    match u32::from(c) {
        0x41..=0x5A | 0x61..=0x7A => Some(Script::Latin),
        // Latin-1 letters (not × and ÷), Latin Extended-A and -B, IPA extensions.
        0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x2AF => Some(Script::Latin),
        // Latin Extended Additional, -C, -D and -E; fullwidth Latin letters.
        0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF | 0xAB30..=0xAB6F => {
            Some(Script::Latin)
        }
        0xFF21..=0xFF3A | 0xFF41..=0xFF5A => Some(Script::Latin),
        // Greek and Coptic (without the combining range before it), Greek Extended.
        0x370..=0x3FF | 0x1F00..=0x1FFF => Some(Script::Greek),
        // Cyrillic, Cyrillic Supplement, Extended-A, -B and -C.
        0x400..=0x52F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F | 0x1C80..=0x1C8F => {
            Some(Script::Cyrillic)
        }
        _ => None,
    }
}

/// Whether `label` holds letters of more than one of the confusable scripts.
fn mixes_confusable_scripts(label: &str) -> bool {
    let mut seen: Option<Script> = None;
    for script in label.chars().filter_map(script_of) {
        match seen {
            None => seen = Some(script),
            Some(first) if first != script => return true,
            Some(_) => {}
        }
    }
    false
}

/// Debug hides the address: it is personal data and must not reach logs by accident.
impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailAddress(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> String {
        EmailAddress::parse(raw)
            .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
            .0
    }

    #[test]
    fn normalises_and_checks() {
        assert_eq!(parsed("  Ada@Example.COM "), "ada@example.com");
        assert!(EmailAddress::parse("first.last+tag@sub.example.co.uk").is_ok());
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@exa mple.com",
            ".ada@example.com",
            "ada..x@example.com",
            "ada@-example.com",
            "ada@example..com",
            "ada@example.com.",
            "ada@exa_mple.com",
            "<script>@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(EmailAddress::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert_eq!(
            format!("{:?}", EmailAddress::parse("ada@example.com")),
            "Ok(EmailAddress(..))"
        );
    }

    #[test]
    fn the_local_part_must_be_ascii() {
        for bad in [
            "ｖictim@gmail.com",
            "josé@example.com",
            "виктор@example.com",
        ] {
            let refused = EmailAddress::parse(bad).expect_err(bad);
            assert!(refused.contains("before the @"), "{bad}: {refused}");
        }
    }

    #[test]
    fn domains_become_ascii() {
        // Fullwidth letters and an ideographic full stop map to the plain domain.
        assert_eq!(parsed("victim@ｇｍａｉｌ。com"), "victim@gmail.com");
        assert_eq!(parsed("ada@BÜCHER.example"), "ada@xn--bcher-kva.example");
        assert_eq!(
            parsed("ada@xn--bcher-kva.example"),
            "ada@xn--bcher-kva.example"
        );
        // A label wholly in one non-Latin script is a real domain.
        assert_eq!(parsed("ivan@пример.рф"), "ivan@xn--e1afmkfd.xn--p1ai");
        assert_eq!(
            parsed("ada@παράδειγμα.ελ"),
            "ada@xn--hxajbheg2az3al.xn--qxam"
        );
        assert!(parsed("ada@例え.jp").is_ascii());
        assert!(parsed("x@中文abc.com").starts_with("x@xn--"));
    }

    #[test]
    fn look_alike_domains_are_refused() {
        for bad in [
            "victim@gmаil.com",        // Cyrillic а
            "victim@xn--gmil-63d.com", // the same, typed as punycode
            "victim@gοogle.com",       // Greek ο
            "victim@аpple.com",        // Cyrillic а at the start
            "ivan@пpимер.рф",          // Latin p among Cyrillic
            "ada@παράδειγμa.ελ",       // Latin a among Greek
            "ada@πаράδειγμα.ελ",       // Cyrillic а among Greek
        ] {
            let refused = EmailAddress::parse(bad).expect_err(bad);
            assert!(refused.contains("mixes alphabets"), "{bad}: {refused}");
        }
        // Mixing across labels is fine: each label is one name.
        assert!(EmailAddress::parse("ada@пример.com").is_ok());
    }

    #[test]
    fn the_script_classifier() {
        assert_eq!(script_of('a'), Some(Script::Latin));
        assert_eq!(script_of('é'), Some(Script::Latin));
        assert_eq!(script_of('×'), None);
        assert_eq!(script_of('ａ'), Some(Script::Latin));
        assert_eq!(script_of('а'), Some(Script::Cyrillic));
        assert_eq!(script_of('ο'), Some(Script::Greek));
        assert_eq!(script_of('7'), None);
        assert_eq!(script_of('-'), None);
        assert_eq!(script_of('中'), None);
        assert!(!mixes_confusable_scripts("xn--abc-123"));
        assert!(!mixes_confusable_scripts("пример-2"));
        assert!(mixes_confusable_scripts("gmаil"));
    }

    #[test]
    fn canonical_mailboxes() {
        let canonical = |raw: &str| EmailAddress::parse(raw).expect(raw).canonical_mailbox();
        assert_eq!(canonical("Victim@Gmail.com"), "victim@gmail.com");
        assert_eq!(canonical("v.ictim+1@gmail.com"), "victim@gmail.com");
        assert_eq!(canonical("V.I.C.T.I.M@googlemail.com"), "victim@gmail.com");
        assert_eq!(canonical("victim+a+b@ｇmail.com"), "victim@gmail.com");
        // Dots matter elsewhere; tags are removed everywhere.
        assert_eq!(
            canonical("first.last+x@example.com"),
            "first.last@example.com"
        );
        assert_eq!(canonical("+only@example.com"), "@example.com");
        let a = EmailAddress::parse("v.ictim+2@googlemail.com").expect("valid");
        let b = EmailAddress::parse("victim@gmail.com").expect("valid");
        assert_eq!(a.mailbox_digest(), b.mailbox_digest());
        assert_eq!(a.mailbox_digest().len(), 32);
        assert_eq!(a.canonical_domain(), "gmail.com");
        assert_eq!(
            a.as_str(),
            "v.ictim+2@googlemail.com",
            "the account keeps its address"
        );
    }

    #[test]
    fn masking() {
        assert_eq!(masked("ada@example.com"), "a•••@example.com");
        assert_eq!(masked("b@x.org"), "b•••@x.org");
        assert_eq!(masked("élodie@example.com"), "é•••@example.com");
    }
}
