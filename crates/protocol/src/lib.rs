//! Buildbot's worker protocols, as plain encode/decode with no I/O, shared by
//! the master and `cascade-worker`.
//!
//! `msgpack` is `msgpack_experimental_v7`: one msgpack map per binary
//! WebSocket message, requests `{op, seq_number, ...}` answered by
//! `{op: "response", seq_number, result[, is_exception: true]}`, each side
//! numbering its own requests.
//!
//! `pb` is Twisted's Perspective Broker, the stock worker's default.

#![warn(missing_docs)]

pub mod msgpack;
pub mod pb;
pub mod transfer;
pub mod worker_info;

pub use msgpack::{Frame, ProtocolError, UpdateEntry};
pub use transfer::UploadOp;
pub use worker_info::WorkerInfo;
