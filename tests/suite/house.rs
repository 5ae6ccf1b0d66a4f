//! The rules of the house (issue 26; docs/ARCHITECTURE.md §8) as tests over the source tree:
//! no cycle among the top-level modules of `src/`, `config` takes nothing from the request path,
//! background services take what they use rather than the whole `Runtime`, no source file over
//! 700 lines, no function over 120, every `ARCHITECTURE §N` the code cites exists, and the
//! README's layout names paths that exist.
//!
//! Each rule is a ratchet: its `KNOWN` list holds the offenders of the day it was written. A new
//! offender, or a known one that grew, fails; so does a known one that is gone (delete its line),
//! so the lists only shrink until the restructuring empties them.
//!
//! The source is read with a small lexer that blanks comments, string and char literals and
//! leaves `#[cfg(test)]` items out, so what is checked is the code that ships.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 120;

/// The request path, which the config model must not depend on (ARCHITECTURE §8.1).
const REQUEST_PATH: &[&str] = &["auth", "policy", "tls", "ratelimit", "routing", "upstream", "proxy"];
/// What `config` may use: leaves that import nothing of the crate. `jose` is the byte parser
/// shared by `-t` and the verifier, `normalize` the path normalisation that route paths are
/// checked with and requests are routed on.
const CONFIG_MAY_USE: &[&str] = &["jose", "normalize"];
/// The modules that may hold the whole `Runtime`: itself, the assembly, the operator's view and
/// the `ProxyHttp` glue. Everything else receives what it uses.
const MAY_HOLD_RUNTIME: &[&str] = &["runtime", "app", "admin", "status", "proxy"];

// ---------------------------------------------------------------------------------------------
// The checks

#[test]
fn no_cycle_among_top_level_modules() {
    // Today's cycle (modgraph.py src agrees); issue 26 cuts it.
    const KNOWN: &[&str] = &[];
    let tree = Tree::read();
    let edges = tree.edges();
    let graph = graph_of(&edges);
    let cycles = strongly_connected(&tree.modules, &graph);
    let mut found = BTreeMap::new();
    let mut report = String::new();
    for cycle in &cycles {
        let _ = writeln!(report, "cycle of {} modules: {}", cycle.len(), cycle.join(" "));
        // The edges inside the cycle that touch a module new to it: one of them is to cut.
        let new = |m: &String| !KNOWN.contains(&m.as_str());
        for e in edges.iter().filter(|e| cycle.contains(&e.from) && cycle.contains(&e.to)) {
            if new(&e.from) || new(&e.to) {
                let _ = writeln!(report, "    {} → {}   {}:{}", e.from, e.to, e.file, e.line);
            }
        }
        for m in cycle {
            found.insert(m.clone(), format!("in the cycle {}", cycle.join(" ")));
        }
    }
    ratchet("modules in a cycle", KNOWN, &found, &report);
}

#[test]
fn config_imports_nothing_from_the_request_path() {
    // config's imports today beyond `jose`; issue 26 makes config plain data.
    const KNOWN: &[&str] = &[];
    let tree = Tree::read();
    let mut found = BTreeMap::new();
    let mut report = String::new();
    for e in tree.edges().iter().filter(|e| e.from == "config" && !CONFIG_MAY_USE.contains(&e.to.as_str())) {
        let path = if REQUEST_PATH.contains(&e.to.as_str()) { " (request path)" } else { "" };
        found.entry(e.to.clone()).or_insert_with(|| format!("config uses {}{path}", e.to));
        if !KNOWN.contains(&e.to.as_str()) {
            let _ = writeln!(report, "    config → {}   {}:{}", e.to, e.file, e.line);
        }
    }
    ratchet("modules config imports (it may use only jose)", KNOWN, &found, &report);
}

#[test]
fn background_services_take_what_they_use() {
    // Files outside runtime/app/admin/status/proxy that reach for `crate::runtime` today.
    const KNOWN: &[&str] = &[];
    let tree = Tree::read();
    let mut found = BTreeMap::new();
    let mut report = String::new();
    for e in tree.edges().iter().filter(|e| e.to == "runtime" && !MAY_HOLD_RUNTIME.contains(&e.from.as_str())) {
        found.entry(e.file.clone()).or_insert_with(|| format!("{} uses crate::runtime", e.from));
        if !KNOWN.contains(&e.file.as_str()) {
            let _ = writeln!(report, "    {} → runtime   {}:{}", e.from, e.file, e.line);
        }
    }
    ratchet("files that take the runtime", KNOWN, &found, &report);
}

#[test]
fn no_source_file_over_700_lines() {
    // Lines without test items, today.
    const KNOWN: &[(&str, usize)] = &[];
    let tree = Tree::read_all();
    let found: BTreeMap<String, usize> =
        tree.files.iter().map(|f| (f.rel.clone(), f.lines())).filter(|(_, lines)| *lines > MAX_FILE_LINES).collect();
    ratchet_sizes("source files over 700 lines (test items aside)", "lines", KNOWN, &found);
}

