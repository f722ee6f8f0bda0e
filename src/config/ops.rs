//! Operating the service: error reports to Sentry, alerts to Slack, the log format. Each is off
//! (or has a default) when its variables are unset.

use std::fmt;

use secrecy::SecretString;
use url::Url;

use super::Environment;
use super::source::Source;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For a person at a terminal.
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Where error reports go, read from SENTRY_DSN
/// (`{scheme}://{public_key}@{host}[:{port}][/{path}]/{project_id}`).
#[derive(Clone)]
pub struct SentryDsn {
    /// The whole DSN, as Sentry wants it in an envelope's header.
    pub dsn: SecretString,
    /// The key sent in `X-Sentry-Auth`.
    pub public_key: SecretString,
    /// `{scheme}://{host}[:{port}][/{path}]/api/{project_id}/envelope/`.
    pub envelope_url: Url,
}

impl fmt::Debug for SentryDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentryDsn")
            .field("envelope_url", &self.envelope_url.as_str())
            .finish_non_exhaustive()
    }
}

impl SentryDsn {
    /// Parses a DSN; the error does not repeat the value.
    pub fn parse(raw: &str) -> Result<Self, String> {
        const SHAPE: &str = "must be a Sentry DSN such as https://PUBLIC_KEY@o0.ingest.sentry.io/0";
        let url = Url::parse(raw).map_err(|_| SHAPE.to_string())?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(SHAPE.to_string());
        }
        let key = url.username();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{SHAPE} (its public key is missing)"));
        }
        let path = url.path().trim_end_matches('/');
        let (prefix, project) = path.rsplit_once('/').ok_or_else(|| SHAPE.to_string())?;
        if project.is_empty() || !project.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("{SHAPE} (it must end with the project's number)"));
        }
        let mut envelope_url = url.clone();
        let _ = envelope_url.set_username("");
        let _ = envelope_url.set_password(None);
        envelope_url.set_query(None);
        envelope_url.set_fragment(None);
        envelope_url.set_path(&format!("{prefix}/api/{project}/envelope/"));
        Ok(SentryDsn {
            dsn: SecretString::from(raw),
            public_key: SecretString::from(key),
            envelope_url,
        })
    }
}

/// Error reports, alerts and logs.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// SENTRY_DSN: send errors and panics to Sentry (off when unset; ENVIRONMENT is then
    /// required).
    pub sentry: Option<SentryDsn>,
    /// SLACK_WEBHOOK: a Slack incoming webhook for alerts (off when unset).
    pub slack_webhook: Option<SecretString>,
    /// ALERT_5XX_PERCENT: alert when more than this share of the last five minutes' requests
    /// answered 5xx (default 5; at least 20 requests).
    pub alert_5xx_percent: u32,
    /// ALERT_AI_ERROR_PERCENT: alert when more than this share of the last fifteen minutes' turns
    /// failed at the model provider (default 20; at least 5 turns).
    pub alert_ai_error_percent: u32,
    /// ALERT_COOLDOWN_MINUTES: an alert that keeps firing is posted again at most this often
    /// (default 30).
    pub alert_cooldown_minutes: u32,
    /// ALERT_DIGEST_HOUR: the hour (UTC) the daily digest is posted (default 8).
    pub alert_digest_hour: u32,
    /// LOG_FORMAT: `text` or `json` (default json in staging and production, text in
    /// development).
    pub log_format: LogFormat,
}

impl OpsConfig {
    pub(super) fn from_source(src: &mut Source<'_>, environment: Environment) -> OpsConfig {
        let sentry = src
            .secret_with("SENTRY_DSN", Some("errors are not reported"), |raw| {
                let dsn = SentryDsn::parse(raw)?;
                check_scheme(&dsn.envelope_url, environment)
            })
            .and_then(|raw| {
                use secrecy::ExposeSecret;
                SentryDsn::parse(raw.expose_secret()).ok()
            });
        if sentry.is_some() && !src.is_set("ENVIRONMENT") {
            src.problem(
                "ENVIRONMENT",
                "is required when SENTRY_DSN is set, so reports say which deployment sent them",
            );
        }
        let slack_webhook = src.secret_with("SLACK_WEBHOOK", Some("no alerts are posted"), |raw| {
            let url = Url::parse(raw).map_err(|_| {
                "must be a Slack incoming webhook URL (https://hooks.slack.com/services/...)"
                    .to_string()
            })?;
            if url.host().is_none() {
                return Err("must be a URL with a host".to_string());
            }
            check_scheme(&url, environment)
        });
        let alert_5xx_percent = src.number("ALERT_5XX_PERCENT", 5, 1, 100);
        let alert_ai_error_percent = src.number("ALERT_AI_ERROR_PERCENT", 20, 1, 100);
        let alert_cooldown_minutes = src.number("ALERT_COOLDOWN_MINUTES", 30, 1, 1440);
        let alert_digest_hour = src.number("ALERT_DIGEST_HOUR", 8, 0, 23);
        let default_format = if environment.is_deployed() {
            "json"
        } else {
            "text"
        };
        let log_format = src
            .parse_with("LOG_FORMAT", default_format, |v| match v {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("must be text or json".to_string()),
            })
            .unwrap_or(LogFormat::Text);
        OpsConfig {
            sentry,
            slack_webhook,
            alert_5xx_percent,
            alert_ai_error_percent,
            alert_cooldown_minutes,
            alert_digest_hour,
            log_format,
        }
    }
}

/// https always; plain http only to a stand-in on this machine, and only in development.
fn check_scheme(url: &Url, environment: Environment) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if !environment.is_deployed() && is_loopback(url) => Ok(()),
        "http" if environment.is_deployed() => Err(format!("must use https in {environment}")),
        "http" => Err("must use https (plain http only to 127.0.0.1, ::1 or localhost)".into()),
        _ => Err("must be an https:// URL".to_string()),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_dsn_gives_the_envelope_address_and_key() {
        let dsn = SentryDsn::parse("https://abc123@o1.ingest.sentry.io/42").expect("valid");
        assert_eq!(
            dsn.envelope_url.as_str(),
            "https://o1.ingest.sentry.io/api/42/envelope/"
        );
        assert_eq!(dsn.public_key.expose_secret(), "abc123");
        let local = SentryDsn::parse("http://key@127.0.0.1:9000/sentry/7").expect("valid");
        assert_eq!(
            local.envelope_url.as_str(),
            "http://127.0.0.1:9000/sentry/api/7/envelope/"
        );
        for bad in [
            "https://o1.ingest.sentry.io/42",
            "https://k@o1.ingest.sentry.io/",
            "https://k@o1.ingest.sentry.io/project",
            "ftp://k@host/1",
        ] {
            let why = SentryDsn::parse(bad).expect_err(bad);
            assert!(!why.contains(bad), "{why}");
        }
    }
}
