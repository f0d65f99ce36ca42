//! The Cascade master: webhook receiver, schedulers, workers, builds, API
//! and pages. `cascade` (main.rs) is its command line; everything else is
//! here so that tests and the load tools run a master in-process, through
//! the same [`server::serve`] as the binary.
//!
//! Which module may use which is written down in `docs/architecture.md`
//! (and checked by a test): the leaves (`clock`, `catalog`, `error`,
//! `events`, `humanize`, ...) use no other module; `app` alone sees them all.

pub mod accept;
pub mod api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod client;
pub mod clock;
pub mod demo;
pub mod error;
pub mod events;
pub mod github;
pub mod humanize;
pub mod janitor;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod notice;
pub mod notify;
pub mod operator;
pub mod outbound;
pub mod password;
pub mod poller;
pub mod pulls;
pub mod rawlog;
pub mod relay;
pub mod runner;
pub mod scheduler;
pub mod sendchange;
pub mod server;
pub mod views;
pub mod webhook;
pub mod workers;
pub mod www;

pub use app::{Master, router};
pub use server::{Listeners, Served, serve};
