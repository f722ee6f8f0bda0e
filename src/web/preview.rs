//! Previews: an aide's files at one revision, served to a sandboxed frame in the editor from a
//! signed, expiring address, `/p/{aide}/{revision}/{expires}/{signature}/{path}`.
//!
//! A sandboxed frame (no `allow-same-origin`) has an opaque origin: its page's own stylesheets,
//! images and scripts go out without the session cookie. So the address itself is the
//! authority: an HMAC (a key derived from JWT_SECRET) over the aide, the revision and the
//! expiry. It is served from PUBLIC_URL's host when pages have one, with
//! `Content-Security-Policy: sandbox allow-scripts allow-forms allow-popups` (whoever opens it
//! directly gets the same sandbox) and `frame-ancestors` naming APP_URL only.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use futures_util::TryStreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::state::AppState;
use crate::storage::keys;

/// How long a preview address works.
pub const LIFETIME_SECS: i64 = 3600;

/// The signature over an address's aide, what it shows (a revision's number, or `t-{turn}` for
/// a running turn's working copy) and its expiry.
fn signature(state: &AppState, aide: Uuid, what: &str, expires: i64) -> String {
    let key = state.session_key.derive("aide preview v1");
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(format!("{aide}/{what}/{expires}").as_bytes());
    B64.encode(&mac.finalize().into_bytes()[..18])
}

fn address(state: &AppState, aide: Uuid, what: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let expires = (now + LIFETIME_SECS + 599) / 600 * 600;
    let path = format!(
        "p/{aide}/{what}/{expires}/{}/",
        signature(state, aide, what, expires)
    );
    if state.config.pages_apart() {
        state.config.public_url_for(&path).to_string()
    } else {
        format!("/{path}")
    }
}

/// The address of published version `version` (whether or not the page is live now).
pub fn version_url(state: &AppState, aide: Uuid, version: i32) -> String {
    address(state, aide, &format!("v-{version}"))
}

/// The address of turn `turn`'s working copy while it runs: the files it has changed so far
/// over the revision it began from. Served by the process that runs the turn.
pub fn turn_url(state: &AppState, aide: Uuid, turn: Uuid) -> String {
    address(state, aide, &format!("t-{turn}"))
}

/// The address of aide `aide`'s revision `revision`, working for [`LIFETIME_SECS`] (rounded to
/// the next ten minutes, so a page reloaded within them keeps its address and the browser's
/// cache).
pub fn url(state: &AppState, aide: Uuid, revision: i32) -> String {
    address(state, aide, &revision.to_string())
}

crate::statement! {
    /// One file of a revision (system scope: the signed address is the authority).
    REVISION_FILE: System = "select content_type, sha256 from workspace_revision_files
         where aide_id = $1 and revision = $2 and path = $3";
    /// One file of a published version, and where its bytes are.
    VERSION_FILE: System = "select f.content_type, f.sha256, v.r2_key from published_files f
         join published_versions v
           on v.aide_id = f.aide_id and v.user_id = f.user_id and v.version = f.version
         where f.aide_id = $1 and f.version = $2 and f.path = $3";
}

