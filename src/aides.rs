//! Aides: a person's living pages. Models at three boundaries (requests that validate, rows,
//! responses without internal fields), the repository, and the routes.

pub mod model;
mod repo;
mod routes;

pub use routes::router;
pub(crate) use routes::{
    __path_archive, __path_create, __path_delete, __path_list, __path_read, __path_restore,
    __path_update,
};
