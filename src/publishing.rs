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
//! their `r2_key` says so, and [`crate::storage::keys::published_file`] finds either.

pub(crate) mod repo;
pub(crate) mod routes;

pub use routes::router;
