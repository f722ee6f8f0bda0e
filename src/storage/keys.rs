//! Where every object lives, in both buckets. Nothing else writes a key.
//!
//! - `aides/{aide}/blobs/{sha256}`: a file's bytes, stored once per aide by content (the SHA-256
//!   in lower-case hex). The workspace bucket holds the blobs of the aide's files; the published
//!   bucket those of its versions.
//! - `aides/{aide}/v{N}/{path}`: a file of version N in the published bucket, for versions
//!   published before blobs (their `r2_key` is `aides/{aide}/v{N}/`; see [`published_file`]).
//! - `aides/{aide}/`: everything of one aide, removed after the aide is deleted.
//! - `exports/{user}/{export}.zip`: an archive of a user's data, in the workspace bucket, removed
//!   when it expires (see [`export`]).
//!
//! The database's clean-up triggers (migrations 0008, 0010 and 0011) queue the same prefixes and blob
//! keys; [`parse_blob`] reads them back.

use object_store::path::Path;
use uuid::Uuid;

/// Everything of `aide`, in either bucket.
pub fn aide_prefix(aide: Uuid) -> String {
    format!("aides/{aide}/")
}

/// The folder of `aide`'s blobs; also the `r2_key` of every version published since blobs.
pub fn blob_folder(aide: Uuid) -> String {
    format!("aides/{aide}/blobs/")
}

/// Everything of `user`'s exports, in the workspace bucket.
pub fn exports_prefix(user: Uuid) -> String {
    format!("exports/{user}/")
}

/// The archive of export `export` of `user`, in the workspace bucket.
pub fn export(user: Uuid, export: Uuid) -> Path {
    Path::from(format!("exports/{user}/{export}.zip"))
}

/// The blob holding bytes whose SHA-256 is `sha256`, in either bucket.
pub fn blob(aide: Uuid, sha256: &[u8]) -> Path {
    Path::from(format!("aides/{aide}/blobs/{}", hex(sha256)))
}

/// Where a version's file is in the published bucket: by content for versions whose `r2_key` is
/// the aide's blob folder, at `{r2_key}{path}` for those published before that.
pub fn published_file(r2_key: &str, path: &str, sha256: &[u8]) -> Path {
    if r2_key.ends_with("/blobs/") {
        Path::from(format!("{r2_key}{}", hex(sha256)))
    } else {
        Path::from(format!("{r2_key}{path}"))
    }
}

/// The aide and hex SHA-256 of a blob key; None for anything else (an aide's prefix).
pub fn parse_blob(key: &str) -> Option<(Uuid, String)> {
    let rest = key.strip_prefix("aides/")?;
    let (aide, sha256) = rest.split_once("/blobs/")?;
    let aide = Uuid::parse_str(aide).ok()?;
    (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (aide, sha256.to_string()))
}

/// Lower-case hex, as a SHA-256 appears in keys, ETags and API answers.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back() {
        let aide = Uuid::new_v4();
        let sha = [0xab_u8; 32];
        let key = blob(aide, &sha);
        assert!(key.as_ref().starts_with(&aide_prefix(aide)));
        assert_eq!(parse_blob(key.as_ref()), Some((aide, "ab".repeat(32))));
        assert_eq!(parse_blob(&aide_prefix(aide)), None);
        assert_eq!(published_file(&blob_folder(aide), "index.html", &sha), key);
        let old = format!("aides/{aide}/v3/");
        assert_eq!(
            published_file(&old, "css/site.css", &sha).as_ref(),
            format!("aides/{aide}/v3/css/site.css")
        );
    }
}
