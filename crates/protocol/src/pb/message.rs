//! Perspective Broker messages (`buildbot-pb.md` §3): calls, answers,
//! errors and reference counting, over jelly values.

use super::banana::Expr;
use super::jelly::{self, Failure, JellyError, Value};

/// PB's protocol version; both sides must agree.
pub const VERSION: i64 = 6;

/// The object a call is addressed to: a numbered one, or a named one
/// (the portal's `root`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectId {
    /// An object the peer numbered (a local unique id).
    Luid(i64),
    /// An object published by name, such as `root`.
    Name(Vec<u8>),
}

/// One PB message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `version`: each side's first message.
    Version(i64),
    /// `message`: a remote method call.
    Call {
        /// The caller's number for the call; the answer or error repeats it.
        request: i64,
        /// The object called.
        object: ObjectId,
        /// The method's name, without the `remote_` prefix.
        method: String,
        /// Whether the caller waits for an answer; without it none is sent.
        answer_required: bool,
        /// Positional arguments.
        args: Vec<Value>,
        /// Keyword arguments.
        kwargs: Vec<(String, Value)>,
    },
    /// `answer`: a call's return value.
    Answer {
        /// The call answered.
        request: i64,
        /// What it returned.
        value: Value,
    },
    /// `error`: a call raised.
    Error {
        /// The call that failed.
        request: i64,
        /// What it raised.
        failure: Failure,
    },
    /// The peer dropped one proxy for our object.
    Decref(i64),
    /// The peer does not know a message of this name.
    DidNotUnderstand(String),
}

/// Why an expression is not a PB message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// Not a list starting with a name.
    #[error("a message must be a list starting with its name")]
    NotAMessage,
    /// A message name PB does not define.
    #[error("unknown message {0:?}")]
    Unknown(String),
    /// The named message has the wrong shape.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// An argument is not acceptable jelly.
    #[error(transparent)]
    Jelly(#[from] JellyError),
}

fn int(e: Option<&Expr>, what: &'static str) -> Result<i64, MessageError> {
    match e {
        Some(Expr::Int(i)) => Ok(*i),
        _ => Err(MessageError::Malformed(what)),
    }
}

impl Message {
    /// Reads a message from one banana expression.
    pub fn parse(expr: &Expr) -> Result<Message, MessageError> {
        let Expr::List(items) = expr else { return Err(MessageError::NotAMessage) };
        let Some(Expr::Bytes(name)) = items.first() else { return Err(MessageError::NotAMessage) };
        Ok(match name.as_slice() {
            b"version" => Message::Version(int(items.get(1), "version")?),
            b"message" => {
                let [_, request, object, method, answer, args, kwargs] = items.as_slice() else {
                    return Err(MessageError::Malformed("call"));
                };
                let request = int(Some(request), "call")?;
                let object = match object {
                    Expr::Int(n) => ObjectId::Luid(*n),
                    Expr::Bytes(b) => ObjectId::Name(b.clone()),
                    _ => return Err(MessageError::Malformed("call")),
                };
                let method = match method {
                    Expr::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => return Err(MessageError::Malformed("call")),
                };
                let answer_required = int(Some(answer), "call")? != 0;
                let (Value::Tuple(args) | Value::List(args)) = jelly::decode(args)? else {
                    return Err(MessageError::Malformed("call"));
                };
                let kwargs = match jelly::decode(kwargs)? {
                    Value::Dict(entries) => entries
                        .into_iter()
                        .map(|(k, v)| k.as_text().map(|k| (k.into_owned(), v)).ok_or(MessageError::Malformed("call")))
                        .collect::<Result<_, _>>()?,
                    Value::None => Vec::new(),
                    _ => return Err(MessageError::Malformed("call")),
                };
                Message::Call { request, object, method, answer_required, args, kwargs }
            }
            b"answer" => {
                let [_, request, value] = items.as_slice() else { return Err(MessageError::Malformed("answer")) };
                Message::Answer { request: int(Some(request), "answer")?, value: jelly::decode(value)? }
            }
            b"error" => {
                let [_, request, failure] = items.as_slice() else { return Err(MessageError::Malformed("error")) };
                let failure = Failure::from_value(&jelly::decode(failure)?);
                Message::Error { request: int(Some(request), "error")?, failure }
            }
            b"decref" => Message::Decref(int(items.get(1), "decref")?),
            b"didNotUnderstand" => Message::DidNotUnderstand(
                items
                    .get(1)
                    .and_then(Expr::as_bytes)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            ),
            other => return Err(MessageError::Unknown(String::from_utf8_lossy(other).into_owned())),
        })
    }

    /// The message as one banana expression.
    pub fn to_expr(&self) -> Expr {
        match self {
            Message::Version(v) => Expr::List(vec![Expr::bytes("version"), Expr::Int(*v)]),
            Message::Call { request, object, method, answer_required, args, kwargs } => Expr::List(vec![
                Expr::bytes("message"),
                Expr::Int(*request),
                match object {
                    ObjectId::Luid(n) => Expr::Int(*n),
                    ObjectId::Name(b) => Expr::Bytes(b.clone()),
                },
                Expr::bytes(method),
                Expr::Int(i64::from(*answer_required)),
                jelly::encode(&Value::Tuple(args.clone())),
                jelly::encode(&Value::Dict(kwargs.iter().map(|(k, v)| (Value::str(k.clone()), v.clone())).collect())),
            ]),
            Message::Answer { request, value } => {
                Expr::List(vec![Expr::bytes("answer"), Expr::Int(*request), jelly::encode(value)])
            }
            Message::Error { request, failure } => {
                Expr::List(vec![Expr::bytes("error"), Expr::Int(*request), jelly::encode(&failure.to_value())])
            }
            Message::Decref(n) => Expr::List(vec![Expr::bytes("decref"), Expr::Int(*n)]),
            Message::DidNotUnderstand(name) => Expr::List(vec![Expr::bytes("didNotUnderstand"), Expr::bytes(name)]),
        }
    }
}

/// `MD5(MD5(password) ‖ challenge)`: what a worker answers a login
/// challenge with. The master keeps only `MD5(password)`.
pub fn challenge_response(password_md5: &[u8; 16], challenge: &[u8]) -> [u8; 16] {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update(password_md5);
    h.update(challenge);
    h.finalize().into()
}

/// `MD5(password)`, which the master keeps instead of the password.
pub fn password_md5(password: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(password).into()
}
