//! Configuration: read once from the environment (and an optional `.env` file), validated in one
//! place, then passed around as a value. Nothing reads the environment after start-up.
//!
//! Every problem found is reported at once, each naming its variable; secret values never appear in
//! `Debug` output or in error messages.

mod ai;
mod billing;
mod limits;
mod ops;
mod source;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use ai::{AiConfig, AiProvider, Prices};
pub use billing::BillingConfig;
pub use limits::{Limits, TierLimits};
pub use ops::{LogFormat, OpsConfig, SentryDsn};
use source::{Source, Summary};

/// The deployment a process belongs to. `staging` follows the same rules as `production`: both are
/// deployed environments that must not run on local stand-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }

    /// Staging and production: real services required, no generated secrets.
    pub fn is_deployed(self) -> bool {
        !matches!(self, Environment::Development)
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The minimum length of `JWT_SECRET`, in bytes (HS256 wants at least its output size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// The whole configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    /// ENVIRONMENT: development (default), staging or production.
    pub environment: Environment,
    /// HOST: the address the HTTP listener binds (default 127.0.0.1).
    pub host: IpAddr,
    /// PORT: the HTTP listener's port (default 8000).
    pub port: u16,
    /// AIDE_DATA_DIR: local state (managed database, local storage, outbox, generated secrets);
    /// default `./aide-data`.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    /// JWT_SECRET: the HS256 key for session tokens. In development it may be left unset, and a
    /// random one is generated and kept in the data folder (see [`crate::secrets`]).
    pub jwt_secret: Option<SecretString>,
    /// APP_URL: where people reach the app (default `http://{HOST}:{PORT}`). Sign-in links point here.
    pub app_url: Url,
    /// PUBLIC_URL: the origin published pages are served from (default APP_URL). A separate origin
    /// keeps user-written pages away from the app's cookies.
    pub public_url: Url,
    pub storage: StorageConfig,
    pub email: EmailConfig,
    /// TRUSTED_PROXY_HEADER: a header set by the proxy in front of the server that holds the
    /// client's address (`x-forwarded-for`, `cf-connecting-ip`, `x-real-ip`). Unset, the socket's
    /// peer address is the client's: forwarded headers are not believed.
    pub trusted_proxy_header: Option<String>,
    pub limits: Limits,
    /// The model provider for AI turns (see [`AiConfig`]); None: turns are off.
    pub ai: Option<AiConfig>,
    /// Stripe, for the Pro plan (see [`BillingConfig`]); None: billing is off.
    pub billing: Option<BillingConfig>,
    /// METRICS_TOKEN: the bearer token `/metrics` asks for; unset, `/metrics` is off (404).
    pub metrics_token: Option<SecretString>,
    /// Sentry, Slack and the log format (see [`OpsConfig`]).
    pub ops: OpsConfig,
    /// Every variable read, as `aide config check` shows it: recorded by the readers while
    /// loading, so no list of variables is kept apart from the code that reads them.
    summary: Summary,
}

/// Where the database is.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// DATABASE_URL: the server's login role (aide_app). Unset in development: a private
    /// PostgreSQL cluster is started under AIDE_DATA_DIR.
    pub url: Option<SecretString>,
    /// DATABASE_ADMIN_URL: a role that may create roles and owns the database, used only to run
    /// migrations. Defaults to DATABASE_URL.
    pub admin_url: Option<SecretString>,
    /// DATABASE_MAX_CONNECTIONS: connections in all (default 10): one listens for page changes,
    /// the rest are the pool.
    pub max_connections: u32,
    /// PG_BINDIR: the folder holding the PostgreSQL server binaries for the managed cluster.
    /// Found automatically when unset (`pg_config --bindir`, then /usr/lib/postgresql/*/bin).
    pub pg_bindir: Option<PathBuf>,
}

/// Object storage for page files.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// R2_WORKSPACE_BUCKET: private drafts (default aide-workspaces).
    pub workspace_bucket: String,
    /// R2_PUBLISHED_BUCKET: published snapshots (default aide-published).
    pub published_bucket: String,
    /// R2_ENDPOINT, R2_ACCESS_KEY, R2_SECRET_KEY: all three for S3-compatible storage (Cloudflare
    /// R2, AWS S3, MinIO); none for a local folder under AIDE_DATA_DIR (development only).
    pub r2: Option<R2Config>,
}

#[derive(Debug, Clone)]
pub struct R2Config {
    pub endpoint: Url,
    pub access_key: String,
    pub secret_key: SecretString,
}

