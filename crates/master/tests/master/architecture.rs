//! `docs/architecture.md` lists, per module of this crate, the modules it
//! may use. This reads that table and the sources, and fails when the code
//! uses a module its row does not allow, when a module has no row, or when
//! the table itself has a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// module → the modules it may use, from the table.
fn table() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("../../docs/architecture.md")).expect("docs/architecture.md");
    let names = |cell: &str| -> BTreeSet<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in doc.lines() {
        if line.starts_with("| module | what it is | may use |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert_eq!(cells.len(), 3, "a row of three cells: {line}");
        let module = names(cells[0]).into_iter().next().unwrap_or_else(|| panic!("a module name: {line}"));
        rows.insert(module, names(cells[2]));
    }
    assert!(rows.len() > 10, "the table was not found");
    rows
}

/// The crate's modules named in `text` (`crate::x` and `crate::{x, y}`).
fn used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for piece in text.split("crate::").skip(1) {
        if let Some(group) = piece.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.insert(name);
            }
        } else {
            out.insert(piece.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// module → what its code (tests left out) uses.
fn sources() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let top = rel.components().next().expect("a file").as_os_str().to_string_lossy().replace(".rs", "");
            if top == "lib" || top == "main" || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let mut uses = used(code);
            uses.remove(&top);
            out.entry(top).or_default().extend(uses);
        }
    }
    out
}

#[test]
fn the_code_uses_only_what_the_architecture_table_allows() {
    let allowed = table();
    let actual = sources();
    for (module, uses) in &actual {
        let Some(may) = allowed.get(module) else { panic!("module `{module}` has no row in docs/architecture.md") };
        let extra: Vec<&String> = uses.difference(may).collect();
        assert!(extra.is_empty(), "`{module}` uses {extra:?}, which docs/architecture.md does not allow");
    }
    for module in allowed.keys() {
        assert!(actual.contains_key(module), "docs/architecture.md lists `{module}`, which is not a module");
    }
}

#[test]
fn the_architecture_table_has_no_circles() {
    let allowed = table();
    // Depth-first from every module: reaching it again is a circle.
    fn visit(m: &str, graph: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) {
        if done.contains(m) {
            return;
        }
        assert!(!path.iter().any(|p| p == m), "a circle: {} -> {m}", path.join(" -> "));
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in allowed.keys() {
        visit(m, &allowed, &mut Vec::new(), &mut done);
    }
    assert!(used("use crate::{app, events::Bus};\nlet x = crate::clock::now();").len() == 3);
}
