//! Cascade's domain model: plain data and the pure decisions made over it.
//!
//! Nothing in this crate does I/O. The store persists these types, the master
//! moves them around; the rules (which change matters, when a scheduler fires,
//! which requests one build covers, what a result means) live here so they can
//! be tested on their own.

#![warn(missing_docs)]

pub mod change;
pub mod coalesce;
pub mod event;
pub mod gitref;
pub mod glob;
pub mod log;
pub mod naming;
pub mod net;
pub mod outcome;
pub mod pull;
pub mod results;
pub mod scheduling;
pub mod text;
pub mod transition;
pub mod wording;

pub use change::NewChange;
pub use coalesce::{Claim, PendingRequest, plan_claim};
pub use event::{Envelope, Event, EventKind};
pub use gitref::GitRef;
pub use glob::Glob;
pub use results::Results;
