//! Twisted Perspective Broker, the default protocol of stock
//! `buildbot-worker` (`shared/protocols/buildbot-pb.md`), in layers a reader
//! can take one at a time:
//!
//! - [`banana`]: bytes ↔ nested lists, numbers and strings (incremental);
//! - [`jelly`]: those lists ↔ Python values (text, tuples, dicts, references);
//! - [`message`]: PB's calls, answers, errors and decrefs, and the MD5 login;
//! - [`commands`]: Buildbot's commands and updates as PB spells them.
//!
//! Plain encode/decode; the master's `workers::pb` does the I/O.

pub mod banana;
pub mod commands;
pub mod jelly;
pub mod message;

pub use banana::{Decoder, Expr};
pub use jelly::{Failure, Value};
pub use message::{Message, ObjectId};
