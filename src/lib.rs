//! AIde's backend: living pages built through conversation and shared at a public URL.
//!
//! `main.rs` is a thin command line over this library; the tests drive the same pieces.

pub mod account;
pub mod ai;
pub mod aides;
pub mod alerts;
mod app;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod cache;
pub mod config;
pub mod conversations;
pub mod cursor;
pub mod db;
pub mod email;
pub mod error;
pub mod files;
pub mod html;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod public;
pub mod publishing;
pub mod retry;
pub mod revisions;
pub mod secrets;
pub mod sentry;
pub mod server;
pub mod state;
pub mod storage;
pub mod support;
pub mod telemetry;
pub mod tier;
pub mod time;
pub mod turns;
pub mod web;

pub use app::{build_app, build_app_with, health};
pub use state::{AppState, Shared};
