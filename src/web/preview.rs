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

fn signature(state: &AppState, aide: Uuid, revision: i32, expires: i64) -> String {
    let key = state.session_key.derive("aide preview v1");
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(format!("{aide}/{revision}/{expires}").as_bytes());
    B64.encode(&mac.finalize().into_bytes()[..18])
}

/// The address of aide `aide`'s revision `revision`, working for [`LIFETIME_SECS`] (rounded to
/// the next ten minutes, so a page reloaded within them keeps its address and the browser's
/// cache).
pub fn url(state: &AppState, aide: Uuid, revision: i32) -> String {
    let now = chrono::Utc::now().timestamp();
    let expires = (now + LIFETIME_SECS + 599) / 600 * 600;
    let path = format!(
        "p/{aide}/{revision}/{expires}/{}/",
        signature(state, aide, revision, expires)
    );
    if state.config.pages_apart() {
        state.config.public_url_for(&path).to_string()
    } else {
        format!("/{path}")
    }
}

crate::statement! {
    /// One file of a revision (system scope: the signed address is the authority).
    REVISION_FILE: System = "select content_type, sha256 from workspace_revision_files
         where aide_id = $1 and revision = $2 and path = $3";
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
        let revision: i32 = get("revision")?.parse().ok()?;
        let expires: i64 = get("expires")?.parse().ok()?;
        Some((
            aide,
            revision,
            expires,
            get("signature")?,
            get("path").unwrap_or(""),
        ))
    })();
    let Some((aide, revision, expires, given, path)) = parsed else {
        return gone(&state);
    };
    let expected = signature(&state, aide, revision, expires);
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
    let csp = format!(
        "sandbox allow-scripts allow-forms allow-popups; frame-ancestors {}",
        state.config.app_url.origin().ascii_serialization()
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
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
