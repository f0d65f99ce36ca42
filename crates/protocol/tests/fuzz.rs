//! Fuzz targets for everything that decodes a worker's bytes: PB's banana,
//! jelly and messages, and msgpack frames. No input may panic, and the PB
//! decoder's memory stays bounded whatever arrives.
//!
//! CI runs a short pass (proptest's default 256 cases per target). A long
//! run: `PROPTEST_CASES=200000 cargo test --release -p cascade-protocol --test fuzz`.

use cascade_protocol::Frame;
use cascade_protocol::pb::banana::{self, Decoder, Expr, MAX_EXPRESSION, VOCABULARY};
use cascade_protocol::pb::{Message, jelly};
use proptest::prelude::*;

/// Feeds `bytes` in `chunk`-sized pieces; parses every expression as PB
/// would. Returns the expressions decoded before any error.
fn drive(bytes: &[u8], chunk: usize, vocab: bool) -> Vec<Expr> {
    let mut d = Decoder::new();
    d.set_vocabulary(vocab);
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        d.feed(piece);
        loop {
            match d.next_expr() {
                Ok(Some(e)) => {
                    let _ = Message::parse(&e);
                    let _ = jelly::decode(&e);
                    // Whatever decodes re-encodes (or is refused cleanly).
                    let _ = banana::encode(&e, vocab);
                    out.push(e);
                }
                Ok(None) => break,
                Err(_) => return out,
            }
        }
        // Bounded memory: the unfinished expression never exceeds the
        // limit, plus what arrived in this read.
        assert!(d.partial() <= MAX_EXPRESSION, "partial {}", d.partial());
        assert!(d.buffered() <= MAX_EXPRESSION + piece.len() + 80, "buffered {}", d.buffered());
    }
    out
}

/// The captured and synthetic vectors: real messages to mutate.
fn vectors() -> &'static [Vec<u8>] {
    static VECTORS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    VECTORS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/pb/buildbot-pb-vectors.txt");
        let text = std::fs::read_to_string(path).expect("the vectors file");
        text.lines()
            .filter_map(|l| l.strip_prefix("hex: "))
            .map(|h| (0..h.len()).step_by(2).filter_map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok()).collect())
            .collect()
    })
}

/// Arbitrary banana trees, with vocabulary words and PB-looking heads.
fn expr() -> impl Strategy<Value = Expr> {
    let word = prop::sample::select(VOCABULARY.to_vec()).prop_map(Expr::bytes);
    let tag =
        prop::sample::select(vec!["unicode", "boolean", "true", "remote", "set", "twisted.spread.pb.CopyableFailure"])
            .prop_map(Expr::bytes);
    let leaf = prop_oneof![
        any::<i64>().prop_map(Expr::Int),
        any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(Expr::Float),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Expr::Bytes),
        word,
        tag,
    ];
    leaf.prop_recursive(6, 200, 8, |inner| prop::collection::vec(inner, 0..8).prop_map(Expr::List))
}

proptest! {
    #[test]
    fn banana_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..512, vocab: bool) {
        drive(&bytes, chunk, vocab);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        chunk in 1usize..64,
    ) {
        let mut bytes = pick.get(vectors()).clone();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.push(byte),
            }
        }
        drive(&bytes, chunk, true);
    }

    #[test]
    fn every_tree_round_trips_through_the_codec(e in expr(), vocab: bool, chunk in 1usize..64) {
        let bytes = banana::encode(&e, vocab).expect("small trees encode");
        let got = drive(&bytes, chunk, vocab);
        prop_assert_eq!(got, vec![e]);
    }

    #[test]
    fn msgpack_frames_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn claimed_sizes_cost_only_what_arrives(count in 0u64..2_000_000, kind in prop::sample::select(vec![0x80u8, 0x82])) {
        // A header claiming a huge list or string, then nothing.
        let mut bytes = Vec::new();
        let mut n = count;
        loop {
            bytes.push((n & 0x7f) as u8);
            n >>= 7;
            if n == 0 { break; }
        }
        bytes.push(kind);
        let mut d = Decoder::new();
        d.feed(&bytes);
        let _ = d.next_expr();
        prop_assert!(d.buffered() <= bytes.len());
    }
}
