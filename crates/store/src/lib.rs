//! Cascade's store: changes, schedulers' state, buildsets, build requests,
//! builds, builders, workers and masters, on PostgreSQL or SQLite.
//!
//! One query text serves both backends through sqlx's `Any` driver: `$N`
//! placeholders, BIGINT/TEXT columns, times as Unix seconds, flags as 0/1.
//! Every write that must be atomic (a webhook delivery and its changes, a
//! scheduler firing, a claim) is one transaction.

#![warn(missing_docs)]

mod buildrequests;
mod builds;
mod buildsets;
mod changes;
mod error;
mod events;
pub mod import;
mod infra;
mod janitor;
mod masters;
mod notices;
mod notifications;
mod plans;
mod pulls;
mod push_statement;
mod query;
pub mod records;
mod schedulers;
mod sessions;
mod sourcestamps;
mod test_results;
mod views;
mod workers_builders;

pub use buildrequests::{Cancelled, ClaimedBuild};
pub use builds::{LogRecord, StepRecord};
pub use buildsets::{NewBuildset, NewSourceStamp, Patch};
pub use changes::{Delivery, IngestOutcome, POLLER_SOURCE, Redundant, SOURCE_PROPERTY, SchedulerTouch};
pub use error::StoreError;
pub use events::EventRows;
pub use infra::{Backend, PoolUse, Store, sqlite_file};
pub use janitor::{Removable, Removal};
pub use masters::TokenRecord;
pub use notices::{Channel, Notice, PAYLOAD_MAX};
pub use notifications::{NewNotification, NotificationRecord, NotificationState};
pub use plans::{Listed, Viewed, full_scans, full_work};
pub use pulls::PullBuild;
pub use query::{COUNT_CAP, Filter, ListQuery, MAX_LIMIT, Op, Order, Page, keyset_order};
pub use schedulers::{BranchDeletion, SchedulerRow, WaitingChange, WaitingSummary};
pub use sessions::{NewSession, SessionRecord};
pub use test_results::{
    NewTestResult, NewTestSet, TestProblemRecord, TestResultRecord, TestResultSetRecord, TestRunRecord,
};
pub use views::ConsoleCell;
pub use workers_builders::{BuilderSpec, WorkerSpec};

/// The store's result type: errors are [`StoreError`]s.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
