//! What this worker says about itself in `get_worker_info`.

use std::path::Path;

use rmpv::Value;

/// The commands this worker implements, with Buildbot's command version.
pub const COMMANDS: &[&str] = &[
    "shell",
    "mkdir",
    "rmdir",
    "cpdir",
    "stat",
    "glob",
    "listdir",
    "rmfile",
    "upload_file",
    "download_file",
    "upload_directory",
];

pub fn worker_info(basedir: &Path) -> Value {
    let mut map: Vec<(Value, Value)> = Vec::new();
    // Every file in <basedir>/info (admin, host, ...), as Buildbot's worker reports them.
    if let Ok(entries) = std::fs::read_dir(basedir.join("info")) {
        for e in entries.flatten() {
            if e.path().is_file()
                && let (Some(name), Ok(text)) = (e.file_name().to_str(), std::fs::read_to_string(e.path()))
            {
                map.push((Value::from(name), Value::from(text)));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/os-release") {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                map.push((Value::from(format!("os_{}", k.to_lowercase())), Value::from(v.trim_matches('"'))));
            }
        }
    }
    let numcpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
    map.push((Value::from("basedir"), Value::from(basedir.display().to_string())));
    map.push((Value::from("system"), Value::from(if cfg!(windows) { "nt" } else { "posix" })));
    map.push((Value::from("numcpus"), Value::from(numcpus)));
    map.push((Value::from("version"), Value::from(format!("cascade-worker {}", env!("CARGO_PKG_VERSION")))));
    map.push((
        Value::from("worker_commands"),
        Value::Map(COMMANDS.iter().map(|c| (Value::from(*c), Value::from("3.3"))).collect()),
    ));
    map.push((Value::from("delete_leftover_dirs"), Value::from(0)));
    Value::Map(map)
}
