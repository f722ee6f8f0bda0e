//! Integration tests: one binary, run in parallel, each test in a database of its own cloned from
//! a migrated template, connecting through the roles the server uses.

mod app;
mod model_stub;
mod resend_stub;
mod s3;
mod stores;
mod stripe_stub;
mod support;

mod abuse;
mod aides;
mod alerts;
mod api_limit;
mod auth;
mod billing;
mod conversations;
mod deletion;
mod email;
mod export;
mod files;
mod metrics;
mod revisions;
mod sentry;
mod sessions;
mod sign_in_limits;
mod staff;
mod turns;
mod web;

mod catalog;
mod cli;
mod fail_closed;
mod faults;
mod hosts;
mod http;
mod isolation;
mod managed;
mod migrations;
mod openapi;
mod page_cache;
mod public;
mod publishing;
mod quotas;
mod rejections;
mod scopes;
mod slugs;
mod soak;
mod statements;
