//! Workspace files: an aide's draft page, file by file (`index.html` is the page). Owner only.

mod path;
mod repo;
mod routes;

pub use path::{FilePath, content_type_for};
pub(crate) use routes::blob_key;
pub use routes::router;
pub(crate) use routes::{__path_delete_file, __path_get_file, __path_list_files, __path_put_file};
