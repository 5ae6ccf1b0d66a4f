//! The document model of a fleet's configuration: a bootstrap file (the keys of
//! [`BOOTSTRAP_KEYS`], read from each host's disk) and a stored document (every other key, one
//! YAML text per revision), split from one whole file and merged back into one.
//!
//! Merging is by text, never by re-serialising a tree: the stored document comes first, the
//! bootstrap file after it, so every line of the document keeps its number and a problem found
//! in the merged text is reported against the revision (or file) and line it came from. Both
//! parts must be block mappings at column 0 whose keys do not overlap; comments and layout stay
//! as they were written, so `siger config diff` shows what the operator wrote.

use crate::config::{Config, ConfigError, ConfigErrors, ConfigSourceSettings, BOOTSTRAP_KEYS, MAX_CONFIG_BYTES};
use std::fmt;
use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where a document's text came from, as error messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file on this host.
    File(PathBuf),
    /// A revision of the stored document.
    Revision {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The revision.
        revision: u64,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Revision { bucket, key, revision } => write!(f, "{bucket}/{key} revision {revision}"),
        }
    }
}

/// A top-level key of a YAML mapping and where it is written (1-based line, 0-based column).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopKey {
    key: String,
    line: usize,
    col: usize,
}

/// What the scan of one YAML text found.
#[derive(Debug, Default)]
struct Scanned {
    keys: Vec<TopKey>,
    documents: usize,
    /// The root node is something other than a mapping (a list, a scalar).
    root_not_a_mapping: bool,
    /// A key that is itself a mapping or list (`? [a]: b`).
    complex_key: Option<usize>,
}

#[derive(Default)]
struct KeyScanner {
    out: Scanned,
    depth: usize,
    root_seen: bool,
    expect_key: bool,
}

impl KeyScanner {
    /// A node starting at depth 1 (inside the root mapping) is a key or a value, in turn.
    fn node(&mut self, scalar: Option<&str>, mark: Marker) {
        if self.depth != 1 || self.out.root_not_a_mapping {
            return;
        }
        if self.expect_key {
            match scalar {
                Some(key) => self.out.keys.push(TopKey { key: key.to_string(), line: mark.line(), col: mark.col() }),
                None => self.out.complex_key = self.out.complex_key.or(Some(mark.line())),
            }
            self.expect_key = false;
        } else if scalar.is_some() {
            self.expect_key = true;
        }
    }
}

impl MarkedEventReceiver for KeyScanner {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => self.out.documents += 1,
            Event::Scalar(value, ..) if self.depth == 0 => {
                // A document holding only `~` or nothing is empty, not a scalar.
                self.root_seen = true;
                self.out.root_not_a_mapping |= !(value.is_empty() || value == "~" || value == "null");
            }
            Event::Scalar(value, ..) => self.node(Some(&value), mark),
            Event::Alias(_) => self.node(Some("*"), mark),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.depth == 0 {
                    self.root_seen = true;
                    self.out.root_not_a_mapping |= matches!(ev, Event::SequenceStart(..));
                    self.expect_key = true;
                } else {
                    self.node(None, mark);
                }
                self.depth += 1;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 {
                    self.expect_key = true;
                }
            }
            _ => {}
        }
    }
}

/// The top-level keys of `text`, or the one error that makes it unusable as a part.
fn scan(text: &str) -> Result<Scanned, ConfigError> {
    let mut scanner = KeyScanner::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut scanner, true) {
        return Err(ConfigError {
            path: String::new(),
            line: Some(e.marker().line()),
            message: format!("not valid YAML: {}", e.info()),
        });
    }
    let out = scanner.out;
    let whole = |message: String, line: Option<usize>| ConfigError { path: String::new(), line, message };
    if out.documents > 1 {
        return Err(whole(format!("holds {} YAML documents; one is expected", out.documents), None));
    }
    if out.root_not_a_mapping {
        return Err(whole("is not a mapping of keys (`key: value` lines)".into(), Some(1)));
    }
    if let Some(line) = out.complex_key {
        return Err(whole("a top-level key must be a plain name".into(), Some(line)));
    }
    if let Some(k) = out.keys.iter().find(|k| k.col != 0) {
        return Err(ConfigError {
            path: k.key.clone(),
            line: Some(k.line),
            message: "top-level keys must start their line (a block mapping, not `{…}`)".into(),
        });
    }
    Ok(out)
}

