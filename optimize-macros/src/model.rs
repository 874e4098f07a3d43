//! From options and function to a validated plan. Every rule that can be checked at compile
//! time is checked here, and each failure becomes an error on the offending token.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::visit::Visit;
use syn::{Expr, FnArg, GenericParam, Ident, ItemFn, Pat, ReturnType, Type};

use crate::args::{Args, Kind, Priority, Tiers};
use crate::errors::Errors;

/// A validated plan for one annotated function.
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    pub(crate) ttl: Option<Duration>,
    pub(crate) capacity: Option<u64>,
    /// Explicit `tiers`; `None`: every tier the process has, for serializable values.
    pub(crate) tiers: Option<Tiers>,
    pub(crate) l2_ttl: Option<Duration>,
    pub(crate) l3_ttl: Option<Duration>,
    pub(crate) compress_above: Option<u32>,
    /// `level = "..."`: the `config::Level` variant.
    pub(crate) level: Option<&'static str>,
    pub(crate) version: u32,
    /// `cache = false`: measured, never cached.
    pub(crate) cache: bool,
    pub(crate) name: Option<String>,
    pub(crate) krate: TokenStream,
    pub(crate) key: KeySource,
    pub(crate) params: Vec<Param>,
    pub(crate) has_receiver: bool,
    pub(crate) is_async: bool,
    pub(crate) schema: u64,
    pub(crate) ret: TokenStream,
    /// The return type mentions a reference or lifetime (only `'static` passes the checks):
    /// it cannot be deserialized into, so it stays in L1.
    pub(crate) ret_borrows: bool,
    /// `priority = "..."`.
    pub(crate) priority: Option<Priority>,
    /// `concurrency = N`.
    pub(crate) concurrency: Option<u64>,
    /// `timeout = "..."`.
    pub(crate) timeout: Option<Duration>,
    /// `retries = N`.
    pub(crate) retries: u32,
    /// `backoff = "..."`.
    pub(crate) backoff: Option<Duration>,
    /// `mem = "..."`.
    pub(crate) mem: Option<u64>,
    /// Some argument (or the receiver) borrows: an async cpu body cannot be sent to the pool
    /// on its own, so the caller waits for it.
    pub(crate) args_borrow: bool,
}

pub(crate) enum KeySource {
    /// Hash these parameters (by their binding in the rewritten signature).
    Args(Vec<Ident>),
    /// Hash the user's `key = ...` expression.
    Expr(Expr),
}

/// A typed parameter of the function, as the rewritten signature binds it.
pub(crate) struct Param {
    /// The name bound in the signature: the user's identifier, or `__optimize_argN` for a
    /// destructuring pattern.
    pub(crate) binding: Ident,
    /// The user's pattern when it is not a plain identifier; destructured inside the body.
    pub(crate) destructure: Option<Box<Pat>>,
    /// The argument's type (for spans of errors about it).
    pub(crate) ty: Box<Type>,
    /// `mut name`: retried attempts rebind a fresh copy with the same mutability.
    pub(crate) mutable: bool,
}

