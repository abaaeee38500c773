//! The top-level modules import each other without a cycle (STYLE §2:
//! layers only import downward), nor do the files inside any module, and
//! every file says its one job in its first line. `main.rs`, `lib.rs` and `serve.rs` (the
//! server composed of its parts) are the composition roots and may import
//! anything; every other file under
//! `src/` belongs to the top-level module of its first path component.
//!
//! An import is any path that starts with `crate::` (in `use` or inline),
//! or with `super::` climbing out of its top-level module; comments and
//! string literals are skipped. Read from the source text, so the test
//! needs no compiler internals and runs in milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Imports that close a cycle today and are left out of the graph: (from
/// module, path after `crate::` it starts with, why and what removes it).
/// The test fails when one of them no longer matches any import, so a
/// fixed one is also taken off this list.
const ALLOWED: &[(&str, &str, &str)] = &[];

/// The bottom layer: modules that import nothing from the crate but what
/// is listed (STYLE §2), so every other layer can use them.
const LEAVES: &[(&str, &[&str])] =
    &[("name", &[]), ("metrics", &[]), ("rules", &["name"]), ("wire", &["name"]), ("sys", &[]), ("keys", &[]), ("dnssec", &[])];

/// The composition roots: they import everything, nothing imports them.
const ROOTS: &[&str] = &["main.rs", "lib.rs", "serve.rs"];

/// One import: where it is and what it names (the path after `crate::`).
#[derive(Debug, Clone)]
struct Import {
    site: String,
    path: String,
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    assert!(modules.contains("rules") && modules.contains("policy"), "not the qalqan source tree: {modules:?}");
    let mut edges: BTreeMap<(String, String), Vec<Import>> = BTreeMap::new();
    let mut used_exceptions = BTreeSet::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap_or(&file);
        let Some((top, depth)) = module_of(rel) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, path) in crate_paths(&text, depth) {
            let target = path.split("::").next().unwrap_or_default().to_owned();
            if target == top {
                continue;
            }
            if !modules.contains(&target) {
                // an item of lib.rs (`crate::App`): the roots import
                // everything, so no module may import them
                panic!("src/{}:{line}: `crate::{path}` imports from the crate root", rel.display());
            }
            if let Some(i) = ALLOWED.iter().position(|(from, prefix, _)| *from == top && path.starts_with(prefix)) {
                used_exceptions.insert(i);
                continue;
            }
            let site = format!("src/{}:{line}", rel.display());
            edges.entry((top.clone(), target)).or_default().push(Import { site, path });
        }
    }
    for (i, (from, prefix, _)) in ALLOWED.iter().enumerate() {
        assert!(used_exceptions.contains(&i), "ALLOWED ({from}, {prefix}) matches no import any more: remove it");
    }
    for (leaf, may) in LEAVES {
        for ((from, to), imports) in &edges {
            assert!(
                from != leaf || may.contains(&to.as_str()),
                "{leaf} is a leaf, but imports {to}: {}",
                imports.iter().map(|i| format!("{} crate::{}", i.site, i.path)).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let graph: BTreeMap<&str, BTreeSet<&str>> = modules
        .iter()
        .map(|m| {
            let out = edges.keys().filter(|(f, _)| f == m).map(|(_, t)| t.as_str()).collect();
            (m.as_str(), out)
        })
        .collect();
    let mut report = String::new();
    for scc in cycles(&graph) {
        report.push_str(&format!("cycle between {}:\n", scc.iter().copied().collect::<Vec<_>>().join(", ")));
        for ((from, to), imports) in &edges {
            if scc.contains(from.as_str()) && scc.contains(to.as_str()) {
                report.push_str(&format!("  {from} -> {to}:\n"));
                for imp in imports.iter().take(4) {
                    report.push_str(&format!("    {} crate::{}\n", imp.site, imp.path));
                }
                if imports.len() > 4 {
                    report.push_str(&format!("    … and {} more\n", imports.len() - 4));
                }
            }
        }
    }
    assert!(report.is_empty(), "top-level modules import each other in a cycle:\n{report}");
}

/// Inside each module, its files import one another in one direction
/// (STYLE §2, one job per file): no two sibling files, nor a longer ring of
/// them, import each other. A sibling is a file `d/x.rs` or a folder `d/x/`
/// of the same folder `d/`; an import is a `crate::` or `super::` path that
/// names it (resolved against the importing file's module, inline `mod
/// tests` included). Items of `d/mod.rs` itself are the module's face and
/// are not a sibling: a file may use what its `mod.rs` defines.
#[test]
fn files_inside_a_module_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut folders: BTreeMap<Vec<String>, Siblings> = BTreeMap::new();
    let files = rust_files(&src);
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap_or(file);
        let Some(module) = module_path(rel) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        // every folder above this file, and the sibling of it the file is in
        for cut in 0..module.len() {
            let (folder, node) = (&module[..cut], &module[cut]);
            let children = folders.entry(folder.to_vec()).or_default();
            children.entry(node.clone()).or_default();
            for (line, path) in resolved_paths(&text, &module) {
                let Some(target) = path.get(cut).filter(|_| path.starts_with(folder)) else { continue };
                if target != node && sibling_exists(&src, folder, target) {
                    let site = format!("src/{}:{line} {}", rel.display(), path.join("::"));
                    children.entry(node.clone()).or_default().entry(target.clone()).or_default().push(site);
                }
            }
        }
    }
    let mut report = String::new();
    for (folder, children) in &folders {
        let graph: BTreeMap<&str, BTreeSet<&str>> =
            children.iter().map(|(n, out)| (n.as_str(), out.keys().map(String::as_str).collect())).collect();
        let shown = if folder.is_empty() { "src".to_owned() } else { format!("src/{}", folder.join("/")) };
        for scc in cycles(&graph) {
            report.push_str(&format!("files of {shown} import each other: {}\n", scc.iter().copied().collect::<Vec<_>>().join(", ")));
            for (from, out) in children.iter().filter(|(n, _)| scc.contains(n.as_str())) {
                for (to, sites) in out.iter().filter(|(t, _)| scc.contains(t.as_str())) {
                    report.push_str(&format!("  {from} -> {to}: {}\n", sites.iter().take(3).cloned().collect::<Vec<_>>().join("; ")));
                }
            }
        }
    }
    // the top level is `top_level_modules_form_no_cycle`'s (the roots import everything)
    assert!(report.is_empty(), "{report}");
    assert!(folders.get(&vec!["resolve".to_owned(), "forward".to_owned()]).is_some_and(|c| c.len() > 3), "folders not found: {:?}", folders.keys());
}

