//! Buildbot's commands as PB spells them (`buildbot-pb.md` §5.6): the
//! master's protocol-neutral commands (msgpack names and arguments, absolute
//! paths) translated to PB's camelCase names and legacy argument names, and
//! PB's `update` entries read back into [`UpdateEntry`]s.

use serde_json::{Map, Value as Json};

use super::jelly::Value;
use crate::msgpack::{UpdateEntry, from_json};

/// Which master-side object a translated command needs in its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferObject {
    /// `writer`: the worker calls `write`/`close`/`utime`/`unpack` on it.
    Writer,
    /// `reader`: the worker calls `read`/`close` on it.
    Reader,
}

/// A command ready for `startCommand`, except for the transfer object,
/// whose reference the connection adds under the returned key.
#[derive(Debug, Clone, PartialEq)]
pub struct PbCommand {
    /// PB's name for the command (`uploadFile`, `shell`, ...).
    pub name: &'static str,
    /// The arguments under PB's names, sorted by name.
    pub args: Vec<(String, Json)>,
    /// The master-side object the worker needs a reference to, if any.
    pub transfer: Option<TransferObject>,
}

impl PbCommand {
    /// The argument dict, with `transfer_ref` (a remote reference to the
    /// master's writer or reader) in its place.
    pub fn args_value(&self, transfer_ref: Option<i64>) -> Value {
        let mut entries: Vec<(Value, Value)> =
            self.args.iter().map(|(k, v)| (Value::str(k.clone()), Value::from_json(v))).collect();
        match (self.transfer, transfer_ref) {
            (Some(TransferObject::Writer), Some(luid)) => entries.push((Value::str("writer"), Value::Remote(luid))),
            (Some(TransferObject::Reader), Some(luid)) => entries.push((Value::str("reader"), Value::Remote(luid))),
            _ => {}
        }
        Value::Dict(entries)
    }
}

fn take(args: &mut Map<String, Json>, key: &str) -> Option<Json> {
    args.remove(key)
}

/// Translates a command; an error names what cannot be expressed over PB.
pub fn to_pb(name: &str, args: &Json) -> Result<PbCommand, String> {
    let mut a: Map<String, Json> = match args {
        Json::Object(o) => o.clone(),
        Json::Null => Map::new(),
        _ => return Err(format!("{name}: arguments must be a map")),
    };
    let missing = |key: &str| format!("{name}: missing `{key}`");
    let (pb_name, transfer): (&'static str, _) = match name {
        "shell" => ("shell", None),
        "rmdir" => {
            let paths = take(&mut a, "paths").ok_or_else(|| missing("paths"))?;
            a.insert("dir".into(), paths);
            ("rmdir", None)
        }
        "mkdir" => {
            let paths = take(&mut a, "paths").ok_or_else(|| missing("paths"))?;
            let dir = match paths {
                Json::Array(mut p) if p.len() == 1 => p.remove(0),
                Json::String(s) => Json::String(s),
                _ => return Err("mkdir: PB makes one folder per command".into()),
            };
            a.insert("dir".into(), dir);
            ("mkdir", None)
        }
        "cpdir" => {
            let from = take(&mut a, "from_path").ok_or_else(|| missing("from_path"))?;
            let to = take(&mut a, "to_path").ok_or_else(|| missing("to_path"))?;
            a.insert("fromdir".into(), from);
            a.insert("todir".into(), to);
            ("cpdir", None)
        }
        "stat" => {
            let path = take(&mut a, "path").ok_or_else(|| missing("path"))?;
            a.insert("file".into(), path);
            ("stat", None)
        }
        "listdir" => {
            let path = take(&mut a, "path").ok_or_else(|| missing("path"))?;
            a.insert("dir".into(), path);
            ("listdir", None)
        }
        "glob" => ("glob", None),
        "rmfile" => ("rmfile", None),
        "upload_file" | "upload_directory" | "download_file" => {
            // PB joins workdir and the file name onto the builder folder; an
            // absolute path wins that join, so the full path goes as the name.
            let path = take(&mut a, "path").ok_or_else(|| missing("path"))?;
            a.remove("workdir");
            a.insert("workdir".into(), Json::String(String::new()));
            let (file_key, pb, transfer) = match name {
                "upload_file" => ("workersrc", "uploadFile", TransferObject::Writer),
                "upload_directory" => ("workersrc", "uploadDirectory", TransferObject::Writer),
                _ => ("workerdest", "downloadFile", TransferObject::Reader),
            };
            a.insert(file_key.into(), path);
            (pb, Some(transfer))
        }
        other => return Err(format!("{other}: not a command this master sends over PB")),
    };
    let mut args: Vec<(String, Json)> = a.into_iter().collect();
    args.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(PbCommand { name: pb_name, args, transfer })
}

/// Reads the argument of an `update` call: `[[{key: value}, 0], ...]`.
pub fn parse_update(arg: &Value) -> Result<Vec<UpdateEntry>, String> {
    let items = arg.as_seq().ok_or("update: expected a list")?;
    let mut out = Vec::new();
    for item in items {
        let pair = item.as_seq().ok_or("update: expected [updates, number] pairs")?;
        let Some(Value::Dict(entries)) = pair.first() else { return Err("update: expected a dict of updates".into()) };
        for (key, value) in entries {
            let key = key.as_text().ok_or("update: keys must be text")?;
            out.push(entry(&key, value)?);
        }
    }
    Ok(out)
}

