//! File-system commands: quick, synchronous on the worker; failures are an
//! errno in `rc` and a header line, as Buildbot's worker reports them.

use std::path::{Path, PathBuf};

use rmpv::Value;

use super::{Emitter, Ended, paths_arg, str_arg};

fn errno(e: &std::io::Error) -> i64 {
    i64::from(e.raw_os_error().unwrap_or(1))
}

pub async fn run(name: &str, args: &Value, em: &mut Emitter) -> Result<Ended, String> {
    let result: Result<Vec<(String, Value)>, (std::io::Error, String)> = match name {
        "mkdir" => paths_arg(args)
            .into_iter()
            .try_for_each(|p| std::fs::create_dir_all(&p).map_err(|e| (e, p)))
            .map(|_| vec![]),
        "rmdir" => {
            let paths = paths_arg(args);
            tokio::task::spawn_blocking(move || {
                paths.into_iter().try_for_each(|p| match std::fs::remove_dir_all(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err((e, p)),
                    _ => Ok(()),
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map(|_| vec![])
        }
        "cpdir" => {
            let from = str_arg(args, "from_path").unwrap_or("").to_string();
            let to = str_arg(args, "to_path").unwrap_or("").to_string();
            tokio::task::spawn_blocking(move || copy_tree(Path::new(&from), Path::new(&to)).map_err(|e| (e, from)))
                .await
                .map_err(|e| e.to_string())?
                .map(|_| vec![])
        }
        "stat" => {
            let path = str_arg(args, "path").unwrap_or("").to_string();
            std::fs::symlink_metadata(&path).map(|m| vec![("stat".to_string(), stat_value(&m))]).map_err(|e| (e, path))
        }
        "listdir" => {
            let path = str_arg(args, "path").unwrap_or("").to_string();
            std::fs::read_dir(&path)
                .map(|entries| {
                    let names: Vec<Value> =
                        entries.flatten().filter_map(|e| e.file_name().to_str().map(Value::from)).collect();
                    vec![("files".to_string(), Value::Array(names))]
                })
                .map_err(|e| (e, path))
        }
        "glob" => {
            let pattern = str_arg(args, "path").unwrap_or("").to_string();
            Ok(vec![("files".to_string(), Value::Array(glob(&pattern).into_iter().map(Value::from).collect()))])
        }
        "rmfile" => {
            let path = str_arg(args, "path").unwrap_or("").to_string();
            std::fs::remove_file(&path).map(|_| vec![]).map_err(|e| (e, path))
        }
        other => return Err(format!("unrecognized WorkerCommand '{other}'")),
    };
    match result {
        Ok(entries) => {
            for (k, v) in entries {
                em.entry(&k, v).await;
            }
            em.entry("rc", Value::from(0)).await;
        }
        Err((e, path)) => {
            em.entry("rc", Value::from(errno(&e))).await;
            em.text("header", &format!("{name}: {e}: {path}")).await;
        }
    }
    Ok(Ended::Normally)
}

#[cfg(unix)]
fn stat_value(m: &std::fs::Metadata) -> Value {
    use std::os::unix::fs::MetadataExt;
    Value::Array(
        [
            m.mode() as i64,
            m.ino() as i64,
            m.dev() as i64,
            m.nlink() as i64,
            m.uid() as i64,
            m.gid() as i64,
            m.size() as i64,
            m.atime(),
            m.mtime(),
            m.ctime(),
        ]
        .into_iter()
        .map(Value::from)
        .collect(),
    )
}

#[cfg(not(unix))]
fn stat_value(m: &std::fs::Metadata) -> Value {
    let mode: i64 = if m.is_dir() { 0o040755 } else { 0o100644 };
    Value::Array([mode, 0, 0, 1, 0, 0, m.len() as i64, 0, 0, 0].into_iter().map(Value::from).collect())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else if meta.file_type().is_symlink() {
        #[cfg(unix)]
        {
            let target = std::fs::read_link(from)?;
            let _ = std::fs::remove_file(to);
            std::os::unix::fs::symlink(target, to)
        }
        #[cfg(not(unix))]
        {
            std::fs::copy(from, to).map(|_| ())
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to).map(|_| ())
    }
}

/// Absolute paths matching an absolute pattern (`*`, `?`, `[..]`, `**`).
fn glob(pattern: &str) -> Vec<String> {
    let Ok(g) = cascade_model::Glob::new(pattern) else { return Vec::new() };
    // Walk from the deepest folder without wildcards.
    let fixed: PathBuf = Path::new(pattern)
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect();
    let mut out = Vec::new();
    let mut stack = vec![(fixed, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let text = path.to_string_lossy().to_string();
            if g.matches(&text) {
                out.push(text);
            }
            if depth < 32 && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((path, depth + 1));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_absolute_patterns() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["a.txt", "b.log", "sub/c.txt", "sub/deeper/d.txt"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, "x").expect("write");
        }
        let base = dir.path().display().to_string();
        let found = glob(&format!("{base}/*.txt"));
        assert_eq!(found, vec![format!("{base}/a.txt")]);
        let deep = glob(&format!("{base}/**/*.txt"));
        assert_eq!(deep.len(), 3, "{deep:?}");
    }

    #[test]
    fn copy_tree_copies_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("x/y")).expect("mkdir");
        std::fs::write(src.join("x/y/f"), "data").expect("write");
        copy_tree(&src, &dir.path().join("dst")).expect("copy");
        assert_eq!(std::fs::read_to_string(dir.path().join("dst/x/y/f")).expect("read"), "data");
    }
}
