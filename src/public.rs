//! Public pages: `/s/{slug}` serves the latest published version of an aide, `/s/{slug}/v/{n}/`
//! a fixed one. The database decides on every request whether the page is live, so an
//! unpublished, archived or deleted aide answers 404 at once; the bytes of a version never change,
//! so they are kept in memory once read.
//!
//! Pages are user-written HTML: they are served with `Content-Security-Policy: sandbox ...`
//! (never `allow-same-origin`), so they run in an opaque origin and cannot act with the app's
//! cookies, ideally from a separate PUBLIC_URL origin as well.

mod cache;
mod inject;
mod live;
mod misses;
mod page;
mod repo;
mod routes;

pub use cache::PageCache;
pub use live::{CHANNEL as PAGES_CHANNEL, LiveCache};
pub use misses::MissLimiter;
pub use routes::router;