/// `text` made ready for joining: document markers (`---`, `...`) and directives (`%YAML`) on
/// lines of their own become empty lines (so line numbers stay), and it ends with a newline.
fn joinable(text: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len() + 1);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        let bare = content.split(" #").next().unwrap_or_default().trim_end();
        if bare == "---" || bare == "..." || content.starts_with('%') {
            out.push_str(&line[content.len()..]);
        } else if content.starts_with("--- ") || content.starts_with("---\t") {
            return Err(ConfigError {
                path: String::new(),
                line: Some(i + 1),
                message: "begin the document on the line after `---`".into(),
            });
        } else {
            out.push_str(line);
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

fn errors(origin: &Origin, errors: Vec<ConfigError>) -> ConfigErrors {
    ConfigErrors { file: origin.to_string(), errors }
}

/// The lines of each top-level entry: from its key (with the comment lines directly above it)
/// to the line before the next entry's first line; `None` for the lines before the first key.
/// Keys are 1-based lines from [`scan`], in file order.
fn spans(text: &str, keys: &[TopKey]) -> Vec<(Option<String>, String)> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut starts: Vec<usize> = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let mut start = k.line - 1;
        // Comments above the first key are the file's header; above any other, its own.
        let floor = if i == 0 { start } else { keys[i - 1].line };
        while start > floor && lines.get(start - 1).is_some_and(|l| l.starts_with('#')) {
            start -= 1;
        }
        starts.push(start);
    }
    let mut out = vec![(None, lines[..starts.first().copied().unwrap_or(lines.len())].concat())];
    for (i, k) in keys.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(lines.len());
        out.push((Some(k.key.clone()), lines[starts[i]..end].concat()));
    }
    out
}

/// A whole configuration file cut into what stays on the host and what goes to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The bootstrap keys (and the comments before the first key).
    pub bootstrap: String,
    /// Every other key: the document to push.
    pub document: String,
}

/// Cut a whole configuration file (as `-t` reads it) into the bootstrap file and the stored
/// document, each top-level entry with the comment lines directly above it.
pub fn split(text: &str, origin: &Origin) -> Result<Split, ConfigErrors> {
    let scanned = scan(text).map_err(|e| errors(origin, vec![e]))?;
    let mut out = Split { bootstrap: String::new(), document: String::new() };
    for (key, lines) in spans(text, &scanned.keys) {
        let to_bootstrap = key.as_deref().is_none_or(|k| BOOTSTRAP_KEYS.contains(&k));
        let part = if to_bootstrap { &mut out.bootstrap } else { &mut out.document };
        part.push_str(&lines);
        if !part.is_empty() && !part.ends_with('\n') {
            part.push('\n');
        }
    }
    if out.document.trim().is_empty() {
        let message = "holds no key for the store (only server, listen, admin, nats, config_source)";
        return Err(errors(origin, vec![ConfigError { path: String::new(), line: None, message: message.into() }]));
    }
    Ok(out)
}

/// A gateway's bootstrap file: the text a document is merged with, and its `config_source`.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Where it was read from.
    pub path: PathBuf,
    /// The directory relative file names in the configuration resolve against.
    pub base: PathBuf,
    /// Its text, ready to follow a document.
    text: String,
    /// `config_source`, when the file has one.
    pub source: Option<ConfigSourceSettings>,
}

