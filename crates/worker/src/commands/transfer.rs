//! File transfers to the master, chunk by chunk, each chunk answered
//! before the next is sent.

use cascade_protocol::msgpack::Op;
use rmpv::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{Emitter, Ended, arg, str_arg};

/// Sends an open file to the master in `blocksize` pieces as `op`
/// requests, each answered before the next; stops at `maxsize` (sending what
/// fits), at an interrupt, or at a refusal. Returns the bytes sent and why
/// it stopped early, if it did.
async fn send_in_pieces(
    em: &mut Emitter,
    file: &mut tokio::fs::File,
    op: Op,
    what: &str,
    blocksize: usize,
    maxsize: Option<u64>,
    stop: &watch::Receiver<bool>,
) -> (u64, Option<String>) {
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; blocksize];
    loop {
        if *stop.borrow() {
            return (sent, Some(format!("upload of '{what}' interrupted")));
        }
        let n = match file.read(&mut buf).await {
            Ok(0) => return (sent, None),
            Ok(n) => n,
            Err(e) => return (sent, Some(format!("reading '{what}': {e}"))),
        };
        let (n, truncated) = match maxsize {
            Some(max) if sent + n as u64 > max => ((max - sent) as usize, true),
            _ => (n, false),
        };
        if n > 0 {
            if let Err(e) = em.request(op, vec![("args".into(), Value::Binary(buf[..n].to_vec()))]).await {
                return (sent, Some(format!("the master refused the upload: {e}")));
            }
            sent += n as u64;
        }
        if truncated {
            return (sent, Some(format!("Maximum filesize reached, truncating file '{what}'")));
        }
    }
}

/// `upload_file`: the file at `path` goes to the master in `blocksize`
/// pieces, then `update_upload_file_close`. Failure to open it, a refusal
/// from the master or `maxsize` give rc 1 with a line on stderr.
pub async fn upload_file(args: &Value, em: &mut Emitter, stop: watch::Receiver<bool>) -> Result<Ended, String> {
    let path = str_arg(args, "path").ok_or("upload_file is missing args: path")?.to_string();
    let blocksize = arg(args, "blocksize").and_then(rmpv::Value::as_u64).unwrap_or(16384).clamp(1, 16 << 20) as usize;
    let maxsize = arg(args, "maxsize").and_then(rmpv::Value::as_u64);
    let keepstamp = arg(args, "keepstamp").and_then(rmpv::Value::as_bool).unwrap_or(false);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        em.text("header", &format!("sending {path}")).await;
        em.entry("rc", Value::from(1)).await;
        em.text("stderr", &format!("Cannot open file '{path}' for upload")).await;
        return Ok(Ended::Normally);
    };
    let (sent, mut failure) =
        send_in_pieces(em, &mut file, Op::UploadFileWrite, &path, blocksize, maxsize, &stop).await;
    if (failure.is_none() || sent > 0)
        && let Err(e) = em.request(Op::UploadFileClose, vec![]).await
    {
        failure.get_or_insert(format!("closing the upload failed: {e}"));
    }
    if keepstamp
        && failure.is_none()
        && let Ok(meta) = tokio::fs::metadata(&path).await
    {
        let secs = |t: std::io::Result<std::time::SystemTime>| {
            t.ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()).unwrap_or(0.0)
        };
        let _ = em
            .request(
                Op::UploadFileUtime,
                vec![
                    ("access_time".into(), Value::F64(secs(meta.accessed()))),
                    ("modified_time".into(), Value::F64(secs(meta.modified()))),
                ],
            )
            .await;
    }
    em.text("header", &format!("sending {path}")).await;
    report(em, failure).await
}

