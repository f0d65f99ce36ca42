//! Banana: Twisted's byte encoding of nested lists, integers, floats and
//! byte strings (`shared/protocols/buildbot-pb.md` §1).
//!
//! A token is a base-128 little-endian prefix (bytes < 0x80) and a type byte
//! (≥ 0x80). Expressions follow each other with no framing, so the decoder
//! is incremental: feed it bytes as they arrive, take out whole expressions.

/// Longest string and longest list either peer accepts (Twisted's SIZE_LIMIT).
pub const SIZE_LIMIT: usize = 640 * 1024;
/// Longest number prefix, in bytes.
const PREFIX_LIMIT: usize = 64;
/// Deepest list nesting accepted; Buildbot's messages nest under ten levels.
pub const MAX_DEPTH: usize = 64;
/// Most bytes one expression may span: the largest legitimate message is a
/// file chunk or log text under [`SIZE_LIMIT`] plus its envelope. This
/// bounds what one connection can make the decoder hold.
pub const MAX_EXPRESSION: usize = SIZE_LIMIT + 64 * 1024;

const LIST: u8 = 0x80;
const INT: u8 = 0x81;
const STRING: u8 = 0x82;
const NEG: u8 = 0x83;
const FLOAT: u8 = 0x84;
const LONGINT: u8 = 0x85;
const LONGNEG: u8 = 0x86;
const VOCAB: u8 = 0x87;

/// Dialect `pb`'s abbreviations: word number `i + 1` is `VOCABULARY[i]`.
pub const VOCABULARY: [&str; 31] = [
    "None",
    "class",
    "dereference",
    "reference",
    "dictionary",
    "function",
    "instance",
    "list",
    "module",
    "persistent",
    "tuple",
    "unpersistable",
    "copy",
    "cache",
    "cached",
    "remote",
    "local",
    "lcache",
    "version",
    "login",
    "password",
    "challenge",
    "logged_in",
    "not_logged_in",
    "cachemessage",
    "message",
    "answer",
    "error",
    "decref",
    "decache",
    "uncache",
];

/// One banana expression. VOCAB tokens decode to the bytes they stand for.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An integer (INT, NEG, LONGINT or LONGNEG on the wire).
    Int(i64),
    /// A float (big-endian IEEE double on the wire).
    Float(f64),
    /// A byte string; VOCAB tokens decode to one too.
    Bytes(Vec<u8>),
    /// A list of expressions.
    List(Vec<Expr>),
}

impl Expr {
    /// A byte string expression holding `s`.
    pub fn bytes(s: impl AsRef<[u8]>) -> Expr {
        Expr::Bytes(s.as_ref().to_vec())
    }

    /// The bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Expr::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// Why a peer's bytes are not banana; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BananaError {
    /// A number prefix ran past `PREFIX_LIMIT` bytes.
    #[error("number prefix longer than {PREFIX_LIMIT} bytes")]
    PrefixTooLong,
    /// A type byte banana does not define.
    #[error("unknown token type 0x{0:02x}")]
    UnknownType(u8),
    /// A string claimed more than `SIZE_LIMIT` bytes.
    #[error("string of {0} bytes is over the 640 KiB limit")]
    StringTooLong(u64),
    /// A list claimed more than `SIZE_LIMIT` items.
    #[error("list of {0} items is over the 640 Ki limit")]
    ListTooLong(u64),
    /// An integer does not fit an `i64`.
    #[error("integer out of range")]
    IntegerOutOfRange,
    /// A VOCAB token numbers no word of `VOCABULARY`.
    #[error("unknown vocabulary word {0}")]
    UnknownVocab(u64),
    /// A VOCAB token before dialect `pb` was agreed.
    #[error("vocabulary token in a dialect without vocabulary")]
    VocabNotAllowed,
    /// Lists nested deeper than `MAX_DEPTH`.
    #[error("lists nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// One expression spans more than `MAX_EXPRESSION` bytes.
    #[error("expression longer than {MAX_EXPRESSION} bytes")]
    ExpressionTooLong,
}

/// Incremental decoder; after an error the connection must be dropped.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    /// Open lists: items still expected, items so far.
    stack: Vec<(usize, Vec<Expr>)>,
    /// Bytes consumed by the expression being built.
    consumed: usize,
    vocab: bool,
}

/// A prefix, as far as the buffer holds it.
enum Prefix {
    Incomplete,
    /// value, type byte, bytes used (prefix and type byte)
    Done(u64, u8, usize),
}

fn read_prefix(bytes: &[u8]) -> Result<Prefix, BananaError> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x80 {
            return Ok(Prefix::Done(value, b, i + 1));
        }
        if i >= PREFIX_LIMIT {
            return Err(BananaError::PrefixTooLong);
        }
        if b != 0 {
            // Beyond 2^63 is refused: PB traffic never comes near it.
            if i * 7 >= 64 || (i * 7 > 56 && u64::from(b) >> (64 - i * 7) != 0) {
                return Err(BananaError::IntegerOutOfRange);
            }
            value |= u64::from(b) << (i * 7);
        }
    }
    if bytes.len() > PREFIX_LIMIT {
        return Err(BananaError::PrefixTooLong);
    }
    Ok(Prefix::Incomplete)
}

