//! The `aide` binary: `config check`, `db url`, and `serve` on the embedded defaults.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::managed::reachable_temp_dir;

/// The binary with a clean environment (PATH kept, to find pg_config), run in `dir`.
pub(crate) fn aide(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aide"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = aide(dir, env, args).output().expect("run aide");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

const SECRETS: [(&str, &str); 7] = [
    ("JWT_SECRET", "jwt-0123456789abcdef0123456789abcdef"),
    (
        "DATABASE_URL",
        "postgres://aide_app:dbpassword123@db.internal/aide",
    ),
    ("R2_ACCESS_KEY", "r2accesskey123"),
    ("R2_SECRET_KEY", "r2secretkey123"),
    ("RESEND_API_KEY", "re_resendkey123"),
    (
        "DATABASE_ADMIN_URL",
        "postgres://admin:adminpassword123@db.internal/aide",
    ),
    ("AI_API_KEY", "sk-ant-aikey123"),
];

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env: Vec<(&str, &str)> = SECRETS.to_vec();
    env.extend([
        ("ENVIRONMENT", "production"),
        ("APP_URL", "https://app.example.com"),
        ("PUBLIC_URL", "https://example-pages.com"),
        ("R2_ENDPOINT", "https://acct.r2.cloudflarestorage.com"),
        ("EMAIL_FROM", "AIde <login@example.com>"),
        ("FREE_TURNS_PER_WEEK", "70"),
        ("AI_PROVIDER", "anthropic"),
    ]);
    let (code, stdout, stderr) = run(dir.path(), &env, &["config", "check"]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(stdout.contains("ENVIRONMENT"), "{stdout}");
    assert!(stdout.contains("production"), "{stdout}");
    assert!(stdout.contains("https://example-pages.com/"), "{stdout}");
    assert!(stdout.contains("FREE_TURNS_PER_WEEK"), "{stdout}");
    assert!(stdout.contains("70"), "{stdout}");
    assert!(
        stdout.contains("postgres://aide_app:REDACTED@db.internal/aide"),
        "{stdout}"
    );
    assert!(
        stdout.contains("postgres://admin:REDACTED@db.internal/aide"),
        "{stdout}"
    );
    for (name, secret) in SECRETS {
        assert!(!stdout.contains(secret), "{name} leaked: {stdout}");
        assert!(!stderr.contains(secret), "{name} leaked: {stderr}");
    }
}

#[test]
fn config_check_names_each_bad_variable_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("PORT", "eighty"),
        ("ENVIRONMENT", "prod"),
        ("FREE_MAX_AIDES", "-1"),
        ("JWT_SECRET", "tooshortsecret"),
        ("R2_ENDPOINT", "https://r2.example.com"),
    ];
    let (code, stdout, stderr) = run(dir.path(), &env, &["config", "check"]);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    for expected in [
        "PORT must be a port number from 1 to 65535 (got \"eighty\")",
        "ENVIRONMENT must be one of development, staging, production (got \"prod\")",
        "FREE_MAX_AIDES must be a whole number",
        "JWT_SECRET is 14 bytes long; it must be at least 32",
        "R2_ACCESS_KEY is required when any of R2_ENDPOINT, R2_ACCESS_KEY, R2_SECRET_KEY is set",
        "R2_SECRET_KEY is required when any of",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("tooshortsecret"),
        "the secret leaked: {stderr}"
    );
}

#[test]
fn production_refuses_local_stand_ins_and_generated_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, stderr) = run(
        dir.path(),
        &[("ENVIRONMENT", "production")],
        &["config", "check"],
    );
    assert_eq!(code, 2);
    for expected in [
        "DATABASE_URL is required in production",
        "JWT_SECRET is required in production",
        "APP_URL is required in production",
        "local file storage is for development",
        "the local email outbox is for development",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn a_dotenv_file_is_read_and_the_environment_wins_over_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(".env"), "PORT=9123\nHOST=0.0.0.0\n").expect("write .env");
    let (code, stdout, _) = run(dir.path(), &[("HOST", "127.0.0.2")], &["config", "check"]);
    assert_eq!(code, 0);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("PORT").ends_with("= 9123"), "{stdout}");
    assert!(line("HOST").ends_with("= 127.0.0.2"), "{stdout}");
    assert!(
        line("APP_URL").contains("http://127.0.0.2:9123/"),
        "{stdout}"
    );
}