/// `download_file`: asks the master for the file in `blocksize` pieces
/// (`update_read_file`) until an empty piece, writes them to `path`, then
/// `update_read_file_close`; `mode` sets the permissions.
pub async fn download_file(args: &Value, em: &mut Emitter, stop: watch::Receiver<bool>) -> Result<Ended, String> {
    use tokio::io::AsyncWriteExt;
    let path = str_arg(args, "path").ok_or("download_file is missing args: path")?.to_string();
    let blocksize = arg(args, "blocksize").and_then(rmpv::Value::as_u64).unwrap_or(16384).clamp(1, 16 << 20);
    let maxsize = arg(args, "maxsize").and_then(rmpv::Value::as_u64);
    let mode = arg(args, "mode").and_then(rmpv::Value::as_u64);
    if let Some(parent) = std::path::Path::new(&path).parent() {
        let _ = tokio::fs::create_dir_all(parent).await;
    }
    let mut failure: Option<String> = None;
    match tokio::fs::File::create(&path).await {
        Err(_) => failure = Some(format!("Cannot open file '{path}' for download")),
        Ok(mut file) => {
            let mut received: u64 = 0;
            loop {
                if *stop.borrow() {
                    failure = Some(format!("download of '{path}' interrupted"));
                    break;
                }
                let want = match maxsize {
                    Some(max) if received >= max => {
                        failure = Some(format!("Maximum filesize reached, truncating file '{path}'"));
                        break;
                    }
                    Some(max) => blocksize.min(max - received),
                    None => blocksize,
                };
                let piece = match em.request(Op::ReadFile, vec![("length".into(), Value::from(want))]).await {
                    Ok(Value::Binary(b)) => b,
                    // Old msgpack sends bytes as str; nil means nothing more.
                    Ok(Value::String(s)) => s.as_bytes().to_vec(),
                    Ok(_) => Vec::new(),
                    Err(e) => {
                        failure = Some(format!("the master refused the download: {e}"));
                        break;
                    }
                };
                if piece.is_empty() {
                    break;
                }
                received += piece.len() as u64;
                if let Err(e) = file.write_all(&piece).await {
                    failure = Some(format!("writing '{path}': {e}"));
                    break;
                }
            }
            if let Err(e) = file.flush().await {
                failure.get_or_insert(format!("writing '{path}': {e}"));
            }
        }
    }
    if let Err(e) = em.request(Op::ReadFileClose, vec![]).await {
        failure.get_or_insert(format!("closing the download failed: {e}"));
    }
    #[cfg(unix)]
    if let (Some(mode), None) = (mode, &failure) {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode as u32)) {
            failure = Some(format!("setting the mode of '{path}': {e}"));
        }
    }
    report(em, failure).await
}

/// `upload_directory`: the folder at `path` as a tar stream (members
/// relative to it, links kept as links), in `blocksize` pieces, then
/// `update_upload_directory_unpack`. Only uncompressed tar is offered.
pub async fn upload_directory(args: &Value, em: &mut Emitter, stop: watch::Receiver<bool>) -> Result<Ended, String> {
    static SPOOLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = str_arg(args, "path").ok_or("upload_directory is missing args: path")?.to_string();
    let blocksize = arg(args, "blocksize").and_then(rmpv::Value::as_u64).unwrap_or(16384).clamp(1, 16 << 20) as usize;
    let maxsize = arg(args, "maxsize").and_then(rmpv::Value::as_u64);
    if let Some(c) = str_arg(args, "compress") {
        em.text("header", &format!("sending {path}")).await;
        em.entry("rc", Value::from(1)).await;
        em.text("stderr", &format!("compression {c:?} is not supported by cascade-worker")).await;
        return Ok(Ended::Normally);
    }
    let n = SPOOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let spool = std::env::temp_dir().join(format!("cascade-worker-{}-{n}.tar", std::process::id()));
    let (src, out) = (std::path::PathBuf::from(&path), spool.clone());
    let built = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut builder = tar::Builder::new(std::fs::File::create(&out)?);
        builder.follow_symlinks(false);
        builder.append_dir_all(".", &src)?;
        builder.into_inner()?.sync_all()
    })
    .await
    .map_err(|e| e.to_string())?;
    let failure = match built {
        Err(e) => Some(format!("Cannot read directory '{path}' for upload: {e}")),
        Ok(()) => match tokio::fs::File::open(&spool).await {
            Err(e) => Some(format!("Cannot read directory '{path}' for upload: {e}")),
            Ok(mut file) => {
                let op = Op::UploadDirectoryWrite;
                match send_in_pieces(em, &mut file, op, &path, blocksize, maxsize, &stop).await.1 {
                    Some(why) => Some(why),
                    None => em
                        .request(Op::UploadDirectoryUnpack, vec![])
                        .await
                        .err()
                        .map(|e| format!("the master could not unpack the upload: {e}")),
                }
            }
        },
    };
    let _ = tokio::fs::remove_file(&spool).await;
    em.text("header", &format!("sending {path}")).await;
    report(em, failure).await
}

/// A transfer's end, as Buildbot's worker reports it: rc 0, or rc 1 and why.
async fn report(em: &mut Emitter, failure: Option<String>) -> Result<Ended, String> {
    match failure {
        None => em.entry("rc", Value::from(0)).await,
        Some(why) => {
            em.entry("rc", Value::from(1)).await;
            em.text("stderr", &why).await;
        }
    }
    Ok(Ended::Normally)
}
