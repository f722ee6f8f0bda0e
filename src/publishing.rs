//! Publishing: immutable, numbered snapshots of an aide's workspace in the published bucket.
//!
//! Published bytes are stored by content, once per aide: `aides/{id}/blobs/{sha256}` in the
//! published bucket, so publishing the same page again stores nothing new. A publish reads the
//! workspace and protects the blobs it will copy (see [`crate::files::guard`]), copies the ones
//! not yet published with no transaction open, then records version N and its files in one short
//! transaction that holds the aide's row lock, so concurrent publishes get distinct numbers and a
//! storage failure part-way leaves no version row.
//!
//! Versions published before this layout kept a copy of each file at `aides/{id}/v{N}/{path}`;
//! their `r2_key` says so, and [`object_key`] finds either.

mod repo;
mod routes;

use uuid::Uuid;

/// Where a version's file lives in the published bucket: by content for versions whose `r2_key`
/// is the aide's blob folder, at `{r2_key}{path}` for those published before that.
pub(crate) fn object_key(r2_key: &str, path: &str, sha256: &[u8]) -> object_store::path::Path {
    if r2_key.ends_with("/blobs/") {
        object_store::path::Path::from(format!("{r2_key}{}", hex(sha256)))
    } else {
        object_store::path::Path::from(format!("{r2_key}{path}"))
    }
}

/// The published-bucket folder of an aide's blobs, the `r2_key` of every new version.
pub(crate) fn blob_folder(aide: Uuid) -> String {
    format!("aides/{aide}/blobs/")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub use routes::router;
