//! Where pgkraft finds its own files (the libOS sources, the linker script,
//! patches, default kernel config): `$PGKRAFT_HOME` if set, else the source
//! tree this binary was built from.

use std::path::PathBuf;

pub fn home() -> PathBuf {
    std::env::var_os("PGKRAFT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn libos_dir() -> PathBuf {
    home().join("libos")
}

pub fn abi_dir() -> PathBuf {
    home().join("abi")
}
