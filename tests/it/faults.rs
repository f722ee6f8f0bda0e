//! Faults, through the binary on the embedded defaults: PostgreSQL restarted under steady
//! uploads, first with a fast shutdown, then an immediate one (a crash). While it is down every
//! answer is a 503 with Retry-After in our JSON shape (never a 500, never a hang) and `/ready`
//! says not ready; afterwards the server reconnects by itself, every upload answered 2xx is
//! there, and none answered with an error is.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{http, http_get, sign_in, start_server, stop_server};

/// One request: (status, Retry-After, body); status 0 when the connection failed. A body that
/// starts with `{` goes as JSON, any other as text.
fn request(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Option<String>, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, None, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{body}",
        if body.starts_with('{') {
            "application/json"
        } else {
            "text/plain"
        },
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return (0, None, String::new());
    }
    let mut answer = String::new();
    if stream.read_to_string(&mut answer).is_err() {
        return (0, None, String::new());
    }
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let retry_after = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().to_string())
    });
    (status, retry_after, body.to_string())
}

/// `pg_ctl` beside the installed server binaries.
fn pg_ctl() -> PathBuf {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("pg_ctl"));
    from_config
        .filter(|p| p.exists())
        .or_else(|| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|e| e.path().join("bin/pg_ctl"))
                .filter(|p| p.exists())
                .collect();
            found.sort();
            found.pop()
        })
        .expect("pg_ctl")
}

/// Runs `pg_ctl` on the managed cluster, as the account that owns it.
fn cluster(data: &Path, args: &[&str]) {
    let dir = data.join("postgres").join("data");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_ctl());
        c
    } else {
        Command::new(pg_ctl())
    };
    let status = cmd
        .arg("-D")
        .arg(&dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("pg_ctl");
    assert!(status.success(), "pg_ctl {args:?}");
}

#[derive(Default)]
struct Seen {
    /// (aide, path) answered 2xx, and answered otherwise.
    acked: BTreeSet<(String, String)>,
    refused: BTreeSet<(String, String)>,
    statuses: std::collections::BTreeMap<u16, usize>,
    /// Anything but 2xx or a proper 503.
    wrong: Vec<String>,
}

