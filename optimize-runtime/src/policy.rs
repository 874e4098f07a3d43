//! What a function's return value means for the cache (docs/macro.md).
//!
//! The decision is made by trait dispatch on the declared return type, never by its name, so
//! `type Res<T> = Result<T, MyError>` behaves like `Result`:
//!
//! | return type   | cached        | shared with concurrent waiters |
//! |---------------|---------------|--------------------------------|
//! | `Result<T, E>`| `Ok(T)` only  | `Ok(T)`; on `Err` each waiter runs its own call |
//! | `Option<T>`   | `Some(T)` only| `Some(T)`; on `None` each waiter runs its own call |
//! | any other `T` | always        | always |
//!
//! Only the cached part needs `Clone`; the error type of a `Result` does not.
//!
//! Generated code picks the policy with "autoref specialisation": the `Result` and `Option`
//! probes are implemented for `Probe<R>`, the fallback for `&Probe<R>`, and method lookup tries
//! `Probe<R>` first.

use std::marker::PhantomData;

/// A value that can be stored in the in-process tier.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: cached values must be `Clone + Send + Sync + 'static`",
    label = "this type is stored in the cache and handed out as a clone",
    note = "derive `Clone`, or return `Arc<{Self}>` to share one value cheaply"
)]
pub trait CacheValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> CacheValue for T {}

/// How a return type maps to cached values.
pub trait ReturnPolicy: Copy {
    /// The function's return type.
    type Output;
    /// What is stored in the cache for a cacheable output. The `CacheValue` bound is required
    /// where the policy is used (`Site::call_sync`) rather than here, so a violation is
    /// reported on the user's return type with [`CacheValue`]'s message.
    type Cached;
    /// The part of `out` to cache, or `None` when this output is not cached.
    fn to_cache(self, out: &Self::Output) -> Option<Self::Cached>
    where
        Self::Cached: CacheValue;
    /// Rebuilds an output from a cached value.
    fn rebuild(self, cached: Self::Cached) -> Self::Output;
    /// Whether `out` is a failure (`Err`, `None`): counted as `uncached` in statistics.
    fn is_failure(self, out: &Self::Output) -> bool;
}

/// Type-level carrier of a return type, for policy selection.
pub struct Probe<R>(PhantomData<fn() -> R>);

impl<R> Probe<R> {
    /// The probe for `R`.
    pub const NEW: Self = Probe(PhantomData);
}

/// Policy for any return type: every value is cached.
pub struct ValuePolicy<R>(PhantomData<fn() -> R>);
/// Policy for `Result<T, E>`: `Ok` values are cached.
pub struct ResultPolicy<T, E>(PhantomData<fn() -> (T, E)>);
/// Policy for `Option<T>`: `Some` values are cached.
pub struct OptionPolicy<T>(PhantomData<fn() -> T>);

macro_rules! copy_marker {
    ($name:ident < $($p:ident),* >) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),*> Copy for $name<$($p),*> {}
    };
}
copy_marker!(ValuePolicy<R>);
copy_marker!(ResultPolicy<T, E>);
copy_marker!(OptionPolicy<T>);

impl<R> ReturnPolicy for ValuePolicy<R> {
    type Output = R;
    type Cached = R;
    #[inline]
    fn to_cache(self, out: &R) -> Option<R>
    where
        R: CacheValue,
    {
        Some(out.clone())
    }
    #[inline]
    fn rebuild(self, cached: R) -> R {
        cached
    }
    #[inline]
    fn is_failure(self, _: &R) -> bool {
        false
    }
}

impl<T, E> ReturnPolicy for ResultPolicy<T, E> {
    type Output = Result<T, E>;
    type Cached = T;
    #[inline]
    fn to_cache(self, out: &Result<T, E>) -> Option<T>
    where
        T: CacheValue,
    {
        out.as_ref().ok().cloned()
    }
    #[inline]
    fn rebuild(self, cached: T) -> Result<T, E> {
        Ok(cached)
    }
    #[inline]
    fn is_failure(self, out: &Result<T, E>) -> bool {
        out.is_err()
    }
}

impl<T> ReturnPolicy for OptionPolicy<T> {
    type Output = Option<T>;
    type Cached = T;
    #[inline]
    fn to_cache(self, out: &Option<T>) -> Option<T>
    where
        T: CacheValue,
    {
        out.clone()
    }
    #[inline]
    fn rebuild(self, cached: T) -> Option<T> {
        Some(cached)
    }
    #[inline]
    fn is_failure(self, out: &Option<T>) -> bool {
        out.is_none()
    }
}

/// Selects [`ResultPolicy`] for `Result` return types.
pub trait ResultProbe {
    /// The policy type.
    type Policy;
    /// The policy.
    fn policy(&self) -> Self::Policy;
}
impl<T, E> ResultProbe for Probe<Result<T, E>> {
    type Policy = ResultPolicy<T, E>;
    fn policy(&self) -> Self::Policy {
        ResultPolicy(PhantomData)
    }
}

/// Selects [`OptionPolicy`] for `Option` return types.
pub trait OptionProbe {
    /// The policy type.
    type Policy;
    /// The policy.
    fn policy(&self) -> Self::Policy;
}
impl<T> OptionProbe for Probe<Option<T>> {
    type Policy = OptionPolicy<T>;
    fn policy(&self) -> Self::Policy {
        OptionPolicy(PhantomData)
    }
}

/// Selects [`ValuePolicy`] for every other return type (found one autoref later).
pub trait ValueProbe {
    /// The policy type.
    type Policy;
    /// The policy.
    fn policy(&self) -> Self::Policy;
}
impl<R> ValueProbe for &Probe<R> {
    type Policy = ValuePolicy<R>;
    fn policy(&self) -> Self::Policy {
        ValuePolicy(PhantomData)
    }
}

#[cfg(test)]
// The explicit `&` is what generated code writes: dispatch must start from `&Probe<R>` for the
// fallback probe to be found, even where (as for `Result`) it would be auto-borrowed.
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NotClone;
    type Res<T> = Result<T, NotClone>;

    #[test]
    fn result_alias_caches_ok_only_and_needs_no_clone_error() {
        let p = (&Probe::<Res<u8>>::NEW).policy();
        assert_eq!(p.to_cache(&Ok(3)), Some(3));
        assert_eq!(p.to_cache(&Err(NotClone)), None);
        assert!(matches!(p.rebuild(4), Ok(4)));
    }

    #[test]
    fn option_caches_some_only() {
        let p = (&Probe::<Option<String>>::NEW).policy();
        assert_eq!(p.to_cache(&Some("a".into())).as_deref(), Some("a"));
        assert_eq!(p.to_cache(&None), None);
    }

    #[test]
    fn plain_values_are_always_cached() {
        let p = (&Probe::<Vec<u8>>::NEW).policy();
        assert_eq!(p.to_cache(&vec![1]), Some(vec![1]));
        assert_eq!(p.rebuild(vec![2]), vec![2]);
    }
}
