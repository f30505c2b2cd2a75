//! The house rules of `src/` (the README's Layout): every module lives on a floor and names only
//! its own floor or lower ones, and no files outside `src/app/` import each other in a circle.
//!
//! The test reads the source as text: every `crate::`, `super::` and `self::` path, and every
//! `use` of a child module, resolved to the file that defines the named item (re-exports
//! followed). `mod` declarations and `pub use` re-exports are how a folder shows its rooms,
//! not dependencies, so they draw no arrow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, from the ground up. A module may name modules on its own floor or below.
const FLOORS: &[(&str, usize, &str)] = &[
    ("base", 0, "vocabulary and infrastructure"),
    ("catalogue", 1, "the catalogue file, the only place that speaks SQL"),
    ("models", 2, "weights on disk, their layouts, backbones, heads and the embedder"),
    ("jobs", 3, "what whaleid does: import, export, embed, search, eval, submit, train, synth"),
    ("cli", 4, "the command line and its benchmarks"),
    ("app", 4, "the desktop app"),
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().find(|(name, _, _)| *name == module).map(|(_, floor, _)| *floor)
}

/// The source with comments, string and character literals blanked out (same length, so that
/// nothing inside them reads as a path).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let mut end = j + 1;
            loop {
                if end >= b.len() {
                    break;
                }
                if b[end] == b'"' && b[end + 1..].iter().take(hashes).filter(|&&c| c == b'#').count() == hashes {
                    end += 1 + hashes;
                    break;
                }
                end += 1;
            }
            for &c in &b[i..end.min(b.len())] {
                blank(&mut out, c);
            }
            i = end;
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime.
            let close = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&c| c == b'\'').map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.extend(std::iter::repeat_n(b' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// A `use` that is not `pub`, or a path in the code.
    Uses,
    /// `pub use` / `pub(crate) use`: a re-export.
    ReExports,
}

/// A path as written, made absolute (from the crate root), with the name it is known by.
#[derive(Debug, Clone)]
struct Reference {
    path: Vec<String>,
    alias: Option<String>,
    kind: Kind,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Parses a use tree starting at `s` (after the leading segments were consumed into `prefix`),
/// returning the full paths and their aliases.
fn parse_tree(s: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut path = prefix;
    loop {
        while *i < s.len() && s[*i].is_whitespace() {
            *i += 1;
        }
        if *i >= s.len() {
            out.push((path, None));
            return;
        }
        if s[*i] == '{' {
            *i += 1;
            loop {
                while *i < s.len() && (s[*i].is_whitespace() || s[*i] == ',') {
                    *i += 1;
                }
                if *i >= s.len() || s[*i] == '}' {
                    *i += 1;
                    return;
                }
                parse_tree(s, i, path.clone(), out);
            }
        }
        if s[*i] == '*' {
            *i += 1;
            out.push((path, Some("*".into())));
            return;
        }
        let start = *i;
        while *i < s.len() && is_ident(s[*i]) {
            *i += 1;
        }
        if start == *i {
            out.push((path, None));
            return;
        }
        let seg: String = s[start..*i].iter().collect();
        path.push(seg);
        let rest: String = s[*i..s.len().min(*i + 3)].iter().collect();
        if rest.starts_with("::") {
            *i += 2;
            continue;
        }
        // Optional `as alias`.
        let mut j = *i;
        while j < s.len() && s[j].is_whitespace() {
            j += 1;
        }
        let mut alias = None;
        if s[j..].starts_with(&['a', 's']) && s.get(j + 2).is_some_and(|c| c.is_whitespace()) {
            j += 2;
            while j < s.len() && s[j].is_whitespace() {
                j += 1;
            }
            let a = j;
            while j < s.len() && is_ident(s[j]) {
                j += 1;
            }
            alias = Some(s[a..j].iter().collect());
            *i = j;
        }
        out.push((path, alias));
        return;
    }
}

struct SourceFile {
    /// Path relative to `src/`.
    rel: PathBuf,
    /// Its module path from the crate root.
    module: Vec<String>,
    /// Whether it is a folder's root (`mod.rs`, `lib.rs`): `self` is its own module.
    references: Vec<Reference>,
}

fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

fn module_file(src: &Path, module: &[String]) -> Option<PathBuf> {
    if module.is_empty() {
        return Some(PathBuf::from("lib.rs"));
    }
    let joined: PathBuf = module.iter().collect();
    let file = joined.with_extension("rs");
    if src.join(&file).is_file() {
        return Some(file);
    }
    let folder = joined.join("mod.rs");
    src.join(&folder).is_file().then_some(folder)
}

fn absolute_path(src: &Path, module: &[String], path: &[String]) -> Option<Vec<String>> {
    let (head, rest) = path.split_first()?;
    match head.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some(module.iter().chain(rest).cloned().collect()),
        "super" => {
            let mut base = module.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            Some(base.into_iter().chain(rest.iter().cloned()).collect())
        }
        // A child module of this one, named without `self::` (2018 paths).
        child => {
            let mut m = module.to_vec();
            m.push(child.to_string());
            module_file(src, &m).map(|_| m.into_iter().chain(rest.iter().cloned()).collect())
        }
    }
}

/// Reads every reference of one file, made absolute.
fn references(src: &Path, rel: &Path, text: &str) -> Vec<Reference> {
    let module = module_of(rel);
    let code: Vec<char> = code_only(text).chars().collect();
    let mut refs = Vec::new();
    // Inline modules (`mod tests { ... }`): their paths start from the inline module.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < code.len() {
        match code[i] {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        let at_word = i == 0 || !is_ident(code[i - 1]) && code[i - 1] != ':';
        let rest: String = code[i..code.len().min(i + 12)].iter().collect();
        if at_word && rest.starts_with("mod ") {
            let mut j = i + 4;
            let start = j;
            while j < code.len() && is_ident(code[j]) {
                j += 1;
            }
            let name: String = code[start..j].iter().collect();
            while j < code.len() && code[j].is_whitespace() {
                j += 1;
            }
            if code.get(j) == Some(&'{') {
                inline.push((name, depth));
                depth += 1;
                i = j + 1;
                continue;
            }
        }
        let module: Vec<String> = module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
        let absolute = |path: &[String]| absolute_path(src, &module, path);
        // `use` statements (pub or not).
        if at_word && rest.starts_with("use ") {
            let before: String = code[i.saturating_sub(12)..i].iter().collect();
            let before = before.trim_end();
            let kind = if before.ends_with("pub") || before.ends_with(')') { Kind::ReExports } else { Kind::Uses };
            let mut j = i + 4;
            let mut trees = Vec::new();
            parse_tree(&code, &mut j, Vec::new(), &mut trees);
            for (path, alias) in trees {
                if let Some(path) = absolute(&path) {
                    refs.push(Reference { path, alias, kind });
                }
            }
            i = j.max(i + 1);
            continue;
        }
        // Paths in the code: crate::a::b, super::a, self::a.
        let starts = ["crate::", "super::", "self::"];
        if at_word && starts.iter().any(|s| rest.starts_with(s)) {
            let mut j = i;
            let mut trees = Vec::new();
            parse_tree(&code, &mut j, Vec::new(), &mut trees);
            for (path, _) in trees {
                if let Some(path) = absolute(&path) {
                    refs.push(Reference { path, alias: None, kind: Kind::Uses });
                }
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    refs
}

fn read_tree(src: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().to_path_buf();
                let text = std::fs::read_to_string(&path).unwrap();
                let references = references(src, &rel, &text);
                files.push(SourceFile { module: module_of(&rel), rel, references });
            }
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    files
}

/// The file that defines `path`: the deepest module file on it, then through that file's
/// re-exports to the child module the item comes from.
fn defining_file(src: &Path, files: &BTreeMap<PathBuf, &SourceFile>, path: &[String], depth: usize) -> Option<PathBuf> {
    let mut file = None;
    let mut used = 0;
    for n in 0..=path.len() {
        if let Some(f) = module_file(src, &path[..n]) {
            file = Some(f);
            used = n;
        } else if n > 0 {
            break;
        }
    }
    let file = file?;
    if depth < 8
        && let Some(name) = path.get(used)
        && let Some(source) = files.get(&file)
    {
        for r in source.references.iter().filter(|r| r.kind == Kind::ReExports) {
            let known_as = r.alias.as_deref().or(r.path.last().map(String::as_str));
            if known_as == Some(name.as_str()) && r.alias.as_deref() != Some("*") {
                let mut target = r.path.clone();
                target.extend(path[used + 1..].iter().cloned());
                if let Some(deeper) = defining_file(src, files, &target, depth + 1) {
                    return Some(deeper);
                }
            }
        }
    }
    Some(file)
}

/// Circles among `nodes` (Tarjan's strongly connected components of more than one file).
fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let Some((w, _)) = s.edges.get_key_value(w) else { continue };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// Everything wrong with the tree at `src`, one line each.
fn house_rules_broken(src: &Path) -> Vec<String> {
    let files = read_tree(src);
    let by_path: BTreeMap<PathBuf, &SourceFile> = files.iter().map(|f| (f.rel.clone(), f)).collect();
    let mut broken = Vec::new();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for f in &files {
        let Some(top) = f.module.first() else { continue };
        let Some(floor) = floor_of(top) else {
            broken
                .push(format!("{}: module `{top}` is on no floor (add it to FLOORS and the README)", f.rel.display()));
            continue;
        };
        let in_app = f.rel.starts_with("app");
        for r in &f.references {
            let Some(target_top) = r.path.first() else { continue };
            if let Some(target_floor) = floor_of(target_top)
                && target_floor > floor
            {
                broken.push(format!(
                    "{} (floor {floor}, {top}) names crate::{} (floor {target_floor}, {target_top})",
                    f.rel.display(),
                    r.path.join("::")
                ));
            }
            if r.kind == Kind::Uses
                && !in_app
                && let Some(target) = defining_file(src, &by_path, &r.path, 0)
                && target != f.rel
                && !target.starts_with("app")
                && target != Path::new("lib.rs")
            {
                edges.entry(f.rel.clone()).or_default().insert(target);
            }
        }
        edges.entry(f.rel.clone()).or_default();
    }
    for circle in circles(&edges) {
        let names: Vec<String> = circle.iter().map(|p| p.display().to_string()).collect();
        broken.push(format!("circle of {} files: {}", names.len(), names.join(" -> ")));
    }
    broken.sort();
    broken.dedup();
    broken
}

#[test]
fn every_import_points_down_the_floors_and_no_files_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let broken = house_rules_broken(&src);
    assert!(broken.is_empty(), "{} house rule(s) broken:\n{}", broken.len(), broken.join("\n"));
}

#[test]
fn the_readme_names_every_floor() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let layout = readme.split("## Layout").nth(1).expect("the README has a Layout section");
    for (name, floor, _) in FLOORS {
        assert!(
            layout.contains(&format!("`{name}/`")) && layout.contains(&format!("{floor}")),
            "the README's Layout names `{name}/` on floor {floor}"
        );
    }
}

#[test]
fn the_checker_sees_an_upward_import_and_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod base;\npub mod catalogue;\npub mod jobs;\n");
    write("base/mod.rs", "mod a;\nmod b;\npub use a::A;\n// crate::jobs in a comment is no import\n");
    write("base/a.rs", "use super::b::B;\npub struct A;\nconst S: &str = \"crate::app\";\n");
    write("base/b.rs", "use crate::base::A;\npub struct B;\n");
    write("catalogue/mod.rs", "pub fn f() -> crate::jobs::Job { todo!() }\n");
    write("catalogue/x.rs", "#[cfg(test)]\nmod tests {\n    use super::*;\n}\n");
    write("jobs/mod.rs", "use crate::{base::A, catalogue};\npub struct Job;\nmod tests {\n    use super::*;\n}\n");
    let broken = house_rules_broken(src);
    assert_eq!(
        broken,
        vec![
            "catalogue/mod.rs (floor 1, catalogue) names crate::jobs::Job (floor 3, jobs)".to_string(),
            "circle of 2 files: base/a.rs -> base/b.rs".to_string(),
            "circle of 2 files: catalogue/mod.rs -> jobs/mod.rs".to_string(),
        ],
        "the re-export `base::A` resolves to base/a.rs; comments, strings and `super` in an inline test module are no imports"
    );
}