pub(crate) fn build(args: Args, func: &ItemFn, errors: &mut Errors) -> Option<Plan> {
    let sig = &func.sig;

    if let Some(c) = &sig.constness {
        errors.at(
            c,
            "a `const fn` cannot be managed: it may run at compile time, where there is no \
             cache; remove `const`",
        );
    }
    if let Some(v) = &sig.variadic {
        errors.at(v, "variadic functions cannot be managed");
    }
    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(_) => {}
            GenericParam::Type(_) | GenericParam::Const(_) => errors.at(
                param,
                "generic functions are not supported: one function has one cache, which \
                 cannot hold a value for every type; write a non-generic function per type \
                 (it may call this one)",
            ),
        }
    }

    let mut params = Vec::new();
    let mut named: Vec<Ident> = Vec::new();
    let mut receiver = None;
    let mut arg_types = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => receiver = Some(r),
            FnArg::Typed(pt) => {
                ImplTraitFinder::report(
                    &pt.ty,
                    errors,
                    "`impl Trait` arguments make the function generic, which is not supported; \
                     name a concrete type (e.g. `&str` instead of `impl AsRef<str>`)",
                );
                arg_types.push(pt.ty.to_token_stream().to_string());
                match &*pt.pat {
                    Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                        named.push(pi.ident.clone());
                        params.push(Param {
                            binding: pi.ident.clone(),
                            destructure: None,
                            ty: pt.ty.clone(),
                            mutable: pi.mutability.is_some(),
                        });
                    }
                    pat => params.push(Param {
                        binding: format_ident!("__optimize_arg{}", i),
                        destructure: Some(Box::new(pat.clone())),
                        ty: pt.ty.clone(),
                        mutable: false,
                    }),
                }
            }
        }
    }

    let (ret, ret_borrows) = match &sig.output {
        ReturnType::Default => (quote!(()), false),
        ReturnType::Type(_, ty) => {
            if args.cache {
                check_owned_return(ty, errors);
            } else {
                ImplTraitFinder::report(
                    ty,
                    errors,
                    "an `impl Trait` return type is not supported: statistics tell `Err` and \
                     `None` apart by the named type; return a named type",
                );
            }
            let borrows = mentions_lifetime(ty);
            if borrows {
                if let Some((t, _)) = &args.tiers {
                    if t.l2 || t.l3 {
                        errors.at(
                            ty,
                            "a value with references or lifetimes cannot be stored in L2/L3, which \
                             deserialize into owned data; return an owned type (e.g. `String`) or \
                             use `tiers = \"l1\"`",
                        );
                    }
                }
            }
            (ty.to_token_stream(), borrows)
        }
    };

    // Which arguments form the key.
    let skip: Vec<Ident> = match &args.skip {
        Some((kw, list)) => {
            if args.key.is_some() {
                errors.at(
                    kw,
                    "`skip` has no effect together with `key = ...`: the key expression alone \
                     decides the key; remove `skip(...)`",
                );
            }
            let mut seen: Vec<&Ident> = Vec::new();
            for ident in list {
                if seen.contains(&ident) {
                    errors.at(ident, format!("`{ident}` is skipped twice"));
                }
                seen.push(ident);
                if ident == "self" {
                    if receiver.is_none() {
                        errors.at(ident, "`skip(self)`: this function has no `self` argument");
                    }
                } else if !named.contains(ident) {
                    let list = std::iter::once("self")
                        .filter(|_| receiver.is_some())
                        .map(str::to_owned)
                        .chain(named.iter().map(Ident::to_string))
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>();
                    errors.at(
                        ident,
                        format!(
                            "`{ident}` is not an argument of `{}`; arguments that can be \
                             skipped: {}",
                            sig.ident,
                            if list.is_empty() {
                                "none".to_owned()
                            } else {
                                list.join(", ")
                            }
                        ),
                    );
                }
            }
            list.clone()
        }
        None => Vec::new(),
    };

    let args_borrow = receiver.is_some() || params.iter().any(|p| mentions_lifetime(&p.ty));
    if let Some(kind) = args.kind {
        check_routing(&args, kind, func, &params, receiver, errors);
    }

    if !args.cache {
        for option in args.given.iter().filter(|o| {
            let o = o.to_string();
            !matches!(o.as_str(), "cache" | "name" | "crate")
                && !crate::args::ROUTING_OPTIONS.contains(&o.as_str())
        }) {
            errors.at(
                option,
                format!(
                    "`{option}` has no effect with `cache = false`: the function is measured, \
                     never cached; remove `{option}`"
                ),
            );
        }
    }

    if let Some(r) = receiver.filter(|_| args.cache) {
        let self_skipped = skip.iter().any(|s| s == "self");
        if args.key.is_none() && !self_skipped {
            errors.at(
                r,
                "a method's cache key must say which instance it belongs to: `self` is not \
                 hashed, so every instance would share one cache; add `key = ...` naming what \
                 identifies the call (e.g. `key = (self.id, arg)`), or `skip(self)` to share one \
                 cache across instances on purpose",
            );
        }
    }

    let key = match args.key {
        Some(expr) => KeySource::Expr(expr),
        None => KeySource::Args(
            params
                .iter()
                .filter(|p| !skip.contains(&p.binding))
                .map(|p| p.binding.clone())
                .collect(),
        ),
    };

    let krate = match args.krate {
        Some(path) => path.to_token_stream(),
        None => default_crate_path(),
    };

    // Options that only matter for tiers the function does not use.
    if let Some((tiers, _)) = &args.tiers {
        let unused = [
            (
                "l2_ttl",
                args.l2_ttl.as_ref().map(|(_, l)| l),
                tiers.l2,
                "l2",
            ),
            (
                "l3_ttl",
                args.l3_ttl.as_ref().map(|(_, l)| l),
                tiers.l3,
                "l3",
            ),
            (
                "compress_above",
                args.compress_above.as_ref().map(|(_, l)| l),
                tiers.l2 || tiers.l3,
                "l2 or l3",
            ),
        ];
        for (option, lit, used, needs) in unused {
            if let (Some(lit), false) = (lit, used) {
                errors.at(
                    lit,
                    format!("`{option}` has no effect: `tiers` does not include {needs}; add it to `tiers` or remove `{option}`"),
                );
            }
        }
    }

    let schema = schema_hash(&arg_types, &ret.to_string());
    Some(Plan {
        kind: args.kind?,
        ttl: args.ttl.map(|(d, _)| d),
        capacity: args.capacity,
        tiers: args.tiers.map(|(t, _)| t),
        l2_ttl: args.l2_ttl.map(|(d, _)| d),
        l3_ttl: args.l3_ttl.map(|(d, _)| d),
        compress_above: args.compress_above.map(|(n, _)| n),
        level: args.level,
        version: args.version.unwrap_or(0),
        cache: args.cache,
        name: args.name.map(|n| n.value()),
        krate,
        key,
        params,
        has_receiver: receiver.is_some(),
        is_async: sig.asyncness.is_some(),
        schema,
        ret,
        ret_borrows,
        priority: args.priority.map(|(p, _)| p),
        concurrency: args.concurrency,
        timeout: args.timeout.map(|(d, _)| d),
        retries: args.retries.unwrap_or(0),
        backoff: args.backoff.map(|(d, _)| d),
        mem: args.mem,
        args_borrow,
    })
}