/// The files and folders of one folder: each, with the siblings it imports
/// and where (`src/FILE:LINE path`).
type Siblings = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Every file under `src/` opens with a `//!` line saying what it is for,
/// so that a newcomer can tell a file's one job from its first line.
#[test]
fn every_file_says_its_job_in_its_first_line() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for file in rust_files(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().next().unwrap_or("");
        let job = first.strip_prefix("//!").map(str::trim).unwrap_or("");
        if job.split_whitespace().count() < 3 {
            missing.push(format!("{}: `{first}`", file.strip_prefix(&src).unwrap_or(&file).display()));
        }
    }
    assert!(missing.is_empty(), "files whose first line is not a `//!` saying their job:\n{}", missing.join("\n"));
}

/// The module path of a file (relative to `src/`): `lists/parse/rpz.rs` →
/// `[lists, parse, rpz]`, `lists/mod.rs` → `[lists]`; `None` for the roots.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel.iter().filter_map(|c| c.to_str()).map(str::to_owned).collect();
    if parts.len() == 1 && ROOTS.contains(&parts[0].as_str()) {
        return None;
    }
    let last = parts.pop()?;
    if last != "mod.rs" {
        parts.push(last.strip_suffix(".rs").unwrap_or(&last).to_owned());
    }
    Some(parts)
}

/// Whether `folder` (a module path) has a file or subfolder `name`.
fn sibling_exists(src: &Path, folder: &[String], name: &str) -> bool {
    let dir = folder.iter().fold(src.to_path_buf(), |d, s| d.join(s));
    name != "mod" && (dir.join(format!("{name}.rs")).is_file() || dir.join(name).is_dir())
}

