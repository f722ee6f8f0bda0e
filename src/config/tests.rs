use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn problems(vars: &[(&str, &str)]) -> Vec<String> {
    load(vars).expect_err("must be invalid").problems
}

const JWT: &str = "0123456789abcdef0123456789abcdef";

fn production() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ENVIRONMENT", "production"),
        ("DATABASE_URL", "postgres://aide_app:pw@db/aide"),
        ("JWT_SECRET", JWT),
        ("APP_URL", "https://app.example.com"),
        ("PUBLIC_URL", "https://example-pages.com"),
        ("R2_ENDPOINT", "https://r2.example.com"),
        ("R2_ACCESS_KEY", "key"),
        ("R2_SECRET_KEY", "secret"),
        ("RESEND_API_KEY", "re_123"),
        ("EMAIL_FROM", "AIde <login@example.com>"),
        ("AI_PROVIDER", "anthropic"),
        ("AI_API_KEY", "sk-ant-secret-key"),
    ]
}

#[test]
fn defaults_when_nothing_is_set() {
    let c = load(&[]).expect("valid");
    assert_eq!(c.environment, Environment::Development);
    assert_eq!(c.listen_addr().to_string(), "127.0.0.1:8000");
    assert_eq!(c.data_dir, PathBuf::from("./aide-data"));
    assert!(c.database.url.is_none());
    assert!(c.jwt_secret.is_none());
    assert_eq!(c.app_url.as_str(), "http://127.0.0.1:8000/");
    assert_eq!(c.public_url, c.app_url);
    assert_eq!(c.storage.workspace_bucket, "aide-workspaces");
    assert_eq!(c.storage.published_bucket, "aide-published");
    assert!(c.storage.r2.is_none());
    assert!(c.email.resend_api_key.is_none());
    assert_eq!(c.limits, Limits::default());
    let l = &c.limits;
    assert_eq!(
        [
            l.magic_link_ttl_minutes,
            l.magic_links_per_email_per_hour,
            l.magic_link_requests_per_ip_per_hour,
            l.verifications_per_ip_per_minute,
            l.session_ttl_hours,
            l.free_turns_per_week,
            l.free_max_aides,
            l.api_requests_per_user_per_minute,
        ],
        [15, 5, 20, 10, 24, 50, 5, 100]
    );
}

#[test]
fn every_limit_can_be_overridden() {
    let c = load(&[
        ("MAGIC_LINK_TTL_MINUTES", "30"),
        ("MAGIC_LINKS_PER_EMAIL_PER_HOUR", "6"),
        ("MAGIC_LINK_REQUESTS_PER_IP_PER_HOUR", "21"),
        ("VERIFICATIONS_PER_IP_PER_MINUTE", "11"),
        ("SESSION_TTL_HOURS", "48"),
        ("FREE_TURNS_PER_WEEK", "51"),
        ("FREE_MAX_AIDES", "6"),
        ("API_REQUESTS_PER_USER_PER_MINUTE", "101"),
    ])
    .expect("valid");
    let l = &c.limits;
    assert_eq!(
        [
            l.magic_link_ttl_minutes,
            l.magic_links_per_email_per_hour,
            l.magic_link_requests_per_ip_per_hour,
            l.verifications_per_ip_per_minute,
            l.session_ttl_hours,
            l.free_turns_per_week,
            l.free_max_aides,
            l.api_requests_per_user_per_minute,
        ],
        [30, 6, 21, 11, 48, 51, 6, 101]
    );
}

#[test]
fn limits_out_of_range_are_named() {
    let p = problems(&[("FREE_TURNS_PER_WEEK", "0"), ("SESSION_TTL_HOURS", "lots")]);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("SESSION_TTL_HOURS must be a whole number from 1 to"),
        "{p:?}"
    );
    assert!(
        p[1].starts_with("FREE_TURNS_PER_WEEK must be a whole number from 1 to"),
        "{p:?}"
    );
}

#[test]
fn app_url_follows_host_and_port_and_public_url_follows_app_url() {
    let c = load(&[("HOST", "0.0.0.0"), ("PORT", "9000")]).expect("valid");
    assert_eq!(c.app_url.as_str(), "http://localhost:9000/");
    let c = load(&[("APP_URL", "http://localhost:3000")]).expect("valid");
    assert_eq!(c.public_url.as_str(), "http://localhost:3000/");
    let c = load(&[("PUBLIC_URL", "http://pages.localhost:8000")]).expect("valid");
    assert_eq!(c.public_url.as_str(), "http://pages.localhost:8000/");
}

