//! File transfers, as both protocols carry them.

/// A piece of a file (or a folder's tar stream) the worker sends to the
/// master.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadOp {
    /// The next bytes.
    Write(Vec<u8>),
    /// The file is whole.
    Close,
    /// Access and modification times, Unix seconds.
    Utime(f64, f64),
    /// A directory upload's tar stream is complete: unpack it.
    Unpack,
}
