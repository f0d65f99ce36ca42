//! The Cascade master: webhook receiver, schedulers, API and pages.
//! `cascade` (main.rs) is its command line; everything else is here so that
//! tests and the load tools can run a master in-process.

pub mod api;
pub mod app;
pub mod auth;
pub mod client;
pub mod clock;
pub mod demo;
pub mod home;
pub mod password;
pub mod runner;
pub mod scheduler;
pub mod sendchange;
pub mod views;
pub mod webhook;
pub mod workers;

pub use app::{Master, router, serve};