impl Decoder {
    /// A decoder for the dialect negotiation (no vocabulary yet).
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Switches VOCAB tokens on (dialect `pb`) or off (`none`).
    pub fn set_vocabulary(&mut self, on: bool) {
        self.vocab = on;
    }

    /// Appends bytes as they arrive; take expressions out with `next_expr`.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet taken into an expression.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Wire bytes of the unfinished expression already decoded into items.
    pub fn partial(&self) -> usize {
        self.consumed
    }

    /// The next complete top-level expression, if the buffer holds one.
    pub fn next_expr(&mut self) -> Result<Option<Expr>, BananaError> {
        loop {
            let rest = &self.buf[self.pos..];
            if rest.is_empty() {
                return Ok(None);
            }
            let (value, kind, used) = match read_prefix(rest)? {
                Prefix::Incomplete => return Ok(None),
                Prefix::Done(v, k, u) => (v, k, u),
            };
            let (item, total) = match kind {
                LIST => {
                    if value > SIZE_LIMIT as u64 {
                        return Err(BananaError::ListTooLong(value));
                    }
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(BananaError::TooDeep);
                    }
                    self.advance(used)?;
                    if value == 0 {
                        (Some(Expr::List(Vec::new())), 0)
                    } else {
                        // Capacity grows with what arrives, not with what is claimed.
                        self.stack.push((value as usize, Vec::with_capacity((value as usize).min(16))));
                        (None, 0)
                    }
                }
                INT | LONGINT => {
                    let v = i64::try_from(value).map_err(|_| BananaError::IntegerOutOfRange)?;
                    (Some(Expr::Int(v)), used)
                }
                NEG | LONGNEG => {
                    let v = if value == 1 << 63 {
                        i64::MIN
                    } else {
                        -i64::try_from(value).map_err(|_| BananaError::IntegerOutOfRange)?
                    };
                    (Some(Expr::Int(v)), used)
                }
                STRING => {
                    if value > SIZE_LIMIT as u64 {
                        return Err(BananaError::StringTooLong(value));
                    }
                    let n = value as usize;
                    if rest.len() < used + n {
                        self.check_budget(used + n)?;
                        return Ok(None);
                    }
                    (Some(Expr::Bytes(rest[used..used + n].to_vec())), used + n)
                }
                FLOAT => {
                    if rest.len() < used + 8 {
                        return Ok(None);
                    }
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(&rest[used..used + 8]);
                    (Some(Expr::Float(f64::from_be_bytes(raw))), used + 8)
                }
                VOCAB => {
                    if !self.vocab {
                        return Err(BananaError::VocabNotAllowed);
                    }
                    let word = value
                        .checked_sub(1)
                        .and_then(|i| VOCABULARY.get(i as usize))
                        .ok_or(BananaError::UnknownVocab(value))?;
                    (Some(Expr::bytes(word)), used)
                }
                other => return Err(BananaError::UnknownType(other)),
            };
            if total > 0 {
                self.advance(total)?;
            }
            if let Some(item) = item
                && let Some(done) = self.complete(item)
            {
                return Ok(Some(done));
            }
        }
    }

    fn check_budget(&self, more: usize) -> Result<(), BananaError> {
        if self.consumed + more > MAX_EXPRESSION { Err(BananaError::ExpressionTooLong) } else { Ok(()) }
    }

    fn advance(&mut self, n: usize) -> Result<(), BananaError> {
        self.check_budget(n)?;
        self.pos += n;
        self.consumed += n;
        Ok(())
    }

    /// Puts a finished item into its list; returns a finished top-level expression.
    fn complete(&mut self, mut item: Expr) -> Option<Expr> {
        loop {
            let Some((expected, items)) = self.stack.last_mut() else {
                self.consumed = 0;
                return Some(item);
            };
            items.push(item);
            if items.len() < *expected {
                return None;
            }
            let (_, items) = self.stack.pop()?;
            item = Expr::List(items);
        }
    }
}

fn push_prefix(out: &mut Vec<u8>, mut n: u64, kind: u8) {
    loop {
        out.push((n & 0x7f) as u8);
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    out.push(kind);
}

/// Why an expression cannot be sent: the peer would refuse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string over `SIZE_LIMIT` bytes.
    #[error("string of {0} bytes is over the 640 KiB limit")]
    StringTooLong(usize),
    /// A list over `SIZE_LIMIT` items.
    #[error("list of {0} items is over the 640 Ki limit")]
    ListTooLong(usize),
}

/// Encodes one expression, abbreviating vocabulary words when `vocab` is on
/// (as Twisted does, so the bytes match its own).
pub fn encode(expr: &Expr, vocab: bool) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(expr, vocab, &mut out)?;
    Ok(out)
}

