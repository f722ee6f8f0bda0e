//! Reading and checking single variables. A reader call is the one declaration of its variable:
//! the name, the default (or what being unset means), the check, and whether it is a secret.
//!
//! Each reader records a problem naming the variable when the value is wrong (readers of secrets
//! never repeat the value), and records how `aide config check` shows the variable: a plain value
//! as its effective value, a secret as set or not.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use secrecy::SecretString;
use url::Url;

use super::redact_url;

/// Every variable read, in the order read, with how `aide config check` shows it.
pub(super) type Summary = Vec<(&'static str, String)>;

pub(super) struct Source<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<String>,
    summary: Summary,
}

impl<'a> Source<'a> {
    pub(super) fn new(vars: &'a HashMap<String, String>) -> Self {
        Source {
            vars,
            problems: Vec::new(),
            summary: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, name: &str, message: impl AsRef<str>) {
        self.problems.push(format!("{name} {}", message.as_ref()));
    }

    /// The problems found, and every variable read with how it is shown.
    pub(super) fn finish(self) -> (Vec<String>, Summary) {
        (self.problems, self.summary)
    }

    /// A variable counts as set when it holds something other than whitespace. Asking is not
    /// reading: each variable is read (and shown) once, by its reader.
    pub(super) fn is_set(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    fn raw(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn show(&mut self, name: &'static str, shown: impl Into<String>) {
        debug_assert!(
            self.summary.iter().all(|(n, _)| *n != name),
            "{name} is read twice"
        );
        self.summary.push((name, shown.into()));
    }

    /// Shows an unset variable, with what that means when `unset_means` says.
    fn show_unset(&mut self, name: &'static str, unset_means: Option<&str>) {
        let shown = match unset_means {
            Some(means) => format!("(not set: {means})"),
            None => "(not set)".to_string(),
        };
        self.show(name, shown);
    }

    /// A value that failed its check: the configuration is refused, so this is never printed,
    /// but every variable read keeps its row.
    fn show_invalid(&mut self, name: &'static str) {
        self.show(name, "(invalid)");
    }

    /// Plain text, or the default when unset.
    pub(super) fn text(&mut self, name: &'static str, default: &'a str) -> &'a str {
        let value = self.raw(name).unwrap_or(default);
        self.show(name, value);
        value
    }

    /// Plain text, or None when unset (`unset_means` says what happens then).
    pub(super) fn text_opt(&mut self, name: &'static str, unset_means: &str) -> Option<&'a str> {
        let value = self.raw(name);
        match value {
            Some(value) => self.show(name, value),
            None => self.show_unset(name, Some(unset_means)),
        }
        value
    }

    /// Parses a plain value (or the default); a bad value is quoted in the problem.
    pub(super) fn parse_with<T: Display>(
        &mut self,
        name: &'static str,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.raw(name).unwrap_or(default);
        self.parse_raw(name, raw, parse)
    }

    /// Parses a plain value, or None when unset (`unset_means` says what happens then).
    pub(super) fn parse_opt<T: Display>(
        &mut self,
        name: &'static str,
        unset_means: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let Some(raw) = self.raw(name) else {
            self.show_unset(name, Some(unset_means));
            return None;
        };
        self.parse_raw(name, raw, parse)
    }

    fn parse_raw<T: Display>(
        &mut self,
        name: &'static str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(value) => {
                self.show(name, value.to_string());
                Some(value)
            }
            Err(why) => {
                self.problem(name, format!("{why} (got {raw:?})"));
                self.show_invalid(name);
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub(super) fn number<T>(&mut self, name: &'static str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + Display,
    {
        let value = match self.raw(name) {
            None => default,
            Some(raw) => match raw.parse::<T>() {
                Ok(value) if value >= min && value <= max => value,
                _ => {
                    self.problem(
                        name,
                        format!("must be a whole number from {min} to {max} (got {raw:?})"),
                    );
                    default
                }
            },
        };
        self.show(name, value.to_string());
        value
    }

    /// A secret, shown only as set or not (with what being unset means, when `unset_means` says).
    pub(super) fn secret(
        &mut self,
        name: &'static str,
        unset_means: Option<&str>,
    ) -> Option<SecretString> {
        self.secret_with(name, unset_means, |_| Ok(()))
    }

    /// A secret that `check` must accept. A refusal is reported in `check`'s words, which must
    /// not repeat the value.
    pub(super) fn secret_with(
        &mut self,
        name: &'static str,
        unset_means: Option<&str>,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<SecretString> {
        let Some(raw) = self.raw(name) else {
            self.show_unset(name, unset_means);
            return None;
        };
        self.show(name, "(set, redacted)");
        match check(raw) {
            Ok(()) => Some(SecretString::from(raw)),
            Err(why) => {
                self.problem(name, why);
                None
            }
        }
    }

    /// A PostgreSQL connection URL. It may hold a password, so it is never quoted, and it is
    /// shown with the password redacted.
    pub(super) fn postgres_url(
        &mut self,
        name: &'static str,
        unset_means: &str,
    ) -> Option<SecretString> {
        let Some(raw) = self.raw(name) else {
            self.show_unset(name, Some(unset_means));
            return None;
        };
        self.show(name, redact_url(raw));
        match Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => {
                Some(SecretString::from(raw))
            }
            Ok(_) => {
                self.problem(name, "must start with postgres:// or postgresql://");
                None
            }
            // A Unix socket: `postgresql://user@/db?host=/run/dir` (what `aide db url` prints)
            // has no host before the path, which the url crate refuses and PostgreSQL accepts.
            Err(url::ParseError::EmptyHost)
                if (raw.starts_with("postgres://") || raw.starts_with("postgresql://"))
                    && raw.parse::<crate::db::ConnectOptions>().is_ok() =>
            {
                Some(SecretString::from(raw))
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
    pub(super) fn http_url(&mut self, name: &'static str, default: &str) -> Option<Url> {
        let raw = self.raw(name).unwrap_or(default);
        self.check_http_url(name, raw)
    }

    /// An http(s) URL, or None when unset (`unset_means` says what happens then).
    pub(super) fn http_url_opt(&mut self, name: &'static str, unset_means: &str) -> Option<Url> {
        let Some(raw) = self.raw(name) else {
            self.show_unset(name, Some(unset_means));
            return None;
        };
        self.check_http_url(name, raw)
    }

    fn check_http_url(&mut self, name: &'static str, raw: &str) -> Option<Url> {
        match Url::parse(raw) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                self.show(name, url.to_string());
                return Some(url);
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                self.problem(name, "must not contain a user name or password");
            }
            _ => {
                self.problem(
                    name,
                    format!("must be an http:// or https:// URL with a host (got {raw:?})"),
                );
            }
        }
        self.show_invalid(name);
        None
    }

    /// An S3 bucket name: 3 to 63 characters of lower-case letters, digits, dots and hyphens,
    /// starting and ending with a letter or digit.
    pub(super) fn bucket(&mut self, name: &'static str, default: &str) -> String {
        let raw = self.raw(name).unwrap_or(default);
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
        self.show(name, raw);
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
