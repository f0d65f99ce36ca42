//! The master end to end, in-process: real store (SQLite and PostgreSQL),
//! real router, real GitHub payloads signed with the test secret.

mod api;
mod architecture;
mod browser;
mod buildbot_api;
mod buildbot_tools;
mod buildbot_ui;
mod control;
mod diagnosis;
mod github;
mod harness;
mod import;
mod irc;
mod irc_tls;
mod links;
mod mail;
mod masters;
mod metrics;
mod notify;
mod operations;
mod pages;
mod pb;
mod poller;
mod pulls;
mod readapi;
mod reliability;
mod schedulers;
mod server;
mod webhook;
mod workers;
