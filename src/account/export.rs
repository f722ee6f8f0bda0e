//! Making an export: one zip archive of everything a person has, read under their own row-level
//! security, written to a temporary file and then uploaded to the workspace bucket.
//!
//! Memory stays flat however large the files are: each stored object is read as a stream and
//! written to the archive chunk by chunk, through a bounded channel to the thread that writes the
//! zip, and the finished archive is uploaded in parts read from the file.
//!
//! Layout (also in the archive's `README.txt`):
//!
//! ```text
//! README.txt
//! manifest.json                       schema version, time, user id, every file's size and SHA-256, counts
//! account.json                        profile, plan, billing status (no Stripe ids)
//! audit_log.jsonl                     the account's own audit trail, a JSON object a line
//! aides/{id}/aide.json                the aide, its files' list, its published versions
//! aides/{id}/conversation.jsonl       its conversation, a message a line
//! aides/{id}/revisions.json           its revisions: number, cause, time, and the files of each
//! aides/{id}/files/{path}             its workspace files (the draft page)
//! aides/{id}/published/v{n}/{path}    the files of each published version
//! ```

use std::io::Write as _;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures_util::StreamExt;
use object_store::{ObjectStore, WriteMultipart};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::repo;
use crate::db::{self, UserId};
use crate::email::NewEmail;
use crate::state::AppState;
use crate::storage::keys;

/// The version of the archive's layout, in `manifest.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// How long a finished archive can be downloaded.
pub const KEPT_DAYS: i64 = 7;

/// Bytes of text gathered before they go to the archive.
const FLUSH_AT: usize = 1 << 20;

/// What the zip-writing thread is told: start an entry (compressed or stored), or add bytes.
enum Piece {
    Start(String, bool),
    Data(Bytes),
}

/// An archive being written: entries go to the writing thread; their sizes and hashes are kept
/// for the manifest.
struct Archive {
    pieces: mpsc::Sender<Piece>,
    files: Vec<Value>,
    current: Option<(String, Sha256, u64)>,
}

impl Archive {
    async fn send(&self, piece: Piece) -> anyhow::Result<()> {
        self.pieces
            .send(piece)
            .await
            .map_err(|_| anyhow::anyhow!("the archive writer stopped"))
    }

    async fn start(&mut self, name: String, compress: bool) -> anyhow::Result<()> {
        self.end();
        self.send(Piece::Start(name.clone(), compress)).await?;
        self.current = Some((name, Sha256::new(), 0));
        Ok(())
    }

    async fn write(&mut self, bytes: Bytes) -> anyhow::Result<()> {
        if let Some((_, hasher, size)) = &mut self.current {
            hasher.update(&bytes);
            *size += bytes.len() as u64;
        }
        self.send(Piece::Data(bytes)).await
    }

    fn end(&mut self) {
        if let Some((path, hasher, size)) = self.current.take() {
            self.files.push(json!({
                "path": path,
                "size": size,
                "sha256": keys::hex(&hasher.finalize()),
            }));
        }
    }

    /// A whole entry from memory.
    async fn entry(&mut self, name: String, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.start(name, true).await?;
        self.write(Bytes::from(bytes)).await?;
        self.end();
        Ok(())
    }

    /// An entry streamed from object storage; false (and no entry) when the object is not there.
    async fn object(
        &mut self,
        name: String,
        store: &dyn ObjectStore,
        key: &object_store::path::Path,
        compress: bool,
    ) -> anyhow::Result<bool> {
        let found = match store.get(key).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.start(name, compress).await?;
        let mut stream = found.into_stream();
        while let Some(chunk) = stream.next().await {
            self.write(chunk?).await?;
        }
        self.end();
        Ok(true)
    }
}

/// Lines of JSON gathered into chunks for one entry.
struct Lines<'a> {
    archive: &'a mut Archive,
    buffer: Vec<u8>,
}

