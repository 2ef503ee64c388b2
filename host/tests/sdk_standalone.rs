//! The guest SDK stands alone: its copy of the contract is the contract,
//! and a plugin builds against `plugins/sdk` copied out of the repository.
//!
//! `plugins/sdk/wit/` is a copy of `wit/*.wit` (the published contract)
//! so that the SDK builds as a git or crates.io dependency;
//! `scripts/sync-sdk-wit.sh` refreshes it.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn wit_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wit"))
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_sdk_carries_the_contract_byte_for_byte() {
    let root = repo_root();
    let contract = wit_files(&root.join("wit"));
    let copy = wit_files(&root.join("plugins/sdk/wit"));
    assert!(!contract.is_empty());
    let names =
        |files: &[(String, Vec<u8>)]| files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&copy),
        names(&contract),
        "plugins/sdk/wit/ has other files than wit/: run scripts/sync-sdk-wit.sh"
    );
    for ((name, theirs), (_, ours)) in contract.iter().zip(&copy) {
        assert!(
            theirs == ours,
            "plugins/sdk/wit/{name} differs from wit/{name}: run scripts/sync-sdk-wit.sh"
        );
    }
}

#[test]
fn the_sdk_manifest_inherits_nothing_from_the_workspace() {
    let manifest = std::fs::read_to_string(repo_root().join("plugins/sdk/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("workspace = true") && !manifest.contains(".workspace"),
        "plugins/sdk/Cargo.toml inherits from the workspace, so it cannot build outside it:\n{manifest}"
    );
    let lib = std::fs::read_to_string(repo_root().join("plugins/sdk/src/lib.rs")).unwrap();
    assert!(
        !lib.contains("../"),
        "plugins/sdk/src/lib.rs reads a path outside the crate"
    );
}
