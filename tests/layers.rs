//! The import graph of `src/` follows the documented layer order
//! (docs/ARCHITECTURE.md, "Layers"), and files import each other in no
//! circle. Read from the source text: every `crate::…` and `super::…` path
//! (in `use` lines and inline) is resolved to the file that defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer: a module may import only from lower layers
/// (or its own module). Leaves import nothing from the crate.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: small shared types and helpers.
    ("clock", 0),
    ("num", 0),
    ("lcs", 0),
    ("slot", 0),
    ("glob", 0),
    ("failpoint", 0),
    ("rlimit", 0),
    ("shutdown", 0),
    ("config", 0),
    ("proto", 0),
    ("testing", 0),
    ("metrics", 0),
    ("tls", 0),
    // Metadata in etcd; a shard replica and its storage.
    ("meta", 1),
    ("shard", 1),
    ("certs", 1),
    ("sched", 1),
    // The router's cluster client; the node's drivers.
    ("cluster", 2),
    ("node", 2),
    // RESP sessions and commands (router).
    ("resp", 3),
    // Entry points; the router serves the console, which draws what
    // `status` gathers.
    ("status", 4),
    ("devcluster", 4),
    // Scripts: the Lua layer, and the node's runner that compiles the
    // commands a script calls as the router does.
    ("script", 4),
    ("dev", 5),
    ("console", 5),
    ("router", 6),
];

type Module = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`; `src/a/mod.rs` → `[a]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("lib") if parts.len() == 1 => parts.clear(),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `crate::` or `super::` in `text`, as
/// (start, segments); a `{a, b::c}` group yields one path per item.
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(start) {
            let pos = from + at;
            from = pos + start.len();
            if text[..pos].chars().next_back().is_some_and(is_ident_char) {
                continue;
            }
            let mut segs = Vec::new();
            let mut rest = &text[from..];
            loop {
                let ident: String = rest.chars().take_while(|c| is_ident_char(*c)).collect();
                if ident.is_empty() {
                    if let Some(group) = rest.strip_prefix('{') {
                        let inner = &group[..group.find('}').unwrap_or(group.len())];
                        for item in inner.split(',') {
                            let first: String = item
                                .trim()
                                .chars()
                                .take_while(|c| is_ident_char(*c))
                                .collect();
                            let mut p = segs.clone();
                            if !first.is_empty() && first != "self" {
                                p.push(first);
                            }
                            out.push((start.to_string(), p));
                        }
                    }
                    break;
                }
                rest = &rest[ident.len()..];
                segs.push(ident);
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => {
                        out.push((start.to_string(), segs.clone()));
                        break;
                    }
                }
            }
        }
    }
    out
}

struct Graph {
    /// File module → the file modules it imports from.
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut modules: BTreeMap<Module, (PathBuf, bool)> = BTreeMap::new();
    for f in &files {
        if let Some(m) = module_of(&src, f) {
            let dir_like = f.ends_with("mod.rs") || f.ends_with("lib.rs");
            modules.insert(m, (f.clone(), dir_like));
        }
    }
    let resolve = |path: &[String]| -> Option<Module> {
        // `crate::proto` is generated code inside lib.rs: a leaf of its own.
        if path.first().map(String::as_str) == Some("proto") {
            return Some(vec!["proto".into()]);
        }
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains_key(m))
    };
    let mut edges = BTreeMap::new();
    for (m, (file, dir_like)) in &modules {
        // Production code only: a file's `#[cfg(test)]` module comes last,
        // and its `super::` means the file itself.
        let raw = std::fs::read_to_string(file).unwrap();
        let code = raw.split("#[cfg(test)]").next().unwrap_or("");
        let text: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        // `super` of a file `a/b.rs` is `a`; of `a/mod.rs`, the parent of `a`.
        let parent: Module = if *dir_like {
            m[..m.len().saturating_sub(1)].to_vec()
        } else {
            m[..m.len() - 1].to_vec()
        };
        let mut to = BTreeSet::new();
        for (kind, segs) in paths(&text) {
            let mut full = if kind == "crate::" {
                Vec::new()
            } else {
                parent.clone()
            };
            full.extend(segs);
            if let Some(t) = resolve(&full) {
                if &t != m {
                    to.insert(t);
                }
            }
        }
        edges.insert(m.clone(), to);
    }
    Graph { edges }
}

fn layer(top: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == top).map(|(_, l)| *l)
}

#[test]
fn imports_point_down_the_layer_order() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &g.edges {
        let Some(src_top) = from.first() else {
            continue; // lib.rs declares the modules
        };
        let src_layer = layer(src_top)
            .unwrap_or_else(|| panic!("module {src_top} has no layer in LAYERS: add it"));
        for to in tos {
            let Some(dst_top) = to.first() else {
                wrong.push(format!("{} imports from the crate root", from.join("::")));
                continue;
            };
            if dst_top == src_top {
                continue;
            }
            let dst_layer = layer(dst_top)
                .unwrap_or_else(|| panic!("module {dst_top} has no layer in LAYERS: add it"));
            if dst_layer >= src_layer {
                wrong.push(format!(
                    "{} (layer {src_layer}) imports {} (layer {dst_layer})",
                    from.join("::"),
                    to.join("::")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order (docs/ARCHITECTURE.md, \"Layers\"):\n{}",
        wrong.join("\n")
    );
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Module) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

#[test]
fn files_import_each_other_in_no_circle() {
    let g = graph();
    let found = cycles(&g.edges);
    assert!(
        found.is_empty(),
        "files that import each other in a circle: {found:?}"
    );
}

#[test]
fn the_checker_sees_imports_and_circles() {
    let p = paths("use crate::shard::{host::Host, self};\nlet x = super::y::Z;");
    assert!(p.contains(&("crate::".into(), vec!["shard".into(), "host".into()])));
    assert!(p.contains(&("crate::".into(), vec!["shard".into()])));
    assert!(p.contains(&("super::".into(), vec!["y".into(), "Z".into()])));
    let m = |s: &str| vec![s.to_string()];
    let edges = BTreeMap::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("a"), m("c")])),
        (m("c"), BTreeSet::new()),
    ]);
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".to_string()]]);
}