impl<'a> Lines<'a> {
    async fn new(archive: &'a mut Archive, name: String) -> anyhow::Result<Lines<'a>> {
        archive.start(name, true).await?;
        Ok(Lines {
            archive,
            buffer: Vec::with_capacity(FLUSH_AT),
        })
    }

    async fn push(&mut self, value: &Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.buffer, value)?;
        self.buffer.push(b'\n');
        if self.buffer.len() >= FLUSH_AT {
            let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(FLUSH_AT));
            self.archive.write(Bytes::from(chunk)).await?;
        }
        Ok(())
    }

    async fn end(self) -> anyhow::Result<()> {
        if !self.buffer.is_empty() {
            self.archive.write(Bytes::from(self.buffer)).await?;
        }
        self.archive.end();
        Ok(())
    }
}

/// Whether a file of this type is worth compressing (text is; images and archives are not).
/// An object was not in storage: fine when its aide was deleted, or its workspace blob (`sha256`)
/// is no longer referred to, since the export listed it (recorded in `skipped`); an error when
/// it still should be there.
async fn changed_meanwhile(
    state: &AppState,
    user: UserId,
    aide: Uuid,
    sha256: Option<&Vec<u8>>,
    name: &str,
    skipped: &mut Vec<Value>,
) -> anyhow::Result<()> {
    let tx = state.db.user(user).await?;
    let no_blob: Vec<u8> = Vec::new();
    let still: bool = tx
        .value(
            &repo::STILL_STORED,
            &[&aide, &user, sha256.unwrap_or(&no_blob), &sha256.is_some()],
        )
        .await?;
    tx.rollback();
    if still {
        anyhow::bail!("{name} is missing from storage");
    }
    skipped.push(json!({"path": name, "reason": "deleted or replaced while the export ran"}));
    Ok(())
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("javascript")
        || content_type.contains("xml")
        || content_type.contains("svg")
}

fn time(at: &DateTime<Utc>) -> String {
    crate::time::rfc3339_string(at)
}

fn time_opt(at: &Option<DateTime<Utc>>) -> Value {
    at.as_ref().map_or(Value::Null, |at| json!(time(at)))
}

/// What went into the archive, counted.
#[derive(Debug, Default)]
struct Counts {
    aides: u64,
    messages: u64,
    workspace_files: u64,
    revisions: u64,
    published_versions: u64,
    published_files: u64,
    audit_rows: u64,
}