fn encode_into(expr: &Expr, vocab: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match expr {
        Expr::List(items) => {
            if items.len() > SIZE_LIMIT {
                return Err(EncodeError::ListTooLong(items.len()));
            }
            push_prefix(out, items.len() as u64, LIST);
            for item in items {
                encode_into(item, vocab, out)?;
            }
        }
        Expr::Int(i) => {
            let fits = i32::try_from(*i).is_ok();
            match (*i >= 0, fits) {
                (true, true) => push_prefix(out, *i as u64, INT),
                (true, false) => push_prefix(out, *i as u64, LONGINT),
                (false, true) => push_prefix(out, i.unsigned_abs(), NEG),
                (false, false) => push_prefix(out, i.unsigned_abs(), LONGNEG),
            }
        }
        Expr::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Expr::Bytes(b) => {
            if vocab && let Some(i) = VOCABULARY.iter().position(|w| w.as_bytes() == b.as_slice()) {
                push_prefix(out, i as u64 + 1, VOCAB);
            } else {
                if b.len() > SIZE_LIMIT {
                    return Err(EncodeError::StringTooLong(b.len()));
                }
                push_prefix(out, b.len() as u64, STRING);
                out.extend_from_slice(b);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], vocab: bool) -> Result<Vec<Expr>, BananaError> {
        let mut d = Decoder::new();
        d.set_vocabulary(vocab);
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(e) = d.next_expr()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn prefixes_are_base_128_little_endian() {
        for (n, bytes) in [(5u64, vec![5u8, INT]), (128, vec![0, 1, INT]), (200, vec![0x48, 1, INT])] {
            assert_eq!(encode(&Expr::Int(n as i64), false).expect("encodes"), bytes);
            assert_eq!(decode_all(&bytes, false).expect("decodes"), vec![Expr::Int(n as i64)]);
        }
        // An empty prefix is zero.
        assert_eq!(decode_all(&[INT], false).expect("decodes"), vec![Expr::Int(0)]);
    }

    #[test]
    fn expressions_split_anywhere_decode_the_same() {
        let expr = Expr::List(vec![
            Expr::bytes("message"),
            Expr::Int(300),
            Expr::Float(1.5),
            Expr::List(vec![Expr::bytes("x".repeat(500)), Expr::Int(-7)]),
        ]);
        let bytes = encode(&expr, true).expect("encodes");
        for split in 0..bytes.len() {
            let mut d = Decoder::new();
            d.set_vocabulary(true);
            d.feed(&bytes[..split]);
            let early = d.next_expr().expect("no error");
            d.feed(&bytes[split..]);
            let got = match early {
                Some(e) => e,
                None => d.next_expr().expect("no error").expect("complete"),
            };
            assert_eq!(got, expr, "split at {split}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut big = Vec::new();
        push_prefix(&mut big, SIZE_LIMIT as u64 + 1, STRING);
        assert_eq!(decode_all(&big, false), Err(BananaError::StringTooLong(SIZE_LIMIT as u64 + 1)));
        let mut list = Vec::new();
        push_prefix(&mut list, SIZE_LIMIT as u64 + 1, LIST);
        assert_eq!(decode_all(&list, false), Err(BananaError::ListTooLong(SIZE_LIMIT as u64 + 1)));
        assert_eq!(decode_all(&[0x00; 70], false), Err(BananaError::PrefixTooLong));
        assert_eq!(decode_all(&[0x01; 70], false), Err(BananaError::IntegerOutOfRange));
        assert_eq!(decode_all(&[0x88], false), Err(BananaError::UnknownType(0x88)));
        assert_eq!(decode_all(&[0x20, VOCAB], true), Err(BananaError::UnknownVocab(32)));
        assert_eq!(decode_all(&[0x00, VOCAB], true), Err(BananaError::UnknownVocab(0)));
        assert_eq!(decode_all(&[0x01, VOCAB], false), Err(BananaError::VocabNotAllowed));
        let deep: Vec<u8> = std::iter::repeat_n([1u8, LIST], MAX_DEPTH + 1).flatten().collect();
        assert_eq!(decode_all(&deep, false), Err(BananaError::TooDeep));
        assert_eq!(
            encode(&Expr::Bytes(vec![0; SIZE_LIMIT + 1]), false),
            Err(EncodeError::StringTooLong(SIZE_LIMIT + 1))
        );
        // 2^64 does not fit.
        let mut huge = vec![0u8; 9];
        huge.push(0x02);
        huge.push(LONGINT);
        assert_eq!(decode_all(&huge, false), Err(BananaError::IntegerOutOfRange));
    }

    #[test]
    fn integer_extremes_round_trip() {
        for n in [0, 1, -1, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            let bytes = encode(&Expr::Int(n), false).expect("encodes");
            assert_eq!(decode_all(&bytes, false).expect("decodes"), vec![Expr::Int(n)], "{n}");
        }
    }

    #[test]
    fn a_list_of_many_claimed_items_costs_only_what_arrives() {
        let mut d = Decoder::new();
        let mut bytes = Vec::new();
        push_prefix(&mut bytes, SIZE_LIMIT as u64, LIST);
        d.feed(&bytes);
        assert_eq!(d.next_expr(), Ok(None));
        assert!(d.stack[0].1.capacity() <= 16);
    }
}
