//! The test descriptor sets (tests/fixtures/grpc/*.proto), compiled by
//! `tests/fixtures/grpc/descriptors` (protoc with google/api from googleapis-common-protos).

use std::path::PathBuf;
use std::sync::OnceLock;

/// shop.proto (and google/rpc's status and error details), compiled once per test process.
pub(crate) fn descriptor_set() -> &'static [u8] {
    static SET: OnceLock<Vec<u8>> = OnceLock::new();
    SET.get_or_init(|| compile(&[]))
}

/// Compile these files (paths under tests/fixtures/grpc) with --include_imports.
pub(crate) fn compile(files: &[&str]) -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let status = std::process::Command::new(root.join("tests/fixtures/grpc/descriptors"))
        .arg(out.path())
        .args(files)
        .status()
        .expect("run tests/fixtures/grpc/descriptors (scripts/install-deps installs protoc)");
    assert!(status.success(), "tests/fixtures/grpc/descriptors {files:?} failed");
    std::fs::read(out.path()).expect("descriptor set")
}
