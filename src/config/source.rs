//! Reading and checking single variables. Each reader records a problem naming the variable when
//! the value is wrong; readers of secrets never repeat the value.

use std::collections::HashMap;
use std::str::FromStr;

use secrecy::SecretString;
use url::Url;

pub(super) struct Source<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<String>,
}

impl<'a> Source<'a> {
    pub(super) fn new(vars: &'a HashMap<String, String>) -> Self {
        Source {
            vars,
            problems: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, name: &str, message: impl AsRef<str>) {
        self.problems.push(format!("{name} {}", message.as_ref()));
    }

    pub(super) fn into_problems(self) -> Vec<String> {
        self.problems
    }

    /// A variable counts as set when it holds something other than whitespace.
    pub(super) fn is_set(&self, name: &str) -> bool {
        self.text(name).is_some()
    }

    pub(super) fn text(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Parses a non-secret value (or the default); a bad value is quoted in the problem.
    pub(super) fn parse_with<T>(
        &mut self,
        name: &str,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.text(name).unwrap_or(default);
        match parse(raw) {
            Ok(value) => Some(value),
            Err(why) => {
                self.problem(name, format!("{why} (got {raw:?})"));
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub(super) fn number<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(raw) = self.text(name) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(value) if value >= min && value <= max => value,
            _ => {
                self.problem(
                    name,
                    format!("must be a whole number from {min} to {max} (got {raw:?})"),
                );
                default
            }
        }
    }

    pub(super) fn secret(&self, name: &str) -> Option<SecretString> {
        self.text(name).map(SecretString::from)
    }

    /// A secret that must start with one of `prefixes` (API keys announce their kind).
    pub(super) fn secret_with_prefix(
        &mut self,
        name: &str,
        prefixes: &[&str],
    ) -> Option<SecretString> {
        let raw = self.text(name)?;
        if prefixes.iter().any(|p| raw.starts_with(p)) {
            Some(SecretString::from(raw))
        } else {
            let expected = prefixes
                .iter()
                .map(|p| format!("{p}..."))
                .collect::<Vec<_>>()
                .join(" or ");
            self.problem(
                name,
                format!("does not look right: it should start with {expected}"),
            );
            None
        }
    }

    /// A URL whose text is secret (webhook URLs and DSNs carry credentials).
    pub(super) fn secret_url(&mut self, name: &str, https_only: bool) -> Option<SecretString> {
        let raw = self.text(name)?;
        match Url::parse(raw) {
            Ok(url) if url.scheme() == "https" || (!https_only && url.scheme() == "http") => {
                Some(SecretString::from(raw))
            }
            Ok(_) if https_only => {
                self.problem(name, "must be an https:// URL");
                None
            }
            _ => {
                self.problem(name, "is not a valid URL (value not shown: it is a secret)");
                None
            }
        }
    }

    /// A PostgreSQL connection URL. It may hold a password, so it is never quoted.
    pub(super) fn postgres_url(&mut self, name: &str) -> Option<SecretString> {
        let raw = self.text(name)?;
        match Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => {
                Some(SecretString::from(raw))
            }
            Ok(_) => {
                self.problem(name, "must start with postgres:// or postgresql://");
                None
            }
            Err(e) => {
                self.problem(
                    name,
                    format!("is not a valid URL ({e}; value not shown: it may hold a password)"),
                );
                None
            }
        }
    }

    /// An http(s) URL, or the default when unset.
    pub(super) fn http_url(&mut self, name: &str, default: &str) -> Option<Url> {
        let raw = self.text(name).unwrap_or(default);
        self.check_http_url(name, raw)
    }

    /// An http(s) URL, or None when unset.
    pub(super) fn http_url_opt(&mut self, name: &str) -> Option<Url> {
        let raw = self.text(name)?;
        self.check_http_url(name, raw)
    }

    fn check_http_url(&mut self, name: &str, raw: &str) -> Option<Url> {
        match Url::parse(raw) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(url)
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                self.problem(name, "must not contain a user name or password");
                None
            }
            _ => {
                self.problem(
                    name,
                    format!("must be an http:// or https:// URL with a host (got {raw:?})"),
                );
                None
            }
        }
    }

    /// An S3 bucket name: 3 to 63 characters of lower-case letters, digits, dots and hyphens,
    /// starting and ending with a letter or digit.
    pub(super) fn bucket(&mut self, name: &str, default: &str) -> String {
        let raw = self.text(name).unwrap_or(default);
        let edges_ok = raw
            .chars()
            .next()
            .zip(raw.chars().last())
            .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
        let chars_ok = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !(3..=63).contains(&raw.len()) || !edges_ok || !chars_ok {
            self.problem(
                name,
                format!(
                    "must be 3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit (got {raw:?})"
                ),
            );
        }
        raw.to_string()
    }

    /// When some of a group of variables are set, all must be. Returns whether the whole group is.
    pub(super) fn all_or_none(&mut self, group: &[&str]) -> bool {
        let missing: Vec<&str> = group.iter().copied().filter(|n| !self.is_set(n)).collect();
        if missing.len() == group.len() {
            return false;
        }
        for name in &missing {
            self.problem(
                name,
                format!("is required when any of {} is set", group.join(", ")),
            );
        }
        missing.is_empty()
    }
}
