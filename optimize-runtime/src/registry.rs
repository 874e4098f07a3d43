//! The process-wide list of managed functions.
//!
//! Sites are created on first use and live for the rest of the process. The registry makes
//! every static slot with one id resolve to the same site, and lets tools enumerate sites.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::site::{Site, SiteMeta};

const DEFAULT_NAMESPACE: &str = "optimize";

struct Registry {
    by_id: HashMap<&'static str, &'static Site>,
    /// In registration order, for stable listings.
    all: Vec<&'static Site>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Mutex::new(Registry {
            by_id: HashMap::new(),
            all: Vec::new(),
        })
    })
}

fn derive_path(meta: &SiteMeta, owner: Option<fn() -> &'static str>) -> String {
    if let Some(name) = meta.name {
        return name.to_owned();
    }
    match owner {
        // `type_name` already includes the module path of the type.
        Some(type_name) => format!("{}::{}", strip_generics(type_name()), meta.fn_name),
        None => format!("{}::{}", meta.module_path, meta.fn_name),
    }
}

/// `app::Repo<u8>` -> `app::Repo`: keys and metric labels name the function, not instances.
fn strip_generics(type_name: &str) -> &str {
    type_name.split('<').next().unwrap_or(type_name)
}

pub(crate) fn site_for(
    meta: &'static SiteMeta,
    owner: Option<fn() -> &'static str>,
) -> &'static Site {
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(site) = reg.by_id.get(meta.id) {
        return site;
    }
    let path = derive_path(meta, owner);
    if reg.all.iter().any(|s| s.path() == path) {
        tracing::warn!(
            path = %path,
            "two managed functions share one path; give one of them `name = \"...\"` so their \
             statistics and shared-tier keys stay apart"
        );
    }
    // Sites live as long as the process, like the statics that point at them.
    let site: &'static Site = Box::leak(Box::new(Site::new(meta, path)));
    reg.by_id.insert(meta.id, site);
    reg.all.push(site);
    site
}

/// Removes expired L1 entries of every function; how many.
pub(crate) fn purge_expired() -> u64 {
    sites().iter().map(|s| s.purge_expired()).sum()
}

/// Every managed function called (or looked up) so far, in first-use order.
///
/// ```
/// #[optimize::cpu]
/// fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// double(1);
/// assert!(optimize::sites().iter().any(|s| s.path().ends_with("::double")));
/// ```
pub fn sites() -> Vec<&'static Site> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .all
        .clone()
}

/// The managed function with this path (see [`Site::path`]), if it has been used.
pub fn site(path: &str) -> Option<&'static Site> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .all
        .iter()
        .copied()
        .find(|s| s.path() == path)
}

/// The prefix of every shared-tier key: the tiers' configured namespace once they have
/// started, else the default, `optimize`.
pub fn namespace() -> &'static str {
    crate::cache::tiered::global_if_started()
        .map_or(DEFAULT_NAMESPACE, |t| t.config().namespace.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generics_are_stripped_from_owner_paths() {
        assert_eq!(
            strip_generics("app::Repo<alloc::string::String>"),
            "app::Repo"
        );
        assert_eq!(strip_generics("app::Repo"), "app::Repo");
    }
}
