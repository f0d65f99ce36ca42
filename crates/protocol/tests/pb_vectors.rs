//! Every vector of `tests/fixtures/pb/buildbot-pb-vectors.txt`: the bytes
//! decode to the stated banana tree and jelly value, and encode back to the
//! exact same bytes.

use cascade_protocol::pb::banana::{self, Decoder, Expr, VOCABULARY};
use cascade_protocol::pb::jelly::{self, Failure, Value};
use cascade_protocol::pb::message::{self, Message};

#[derive(Debug, Default)]
struct Record {
    name: String,
    fields: Vec<(String, String)>,
}

impl Record {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn bytes(&self) -> Vec<u8> {
        let hex = self.get("hex").unwrap_or_else(|| panic!("{}: no hex", self.name));
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit")).collect()
    }

    /// Negotiation happens before the dialect is chosen; one vector shows the `none` dialect.
    fn vocab(&self) -> bool {
        !matches!(self.name.as_str(), "dialect-offer" | "dialect-choice" | "vocab-word-in-none-dialect")
    }
}

fn records() -> Vec<Record> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/pb/buildbot-pb-vectors.txt");
    let text = std::fs::read_to_string(path).expect("the vectors file");
    let mut out = Vec::new();
    let mut current: Option<Record> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        let Some((key, value)) = line.split_once(": ") else { continue };
        if key == "name" {
            out.extend(current.take());
            current = Some(Record { name: value.to_string(), fields: Vec::new() });
        } else if let Some(r) = current.as_mut() {
            r.fields.push((key.to_string(), value.to_string()));
        }
    }
    out.extend(current);
    out
}