#[test]
fn no_function_over_120_lines() {
    const KNOWN: &[(&str, usize)] = &[];
    let tree = Tree::read_all();
    let mut found = BTreeMap::new();
    for file in &tree.files {
        for f in functions(&file.tokens) {
            if f.lines > MAX_FN_LINES {
                let key = format!("{} {}", file.rel, f.name);
                let len = found.entry(key).or_insert(0);
                *len = f.lines.max(*len);
            }
        }
    }
    ratchet_sizes("functions over 120 lines (tests and fuzz targets aside)", "lines", KNOWN, &found);
}

#[test]
fn cited_architecture_sections_exist() {
    const KNOWN: &[&str] = &[];
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let sections = Sections::parse(&doc);
    let mut found = BTreeMap::new();
    let mut report = String::new();
    for (file, line, text) in citing_lines() {
        let missing: Vec<Cite> = citations(&text).into_iter().filter(|c| !sections.has(c)).collect();
        if !missing.is_empty() {
            let _ = writeln!(report, "    {file}:{line}: {}", text.trim());
        }
        for cite in missing {
            found.entry(cite.to_string()).or_insert_with(|| format!("cited at {file}:{line}"));
        }
    }
    ratchet("sections cited but missing from docs/ARCHITECTURE.md", KNOWN, &found, &report);
}

#[test]
fn readme_layout_names_existing_paths() {
    const KNOWN: &[&str] = &[];
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let paths = layout_paths(&readme);
    assert!(paths.len() > 10, "README's Layout section not found or empty: {paths:?}");
    let found: BTreeMap<String, String> = paths
        .into_iter()
        .filter(|p| !root().join(p).exists())
        .map(|p| (p, "named in README.md's Layout, not in the tree".to_string()))
        .collect();
    ratchet("paths in README's Layout that do not exist", KNOWN, &found, "");
}

#[test]
fn readme_layout_names_every_top_level_module() {
    const KNOWN: &[&str] = &[];
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let named: BTreeSet<String> =
        layout_paths(&readme).into_iter().map(|p| p.trim_end_matches('/').to_string()).collect();
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("src")).expect("src/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
        // lib.rs declares the modules and fuzz.rs holds property tests: neither is a room.
        if name == "lib.rs" || name == "fuzz.rs" || !(path.is_dir() || name.ends_with(".rs")) {
            continue;
        }
        let rel = format!("src/{name}");
        if !named.iter().any(|n| *n == rel || n.starts_with(&format!("{rel}/"))) {
            found.insert(rel, "in src/, not in README.md's Layout".to_string());
        }
    }
    ratchet("top-level modules missing from README's Layout", KNOWN, &found, "");
}

// ---------------------------------------------------------------------------------------------
// Ratchets

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Fails on an offender not in `known` and on a known one that is gone, printing both lists
/// and the evidence in `report`.
fn ratchet(rule: &str, known: &[&str], found: &BTreeMap<String, String>, report: &str) {
    if let Err(message) = compare(rule, known, found, report) {
        panic!("{message}");
    }
}

fn compare(rule: &str, known: &[&str], found: &BTreeMap<String, String>, report: &str) -> Result<(), String> {
    let new: Vec<_> = found.iter().filter(|(k, _)| !known.contains(&k.as_str())).collect();
    let gone: Vec<_> = known.iter().filter(|k| !found.contains_key(**k)).collect();
    if new.is_empty() && gone.is_empty() {
        return Ok(());
    }
    let mut m = format!("{rule}:\n");
    for (k, why) in &new {
        let _ = writeln!(m, "  NEW   {k}: {why}");
    }
    for k in &gone {
        let _ = writeln!(m, "  GONE  {k}: no longer an offender; delete its line from KNOWN");
    }
    if !new.is_empty() && !report.is_empty() {
        let _ = write!(m, "evidence:\n{report}");
    }
    Err(m)
}

/// As [`ratchet`] for measured offenders: a known one may shrink, never grow.
fn ratchet_sizes(rule: &str, unit: &str, known: &[(&str, usize)], found: &BTreeMap<String, usize>) {
    if let Err(message) = compare_sizes(rule, unit, known, found) {
        panic!("{message}");
    }
}

