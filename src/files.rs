//! Workspace files: an aide's draft page, file by file (`index.html` is the page). Owner only.

pub(crate) mod guard;
mod path;
pub(crate) mod quota;
pub(crate) mod repo;
mod routes;

pub use path::{FilePath, content_type_for};
pub(crate) use repo::account_bytes_after;
pub(crate) use routes::{enter_in_flight, remove_orphan};

/// The advisory-lock class of an aide's blobs ("AIDE" in ASCII); the object is `hashtext` of the
/// aide's id. Uploads and publishes hold it shared while they record pending blobs (see
/// [`guard`]), so the storage worker, which takes it exclusively to check and delete a blob, never
/// deletes one that a request is about to write or read.
pub const BLOB_LOCK_CLASS: i32 = 0x4149_4445;
pub use routes::router;