/// Outgoing email.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// EMAIL_FROM: the sender, such as `AIde <login@example.com>`. Required with Resend.
    pub from: String,
    /// RESEND_API_KEY: send through Resend; unset, emails are written to a local outbox folder and
    /// the sign-in link is logged (development only).
    pub resend_api_key: Option<SecretString>,
    /// RESEND_API_URL: Resend's API (default https://api.resend.com).
    pub resend_api_url: Url,
}

/// Every problem found in the configuration, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment. Call [`load_dotenv`] first to honour a `.env` file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds a configuration from explicit variables: what tests use.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let mut src = Source::new(&vars);

        let environment = src
            .parse_with("ENVIRONMENT", "development", |v| match v {
                "development" => Ok(Environment::Development),
                "staging" => Ok(Environment::Staging),
                "production" => Ok(Environment::Production),
                _ => Err("must be one of development, staging, production".to_string()),
            })
            .unwrap_or(Environment::Development);
        let host = src
            .parse_with("HOST", "127.0.0.1", |v| {
                v.parse::<IpAddr>()
                    .map_err(|_| "must be an IP address such as 127.0.0.1 or 0.0.0.0".to_string())
            })
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let port = src
            .parse_with("PORT", "8000", |v| match v.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err("must be a port number from 1 to 65535".to_string()),
            })
            .unwrap_or(8000);
        let data_dir = PathBuf::from(src.text("AIDE_DATA_DIR", "./aide-data"));

        let database = DatabaseConfig {
            url: src.postgres_url(
                "DATABASE_URL",
                "managed local PostgreSQL under AIDE_DATA_DIR",
            ),
            admin_url: src.postgres_url("DATABASE_ADMIN_URL", "same as DATABASE_URL"),
            max_connections: src.number("DATABASE_MAX_CONNECTIONS", 10, 3, 1000),
            pg_bindir: src
                .text_opt("PG_BINDIR", "found automatically")
                .map(PathBuf::from),
        };

        let jwt_secret = src.secret_with(
            "JWT_SECRET",
            Some("generated and kept in AIDE_DATA_DIR"),
            |secret| match secret.len() {
                len if len < MIN_JWT_SECRET_BYTES => Err(format!(
                    "is {len} bytes long; it must be at least {MIN_JWT_SECRET_BYTES} (for example the output of `openssl rand -hex 32`)"
                )),
                _ => Ok(()),
            },
        );

        let host_for_url = match host {
            IpAddr::V4(v4) if v4.is_unspecified() => "localhost".to_string(),
            IpAddr::V6(v6) if v6.is_unspecified() => "localhost".to_string(),
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let default_app_url = format!("http://{host_for_url}:{port}");
        let app_url = src
            .http_url("APP_URL", &default_app_url)
            .or_else(|| Url::parse(&default_app_url).ok());
        let public_url = match &app_url {
            Some(app) => src.http_url("PUBLIC_URL", app.as_str()),
            None => None,
        };

        let storage = StorageConfig {
            r2: r2_config(&mut src),
            workspace_bucket: src.bucket("R2_WORKSPACE_BUCKET", "aide-workspaces"),
            published_bucket: src.bucket("R2_PUBLISHED_BUCKET", "aide-published"),
        };

        let resend_api_key = src.secret("RESEND_API_KEY", Some("local outbox under AIDE_DATA_DIR"));
        let email_from = src.parse_with("EMAIL_FROM", "AIde <login@aide.localhost>", |v| {
            looks_like_sender(v).then(|| v.to_string()).ok_or_else(|| {
                "must be an address such as login@example.com or `AIde <login@example.com>`"
                    .to_string()
            })
        });
        if resend_api_key.is_some() && !src.is_set("EMAIL_FROM") {
            src.problem("EMAIL_FROM", "is required when RESEND_API_KEY is set");
        }
        let resend_api_url = src
            .http_url("RESEND_API_URL", "https://api.resend.com")
            .unwrap_or_else(|| Url::parse("https://api.resend.com").expect("constant URL"));
        let email = EmailConfig {
            from: email_from.unwrap_or_default(),
            resend_api_key,
            resend_api_url,
        };

        let trusted_proxy_header = src.parse_opt(
            "TRUSTED_PROXY_HEADER",
            "the socket's peer address is the client's",
            |v| {
                let name = v.to_ascii_lowercase();
                match axum::http::HeaderName::from_bytes(name.as_bytes()) {
                    Ok(_) => Ok(name),
                    Err(_) => Err("must be a header name such as x-forwarded-for".to_string()),
                }
            },
        );
        let limits = Limits::from_source(&mut src);
        let ai = AiConfig::from_source(&mut src);
        let billing = BillingConfig::from_source(&mut src);
        let metrics_token = src.secret_with(
            "METRICS_TOKEN",
            Some("/metrics is off (404)"),
            |token| match token.len() {
                len if len < 24 => Err(format!(
                    "is {len} characters long; it must be at least 24 (for example the output of `openssl rand -hex 16`)"
                )),
                _ => Ok(()),
            },
        );
        let ops = OpsConfig::from_source(&mut src, environment);

        if environment.is_deployed() {
            let env = environment.as_str();
            if database.url.is_none() {
                src.problem(
                    "DATABASE_URL",
                    format!("is required in {env} (the managed local database is for development)"),
                );
            }
            if !src.is_set("JWT_SECRET") {
                src.problem(
                    "JWT_SECRET",
                    format!(
                        "is required in {env}: at least {MIN_JWT_SECRET_BYTES} random bytes, the same on every server"
                    ),
                );
            }
            if !src.is_set("APP_URL") {
                src.problem("APP_URL", format!("is required in {env}"));
            } else if app_url.as_ref().is_some_and(|u| u.scheme() != "https") {
                src.problem("APP_URL", format!("must use https in {env}"));
            }
            if !src.is_set("PUBLIC_URL") {
                src.problem(
                    "PUBLIC_URL",
                    format!(
                        "is required in {env}: published pages need a domain of their own, apart from APP_URL's (for example https://example-pages.com)"
                    ),
                );
            } else if let (Some(app), Some(public)) = (&app_url, &public_url)
                && let Err(why) = pages_domain_apart(app, public)
            {
                src.problem("PUBLIC_URL", format!("{why} in {env}"));
            }
            if storage.r2.is_none() {
                src.problem(
                    "R2_ENDPOINT",
                    format!(
                        "R2_ENDPOINT, R2_ACCESS_KEY and R2_SECRET_KEY are required in {env}: local file storage is for development"
                    ),
                );
            }
            if !src.is_set("AI_PROVIDER") {
                src.problem(
                    "AI_PROVIDER",
                    format!("is required in {env}: without a model provider no page can change"),
                );
            }
            if billing
                .as_ref()
                .is_some_and(|b| b.api_url.scheme() != "https")
            {
                src.problem("STRIPE_API_URL", format!("must use https in {env}"));
            }
            if email.resend_api_key.is_none() {
                src.problem(
                    "RESEND_API_KEY",
                    format!("is required in {env}: the local email outbox is for development"),
                );
            }
        }

        let (problems, summary) = src.finish();
        match (app_url, public_url) {
            (Some(app_url), Some(public_url)) if problems.is_empty() => Ok(Config {
                environment,
                host,
                port,
                data_dir,
                database,
                jwt_secret,
                app_url,
                public_url,
                storage,
                email,
                trusted_proxy_header,
                limits,
                ai,
                billing,
                metrics_token,
                ops,
                summary,
            }),
            _ => Err(ConfigError { problems }),
        }
    }

    /// What an operator should know about this configuration that does not stop it from running:
    /// one sentence each, logged as warnings when the server starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.pages_apart() {
            warnings.push(
                "PUBLIC_URL is on APP_URL's host: published pages are served on the app's own origin. \
                 Deployments must serve them from a separate domain (see the README)."
                    .to_string(),
            );
        }
        if self.environment.is_deployed() && self.trusted_proxy_header.is_none() {
            warnings.push(
                "TRUSTED_PROXY_HEADER is not set: rate limits and audit rows use the socket's peer \
                 address. Behind a proxy or load balancer every client then shares the proxy's \
                 address and one budget; set it to the header your proxy writes (see the README)."
                    .to_string(),
            );
        }
        if self.environment == Environment::Production
            && self
                .billing
                .as_ref()
                .is_some_and(|b| b.secret_key.expose_secret().contains("_test_"))
        {
            warnings.push(
                "STRIPE_SECRET_KEY is a test-mode key in production: nobody is charged, and \
                 upgrades made with test cards give Pro for free."
                    .to_string(),
            );
        }
        warnings
    }

    /// Whether published pages have a host of their own (PUBLIC_URL's host and port differ from
    /// APP_URL's). Then `/s/` answers only on PUBLIC_URL's host and the app only on APP_URL's.
    pub fn pages_apart(&self) -> bool {
        !(self
            .app_url
            .host_str()
            .zip(self.public_url.host_str())
            .is_some_and(|(a, p)| a.eq_ignore_ascii_case(p))
            && self.app_url.port_or_known_default() == self.public_url.port_or_known_default())
    }

    /// `path` under APP_URL (which may itself have a path).
    pub fn app_url_for(&self, path: &str) -> Url {
        let mut url = self.app_url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{}", path.trim_start_matches('/')));
        url.set_query(None);
        url
    }

    /// `path` under PUBLIC_URL.
    pub fn public_url_for(&self, path: &str) -> Url {
        let mut url = self.public_url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{}", path.trim_start_matches('/')));
        url.set_query(None);
        url
    }

    /// The address the HTTP listener binds.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.host, self.port)
    }

    /// The effective configuration as `NAME = value` lines, every secret redacted: what
    /// `aide config check` prints. Each variable appears once, in the order it was read, as its
    /// reader recorded it: plain values as in effect, database URLs without their password, other
    /// secrets only as set or not.
    pub fn redacted_summary(&self) -> Vec<(&'static str, String)> {
        self.summary.clone()
    }
}

