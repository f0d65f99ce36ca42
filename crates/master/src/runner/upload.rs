//! Where an upload step's bytes go: a temporary file beside the
//! destination, renamed into place when the worker closes it, so a reader
//! never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::workers::UploadOp;

pub struct UploadSink {
    dest: PathBuf,
    part: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
    max: u64,
    pub closed: bool,
}

impl UploadSink {
    pub fn new(dest: PathBuf, max: u64) -> std::io::Result<UploadSink> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut part = dest.clone().into_os_string();
        part.push(".part");
        Ok(UploadSink { dest, part: PathBuf::from(part), file: None, written: 0, max, closed: false })
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn apply(&mut self, op: UploadOp) -> Result<(), String> {
        let io = |e: std::io::Error| format!("writing {}: {e}", self.dest.display());
        match op {
            UploadOp::Write(bytes) => {
                if self.file.is_none() {
                    self.file = Some(std::fs::File::create(&self.part).map_err(io)?);
                }
                self.written += bytes.len() as u64;
                if self.written > self.max {
                    return Err(format!("the upload is larger than {} bytes", self.max));
                }
                match self.file.as_mut() {
                    Some(f) => f.write_all(&bytes).map_err(|e| format!("writing {}: {e}", self.dest.display())),
                    None => Err("the upload file is not open".into()),
                }
            }
            UploadOp::Close => {
                // An empty file gets no write: create it now.
                let file = match self.file.take() {
                    Some(f) => f,
                    None => std::fs::File::create(&self.part).map_err(io)?,
                };
                file.sync_all().map_err(|e| format!("writing {}: {e}", self.dest.display()))?;
                std::fs::rename(&self.part, &self.dest).map_err(|e| format!("writing {}: {e}", self.dest.display()))?;
                self.closed = true;
                Ok(())
            }
            UploadOp::Utime(_, modified) => {
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(modified.max(0.0));
                std::fs::File::options()
                    .write(true)
                    .open(&self.dest)
                    .and_then(|f| f.set_modified(when))
                    .map_err(|e| format!("setting times on {}: {e}", self.dest.display()))
            }
        }
    }
}

impl Drop for UploadSink {
    fn drop(&mut self) {
        if !self.closed {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_appears_only_when_closed_and_the_limit_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("a/b/report.txt");
        let mut sink = UploadSink::new(dest.clone(), 10).expect("sink");
        sink.apply(UploadOp::Write(b"hello ".to_vec())).expect("write");
        assert!(!dest.exists());
        sink.apply(UploadOp::Write(b"you".to_vec())).expect("write");
        sink.apply(UploadOp::Close).expect("close");
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "hello you");
        sink.apply(UploadOp::Utime(0.0, 1_000_000.0)).expect("utime");

        let mut big = UploadSink::new(dir.path().join("big"), 4).expect("sink");
        assert!(big.apply(UploadOp::Write(b"12345".to_vec())).is_err());
        drop(big);
        assert!(!dir.path().join("big.part").exists(), "a failed upload leaves nothing behind");
    }
}
