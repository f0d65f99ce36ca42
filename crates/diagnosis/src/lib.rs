//! Reading test output: CPython's regrtest log as it streams in, JUnit XML
//! files, and what follows from them (the command that reproduces a
//! failure, the order file to bisect, flaky tests, the likely breaking
//! change). Plain data and pure functions, no I/O: the master feeds lines
//! and files in and stores what comes out.

#![deny(missing_docs)]

pub mod junit;
pub mod regrtest;
pub mod report;
pub mod reproduce;
pub mod verdict;
mod xml;

pub use report::{FileResult, Leak, MethodResult, Outcome, TestReport, TestRunner};