/// Checks that published pages at `public` cannot share cookies or "same-site" standing with the
/// app at `app`: https, and a registrable domain (per the Public Suffix List) of their own, not
/// merely another subdomain of the app's.
fn pages_domain_apart(app: &Url, public: &Url) -> Result<(), String> {
    if public.scheme() != "https" {
        return Err("must use https".to_string());
    }
    let registrable = |url: &Url| match url.host() {
        Some(url::Host::Domain(host)) => psl::domain_str(host).map(str::to_ascii_lowercase),
        _ => None,
    };
    match (registrable(app), registrable(public)) {
        (_, None) => Err(
            "must be a domain name under a public suffix, such as https://example-pages.com"
                .to_string(),
        ),
        (Some(a), Some(p)) if a == p => Err(format!(
            "must be on another registrable domain than APP_URL (both are under {a}); use a separate domain such as https://{}-pages.{}",
            a.split('.').next().unwrap_or("example"),
            a.split_once('.').map_or("com", |(_, rest)| rest)
        )),
        _ => Ok(()),
    }
}

/// A URL's host and port (the scheme's default port when none is written), lower-cased: what a
/// request's Host header is compared with.
pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// Reads a `.env` file from the working directory when there is one. Variables already set in the
/// environment win over the file.
pub fn load_dotenv() -> Result<Option<PathBuf>, String> {
    match dotenvy::dotenv() {
        Ok(path) => Ok(Some(path)),
        Err(e) if e.not_found() => Ok(None),
        // dotenvy's messages quote the offending line, which may hold a secret: report the
        // position only.
        Err(dotenvy::Error::LineParse(_, index)) => Err(format!(
            ".env could not be parsed near character {index} of a line"
        )),
        Err(dotenvy::Error::Io(e)) => Err(format!(".env could not be read: {e}")),
        Err(_) => Err(".env could not be parsed".to_string()),
    }
}