/// Writes every entry, the manifest last.
async fn feed(state: &AppState, user: UserId, archive: &mut Archive) -> anyhow::Result<()> {
    let mut counts = Counts::default();
    let mut skipped: Vec<Value> = Vec::new();
    let generated_at = Utc::now();
    archive
        .entry("README.txt".to_string(), readme(&generated_at).into_bytes())
        .await?;

    let tx = state.db.user(user).await?;
    let account: Option<AccountRow> = tx.row_opt(&repo::ACCOUNT, &[&user]).await?;
    let aides: Vec<AideRow> = tx.rows(&repo::AIDES, &[&user]).await?;
    tx.rollback();
    let account = account.ok_or_else(|| anyhow::anyhow!("the account is gone"))?;
    archive
        .entry(
            "account.json".to_string(),
            serde_json::to_vec_pretty(&account.json())?,
        )
        .await?;

    for aide in &aides {
        counts.aides += 1;
        let base = format!("aides/{}", aide.id);
        let tx = state.db.user(user).await?;
        let files: Vec<FileRow> = tx.rows(&repo::FILES, &[&aide.id, &user]).await?;
        let revisions: Vec<RevisionRow> = tx.rows(&repo::REVISIONS, &[&aide.id, &user]).await?;
        let revision_files: Vec<VersionFileRow> =
            tx.rows(&repo::REVISION_FILES, &[&aide.id, &user]).await?;
        let versions: Vec<VersionRow> = tx.rows(&repo::VERSIONS, &[&aide.id, &user]).await?;
        let version_files: Vec<VersionFileRow> =
            tx.rows(&repo::VERSION_FILES, &[&aide.id, &user]).await?;
        tx.rollback();

        let files_of = |rows: &[VersionFileRow], n: i32| -> Vec<Value> {
            rows.iter()
                .filter(|f| f.number == n)
                .map(|f| {
                    json!({"path": f.path, "size": f.size, "content_type": f.content_type,
                           "sha256": keys::hex(&f.sha256)})
                })
                .collect()
        };
        let aide_json = json!({
            "id": aide.id,
            "title": aide.title,
            "slug": aide.slug,
            "status": aide.status,
            "created_at": time(&aide.created_at),
            "updated_at": time(&aide.updated_at),
            "files": files.iter().map(|f| json!({
                "path": f.path, "size": f.size, "content_type": f.content_type,
                "sha256": keys::hex(&f.sha256), "updated_at": time(&f.updated_at),
                "in_archive": format!("{base}/files/{}", f.path),
            })).collect::<Vec<_>>(),
            "published_versions": versions.iter().map(|v| json!({
                "version": v.version, "notes": v.notes, "size": v.size,
                "published_at": time(&v.published_at), "revision": v.revision,
                "files": files_of(&version_files, v.version),
                "in_archive": format!("{base}/published/v{}/", v.version),
            })).collect::<Vec<_>>(),
        });
        archive
            .entry(
                format!("{base}/aide.json"),
                serde_json::to_vec_pretty(&aide_json)?,
            )
            .await?;

        let mut lines = Lines::new(archive, format!("{base}/conversation.jsonl")).await?;
        let mut after = 0_i64;
        loop {
            let tx = state.db.user(user).await?;
            let page: Vec<MessageRow> =
                tx.rows(&repo::MESSAGES, &[&aide.id, &user, &after]).await?;
            tx.rollback();
            let Some(last) = page.last() else { break };
            after = last.id;
            for m in &page {
                counts.messages += 1;
                lines
                    .push(&json!({"id": m.id, "role": m.role, "content": m.content,
                                   "metadata": m.metadata, "created_at": time(&m.created_at)}))
                    .await?;
            }
        }
        lines.end().await?;

        let revisions_json: Vec<Value> = revisions
            .iter()
            .map(|r| {
                counts.revisions += 1;
                json!({
                    "number": r.number, "cause": r.cause, "turn_id": r.turn_id,
                    "restored_from": r.restored_from, "file_count": r.file_count,
                    "size": r.size, "created_at": time(&r.created_at),
                    "files": files_of(&revision_files, r.number),
                })
            })
            .collect();
        archive
            .entry(
                format!("{base}/revisions.json"),
                serde_json::to_vec_pretty(&revisions_json)?,
            )
            .await?;

        // The person may go on working while the export runs: a file replaced or an aide
        // deleted since the lists above were read can have its bytes removed before they are
        // copied. That is left out and named in the manifest; a missing object that is still
        // referred to fails the export.
        for f in &files {
            let name = format!("{base}/files/{}", f.path);
            let key = keys::blob(aide.id, &f.sha256);
            let workspace = state.storage.workspace.as_ref();
            if archive
                .object(name.clone(), workspace, &key, compressible(&f.content_type))
                .await?
            {
                counts.workspace_files += 1;
            } else {
                changed_meanwhile(state, user, aide.id, Some(&f.sha256), &name, &mut skipped)
                    .await?;
            }
        }
        for v in &versions {
            counts.published_versions += 1;
            for f in version_files.iter().filter(|f| f.number == v.version) {
                let name = format!("{base}/published/v{}/{}", v.version, f.path);
                let key = keys::published_file(&v.r2_key, &f.path, &f.sha256);
                let published = state.storage.published.as_ref();
                if archive
                    .object(name.clone(), published, &key, compressible(&f.content_type))
                    .await?
                {
                    counts.published_files += 1;
                } else {
                    changed_meanwhile(state, user, aide.id, None, &name, &mut skipped).await?;
                }
            }
        }
    }

    let mut lines = Lines::new(archive, "audit_log.jsonl".to_string()).await?;
    let mut after = 0_i64;
    loop {
        let tx = state.db.user(user).await?;
        let page: Vec<crate::audit::AuditEntry> = tx.rows(&repo::AUDIT, &[&user, &after]).await?;
        tx.rollback();
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in &page {
            counts.audit_rows += 1;
            lines.push(&serde_json::to_value(row)?).await?;
        }
    }
    lines.end().await?;

    let manifest = json!({
        "schema_version": SCHEMA_VERSION,
        "generated_at": time(&generated_at),
        "user_id": user.0,
        "counts": {
            "aides": counts.aides,
            "messages": counts.messages,
            "workspace_files": counts.workspace_files,
            "revisions": counts.revisions,
            "published_versions": counts.published_versions,
            "published_files": counts.published_files,
            "audit_rows": counts.audit_rows,
        },
        "files": archive.files,
        "skipped": skipped,
    });
    archive
        .entry(
            "manifest.json".to_string(),
            serde_json::to_vec_pretty(&manifest)?,
        )
        .await?;
    Ok(())
}

