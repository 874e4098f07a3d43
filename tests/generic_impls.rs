//! Methods of a generic impl: each type the impl is used with has its own cache, keys and
//! statistics, so `Repo<A>` never serves `Repo<B>`'s values.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Repo<T>(PhantomData<T>);

impl<T: Default + Clone + Send + Sync + 'static> Repo<T> {
    fn new() -> Self {
        Repo(PhantomData)
    }

    /// Same return type for every `T`: before per-type sites, the first type's values were
    /// served to the others.
    #[optimize::io(skip(self))]
    fn label(&self, id: u32) -> String {
        CALLS.fetch_add(1, SeqCst);
        format!("{}#{id}", std::any::type_name::<T>())
    }

    /// A return type that depends on `T`.
    #[optimize::io(skip(self), tiers = "l1")]
    fn empty(&self, id: u32) -> (u32, T) {
        (id, T::default())
    }
}

#[test]
fn each_type_of_a_generic_impl_has_its_own_cache() {
    let (a, b) = (Repo::<u8>::new(), Repo::<String>::new());
    assert_eq!(a.label(1), "u8#1");
    assert_eq!(b.label(1), "alloc::string::String#1");
    assert_eq!(a.label(1), "u8#1");
    assert_eq!(b.label(1), "alloc::string::String#1");
    assert_eq!(CALLS.load(SeqCst), 2, "one execution per type, then hits");

    assert_eq!(a.empty(3), (3, 0u8));
    assert_eq!(b.empty(3), (3, String::new()));

    let (sa, sb) = (Repo::<u8>::label_cache(), Repo::<String>::label_cache());
    assert!(!std::ptr::eq(sa, sb));
    assert_eq!(sa.path(), "generic_impls::Repo<u8>::label");
    assert_eq!(
        sb.path(),
        "generic_impls::Repo<alloc::string::String>::label"
    );
    assert_eq!((sa.stats().hits(), sb.stats().hits()), (1, 1));
    let key = optimize::key::ArgsKey(1);
    assert_ne!(
        sa.full_key(key),
        sb.full_key(key),
        "shared-tier keys differ too"
    );
    let paths: Vec<String> = optimize::functions()
        .iter()
        .map(|s| s.path().to_owned())
        .collect();
    assert!(paths.contains(&sb.path().to_owned()), "{paths:?}");
}
