//! What `get_worker_info` tells about a worker, minus its environment.

use rmpv::Value;
use serde_json::{Map, Value as Json};

/// The worker's description as stored and shown. `environ` (the worker
/// process's whole environment, which may hold secrets) is dropped here,
/// before anything is stored or logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerInfo {
    /// The worker's base directory, on the worker.
    pub basedir: Option<String>,
    /// `posix` or `nt`: how to join paths on the worker.
    pub system: Option<String>,
    /// The buildbot-worker version.
    pub version: Option<String>,
    /// How many CPUs the worker has.
    pub numcpus: Option<i64>,
    /// The commands the worker supports, sorted.
    pub worker_commands: Vec<String>,
    /// Everything else (`admin`, `host`, `os_*`, ...), as JSON.
    pub json: Json,
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => i.as_i64().map(Json::from).or_else(|| i.as_u64().map(Json::from)).unwrap_or(Json::Null),
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map(Json::Number).unwrap_or(Json::Null),
        Value::F64(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.as_str().unwrap_or("").to_string()),
        Value::Binary(_) | Value::Ext(..) => Json::Null,
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter().filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), to_json(v)))).collect::<Map<_, _>>(),
        ),
    }
}

impl WorkerInfo {
    /// From msgpack's `get_worker_info` answer.
    pub fn from_value(v: &Value) -> WorkerInfo {
        WorkerInfo::from_json(to_json(v))
    }

    /// From the answer as JSON (PB's `getWorkerInfo` arrives this way).
    pub fn from_json(v: Json) -> WorkerInfo {
        let mut json = match v {
            Json::Object(o) => o,
            _ => Map::new(),
        };
        json.remove("environ");
        let s = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let mut worker_commands: Vec<String> = json
            .get("worker_commands")
            .and_then(|c| c.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        worker_commands.sort();
        WorkerInfo {
            basedir: s("basedir"),
            system: s("system"),
            version: s("version"),
            numcpus: json.get("numcpus").and_then(serde_json::Value::as_i64),
            worker_commands,
            json: Json::Object(json),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_is_never_kept() {
        let v = Value::Map(vec![
            (Value::from("admin"), Value::from("Ann <ann@example.org>\n")),
            (Value::from("basedir"), Value::from("/srv/bb/worker")),
            (Value::from("system"), Value::from("posix")),
            (Value::from("numcpus"), Value::from(2)),
            (Value::from("version"), Value::from("4.3.0")),
            (Value::from("environ"), Value::Map(vec![(Value::from("AWS_SECRET"), Value::from("hunter2"))])),
            (Value::from("worker_commands"), Value::Map(vec![(Value::from("shell"), Value::from("3.3"))])),
            (Value::from("delete_leftover_dirs"), Value::from(0)),
        ]);
        let info = WorkerInfo::from_value(&v);
        assert_eq!(info.basedir.as_deref(), Some("/srv/bb/worker"));
        assert_eq!(info.system.as_deref(), Some("posix"));
        assert_eq!(info.numcpus, Some(2));
        assert_eq!(info.worker_commands, vec!["shell"]);
        assert!(!info.json.to_string().contains("hunter2"));
        assert!(info.json.get("environ").is_none());
        assert_eq!(info.json["admin"], "Ann <ann@example.org>\n");
    }
}