#[test]
fn urls_are_checked() {
    let p = problems(&[
        ("APP_URL", "ftp://example.com"),
        ("DATABASE_URL", "mysql://u:hunter2@h/d"),
        (
            "RESEND_API_URL",
            "https://user:secret-password@api.example.com",
        ),
    ]);
    let text = p.join("\n");
    assert!(
        text.contains("APP_URL must be an http:// or https:// URL"),
        "{text}"
    );
    assert!(
        text.contains("DATABASE_URL must start with postgres://"),
        "{text}"
    );
    assert!(
        text.contains("RESEND_API_URL must not contain a user name or password"),
        "{text}"
    );
    for secret in ["hunter2", "secret-password"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[test]
fn a_complete_production_configuration_is_accepted() {
    let c = load(&production()).expect("valid");
    assert_eq!(c.environment, Environment::Production);
    assert!(c.storage.r2.is_some());
    assert!(c.email.resend_api_key.is_some());
}

#[test]
fn production_refuses_each_missing_piece() {
    for missing in [
        "DATABASE_URL",
        "JWT_SECRET",
        "APP_URL",
        "PUBLIC_URL",
        "R2_ENDPOINT",
        "RESEND_API_KEY",
        "AI_PROVIDER",
    ] {
        let vars: Vec<_> = production()
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let p = problems(&vars);
        assert!(
            p.iter().any(|line| line.starts_with(missing)),
            "without {missing}: {p:?}"
        );
    }
    let mut vars = production();
    vars.push(("APP_URL", "http://app.example.com"));
    let p = problems(&vars);
    assert!(
        p.iter()
            .any(|l| l == "APP_URL must use https in production"),
        "{p:?}"
    );
}

/// Published pages must not share the app's registrable domain in a deployment: a sibling
/// subdomain could set cookies for the app's domain and counts as the same site.
#[test]
fn deployed_pages_need_a_registrable_domain_of_their_own() {
    for (public, expected) in [
        (
            "https://pages.example.com",
            "PUBLIC_URL must be on another registrable domain than APP_URL (both are under example.com)",
        ),
        (
            "https://app.example.com",
            "PUBLIC_URL must be on another registrable domain",
        ),
        (
            "http://example-pages.com",
            "PUBLIC_URL must use https in production",
        ),
        ("https://203.0.113.7", "PUBLIC_URL must be a domain name"),
    ] {
        let mut vars = production();
        vars.push(("PUBLIC_URL", public));
        let p = problems(&vars);
        assert!(p.iter().any(|l| l.starts_with(expected)), "{public}: {p:?}");
    }
    // Another registrable domain, even under the same public suffix, is apart.
    for public in ["https://example-pages.com", "https://pages.example.net"] {
        let mut vars = production();
        vars.push(("PUBLIC_URL", public));
        assert!(load(&vars).is_ok(), "{public}");
    }
    let mut vars = production();
    vars.push(("APP_URL", "https://app.example.co.uk"));
    vars.push(("PUBLIC_URL", "https://pages.example.co.uk"));
    assert!(
        load(&vars).is_err(),
        "example.co.uk is one registrable domain"
    );
    vars.push(("PUBLIC_URL", "https://pages.other.co.uk"));
    assert!(load(&vars).is_ok(), "co.uk is a public suffix");
}

/// In development one host may serve both (with a warning); apart, each side has its host.
#[test]
fn one_host_for_app_and_pages_is_a_warning_in_development() {
    let c = load(&[]).expect("valid");
    assert!(!c.pages_apart());
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("PUBLIC_URL is on APP_URL's host")),
        "{:?}",
        c.warnings()
    );
    let c = load(&[("PUBLIC_URL", "http://localhost:8000")]).expect("valid");
    assert!(c.pages_apart(), "another host name is apart");
    assert!(!c.warnings().iter().any(|w| w.contains("PUBLIC_URL")));
    let c = load(&[("PUBLIC_URL", "http://127.0.0.1:8001")]).expect("valid");
    assert!(c.pages_apart(), "another port is another origin");
}

#[test]
fn staging_follows_production_rules() {
    let p = problems(&[("ENVIRONMENT", "staging")]);
    assert!(
        p.iter()
            .any(|l| l.starts_with("DATABASE_URL is required in staging")),
        "{p:?}"
    );
}

