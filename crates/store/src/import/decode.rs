//! The pure parts of reading a Buildbot 4 database: its log chunks'
//! compressions, its property encodings, its database URLs.

use std::io::Read;

/// What one `logchunks.compressed` code stands for, in Buildbot 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// 0: the text itself.
    Raw,
    /// 1: a zlib stream (`logCompressionMethod = "gz"`).
    Zlib,
    /// 2: bzip2.
    Bz2,
    /// 3: an LZ4 block after a 4-byte little-endian uncompressed size.
    Lz4,
    /// 4: a zstd frame.
    Zstd,
    /// 5: brotli.
    Brotli,
}

impl Compression {
    /// The compression a code stands for; `None` for a code Buildbot 4 never writes.
    pub fn from_code(code: i64) -> Option<Compression> {
        Some(match code {
            0 => Compression::Raw,
            1 => Compression::Zlib,
            2 => Compression::Bz2,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            5 => Compression::Brotli,
            _ => return None,
        })
    }
}

/// The largest chunk text accepted (Buildbot's chunks are at most 64 kB;
/// this bounds what a corrupt size prefix or a compression bomb can ask for).
const MAX_CHUNK: usize = 64 * 1024 * 1024;

/// A log chunk's text: its lines joined by `\n`, from its stored bytes.
pub fn decode_chunk(code: i64, bytes: &[u8]) -> Result<String, String> {
    let compression = Compression::from_code(code).ok_or_else(|| format!("unknown compression code {code}"))?;
    let raw = match compression {
        Compression::Raw => bytes.to_vec(),
        Compression::Zlib => read_all(flate2::read::ZlibDecoder::new(bytes), "zlib")?,
        Compression::Bz2 => read_all(bzip2::read::BzDecoder::new(bytes), "bz2")?,
        Compression::Lz4 => lz4(bytes)?,
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(bytes).map_err(|e| format!("zstd: {e}"))?;
            read_all(decoder, "zstd")?
        }
        Compression::Brotli => read_all(brotli_decompressor::Decompressor::new(bytes, 4096), "brotli")?,
    };
    String::from_utf8(raw).map_err(|e| format!("the text is not UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

fn read_all(reader: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let read = reader.take(MAX_CHUNK as u64 + 1).read_to_end(&mut out).map_err(|e| format!("{what}: {e}"))?;
    if read > MAX_CHUNK {
        return Err(format!("{what}: more than {MAX_CHUNK} bytes"));
    }
    Ok(out)
}

/// Python's `lz4.block.compress` (with its default `store_size`): the
/// uncompressed size as 4 little-endian bytes, then the block.
fn lz4(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (size, block) = bytes.split_first_chunk::<4>().ok_or("lz4: shorter than its size prefix")?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > MAX_CHUNK {
        return Err(format!("lz4: says {size} bytes"));
    }
    lz4_flex::block::decompress(block, size).map_err(|e| format!("lz4: {e}"))
}

/// A change's or buildset's property as Buildbot stores it, JSON
/// `[value, source]`: the value and the source.
pub fn split_property(text: &str) -> Result<(serde_json::Value, String), String> {
    let parsed: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match parsed {
        serde_json::Value::Array(mut pair) if pair.len() == 2 => {
            let source = match pair.pop() {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            Ok((pair.pop().unwrap_or(serde_json::Value::Null), source))
        }
        _ => Err("not a [value, source] pair".into()),
    }
}

/// Where a Buildbot `db_url` points, as a URL sqlx opens: SQLAlchemy's
/// driver suffix goes (`postgresql+psycopg2://`), `sqlite:///rel` and
/// `sqlite:////abs` become sqlx's `sqlite://rel` and `sqlite:///abs` (read
/// only), and a bare path names a SQLite file.
pub fn source_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None if !url.is_empty() && !url.contains(':') => ("sqlite", url),
        None => return Err(format!("{url:?} is not a database URL")),
    };
    let base = scheme.split('+').next().unwrap_or(scheme);
    match base {
        "postgresql" | "postgres" => Ok(format!("postgres://{rest}")),
        "sqlite" => {
            // SQLAlchemy: sqlite:///PATH; a bare path has no leading slash to drop.
            let path =
                if scheme == "sqlite" && url.contains("://") { rest.strip_prefix('/').unwrap_or(rest) } else { rest };
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            if path.is_empty() || path == ":memory:" {
                return Err(format!("{url:?} names no database file"));
            }
            let query = query.split('&').filter(|q| !q.is_empty() && !q.starts_with("mode=")).collect::<Vec<_>>();
            let extra = if query.is_empty() { String::new() } else { format!("&{}", query.join("&")) };
            Ok(format!("sqlite://{path}?mode=ro{extra}"))
        }
        "mysql" => Err("MySQL Buildbot databases are not supported: only SQLite and PostgreSQL".into()),
        _ => Err(format!("{url:?}: expected a sqlite:// or postgresql:// URL")),
    }
}

/// The source's name as remembered in the store: its URL without a
/// password or driver, so a resumed run finds its progress.
pub fn source_key(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let base = scheme.split('+').next().unwrap_or(scheme).replace("postgresql", "postgres");
    let rest = match rest.split_once('@') {
        Some((userinfo, host)) if !userinfo.contains('/') => {
            let user = userinfo.split(':').next().unwrap_or(userinfo);
            format!("{user}@{host}")
        }
        _ => rest.to_string(),
    };
    format!("{base}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &str = "oline one\neline two: ünïcödé ✓\nhheader";

    #[test]
    fn raw_and_zlib() {
        assert_eq!(decode_chunk(0, TEXT.as_bytes()).as_deref(), Ok(TEXT));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(TEXT.as_bytes()).expect("write");
        assert_eq!(decode_chunk(1, &z.finish().expect("finish")).as_deref(), Ok(TEXT));
    }

    #[test]
    fn lz4_block_with_size_prefix() {
        let mut bytes = (TEXT.len() as u32).to_le_bytes().to_vec();
        bytes.extend(lz4_flex::block::compress(TEXT.as_bytes()));
        assert_eq!(decode_chunk(3, &bytes).as_deref(), Ok(TEXT));
        assert!(decode_chunk(3, &bytes[..3]).is_err());
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_chunk(3, &huge).is_err());
    }

    /// "ohello\noworld" as the Python modules Buildbot 4.3 uses write it
    /// (bz2, zstandard 0.23, Brotli 1.1).
    #[test]
    fn python_compressors() {
        let bz2 =
            hex("425a6839314159265359a09c43dd0000044180001006449080200021a06d210c086de07224178bb9229c2848504e21ee80");
        assert_eq!(decode_chunk(2, &bz2).as_deref(), Ok("ohello\noworld"));
        // zstandard's compressobj writes no content size; compress() does.
        for zstd in ["28b52ffd00606900006f68656c6c6f0a6f776f726c64", "28b52ffd200d6900006f68656c6c6f0a6f776f726c64"] {
            assert_eq!(decode_chunk(4, &hex(zstd)).as_deref(), Ok("ohello\noworld"));
        }
        let brotli = hex("0b06806f68656c6c6f0a6f776f726c6403");
        assert_eq!(decode_chunk(5, &brotli).as_deref(), Ok("ohello\noworld"));
    }

    #[test]
    fn refusals() {
        assert!(decode_chunk(9, b"x").unwrap_err().contains("unknown compression code 9"));
        assert!(decode_chunk(1, b"not zlib").is_err());
        assert!(decode_chunk(0, &[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        assert!(decode_chunk(2, b"BZh9 broken").is_err());
        assert!(decode_chunk(4, b"nope").is_err());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn properties() {
        assert_eq!(split_property(r#"["gh-101", "Change"]"#), Ok((serde_json::json!("gh-101"), "Change".into())));
        assert_eq!(
            split_property(r#"[{"a": [1]}, "Scheduler"]"#),
            Ok((serde_json::json!({"a": [1]}), "Scheduler".into()))
        );
        assert!(split_property("[1]").is_err());
        assert!(split_property("nope").is_err());
    }

    #[test]
    fn urls() {
        let ok = |u: &str| source_url(u).expect(u);
        assert_eq!(ok("sqlite:////var/bb/state.sqlite"), "sqlite:///var/bb/state.sqlite?mode=ro");
        assert_eq!(ok("sqlite:///state.sqlite"), "sqlite://state.sqlite?mode=ro");
        assert_eq!(ok("/var/bb/state.sqlite"), "sqlite:///var/bb/state.sqlite?mode=ro");
        assert_eq!(ok("sqlite:///x.db?mode=rwc&cache=shared"), "sqlite://x.db?mode=ro&cache=shared");
        assert_eq!(ok("postgresql+psycopg2://bb:pw@db/buildbot"), "postgres://bb:pw@db/buildbot");
        assert_eq!(ok("postgresql://db/buildbot"), "postgres://db/buildbot");
        assert!(source_url("sqlite://").is_err());
        assert!(source_url("mysql://db/bb").unwrap_err().contains("MySQL"));
        assert!(source_url("http://x").is_err());
        assert_eq!(source_key("postgresql+psycopg2://bb:secret@db/buildbot"), "postgres://bb@db/buildbot");
        assert_eq!(source_key("sqlite:////a/b.sqlite"), "sqlite:////a/b.sqlite");
    }
}