#[test]
fn db_url_points_psql_at_the_managed_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_str = data.to_string_lossy().into_owned();
    let (code, stdout, stderr) = run(dir.path(), &[("AIDE_DATA_DIR", &data_str)], &["db", "url"]);
    assert_eq!(code, 0, "{stderr}");
    // `postgresql://postgres@/aide?host=/socket/folder&port=...`: no host before the path, so a
    // client that reads both (tokio-postgres does) has only the socket to try. psql reads it too
    // (bench/run uses it).
    let url = stdout.trim();
    let config: aide::db::ConnectOptions = url.parse().expect("a connection URL");
    assert_eq!(config.get_user(), Some("postgres"), "{url}");
    assert_eq!(
        config.get_dbname(),
        Some(crate::support::MANAGED_DATABASE),
        "{url}"
    );
    match config.get_hosts() {
        [tokio_postgres::config::Host::Unix(folder)] => {
            assert!(folder.is_absolute(), "a socket folder: {url}")
        }
        other => panic!("one socket folder and nothing else, got {other:?} from {url}"),
    }

    let (code, stdout, _) = run(
        dir.path(),
        &[("AIDE_DATA_DIR", &data_str)],
        &["db", "url", "--app"],
    );
    assert_eq!(code, 0);
    assert!(stdout.starts_with("postgresql://aide_app@"), "{stdout}");

    let (code, _, stderr) = run(
        dir.path(),
        &[("DATABASE_URL", "postgres://u:p@h/d")],
        &["db", "url"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("DATABASE_URL is set"), "{stderr}");
}

pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Some((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The README's first command, end to end: the server starts its own PostgreSQL, migrates,
/// answers, and on SIGTERM stops both.
#[test]
fn serve_runs_on_the_embedded_defaults_and_stops_cleanly_on_sigterm() {
    let dir = reachable_temp_dir();
    let data = dir.path().join("aide-data");
    let port = free_port();
    let port_str = port.to_string();
    let mut child = aide(
        dir.path(),
        &[
            ("AIDE_DATA_DIR", &data.to_string_lossy()),
            ("PORT", &port_str),
        ],
        &["serve"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn aide serve");

    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = loop {
        if let Some(answer) = http_get(port, "/ready") {
            break answer;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            panic!("aide serve exited early ({status}):\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "aide serve did not answer in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready, (200, "{\"status\":\"ready\"}".to_string()));
    assert_eq!(
        http_get(port, "/health"),
        Some((200, "{\"status\":\"ok\"}".to_string()))
    );
    let pid_file = data.join("postgres").join("data").join("postmaster.pid");
    assert!(
        pid_file.exists(),
        "the managed cluster runs under AIDE_DATA_DIR"
    );

    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill has no memory-safety preconditions; pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    let mut log = String::new();
    child.stderr.take().map(|mut s| s.read_to_string(&mut log));
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(log.contains("managed PostgreSQL stopped"), "{log}");
    assert!(!pid_file.exists(), "PostgreSQL stopped with the server");
}

#[test]
fn serve_without_postgres_binaries_says_what_to_install() {
    let dir = reachable_temp_dir();
    let (code, _, stderr) = run(
        dir.path(),
        &[
            ("AIDE_DATA_DIR", &dir.path().join("d").to_string_lossy()),
            ("PG_BINDIR", "/nonexistent/bin"),
        ],
        &["serve"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("PG_BINDIR is /nonexistent/bin"), "{stderr}");
}

/// Starts `aide serve` on the embedded defaults with `env` added; returns the child, its port and
/// the folder it runs in, once it answers `/ready`.
pub(crate) fn start_server(env: &[(&str, &str)]) -> (std::process::Child, u16, tempfile::TempDir) {
    let dir = reachable_temp_dir();
    let data = dir.path().join("aide-data").to_string_lossy().into_owned();
    let port = free_port();
    let port_str = port.to_string();
    let mut all = vec![
        ("AIDE_DATA_DIR", data.as_str()),
        ("PORT", port_str.as_str()),
    ];
    all.extend_from_slice(env);
    let mut child = aide(dir.path(), &all, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn aide serve");
    let deadline = Instant::now() + Duration::from_secs(90);
    while http_get(port, "/ready").map(|(status, _)| status) != Some(200) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("aide serve exited early ({status})");
        }
        assert!(Instant::now() < deadline, "aide serve did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port, dir)
}

pub(crate) fn stop_server(mut child: std::process::Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill has no memory-safety preconditions; pid is our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
}

/// Whether the server closed `stream` (EOF or reset) before `within` passed.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine; keep reading to the end.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Slowloris: a connection that sends nothing, half a request's head, or nothing more after an
/// answered request, is closed once HTTP_HEADER_TIMEOUT_SECONDS pass; and past HTTP_MAX_CONNECTIONS open connections a new client
/// waits until one closes, instead of the server accepting without bound.
#[test]
fn slow_and_idle_connections_are_closed_and_connections_are_capped() {
    let (child, port, _dir) = start_server(&[
        ("HTTP_HEADER_TIMEOUT_SECONDS", "2"),
        ("HTTP_MAX_CONNECTIONS", "16"),
    ]);

    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut half = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .expect("half a head");
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(20)),
        "a silent connection stayed open"
    );
    assert!(
        closed_by_server(&mut half, Duration::from_secs(20)),
        "a half-sent head kept its connection open"
    );
    // A keep-alive connection that goes idle after an answered request is closed too.
    let mut kept = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut head = [0u8; 12];
    kept.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    kept.read_exact(&mut head).expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(
        closed_by_server(&mut kept, Duration::from_secs(20)),
        "an idle keep-alive connection stayed open"
    );

    // Sixteen idle connections fill the cap; the seventeenth is not served until they close.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut waiting = TcpStream::connect(("127.0.0.1", port)).expect("connect (listen queue)");
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    assert!(
        waiting.read(&mut buf).is_err(),
        "a seventeenth connection was served while sixteen were open"
    );
    // The idle ones time out, freeing the cap: the waiting request is answered.
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
    stop_server(child);
}

#[test]
fn on_sigterm_readiness_fails_first_and_the_server_drains_then_stops() {
    let (mut child, port, _dir) = start_server(&[("SHUTDOWN_READY_DRAIN_SECONDS", "3")]);
    let pid = i32::try_from(child.id()).expect("pid");
    let asked = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // During the drain: not ready, but still listening and alive.
    let mut seen = None;
    while asked.elapsed() < Duration::from_secs(2) {
        if let Some((503, body)) = http_get(port, "/ready") {
            seen = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = seen.expect("/ready answered 503 while draining");
    assert!(body.contains("SHUTTING_DOWN"), "{body}");
    assert_eq!(http_get(port, "/health").map(|(s, _)| s), Some(200));
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
    assert!(
        asked.elapsed() >= Duration::from_secs(3),
        "the listener stayed open for the drain"
    );
    assert!(
        http_get(port, "/health").is_none(),
        "the listener is closed"
    );
}

/// One HTTP/1.1 exchange with the server on `port`, as APP_URL's host (127.0.0.1:port).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Asks the server on `port` for a sign-in link for `email` and reads its token from the
/// development outbox folder, as a person reads their email.
pub(crate) fn link_token(port: u16, outbox: &Path, email: &str) -> String {
    let json = [("Content-Type", "application/json")];
    let (status, _) = http(
        port,
        "POST",
        "/auth/send",
        &json,
        &format!("{{\"email\":\"{email}\"}}"),
    );
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_dir(outbox).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                text.contains(&format!("To: {email}")).then_some(text)
            })
        });
        if let Some(text) = found {
            return text
                .split("token=")
                .nth(1)
                .expect("a sign-in link")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "no email to {email} in the outbox"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Signs `email` in through the outbox; returns the session token.
pub(crate) fn sign_in(port: u16, outbox: &Path, email: &str) -> String {
    let token = link_token(port, outbox, email);
    let json = [("Content-Type", "application/json")];
    let (status, body) = http(
        port,
        "POST",
        "/auth/verify",
        &json,
        &format!("{{\"token\":\"{token}\"}}"),
    );
    assert_eq!(status, 200, "{body}");
    let session: serde_json::Value = serde_json::from_str(&body).expect("json");
    session["token"].as_str().expect("token").to_string()
}

/// The release binary's JSON logs, as a collector would get them, after a session's worth of
/// requests: every line is JSON, each request's line names its request id, route template,
/// status, duration and user, and nowhere is the email address, the sign-in link's token, the
/// session token or anything the user wrote.
#[test]
fn json_logs_name_each_request_and_hold_no_email_token_or_content() {
    const EMAIL: &str = "log-reader@example.com";
    const TITLE: &str = "Secret garden plans";
    const CONTENT: &str = "<p>only-the-user-knows-this</p>";
    let dir = reachable_temp_dir();
    let data = dir.path().join("aide-data");
    let port = free_port();
    let port_str = port.to_string();
    let log_path = dir.path().join("server.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut child = aide(
        dir.path(),
        &[
            ("AIDE_DATA_DIR", &data.to_string_lossy()),
            ("PORT", &port_str),
            ("LOG_FORMAT", "json"),
        ],
        &["serve"],
    )
    .stdout(Stdio::null())
    .stderr(log_file)
    .spawn()
    .expect("spawn aide serve");
    let deadline = Instant::now() + Duration::from_secs(90);
    while http_get(port, "/ready").map(|(status, _)| status) != Some(200) {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "aide serve exited early"
        );
        assert!(Instant::now() < deadline, "aide serve did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let json = [("Content-Type", "application/json")];
    // The development outbox: the link is in the file, and (with JSON logs) only there.
    let link_token = link_token(port, &data.join("outbox"), EMAIL);
    assert!(link_token.len() >= 20, "{link_token}");
    let (status, body) = http(
        port,
        "POST",
        "/auth/verify",
        &json,
        &format!("{{\"token\":\"{link_token}\"}}"),
    );
    assert_eq!(status, 200, "{body}");
    let session: serde_json::Value = serde_json::from_str(&body).expect("json");
    let session = session["token"]
        .as_str()
        .expect("session token")
        .to_string();
    let bearer = format!("Bearer {session}");
    let authed = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let (_, me) = http(port, "GET", "/auth/me", &authed, "");
    let me: serde_json::Value = serde_json::from_str(&me).expect("json");
    let user_id = me["id"].as_str().expect("id").to_string();
    let (status, body) = http(
        port,
        "POST",
        "/api/aides",
        &authed,
        &format!("{{\"title\":\"{TITLE}\"}}"),
    );
    assert_eq!(status, 201, "{body}");
    let aide: serde_json::Value = serde_json::from_str(&body).expect("json");
    let aide = aide["id"].as_str().expect("aide id").to_string();
    let (status, _) = http(
        port,
        "PUT",
        &format!("/api/aides/{aide}/files/index.html"),
        &[("Content-Type", "text/html"), ("Authorization", &bearer)],
        CONTENT,
    );
    assert!(status == 200 || status == 201, "{status}");
    // A refused link, its token in the query string.
    let (status, _) = http(
        port,
        "GET",
        "/auth/verify?token=not-a-real-token-0123456789",
        &[],
        "",
    );
    assert!((200..500).contains(&status));
    stop_server(child);

    let log = std::fs::read_to_string(&log_path).expect("log");
    for secret in [
        EMAIL,
        "example.com",
        link_token.as_str(),
        session.as_str(),
        TITLE,
        "only-the-user-knows-this",
        "not-a-real-token",
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "request finished")
        .collect();
    let upload = finished
        .iter()
        .find(|l| l["span"]["route"] == "/api/aides/{id}/files/{*path}")
        .unwrap_or_else(|| panic!("no line for the upload in {finished:#?}"));
    assert!(
        upload["status"]
            .as_u64()
            .is_some_and(|s| s == 200 || s == 201)
    );
    assert!(upload["duration_ms"].as_f64().is_some());
    assert!(
        upload["span"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(upload["span"]["user_id"], user_id.as_str());
    let verify = finished
        .iter()
        .find(|l| l["span"]["route"] == "/auth/verify" && l["span"]["method"] == "GET")
        .unwrap_or_else(|| panic!("no line for the refused link in {finished:#?}"));
    assert!(verify["span"].get("user_id").is_none());
}

/// One HTTP/1.1 exchange with a binary body.
fn http_bytes(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, response[split + 4..].to_vec())
}

/// The peak resident memory of process `pid` so far, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Exporting 96 MiB of files that do not compress leaves the server's peak memory where the
/// uploads had put it, within a budget far below the archive's size: files are streamed into the
/// archive and the archive out to storage, never held whole.
#[test]
fn exporting_a_large_workspace_keeps_memory_flat() {
    const FILE: usize = 16 << 20;
    const FILES: usize = 6;
    const BUDGET_KIB: u64 = 40 << 10;
    let (child, port, dir) = start_server(&[
        ("FREE_MAX_FILE_BYTES", "33554432"),
        ("FREE_MAX_AIDE_BYTES", "268435456"),
        ("FREE_MAX_ACCOUNT_BYTES", "1073741824"),
    ]);
    let outbox = dir.path().join("aide-data").join("outbox");
    let bearer = format!(
        "Bearer {}",
        sign_in(port, &outbox, "big-export@example.com")
    );
    let authed = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let (_, body) = http(port, "POST", "/api/aides", &authed, "{\"title\":\"Big\"}");
    let aide: serde_json::Value = serde_json::from_str(&body).expect("json");
    let aide = aide["id"].as_str().expect("id").to_string();
    // Bytes that do not compress (xorshift), different in every file.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for n in 0..FILES {
        let mut data = vec![0_u8; FILE];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let (status, body) = http_bytes(
            port,
            "PUT",
            &format!("/api/aides/{aide}/files/data/part{n}.bin"),
            &[
                ("Content-Type", "application/octet-stream"),
                ("Authorization", &bearer),
            ],
            &data,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let before = peak_rss_kib(child.id());

    let (status, body) = http(port, "POST", "/api/account/export", &authed, "");
    assert_eq!(status, 202, "{body}");
    let export: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = export["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let export = loop {
        let (_, body) = http(
            port,
            "GET",
            &format!("/api/account/exports/{id}"),
            &authed,
            "",
        );
        let export: serde_json::Value = serde_json::from_str(&body).expect("json");
        if export["status"] != "running" {
            break export;
        }
        assert!(Instant::now() < deadline, "the export did not finish");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(export["status"], "ready", "{export}");
    let size = export["size_bytes"].as_u64().expect("size");
    assert!(size > (FILE * FILES) as u64, "{size}");
    let after = peak_rss_kib(child.id());
    eprintln!(
        "peak RSS: {before} KiB after the uploads, {after} KiB after exporting {} MiB",
        size >> 20
    );
    assert!(
        after.saturating_sub(before) < BUDGET_KIB,
        "peak memory grew by {} KiB while exporting {} MiB (budget {} KiB)",
        after.saturating_sub(before),
        size >> 20,
        BUDGET_KIB
    );
    stop_server(child);
}

/// `aide operator` beside a running server on the managed cluster: add, list, remove.
#[test]
fn operators_are_managed_from_the_command_line_beside_a_running_server() {
    let (child, _port, dir) = start_server(&[]);
    let data = dir.path().join("aide-data").to_string_lossy().into_owned();
    let env = [("AIDE_DATA_DIR", data.as_str())];
    let (code, out, err) = run(dir.path(), &env, &["operator", "add", "Staff@Example.com"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "staff@example.com is now an operator");
    let (_, out, _) = run(dir.path(), &env, &["operator", "add", "staff@example.com"]);
    assert_eq!(out.trim(), "staff@example.com was an operator already");
    let (code, out, _) = run(dir.path(), &env, &["operator", "list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("staff@example.com\tadded "), "{out}");
    let (code, _, err) = run(dir.path(), &env, &["operator", "add", "not an address"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not an email address"), "{err}");
    let (_, out, _) = run(
        dir.path(),
        &env,
        &["operator", "remove", "staff@example.com"],
    );
    assert_eq!(out.trim(), "staff@example.com is no longer an operator");
    let (_, out, _) = run(dir.path(), &env, &["operator", "list"]);
    assert_eq!(out.trim(), "");
    stop_server(child);
}
