//! Jelly: Python values as banana lists (`buildbot-pb.md` §2), the subset
//! Buildbot's workers send and accept.

use super::banana::Expr;

/// A Python value as it crossed the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python's `None`.
    None,
    /// A Python `bool`.
    Bool(bool),
    /// A Python `int` that fits an `i64`.
    Int(i64),
    /// A Python `float`.
    Float(f64),
    /// A Python `bytes`.
    Bytes(Vec<u8>),
    /// A Python `str` (decoded lossily: the worker already replaces bad UTF-8).
    Str(String),
    /// A Python `list`.
    List(Vec<Value>),
    /// A Python `tuple`.
    Tuple(Vec<Value>),
    /// A Python `dict`, entries in the order sent.
    Dict(Vec<(Value, Value)>),
    /// A Python `set` or `frozenset`.
    Set(Vec<Value>),
    /// An object living on the sender, callable by the receiver.
    Remote(i64),
    /// One of the receiver's own objects, sent back.
    Local(i64),
    /// A copied object: its type name and state (failures, in practice).
    Copy(String, Box<Value>),
}

/// The type name of Twisted's copyable failure.
pub const FAILURE_TYPE: &str = "twisted.spread.pb.CopyableFailure";

/// Why an expression is not a value this master accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JellyError {
    /// A type other than plain data and failures (a class, an instance, ...): never unjellied.
    #[error("jelly type {0:?} is not accepted")]
    Insecure(String),
    /// The named construct has the wrong shape.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A `dereference` to an id no `reference` defined.
    #[error("dereference of unknown reference {0}")]
    UnknownReference(i64),
    /// Shared references would expand past the node budget.
    #[error("value too large once shared references are expanded")]
    TooLarge,
}

/// Most values one expression may expand to through `dereference`.
const NODE_BUDGET: usize = 1 << 20;

impl Value {
    /// A Python `str`.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// Text, whether sent as `str` or `bytes`.
    pub fn as_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Value::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
            Value::Bytes(b) => Some(String::from_utf8_lossy(b)),
            _ => None,
        }
    }

    /// The integer, if this is an `int` or a `bool` (as Python counts it).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The number as a float, if this is a `float` or an `int`.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The items of a list, tuple or set.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    /// A dict entry by text key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| k.as_text().is_some_and(|t| t == key)).map(|(_, v)| v),
            _ => None,
        }
    }

    fn nodes(&self) -> usize {
        1 + match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => v.iter().map(Value::nodes).sum(),
            Value::Dict(e) => e.iter().map(|(k, v)| k.nodes() + v.nodes()).sum(),
            Value::Copy(_, s) => s.nodes(),
            _ => 0,
        }
    }

    /// As JSON, for storing what a worker reports (bytes become lossy text,
    /// tuples and sets arrays, non-text keys are dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::None | Value::Remote(_) | Value::Local(_) | Value::Copy(..) => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Bytes(_) | Value::Str(_) => J::String(self.as_text().unwrap_or_default().into_owned()),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => J::Array(v.iter().map(Value::to_json).collect()),
            Value::Dict(e) => {
                J::Object(e.iter().filter_map(|(k, v)| k.as_text().map(|k| (k.into_owned(), v.to_json()))).collect())
            }
        }
    }

    /// From JSON: strings become `str`, objects dicts, arrays lists.
    pub fn from_json(v: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match v {
            J::Null => Value::None,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => n.as_i64().map(Value::Int).or_else(|| n.as_f64().map(Value::Float)).unwrap_or(Value::None),
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            J::Object(o) => Value::Dict(o.iter().map(|(k, v)| (Value::str(k), Value::from_json(v))).collect()),
        }
    }
}

/// Decodes one serialisation (a message's args, its kwargs, an answer).
pub fn decode(expr: &Expr) -> Result<Value, JellyError> {
    let mut refs = Vec::new();
    let mut budget = NODE_BUDGET;
    decode_in(expr, &mut refs, &mut budget)
}

fn spend(budget: &mut usize, n: usize) -> Result<(), JellyError> {
    *budget = budget.checked_sub(n).ok_or(JellyError::TooLarge)?;
    Ok(())
}

