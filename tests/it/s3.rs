//! A real S3-protocol server for the storage tests: moto's server, started once per test process
//! on a free port (scripts/test installs it), or the one AIDE_TEST_S3_ENDPOINT names.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ENDPOINT: OnceLock<String> = OnceLock::new();

/// The server's base URL, starting it on first use.
pub fn endpoint() -> &'static str {
    ENDPOINT.get_or_init(|| {
        if let Ok(url) = std::env::var("AIDE_TEST_S3_ENDPOINT") {
            return url;
        }
        let binary = std::env::var("AIDE_TEST_MOTO_SERVER").unwrap_or_else(|_| {
            format!(
                "{}/target/test-tools/moto/bin/moto_server",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        assert!(
            std::path::Path::new(&binary).exists(),
            "the storage tests need moto's S3 server at {binary}: run scripts/test, which installs it"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        // The kernel stops the server when the thread that started it ends: a thread that lives
        // as long as the test process.
        let (started, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut command = Command::new(&binary);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; the closure runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = command.spawn();
            let _ = started.send(child.is_ok());
            if let Ok(mut child) = child {
                let _ = child.wait();
            }
        });
        assert!(ready.recv().unwrap_or(false), "could not start {port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto's S3 server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("http://127.0.0.1:{port}")
    })
}

/// Creates a bucket with a fresh name and returns the name.
pub async fn new_bucket(prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let response = reqwest::Client::new()
        .put(format!("{}/{name}", endpoint()))
        .send()
        .await
        .expect("create bucket");
    assert!(
        response.status().is_success(),
        "create bucket: {}",
        response.status()
    );
    name
}
