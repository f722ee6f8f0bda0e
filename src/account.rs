//! A person's control of their data: the export of everything they have (see [`export`]) and
//! the deletion of their account (see [`deletion`]).

pub mod deletion;
pub mod export;
pub(crate) mod repo;
pub mod routes;

pub use routes::router;