fn compare_sizes(
    rule: &str,
    unit: &str,
    known: &[(&str, usize)],
    found: &BTreeMap<String, usize>,
) -> Result<(), String> {
    let mut m = String::new();
    for (k, size) in found {
        match known.iter().find(|(name, _)| name == k) {
            None => {
                let _ = writeln!(m, "  NEW   {k}: {size} {unit}");
            }
            Some((_, was)) if size > was => {
                let _ = writeln!(m, "  GREW  {k}: {size} {unit}, was {was}");
            }
            Some(_) => {}
        }
    }
    for (k, was) in known.iter().filter(|(k, _)| !found.contains_key(*k)) {
        let _ = writeln!(m, "  GONE  {k} (was {was} {unit}): within the bar now; delete its line from KNOWN");
    }
    if m.is_empty() {
        Ok(())
    } else {
        Err(format!("{rule}:\n{m}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The source tree

/// One `.rs` file of `src/`, read and blanked, its test items left out.
struct SourceFile {
    /// Path from the package root, `/`-separated (`src/auth/jwt.rs`).
    rel: String,
    /// The module path of the file (`["auth", "jwt"]`; empty for the crate roots and binaries).
    module: Vec<String>,
    tokens: Vec<Token>,
    total_lines: usize,
    test_lines: usize,
}

impl SourceFile {
    fn lines(&self) -> usize {
        self.total_lines - self.test_lines
    }
}

struct Tree {
    /// Top-level modules declared in `src/lib.rs` outside test items.
    modules: BTreeSet<String>,
    files: Vec<SourceFile>,
}

impl Tree {
    /// The library's files (what the module graph is made of).
    fn read() -> Tree {
        let mut tree = Tree::read_all();
        tree.files.retain(|f| !f.module.is_empty());
        tree
    }

    /// Every non-test source file, binaries and crate roots included.
    fn read_all() -> Tree {
        let src = root().join("src");
        let mut paths = Vec::new();
        walk(&src, &mut paths);
        paths.sort();
        let mut files = Vec::new();
        let mut test_files: Vec<PathBuf> = Vec::new();
        let mut modules = BTreeSet::new();
        for path in &paths {
            let rel = path.strip_prefix(root()).unwrap().to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(path).unwrap();
            let code = Code::of(&text);
            for name in &code.test_mods {
                test_files.extend(child_module_paths(path, name));
            }
            if rel == "src/lib.rs" {
                modules = declared_modules(&code.tokens);
            }
            let module = module_path(&rel);
            let total_lines = text.lines().count();
            files.push(SourceFile { rel, module, tokens: code.tokens, total_lines, test_lines: code.test_lines });
        }
        files.retain(|f| {
            let p = root().join(&f.rel);
            !test_files.iter().any(|t| p == *t || (t.extension().is_none() && p.starts_with(t)))
        });
        Tree { modules, files }
    }

    /// Every reference from one top-level module to another.
    fn edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for file in &self.files {
            let from = &file.module[0];
            for (to, line) in references(&file.tokens, file.module.len()) {
                if self.modules.contains(&to) && &to != from {
                    edges.push(Edge { from: from.clone(), to, file: file.rel.clone(), line });
                }
            }
        }
        edges
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/auth/jwt.rs` → `[auth, jwt]`, `src/auth/mod.rs` → `[auth]`; crate roots and
/// `src/bin/*` belong to no module of the library.
fn module_path(rel: &str) -> Vec<String> {
    let inner = rel.strip_prefix("src/").unwrap_or(rel);
    if inner == "lib.rs" || inner == "main.rs" || inner.starts_with("bin/") {
        return Vec::new();
    }
    let mut parts: Vec<String> = inner.trim_end_matches(".rs").split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Where `mod name;` in `file` lives: `name.rs` or `name/` beside a `mod.rs`/`lib.rs`, else in
/// the folder named after the file. A folder is returned without extension (all under it).
fn child_module_paths(file: &Path, name: &str) -> Vec<PathBuf> {
    let stem = file.file_stem().unwrap().to_string_lossy();
    let parent = file.parent().unwrap();
    let dir = if stem == "mod" || stem == "lib" || stem == "main" { parent.to_path_buf() } else { parent.join(&*stem) };
    vec![dir.join(format!("{name}.rs")), dir.join(name)]
}

/// `mod x;` declarations at the top of `lib.rs`.
fn declared_modules(tokens: &[Token]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for i in 0..tokens.len().saturating_sub(2) {
        if tokens[i].is("mod") && tokens[i + 1].is_ident() && tokens[i + 2].is(";") {
            out.insert(tokens[i + 1].text.clone());
        }
    }
    out
}

struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

fn graph_of(edges: &[Edge]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in edges {
        graph.entry(e.from.clone()).or_default().insert(e.to.clone());
    }
    graph
}

// ---------------------------------------------------------------------------------------------
// The lexer

/// `text` with comments, string literals and char literals turned into spaces (line breaks
/// kept), so positions and line numbers stay those of the source.
fn blank(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        let end = match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n),
            b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i),
            b'"' => string_end(b, i + 1),
            b'\'' => match char_literal_end(b, i) {
                Some(end) => end,
                None => {
                    i += 1; // a lifetime or a label
                    continue;
                }
            },
            b'b' if b.get(i + 1) == Some(&b'\'') && (i == 0 || !is_ident(b[i - 1])) => {
                char_literal_end(b, i + 1).unwrap_or(i + 1) // `b'x'`
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                if let Some(end) = prefixed_literal_end(b, i) {
                    end
                } else {
                    i += b[i..].iter().position(|&c| !is_ident(c)).unwrap_or(b.len() - i);
                    continue;
                }
            }
            c if c.is_ascii_digit() => {
                i += b[i..].iter().position(|&c| !is_ident(c)).unwrap_or(b.len() - i);
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        for c in &mut out[i..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        i = end;
    }
    String::from_utf8(out).expect("blanking keeps UTF-8: whole literals become spaces")
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// End (exclusive) of a `/* … */` comment starting at `start`; they nest.
fn block_comment_end(b: &[u8], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// End (exclusive) of a string whose contents start at `from` (after the opening quote).
fn string_end(b: &[u8], mut from: usize) -> usize {
    while from < b.len() {
        match b[from] {
            b'\\' => from += 2,
            b'"' => return from + 1,
            _ => from += 1,
        }
    }
    b.len()
}

/// A char or byte literal at `start` (`'x'`, `'\n'`, `'\''`, `'\u{1F600}'`, `'é'`), or `None`
/// for a lifetime or label (`'a`, `'static`, `'outer:`).
fn char_literal_end(b: &[u8], start: usize) -> Option<usize> {
    let next = *b.get(start + 1)?;
    if next == b'\\' {
        let close = b[start + 3..].iter().position(|&c| c == b'\'')?;
        return Some(start + 3 + close + 1);
    }
    let width = match next {
        c if c < 0x80 => 1,
        c if c >= 0xF0 => 4,
        c if c >= 0xE0 => 3,
        _ => 2,
    };
    (b.get(start + 1 + width) == Some(&b'\'')).then_some(start + 2 + width)
}

/// A literal with a prefix at the start of an identifier: `b"…"`, `c"…"`, `r"…"`, `r#"…"#`,
/// `br##"…"##`, `cr"…"` (end exclusive); `None` for an identifier (including `r#type`).
fn prefixed_literal_end(b: &[u8], start: usize) -> Option<usize> {
    if start > 0 && is_ident(b[start - 1]) {
        return None;
    }
    let mut i = start;
    if matches!(b[i], b'b' | b'c') {
        i += 1;
        if b.get(i) == Some(&b'"') {
            return Some(string_end(b, i + 1));
        }
    }
    if b.get(i) != Some(&b'r') {
        return None;
    }
    i += 1;
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    i += hashes;
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'"' && b[j + 1..].iter().take(hashes).filter(|&&c| c == b'#').count() == hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(b.len())
}

/// One token of blanked code: an identifier (`r#` dropped), `::`, or one punctuation char.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    line: usize,
}

impl Token {
    fn is(&self, s: &str) -> bool {
        self.text == s
    }

    fn is_ident(&self) -> bool {
        self.text.bytes().next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
    }
}

fn tokenize(code: &str) -> Vec<Token> {
    let b = code.as_bytes();
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() || !c.is_ascii() {
            i += 1;
        } else if c.is_ascii_digit() {
            i += b[i..].iter().position(|&c| !is_ident(c)).unwrap_or(b.len() - i);
        } else if is_ident(c) {
            let mut start = i;
            if b[i..].starts_with(b"r#") && b.get(i + 2).is_some_and(|&c| is_ident(c)) {
                start += 2;
            }
            let len = b[start..].iter().position(|&c| !is_ident(c)).unwrap_or(b.len() - start);
            out.push(Token { text: code[start..start + len].to_string(), line });
            i = start + len;
        } else if b[i..].starts_with(b"::") {
            out.push(Token { text: "::".into(), line });
            i += 2;
        } else {
            out.push(Token { text: (c as char).to_string(), line });
            i += 1;
        }
    }
    out
}

/// A file's code: its tokens without the `#[cfg(test)]` items, how many lines those took, and
/// the modules declared `#[cfg(test)] mod x;` (whole files of tests).
struct Code {
    tokens: Vec<Token>,
    test_lines: usize,
    test_mods: Vec<String>,
}

impl Code {
    fn of(text: &str) -> Code {
        let all = tokenize(&blank(text));
        let (mut tokens, mut test_lines, mut test_mods) = (Vec::new(), 0, Vec::new());
        let mut i = 0;
        while i < all.len() {
            if is_cfg_test(&all, i) {
                if all[i + 1].is("!") {
                    // `#![cfg(test)]`: the whole file is a test.
                    return Code { tokens: Vec::new(), test_lines: text.lines().count(), test_mods };
                }
                let end = item_end(&all, i);
                let item = &all[i..end];
                if let Some(pos) = item.iter().position(|t| t.is("mod")) {
                    if item.get(pos + 2).is_some_and(|t| t.is(";")) {
                        test_mods.push(item[pos + 1].text.clone());
                    }
                }
                test_lines += item.last().map_or(0, |t| t.line) - all[i].line + 1;
                i = end;
            } else {
                tokens.push(all[i].clone());
                i += 1;
            }
        }
        Code { tokens, test_lines, test_mods }
    }
}

/// `#[cfg(test)]` or `#![cfg(test)]` at `i`.
fn is_cfg_test(t: &[Token], i: usize) -> bool {
    let texts =
        |from: usize, n: usize| t.get(from..from + n).map(|s| s.iter().map(|t| t.text.as_str()).collect::<Vec<_>>());
    t[i].is("#")
        && (texts(i + 1, 6) == Some(vec!["[", "cfg", "(", "test", ")", "]"])
            || texts(i + 1, 7) == Some(vec!["!", "[", "cfg", "(", "test", ")", "]"]))
}

/// End (exclusive) of the item whose attributes start at `start`: past its `;` or its closing
/// `}` at depth 0, or before a closing bracket of the enclosing item.
fn item_end(t: &[Token], start: usize) -> usize {
    let mut i = start;
    // the attributes
    while t.get(i).is_some_and(|t| t.is("#")) && t.get(i + 1).is_some_and(|t| t.is("[")) {
        i = matching(t, i + 1) + 1;
    }
    let mut depth = 0usize;
    while i < t.len() {
        match t[i].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" if depth == 0 => return i,
            ")" | "]" => depth -= 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            ";" if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    t.len()
}

/// Index of the bracket that closes the one at `open`.
fn matching(t: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, tok) in t.iter().enumerate().skip(open) {
        match tok.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    t.len() - 1
}

// ---------------------------------------------------------------------------------------------
// References between modules

/// The top-level modules a file names, with the line: the first segment of every `crate::x`
/// path, every item of a `use crate::{a, b::{…}}` group, and `super::x` paths that climb to the
/// crate root from a file `depth` modules deep (inline `mod x { … }` blocks add a level).
fn references(t: &[Token], depth: usize) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut braces = 0usize;
    let mut inline_mods: Vec<usize> = Vec::new();
    for i in 0..t.len() {
        match t[i].text.as_str() {
            "{" => braces += 1,
            "}" => {
                braces = braces.saturating_sub(1);
                while inline_mods.last().is_some_and(|&d| d > braces) {
                    inline_mods.pop();
                }
            }
            "mod" if t.get(i + 1).is_some_and(Token::is_ident) && t.get(i + 2).is_some_and(|t| t.is("{")) => {
                inline_mods.push(braces + 1);
            }
            "crate" if t.get(i + 1).is_some_and(|t| t.is("::")) && !(i > 0 && t[i - 1].is("::")) => {
                path_heads(t, i + 2, &mut out);
            }
            "super" if !(i > 0 && t[i - 1].is("::")) => {
                let mut j = i;
                let mut climbs = 0;
                while t.get(j).is_some_and(|t| t.is("super")) && t.get(j + 1).is_some_and(|t| t.is("::")) {
                    climbs += 1;
                    j += 2;
                }
                if climbs == depth + inline_mods.len() {
                    path_heads(t, j, &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

/// The first segment of the path at `at`: one identifier, or each item of a `{…}` group.
fn path_heads(t: &[Token], at: usize, out: &mut Vec<(String, usize)>) {
    let Some(head) = t.get(at) else { return };
    if head.is_ident() {
        out.push((head.text.clone(), head.line));
        return;
    }
    if !head.is("{") {
        return;
    }
    let end = matching(t, at);
    let mut depth = 0;
    let mut item_start = true;
    for tok in &t[at..end] {
        match tok.text.as_str() {
            "{" | "(" | "[" => depth += 1,
            "}" | ")" | "]" => depth -= 1,
            "," if depth == 1 => item_start = true,
            _ if depth == 1 && item_start => {
                item_start = false;
                if tok.is_ident() && !tok.is("self") {
                    out.push((tok.text.clone(), tok.line));
                }
            }
            _ => {}
        }
    }
}

/// Tarjan's strongly connected components with more than one module, each sorted.
fn strongly_connected(nodes: &BTreeSet<String>, graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

// ---------------------------------------------------------------------------------------------
// Functions

struct Function {
    /// `name`, or `Type::name` inside an `impl` or `trait` block.
    name: String,
    /// From the `fn` line to the closing brace, both included.
    lines: usize,
}

/// Every function with a body; closures and nested items count to the function around them
/// (and nested functions are measured on their own too).
fn functions(t: &[Token]) -> Vec<Function> {
    let mut out = Vec::new();
    let mut braces = 0usize;
    let mut blocks: Vec<(usize, String)> = Vec::new(); // (brace depth inside, type name)
    let mut pending_block: Option<String> = None;
    for i in 0..t.len() {
        match t[i].text.as_str() {
            "{" => {
                braces += 1;
                if let Some(name) = pending_block.take() {
                    blocks.push((braces, name));
                }
            }
            "}" => {
                if blocks.last().is_some_and(|(d, _)| *d == braces) {
                    blocks.pop();
                }
                braces = braces.saturating_sub(1);
            }
            "impl" if i == 0 || matches!(t[i - 1].text.as_str(), "}" | ";" | "{" | "]" | "unsafe" | "default") => {
                pending_block = Some(impl_type(t, i + 1));
            }
            "trait" if t.get(i + 1).is_some_and(Token::is_ident) => pending_block = Some(t[i + 1].text.clone()),
            "fn" if t.get(i + 1).is_some_and(Token::is_ident) => {
                if let Some(open) = body_start(t, i + 2) {
                    let close = matching(t, open);
                    let name = match blocks.last() {
                        Some((_, ty)) => format!("{ty}::{}", t[i + 1].text),
                        None => t[i + 1].text.clone(),
                    };
                    out.push(Function { name, lines: t[close].line - t[i].line + 1 });
                }
            }
            _ => {}
        }
    }
    out
}

/// The type an `impl` block is for: the last identifier outside angle brackets before `{` or
/// `where` (`impl<T> Trait for Type<T>` → `Type`).
fn impl_type(t: &[Token], from: usize) -> String {
    let (mut angle, mut name) = (0i32, String::new());
    let mut i = from;
    while let Some(tok) = t.get(i) {
        match tok.text.as_str() {
            "{" | "where" | ";" => break,
            "-" if t.get(i + 1).is_some_and(|t| t.is(">")) => i += 1, // `->`
            "<" => angle += 1,
            ">" => angle -= 1,
            _ if angle == 0 && tok.is_ident() && !tok.is("for") && !tok.is("dyn") => name = tok.text.clone(),
            _ => {}
        }
        i += 1;
    }
    name
}

/// The `{` opening a function's body: the first brace outside parentheses and brackets, unless
/// a `;` comes first (a declaration without a body).
fn body_start(t: &[Token], from: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, tok) in t.iter().enumerate().skip(from) {
        match tok.text.as_str() {
            "(" | "[" => depth += 1,
            ")" | "]" => depth -= 1,
            "{" if depth == 0 => return Some(i),
            ";" if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Citations of docs/ARCHITECTURE.md

/// A cited section: a number (`7.3`) and perhaps the name of a subsection (`§6 "Auth"`).
#[derive(Debug, PartialEq, Eq)]
struct Cite {
    number: String,
    name: Option<String>,
}

impl std::fmt::Display for Cite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "§{} \"{name}\"", self.number),
            None => write!(f, "§{}", self.number),
        }
    }
}

/// The sections cited on one line: `ARCHITECTURE[.md] §N[.M] ["Name" | Name]` and lists
/// of them (`§4, §6 Jobs`).
fn citations(line: &str) -> Vec<Cite> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("ARCHITECTURE") {
        rest = &rest[at + "ARCHITECTURE".len()..];
        let mut s = rest.strip_prefix(".md").unwrap_or(rest).trim_start();
        while let Some(after) = s.strip_prefix('§') {
            let len = after.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(after.len());
            let number = after[..len].trim_end_matches('.').to_string();
            if number.is_empty() {
                break;
            }
            s = &after[len..];
            let mut name = None;
            if let Some(quoted) = s.strip_prefix(" \"") {
                if let Some(close) = quoted.find('"') {
                    name = Some(quoted[..close].to_string());
                    s = &quoted[close + 1..];
                }
            } else if let Some(word) = s.strip_prefix(' ').filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase())) {
                let len = word.find(|c: char| !c.is_alphanumeric()).unwrap_or(word.len());
                name = Some(word[..len].to_string());
                s = &word[len..];
            }
            out.push(Cite { number, name });
            match s.strip_prefix(", ") {
                Some(next) if next.starts_with('§') => s = next,
                _ => break,
            }
        }
    }
    out
}

/// The numbered sections of docs/ARCHITECTURE.md (`## 6. …`, `### 7.3 …`) and the named
/// subsections under each (`### Auth` under `## 6.`).
struct Sections {
    numbers: BTreeSet<String>,
    named: BTreeSet<(String, String)>,
}

impl Sections {
    fn parse(doc: &str) -> Sections {
        let mut s = Sections { numbers: BTreeSet::new(), named: BTreeSet::new() };
        let mut current = String::new();
        let mut in_fence = false;
        for line in doc.lines() {
            if line.starts_with("```") {
                in_fence = !in_fence;
            }
            let Some(title) = line.strip_prefix('#').filter(|_| !in_fence) else { continue };
            let title = title.trim_start_matches('#').trim();
            let len = title.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(title.len());
            let number = title[..len].trim_end_matches('.');
            if !number.is_empty() && title[len..].starts_with(' ') {
                s.numbers.insert(number.to_string());
                current = number.split('.').next().unwrap_or(number).to_string();
            } else if !current.is_empty() {
                s.named.insert((current.clone(), title.to_string()));
            }
        }
        s
    }

    fn has(&self, cite: &Cite) -> bool {
        match &cite.name {
            None => self.numbers.contains(&cite.number),
            Some(name) => self.named.iter().any(|(n, title)| *n == cite.number && title.contains(name.as_str())),
        }
    }
}

/// Every line of the repository's own text that mentions ARCHITECTURE (the document itself and
/// this file aside): (path, line number, text).
fn citing_lines() -> Vec<(String, usize, String)> {
    let mut paths = Vec::new();
    for dir in ["src", "tests", "load-tests", "docs", "scripts"] {
        walk_text(&root().join(dir), &mut paths);
    }
    paths.push(root().join("README.md"));
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let rel = path.strip_prefix(root()).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "docs/ARCHITECTURE.md" || rel == "tests/suite/house.rs" || rel.starts_with("tests/fixtures/") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for (n, line) in text.lines().enumerate() {
            if line.contains("ARCHITECTURE") {
                out.push((rel.clone(), n + 1, line.to_string()));
            }
        }
    }
    out
}

fn walk_text(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk_text(&path, out);
        } else {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// README's layout

/// The paths README.md's "Layout" block names: the first column (`src/main.rs, cli.rs` means
/// `src/main.rs` and `src/cli.rs`) and any `src/…` path in the descriptions.
fn layout_paths(readme: &str) -> Vec<String> {
    let Some(start) = readme.find("\n## Layout") else { return Vec::new() };
    let section = &readme[start + 1..];
    let Some(open) = section.find("```") else { return Vec::new() };
    let block = &section[open + 3..];
    let block = &block[block.find('\n').map_or(0, |n| n + 1)..];
    let block = &block[..block.find("```").unwrap_or(block.len())];
    const ROOTS: &[&str] = &["src/", "tests/", "docs/", "scripts/", "load-tests/", "systemd/", "packaging/", "conf/"];
    let mut out = Vec::new();
    for line in block.lines() {
        let mut words = line.split_whitespace();
        let mut dir = String::new();
        // The first column: `path` or `path, name, …` (names beside the first path's folder);
        // an indented line continues the description above.
        while let Some(word) = words.next().filter(|_| !line.starts_with(' ')) {
            let name = word.trim_end_matches(',');
            if name.contains('/') {
                dir = name[..name.trim_end_matches('/').rfind('/').map_or(0, |n| n + 1)].to_string();
                out.push(name.to_string());
            } else {
                out.push(format!("{dir}{name}"));
            }
            if !word.ends_with(',') {
                break;
            }
        }
        let description: Vec<&str> = words.collect();
        for word in description.join(" ").split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')')) {
            let word = word.trim_end_matches([':', '.']);
            if ROOTS.iter().any(|r| word.starts_with(r)) && !word.contains('*') {
                out.push(word.to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests of the readers above

#[cfg(test)]
mod readers {
    use super::*;

    fn idents(code: &str) -> Vec<String> {
        Code::of(code).tokens.into_iter().filter(Token::is_ident).map(|t| t.text).collect()
    }

    fn refs(code: &str, depth: usize) -> Vec<String> {
        references(&Code::of(code).tokens, depth).into_iter().map(|(m, _)| m).collect()
    }

    #[test]
    fn blanking_keeps_lines_and_hides_comments_strings_and_chars() {
        let src = "let a = \"crate::x \\\" }\"; // crate::y\n/* outer /* crate::z */ still */ b\n\
                   let c = r#\"say \"crate::w\" {\"#; let d = b\"{\"; let e = br##\"\"#\"##;\n\
                   let f = '{'; let g = '\\''; let h = '\\u{7b}'; let i = 'é'; let j = b'\"';\n\
                   fn k<'a>(x: &'a str) -> &'static str { 'outer: loop { break 'outer; } }";
        let blanked = blank(src);
        assert_eq!(blanked.lines().count(), src.lines().count());
        assert_eq!(blanked.len(), src.len());
        assert!(!blanked.contains("crate"), "{blanked}");
        assert!(!blanked.contains('"'), "{blanked}");
        assert_eq!(blanked.matches('{').count(), 2, "only the fn body and the loop's brace: {blanked}");
        assert_eq!(
            idents(src),
            [
                "let", "a", "b", "let", "c", "let", "d", "let", "e", "let", "f", "let", "g", "let", "h", "let", "i",
                "let", "j", "fn", "k", "a", "x", "a", "str", "static", "str", "outer", "loop", "break", "outer"
            ]
        );
    }

    #[test]
    fn raw_identifiers_are_identifiers() {
        assert_eq!(idents("let r#type = r#match; br;"), ["let", "type", "match", "br"]);
    }

    #[test]
    fn test_items_are_left_out_and_counted() {
        let src = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n#[cfg(test)]\n#[allow(unused)]\nfn only_in_tests() {\n    crate::c::f();\n}\n#[cfg(test)]\nmod fuzz;\nfn real() { crate::d::g() }\n";
        let code = Code::of(src);
        assert_eq!(refs(src, 1), ["a", "d"]);
        assert_eq!(code.test_mods, ["fuzz"]);
        assert_eq!(code.test_lines, 4 + 5 + 2);
        assert_eq!(Code::of("#![cfg(test)]\nuse crate::a;\n").tokens.len(), 0);
    }

    #[test]
    fn references_cover_paths_groups_and_super() {
        let src = "use crate::{a, b::{c, d}, self};\npub(in crate::e) fn f() { crate::g::h(); x::crate_y(); }\n\
                   use super::i; use super::super::{j, k::l};\nconst S: &str = \"crate::m\";\nmacro_rules! n { () => { $crate::o::p } }";
        // From a top-level file (`src/x.rs`, depth 1) `super::` is the crate root.
        assert_eq!(refs(src, 1), ["a", "b", "e", "g", "i", "o"]);
        // From `src/x/y.rs` (depth 2) it takes `super::super::`.
        assert_eq!(refs(src, 2), ["a", "b", "e", "g", "j", "k", "o"]);
        // Inside an inline module one more `super` is needed.
        assert_eq!(refs("mod inner { use super::super::q; }\nuse super::r;", 1), ["q", "r"]);
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let nodes: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
            graph.entry(from.into()).or_default().insert(to.into());
        }
        assert_eq!(strongly_connected(&nodes, &graph), [["a", "b", "c"]]);
        graph.entry("e".into()).or_default().insert("d".into());
        assert_eq!(strongly_connected(&nodes, &graph).len(), 2);
    }

    #[test]
    fn functions_are_measured_from_fn_to_closing_brace() {
        let src = "fn one() {\n    let s = \"}\";\n}\ntrait T {\n    fn declared(&self);\n    fn provided(&self) {\n    }\n}\n\
                   impl<F: Fn() -> u8> T for Holder<F>\nwhere\n    F: Send,\n{\n    fn provided(&self) {\n        let f = |x: u8| {\n            x\n        };\n    }\n}\n\
                   fn takes(p: fn(u8) -> u8, q: impl Fn()) -> [u8; 2] {\n    [p(1), 2]\n}\n";
        let found: Vec<(String, usize)> =
            functions(&Code::of(src).tokens).into_iter().map(|f| (f.name, f.lines)).collect();
        assert_eq!(
            found,
            [("one".into(), 3), ("T::provided".into(), 2), ("Holder::provided".into(), 5), ("takes".into(), 3)]
        );
    }

    #[test]
    fn citations_are_read_with_their_names() {
        let c = |n: &str, name: Option<&str>| Cite { number: n.into(), name: name.map(String::from) };
        assert_eq!(citations("//! Jobs (ARCHITECTURE.md §4, §6 Jobs)."), [c("4", None), c("6", Some("Jobs"))]);
        assert_eq!(citations("(ARCHITECTURE.md §6 \"Rate limits\"): the"), [c("6", Some("Rate limits"))]);
        assert_eq!(citations("ARCHITECTURE §3's example; ARCHITECTURE.md §7.6): x"), [c("3", None), c("7.6", None)]);
        assert_eq!(citations("(names are contract, ARCHITECTURE.md §5, §7). Label"), [c("5", None), c("7", None)]);
        assert_eq!(citations("./usr/share/doc/siger/ARCHITECTURE.md\","), []);
    }

    #[test]
    fn sections_are_numbered_headings_and_their_subsections() {
        let doc = "# Title\n## 1. Journey\n```\n## 9. not a heading\n```\n## 6. Details\n### Rate limits\n### `siger token`\n## 7. Edge\n### 7.3 Resilience\n";
        let s = Sections::parse(doc);
        let c = |n: &str, name: Option<&str>| Cite { number: n.into(), name: name.map(String::from) };
        assert!(s.has(&c("1", None)) && s.has(&c("7.3", None)) && s.has(&c("6", Some("Rate limits"))));
        assert!(s.has(&c("6", Some("`siger token`"))));
        assert!(!s.has(&c("9", None)) && !s.has(&c("7", Some("Rate limits"))) && !s.has(&c("7.4", None)));
    }

    #[test]
    fn layout_names_resolve_against_the_first_path() {
        let readme = "x\n## Layout\n\n```\nsrc/main.rs, cli.rs       CLI\nsrc/runtime.rs, reload.rs the state\nsrc/trace/                spans; src/status.rs: the page\ntests/                    tests (scripts/test)\n                          JSON too\n```\n";
        assert_eq!(
            layout_paths(readme),
            [
                "src/main.rs",
                "src/cli.rs",
                "src/runtime.rs",
                "src/reload.rs",
                "src/trace/",
                "src/status.rs",
                "tests/",
                "scripts/test"
            ]
        );
    }

    #[test]
    fn ratchets_fail_on_new_grown_and_gone_offenders() {
        let found: BTreeMap<String, String> = [("a".to_string(), "why".to_string())].into();
        assert!(compare("r", &["a"], &found, "").is_ok());
        assert!(compare("r", &[], &found, "").unwrap_err().contains("NEW   a"));
        assert!(compare("r", &["a", "b"], &found, "").unwrap_err().contains("GONE  b"));
        let sizes: BTreeMap<String, usize> = [("f".to_string(), 130)].into();
        assert!(compare_sizes("r", "lines", &[("f", 130)], &sizes).is_ok());
        assert!(compare_sizes("r", "lines", &[("f", 140)], &sizes).is_ok(), "shrinking is fine");
        assert!(compare_sizes("r", "lines", &[("f", 125)], &sizes)
            .unwrap_err()
            .contains("GREW  f: 130 lines, was 125"));
        assert!(compare_sizes("r", "lines", &[("f", 130), ("g", 200)], &sizes).unwrap_err().contains("GONE  g"));
    }
}
