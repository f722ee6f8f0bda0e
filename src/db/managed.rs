//! The embedded default database: a private PostgreSQL cluster, started from the server binaries
//! installed on the machine, in a folder under AIDE_DATA_DIR and reused across restarts.
//!
//! It listens on a Unix socket only, in a folder no one else may enter, and trusts whoever reaches
//! that socket (that is, the account running aide, or root). The cluster runs as a child process
//! that is stopped when [`ManagedPostgres::stop`] is called, when the value is dropped, and (through
//! the kernel's parent-death signal) when aide itself dies.

mod binaries;
mod os_user;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use binaries::PgBinaries;
pub use os_user::OsUser;

use super::{ConnectOptions, Error, LOGIN_ROLE, connect};

/// The cluster's superuser. Used for set-up and migrations only, never for serving data.
pub const SUPERUSER: &str = "postgres";
/// The database the server uses in the managed cluster.
pub const DATABASE: &str = "aide";
/// Names the socket file; no TCP port is opened.
const PORT: u16 = 5432;
/// Socket paths are limited to 107 bytes on Linux; past this, the socket goes to a temp folder.
const MAX_SOCKET_DIR_LEN: usize = 90;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// PG_BINDIR: where the server binaries are; found automatically when None.
    pub bindir: Option<PathBuf>,
    /// Trade crash safety for speed (fsync off): for throwaway test clusters only.
    pub ephemeral: bool,
}

/// A running private cluster.
pub struct ManagedPostgres {
    root: PathBuf,
    socket_dir: PathBuf,
    major: u32,
    child: Arc<Mutex<Option<Child>>>,
    stop_tx: Option<mpsc::Sender<()>>,
    // In a Mutex only so the handle is Sync (it can sit in a static or an Arc).
    done_rx: Option<Mutex<mpsc::Receiver<Option<ExitStatus>>>>,
}

impl std::fmt::Debug for ManagedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedPostgres")
            .field("root", &self.root)
            .field("socket_dir", &self.socket_dir)
            .field("major", &self.major)
            .finish()
    }
}

impl ManagedPostgres {
    /// The folder of the cluster kept under a data folder.
    pub fn root_in(data_dir: &Path) -> PathBuf {
        data_dir.join("postgres")
    }

    /// Starts the cluster kept in `root`, creating it on first use, and waits until it accepts
    /// connections.
    pub async fn start(root: &Path, options: ClusterOptions) -> Result<Self, String> {
        let root = absolute(root)?;
        let root_for_spawn = root.clone();
        let mut cluster = tokio::task::spawn_blocking(move || spawn(&root_for_spawn, &options))
            .await
            .map_err(|e| format!("starting PostgreSQL panicked: {e}"))??;
        if let Err(e) = cluster.wait_ready().await {
            cluster.stop().await.ok();
            return Err(e);
        }
        tracing::info!(
            postgres.major = cluster.major,
            postgres.root = %cluster.root.display(),
            "managed PostgreSQL is ready"
        );
        Ok(cluster)
    }

    /// The URL of the cluster kept in `root`, whether or not it is running.
    pub fn url_in(root: &Path, user: &str, database: &str) -> Result<String, String> {
        Ok(socket_url(
            &socket_dir_path(&absolute(root)?),
            user,
            database,
        ))
    }

    /// The folder holding the socket: what `host=` names in a connection URL.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Connection options for the superuser, for set-up and migrations.
    pub fn admin_options(&self, database: &str) -> ConnectOptions {
        options_for(&self.socket_dir, SUPERUSER, database)
    }

    /// Connection options for the server's login role.
    pub fn app_options(&self, database: &str) -> ConnectOptions {
        options_for(&self.socket_dir, LOGIN_ROLE, database)
    }

    /// A connection URL that both psql and aide understand.
    pub fn url(&self, user: &str, database: &str) -> String {
        socket_url(&self.socket_dir, user, database)
    }

