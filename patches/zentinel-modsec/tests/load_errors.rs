//! Load errors say where the offending directive is written.
//!
//! The parsers for variables, operators and actions report *what* is wrong
//! (`unknown action: ...`) but used to lose *where*: with the CRS's thirty
//! files loaded, an operator had to search them all. And a file that
//! `Include`s another went on after the include as if it were the included
//! file, so later errors named the wrong file and later relative paths
//! resolved against the wrong directory.

use std::path::Path;
use zentinel_modsec::ModSecurity;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn load_error(path: &str) -> String {
    ModSecurity::from_file(path)
        .expect_err("the rules must not load")
        .to_string()
}

#[test]
fn an_unknown_action_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "rules.conf",
        "SecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\n\
         \n\
         SecRule ARGS \"@rx b\" \\\n    \"id:2,phase:2,pass,frobnicate\"\n",
    );
    let error = load_error(&path);
    assert!(error.contains(&format!("{path}:3:")), "{error}");
    assert!(error.contains("unknown action: frobnicate"), "{error}");
}

#[test]
fn an_unknown_variable_and_operator_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "v.conf", "SecRule NOPE \"@rx a\" \"id:1,phase:2,pass\"\n");
    assert!(load_error(&path).contains(&format!("{path}:1:")));
    let path = write(dir.path(), "o.conf", "\nSecRule ARGS \"@nope a\" \"id:1,phase:2,pass\"\n");
    assert!(load_error(&path).contains(&format!("{path}:2:")));
}

#[test]
fn an_error_after_an_include_names_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inner.conf", "SecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\n\n\n\n");
    let outer = write(
        dir.path(),
        "outer.conf",
        "Include inner.conf\nSecRule ARGS \"@rx b\" \"id:2,phase:2,pass,frobnicate\"\n",
    );
    let error = load_error(&outer);
    assert!(error.contains(&format!("{outer}:2:")), "{error}");
}

#[test]
fn a_relative_data_file_after_an_include_resolves_next_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(&dir.path().join("sub"), "inner.conf", "SecMarker INNER\n");
    write(dir.path(), "words.data", "evilword\n");
    let outer = write(
        dir.path(),
        "outer.conf",
        "Include sub/inner.conf\n\
         SecRule ARGS \"@pmFromFile words.data\" \"id:2,phase:1,deny\"\n",
    );
    let modsec = ModSecurity::from_file(&outer).expect("rules load");
    let mut tx = modsec.new_transaction();
    tx.process_uri("/?q=evilword", "GET", "HTTP/1.1").unwrap();
    tx.process_request_headers().unwrap();
    assert!(tx.has_intervention());
}

#[test]
fn a_missing_data_file_names_the_rule_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "rules.conf",
        "SecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\n\
         SecRule ARGS \"@pmFromFile missing.data\" \"id:930120,phase:2,pass\"\n",
    );
    let error = load_error(&path);
    assert!(error.contains(&format!("{path}:2:")), "{error}");
    assert!(error.contains("rule 930120"), "{error}");
}

#[test]
fn an_include_that_matches_nothing_is_an_error_and_include_optional_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.conf", "\nInclude missing/*.conf\n");
    let error = load_error(&path);
    assert!(error.contains("matches no file"), "{error}");
    assert!(error.contains(&format!("{path}:2:")), "{error}");
    let path = write(dir.path(), "b.conf", "Include /nonexistent/rules.conf\n");
    assert!(load_error(&path).contains("matches no file"));

    let path = write(
        dir.path(),
        "c.conf",
        "IncludeOptional missing/*.conf\nSecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\n",
    );
    assert_eq!(ModSecurity::from_file(&path).expect("loads").rule_count(), 1);
}