#[test]
fn postgres_restarted_under_uploads_answers_503_then_recovers_with_every_acknowledged_write() {
    let (child, port, dir) = start_server(&[
        ("API_REQUESTS_PER_USER_PER_MINUTE", "1000000"),
        ("FREE_MAX_FILES_PER_AIDE", "100000"),
        ("RUST_LOG", "error"),
    ]);
    let data = dir.path().join("aide-data");
    let outbox = data.join("outbox");
    let mut writers = Vec::new();
    for n in 0..4 {
        let token = sign_in(port, &outbox, &format!("fault{n}@example.com"));
        let json = [
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {token}")),
        ];
        let (status, body) = http(port, "POST", "/api/aides", &json, "{\"title\":\"Faults\"}");
        assert_eq!(status, 201, "{body}");
        let aide: serde_json::Value = serde_json::from_str(&body).expect("json");
        writers.push((token, aide["id"].as_str().expect("id").to_string()));
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = writers
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, (token, aide))| {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let path = format!("w{n}/{i}.txt");
                    let started = Instant::now();
                    let (status, retry_after, body) = request(
                        port,
                        "PUT",
                        &format!("/api/aides/{aide}/files/{path}"),
                        &token,
                        &format!("upload {i}"),
                    );
                    let mut seen = seen.lock().expect("lock");
                    *seen.statuses.entry(status).or_default() += 1;
                    if (200..300).contains(&status) {
                        seen.acked.insert((aide.clone(), path));
                    } else {
                        seen.refused.insert((aide.clone(), path));
                        let proper = status == 503
                            && retry_after.is_some()
                            && body.contains("\"code\":\"UNAVAILABLE\"")
                            && started.elapsed() < Duration::from_secs(15);
                        if !proper {
                            seen.wrong
                                .push(format!("{status} after {:?}: {body}", started.elapsed()));
                        }
                    }
                    drop(seen);
                    if status != 200 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

    // Watches /ready throughout.
    let ready_seen = Arc::new(Mutex::new(BTreeSet::new()));
    let watcher = {
        let (ready_seen, stop) = (ready_seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((status, body)) = http_get(port, "/ready") {
                    let code = if status == 503 && body.contains("DATABASE_UNREACHABLE") {
                        "503 DATABASE_UNREACHABLE".to_string()
                    } else {
                        status.to_string()
                    };
                    ready_seen.lock().expect("lock").insert(code);
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };

    let acked_now = |seen: &Arc<Mutex<Seen>>| seen.lock().expect("lock").acked.len();
    std::thread::sleep(Duration::from_secs(2));
    let before = acked_now(&seen);
    assert!(before > 10, "uploads flow before the fault ({before})");
    // A fast shutdown (sessions ended cleanly), then back. `restart` keeps the options the
    // server started the cluster with (its socket folder, no TCP).
    cluster(&data, &["restart", "-m", "fast", "-w"]);
    std::thread::sleep(Duration::from_secs(3));
    let after_fast = acked_now(&seen);
    assert!(
        after_fast > before,
        "uploads resumed after the fast restart"
    );
    // A crash: immediate shutdown, then back.
    cluster(&data, &["restart", "-m", "immediate", "-w"]);
    std::thread::sleep(Duration::from_secs(4));
    let after_crash = acked_now(&seen);
    assert!(after_crash > after_fast, "uploads resumed after the crash");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("writer");
    }
    watcher.join().expect("watcher");

    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("one owner")
        .into_inner()
        .expect("lock");
    eprintln!("statuses during the run: {:?}", seen.statuses);
    assert!(
        seen.wrong.is_empty(),
        "answers other than 2xx or a proper 503: {:?}",
        seen.wrong
    );
    assert!(
        seen.statuses.get(&503).copied().unwrap_or(0) > 0,
        "the outage was seen: {:?}",
        seen.statuses
    );
    let ready = ready_seen.lock().expect("lock").clone();
    assert!(ready.contains("503 DATABASE_UNREACHABLE"), "{ready:?}");
    assert!(ready.contains("200"), "{ready:?}");

    // What the database holds: every acknowledged upload, no refused one.
    let mut present = BTreeSet::new();
    for (token, aide) in &writers {
        let auth = [("Authorization", format!("Bearer {token}"))];
        let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = http(port, "GET", &format!("/api/aides/{aide}/files"), &auth, "");
        assert_eq!(status, 200, "{body}");
        let files: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(files["next_cursor"].is_null(), "one page holds them");
        for file in files["files"].as_array().expect("files") {
            present.insert((
                aide.clone(),
                file["path"].as_str().expect("path").to_string(),
            ));
        }
    }
    let missing: Vec<_> = seen.acked.difference(&present).collect();
    assert!(missing.is_empty(), "acknowledged uploads lost: {missing:?}");
    let ghosts: Vec<_> = seen.refused.intersection(&present).collect();
    assert!(
        ghosts.is_empty(),
        "refused uploads stored anyway: {ghosts:?}"
    );
    eprintln!(
        "{} uploads acknowledged and present; {} refused and absent",
        seen.acked.len(),
        seen.refused.len()
    );

    stop_server(child);
    // The restarted cluster is no longer the server's child: stop it here.
    cluster(&data, &["stop", "-m", "fast", "-w"]);
}

/// A TCP relay to the S3 server that can be taken down: new connections are refused and open
/// ones cut, as when the object store is unreachable.
struct Relay {
    port: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds each chunk waits before it is passed on, both ways (a slow store).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// Copies `from` to `to` chunk by chunk, each chunk held back `delay_ms` first.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let delay = delay_ms.load(std::sync::atomic::Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (d, o, delay) = (down.clone(), open.clone(), delay_ms.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if d.load(std::sync::atomic::Ordering::Acquire) {
                    continue;
                }
                let (upstream, delay) = (upstream.clone(), delay.clone());
                let task = tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, delay.clone()),
                            pump(server_read, client_write, delay)
                        );
                    }
                });
                o.lock().expect("lock").push(task.abort_handle());
            }
        });
        Relay {
            port,
            down,
            delay_ms,
            open,
        }
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Release,
        );
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Release);
        if down {
            for task in self.open.lock().expect("lock").drain(..) {
                task.abort();
            }
        }
    }
}