/// A database URL with any password replaced, for printing.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = url.set_password(Some("REDACTED"));
            }
            url.to_string()
        }
        // A socket URL (`postgresql://user@/db?host=/run/dir`, as `aide db url` prints) is no
        // URL to the url crate; shown whole when it holds no password.
        Err(_) => match raw.parse::<crate::db::ConnectOptions>() {
            Ok(options) if options.get_password().is_none() => raw.to_string(),
            _ => "(unparseable, redacted)".to_string(),
        },
    }
}

fn looks_like_sender(from: &str) -> bool {
    let address = match (from.find('<'), from.rfind('>')) {
        (Some(open), Some(close)) if open < close && close == from.len() - 1 => {
            &from[open + 1..close]
        }
        (None, None) => from,
        _ => return false,
    };
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !address.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn r2_config(src: &mut Source<'_>) -> Option<R2Config> {
    let endpoint = src.http_url_opt("R2_ENDPOINT", "local folder under AIDE_DATA_DIR");
    // Unset, these two mean what R2_ENDPOINT's row says.
    let access_key = src.secret("R2_ACCESS_KEY", None);
    let secret_key = src.secret("R2_SECRET_KEY", None);
    let complete = src.all_or_none(&["R2_ENDPOINT", "R2_ACCESS_KEY", "R2_SECRET_KEY"]);
    if !complete {
        return None;
    }
    Some(R2Config {
        endpoint: endpoint?,
        access_key: access_key?.expose_secret().to_string(),
        secret_key: secret_key?,
    })
}

#[cfg(test)]
mod tests;
