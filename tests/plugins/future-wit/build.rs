//! Writes the contract this plugin is built against into `$OUT_DIR/wit/`:
//! the real one (`wit/` at the workspace root) with its version set to
//! `0.3.0`, so the test plugin differs from a real plugin in nothing but
//! the version, and cannot drift from the contract.

use std::path::{Path, PathBuf};

const HOST_VERSION: &str = "launch:plugin@0.2.0";
const FUTURE_VERSION: &str = "launch:plugin@0.3.0";

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let contract = manifest_dir.join("../../../wit");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("wit");
    println!("cargo::rerun-if-changed={}", contract.display());
    if let Err(error) = write_future_contract(&contract, &out) {
        println!("cargo::error=future-wit-plugin: {error}");
    }
}

/// Copies every `.wit` file of `contract` into `out` with the version changed.
fn write_future_contract(contract: &Path, out: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let entries = std::fs::read_dir(contract)
        .map_err(|e| format!("cannot read the contract in {}: {e}", contract.display()))?;
    let mut copied = 0;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", contract.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "wit") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !text.contains(HOST_VERSION) {
            return Err(format!(
                "{} does not name {HOST_VERSION}: update HOST_VERSION in this build script",
                path.display()
            ));
        }
        let target = out.join(path.file_name().expect("a file name"));
        std::fs::write(&target, text.replace(HOST_VERSION, FUTURE_VERSION))
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        copied += 1;
    }
    if copied == 0 {
        return Err(format!("no .wit files in {}", contract.display()));
    }
    Ok(())
}
