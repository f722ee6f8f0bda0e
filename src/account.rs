//! A person's control of their data: the export of everything they have (see [`export`]).

pub mod export;
mod repo;
mod routes;

pub use routes::router;