fn entry(key: &str, value: &Value) -> Result<UpdateEntry, String> {
    let bad = |what: &str| format!("update entry {key:?}: {what}");
    let text = || value.as_text().map(std::borrow::Cow::into_owned).ok_or_else(|| bad("expected text"));
    Ok(match key {
        "stdout" => UpdateEntry::Stdout(text()?),
        "stderr" => UpdateEntry::Stderr(text()?),
        "header" => UpdateEntry::Header(text()?),
        "log" => {
            let parts = value.as_seq().ok_or_else(|| bad("expected (name, text)"))?;
            let (Some(name), Some(text)) =
                (parts.first().and_then(Value::as_text), parts.get(1).and_then(Value::as_text))
            else {
                return Err(bad("expected (name, text)"));
            };
            UpdateEntry::Log(name.into_owned(), text.into_owned())
        }
        "rc" => UpdateEntry::Rc(value.as_int().ok_or_else(|| bad("expected an integer"))?),
        "elapsed" => UpdateEntry::Elapsed(value.as_float().ok_or_else(|| bad("expected a number"))?),
        "failure_reason" => UpdateEntry::FailureReason(text()?),
        "files" => UpdateEntry::Files(
            value
                .as_seq()
                .ok_or_else(|| bad("expected a list"))?
                .iter()
                .filter_map(|f| f.as_text().map(std::borrow::Cow::into_owned))
                .collect(),
        ),
        "stat" => UpdateEntry::Stat(
            value.as_seq().ok_or_else(|| bad("expected a tuple"))?.iter().map(|f| f.as_int().unwrap_or(0)).collect(),
        ),
        other => UpdateEntry::Other(other.to_string(), from_json(&value.to_json())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arg<'a>(c: &'a PbCommand, k: &str) -> Option<&'a Json> {
        c.args.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    #[test]
    fn file_commands_use_pb_names_and_legacy_arguments() {
        let c = to_pb("mkdir", &json!({"paths": ["/w/b/source"]})).expect("mkdir");
        assert_eq!((c.name, arg(&c, "dir")), ("mkdir", Some(&json!("/w/b/source"))));
        assert!(arg(&c, "paths").is_none());
        assert!(to_pb("mkdir", &json!({"paths": ["/a", "/b"]})).is_err());
        let c = to_pb("rmdir", &json!({"paths": ["/a"], "timeout": 600})).expect("rmdir");
        assert_eq!(arg(&c, "dir"), Some(&json!(["/a"])));
        assert_eq!(arg(&c, "timeout"), Some(&json!(600)));
        let c = to_pb("cpdir", &json!({"from_path": "/a", "to_path": "/b"})).expect("cpdir");
        assert_eq!((arg(&c, "fromdir"), arg(&c, "todir")), (Some(&json!("/a")), Some(&json!("/b"))));
        let c = to_pb("stat", &json!({"path": "/a/.git"})).expect("stat");
        assert_eq!(arg(&c, "file"), Some(&json!("/a/.git")));
        assert!(to_pb("stat", &json!({})).is_err());
        assert!(to_pb("frobnicate", &json!({})).is_err());
    }

    #[test]
    fn transfers_carry_their_object() {
        let c = to_pb(
            "upload_file",
            &json!({"path": "/w/b/build/r.txt", "workdir": "/w/b/build", "workersrc": "r.txt", "blocksize": 262144}),
        )
        .expect("upload");
        assert_eq!((c.name, c.transfer), ("uploadFile", Some(TransferObject::Writer)));
        assert_eq!(arg(&c, "workersrc"), Some(&json!("/w/b/build/r.txt")));
        assert_eq!(arg(&c, "workdir"), Some(&json!("")));
        let v = c.args_value(Some(9));
        assert_eq!(v.get("writer"), Some(&Value::Remote(9)));
        assert_eq!(v.get("blocksize"), Some(&Value::Int(262_144)));
        let c = to_pb("download_file", &json!({"path": "/w/t.sh", "mode": 493})).expect("download");
        assert_eq!((c.name, c.transfer), ("downloadFile", Some(TransferObject::Reader)));
        assert_eq!(c.args_value(Some(4)).get("reader"), Some(&Value::Remote(4)));
        assert_eq!(arg(&c, "workerdest"), Some(&json!("/w/t.sh")));
        let c = to_pb("upload_directory", &json!({"path": "/w/site"})).expect("dir upload");
        assert_eq!(c.name, "uploadDirectory");
    }

    #[test]
    fn updates_are_read_one_key_at_a_time() {
        let wrap = |k: &str, v: Value| {
            Value::List(vec![Value::List(vec![Value::Dict(vec![(Value::str(k), v)]), Value::Int(0)])])
        };
        assert_eq!(parse_update(&wrap("stdout", Value::str("a\n"))), Ok(vec![UpdateEntry::Stdout("a\n".into())]));
        assert_eq!(parse_update(&wrap("rc", Value::Int(-1))), Ok(vec![UpdateEntry::Rc(-1)]));
        assert_eq!(parse_update(&wrap("elapsed", Value::Float(0.5))), Ok(vec![UpdateEntry::Elapsed(0.5)]));
        assert_eq!(
            parse_update(&wrap("log", Value::Tuple(vec![Value::str("test.log"), Value::str("x\n")]))),
            Ok(vec![UpdateEntry::Log("test.log".into(), "x\n".into())])
        );
        assert_eq!(
            parse_update(&wrap("stat", Value::Tuple(vec![Value::Int(33188), Value::Int(1)]))),
            Ok(vec![UpdateEntry::Stat(vec![33188, 1])])
        );
        assert!(parse_update(&wrap("rc", Value::str("x"))).is_err());
        assert!(parse_update(&Value::Int(3)).is_err());
    }
}