/// The object store unreachable during uploads, publishes and reads: each answers 503 with
/// Retry-After in our shape (never a 500), within the storage client's retry budget; nothing half
/// done is left (no file recorded without its bytes, no version without its files); when storage
/// is back, everything works again. Then slow: everything still succeeds, later.
#[tokio::test]
async fn the_object_store_down_is_a_503_and_leaves_nothing_half_done() {
    use axum::http::StatusCode;

    use crate::app::{Req, TestApp};

    let relay = Relay::start(crate::s3::endpoint()).await;
    let endpoint = format!("http://127.0.0.1:{}", relay.port);
    let workspace = crate::s3::new_bucket("ws").await;
    let published = crate::s3::new_bucket("pub").await;
    let app = TestApp::with(&[
        ("R2_ENDPOINT", endpoint.as_str()),
        ("R2_ACCESS_KEY", "test-access-key"),
        ("R2_SECRET_KEY", "test-secret-key"),
        ("R2_WORKSPACE_BUCKET", &workspace),
        ("R2_PUBLISHED_BUCKET", &published),
    ])
    .await;
    let token = app.sign_in("storage-fault@example.com").await;
    let aide = app.create_aide(&token, "Fragile").await;
    app.put_file(&token, &aide, "index.html", "<h1>One</h1>")
        .await;
    let slug = app.publish(&token, &aide).await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::OK
    );

    // The draft changes before the outage, so the next publish has bytes to copy.
    app.put_file(&token, &aide, "index.html", "<h1>Two</h1>")
        .await;
    relay.set_down(true);
    let proper = |answer: &crate::app::Answer, what: &str| {
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            answer.body
        );
        assert!(answer.header("retry-after").is_some(), "{what}");
        assert_eq!(answer.json()["code"], "UNAVAILABLE", "{what}");
    };
    let started = Instant::now();
    let upload = app
        .send(
            Req::new(
                axum::http::Method::PUT,
                &format!("/api/aides/{aide}/files/notes.txt"),
            )
            .bearer(&token)
            .raw_body("lost while storage is down"),
        )
        .await;
    proper(&upload, "upload");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let read = app
        .send(Req::get(&format!("/api/aides/{aide}/files/index.html")).bearer(&token))
        .await;
    proper(&read, "file read");
    let publish = app
        .send(Req::post(&format!("/api/aides/{aide}/publish")).bearer(&token))
        .await;
    proper(&publish, "publish");

    // Nothing half done: the failed upload is not listed, the failed publish made no version.
    let files = app
        .send(Req::get(&format!("/api/aides/{aide}/files")).bearer(&token))
        .await
        .json();
    let paths: Vec<&str> = files["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["index.html"]);
    let versions = app
        .send(Req::get(&format!("/api/aides/{aide}/versions")).bearer(&token))
        .await
        .json();
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );

    // Back: everything works, and the second publish shows the new page.
    relay.set_down(false);
    app.put_file(&token, &aide, "notes.txt", "stored now").await;
    app.publish(&token, &aide).await;
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Two</h1>"), "{}", page.body);

    // Slow (every chunk held back 400 ms each way): an upload, a publish and the public page
    // read after it still succeed, only later, and show the new content.
    relay.set_delay(Duration::from_millis(400));
    let started = Instant::now();
    app.put_file(&token, &aide, "index.html", "<h1>Three</h1>")
        .await;
    app.publish(&token, &aide).await;
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Three</h1>"), "{}", page.body);
    let read = app
        .send(Req::get(&format!("/api/aides/{aide}/files/notes.txt")).bearer(&token))
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, "stored now");
    eprintln!(
        "with a slow store: upload, publish, public read and file read in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    relay.set_delay(Duration::ZERO);
}