/// Python's `repr` of a bytes or str body (without the `b` prefix).
fn py_quote(chars: impl Iterator<Item = u32> + Clone, bytes: bool) -> String {
    let has_single = chars.clone().any(|c| c == u32::from(b'\''));
    let has_double = chars.clone().any(|c| c == u32::from(b'"'));
    let quote = if has_single && !has_double { '"' } else { '\'' };
    let mut s = String::new();
    s.push(quote);
    for c in chars {
        match char::from_u32(c) {
            Some('\\') => s.push_str("\\\\"),
            Some('\n') => s.push_str("\\n"),
            Some('\r') => s.push_str("\\r"),
            Some('\t') => s.push_str("\\t"),
            Some(ch) if ch == quote => {
                s.push('\\');
                s.push(ch);
            }
            Some(ch) if (' '..='~').contains(&ch) => s.push(ch),
            Some(ch) if !bytes && c > 0xa0 => s.push(ch),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push(quote);
    s
}

fn py_bytes(b: &[u8]) -> String {
    format!("b{}", py_quote(b.iter().map(|&x| u32::from(x)), true))
}

fn py_float(f: f64) -> String {
    let s = format!("{f:?}");
    format!("f{s}")
}

/// The vectors' banana notation: `[..]`, ints, `f1.5`, `b'..'`, `@word`.
fn render_banana(e: &Expr, vocab: bool) -> String {
    match e {
        Expr::Int(i) => i.to_string(),
        Expr::Float(f) => py_float(*f),
        Expr::Bytes(b) => match VOCABULARY.iter().find(|w| w.as_bytes() == b.as_slice()) {
            Some(word) if vocab => format!("@{word}"),
            _ => py_bytes(b),
        },
        Expr::List(items) => {
            format!("[{}]", items.iter().map(|i| render_banana(i, vocab)).collect::<Vec<_>>().join(", "))
        }
    }
}

/// The vectors' jelly notation: Python's repr, plus `<remote N>` and `<copy T {..}>`.
fn render_value(v: &Value) -> String {
    let seq = |items: &[Value]| items.iter().map(render_value).collect::<Vec<_>>().join(", ");
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => py_float(*f),
        Value::Bytes(b) => py_bytes(b),
        Value::Str(s) => py_quote(s.chars().map(u32::from), false),
        Value::List(items) => format!("[{}]", seq(items)),
        Value::Tuple(items) if items.len() == 1 => format!("({},)", render_value(&items[0])),
        Value::Tuple(items) => format!("({})", seq(items)),
        Value::Set(items) => format!("{{{}}}", seq(items)),
        Value::Dict(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", render_value(k), render_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Remote(n) => format!("<remote {n}>"),
        Value::Local(n) => format!("<local {n}>"),
        Value::Copy(name, state) => format!("<copy {name} {}>", render_value(state)),
    }
}

fn decode_one(bytes: &[u8], vocab: bool) -> Expr {
    let mut d = Decoder::new();
    d.set_vocabulary(vocab);
    d.feed(bytes);
    let e = d.next_expr().expect("decodes").expect("one whole expression");
    assert_eq!(d.buffered(), 0, "exactly one expression");
    e
}

#[test]
fn every_vector_decodes_to_its_banana_and_encodes_to_its_bytes() {
    let records = records();
    assert!(records.len() >= 70, "the vectors file has all its records: {}", records.len());
    let mut checked = 0;
    for r in records.iter().filter(|r| r.get("hex").is_some()) {
        let bytes = r.bytes();
        assert_eq!(bytes.len().to_string(), r.get("len").unwrap_or_default(), "{}: len", r.name);
        let expr = decode_one(&bytes, r.vocab());
        assert_eq!(render_banana(&expr, r.vocab()), r.get("banana").unwrap_or_default(), "{}: banana", r.name);
        assert_eq!(banana::encode(&expr, r.vocab()).expect("encodes"), bytes, "{}: encode", r.name);
        checked += 1;
    }
    assert!(checked >= 69, "{checked} vectors checked");
}

/// Jelly values in a record: the whole expression for synthetic jelly
/// records, the argument tuple, kwargs or answered value for PB messages.
#[test]
fn every_vector_has_its_stated_jelly_meaning() {
    let mut checked = 0;
    for r in records().iter().filter(|r| r.get("hex").is_some()) {
        let expr = decode_one(&r.bytes(), r.vocab());
        let items = match &expr {
            Expr::List(items) => items.clone(),
            _ => Vec::new(),
        };
        let is_message = r.get("pb").is_some();
        let mut expect = |field: &str, e: &Expr| {
            let Some(stated) = r.get(field) else { return };
            let value = jelly::decode(e).unwrap_or_else(|err| panic!("{}: {err}", r.name));
            assert_eq!(render_value(&value), stated, "{}: {field}", r.name);
            // Twisted's own bytes come back, except for shared references,
            // which this encoder never produces.
            if !r.name.contains("reference") {
                assert_eq!(&jelly::encode(&value), e, "{}: jelly encode", r.name);
            }
            checked += 1;
        };
        if !is_message {
            expect("value", &expr);
        } else if items.len() == 7 {
            expect("args", &items[5]);
            expect("kwargs", &items[6]);
        } else if items.len() == 3 {
            expect("value", &items[2]);
        }
    }
    assert!(checked >= 45, "{checked} jelly values checked");
}

/// Messages parse, and the master's own messages are rebuilt byte for byte.
#[test]
fn messages_parse_and_the_masters_rebuild_exactly() {
    let mut rebuilt = 0;
    for r in records().iter().filter(|r| r.get("pb").is_some()) {
        let bytes = r.bytes();
        let expr = decode_one(&bytes, true);
        let msg = Message::parse(&expr).unwrap_or_else(|e| panic!("{}: {e}", r.name));
        let pb = r.get("pb").unwrap_or_default();
        match &msg {
            Message::Call { request, method, answer_required, .. } => {
                assert!(pb.starts_with(&format!("message req={request} ")), "{}: {pb}", r.name);
                assert!(pb.contains(&format!("name='{method}'")), "{}: {pb}", r.name);
                assert!(*answer_required);
            }
            Message::Answer { request, .. } => assert_eq!(pb, format!("answer req={request}"), "{}", r.name),
            Message::Error { request, failure } => {
                assert_eq!(pb, format!("error req={request}"), "{}", r.name);
                assert!(!failure.parents.is_empty() && !failure.kind.is_empty(), "{}: {failure:?}", r.name);
            }
            Message::Decref(n) => assert_eq!(pb, format!("decref {n}")),
            Message::Version(v) => assert_eq!(pb, format!("version {v}")),
            Message::DidNotUnderstand(_) => panic!("{}: unexpected", r.name),
        }
        if !matches!(msg, Message::Error { .. }) {
            let again = banana::encode(&msg.to_expr(), true).expect("encodes");
            assert_eq!(again, bytes, "{}: rebuilt", r.name);
            rebuilt += 1;
        }
    }
    assert!(rebuilt >= 35, "{rebuilt} messages rebuilt");
}

/// The login refusal the worker is known to accept (and retry after) is
/// exactly what this master sends.
#[test]
fn the_login_refusal_is_the_one_the_worker_accepts() {
    let r = records().into_iter().find(|r| r.name == "minimal-UnauthorizedLogin-error").expect("record");
    let ours = Message::Error { request: 2, failure: Failure::unauthorized_login("") };
    assert_eq!(banana::encode(&ours.to_expr(), true).expect("encodes"), r.bytes());
}

#[test]
fn the_md5_challenge_response_matches_the_capture() {
    let r = records().into_iter().find(|r| r.name == "md5-challenge-response-check").expect("record");
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    };
    let digest = message::password_md5(r.get("password").expect("password").as_bytes());
    assert_eq!(digest.to_vec(), hex(r.get("md5(password)").expect("md5")));
    let challenge = hex(r.get("challenge").expect("challenge"));
    let response = message::challenge_response(&digest, &challenge);
    let key = "response = md5(md5(password) || challenge)";
    assert_eq!(response.to_vec(), hex(r.get(key).expect("response")));
}

/// The whole captured stream, fed in awkward pieces, decodes to the same
/// expressions as fed whole (expressions follow each other with no framing).
#[test]
fn a_stream_of_vectors_decodes_across_any_split() {
    let records = records();
    let pb: Vec<&Record> = records.iter().filter(|r| r.get("pb").is_some()).collect();
    let stream: Vec<u8> = pb.iter().flat_map(|r| r.bytes()).collect();
    for chunk in [1, 2, 3, 7, 64, 1000] {
        let mut d = Decoder::new();
        d.set_vocabulary(true);
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            d.feed(piece);
            while let Some(e) = d.next_expr().expect("decodes") {
                got.push(e);
            }
        }
        assert_eq!(got.len(), pb.len(), "chunk {chunk}");
        for (e, r) in got.iter().zip(&pb) {
            assert_eq!(banana::encode(e, true).expect("encodes"), r.bytes(), "{} in chunks of {chunk}", r.name);
        }
    }
}
