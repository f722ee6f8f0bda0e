//! Static files, embedded in the binary and served under names that carry a hash of their
//! content (`/static/app-1a2b3c4d5e6f.css`), so browsers may keep them for a year: a new version
//! is a new name.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    /// The file's own name, as code refers to it.
    name: &'static str,
    /// Its served name, with the hash.
    served: String,
    url: String,
    bytes: &'static [u8],
    content_type: &'static str,
}

const FILES: &[(&str, &[u8], &str)] = &[
    (
        "app.css",
        include_bytes!("../../static/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "icon.svg",
        include_bytes!("../../static/icon.svg"),
        "image/svg+xml",
    ),
    (
        "editor.js",
        include_bytes!("../../static/editor.js"),
        "text/javascript; charset=utf-8",
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, bytes, content_type)| {
            let hash: String = Sha256::digest(bytes)[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            let served = format!("{stem}-{hash}.{ext}");
            Asset {
                name,
                url: format!("/static/{served}"),
                served,
                bytes,
                content_type,
            }
        })
        .collect()
});

/// The address `name` is served at.
pub fn url(name: &str) -> &'static str {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.url.as_str())
        .unwrap_or("/static/missing")
}

/// `GET /static/{file}`: a file by its hashed name; anything else is our 404 page.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.served == file) else {
        return super::not_found();
    };
    let mut response = (StatusCode::OK, asset.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