/// Starts `aide serve` on `data` and `port` (a restart of an earlier one); returns once ready.
fn serve_on(dir: &Path, data: &Path, port: u16) -> std::process::Child {
    let data = data.to_string_lossy().into_owned();
    let port_str = port.to_string();
    let mut child = crate::cli::aide(
        dir,
        &[
            ("AIDE_DATA_DIR", data.as_str()),
            ("PORT", port_str.as_str()),
            ("API_REQUESTS_PER_USER_PER_MINUTE", "1000000"),
            ("FREE_MAX_FILES_PER_AIDE", "100000"),
            ("PUBLISHES_PER_USER_PER_HOUR", "100000"),
            ("RUST_LOG", "error"),
        ],
        &["serve"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(
        std::fs::File::create(
            dir.join(format!("serve-{}.log", Instant::now().elapsed().as_nanos())),
        )
        .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from),
    )
    .spawn()
    .expect("spawn aide serve");
    let deadline = Instant::now() + Duration::from_secs(90);
    while http_get(port, "/ready").map(|(status, _)| status) != Some(200) {
        if child.try_wait().ok().flatten().is_some() {
            let logs: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("serve-"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect();
            panic!("aide serve exited early:\n{}", logs.join("\n---\n"));
        }
        assert!(Instant::now() < deadline, "aide serve did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The server killed with SIGKILL while uploads and publishes are under way, then started
/// again: every acknowledged upload and publish is there, every file and every published file
/// the database lists has its bytes in storage (nothing points at a missing object), and the
/// public page serves the newest version.
#[test]
fn the_server_killed_mid_upload_and_mid_publish_restarts_with_nothing_half_done() {
    let dir = crate::managed::reachable_temp_dir();
    let data = dir.path().join("aide-data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = serve_on(dir.path(), &data, port);
    let outbox = data.join("outbox");
    let uploader = sign_in(port, &outbox, "killed-uploads@example.com");
    let publisher = sign_in(port, &outbox, "killed-publishes@example.com");
    let create = |token: &str| {
        let auth = format!("Bearer {token}");
        let json = [
            ("Content-Type", "application/json"),
            ("Authorization", auth.as_str()),
        ];
        let (status, body) = http(port, "POST", "/api/aides", &json, "{\"title\":\"Killed\"}");
        assert_eq!(status, 201, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let (upload_aide, publish_aide) = (create(&uploader), create(&publisher));
    let (status, _, _) = request(
        port,
        "PUT",
        &format!("/api/aides/{publish_aide}/files/index.html"),
        &publisher,
        "<h1>version 0</h1>",
    );
    assert_eq!(status, 200);

    let acked_uploads = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_publishes = Arc::new(Mutex::new(0_usize));
    let uploads = {
        let (acked, aide, token) = (acked_uploads.clone(), upload_aide.clone(), uploader.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                let path = format!("u/{i}.txt");
                let (status, _, _) = request(
                    port,
                    "PUT",
                    &format!("/api/aides/{aide}/files/{path}"),
                    &token,
                    &format!("upload {i}"),
                );
                match status {
                    200 => acked.lock().expect("lock").push(path),
                    0 => return,
                    other => panic!("upload answered {other}"),
                }
            }
        })
    };
    let publishes = {
        let (acked, aide, token) = (
            acked_publishes.clone(),
            publish_aide.clone(),
            publisher.clone(),
        );
        std::thread::spawn(move || {
            for i in 1.. {
                let (status, _, _) = request(
                    port,
                    "PUT",
                    &format!("/api/aides/{aide}/files/index.html"),
                    &token,
                    &format!("<h1>version {i}</h1>"),
                );
                if status == 0 {
                    return;
                }
                let (status, _, _) = request(
                    port,
                    "POST",
                    &format!("/api/aides/{aide}/publish"),
                    &token,
                    "{}",
                );
                match status {
                    201 => *acked.lock().expect("lock") += 1,
                    0 => return,
                    other => panic!("publish answered {other}"),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill has no memory-safety preconditions; pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let mut child = child;
    let _ = child.wait();
    uploads.join().expect("uploads");
    publishes.join().expect("publishes");
    let acked_uploads = acked_uploads.lock().expect("lock").clone();
    let acked_publishes = *acked_publishes.lock().expect("lock");
    assert!(
        acked_uploads.len() > 10 && acked_publishes > 2,
        "{} uploads, {acked_publishes} publishes",
        acked_uploads.len()
    );

    let child = serve_on(dir.path(), &data, port);
    // Every acknowledged upload is listed.
    let auth = format!("Bearer {uploader}");
    let (_, body) = http(
        port,
        "GET",
        &format!("/api/aides/{upload_aide}/files"),
        &[("Authorization", auth.as_str())],
        "",
    );
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    let listed: BTreeSet<String> = listed["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_owned))
        .collect();
    for path in &acked_uploads {
        assert!(listed.contains(path), "acknowledged upload {path} lost");
    }
    // Every acknowledged publish is a version.
    let auth = format!("Bearer {publisher}");
    let (_, body) = http(
        port,
        "GET",
        &format!("/api/aides/{publish_aide}/versions"),
        &[("Authorization", auth.as_str())],
        "",
    );
    let versions: serde_json::Value = serde_json::from_str(&body).expect("json");
    let versions = versions["versions"].as_array().expect("versions").len();
    assert!(
        versions >= acked_publishes,
        "{versions} versions for {acked_publishes} acknowledged publishes"
    );

    // Nothing the database lists is missing from storage.
    let url = aide::db::managed::ManagedPostgres::url_in(
        &aide::db::managed::ManagedPostgres::root_in(&data),
        aide::db::managed::SUPERUSER,
        aide::db::managed::DATABASE,
    )
    .expect("url");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (files, published) = runtime.block_on(async {
        let options: aide::db::ConnectOptions = url.parse().expect("options");
        let conn = aide::db::connect(&options).await.expect("connect");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let files: Vec<String> = conn
            .query("select aide_id, sha256 from workspace_files", &[])
            .await
            .expect("files")
            .iter()
            .map(|r| {
                format!(
                    "aides/{}/blobs/{}",
                    r.get::<_, uuid::Uuid>(0),
                    hex(&r.get::<_, Vec<u8>>(1))
                )
            })
            .collect();
        let published: Vec<String> = conn
            .query(
                "select f.aide_id, f.sha256, v.r2_key from published_files f
                 join published_versions v using (aide_id, user_id, version)",
                &[],
            )
            .await
            .expect("published")
            .iter()
            .map(|r| {
                let r2_key: String = r.get(2);
                assert!(r2_key.ends_with("/blobs/"), "{r2_key}");
                format!(
                    "aides/{}/blobs/{}",
                    r.get::<_, uuid::Uuid>(0),
                    hex(&r.get::<_, Vec<u8>>(1))
                )
            })
            .collect();
        (files, published)
    });
    let storage = data.join("storage");
    for key in &files {
        assert!(
            storage.join("aide-workspaces").join(key).exists(),
            "workspace file without bytes: {key}"
        );
    }
    for key in &published {
        assert!(
            storage.join("aide-published").join(key).exists(),
            "published file without bytes: {key}"
        );
    }
    eprintln!(
        "killed after {} uploads and {acked_publishes} publishes acknowledged; {} files and {} published files checked in storage; {versions} versions",
        acked_uploads.len(),
        files.len(),
        published.len()
    );
    stop_server(child);
}

/// Starts `aide serve` on `data` and `port` with `env`, without blocking the runtime; returns
/// once it answers `/ready`.
async fn serve_async(
    dir: &Path,
    data: &Path,
    port: u16,
    env: &[(&str, String)],
) -> std::process::Child {
    let data = data.to_string_lossy().into_owned();
    let port_str = port.to_string();
    let mut all: Vec<(&str, &str)> = vec![
        ("AIDE_DATA_DIR", data.as_str()),
        ("PORT", port_str.as_str()),
        ("RUST_LOG", "warn"),
    ];
    all.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
    let log = dir.join(format!("serve-{port}-{}.log", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log");
    let mut child = crate::cli::aide(dir, &all, &["serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(file))
        .spawn()
        .expect("spawn aide serve");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = reqwest::get(format!("http://127.0.0.1:{port}/ready"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "aide serve exited early ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "aide serve did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigkill(child: &mut std::process::Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill has no memory-safety preconditions; pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let _ = child.wait();
}

/// The sign-in token in the newest email the Resend stand-in received for `email`.
async fn emailed_token(resend: &crate::resend_stub::ResendStub, email: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = resend.received().iter().rev().find_map(|r| {
            let to = r.body["to"][0].as_str()?;
            (to == email && r.status == 200).then(|| r.body["text"].as_str().map(str::to_owned))?
        });
        if let Some(text) = found {
            return text
                .split("token=")
                .nth(1)
                .expect("a link")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
        }
        assert!(Instant::now() < deadline, "no email to {email}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The outside services failing, and the server killed in the middle of a turn and of an email
/// delivery, through the binary with loopback stand-ins for Resend, Stripe and the model:
/// - Resend down for six attempts (the waits between them made short): sign-in still answers,
///   the email goes out once on the seventh; down for all eight: dead-lettered, nothing sent;
/// - the model breaking off mid-answer: the turn fails, is given back, the page is unchanged;
/// - SIGKILL while a turn runs: after the restart the turn is failed and given back (its
///   deadline and the janitor's grace made short), the aide takes a new turn;
/// - SIGKILL while Resend has the email but the server has not heard back: sent again with the
///   same idempotency key, so the person gets one email;
/// - Stripe down: checkout is a 503 in our shape, the rest of the service answers, a webhook is
///   refused with 503 (Stripe sends it again) and takes effect when it is;
/// - a turn's event stream nobody reads: the turn finishes, and the connection is dropped after
///   the write stall (three times HTTP_HEADER_TIMEOUT_SECONDS); an upload that stalls: 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_services_failing_and_the_server_killed_mid_turn_and_mid_email_lose_nothing() {
    use crate::model_stub::{Answer, ModelStub, broken, response};
    use crate::resend_stub::ResendStub;
    use crate::soak::{cluster_url, free_port, last_event, request};
    use crate::stripe_stub::StripeStub;
    use reqwest::Method;
    use serde_json::json;

    const EDITOR: &str = "str_replace_based_edit_tool";
    let dir = crate::managed::reachable_temp_dir();
    let data = dir.path().join("aide-data");
    let port = free_port();
    let model = ModelStub::start().await;
    let resend = ResendStub::start().await;
    let stripe = StripeStub::start().await;
    let mut env = model.vars();
    env.extend(stripe.vars());
    env.extend([
        ("RESEND_API_KEY", crate::resend_stub::API_KEY.to_string()),
        ("RESEND_API_URL", resend.url.clone()),
        ("EMAIL_FROM", "AIde <login@aide.example>".to_string()),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "2".to_string()),
    ]);
    let began = Instant::now();
    let phase = |name: &str| eprintln!("{:>6.1} s  {name}", began.elapsed().as_secs_f64());
    let mut child = serve_async(dir.path(), &data, port, &env).await;
    // No idle connections kept: the server closes them after 2 s here, and a request sent on
    // one just as it closes would fail on the client's side.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let host = format!("127.0.0.1:{port}");
    let base = format!("http://{host}");
    let call =
        async |method: Method, path: &str, token: Option<&str>, body: Option<serde_json::Value>| {
            request(
                &client,
                method,
                &format!("{base}{path}"),
                &host,
                token,
                body.map(|b| ("application/json", b.to_string())),
            )
            .await
        };
    let superuser: aide::db::ConnectOptions = cluster_url(&data, aide::db::managed::SUPERUSER)
        .parse()
        .expect("options");
    let sql = async |statement: &str, email: &str| {
        let conn = aide::db::connect(&superuser).await.expect("connect");
        conn.execute(statement, &[&email]).await.expect(statement)
    };
    let outbox = async |email: &str| -> (String, i32) {
        let conn = aide::db::connect(&superuser).await.expect("connect");
        let row = conn
            .query_one(
                "select status, attempts from email_outbox where to_address = $1 order by created_at desc limit 1",
                &[&email],
            )
            .await
            .expect("outbox");
        (row.get(0), row.get(1))
    };
    let sent_to = |email: &str| {
        resend
            .received()
            .iter()
            .filter(|r| r.body["to"][0] == email)
            .map(|r| (r.status, r.idempotency_key.clone()))
            .collect::<Vec<_>>()
    };
    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Resend down for six attempts, then up: one email, on the seventh attempt.
    let late = "late@example.com";
    resend.script(&[(500, None); 6]);
    let asked = call(
        Method::POST,
        "/auth/send",
        None,
        Some(json!({"email": late})),
    )
    .await;
    assert_eq!(asked.status, 200, "sign-in answers while email is down");
    for attempt in 1..=6 {
        wait_for("a failed attempt", || sent_to(late).len() >= attempt).await;
        // The backoff (2 s, 4 s, 8 s ... an hour at most) made short.
        assert_eq!(call(Method::GET, "/ready", None, None).await.status, 200);
        sql(
            "update email_outbox set next_attempt_at = now() where to_address = $1 and status = 'pending'",
            late,
        )
        .await;
    }
    wait_for("the seventh attempt", || sent_to(late).len() >= 7).await;
    let attempts = sent_to(late);
    assert_eq!(attempts.iter().filter(|(s, _)| *s == 200).count(), 1);
    assert!(
        attempts.iter().all(|(_, key)| *key == attempts[0].1),
        "one idempotency key"
    );
    let token = emailed_token(&resend, late).await;
    let verified = call(
        Method::POST,
        "/auth/verify",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(
        verified.status, 200,
        "the late link still works: {}",
        verified.body
    );
    let session = verified.json()["token"]
        .as_str()
        .expect("session")
        .to_string();
    let t = Some(session.as_str());

    phase("email: delivered on the seventh attempt after six failures");
    // Down for all eight attempts: given up on, nothing delivered.
    let lost = "lost@example.com";
    resend.script(&[(503, None); 8]);
    call(
        Method::POST,
        "/auth/send",
        None,
        Some(json!({"email": lost})),
    )
    .await;
    for attempt in 1..=8 {
        wait_for("a failed attempt", || sent_to(lost).len() >= attempt).await;
        sql(
            "update email_outbox set next_attempt_at = now() where to_address = $1 and status = 'pending'",
            lost,
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox(lost).await.0 != "dead" {
        assert!(
            Instant::now() < deadline,
            "dead-lettered after eight attempts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outbox(lost).await, ("dead".to_string(), 8));
    assert!(sent_to(lost).iter().all(|(s, _)| *s != 200));

    phase("email: dead-lettered after eight failures, nothing sent");
    // The model breaks off mid-answer: failed, given back, the page unchanged.
    let aide = call(
        Method::POST,
        "/api/aides",
        t,
        Some(json!({"title": "Faults"})),
    )
    .await
    .json()["id"]
        .as_str()
        .expect("aide")
        .to_string();
    let page_path = format!("/api/aides/{aide}/files/index.html");
    let put = request(
        &client,
        Method::PUT,
        &format!("{base}{page_path}"),
        &host,
        t,
        Some(("text/html", "<h1>Before</h1>".to_string())),
    )
    .await;
    assert_eq!(put.status, 200);
    let write_after = || {
        response(
            "Rewrote it.",
            &[(
                EDITOR,
                json!({"command": "create", "path": "index.html", "file_text": "<h1>After</h1>"}),
            )],
            "tool_use",
        )
    };
    model.script(vec![broken(write_after(), 3, "overloaded_error")]);
    let turns = format!("/api/aides/{aide}/turns");
    let failed = call(
        Method::POST,
        &turns,
        t,
        Some(json!({"content": "rewrite", "client_turn_id": "f-1"})),
    )
    .await;
    assert_eq!(failed.status, 200);
    let (event, data_) = last_event(&failed.body);
    assert_eq!(event, "turn.failed", "{data_}");
    assert_eq!(data_["refunded"], true, "{data_}");
    assert_eq!(
        call(Method::GET, &page_path, t, None).await.body,
        "<h1>Before</h1>"
    );
    assert_eq!(
        call(Method::GET, "/auth/me", t, None).await.json()["turns"]["used"],
        0
    );

    phase("model broke off: turn failed and given back, page unchanged");
    // SIGKILL while a turn runs: failed and given back after the restart.
    let asked_before = model.received().len();
    model.script(vec![Answer::Stall {
        events: vec![(
            "message_start".into(),
            json!({"type": "message_start", "message": {"id": "msg_k", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        )],
    }]);
    let running = {
        let (client, url, host, session) = (
            client.clone(),
            format!("{base}{turns}"),
            host.clone(),
            session.clone(),
        );
        tokio::spawn(async move {
            request(
                &client,
                Method::POST,
                &url,
                &host,
                Some(&session),
                Some((
                    "application/json",
                    json!({"content": "long", "client_turn_id": "f-2"}).to_string(),
                )),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let turn = loop {
        let list = call(Method::GET, &turns, t, None).await.json();
        if let Some(id) = list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["status"] == "running"))
            .and_then(|i| i["id"].as_str())
        {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the turn did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Killed only once the model has been asked (and so has taken the stalling answer).
    wait_for("the model asked", || model.received().len() > asked_before).await;
    assert_eq!(
        call(Method::GET, "/auth/me", t, None).await.json()["turns"]["used"],
        1
    );
    sigkill(&mut child);
    assert_eq!(
        running.await.expect("task").status,
        0,
        "the stream broke with the server"
    );
    child = serve_async(dir.path(), &data, port, &env).await;
    // The turn's deadline (AI_TURN_TIMEOUT_SECONDS, and the janitor's minute of grace) made short.
    sql(
        "update ai_turns set deadline = now() - interval '2 minutes' where status = 'running' and client_turn_id = $1",
        "f-2",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let record = call(Method::GET, &format!("{turns}/{turn}"), t, None)
            .await
            .json();
        if record["status"] != "running" {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the janitor did not end the turn"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["counted"], false, "{record}");
    assert_eq!(
        call(Method::GET, "/auth/me", t, None).await.json()["turns"]["used"],
        0
    );
    assert_eq!(
        call(Method::GET, &page_path, t, None).await.body,
        "<h1>Before</h1>"
    );
    model.script(vec![write_after()]);
    let again = call(
        Method::POST,
        &turns,
        t,
        Some(json!({"content": "rewrite", "client_turn_id": "f-3"})),
    )
    .await;
    assert_eq!(
        last_event(&again.body).0,
        "turn.completed",
        "{}",
        again.body
    );
    assert_eq!(
        call(Method::GET, &page_path, t, None).await.body,
        "<h1>After</h1>"
    );

    phase("killed mid-turn: failed and given back after the restart");
    // SIGKILL while Resend holds its answer: sent again under the same key, one email.
    let held = "held@example.com";
    resend.hold_answers(Duration::from_secs(120));
    call(
        Method::POST,
        "/auth/send",
        None,
        Some(json!({"email": held})),
    )
    .await;
    wait_for("the delivery under way", || !sent_to(held).is_empty()).await;
    sigkill(&mut child);
    resend.hold_answers(Duration::ZERO);
    child = serve_async(dir.path(), &data, port, &env).await;
    // The claim's two-minute lease made short.
    sql(
        "update email_outbox set next_attempt_at = now() where to_address = $1 and status = 'pending'",
        held,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox(held).await.0 != "sent" {
        assert!(Instant::now() < deadline, "sent after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = sent_to(held);
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert_eq!(
        deliveries[0].1, deliveries[1].1,
        "the same idempotency key: one email"
    );

    phase("killed mid-delivery: sent again under the same key");
    // Stripe down: checkout is a 503, the rest answers; a webhook waits for Stripe.
    stripe.set_down(true);
    let checkout = call(Method::POST, "/api/billing/checkout", t, None).await;
    assert_eq!(
        (checkout.status, checkout.code().as_str()),
        (503, "PAYMENTS_UNAVAILABLE"),
        "{}",
        checkout.body
    );
    assert_eq!(call(Method::GET, "/api/aides", t, None).await.status, 200);
    assert_eq!(call(Method::GET, "/ready", None, None).await.status, 200);
    stripe.set_down(false);
    let checkout = call(Method::POST, "/api/billing/checkout", t, None).await;
    assert_eq!(checkout.status, 200, "{}", checkout.body);
    let session_id = checkout.json()["url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("session")
        .to_string();
    let (_, events) = stripe.complete_checkout(&session_id);
    let deliver = async |event: &serde_json::Value| {
        let (body, signature) = StripeStub::signed(event);
        client
            .post(format!("{base}/stripe/webhook"))
            .header("stripe-signature", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("webhook")
            .status()
            .as_u16()
    };
    stripe.set_down(true);
    for event in &events {
        let status = deliver(event).await;
        assert!(status == 503 || status == 200, "{status}");
    }
    assert_eq!(
        call(Method::GET, "/auth/me", t, None).await.json()["tier"],
        "free"
    );
    stripe.set_down(false);
    for event in &events {
        assert_eq!(deliver(event).await, 200);
    }
    assert_eq!(
        call(Method::GET, "/auth/me", t, None).await.json()["tier"],
        "pro"
    );

    phase("Stripe down: checkout 503, webhook 503 then applied");
    // A turn's stream that nobody reads, and an upload that stalls.
    let deltas: Vec<(String, serde_json::Value)> = std::iter::once((
        "message_start".to_string(),
        json!({"type": "message_start", "message": {"id": "msg_big", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    ))
    .chain(std::iter::once((
        "content_block_start".to_string(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    )))
    .chain((0..1_500).map(|_| {
        (
            "content_block_delta".to_string(),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x".repeat(4000)}}),
        )
    }))
    .chain([
        ("content_block_stop".to_string(), json!({"type": "content_block_stop", "index": 0})),
        ("message_delta".to_string(), json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 150}})),
        ("message_stop".to_string(), json!({"type": "message_stop"})),
    ])
    .collect();
    model.script(vec![Answer::Stream {
        events: deltas,
        pause: Duration::ZERO,
    }]);
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // A receive buffer of 4 KiB: the client's window fills at once, as a reader that stopped.
    let receive_buffer = |stream: &TcpStream, size: libc::c_int| {
        // SAFETY: setsockopt on our own open socket, with a pointer to a live c_int and its size.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                std::ptr::from_ref(&size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
    };
    receive_buffer(&stalled, 4096);
    let body = json!({"content": "talk a lot", "client_turn_id": "f-4"}).to_string();
    write!(
        stalled,
        "POST {turns} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {session}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut upload = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        upload,
        "PUT /api/aides/{aide}/files/slow.txt HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {session}\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nten bytes."
    )
    .expect("send");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = call(Method::GET, &turns, t, None).await.json();
        // Four turns on this aide by now; done when none runs.
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let done = items.len() == 4
            && items
                .iter()
                .all(|i| i["status"] == "completed" || i["status"] == "failed");
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unread turn did not finish: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase("the unread turn finished");
    // Past the write stall (6 s here), the server has let go of the stalled connection.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // Read what the server had sent before it gave up, at full speed (a window of 4 KiB would
    // take minutes to move the megabytes its send buffer held).
    receive_buffer(&stalled, 8 << 20);
    let mut received = Vec::new();
    let ended = stalled.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received);
    assert!(
        ended.is_ok()
            || ended
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{ended:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        !text.contains("event: turn.completed") && !text.contains("event: turn.failed"),
        "the stalled reader was cut off ({} bytes read)",
        received.len()
    );
    phase("the stalled reader's connection read to its end");
    upload
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = upload.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("UPLOAD_STALLED"), "{answer}");

    phase("stalled reader cut off, stalled upload 408");
    assert!(model.problems().is_empty(), "{:?}", model.problems());
    assert!(resend.problems().is_empty(), "{:?}", resend.problems());
    assert!(stripe.problems().is_empty(), "{:?}", stripe.problems());
    stop_server(child);
}
