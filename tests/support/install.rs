//! Installing the runtime in a test binary: from the given keys only (no file, no process
//! environment, nothing on disk), once per binary.

#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;

use optimize::config::{Config, ConfigBuilder};

/// A builder that reads no file and no process environment.
fn keys_only() -> ConfigBuilder {
    Config::builder()
        .without_file()
        .environment(Vec::<(String, String)>::new())
}

/// A builder that reads no file and no process environment, with L3 off.
pub fn quiet() -> ConfigBuilder {
    keys_only().set("l3.enabled", "false")
}

/// A builder that reads no file and no process environment, with L3 in `dir`.
pub fn with_l3(dir: &std::path::Path) -> ConfigBuilder {
    keys_only().set("l3.dir", &dir.display().to_string())
}

/// The binary's runtime, installed at the first call with `keys` over [`quiet`]; the guard
/// lives for the rest of the binary.
pub fn once(keys: &[(&str, &str)]) -> &'static optimize::Runtime {
    static GUARD: OnceLock<optimize::RuntimeGuard> = OnceLock::new();
    GUARD
        .get_or_init(|| {
            let builder = keys.iter().fold(quiet(), |b, (k, v)| b.set(k, v));
            optimize::install(builder).unwrap_or_else(|e| panic!("{e}"))
        })
        .runtime()
}
