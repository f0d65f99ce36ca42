//! The frames of Buildbot's `/ws`, pure: what a client asks
//! (`{"cmd": "startConsuming", "path": "builds/*/*", "_id": 1}`) and the
//! answers, with Buildbot's codes and wording for bad frames.

use serde_json::{Map, Value, json};

use super::keys;

/// What a client asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    StartConsuming { path: String, id: Value },
    StopConsuming { path: String, id: Value },
    Ping { id: Value },
}

/// An error answer: `{"error": ..., "code": ..., "_id": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: u16,
    pub error: String,
    pub id: Value,
}

impl Refusal {
    fn new(code: u16, error: impl Into<String>, id: Value) -> Refusal {
        Refusal { code, error: error.into(), id }
    }

    /// The frame.
    pub fn frame(&self) -> String {
        json!({ "error": self.error, "code": self.code, "_id": self.id }).to_string()
    }
}

/// The answer to a binary frame: Buildbot's frames are JSON text.
pub fn not_text() -> Refusal {
    Refusal::new(400, "invalid websocket frame: expected text", Value::Null)
}

/// `{"msg": "OK", "code": 200, "_id": id}`.
pub fn ok(id: &Value) -> String {
    json!({ "msg": "OK", "code": 200, "_id": id }).to_string()
}

/// `{"msg": "pong", "code": 200, "_id": id}`.
pub fn pong(id: &Value) -> String {
    json!({ "msg": "pong", "code": 200, "_id": id }).to_string()
}

/// An event: `{"k": key, "m": message}`.
pub fn event(key: &str, message: &Value) -> String {
    json!({ "k": key, "m": message }).to_string()
}

/// Answers 400 as Buildbot does for arguments its method does not take
/// (Python's `TypeError`): only `path` (for the consuming commands) and `_id`.
fn arguments(frame: &Map<String, Value>, with_path: bool, id: &Value) -> Result<(), Refusal> {
    let allowed = |k: &str| k == "_id" || (with_path && k == "path");
    let unexpected = frame.keys().find(|k| !allowed(k));
    if let Some(k) = unexpected {
        return Err(Refusal::new(
            400,
            format!("Invalid method argument 'unexpected keyword argument {k:?}'"),
            id.clone(),
        ));
    }
    if frame.get("_id").is_none() {
        return Err(Refusal::new(400, "Invalid method argument 'missing argument \"_id\"'", Value::Null));
    }
    Ok(())
}

fn path_of(frame: &Map<String, Value>, id: &Value) -> Result<String, Refusal> {
    match frame.get("path") {
        None => Err(Refusal::new(400, "Invalid method argument 'missing argument \"path\"'", id.clone())),
        Some(Value::String(p)) if keys::valid_path(p) => Ok(p.clone()),
        Some(Value::String(p)) => {
            let shown: String = p.chars().take(keys::MAX_PATH_BYTES).collect();
            Err(Refusal::new(400, format!("invalid path format '{shown}'"), id.clone()))
        }
        Some(other) => Err(Refusal::new(400, format!("invalid path format '{other}'"), id.clone())),
    }
}

/// Reads one text frame.
pub fn parse(text: &str) -> Result<Command, Refusal> {
    let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(text) else {
        return Err(Refusal::new(400, "invalid websocket frame: expected a JSON object", Value::Null));
    };
    let id = frame.get("_id").cloned().unwrap_or(Value::Null);
    let kind = frame.remove("type");
    if frame.get("_id").is_none() && kind.is_none() {
        return Err(Refusal::new(400, "no '_id' or 'type' in websocket frame", Value::Null));
    }
    let cmd = match frame.remove("cmd") {
        None => return Err(Refusal::new(400, "no 'cmd' in websocket frame", Value::Null)),
        Some(Value::String(c)) => c,
        Some(other) => return Err(Refusal::new(404, format!("no such command type '{other}'"), id)),
    };
    match cmd.as_str() {
        "startConsuming" | "stopConsuming" => {
            arguments(&frame, true, &id)?;
            let path = path_of(&frame, &id)?;
            Ok(if cmd == "startConsuming" {
                Command::StartConsuming { path, id }
            } else {
                Command::StopConsuming { path, id }
            })
        }
        "ping" => {
            arguments(&frame, false, &id)?;
            Ok(Command::Ping { id })
        }
        _ => {
            let shown: String = cmd.chars().take(64).collect();
            Err(Refusal::new(404, format!("no such command type '{shown}'"), id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consuming_commands_read_path_and_id() {
        assert_eq!(
            parse(r#"{"cmd":"startConsuming","path":"builds/*/*","_id":1}"#),
            Ok(Command::StartConsuming { path: "builds/*/*".into(), id: json!(1) })
        );
        assert_eq!(
            parse(r#"{"cmd":"stopConsuming","path":"builds/*/*","_id":"a"}"#),
            Ok(Command::StopConsuming { path: "builds/*/*".into(), id: json!("a") })
        );
        assert_eq!(parse(r#"{"cmd":"ping","_id":3}"#), Ok(Command::Ping { id: json!(3) }));
    }

    fn code(text: &str) -> (u16, Value) {
        let r = parse(text).expect_err("refused");
        (r.code, r.id)
    }

    #[test]
    fn bad_frames_get_buildbots_codes() {
        assert_eq!(code("not json"), (400, Value::Null));
        assert_eq!(code("[1, 2]"), (400, Value::Null));
        assert_eq!(code(r#"{"cmd":"ping"}"#), (400, Value::Null), "no _id nor type");
        assert_eq!(code(r#"{"_id":1}"#), (400, Value::Null), "no cmd");
        assert_eq!(code(r#"{"cmd":"explode","_id":1}"#), (404, json!(1)));
        assert_eq!(code(r#"{"cmd":"startConsuming","_id":1}"#), (400, json!(1)), "no path");
        assert_eq!(code(r#"{"cmd":"startConsuming","path":5,"_id":1}"#), (400, json!(1)));
        assert_eq!(code(r#"{"cmd":"startConsuming","path":"a","x":1,"_id":1}"#), (400, json!(1)));
        let long = format!(r#"{{"cmd":"startConsuming","path":"{}","_id":1}}"#, "a/".repeat(100));
        assert_eq!(code(&long), (400, json!(1)));
        let refusal = parse(r#"{"cmd":"explode","_id":1}"#).expect_err("refused");
        assert_eq!(refusal.error, "no such command type 'explode'");
        let frame: Value = serde_json::from_str(&refusal.frame()).expect("json");
        assert_eq!(frame, json!({ "error": "no such command type 'explode'", "code": 404, "_id": 1 }));
    }

    #[test]
    fn answers_are_buildbots() {
        let ok: Value = serde_json::from_str(&ok(&json!(4))).expect("json");
        assert_eq!(ok, json!({ "msg": "OK", "code": 200, "_id": 4 }));
        let e: Value = serde_json::from_str(&event("builds/1/new", &json!({ "buildid": 1 }))).expect("json");
        assert_eq!(e, json!({ "k": "builds/1/new", "m": { "buildid": 1 } }));
    }
}