fn readme(generated_at: &DateTime<Utc>) -> String {
    format!(
        "Your AIde data, as of {at}.\n\n\
         manifest.json                     what is in this archive: each file's size and SHA-256, and counts\n\
         account.json                      your account: email, name, plan and billing status\n\
         audit_log.jsonl                   your account's audit trail (sign-ins, changes), one JSON object a line\n\
         aides/ID/aide.json                each aide: title, address, status, its files and published versions\n\
         aides/ID/conversation.jsonl       its conversation, one message a line\n\
         aides/ID/revisions.json           its revisions: when, why, and which files each held\n\
         aides/ID/files/...                its workspace files (the draft page), as they are now\n\
         aides/ID/published/vN/...         the files of each version you published\n\n\
         Times are UTC (RFC 3339). Open the files with any text editor or JSON tool; the page files\n\
         open in a browser. Layout version {SCHEMA_VERSION}.\n",
        at = time(generated_at)
    )
}

/// The writing thread: builds the zip in `file` from what arrives, until the channel closes.
fn write_zip(file: std::fs::File, mut pieces: mpsc::Receiver<Piece>) -> anyhow::Result<()> {
    use zip::write::SimpleFileOptions;
    let now = Utc::now();
    let modified = zip::DateTime::from_date_and_time(
        u16::try_from(now.year()).unwrap_or(1980),
        now.month() as u8,
        now.day() as u8,
        now.hour() as u8,
        now.minute() as u8,
        now.second() as u8,
    )
    .unwrap_or_default();
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::with_capacity(256 * 1024, file));
    while let Some(piece) = pieces.blocking_recv() {
        match piece {
            Piece::Start(name, compress) => {
                let method = if compress {
                    zip::CompressionMethod::Deflated
                } else {
                    zip::CompressionMethod::Stored
                };
                zip.start_file(
                    name,
                    SimpleFileOptions::default()
                        .compression_method(method)
                        .last_modified_time(modified),
                )?;
            }
            Piece::Data(bytes) => zip.write_all(&bytes)?,
        }
    }
    zip.finish()?.flush()?;
    Ok(())
}

/// The archive, uploaded: its size and SHA-256.
struct Uploaded {
    size: i64,
    sha256: [u8; 32],
}

/// Uploads `file` to `key` in parts, at most two in flight.
async fn upload(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
    file: &std::path::Path,
) -> anyhow::Result<Uploaded> {
    let mut reader = tokio::fs::File::open(file).await?;
    let mut parts = WriteMultipart::new_with_chunk_size(store.put_multipart(key).await?, 8 << 20);
    let mut hasher = Sha256::new();
    let mut size = 0_i64;
    let mut buffer = vec![0_u8; 1 << 20];
    let result = async {
        loop {
            let n = reader.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as i64;
            parts.wait_for_capacity(2).await?;
            parts.write(&buffer[..n]);
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            parts.finish().await?;
            Ok(Uploaded {
                size,
                sha256: hasher.finalize().into(),
            })
        }
        Err(e) => {
            let _ = parts.abort().await;
            Err(e)
        }
    }
}