/// Routing options against the kind and the function's shape (design §8).
fn check_routing(
    args: &Args,
    kind: Kind,
    func: &ItemFn,
    params: &[Param],
    receiver: Option<&syn::Receiver>,
    errors: &mut Errors,
) {
    let given = |name: &str| args.given.iter().find(|g| *g == name);
    let only_for = |option: &str, owner: Kind, why: &str, errors: &mut Errors| {
        if let Some(token) = given(option).filter(|_| kind != owner) {
            errors.at(
                token,
                format!(
                    "`{option}` applies to `{}` functions; this is {} `{}` function, where {why}; \
                     remove `{option}`",
                    owner.name(),
                    if kind == Kind::Io { "an" } else { "a" },
                    kind.name()
                ),
            );
        }
    };
    let bounded_by = match kind {
        Kind::Cpu => "the CPU pool's thread count bounds the calls",
        Kind::Memory => "the memory budget bounds the calls (set `mem` per call)",
        Kind::Io => "",
    };
    only_for("concurrency", Kind::Io, bounded_by, errors);
    let no_retry = "the body runs to completion once; make it `io` to retry";
    only_for(
        "timeout",
        Kind::Io,
        "a running body cannot be interrupted",
        errors,
    );
    only_for("retries", Kind::Io, no_retry, errors);
    only_for("backoff", Kind::Io, no_retry, errors);
    only_for(
        "mem",
        Kind::Memory,
        "the memory budget is not consulted",
        errors,
    );
    if kind == Kind::Io {
        if let (Some(token), None) = (given("timeout"), &func.sig.asyncness) {
            errors.at(
                token,
                "`timeout` needs an `async fn`: a sync body cannot be interrupted once it runs; \
                 make the function async, or bound the work inside it (e.g. a client timeout)",
            );
        }
        if let (Some(token), None) = (given("backoff"), args.retries) {
            errors.at(
                token,
                "`backoff` has no effect without `retries`; add `retries = N` or remove `backoff`",
            );
        }
        if args.retries.is_some_and(|n| n > 0) {
            for p in params {
                if let Some(pat) = &p.destructure {
                    errors.at(
                        pat,
                        "with `retries`, each attempt gets a fresh copy of the arguments, which \
                         needs a name to copy; bind this argument to a name and destructure it \
                         in the body",
                    );
                }
            }
            if let Some(r) = receiver.filter(|r| r.reference.is_none()) {
                errors.at(
                    r,
                    "with `retries`, each attempt needs the receiver again; take `&self` \
                     instead of `self`",
                );
            }
        }
    }
    if let Some(lit) = args.capacity_size.as_ref().filter(|_| kind != Kind::Memory) {
        errors.at(
            lit,
            format!(
                "{} `{}` function's capacity counts entries; write a number such as \
                 `capacity = 10000` (sizes are for `memory` functions, whose values are weighed \
                 in bytes)",
                if kind == Kind::Io { "an" } else { "a" },
                kind.name()
            ),
        );
    }
    if kind == Kind::Cpu && func.sig.asyncness.is_some() {
        AwaitFinder { errors }.visit_block(&func.block);
    }
}

