//! Every managed function, known at start-up.
//!
//! Each annotated function puts its [`SiteMeta`] into one distributed slice (`FUNCTIONS`,
//! `linkme`), so the runtime sees every function before any of them is called: it resolves
//! their settings, refuses configuration that names no function, and lists them in metrics
//! with zero counts.
//!
//! The one thing not known before the first call is the type of a method with a receiver:
//! its path is `type_name::<Self>()` plus the method name, and `Self` cannot be named from a
//! static. Such a function's [`Site`] is created at its first call; until then it is listed
//! by [`Registry::pending_methods`], and configuration for it is checked by module and name.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::cache::backplane::Remote;
use crate::meta::SiteMeta;
use crate::site::Site;

/// Every annotated function's metadata, gathered by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static FUNCTIONS: [SiteMeta];

/// Creates a function's site from its metadata, path and (for a method) self type's name; the
/// runtime resolves its settings.
pub type SiteFactory =
    Box<dyn Fn(&'static SiteMeta, String, Option<&'static str>) -> Site + Send + Sync>;

struct Entry {
    meta: &'static SiteMeta,
    site: OnceLock<&'static Site>,
}

/// The managed functions of one runtime.
pub struct Registry {
    /// Sorted by module path, name and id, for stable listings.
    entries: Box<[Entry]>,
    by_id: HashMap<&'static str, usize>,
    /// Functions missing from [`FUNCTIONS`] (a platform where the linker dropped them), and
    /// the further types of a generic impl's method: created at first use.
    late: Mutex<Vec<&'static Site>>,
    make: SiteFactory,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// The path of a function that does not depend on its first call: `name = "..."`, or
/// `module::fn`; `None` for a method with a receiver (its path names its type).
pub fn static_path(meta: &SiteMeta) -> Option<String> {
    match (meta.name, meta.has_receiver) {
        (Some(name), _) => Some(name.to_owned()),
        (None, true) => None,
        (None, false) => Some(format!("{}::{}", meta.module_path, meta.fn_name)),
    }
}

/// Whether `path` can be the path of `meta`'s function: its static path, or for a method
/// with a receiver, `module::Type::method` with any type in (or below) the module.
pub fn may_be_path_of(meta: &SiteMeta, path: &str) -> bool {
    let path = without_generics(path);
    match static_path(meta) {
        Some(p) => p == path,
        None => path
            .strip_suffix(meta.fn_name)
            .and_then(|p| p.strip_suffix("::"))
            .and_then(|owner| owner.rsplit_once("::"))
            .is_some_and(|(module, ty)| {
                !ty.is_empty()
                    && (module == meta.module_path || module.starts_with(meta.module_path))
            }),
    }
}

/// How a path looks to a person: the static path, or `module::<Type>::method`.
pub fn shown_path(meta: &SiteMeta) -> String {
    static_path(meta).unwrap_or_else(|| format!("{}::<Type>::{}", meta.module_path, meta.fn_name))
}

/// A function's path: `name = "..."`, else `module::fn`, else (a method) the self type's full
/// name and the method's: `app::Repo::get`, or `app::Repo<app::User>::get` for one type of a
/// generic impl, whose types each get their own site, keys and metrics.
fn derive_path(meta: &SiteMeta, owner: Option<&'static str>) -> String {
    if let Some(path) = static_path(meta) {
        return path;
    }
    match owner {
        // `type_name` already includes the module path of the type.
        Some(type_name) => format!("{type_name}::{}", meta.fn_name),
        None => format!("{}::{}", meta.module_path, meta.fn_name),
    }
}

/// `app::Repo<app::User>::get` -> `app::Repo::get`: the form a `[functions]` table may use
/// for every type of a generic impl.
pub fn without_generics(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

impl Registry {
    /// Every function in `metas` (duplicates by id are one function); sites are created now,
    /// except for methods with a receiver (at their first call).
    pub fn new(metas: impl IntoIterator<Item = &'static SiteMeta>, make: SiteFactory) -> Self {
        let mut metas: Vec<&'static SiteMeta> = metas.into_iter().collect();
        metas.sort_by_key(|m| (m.module_path, m.fn_name, m.id));
        metas.dedup_by_key(|m| m.id);
        let entries: Box<[Entry]> = metas
            .into_iter()
            .map(|meta| Entry {
                meta,
                site: OnceLock::new(),
            })
            .collect();
        let by_id = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.meta.id, i))
            .collect();
        let registry = Self {
            entries,
            by_id,
            late: Mutex::new(Vec::new()),
            make,
        };
        let mut seen: HashMap<String, &'static str> = HashMap::new();
        for entry in registry.entries.iter() {
            let Some(path) = static_path(entry.meta) else {
                continue;
            };
            if let Some(other) = seen.insert(path.clone(), entry.meta.id) {
                tracing::warn!(
                    path = %path, first = other, second = entry.meta.id,
                    "optimize: two managed functions share one path; give one of them \
                     `name = \"...\"` so their statistics and shared-tier keys stay apart"
                );
            }
            let _ = entry.site.set(registry.create(entry.meta, path, None));
        }
        registry
    }