#[test]
fn short_jwt_secrets_are_refused_in_every_environment_without_echoing_them() {
    let p = problems(&[("JWT_SECRET", "hunter2hunter2")]);
    assert_eq!(
        p,
        [
            "JWT_SECRET is 14 bytes long; it must be at least 32 (for example the output of `openssl rand -hex 32`)"
        ]
    );
}

#[test]
fn groups_are_all_or_none() {
    let p = problems(&[("R2_ENDPOINT", "https://r2.example.com")]);
    let text = p.join("\n");
    for name in ["R2_ACCESS_KEY", "R2_SECRET_KEY"] {
        assert!(
            text.contains(&format!("{name} is required when any of")),
            "{text}"
        );
    }
    let p = problems(&[("RESEND_API_KEY", "re_1")]);
    assert_eq!(p, ["EMAIL_FROM is required when RESEND_API_KEY is set"]);
}

#[test]
fn email_from_and_buckets_are_checked() {
    let p = problems(&[
        ("EMAIL_FROM", "not an address"),
        ("R2_WORKSPACE_BUCKET", "Bad_Bucket"),
    ]);
    let text = p.join("\n");
    assert!(text.contains("EMAIL_FROM must be an address"), "{text}");
    assert!(
        text.contains("R2_WORKSPACE_BUCKET must be 3 to 63 characters"),
        "{text}"
    );
    assert!(load(&[("EMAIL_FROM", "login@example.com")]).is_ok());
    assert!(load(&[("EMAIL_FROM", "AIde <login@example.com>")]).is_ok());
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = problems(&[
        ("PORT", "0"),
        ("HOST", "example.com"),
        ("ENVIRONMENT", "dev"),
    ]);
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn debug_output_never_shows_secrets() {
    let mut vars = production();
    vars.extend([
        ("R2_SECRET_KEY", "r2-supersecret"),
        ("DATABASE_ADMIN_URL", "postgres://admin:supersecret@db/aide"),
    ]);
    let c = load(&vars).expect("valid");
    let debug = format!("{c:?}");
    for secret in [JWT, "pw@db", "supersecret", "re_123"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    let summary = format!("{:?}", c.redacted_summary());
    for secret in [JWT, "pw@db", "supersecret", "re_123"] {
        assert!(!summary.contains(secret), "{secret} in {summary}");
    }
}

#[test]
fn redact_url_hides_only_the_password() {
    assert_eq!(
        redact_url("postgres://aide_app:hunter2@db:5432/aide?sslmode=require"),
        "postgres://aide_app:REDACTED@db:5432/aide?sslmode=require"
    );
    assert_eq!(redact_url("postgres://db/aide"), "postgres://db/aide");
    // A socket URL, as `aide db url` prints it, is shown whole; with a password, not at all.
    let socket = "postgresql://aide_app@/aide?host=%2Frun%2Faide&port=5432";
    assert_eq!(redact_url(socket), socket);
    assert_eq!(
        redact_url("postgresql://aide_app@/aide?host=%2Frun%2Faide&password=hunter2"),
        "(unparseable, redacted)"
    );
}

#[test]
fn a_socket_url_as_aide_db_url_prints_it_is_a_database_url() {
    let socket = "postgresql://aide_app@/aide?host=%2Frun%2Faide&port=5432";
    let config = load(&[("DATABASE_URL", socket)]).expect("valid");
    assert!(config.database.url.is_some());
    let problems =
        load(&[("DATABASE_URL", "postgresql://aide_app@/aide?host")]).expect_err("invalid");
    assert!(
        format!("{problems:?}").contains("DATABASE_URL"),
        "{problems:?}"
    );
}

#[test]
fn deployed_without_a_trusted_proxy_header_warns() {
    let about_proxy = |vars: &[(&str, &str)]| {
        load(vars)
            .expect("valid")
            .warnings()
            .into_iter()
            .filter(|w| w.starts_with("TRUSTED_PROXY_HEADER"))
            .count()
    };
    assert_eq!(about_proxy(&production()), 1);
    let mut staging = production();
    staging[0] = ("ENVIRONMENT", "staging");
    assert_eq!(about_proxy(&staging), 1);
    let mut proxied = production();
    proxied.push(("TRUSTED_PROXY_HEADER", "x-forwarded-for"));
    assert_eq!(about_proxy(&proxied), 0);
    // In development the socket's address is usually right, and nothing is said.
    assert_eq!(about_proxy(&[]), 0);
}

fn shown(c: &Config, name: &str) -> String {
    c.redacted_summary()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("{name} is not in the summary"))
}

#[test]
fn the_summary_shows_effective_values_and_what_unset_means() {
    let c = load(&[("FREE_TURNS_PER_WEEK", "70"), ("HOST", "0.0.0.0")]).expect("valid");
    for (name, expected) in [
        ("ENVIRONMENT", "development"),
        ("HOST", "0.0.0.0"),
        ("PORT", "8000"),
        ("AIDE_DATA_DIR", "./aide-data"),
        (
            "DATABASE_URL",
            "(not set: managed local PostgreSQL under AIDE_DATA_DIR)",
        ),
        ("DATABASE_ADMIN_URL", "(not set: same as DATABASE_URL)"),
        ("DATABASE_MAX_CONNECTIONS", "10"),
        ("PG_BINDIR", "(not set: found automatically)"),
        (
            "JWT_SECRET",
            "(not set: generated and kept in AIDE_DATA_DIR)",
        ),
        ("APP_URL", "http://localhost:8000/"),
        ("PUBLIC_URL", "http://localhost:8000/"),
        ("R2_ENDPOINT", "(not set: local folder under AIDE_DATA_DIR)"),
        ("R2_ACCESS_KEY", "(not set)"),
        ("R2_SECRET_KEY", "(not set)"),
        ("R2_WORKSPACE_BUCKET", "aide-workspaces"),
        (
            "RESEND_API_KEY",
            "(not set: local outbox under AIDE_DATA_DIR)",
        ),
        ("EMAIL_FROM", "AIde <login@aide.localhost>"),
        ("RESEND_API_URL", "https://api.resend.com/"),
        (
            "TRUSTED_PROXY_HEADER",
            "(not set: the socket's peer address is the client's)",
        ),
        ("FREE_TURNS_PER_WEEK", "70"),
        ("PRO_MAX_ACCOUNT_BYTES", "10737418240"),
        (
            "AI_PROVIDER",
            "(not set: AI turns off: they answer 503 AI_NOT_CONFIGURED)",
        ),
        ("AI_BASE_URL", "https://api.anthropic.com/"),
        ("AI_API_KEY", "(not set: ANTHROPIC_API_KEY, if set)"),
        ("AI_MODEL", "claude-sonnet-4-5"),
        ("AI_MAX_ROUNDS", "4"),
    ] {
        assert_eq!(shown(&c, name), expected, "{name}");
    }

    let mut vars = production();
    vars.push(("TRUSTED_PROXY_HEADER", "X-Forwarded-For"));
    let c = load(&vars).expect("valid");
    assert_eq!(
        shown(&c, "DATABASE_URL"),
        "postgres://aide_app:REDACTED@db/aide"
    );
    for name in [
        "JWT_SECRET",
        "R2_ACCESS_KEY",
        "R2_SECRET_KEY",
        "RESEND_API_KEY",
    ] {
        assert_eq!(shown(&c, name), "(set, redacted)", "{name}");
    }
    assert_eq!(shown(&c, "R2_ENDPOINT"), "https://r2.example.com/");
    assert_eq!(shown(&c, "TRUSTED_PROXY_HEADER"), "x-forwarded-for");
}

/// The README's Configuration section documents exactly the variables the configuration reads
/// (and `RUST_LOG`, which the log filter reads), so neither can drift from the other.
#[test]
fn the_readme_documents_exactly_the_variables_read() {
    const README: &str = include_str!("../../README.md");
    let section = README
        .split_once("\n## Configuration\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("README has a Configuration section");
    let documented: std::collections::BTreeSet<&str> = section
        .lines()
        .filter(|line| line.starts_with('|'))
        .flat_map(|row| row.split('`').skip(1).step_by(2))
        .filter(|code| {
            code.starts_with(|c: char| c.is_ascii_uppercase())
                && code
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();

    let summary = load(&[]).expect("valid").redacted_summary();
    let read: std::collections::BTreeSet<&str> = summary.iter().map(|(name, _)| *name).collect();
    assert_eq!(read.len(), summary.len(), "a variable is read twice");

    let undocumented: Vec<_> = read.difference(&documented).collect();
    let unread: Vec<_> = documented
        .iter()
        .filter(|name| **name != "RUST_LOG" && !read.contains(*name))
        .collect();
    assert!(
        undocumented.is_empty() && unread.is_empty(),
        "read but missing from the README's Configuration tables: {undocumented:?}; \
         in those tables but never read: {unread:?}"
    );
}

#[test]
fn the_ai_provider_is_read_whole() {
    let c = load(&[
        ("AI_PROVIDER", "openai"),
        ("AI_BASE_URL", "http://127.0.0.1:11434/v1"),
        ("AI_MODEL", "llama3.2"),
    ])
    .expect("a local server needs no key");
    let ai = c.ai.as_ref().expect("on");
    assert_eq!(ai.provider, AiProvider::OpenAi);
    assert_eq!(ai.base_url.as_str(), "http://127.0.0.1:11434/v1");
    assert!(ai.api_key.is_none());
    assert_eq!(
        ai.prices,
        Prices::default(),
        "an unknown model costs nothing"
    );
    let c = load(&[
        ("AI_PROVIDER", "anthropic"),
        ("ANTHROPIC_API_KEY", "sk-ant-x"),
    ])
    .expect("the original's variable is read");
    let ai = c.ai.as_ref().expect("on");
    assert_eq!(ai.model, "claude-sonnet-4-5");
    assert_eq!(ai.prices.output, 15_000_000);
    assert_eq!(
        shown(&c, "AI_API_KEY"),
        "(not set: ANTHROPIC_API_KEY, if set)"
    );
    assert_eq!(shown(&c, "ANTHROPIC_API_KEY"), "(set, redacted)");
    assert!(!format!("{c:?}").contains("sk-ant-x"));
    let p = problems(&[("AI_PROVIDER", "anthropic")]);
    assert!(
        p.iter().any(|l| l.starts_with("AI_API_KEY is required")),
        "{p:?}"
    );
    let p = problems(&[
        ("AI_PROVIDER", "gemini"),
        ("AI_PRICES", "1,2"),
        ("AI_MAX_ROUNDS", "0"),
    ]);
    for name in ["AI_PROVIDER", "AI_PRICES", "AI_MAX_ROUNDS"] {
        assert!(p.iter().any(|l| l.starts_with(name)), "{name}: {p:?}");
    }
    assert!(load(&[]).expect("valid").ai.is_none());
}

#[test]
fn stripe_is_all_or_none_and_checked_without_echoing_secrets() {
    let p = problems(&[("STRIPE_SECRET_KEY", "sk_test_secretvalue")]).join("\n");
    for name in ["STRIPE_WEBHOOK_SECRET", "STRIPE_PRICE_ID"] {
        assert!(
            p.contains(&format!("{name} is required when any of")),
            "{p}"
        );
    }
    let bad = problems(&[
        ("STRIPE_SECRET_KEY", "pk_test_publishable"),
        ("STRIPE_WEBHOOK_SECRET", "secretvalue"),
        ("STRIPE_PRICE_ID", "prod_123"),
    ])
    .join("\n");
    for name in [
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_PRICE_ID",
    ] {
        assert!(bad.contains(name), "{bad}");
    }
    assert!(
        !bad.contains("pk_test_publishable") && !bad.contains("secretvalue"),
        "{bad}"
    );

    let stripe = [
        ("STRIPE_SECRET_KEY", "rk_live_restricted"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
        ("STRIPE_PRICE_ID", "price_abc"),
    ];
    let c = load(&stripe).expect("valid");
    let billing = c.billing.as_ref().expect("billing on");
    assert_eq!(billing.api_url.as_str(), "https://api.stripe.com/");
    assert_eq!(
        billing.past_due_grace,
        std::time::Duration::from_secs(7 * 86_400)
    );
    assert!(!format!("{c:?}").contains("rk_live_restricted"));
    assert!(load(&[]).expect("valid").billing.is_none());

    let mut deployed = production();
    deployed.extend(stripe);
    deployed.push(("STRIPE_API_URL", "http://stripe.internal"));
    assert!(
        problems(&deployed)
            .iter()
            .any(|p| p.starts_with("STRIPE_API_URL must use https"))
    );
    let mut test_key = production();
    test_key.extend([
        ("STRIPE_SECRET_KEY", "sk_test_rehearsal"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
        ("STRIPE_PRICE_ID", "price_abc"),
    ]);
    let warnings = load(&test_key).expect("valid").warnings().join("\n");
    assert!(
        warnings.contains("test-mode key in production"),
        "{warnings}"
    );
}