/// Reports each `.await` of an async cpu body (not those in nested async blocks or closures,
/// which only build futures).
struct AwaitFinder<'e> {
    errors: &'e mut Errors,
}

impl<'ast> Visit<'ast> for AwaitFinder<'_> {
    fn visit_expr_await(&mut self, e: &'ast syn::ExprAwait) {
        self.errors.at(
            e.await_token,
            "a `cpu` function's body runs on the CPU pool, a plain thread with no async runtime, \
             so it cannot `.await`; await this before the CPU work (in an `io` function or the \
             caller), or make this an `io` function",
        );
        syn::visit::visit_expr_await(self, e);
    }
    fn visit_expr_async(&mut self, _: &'ast syn::ExprAsync) {}
    fn visit_expr_closure(&mut self, _: &'ast syn::ExprClosure) {}
    fn visit_item(&mut self, _: &'ast syn::Item) {}
}

/// Hash of the signature's types: changing an argument or return type changes every key, so
/// bytes written for the old types are never decoded as the new ones.
pub(crate) fn schema_hash(arg_types: &[String], ret: &str) -> u64 {
    let text = format!("({})->{}", arg_types.join(","), ret);
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

fn default_crate_path() -> TokenStream {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("optimize") {
        Ok(FoundCrate::Name(name)) => {
            let ident = Ident::new(&name, proc_macro2::Span::call_site());
            quote!(::#ident)
        }
        // `Itself` also covers the facade's own examples, tests and doctests, which reach it
        // as `::optimize`; the library itself declares `extern crate self as optimize`.
        Ok(FoundCrate::Itself) | Err(_) => quote!(::optimize),
    }
}

/// Cached values outlive the call, so the return type must own its data.
fn check_owned_return(ty: &Type, errors: &mut Errors) {
    struct Borrowed<'e> {
        errors: &'e mut Errors,
    }
    impl<'ast> Visit<'ast> for Borrowed<'_> {
        fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
            self.errors.at(
                t,
                "an `impl Trait` return value cannot be cached: the cache stores one concrete \
                 type; return a named type (e.g. `Vec<T>` instead of `impl Iterator`)",
            );
        }
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            if r.lifetime.as_ref().is_some_and(|l| l.ident == "static") {
                return syn::visit::visit_type_reference(self, r);
            }
            self.errors.at(
                r,
                "a cached value must own its data, because it outlives this call; return an \
                 owned type (e.g. `String` instead of `&str`, `Vec<T>` instead of `&[T]`)",
            );
        }
        fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
            if l.ident != "static" {
                self.errors.at(
                    l,
                    "a cached value must own its data, because it outlives this call; return a \
                     type without borrowed lifetimes",
                );
            }
        }
    }
    Borrowed { errors }.visit_type(ty);
}

fn mentions_lifetime(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_reference(&mut self, _: &'ast syn::TypeReference) {
            self.0 = true;
        }
        fn visit_lifetime(&mut self, _: &'ast syn::Lifetime) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

struct ImplTraitFinder<'e> {
    errors: &'e mut Errors,
    message: &'static str,
}

impl ImplTraitFinder<'_> {
    fn report(ty: &Type, errors: &mut Errors, message: &'static str) {
        ImplTraitFinder { errors, message }.visit_type(ty);
    }
}

impl<'ast> Visit<'ast> for ImplTraitFinder<'_> {
    fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
        self.errors.at(t, self.message);
    }
}

#[cfg(test)]
mod tests {
    use super::schema_hash;

    #[test]
    fn schema_changes_with_any_type() {
        let base = schema_hash(&["u64".into()], "String");
        assert_eq!(base, schema_hash(&["u64".into()], "String"));
        assert_ne!(base, schema_hash(&["u32".into()], "String"));
        assert_ne!(base, schema_hash(&["u64".into()], "Vec < u8 >"));
        assert_ne!(base, schema_hash(&["u64".into(), "u64".into()], "String"));
        // Argument boundaries are part of the text.
        assert_ne!(
            schema_hash(&["A".into(), "B".into()], "()"),
            schema_hash(&["A , B".into()], "()")
        );
    }
}
