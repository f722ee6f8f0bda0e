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
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (d, o) = (down.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(std::sync::atomic::Ordering::Acquire) {
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                o.lock().expect("lock").push(task.abort_handle());
            }
        });
        Relay { port, down, open }
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
/// is back, everything works again.
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