/// Makes export `id` of `user` and uploads it; returns the archive and how many files it holds.
async fn make(state: &AppState, user: UserId, id: Uuid) -> anyhow::Result<(Uploaded, i32)> {
    let temp = std::env::temp_dir().join(format!("aide-export-{id}.zip"));
    let file = std::fs::File::create(&temp)?;
    let (pieces, received) = mpsc::channel(8);
    let writer = tokio::task::spawn_blocking(move || write_zip(file, received));
    let mut archive = Archive {
        pieces,
        files: Vec::new(),
        current: None,
    };
    let fed = feed(state, user, &mut archive).await;
    let file_count = i32::try_from(archive.files.len()).unwrap_or(i32::MAX);
    drop(archive);
    let written = writer
        .await
        .map_err(|e| anyhow::anyhow!("the archive writer failed: {e}"))
        .and_then(|r| r);
    let uploaded = match (fed, written) {
        (Ok(()), Ok(())) => {
            upload(
                state.storage.workspace.as_ref(),
                &keys::export(user.0, id),
                &temp,
            )
            .await
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let _ = tokio::fs::remove_file(&temp).await;
    uploaded.map(|u| (u, file_count))
}

/// Exports made at once by one server process: each holds a temporary file as large as its
/// archive, and reads storage as fast as it can.
const AT_ONCE: usize = 2;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(AT_ONCE);

/// Deletes an archive no export row will ever point at.
async fn discard(state: &AppState, user: UserId, id: Uuid) {
    match state
        .storage
        .workspace
        .delete(&keys::export(user.0, id))
        .await
    {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(export.id = %id, error = %e, "could not delete an orphaned export archive")
        }
    }
}

/// Runs export `id` of `user` to its end: ready (and an email says so) or failed. At most
/// [`AT_ONCE`] run at once in a process; the others wait their turn.
pub async fn run(state: AppState, user: UserId, id: Uuid) {
    let _turn = RUNNING.acquire().await;
    let outcome = make(&state, user, id).await;
    let recorded = async {
        let tx = state.db.user(user).await?;
        match &outcome {
            Ok((uploaded, files)) => {
                let expires =
                    repo::finished(&tx, id, uploaded.size, &uploaded.sha256, *files).await?;
                tx.commit().await?;
                match expires {
                    Some(expires) => tell_ready(&state, user, expires).await?,
                    // No longer running (given up on, or the account is gone): nothing will
                    // ever list or expire this archive, so it goes now.
                    None => discard(&state, user, id).await,
                }
            }
            Err(e) => {
                repo::failed(&tx, id, "the archive could not be made; please try again").await?;
                tx.commit().await?;
                tracing::warn!(export.id = %id, error = %e, "export failed");
                crate::sentry::job_failed("export", e);
            }
        }
        Ok::<(), db::Error>(())
    }
    .await;
    if let Err(e) = recorded {
        tracing::warn!(export.id = %id, error = %e, "could not record how an export ended");
        if outcome.is_ok() {
            discard(&state, user, id).await;
        }
    }
    if outcome.is_ok() {
        tracing::info!(export.id = %id, "export ready");
    }
}

/// Queues the "your export is ready" email: no link that signs in, nothing of the data.
async fn tell_ready(
    state: &AppState,
    user: UserId,
    expires: DateTime<Utc>,
) -> Result<(), db::Error> {
    let tx = state.db.system().await?;
    let Some(to) = crate::auth::repo::email_of_user(&tx, user).await? else {
        tx.rollback();
        return Ok(());
    };
    let account = state.config.app_url_for("/account");
    let until = expires.format("%B %-d, %Y").to_string();
    let text = format!(
        "The archive of your AIde data you asked for is ready.\n\n\
         Sign in at {account} to download it. It can be downloaded until {until}, then it is deleted.\n\n\
         If you did not ask for it, sign in and look at your account's activity.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;line-height:1.5\">\
         <h1 style=\"font-size:20px\">Your AIde data export is ready</h1>\
         <p><a href=\"{href}\">Sign in to your account</a> to download it. It can be downloaded until {until}, then it is deleted.</p>\
         <p style=\"color:#666\">If you did not ask for it, sign in and look at your account's activity.</p>\
         </body></html>",
        href = crate::html::escape(account.as_str()),
        until = crate::html::escape(&until),
    );
    crate::email::outbox::enqueue(
        &tx,
        &NewEmail {
            kind: "export_ready",
            to,
            subject: "Your AIde data export is ready".to_string(),
            html,
            text,
            deliver_before: Some(expires),
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(())
}

/// Removes archives past their seven days (marking them expired) and fails exports left running
/// by a process that stopped. Returns how many of each.
pub async fn upkeep(
    db: &db::Db,
    storage: &crate::storage::Storage,
) -> anyhow::Result<(usize, u64)> {
    let tx = db.system().await?;
    let abandoned = repo::fail_abandoned(&tx).await?;
    let expired = repo::expired(&tx).await?;
    tx.commit().await?;
    let mut done = 0;
    let mut first_failure = None;
    for (id, user) in &expired {
        let removed = async {
            match storage.workspace.delete(&keys::export(*user, *id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(anyhow::Error::from(e)),
            }
            let tx = db.system().await?;
            repo::mark_expired(&tx, *id).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        match removed {
            Ok(()) => done += 1,
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok((done, abandoned)),
    }
}

struct AccountRow {
    id: Uuid,
    email: String,
    name: Option<String>,
    tier: String,
    billing_status: Option<String>,
    billing_period_end: Option<DateTime<Utc>>,
    billing_cancel_at_period_end: bool,
    turn_count: i32,
    turn_week_start: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl AccountRow {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "plan": self.tier,
            "billing": {
                "status": self.billing_status,
                "period_end": time_opt(&self.billing_period_end),
                "cancel_at_period_end": self.billing_cancel_at_period_end,
            },
            "turns": {"used_this_week": self.turn_count, "week_start": time(&self.turn_week_start)},
            "created_at": time(&self.created_at),
        })
    }
}

impl db::FromRow for AccountRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(AccountRow {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            tier: row.try_get("tier")?,
            billing_status: row.try_get("billing_status")?,
            billing_period_end: row.try_get("billing_period_end")?,
            billing_cancel_at_period_end: row.try_get("billing_cancel_at_period_end")?,
            turn_count: row.try_get("turn_count")?,
            turn_week_start: row.try_get("turn_week_start")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

struct AideRow {
    id: Uuid,
    title: String,
    slug: Option<String>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl db::FromRow for AideRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(AideRow {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            slug: row.try_get("slug")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

struct FileRow {
    path: String,
    size: i64,
    content_type: String,
    sha256: Vec<u8>,
    updated_at: DateTime<Utc>,
}

impl db::FromRow for FileRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(FileRow {
            path: row.try_get("path")?,
            size: row.try_get("size_bytes")?,
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

struct RevisionRow {
    number: i32,
    cause: String,
    turn_id: Option<Uuid>,
    restored_from: Option<i32>,
    file_count: i32,
    size: i64,
    created_at: DateTime<Utc>,
}

impl db::FromRow for RevisionRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(RevisionRow {
            number: row.try_get("number")?,
            cause: row.try_get("cause")?,
            turn_id: row.try_get("turn_id")?,
            restored_from: row.try_get("restored_from")?,
            file_count: row.try_get("file_count")?,
            size: row.try_get("size_bytes")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

struct VersionRow {
    version: i32,
    r2_key: String,
    notes: Option<String>,
    size: i64,
    published_at: DateTime<Utc>,
    revision: Option<i32>,
}

impl db::FromRow for VersionRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(VersionRow {
            version: row.try_get("version")?,
            r2_key: row.try_get("r2_key")?,
            notes: row.try_get("notes")?,
            size: row.try_get("size_bytes")?,
            published_at: row.try_get("published_at")?,
            revision: row.try_get("revision")?,
        })
    }
}

/// A file of a revision or of a published version (`number` is which).
struct VersionFileRow {
    number: i32,
    path: String,
    size: i64,
    content_type: String,
    sha256: Vec<u8>,
}

impl db::FromRow for VersionFileRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(VersionFileRow {
            number: row.try_get(0)?,
            path: row.try_get("path")?,
            size: row.try_get("size_bytes")?,
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
        })
    }
}

struct MessageRow {
    id: i64,
    role: String,
    content: String,
    metadata: Value,
    created_at: DateTime<Utc>,
}

impl db::FromRow for MessageRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(MessageRow {
            id: row.try_get("id")?,
            role: row.try_get("role")?,
            content: row.try_get("content")?,
            metadata: row.try_get("metadata")?,
            created_at: row.try_get("created_at")?,
        })
    }
}