fn decode_in(expr: &Expr, refs: &mut Vec<(i64, Value)>, budget: &mut usize) -> Result<Value, JellyError> {
    spend(budget, 1)?;
    let items = match expr {
        Expr::Int(i) => return Ok(Value::Int(*i)),
        Expr::Float(f) => return Ok(Value::Float(*f)),
        Expr::Bytes(b) => return Ok(Value::Bytes(b.clone())),
        Expr::List(items) => items,
    };
    let Some(Expr::Bytes(tag)) = items.first() else { return Err(JellyError::Malformed("list without a type")) };
    let rest = &items[1..];
    let many = |refs: &mut Vec<(i64, Value)>, budget: &mut usize| -> Result<Vec<Value>, JellyError> {
        rest.iter().map(|e| decode_in(e, refs, budget)).collect()
    };
    let int_arg = || match rest {
        [Expr::Int(n), ..] => Ok(*n),
        _ => Err(JellyError::Malformed("reference id")),
    };
    Ok(match tag.as_slice() {
        b"None" => Value::None,
        b"boolean" => match rest {
            [Expr::Bytes(b)] if b == b"true" => Value::Bool(true),
            [Expr::Bytes(b)] if b == b"false" => Value::Bool(false),
            _ => return Err(JellyError::Malformed("boolean")),
        },
        b"unicode" => match rest {
            [Expr::Bytes(b)] => Value::Str(String::from_utf8_lossy(b).into_owned()),
            _ => return Err(JellyError::Malformed("unicode")),
        },
        b"list" => Value::List(many(refs, budget)?),
        b"tuple" => Value::Tuple(many(refs, budget)?),
        b"set" | b"frozenset" => Value::Set(many(refs, budget)?),
        b"dictionary" | b"dict" => {
            let mut entries = Vec::with_capacity(rest.len().min(64));
            for pair in rest {
                let Expr::List(kv) = pair else { return Err(JellyError::Malformed("dictionary entry")) };
                let [k, v] = kv.as_slice() else { return Err(JellyError::Malformed("dictionary entry")) };
                entries.push((decode_in(k, refs, budget)?, decode_in(v, refs, budget)?));
            }
            Value::Dict(entries)
        }
        b"reference" => {
            let id = int_arg()?;
            let inner = rest.get(1).ok_or(JellyError::Malformed("reference"))?;
            let value = decode_in(inner, refs, budget)?;
            refs.push((id, value.clone()));
            value
        }
        b"dereference" => {
            let id = int_arg()?;
            let value = refs
                .iter()
                .rev()
                .find(|(n, _)| *n == id)
                .map(|(_, v)| v.clone())
                .ok_or(JellyError::UnknownReference(id))?;
            spend(budget, value.nodes())?;
            value
        }
        b"remote" => Value::Remote(int_arg()?),
        b"local" => Value::Local(int_arg()?),
        other => {
            // A copied object: `[type name, state]`. Only failures are expected.
            let name = String::from_utf8_lossy(other).into_owned();
            if name != FAILURE_TYPE {
                return Err(JellyError::Insecure(name));
            }
            let [state] = rest else { return Err(JellyError::Malformed("copyable state")) };
            Value::Copy(name, Box::new(decode_in(state, refs, budget)?))
        }
    })
}

/// Encodes a value as Twisted would (never with shared references).
pub fn encode(value: &Value) -> Expr {
    let tagged = |tag: &str, items: &[Value]| {
        let mut out = Vec::with_capacity(items.len() + 1);
        out.push(Expr::bytes(tag));
        out.extend(items.iter().map(encode));
        Expr::List(out)
    };
    match value {
        Value::None => Expr::List(vec![Expr::bytes("None")]),
        Value::Bool(b) => Expr::List(vec![Expr::bytes("boolean"), Expr::bytes(if *b { "true" } else { "false" })]),
        Value::Int(i) => Expr::Int(*i),
        Value::Float(f) => Expr::Float(*f),
        Value::Bytes(b) => Expr::Bytes(b.clone()),
        Value::Str(s) => Expr::List(vec![Expr::bytes("unicode"), Expr::bytes(s)]),
        Value::List(v) => tagged("list", v),
        Value::Tuple(v) => tagged("tuple", v),
        Value::Set(v) => tagged("set", v),
        Value::Dict(entries) => {
            let mut out = Vec::with_capacity(entries.len() + 1);
            out.push(Expr::bytes("dictionary"));
            out.extend(entries.iter().map(|(k, v)| Expr::List(vec![encode(k), encode(v)])));
            Expr::List(out)
        }
        Value::Remote(n) => Expr::List(vec![Expr::bytes("remote"), Expr::Int(*n)]),
        Value::Local(n) => Expr::List(vec![Expr::bytes("local"), Expr::Int(*n)]),
        Value::Copy(name, state) => Expr::List(vec![Expr::bytes(name), encode(state)]),
    }
}

/// A Twisted failure, as much of it as a peer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Qualified exception class, e.g. `twisted.cred.error.UnauthorizedLogin`.
    pub kind: String,
    /// The exception's message.
    pub value: String,
    /// The formatted traceback; `Traceback unavailable` from this master.
    pub traceback: String,
    /// The class and its bases: what the receiver matches on.
    pub parents: Vec<String>,
}

