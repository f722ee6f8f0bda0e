//! Publishing: immutable, numbered snapshots of an aide's workspace in the published bucket.
//!
//! A publish copies every workspace file to `aides/{id}/v{N}/{path}` in the published bucket,
//! then records version N and its files in one transaction that holds the aide's row lock, so
//! concurrent publishes get distinct numbers and a storage failure part-way leaves no version row.

mod repo;
mod routes;

pub use routes::router;
pub(crate) use routes::{
    __path_list_versions, __path_publish, __path_restore_version, __path_unpublish,
};