/// Every `crate::` and `super::` path in `text` (the file of `module`), as
/// (line, absolute module path: every segment, groups expanded).
fn resolved_paths(text: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let toks = tokens(text);
    let mut out = Vec::new();
    // (name, brace depth) of every open inline `mod x {`
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut braces = 0usize;
    let mut i = 0;
    while let Some((line, tok)) = toks.get(i) {
        let after_path = i > 0 && matches!(toks.get(i - 1), Some((_, Tok::Path)));
        match tok {
            Tok::Open => {
                braces += 1;
                if let (Some((_, Tok::Ident(name))), Some((_, Tok::Ident(m)))) = (i.checked_sub(1).and_then(|k| toks.get(k)), i.checked_sub(2).and_then(|k| toks.get(k))) {
                    if m == "mod" {
                        inline.push((name.clone(), braces));
                    }
                }
            }
            Tok::Close => {
                if inline.last().is_some_and(|(_, b)| *b == braces) {
                    inline.pop();
                }
                braces = braces.saturating_sub(1);
            }
            Tok::Ident(w) if (w == "crate" || w == "super") && !after_path && matches!(toks.get(i + 1), Some((_, Tok::Path))) => {
                let mut base: Vec<String> = module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
                let mut j = i;
                if w == "crate" {
                    base.clear();
                    j += 2;
                } else {
                    while matches!(toks.get(j), Some((_, Tok::Ident(s))) if s == "super") && matches!(toks.get(j + 1), Some((_, Tok::Path))) {
                        base.pop();
                        j += 2;
                    }
                }
                let mut paths = Vec::new();
                let next = expand_tree(&toks, j, &base, &mut paths);
                out.extend(paths.into_iter().map(|p| (*line, p)));
                i = next.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Expands the path (or `{…}` group) at `toks[at]` below `prefix` into
/// `out`; returns the index after it. `self` in a group names the prefix.
fn expand_tree(toks: &[(usize, Tok)], at: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    let mut j = at;
    loop {
        match toks.get(j) {
            Some((_, Tok::Open)) => {
                j += 1;
                loop {
                    match toks.get(j) {
                        Some((_, Tok::Close)) => return j + 1,
                        Some((_, Tok::Comma)) => j += 1,
                        Some((_, Tok::Ident(_) | Tok::Open)) => {
                            let next = expand_tree(toks, j, &path, out);
                            // skip what is left of the item (`as x`)
                            j = next;
                            while let Some((_, t)) = toks.get(j) {
                                if matches!(t, Tok::Comma | Tok::Close) {
                                    break;
                                }
                                j += 1;
                            }
                        }
                        Some(_) => j += 1, // `*`
                        None => return j,
                    }
                }
            }
            Some((_, Tok::Ident(w))) => {
                if w != "self" {
                    path.push(w.clone());
                }
                j += 1;
                if matches!(toks.get(j), Some((_, Tok::Path))) {
                    j += 1;
                    continue;
                }
                out.push(path);
                return j;
            }
            _ => {
                out.push(path);
                return j;
            }
        }
    }
}

/// The reader itself, on the shapes that occur in `src/`.
#[test]
fn import_reader_cases() {
    let cases: &[(&str, &str, usize, &[&str])] = &[
        ("use line", "use crate::policy::Policy;", 1, &["policy::Policy"]),
        ("group", "use crate::{name::QName, rules};", 1, &["name::QName", "rules"]),
        ("inline path", "fn f(x: &crate::rules::Rule) {}", 1, &["rules::Rule"]),
        ("nested group keeps the prefix", "use crate::lists::{parse::Entry, x};", 1, &["lists::{…}"]),
        ("visibility is no path", "pub(crate) fn f() {}", 1, &[]),
        ("comment", "// crate::lists::x\n/* crate::admin */ fn f() {}", 1, &[]),
        ("doc link", "/// see [`crate::diag::serve`]\nfn f() {}", 1, &[]),
        ("string", "let s = \"crate::lists\"; let r = r#\"crate::admin\"#;", 1, &[]),
        ("char literal quote", "let q = '\"'; let p = crate::name::x();", 1, &["name::x"]),
        ("lifetime", "fn f<'a>(x: &'a str) -> crate::name::QName {}", 1, &["name::QName"]),
        ("super inside the module", "use super::index::Hit;", 2, &[]),
        ("super out of a top-level file", "use super::policy::Policy;", 1, &["policy::Policy"]),
        ("super in a test module", "mod tests { use super::*; }", 1, &[]),
        ("super super out", "mod tests { use super::super::metrics::M; }", 1, &["metrics::M"]),
    ];
    for (name, text, depth, want) in cases {
        let got: Vec<String> = crate_paths(text, *depth).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, *want, "case `{name}`");
    }
}

/// The resolver of the file-level test, on the shapes that occur in `src/`.
#[test]
fn resolved_path_cases() {
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("sibling", "resolve::forward::pool", "use super::sock::{PoolSock, Waiter};", &["resolve::forward::sock::PoolSock", "resolve::forward::sock::Waiter"]),
        ("parent item", "resolve::forward::pool", "use super::{matching_reply, Forwarder};", &["resolve::forward::matching_reply", "resolve::forward::Forwarder"]),
        ("nested group", "lists::publish", "use crate::lists::{parse::{Entry, rpz}, state as files};", &["lists::parse::Entry", "lists::parse::rpz", "lists::state"]),
        ("self in a group", "server::fast::run", "use super::gate::{self, take};", &["server::fast::gate", "server::fast::gate::take"]),
        ("test module", "policy::index", "mod tests { use super::*; use super::super::hit::Hit; }", &["policy::index", "policy::hit::Hit"]),
        ("inline path", "server::fast::run", "fn f() { crate::sys::outbox::batch(|| ()) }", &["sys::outbox::batch"]),
    ];
    for (name, module, text, want) in cases {
        let got: Vec<String> = resolved_paths(text, &m(module)).into_iter().map(|(_, p)| p.join("::")).collect();
        assert_eq!(got, *want, "case `{name}`");
    }
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level modules: every `src/X.rs` and `src/X/` but the roots.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_owned();
            if p.is_dir() {
                return Some(name);
            }
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .filter(|m| m != "main" && m != "lib")
        .collect()
}

/// The top-level module of a file (path relative to `src/`) and how deep
/// the file's own module is (`name.rs`, `lists/mod.rs`: 1;
/// `lists/parse/rpz.rs`: 3); `None` for the roots.
fn module_of(rel: &Path) -> Option<(String, usize)> {
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let first = *parts.first()?;
    if parts.len() == 1 && ROOTS.contains(&first) {
        return None;
    }
    let top = first.strip_suffix(".rs").unwrap_or(first).to_owned();
    let depth = if parts.last() == Some(&"mod.rs") { parts.len() - 1 } else { parts.len() };
    Some((top, depth))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Open,
    Close,
    Comma,
    Other,
}

/// The crate paths in `text` (a file whose module is `depth` deep), as
/// (line, path after `crate::`); `super::` paths that stay inside the
/// top-level module are not imports and are left out.
fn crate_paths(text: &str, depth: usize) -> Vec<(usize, String)> {
    let toks = tokens(text);
    let mut out = Vec::new();
    // brace depth of every open inline `mod x {`
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let mut i = 0;
    while let Some((line, tok)) = toks.get(i) {
        let after_path = i > 0 && matches!(toks.get(i - 1), Some((_, Tok::Path)));
        match tok {
            Tok::Open => {
                braces += 1;
                let is_mod = i >= 2
                    && matches!(toks.get(i - 1), Some((_, Tok::Ident(_))))
                    && matches!(toks.get(i - 2), Some((_, Tok::Ident(m))) if m == "mod");
                if is_mod {
                    inline_mods.push(braces);
                }
            }
            Tok::Close => {
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
                braces = braces.saturating_sub(1);
            }
            Tok::Ident(w) if w == "crate" && !after_path && matches!(toks.get(i + 1), Some((_, Tok::Path))) => {
                out.extend(path_tree(&toks, i + 2).into_iter().map(|p| (*line, p)));
            }
            Tok::Ident(w) if w == "super" && !after_path => {
                let mut k = 0;
                let mut j = i;
                while matches!(toks.get(j), Some((_, Tok::Ident(s))) if s == "super")
                    && matches!(toks.get(j + 1), Some((_, Tok::Path)))
                {
                    k += 1;
                    j += 2;
                }
                if k > 0 && k >= depth + inline_mods.len() {
                    out.extend(path_tree(&toks, j).into_iter().map(|p| (*line, p)));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The paths named from `toks[at]` on, just after `crate::`: one for a
/// plain path, one per item for a `{…}` group. A group below the first
/// segment yields the prefix up to it (enough to name the module).
fn path_tree(toks: &[(usize, Tok)], at: usize) -> Vec<String> {
    match toks.get(at) {
        Some((_, Tok::Open)) => {
            let mut out = Vec::new();
            let mut j = at + 1;
            loop {
                match toks.get(j) {
                    Some((_, Tok::Ident(_))) => {
                        let (p, next) = simple_path(toks, j);
                        out.push(p);
                        j = next;
                        // skip the rest of this item (a nested group, `as x`)
                        let mut level = 0usize;
                        while let Some((_, t)) = toks.get(j) {
                            match t {
                                Tok::Open => level += 1,
                                Tok::Close if level == 0 => break,
                                Tok::Close => level -= 1,
                                Tok::Comma if level == 0 => break,
                                _ => {}
                            }
                            j += 1;
                        }
                    }
                    Some((_, Tok::Comma)) => j += 1,
                    _ => break,
                }
            }
            out
        }
        Some((_, Tok::Ident(_))) => vec![simple_path(toks, at).0],
        _ => Vec::new(),
    }
}

/// `a::b::C` from `toks[at]` (`a::b::{…}` when a group follows), and the
/// index after it.
fn simple_path(toks: &[(usize, Tok)], at: usize) -> (String, usize) {
    let mut s = String::new();
    let mut j = at;
    while let Some((_, Tok::Ident(w))) = toks.get(j) {
        s.push_str(w);
        j += 1;
        if matches!(toks.get(j), Some((_, Tok::Path))) {
            s.push_str("::");
            j += 1;
        } else {
            break;
        }
    }
    if s.ends_with("::") && matches!(toks.get(j), Some((_, Tok::Open))) {
        s.push_str("{…}");
    }
    (s, j)
}

/// Tokens of `text` with their 1-based lines; comments, strings and char
/// literals dropped.
fn tokens(text: &str) -> Vec<(usize, Tok)> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| b.get(i).copied().unwrap_or('\0');
    while i < b.len() {
        let c = b[i];
        let ident_before = i > 0 && (at(i - 1).is_alphanumeric() || at(i - 1) == '_');
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if at(i + 1) == '/' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut level = 0;
                while i < b.len() {
                    if at(i) == '/' && at(i + 1) == '*' {
                        level += 1;
                        i += 2;
                    } else if at(i) == '*' && at(i + 1) == '/' {
                        level -= 1;
                        i += 2;
                        if level == 0 {
                            break;
                        }
                    } else {
                        if b[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            // raw strings: r"…", r#"…"#, br#"…"#
            'r' | 'b' if !ident_before && raw_string_quote(&b, i).is_some() => {
                let (mut j, hashes) = raw_string_quote(&b, i).unwrap_or((i, 0));
                j += 1;
                while j < b.len() {
                    if b[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#') {
                        j += hashes;
                        break;
                    }
                    if b[j] == '\n' {
                        line += 1;
                    }
                    j += 1;
                }
                i = j + 1;
            }
            '"' => {
                i += 1;
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    if at(i) == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                if at(i + 1) == '\\' {
                    // '\n', '\'', '\u{…}'
                    i += 2;
                    while i < b.len() && b[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3; // 'x'
                } else {
                    i += 1; // a lifetime or label
                }
            }
            ':' if at(i + 1) == ':' => {
                out.push((line, Tok::Path));
                i += 2;
            }
            '{' => {
                out.push((line, Tok::Open));
                i += 1;
            }
            '}' => {
                out.push((line, Tok::Close));
                i += 1;
            }
            ',' => {
                out.push((line, Tok::Comma));
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let (w, next) = ident(&b, i);
                out.push((line, Tok::Ident(w)));
                i = next;
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                out.push((line, Tok::Other));
                i += 1;
            }
        }
    }
    out
}

/// If a raw string starts at `b[i]`: the index of its opening quote and
/// its number of `#`s.
fn raw_string_quote(b: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = match (b.get(i), b.get(i + 1)) {
        (Some('r'), _) => i + 1,
        (Some('b'), Some('r')) => i + 2,
        _ => return None,
    };
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some((j, hashes))
}

fn ident(b: &[char], from: usize) -> (String, usize) {
    let mut j = from;
    while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
        j += 1;
    }
    (b[from..j].iter().collect(), j)
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<BTreeSet<&'a str>> {
    struct State<'a, 'g> {
        graph: &'g BTreeMap<&'a str, BTreeSet<&'a str>>,
        next: usize,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<&'a str>>,
    }
    fn visit<'a>(s: &mut State<'a, '_>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let succ: Vec<&'a str> = s.graph.get(v).map(|o| o.iter().copied().collect()).unwrap_or_default();
        for w in succ {
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
            let mut scc = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.insert(w);
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        graph,
        next: 0,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}
