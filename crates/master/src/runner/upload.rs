//! File transfers of a step: where an upload's bytes go (a temporary file
//! beside the destination, renamed into place when the worker closes it, so
//! a reader never sees half a file), and where a download's come from.

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
            UploadOp::Unpack => Err("a file upload has nothing to unpack".into()),
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

/// What a command may ask of the master besides output: an upload's
/// pieces, or a download's next bytes.
pub trait Transfer: Send {
    fn upload(&mut self, _op: UploadOp) -> Result<(), String> {
        Err("this step takes no upload".into())
    }
    fn read(&mut self, _length: usize) -> Result<Vec<u8>, String> {
        Err("this step serves no download".into())
    }
    fn close_read(&mut self) -> Result<(), String> {
        Err("this step serves no download".into())
    }
}

impl Transfer for UploadSink {
    fn upload(&mut self, op: UploadOp) -> Result<(), String> {
        self.apply(op)
    }
}

/// A directory upload: the tar stream is spooled to a file beside the
/// destination, then unpacked there, skipping every entry that could land
/// outside it (absolute paths, `..`) and every link or special file.
pub struct DirectorySink {
    dest: PathBuf,
    spool: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
    max: u64,
    pub unpacked: bool,
    /// Entries left out, for the log.
    pub skipped: Vec<String>,
}

impl DirectorySink {
    pub fn new(dest: PathBuf, max: u64) -> std::io::Result<DirectorySink> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut spool = dest.clone().into_os_string();
        spool.push(".tar.part");
        Ok(DirectorySink {
            dest,
            spool: PathBuf::from(spool),
            file: None,
            written: 0,
            max,
            unpacked: false,
            skipped: vec![],
        })
    }

    fn unpack(&mut self) -> Result<(), String> {
        use std::path::Component;
        let fail = |e: std::io::Error| format!("unpacking into {}: {e}", self.dest.display());
        std::fs::create_dir_all(&self.dest).map_err(fail)?;
        let mut archive = tar::Archive::new(std::fs::File::open(&self.spool).map_err(fail)?);
        for entry in archive.entries().map_err(fail)? {
            let mut entry = entry.map_err(fail)?;
            let path = entry.path().map_err(fail)?.into_owned();
            let escapes = path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_)));
            let kind = entry.header().entry_type();
            if path.as_os_str().is_empty() || path == Path::new(".") {
                continue;
            }
            if escapes || !(kind.is_file() || kind.is_dir()) {
                self.skipped.push(path.display().to_string());
                continue;
            }
            entry.unpack_in(&self.dest).map_err(fail)?;
        }
        Ok(())
    }
}

impl Transfer for DirectorySink {
    fn upload(&mut self, op: UploadOp) -> Result<(), String> {
        match op {
            UploadOp::Write(bytes) => {
                if self.file.is_none() {
                    self.file = Some(std::fs::File::create(&self.spool).map_err(|e| e.to_string())?);
                }
                self.written += bytes.len() as u64;
                if self.written > self.max {
                    return Err(format!("the upload is larger than {} bytes", self.max));
                }
                match self.file.as_mut() {
                    Some(f) => f.write_all(&bytes).map_err(|e| e.to_string()),
                    None => Err("the upload file is not open".into()),
                }
            }
            UploadOp::Unpack => {
                if let Some(f) = self.file.take() {
                    f.sync_all().map_err(|e| e.to_string())?;
                }
                let result = self.unpack();
                let _ = std::fs::remove_file(&self.spool);
                result?;
                self.unpacked = true;
                Ok(())
            }
            UploadOp::Close | UploadOp::Utime(..) => Ok(()),
        }
    }
}

impl Drop for DirectorySink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool);
    }
}

/// A file on the master, read out to the worker in the pieces it asks for.
pub struct DownloadSource {
    file: std::fs::File,
    pub sent: u64,
    pub closed: bool,
}

impl DownloadSource {
    pub fn open(path: &Path) -> std::io::Result<DownloadSource> {
        Ok(DownloadSource { file: std::fs::File::open(path)?, sent: 0, closed: false })
    }
}

impl Transfer for DownloadSource {
    fn read(&mut self, length: usize) -> Result<Vec<u8>, String> {
        use std::io::Read;
        let mut buf = vec![0u8; length];
        let mut filled = 0;
        while filled < length {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the file to download: {e}")),
            }
        }
        buf.truncate(filled);
        self.sent += filled as u64;
        Ok(buf)
    }

    fn close_read(&mut self) -> Result<(), String> {
        self.closed = true;
        Ok(())
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

    #[test]
    fn directory_uploads_unpack_inside_their_folder_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tar_bytes = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tar_bytes);
            let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                // Write the name raw: the builder itself refuses `..`, an attacker's would not.
                let name = &mut h.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, data).expect("append");
            };
            add("./ok/", b"", tar::EntryType::Directory);
            add("./ok/a.txt", b"alpha", tar::EntryType::Regular);
            add("../escape.txt", b"nope", tar::EntryType::Regular);
            add("/abs.txt", b"nope", tar::EntryType::Regular);
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            link.set_link_name("/etc").expect("link");
            b.append_data(&mut link, "ok/evil", std::io::empty()).expect("link");
            b.finish().expect("finish");
        }
        let dest = dir.path().join("arts/site");
        let mut sink = DirectorySink::new(dest.clone(), 1 << 20).expect("sink");
        for piece in tar_bytes.chunks(1000) {
            sink.upload(UploadOp::Write(piece.to_vec())).expect("write");
        }
        sink.upload(UploadOp::Unpack).expect("unpack");
        assert!(sink.unpacked);
        assert_eq!(std::fs::read_to_string(dest.join("ok/a.txt")).expect("a.txt"), "alpha");
        assert!(!dir.path().join("arts/escape.txt").exists());
        assert!(!dest.join("ok/evil").exists(), "links are not unpacked");
        assert_eq!(sink.skipped.len(), 3, "{:?}", sink.skipped);
    }

    #[test]
    fn a_download_is_read_in_the_pieces_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data");
        std::fs::write(&path, vec![7u8; 773]).expect("write");
        let mut src = DownloadSource::open(&path).expect("open");
        let sizes: Vec<usize> = (0..4).map(|_| src.read(300).expect("read").len()).collect();
        assert_eq!(sizes, vec![300, 300, 173, 0], "an empty piece means the end");
        assert!(src.upload(UploadOp::Close).is_err());
        src.close_read().expect("close");
        assert_eq!(src.sent, 773);
    }
}