impl Failure {
    /// The refusal that makes a worker retry its login (any other error
    /// there makes it exit for good).
    pub fn unauthorized_login(why: &str) -> Failure {
        Failure {
            kind: "twisted.cred.error.UnauthorizedLogin".into(),
            value: why.into(),
            traceback: "Traceback unavailable\n".into(),
            parents: [
                "twisted.cred.error.UnauthorizedLogin",
                "twisted.cred.error.LoginFailed",
                "twisted.cred.error.Unauthorized",
                "builtins.Exception",
                "builtins.BaseException",
                "builtins.object",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    /// A `pb.Error`, for calls this master does not serve.
    pub fn pb_error(kind: &str, why: &str) -> Failure {
        Failure {
            kind: kind.into(),
            value: why.into(),
            traceback: "Traceback unavailable\n".into(),
            parents: [
                kind,
                "twisted.spread.pb.Error",
                "builtins.Exception",
                "builtins.BaseException",
                "builtins.object",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    /// As jelly: `type` is bytes, everything else text (a `parents` of bytes
    /// makes the worker exit).
    pub fn to_value(&self) -> Value {
        Value::Copy(
            FAILURE_TYPE.into(),
            Box::new(Value::Dict(vec![
                (Value::str("type"), Value::Bytes(self.kind.as_bytes().to_vec())),
                (Value::str("value"), Value::str(self.value.clone())),
                (Value::str("traceback"), Value::str(self.traceback.clone())),
                (Value::str("parents"), Value::List(self.parents.iter().map(|p| Value::str(p.clone())).collect())),
            ])),
        )
    }

    /// Reads a failure (or, from old code paths, a plain string).
    pub fn from_value(v: &Value) -> Failure {
        let text = |v: Option<&Value>| v.and_then(Value::as_text).map(std::borrow::Cow::into_owned).unwrap_or_default();
        match v {
            Value::Copy(_, state) => Failure {
                kind: text(state.get("type")),
                value: text(state.get("value")),
                traceback: text(state.get("traceback")),
                parents: state
                    .get("parents")
                    .and_then(Value::as_seq)
                    .map(|p| p.iter().filter_map(|x| x.as_text().map(std::borrow::Cow::into_owned)).collect())
                    .unwrap_or_default(),
            },
            other => Failure {
                kind: String::new(),
                value: other.as_text().map(std::borrow::Cow::into_owned).unwrap_or_else(|| format!("{other:?}")),
                traceback: String::new(),
                parents: Vec::new(),
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind.is_empty(), self.value.is_empty()) {
            (true, _) => write!(f, "{}", self.value),
            (false, true) => write!(f, "{}", self.kind),
            (false, false) => write!(f, "{}: {}", self.kind, self.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_references_resolve_and_cannot_explode() {
        // {'a': ['x'], 'b': <dereference 1>}
        let shared = Expr::List(vec![
            Expr::bytes("dictionary"),
            Expr::List(vec![
                encode(&Value::str("a")),
                Expr::List(vec![Expr::bytes("reference"), Expr::Int(1), encode(&Value::List(vec![Value::str("x")]))]),
            ]),
            Expr::List(vec![encode(&Value::str("b")), Expr::List(vec![Expr::bytes("dereference"), Expr::Int(1)])]),
        ]);
        let v = decode(&shared).expect("decodes");
        assert_eq!(v.get("b"), v.get("a"));
        assert_eq!(v.get("b"), Some(&Value::List(vec![Value::str("x")])));

        // Each level doubles the previous one: 2^40 values if expanded.
        let mut levels = vec![Expr::List(vec![
            Expr::bytes("reference"),
            Expr::Int(0),
            Expr::List(vec![Expr::bytes("list"), Expr::Int(1)]),
        ])];
        for n in 1..40 {
            let d = || Expr::List(vec![Expr::bytes("dereference"), Expr::Int(n - 1)]);
            levels.push(Expr::List(vec![
                Expr::bytes("reference"),
                Expr::Int(n),
                Expr::List(vec![Expr::bytes("list"), d(), d()]),
            ]));
        }
        let mut items = vec![Expr::bytes("list")];
        items.extend(levels);
        assert_eq!(decode(&Expr::List(items)), Err(JellyError::TooLarge));
    }

    #[test]
    fn classes_and_instances_are_refused() {
        for tag in ["class", "instance", "module", "function", "os.system"] {
            let e = Expr::List(vec![Expr::bytes(tag), Expr::bytes("x")]);
            assert!(matches!(decode(&e), Err(JellyError::Insecure(_))), "{tag}");
        }
        assert_eq!(decode(&Expr::List(vec![])), Err(JellyError::Malformed("list without a type")));
        let deref = Expr::List(vec![Expr::bytes("dereference"), Expr::Int(9)]);
        assert_eq!(decode(&deref), Err(JellyError::UnknownReference(9)));
    }

    #[test]
    fn failures_round_trip() {
        let f = Failure::unauthorized_login("no");
        assert_eq!(Failure::from_value(&decode(&encode(&f.to_value())).expect("decodes")), f);
        assert_eq!(f.to_string(), "twisted.cred.error.UnauthorizedLogin: no");
    }
}
