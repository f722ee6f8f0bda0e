//! History and undo: every change to an aide's files (a turn, an upload, a deletion, a restore)
//! records the files it left as a numbered revision (rows only; the bytes are content-addressed
//! blobs that a revision keeps). Restoring a revision copies its files back as a new revision, so
//! undoing never loses anything. Each aide keeps its newest revisions (FREE_REVISIONS_KEPT,
//! PRO_REVISIONS_KEPT); see migrations/0015.

pub mod repo;
pub(crate) mod routes;

pub use repo::{Cause, record};
pub use routes::router;
