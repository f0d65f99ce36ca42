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
    Luid(i64),
    Name(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Version(i64),
    Call {
        request: i64,
        object: ObjectId,
        method: String,
        answer_required: bool,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    },
    Answer {
        request: i64,
        value: Value,
    },
    Error {
        request: i64,
        failure: Failure,
    },
    /// The peer dropped one proxy for our object.
    Decref(i64),
    DidNotUnderstand(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("a message must be a list starting with its name")]
    NotAMessage,
    #[error("unknown message {0:?}")]
    Unknown(String),
    #[error("malformed {0} message")]
    Malformed(&'static str),
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
                let args = match jelly::decode(args)? {
                    Value::Tuple(a) | Value::List(a) => a,
                    _ => return Err(MessageError::Malformed("call")),
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

pub fn password_md5(password: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(password).into()
}
