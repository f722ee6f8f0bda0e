//! A live page as the server keeps it in memory: for each file, everything a response needs that
//! does not depend on the request, worked out once when the page is looked up.

use std::collections::HashMap;

use axum::http::HeaderValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::cache::{Key, MAX_CACHED_BYTES};
use super::repo::LivePage;
use crate::config::Config;

/// A version of a live page, ready to serve.
#[derive(Debug)]
pub struct Page {
    pub aide_id: Uuid,
    pub title: String,
    /// The page's public address (for Open Graph's `og:url`).
    pub url: String,
    pub files: HashMap<String, ServedFile>,
}

/// One file of a [`Page`].
#[derive(Debug)]
pub struct ServedFile {
    pub size: u64,
    pub content_type: HeaderValue,
    /// Strong, from the stored content's SHA-256 and what serving adds to it.
    pub etag: HeaderValue,
    /// Where the bytes are in the published bucket.
    pub object: object_store::path::Path,
    /// The served body's key in the page cache.
    pub key: Key,
    /// What is added to an HTML file; None for a file served as stored.
    pub inject: Option<Inject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inject {
    /// The free tier's "Made with AIde" footer.
    pub footer: bool,
    /// Open Graph tags the page lacks.
    pub open_graph: bool,
}

impl ServedFile {
    /// Streamed from storage rather than read whole: large, and served as stored.
    pub fn streams(&self) -> bool {
        self.inject.is_none() && self.size > MAX_CACHED_BYTES
    }
}

/// Works out how each file of `page` (reached at `/s/{slug}/`) is served.
pub fn prepare(config: &Config, slug: &str, page: LivePage) -> Page {
    let url = config.public_url_for(&format!("s/{slug}/")).to_string();
    let free = !page.tier.is_pro();
    let files = page
        .files
        .into_iter()
        .map(|(path, file)| {
            let size = u64::try_from(file.size_bytes).unwrap_or(0);
            let is_html = file.content_type.starts_with("text/html");
            // Open Graph tags go into the page itself when it is small enough to hold in
            // memory; the free tier's footer into every HTML file, whatever its size.
            let inject = Inject {
                footer: is_html && free,
                open_graph: is_html && path == "index.html" && size <= MAX_CACHED_BYTES,
            };
            let inject = (inject.footer || inject.open_graph).then_some(inject);
            let additions = match inject {
                Some(i) => format!(
                    "{}\u{0}{}\u{0}{}\u{0}{url}",
                    i.footer, i.open_graph, page.title
                ),
                None => String::new(),
            };
            let object = crate::storage::keys::published_file(&page.r2_key, &path, &file.sha256);
            let served = ServedFile {
                size,
                content_type: HeaderValue::from_str(&with_charset(&file.content_type))
                    .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
                etag: etag(&file.sha256, &additions),
                key: Key {
                    object: object.to_string(),
                    additions,
                },
                object,
                inject,
            };
            (path, served)
        })
        .collect();
    Page {
        aide_id: page.aide_id,
        title: page.title,
        url,
        files,
    }
}

/// A strong ETag from the stored content and what serving adds to it.
fn etag(sha256: &[u8], additions: &str) -> HeaderValue {
    let digest: Vec<u8> = if additions.is_empty() {
        sha256.to_vec()
    } else {
        let mut hasher = Sha256::new();
        hasher.update(sha256);
        hasher.update(additions.as_bytes());
        hasher.finalize().to_vec()
    };
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// Text types get an explicit charset.
fn with_charset(content_type: &str) -> String {
    let text = content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("image/svg+xml");
    if text && !content_type.contains("charset") {
        format!("{content_type}; charset=utf-8")
    } else {
        content_type.to_string()
    }
}