    /// Creates `database` when it does not exist.
    pub async fn ensure_database(&self, database: &str) -> Result<(), Error> {
        let conn = connect(&self.admin_options("postgres")).await?;
        let exists: bool = conn
            .query_one(
                "select exists (select 1 from pg_database where datname = $1)",
                &[&database],
            )
            .await?
            .try_get(0)?;
        if !exists {
            // Identifiers cannot be parameters; quote it as PostgreSQL's quote_ident would.
            let quoted = format!("\"{}\"", database.replace('"', "\"\""));
            conn.batch_execute(&format!("create database {quoted}"))
                .await?;
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let options = self.admin_options("postgres");
        loop {
            if let Some(status) = self.exited()? {
                return Err(format!(
                    "PostgreSQL exited during start-up ({status}); is another aide server using {}? Its log says:\n{}",
                    self.root.display(),
                    log_tail(&self.root)
                ));
            }
            match connect(&options).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "PostgreSQL did not accept connections within {}s ({e}). Its log says:\n{}",
                        READY_TIMEOUT.as_secs(),
                        log_tail(&self.root)
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn exited(&self) -> Result<Option<ExitStatus>, String> {
        let mut guard = self
            .child
            .lock()
            .map_err(|_| "the PostgreSQL keeper thread panicked".to_string())?;
        match guard.as_mut() {
            Some(child) => child
                .try_wait()
                .map_err(|e| format!("could not check on PostgreSQL: {e}")),
            None => Ok(None),
        }
    }

    /// Stops the cluster (a fast shutdown: open sessions are ended) and waits for it.
    pub async fn stop(mut self) -> Result<(), String> {
        drop(self.stop_tx.take());
        let Some(Ok(done)) = self.done_rx.take().map(Mutex::into_inner) else {
            return Ok(());
        };
        let status = tokio::task::spawn_blocking(move || done.recv_timeout(STOP_TIMEOUT))
            .await
            .map_err(|e| format!("stopping PostgreSQL panicked: {e}"))?
            .map_err(|_| format!("PostgreSQL did not stop within {}s", STOP_TIMEOUT.as_secs()))?;
        tracing::info!(status = ?status, "managed PostgreSQL stopped");
        Ok(())
    }
}

impl Drop for ManagedPostgres {
    fn drop(&mut self) {
        // Dropping the sender wakes the keeper thread, which stops PostgreSQL.
        drop(self.stop_tx.take());
    }
}

/// Prepares the folders, creates the cluster on first use, and starts PostgreSQL from a keeper
/// thread.
/// How long a start waits for the cluster of a server that just died to finish shutting down.
const PREVIOUS_SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// Waits while the cluster in `data` is still run by a postmaster shutting down: when an aide
/// server is killed (SIGKILL), its cluster sees the parent's death and stops, which takes a
/// moment; a server started again at once (by a supervisor) waits for it rather than fail.
fn wait_for_previous(data: &Path) {
    let deadline = std::time::Instant::now() + PREVIOUS_SHUTDOWN_WAIT;
    while std::time::Instant::now() < deadline {
        let Some(pid) = fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        else {
            return;
        };
        let running = fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|name| name.trim() == "postgres");
        if !running {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(root: &Path, options: &ClusterOptions) -> Result<ManagedPostgres, String> {
    let binaries = PgBinaries::locate(options.bindir.as_deref())?;
    let run_as = os_user::cluster_user()?;

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(|e| format!("could not create {}: {e}", root.display()))?;
    if let Some(user) = &run_as {
        os_user::check_reachable(&root.join("data"), user)?;
    }

    let data = root.join("data");
    if !data.join("PG_VERSION").is_file() {
        init_cluster(root, &data, &binaries, run_as.as_ref())?;
    }
    let socket_dir = prepare_socket_dir(root, run_as.as_ref())?;
    wait_for_previous(&data);

    let log = open_log(root)?;
    let mut command = Command::new(binaries.postgres());
    command
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&socket_dir)
        .arg("-p")
        .arg(PORT.to_string())
        .args(["-c", "listen_addresses="])
        .args(["-c", "unix_socket_permissions=0700"])
        .args(["-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| format!("could not open the PostgreSQL log: {e}"))?,
        )
        .stderr(log);
    if options.ephemeral {
        command.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    if let Some(user) = &run_as {
        command.uid(user.uid).gid(user.gid);
    }
    die_with_parent(&mut command);

    let child_slot: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
    let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Option<ExitStatus>>();
    let slot = Arc::clone(&child_slot);

    // The kernel's parent-death signal fires when the *thread* that spawned a child ends, so
    // PostgreSQL is spawned from a thread that lives exactly as long as the cluster is wanted.
    std::thread::Builder::new()
        .name("aide-postgres".to_string())
        .spawn(move || keep(command, slot, started_tx, stop_rx, done_tx))
        .map_err(|e| format!("could not start the PostgreSQL keeper thread: {e}"))?;
    started_rx
        .recv()
        .map_err(|_| "the PostgreSQL keeper thread ended early".to_string())??;

    Ok(ManagedPostgres {
        root: root.to_path_buf(),
        socket_dir,
        major: binaries.major,
        child: child_slot,
        stop_tx: Some(stop_tx),
        done_rx: Some(Mutex::new(done_rx)),
    })
}

/// The keeper thread: starts PostgreSQL, waits to be told to stop (or for the handle to be
/// dropped), then asks for a fast shutdown and reaps the process.
fn keep(
    mut command: Command,
    slot: Arc<Mutex<Option<Child>>>,
    started: mpsc::Sender<Result<(), String>>,
    stop: mpsc::Receiver<()>,
    done: mpsc::Sender<Option<ExitStatus>>,
) {
    match command.spawn() {
        Ok(child) => {
            if let Ok(mut guard) = slot.lock() {
                *guard = Some(child);
            }
            let _ = started.send(Ok(()));
        }
        Err(e) => {
            let _ = started.send(Err(format!("could not run PostgreSQL: {e}")));
            return;
        }
    }
    // Returns when stop is requested or the handle is dropped.
    let _ = stop.recv();
    let status = slot.lock().ok().and_then(|mut guard| {
        let child = guard.as_mut()?;
        if let Ok(None) = child.try_wait()
            && let Ok(pid) = i32::try_from(child.id())
        {
            // SAFETY: kill has no memory-safety preconditions; pid is our own child, not reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        child.wait().ok()
    });
    let _ = done.send(status);
}

/// Asks the kernel to stop the child (fast shutdown) if the thread that spawned it dies.
fn die_with_parent(command: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// Runs initdb into a temporary folder, then moves it into place, so an interrupted initdb never
/// leaves a half-made cluster behind.
fn init_cluster(
    root: &Path,
    data: &Path,
    binaries: &PgBinaries,
    run_as: Option<&OsUser>,
) -> Result<(), String> {
    let staging = root.join("data.init");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(|e| format!("could not remove {}: {e}", staging.display()))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| format!("could not create {}: {e}", staging.display()))?;
    if let Some(user) = run_as {
        os_user::chown(&staging, user)?;
    }

    let log = open_log(root)?;
    let mut command = Command::new(binaries.initdb());
    command
        .arg("-D")
        .arg(&staging)
        .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
        .arg("--no-instructions")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| format!("could not open the PostgreSQL log: {e}"))?,
        )
        .stderr(log);
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    let status = command
        .status()
        .map_err(|e| format!("could not run initdb: {e}"))?;
    if !status.success() {
        return Err(format!(
            "initdb failed ({status}). The log says:\n{}",
            log_tail(root)
        ));
    }
    fs::rename(&staging, data).map_err(|e| {
        format!(
            "could not move {} to {}: {e}",
            staging.display(),
            data.display()
        )
    })
}

/// The socket folder: `root/run`, or a folder in the system temp folder when that path would be
/// too long for a Unix socket. Either way only the cluster's account may enter it.
fn prepare_socket_dir(root: &Path, run_as: Option<&OsUser>) -> Result<PathBuf, String> {
    let dir = socket_dir_path(root);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("could not create {}: {e}", dir.display())),
    }
    if let Some(user) = run_as {
        os_user::chown(&dir, user)?;
    }
    // A folder someone else made (in a shared temp folder, say) could let them listen in.
    let meta = fs::symlink_metadata(&dir)
        .map_err(|e| format!("could not inspect {}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let expected_uid = run_as.map_or_else(|| unsafe { libc::geteuid() }, |u| u.uid);
    if !meta.is_dir() || meta.uid() != expected_uid {
        return Err(format!(
            "{} is not a folder owned by the cluster's account; remove it and try again",
            dir.display()
        ));
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("could not restrict {}: {e}", dir.display()))?;
    Ok(dir)
}

fn socket_dir_path(root: &Path) -> PathBuf {
    let dir = root.join("run");
    if dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        return dir;
    }
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!("aide-pg-{tag}"))
}

fn open_log(root: &Path) -> Result<File, String> {
    let path = root.join("postgres.log");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("could not open {}: {e}", path.display()))
}

/// The last lines of the cluster's log, for error messages.
fn log_tail(root: &Path) -> String {
    let Ok(mut file) = File::open(root.join("postgres.log")) else {
        return "(no log)".to_string();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(2000)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("could not resolve {}: {e}", path.display()))
}

fn options_for(socket_dir: &Path, user: &str, database: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new();
    options
        .host_path(socket_dir)
        .port(PORT)
        .user(user)
        .dbname(database)
        .application_name("aide");
    options
}

/// `postgresql://user@/db?host=/socket/dir&port=5432`: libpq (psql) and tokio-postgres both read
/// `host=` as the socket folder.
fn socket_url(socket_dir: &Path, user: &str, database: &str) -> String {
    // No host before the path: a URL client that reads both would try it first.
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "postgresql://{}@/{}?host={}&port={PORT}",
        encode(user),
        encode(database),
        encode(&socket_dir.to_string_lossy())
    )
}
