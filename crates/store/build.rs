//! Finds the migrations in `migrations/{sqlite,postgres}` and embeds them:
//! a file added there runs without being listed anywhere, and the build
//! fails when the two folders do not hold the same migrations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `NNNN_description.sql` → (version, description).
fn parse_name(name: &str) -> Option<(i64, String)> {
    let stem = name.strip_suffix(".sql")?;
    let (version, description) = stem.split_once('_')?;
    Some((version.parse().ok()?, description.to_string()))
}

fn scan(dir: &Path) -> BTreeMap<i64, (String, PathBuf)> {
    let mut found = BTreeMap::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql") {
            continue;
        }
        let (version, description) =
            parse_name(&name).unwrap_or_else(|| panic!("{}: name it NNNN_description.sql", entry.path().display()));
        if let Some((_, other)) = found.insert(version, (description, entry.path())) {
            panic!("two migrations numbered {version} in {}: {}", dir.display(), other.display());
        }
    }
    found
}

fn main() {
    // Read when the script runs, not when it was compiled: a target folder
    // shared by two checkouts reuses one compiled script for both.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../../migrations");
    let (sqlite_dir, postgres_dir) = (root.join("sqlite"), root.join("postgres"));
    println!("cargo:rerun-if-changed={}", sqlite_dir.display());
    println!("cargo:rerun-if-changed={}", postgres_dir.display());
    let (sqlite, postgres) = (scan(&sqlite_dir), scan(&postgres_dir));
    let names = |m: &BTreeMap<i64, (String, PathBuf)>| m.iter().map(|(v, (d, _))| (*v, d.clone())).collect::<Vec<_>>();
    assert_eq!(
        names(&sqlite),
        names(&postgres),
        "migrations/sqlite and migrations/postgres must hold the same migrations"
    );
    let mut out = String::from("/// (version, description, SQLite text, PostgreSQL text), found by build.rs.\n");
    out.push_str("pub(crate) const MIGRATIONS: &[(i64, &str, &str, &str)] = &[\n");
    for (version, (description, sqlite_path)) in &sqlite {
        let postgres_path = &postgres[version].1;
        let _ = writeln!(
            out,
            "    ({version}, {description:?}, include_str!({:?}), include_str!({:?})),",
            sqlite_path.display().to_string(),
            postgres_path.display().to_string()
        );
        println!("cargo:rerun-if-changed={}", sqlite_path.display());
        println!("cargo:rerun-if-changed={}", postgres_path.display());
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}
