//! Workspace files: an aide's draft page, file by file (`index.html` is the page). Owner only.

mod path;
mod repo;
mod routes;

pub use path::{FilePath, content_type_for};
pub(crate) use repo::share_blobs;
pub(crate) use routes::blob_key;

/// The advisory-lock class of an aide's blobs ("AIDE" in ASCII); the object is `hashtext` of the
/// aide's id. Uploads and publishes hold it shared for their transaction, so the storage worker,
/// which takes it exclusively, never deletes a blob that one of them is about to refer to or read.
pub const BLOB_LOCK_CLASS: i32 = 0x4149_4445;
pub use routes::router;
pub(crate) use routes::{__path_delete_file, __path_get_file, __path_list_files, __path_put_file};