    fn create(
        &self,
        meta: &'static SiteMeta,
        path: String,
        owner: Option<&'static str>,
    ) -> &'static Site {
        // Sites live as long as the process, like the statics that point at them.
        Box::leak(Box::new((self.make)(meta, path, owner)))
    }

    /// The site of the function `meta` describes. `owner` names the type of a method.
    pub fn site_for(
        &self,
        meta: &'static SiteMeta,
        owner: Option<fn() -> &'static str>,
    ) -> &'static Site {
        let owner = owner.map(|type_name| type_name());
        if let Some(&i) = self.by_id.get(meta.id) {
            // The registered metadata, whichever slot (function or companion) asks first.
            let meta = self.entries[i].meta;
            return self.entries[i]
                .site
                .get_or_init(|| self.create(meta, derive_path(meta, owner), owner));
        }
        self.late_site(meta, owner)
    }

    /// The site of `meta`'s method for the self type `type_name`, when a generic impl's
    /// method is used with a type other than the first.
    pub fn site_for_type(&self, meta: &'static SiteMeta, type_name: &'static str) -> &'static Site {
        let meta = self
            .by_id
            .get(meta.id)
            .map_or(meta, |&i| self.entries[i].meta);
        self.late_site(meta, Some(type_name))
    }

    fn late_site(&self, meta: &'static SiteMeta, owner: Option<&'static str>) -> &'static Site {
        let mut late = self.late.lock().unwrap_or_else(PoisonError::into_inner);
        let same =
            |s: &&&'static Site| s.meta().id == meta.id && owner.is_none_or(|o| s.is_owned_by(o));
        if let Some(site) = late.iter().find(same) {
            return site;
        }
        let site = self.create(meta, derive_path(meta, owner), owner);
        late.push(site);
        site
    }

    /// Every function's site, sorted by path; methods with a receiver once called.
    pub fn sites(&self) -> Vec<&'static Site> {
        let mut all: Vec<&'static Site> = self
            .entries
            .iter()
            .filter_map(|e| e.site.get().copied())
            .collect();
        all.extend(
            self.late
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter(),
        );
        all.sort_by(|a, b| a.path().cmp(b.path()));
        all
    }

    /// Methods with a receiver that have not been called yet (their path is not known).
    pub fn pending_methods(&self) -> Vec<&'static SiteMeta> {
        self.entries
            .iter()
            .filter(|e| e.site.get().is_none())
            .map(|e| e.meta)
            .collect()
    }

    /// The function with this path, if its site exists.
    pub fn site(&self, path: &str) -> Option<&'static Site> {
        self.sites().into_iter().find(|s| s.path() == path)
    }

    /// Retires every entry tagged `tag`: this process's L1 now, the shared tiers and the
    /// other instances through a queued write; whether a write was queued (to wait for with
    /// [`Tiers::barrier`](crate::cache::tiered::Tiers::barrier)).
    pub(crate) fn start_invalidate_tag(
        &self,
        tiers: &crate::cache::tiered::Tiers,
        tag: &str,
    ) -> bool {
        let hash = crate::cache::generations::tag_hash(tag);
        self.apply_remote(Remote::Tag { tag: hash });
        tiers.enqueue(crate::cache::writeback::WriteOp::InvalidateTag {
            tag: hash,
            generation_key: tiers.tag_generation_key(hash),
        })
    }

    /// Applies another instance's invalidation (from the backplane) to L1.
    pub fn apply_remote(&self, remote: Remote<'_>) {
        match remote {
            Remote::Key { path, args } => {
                if let Some(site) = self.site(path) {
                    site.forget_l1(args);
                }
            }
            Remote::Function { path } => {
                if let Some(site) = self.site(path) {
                    site.clear_l1();
                }
            }
            Remote::Tag { tag } => {
                for site in self.sites() {
                    site.forget_tag(tag);
                }
            }
            Remote::Everything => {
                for site in self.sites() {
                    site.clear_l1();
                }
            }
        }
    }

    /// Removes expired L1 entries of every function; how many.
    pub fn purge_expired(&self) -> u64 {
        self.sites().iter().map(|s| s.purge_expired()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Kind;

    #[test]
    fn generics_are_removed_for_table_lookups() {
        assert_eq!(
            without_generics("app::Repo<alloc::string::String>::get"),
            "app::Repo::get"
        );
        assert_eq!(
            without_generics("app::Map<u8, app::Pair<u8, u16>>::get"),
            "app::Map::get"
        );
        assert_eq!(without_generics("app::Repo::get"), "app::Repo::get");
    }

    #[test]
    fn method_paths_match_any_type_in_the_module() {
        static M: SiteMeta = SiteMeta::new("x", "app::db", "get", Kind::Io, false, 0).receiver();
        assert!(may_be_path_of(&M, "app::db::Repo::get"));
        assert!(may_be_path_of(&M, "app::db::inner::Repo::get"));
        assert!(!may_be_path_of(&M, "app::db::get"));
        assert!(!may_be_path_of(&M, "app::db::Repo::got"));
        assert!(!may_be_path_of(&M, "other::Repo::get"));
        static F: SiteMeta = SiteMeta::new("y", "app", "f", Kind::Io, false, 0);
        assert!(may_be_path_of(&F, "app::f"));
        assert!(!may_be_path_of(&F, "app::g"));
    }
}