impl Bootstrap {
    /// Read and check a bootstrap file: only [`BOOTSTRAP_KEYS`] at its top level, and a
    /// `config_source` that parses. Problems name the key and line.
    pub fn read(path: &Path) -> Result<Bootstrap, ConfigErrors> {
        let origin = Origin::File(path.to_path_buf());
        let whole = |message: String| errors(&origin, vec![ConfigError { path: String::new(), line: None, message }]);
        let size = std::fs::metadata(path).map_err(|e| whole(format!("cannot read the file: {e}")))?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(whole(format!("the file has {size} bytes; a config may have at most 4MiB")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read the file: {e}")))?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = absolute.parent().unwrap_or_else(|| Path::new("/")).to_path_buf();
        Self::parse(&text, path, base)
    }

    /// [`Bootstrap::read`] on text already read.
    pub fn parse(text: &str, path: &Path, base: PathBuf) -> Result<Bootstrap, ConfigErrors> {
        let origin = Origin::File(path.to_path_buf());
        let scanned = scan(text).map_err(|e| errors(&origin, vec![e]))?;
        let joinable = joinable(text).map_err(|e| errors(&origin, vec![e]))?;
        let mut problems = Vec::new();
        for k in scanned.keys.iter().filter(|k| !BOOTSTRAP_KEYS.contains(&k.key.as_str())) {
            problems.push(ConfigError {
                path: k.key.clone(),
                line: Some(k.line),
                message: "belongs in the store when `config_source` is set: the bootstrap file keeps only \
                          server, listen, admin, nats and config_source (`siger config split` separates a file)"
                    .into(),
            });
        }
        let source = match parse_source(text) {
            Ok(source) => source,
            Err((key, message)) => {
                let line = crate::config::LineIndex::build(text).line_of(&key);
                problems.push(ConfigError { path: key, line, message });
                None
            }
        };
        if let Some(source) = &source {
            let lines = crate::config::LineIndex::build(text);
            for (key, message) in source.problems() {
                problems.push(ConfigError { line: lines.line_of(&key), path: key, message });
            }
        }
        if !problems.is_empty() {
            problems.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            return Err(errors(&origin, problems));
        }
        // `config_source` is not a key of the configuration schema yet (the loader learns it
        // when the store is wired in): its lines are left out of the text that is checked,
        // as empty lines so that the numbers stay.
        let text = match scanned.keys.iter().position(|k| k.key == "config_source") {
            Some(i) => {
                let first = scanned.keys[i].line;
                let next = scanned.keys.get(i + 1).map_or(usize::MAX, |k| k.line);
                blank_lines(&joinable, first, next)
            }
            None => joinable,
        };
        Ok(Bootstrap { path: path.to_path_buf(), base, text, source })
    }

    /// The bootstrap file alone, checked as a configuration (its listeners, admin, nats).
    pub fn alone(&self) -> Result<Checked, Vec<ConfigErrors>> {
        self.as_merged().check()
    }

    /// The bootstrap file alone, as a configuration text to check (a gateway that has no
    /// revision yet serves it: listeners, admin, no routes).
    pub(crate) fn as_merged(&self) -> Merged {
        let own = Origin::File(self.path.clone());
        Merged {
            text: self.text.clone(),
            document_lines: 0,
            document: own.clone(),
            bootstrap: own,
            base: self.base.clone(),
        }
    }

    /// The bootstrap file and `document` as one configuration text (the document first, so its
    /// lines keep their numbers). Refused, with key and line, when the document holds a key
    /// that belongs in the bootstrap file, is empty, or is not a block mapping.
    pub fn merge(&self, document: &str, origin: Origin) -> Result<Merged, ConfigErrors> {
        let scanned = scan(document).map_err(|e| errors(&origin, vec![e]))?;
        let document = joinable(document).map_err(|e| errors(&origin, vec![e]))?;
        let misplaced: Vec<ConfigError> = scanned
            .keys
            .iter()
            .filter(|k| BOOTSTRAP_KEYS.contains(&k.key.as_str()))
            .map(|k| ConfigError {
                path: k.key.clone(),
                line: Some(k.line),
                message: format!(
                    "stays in each gateway's bootstrap file ({}): a gateway needs it before it reaches the store",
                    self.path.display()
                ),
            })
            .collect();
        if !misplaced.is_empty() {
            return Err(errors(&origin, misplaced));
        }
        if scanned.keys.is_empty() {
            let message = "the document is empty: a gateway would serve nothing".to_string();
            return Err(errors(&origin, vec![ConfigError { path: String::new(), line: None, message }]));
        }
        let document_lines = document.matches('\n').count();
        let mut text = document;
        text.push_str(&self.text);
        let bootstrap = Origin::File(self.path.clone());
        Ok(Merged { text, document_lines, document: origin, bootstrap, base: self.base.clone() })
    }
}

/// The loader's warning that only `jobs` would use `nats`: it does not know `config_source`
/// (its lines are left out of the checked text), which uses `nats` too.
pub(crate) fn unused_nats(warning: &ConfigError) -> bool {
    warning.path == "nats" && warning.message.contains("only `jobs` uses NATS")
}

/// `config_source` of a bootstrap text, or (key path, message) for the first problem.
fn parse_source(text: &str) -> Result<Option<ConfigSourceSettings>, (String, String)> {
    let tree: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| (String::new(), e.to_string()))?;
    let Some(section) = tree.get("config_source") else { return Ok(None) };
    serde_path_to_error::deserialize(section.clone()).map(Some).map_err(|e| {
        let inner = e.path().to_string();
        let key = if inner == "." { "config_source".to_string() } else { format!("config_source.{inner}") };
        (key, e.inner().to_string())
    })
}

/// `text` with lines `first..next` (1-based, `next` excluded) emptied.
fn blank_lines(text: &str, first: usize, next: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        if n >= first && n < next {
            out.push_str(if line.ends_with("\r\n") {
                "\r\n"
            } else if line.ends_with('\n') {
                "\n"
            } else {
                ""
            });
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A stored document and a bootstrap file as one configuration text.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The text the configuration loader reads.
    pub text: String,
    /// Lines `1..=document_lines` are the document's, the rest the bootstrap file's.
    document_lines: usize,
    /// Where the document came from.
    pub document: Origin,
    /// Where the bootstrap file came from.
    pub bootstrap: Origin,
    /// The directory relative file names resolve against (the bootstrap file's).
    pub base: PathBuf,
}

/// A merged configuration that passed the check, with its warnings (by part).
#[derive(Debug)]
pub struct Checked {
    /// The configuration.
    pub config: Config,
    /// Warnings, given back to the part and line they are in.
    pub warnings: Vec<ConfigErrors>,
}

impl Merged {
    /// Check the configuration exactly as `-t` checks a file (the same loader, the same size
    /// limit, the files it names read from this host's disk); problems name the part they are
    /// in. The one call of the check for stored documents: the same one `-t` makes (validate,
    /// then build the working objects of a generation).
    pub fn check(&self) -> Result<Checked, Vec<ConfigErrors>> {
        let (checked, warnings) = self.generation()?;
        Ok(Checked { config: checked.config, warnings })
    }

    /// [`check`](Self::check), keeping what the check built: the ingredients of a generation
    /// a gateway swaps in (the same call, so a gateway refuses exactly what `push` refuses).
    /// The warnings, given back to their parts, are taken out of the configuration.
    pub(crate) fn generation(&self) -> Result<(crate::snapshot::Checked, Vec<ConfigErrors>), Vec<ConfigErrors>> {
        if self.text.len() as u64 > MAX_CONFIG_BYTES {
            let message = format!("the configuration has {} bytes; a config may have at most 4MiB", self.text.len());
            return Err(vec![errors(&self.document, vec![ConfigError { path: String::new(), line: None, message }])]);
        }
        match crate::snapshot::check_text(&self.text, &self.base) {
            Ok(mut checked) => {
                let warnings = self.attribute(std::mem::take(&mut checked.config.warnings));
                Ok((checked, warnings))
            }
            Err(found) => Err(self.attribute(found)),
        }
    }

    /// Problems found in the merged text, each given back to the part it is in, with the line
    /// there: the document's first, then the bootstrap file's (empty parts left out).
    pub fn attribute(&self, found: Vec<ConfigError>) -> Vec<ConfigErrors> {
        let mut document = Vec::new();
        let mut bootstrap = Vec::new();
        for mut e in found {
            let in_bootstrap = match e.line {
                Some(line) if line > self.document_lines => {
                    e.line = Some(line - self.document_lines);
                    true
                }
                Some(_) => false,
                None => {
                    let top = e.path.split(['.', '[']).next().unwrap_or_default();
                    BOOTSTRAP_KEYS.contains(&top)
                }
            };
            if in_bootstrap {
                bootstrap.push(e);
            } else {
                document.push(e);
            }
        }
        let mut out = Vec::new();
        if !document.is_empty() {
            out.push(errors(&self.document, document));
        }
        if !bootstrap.is_empty() {
            out.push(errors(&self.bootstrap, bootstrap));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BOOT: &str = "# gateway eu-1\nserver: {grace_period: 1s}\nlisten: [\"127.0.0.1:8080\"]\nconfig_source:\n  nats_kv: {bucket: cfg, key: gw}\n  cache_file: /var/lib/siger/cache.json\nnats: {url: \"nats://127.0.0.1:4222\"}\n";
    const DOC: &str = "services:\n  echo: {targets: [\"127.0.0.1:9001\"]}\n# the only route\nroutes:\n  - {path: /, service: echo, auth: public}\n";

    fn boot() -> Bootstrap {
        Bootstrap::parse(BOOT, Path::new("siger.yaml"), PathBuf::from("/etc/siger")).unwrap()
    }

    fn revision(n: u64) -> Origin {
        Origin::Revision { bucket: "cfg".into(), key: "gw".into(), revision: n }
    }

    #[test]
    fn the_document_keeps_its_line_numbers_and_the_bootstrap_follows() {
        let merged = boot().merge(DOC, revision(7)).unwrap();
        let lines: Vec<&str> = merged.text.lines().collect();
        assert_eq!(lines[3], "routes:", "document line 4 is merged line 4");
        assert_eq!(lines[5], "# gateway eu-1");
        assert!(!merged.text.contains("nats_kv"), "config_source is left out of the checked text");
        assert_eq!(merged.text.lines().count(), DOC.lines().count() + BOOT.lines().count());
        let tree: serde_yaml::Value = serde_yaml::from_str(&merged.text).unwrap();
        let keys: Vec<&str> = tree.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["services", "routes", "server", "listen", "nats"]);
    }

    #[test]
    fn problems_go_back_to_the_revision_or_file_and_line_they_are_in() {
        let merged = boot().merge(DOC, revision(7)).unwrap();
        let found = vec![
            ConfigError { path: "routes[0].service".into(), line: Some(5), message: "unknown".into() },
            ConfigError { path: "listen[0]".into(), line: Some(9), message: "bad".into() },
            ConfigError { path: "nats.url".into(), line: None, message: "bad url".into() },
        ];
        let out = merged.attribute(found);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].file, "cfg/gw revision 7");
        assert_eq!(out[0].errors[0].line, Some(5));
        assert_eq!(out[1].file, "siger.yaml");
        assert_eq!(out[1].errors[0].line, Some(4), "line 9 of the merged text is line 4 of the bootstrap");
        assert_eq!(out[1].errors[1].path, "nats.url");
        assert!(out[0].to_string().contains("routes[0].service (line 5): unknown"), "{}", out[0]);
    }

    #[test]
    fn a_document_may_not_carry_bootstrap_keys_nor_be_empty() {
        let e = boot().merge(&format!("{DOC}listen: [\"0.0.0.0:80\"]\n"), revision(3)).unwrap_err();
        assert_eq!(e.file, "cfg/gw revision 3");
        assert_eq!((e.errors[0].path.as_str(), e.errors[0].line), ("listen", Some(6)));
        assert!(e.errors[0].message.contains("bootstrap file (siger.yaml)"), "{e}");
        for empty in ["", "# nothing\n", "~\n"] {
            let e = boot().merge(empty, revision(1)).unwrap_err();
            assert!(e.errors[0].message.contains("empty"), "{empty:?}: {e}");
        }
    }

    #[test]
    fn only_one_block_mapping_joins() {
        let flow = boot().merge("{routes: []}\n", revision(1)).unwrap_err();
        assert!(flow.errors[0].message.contains("block mapping"), "{flow}");
        let two = boot().merge("routes: []\n---\nservices: {}\n", revision(1)).unwrap_err();
        assert!(two.errors[0].message.contains("2 YAML documents"), "{two}");
        let list = boot().merge("- a\n- b\n", revision(1)).unwrap_err();
        assert!(list.errors[0].message.contains("not a mapping"), "{list}");
        let broken = boot().merge("routes: [\n", revision(1)).unwrap_err();
        assert!(broken.errors[0].message.contains("not valid YAML"), "{broken}");
        // A leading `---` and a missing final newline are fine; numbers stay.
        let merged = boot().merge("---\nroutes: []", revision(1)).unwrap();
        assert_eq!(merged.text.lines().nth(1), Some("routes: []"));
        let with_marker = Bootstrap::parse(&format!("---\n{BOOT}"), Path::new("b.yaml"), PathBuf::from("/")).unwrap();
        let merged = with_marker.merge("routes: []\n", revision(1)).unwrap();
        let tree: serde_yaml::Value = serde_yaml::from_str(&merged.text).unwrap();
        assert!(tree.get("listen").is_some() && tree.get("routes").is_some());
    }

    #[test]
    fn the_bootstrap_keeps_only_what_a_process_needs_to_start() {
        let e = Bootstrap::parse(&format!("{BOOT}{DOC}"), Path::new("b.yaml"), PathBuf::from("/")).unwrap_err();
        let named: Vec<(&str, Option<usize>)> = e.errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(named, [("services", Some(8)), ("routes", Some(11))]);
        let typo = BOOT.replace("cache_file", "cache_flie");
        let e = Bootstrap::parse(&typo, Path::new("b.yaml"), PathBuf::from("/")).unwrap_err();
        assert_eq!((e.errors[0].path.as_str(), e.errors[0].line), ("config_source.cache_flie", Some(6)));
        assert!(e.errors[0].message.contains("unknown field `cache_flie`"), "{e}");
        let bad = BOOT.replace("bucket: cfg", "bucket: \"c.fg\"");
        let e = Bootstrap::parse(&bad, Path::new("b.yaml"), PathBuf::from("/")).unwrap_err();
        assert_eq!((e.errors[0].path.as_str(), e.errors[0].line), ("config_source.nats_kv.bucket", Some(5)));
        assert_eq!(boot().source.unwrap().nats_kv.key, "gw");
    }

    #[test]
    fn a_whole_file_splits_into_bootstrap_and_document_with_their_comments() {
        let whole = format!("{BOOT}{DOC}");
        let split = split(&whole, &Origin::File("whole.yaml".into())).unwrap();
        assert_eq!(split.bootstrap, BOOT);
        assert_eq!(split.document, DOC);
        let interleaved = "listen: [\"a\"]\n# services\nservices: {}\n\n# admin\nadmin: {listen: \"b\"}\nroutes: []\n";
        let s = super::split(interleaved, &Origin::File("x".into())).unwrap();
        assert_eq!(s.bootstrap, "listen: [\"a\"]\n# admin\nadmin: {listen: \"b\"}\n");
        assert_eq!(s.document, "# services\nservices: {}\n\nroutes: []\n");
        let only_bootstrap = super::split(BOOT, &Origin::File("b".into())).unwrap_err();
        assert!(only_bootstrap.errors[0].message.contains("no key for the store"));
    }
}