/// `GET /p/{aide}/{revision}/{expires}/{signature}/{*path}` (and the bare folder: index.html).
pub async fn serve(
    State(state): State<AppState>,
    Path(parts): Path<Vec<(String, String)>>,
) -> Response {
    let get = |name: &str| {
        parts
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let parsed = (|| {
        let aide: Uuid = get("aide")?.parse().ok()?;
        let what = get("revision")?;
        let expires: i64 = get("expires")?.parse().ok()?;
        Some((
            aide,
            what,
            expires,
            get("signature")?,
            get("path").unwrap_or(""),
        ))
    })();
    let Some((aide, what, expires, given, path)) = parsed else {
        return gone(&state);
    };
    let expected = signature(&state, aide, what, expires);
    // Constant time: the comparison of two MACs of the same length.
    let same = expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same || expires < chrono::Utc::now().timestamp() {
        return gone(&state);
    }
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    if let Some(version) = what.strip_prefix("v-") {
        return match version.parse::<i32>() {
            Ok(version) => serve_version(&state, aide, version, &path).await,
            Err(_) => gone(&state),
        };
    }
    let revision = match what.strip_prefix("t-") {
        None => match what.parse::<i32>() {
            Ok(revision) => revision,
            Err(_) => return gone(&state),
        },
        Some(turn) => match turn.parse::<Uuid>() {
            Ok(turn) => match working_copy(&state, turn, &path) {
                Some(Live::File(content)) => return serve_text(&state, &path, content),
                Some(Live::Base(revision)) => revision,
                None => return gone(&state),
            },
            Err(_) => return gone(&state),
        },
    };
    let found = async {
        let tx = state.db.system().await.ok()?;
        let row: Option<(String, Vec<u8>)> = tx
            .row_opt::<FileRow>(&REVISION_FILE, &[&aide, &revision, &path])
            .await
            .ok()?
            .map(|r| (r.content_type, r.sha256));
        tx.rollback();
        row
    }
    .await;
    let Some((content_type, sha256)) = found else {
        return gone(&state);
    };
    let object = match state
        .storage
        .workspace
        .get(&keys::blob(aide, &sha256))
        .await
    {
        Ok(object) => object,
        Err(e) => {
            tracing::warn!(error = %e, "preview: a blob could not be read");
            return (StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment.").into_response();
        }
    };
    let body = Body::from_stream(object.into_stream().map_err(std::io::Error::other));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    preview_headers(&state, headers);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    response
}

/// A file of a published version, from the published bucket.
async fn serve_version(state: &AppState, aide: Uuid, version: i32, path: &str) -> Response {
    let found = async {
        let tx = state.db.system().await.ok()?;
        let row = tx
            .row_opt::<VersionFileRow>(&VERSION_FILE, &[&aide, &version, &path])
            .await
            .ok()?;
        tx.rollback();
        row
    }
    .await;
    let Some(row) = found else {
        return gone(state);
    };
    let key = keys::published_file(&row.r2_key, path, &row.sha256);
    let object = match state.storage.published.get(&key).await {
        Ok(object) => object,
        Err(e) => {
            tracing::warn!(error = %e, "preview: a published file could not be read");
            return (StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment.").into_response();
        }
    };
    let body = Body::from_stream(object.into_stream().map_err(std::io::Error::other));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&row.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    preview_headers(state, headers);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    response
}

struct VersionFileRow {
    content_type: String,
    sha256: Vec<u8>,
    r2_key: String,
}

impl crate::db::FromRow for VersionFileRow {
    fn from_row(row: &crate::db::Row) -> Result<Self, crate::db::Error> {
        Ok(VersionFileRow {
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
            r2_key: row.try_get("r2_key")?,
        })
    }
}

/// What a running turn's working copy holds at a path.
enum Live {
    /// The turn changed it: its text now.
    File(String),
    /// The turn has not touched it: the revision the turn began from has it (or not).
    Base(i32),
}

/// `path` in turn `turn`'s working copy, from its events in this process; None when the turn
/// is not running here (or is too old to be remembered) or deleted the file.
fn working_copy(state: &AppState, turn: Uuid, path: &str) -> Option<Live> {
    let channel = state.turns.get(turn)?;
    let (events, _) = channel.after(0);
    let mut base = None;
    for event in &events {
        if event.name == "turn.started" {
            let data: serde_json::Value = serde_json::from_str(&event.data).ok()?;
            base = data["base_revision"]
                .as_i64()
                .and_then(|b| i32::try_from(b).ok());
        }
    }
    for event in events.iter().rev() {
        if event.name != "file.updated" {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(&event.data).ok()?;
        if data["path"].as_str() != Some(path) {
            continue;
        }
        if data["deleted"].as_bool() == Some(true) {
            return None;
        }
        return data["content"].as_str().map(|c| Live::File(c.to_string()));
    }
    base.map(Live::Base)
}

/// A file of a working copy, with a preview's headers.
fn serve_text(state: &AppState, path: &str, content: String) -> Response {
    let content_type = crate::files::FilePath::parse(path)
        .map(|p| crate::files::content_type_for(&p, None))
        .unwrap_or_else(|_| "text/plain; charset=utf-8".to_string());
    let mut response = (StatusCode::OK, content).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    preview_headers(state, headers);
    // It changes with every edit.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn preview_headers(state: &AppState, headers: &mut axum::http::HeaderMap) {
    let csp = format!(
        "sandbox allow-scripts allow-forms allow-popups; frame-ancestors {}",
        state.config.app_url.origin().ascii_serialization()
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

struct FileRow {
    content_type: String,
    sha256: Vec<u8>,
}

impl crate::db::FromRow for FileRow {
    fn from_row(row: &crate::db::Row) -> Result<Self, crate::db::Error> {
        Ok(FileRow {
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
        })
    }
}

/// A forged, expired or unknown address: nothing is said about which. The editor's frame may
/// show it (a page without that file, say), sandboxed like a preview.
fn gone(state: &AppState) -> Response {
    let mut response = super::not_found();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let csp = format!(
        "sandbox; default-src 'none'; style-src 'self'; frame-ancestors {}",
        state.config.app_url.origin().ascii_serialization()
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}
