//! The rules an annotated function and its options must follow, one function per rule (the
//! layout of serde_derive's `internals/check.rs`). Each reports on the user's offending token
//! with a message that says what to write instead; [`all`] runs every rule, so every error is
//! reported at once.

use syn::visit::Visit;
use syn::{GenericParam, Ident, Type};

use crate::args::{Args, Kind, Predict};
use crate::errors::Errors;
use crate::model::Shape;
use crate::options::{self, Kinds};

/// Runs every rule, in the order their errors are best read.
pub(crate) fn all(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    no_const_fn(shape, errors);
    no_variadic(shape, errors);
    no_generic_parameters(shape, errors);
    no_impl_trait_arguments(shape, errors);
    return_type_is_cacheable(args, shape, errors);
    borrowed_return_stays_in_l1(args, shape, errors);
    skip_without_key(args, errors);
    skip_names_arguments(args, shape, errors);
    tags_name_arguments(args, shape, errors);
    unordered_collections_stay_out_of_the_key(args, shape, errors);
    if let Some(kind) = args.kind {
        options_fit_the_kind(args, kind, errors);
        if kind == Kind::Io {
            timeout_needs_async(args, shape, errors);
            backoff_needs_retries(args, errors);
            retries_need_named_arguments(args, shape, errors);
            retries_need_a_borrowed_receiver(args, shape, errors);
        }
        if kind == Kind::Cpu {
            no_await_in_async_cpu(shape, errors);
        }
    }
    options_need_the_cache(args, errors);
    method_key_names_the_instance(args, shape, errors);
    tier_options_need_their_tier(args, errors);
    fail_safe_needs_an_expiry(args, errors);
    background_needs_owned_arguments(args, shape, errors);
    predict_fits_the_function(args, shape, errors);
}

/// `predict` calls the function again, later and on another thread, with arguments the model
/// kept: the arguments must be owned, there must be some, and a sequential model needs to
/// know which one steps. Its tuning options need it.
fn predict_fits_the_function(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    if !args.cache {
        return;
    }
    let Some((model, lit)) = &args.predict else {
        if let Some((_, lit)) = &args.predict_confidence {
            errors.at(lit, "`predict_confidence` tunes `predict`, which is not set; add `predict = \"markov\"` (or `\"sequential(arg)\"`)");
        }
        if let Some((_, lit)) = &args.predict_depth {
            errors.at(lit, "`predict_depth` tunes `predict`, which is not set; add `predict = \"markov\"` (or `\"sequential(arg)\"`)");
        }
        return;
    };
    if shape.receiver.is_some() {
        errors.at(lit, "`predict` calls the function again on a prefetch thread, after this call returned, so it cannot borrow `self`; put it in a free function that takes owned values (e.g. an `Arc` of what `self` holds)");
        return;
    }
    if shape.params.iter().any(|p| mentions_lifetime(&p.ty)) {
        errors.at(lit, "`predict` keeps arguments to call the function with later, so they must be owned: take `String` instead of `&str`, `Vec<T>` instead of `&[T]`");
        return;
    }
    if shape.params.is_empty() {
        errors.at(lit, "`predict` guesses the next arguments, and this function takes none (it has one key); remove `predict`");
        return;
    }
    match model {
        Predict::Markov => {}
        Predict::Sequential(None) if shape.params.len() != 1 => {
            let names: Vec<String> = shape.named.iter().map(ToString::to_string).collect();
            errors.at(
                lit,
                format!(
                    "name the integer argument that steps, one of {}: `predict = \"sequential({})\"`",
                    names.join(", "),
                    names.last().map_or("arg", String::as_str)
                ),
            );
        }
        Predict::Sequential(None) => {}
        Predict::Sequential(Some(name)) => {
            if !shape.named.iter().any(|n| n == name) {
                let names: Vec<String> = shape.named.iter().map(ToString::to_string).collect();
                errors.at(
                    lit,
                    format!(
                        "no argument named `{name}`; name one of the function's arguments: {}",
                        names.join(", ")
                    ),
                );
            }
        }
    }
}

/// `soft_timeout` and `refresh_ahead` let the body run after the call returned, so it must own
/// what it uses; `soft_timeout` serves fail-safe's value, and `refresh_ahead` needs a ttl.
fn background_needs_owned_arguments(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    if !args.cache {
        return;
    }
    let spans = [
        (
            "soft_timeout",
            args.soft_timeout.as_ref().map(|(_, l)| l.span()),
        ),
        (
            "refresh_ahead",
            args.refresh_ahead.as_ref().map(|(_, l)| l.span()),
        ),
    ];
    for (option, span) in spans {
        let Some(span) = span else {
            continue;
        };
        if shape.receiver.is_some() {
            errors.at_span(
                span,
                format!("`{option}` runs the body in the background, after the call returned, so it cannot borrow `self`; put it in a free function that takes owned values (e.g. an `Arc` of what `self` holds)"),
            );
        } else if shape.params.iter().any(|p| mentions_lifetime(&p.ty)) {
            errors.at_span(
                span,
                format!("`{option}` runs the body in the background, after the call returned, so the arguments must be owned: take `String` instead of `&str`, `Vec<T>` instead of `&[T]`"),
            );
        }
    }
    if let (Some((_, lit)), None) = (&args.stale_if_busy, &args.fail_safe) {
        errors.at(
            lit,
            "`stale_if_busy` serves the value fail-safe keeps instead of queueing; add \
             `fail_safe = \"1h\"` (and a `ttl`)",
        );
    }
    if let (Some((_, lit)), None) = (&args.soft_timeout, &args.fail_safe) {
        errors.at(
            lit,
            "`soft_timeout` serves the value fail-safe keeps while the body goes on; add \
             `fail_safe = \"1h\"` (and a `ttl`)",
        );
    }
    if let (Some((_, lit)), None) = (&args.refresh_ahead, &args.ttl) {
        errors.at(
            lit,
            "`refresh_ahead` refreshes an entry before its ttl ends, and this function's entries \
             never expire; add a `ttl = \"...\"`",
        );
    }
}

/// Fail-safe keeps entries past their ttl, so it needs one; its throttle needs it.
fn fail_safe_needs_an_expiry(args: &Args, errors: &mut Errors) {
    if !args.cache {
        // Said already: the option has no effect without the cache.
        return;
    }
    if let (Some((_, lit)), None) = (&args.fail_safe, &args.ttl) {
        errors.at(
            lit,
            "`fail_safe` keeps entries past their ttl, and this function's entries never \
             expire; add a `ttl = \"...\"` (e.g. `ttl = \"5m\", fail_safe = \"1h\"`)",
        );
    }
    if let (Some((_, lit)), Some((tiers, _))) = (&args.fail_safe, &args.tiers) {
        if !tiers.l1 {
            errors.at(
                lit,
                "`fail_safe` serves the kept value from L1, and `tiers` leaves L1 out; add `l1` \
                 to `tiers` or remove `fail_safe`",
            );
        }
    }
    if let (Some((_, lit)), None) = (&args.fail_safe_throttle, &args.fail_safe) {
        errors.at(
            lit,
            "`fail_safe_throttle` applies to fail-safe, which is off; add `fail_safe = \"1h\"` or \
             remove `fail_safe_throttle`",
        );
    }
}

/// A `const fn` may run at compile time, where there is no cache.
fn no_const_fn(shape: &Shape<'_>, errors: &mut Errors) {
    if let Some(c) = &shape.func.sig.constness {
        errors.at(
            c,
            "a `const fn` cannot be managed: it may run at compile time, where there is no \
             cache; remove `const`",
        );
    }
}

/// Variadic (C) functions have no arguments to hash.
fn no_variadic(shape: &Shape<'_>, errors: &mut Errors) {
    if let Some(v) = &shape.func.sig.variadic {
        errors.at(v, "variadic functions cannot be managed");
    }
}

/// One function has one cache, which cannot hold a value for every type parameter.
fn no_generic_parameters(shape: &Shape<'_>, errors: &mut Errors) {
    for param in &shape.func.sig.generics.params {
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
}

/// `impl Trait` arguments make the function generic.
fn no_impl_trait_arguments(shape: &Shape<'_>, errors: &mut Errors) {
    for param in &shape.params {
        ImplTraitFinder::report(
            &param.ty,
            errors,
            "`impl Trait` arguments make the function generic, which is not supported; \
             name a concrete type (e.g. `&str` instead of `impl AsRef<str>`)",
        );
    }
}

/// A cached value outlives the call, so it must own its data and have a nameable type; a
/// measured-only function still needs a named type, to tell `Err` and `None` apart.
fn return_type_is_cacheable(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    let Some(ty) = shape.ret else {
        return;
    };
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
}

/// L2 and L3 deserialize into owned data, so a borrowing return type cannot be stored there.
fn borrowed_return_stays_in_l1(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    let Some(ty) = shape.ret.filter(|ty| mentions_lifetime(ty)) else {
        return;
    };
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

/// With `key = ...` the expression alone decides the key, so `skip` would be ignored.
fn skip_without_key(args: &Args, errors: &mut Errors) {
    if let (Some((kw, _)), Some(_)) = (&args.skip, &args.key) {
        errors.at(
            kw,
            "`skip` has no effect together with `key = ...`: the key expression alone \
             decides the key; remove `skip(...)`",
        );
    }
}

/// `skip(...)` names arguments of the function, each once.
/// A tag's placeholders are filled from the arguments, so each must name one bound to a plain
/// name (not `self`, whose fields a `format!` placeholder cannot reach).
fn tags_name_arguments(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    let Some(tags) = &args.tags else {
        return;
    };
    for tag in tags {
        for name in &tag.names {
            if shape.named.iter().any(|n| n == name) {
                continue;
            }
            let arguments = shape
                .named
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>();
            let hint = if name == "self" {
                "; a tag cannot use `self`: pass what identifies the instance as an argument"
                    .to_owned()
            } else {
                String::new()
            };
            errors.at(
                &tag.lit,
                format!(
                    "`{{{name}}}` in this tag is not an argument of `{}`; arguments a tag can \
                     use: {}{hint}",
                    shape.func.sig.ident,
                    if arguments.is_empty() {
                        "none".to_owned()
                    } else {
                        arguments.join(", ")
                    }
                ),
            );
        }
    }
}

fn skip_names_arguments(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    let Some((_, list)) = &args.skip else {
        return;
    };
    let mut seen: Vec<&Ident> = Vec::new();
    for ident in list {
        if seen.contains(&ident) {
            errors.at(ident, format!("`{ident}` is skipped twice"));
        }
        seen.push(ident);
        if ident == "self" {
            if shape.receiver.is_none() {
                errors.at(ident, "`skip(self)`: this function has no `self` argument");
            }
        } else if !shape.named.contains(ident) {
            let list = std::iter::once("self")
                .filter(|_| shape.receiver.is_some())
                .map(str::to_owned)
                .chain(shape.named.iter().map(Ident::to_string))
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>();
            errors.at(
                ident,
                format!(
                    "`{ident}` is not an argument of `{}`; arguments that can be \
                     skipped: {}",
                    shape.func.sig.ident,
                    if list.is_empty() {
                        "none".to_owned()
                    } else {
                        list.join(", ")
                    }
                ),
            );
        }
    }
}

/// A `HashMap` or `HashSet` iterates in a random order, so two equal maps encode to
/// different bytes and would get different keys: refused in a hashed argument, with the three
/// ways out. (Seen by name only: an alias of one, or a struct holding one, is not caught;
/// docs/macro.md says so.)
fn unordered_collections_stay_out_of_the_key(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    if args.key.is_some() || !args.cache {
        return;
    }
    let skipped = |name: &Ident| {
        args.skip
            .as_ref()
            .is_some_and(|(_, list)| list.iter().any(|s| s == name))
    };
    for param in shape.params.iter().filter(|p| !skipped(&p.binding)) {
        if let Some(segment) = unordered_collection(&param.ty) {
            let ordered = if segment == "HashMap" {
                "BTreeMap"
            } else {
                "BTreeSet"
            };
            errors.at(
                &param.ty,
                format!(
                    "a `{segment}` argument makes an unstable cache key: it iterates in a random \
                     order, so equal values hash differently; take a `{ordered}` instead, leave \
                     the argument out with `skip({})`, or choose the key with `key = ...`",
                    param.binding
                ),
            );
        }
    }
}

/// `HashMap` or `HashSet` if the type mentions one by name.
fn unordered_collection(ty: &Type) -> Option<&'static str> {
    struct Finder(Option<&'static str>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_path_segment(&mut self, s: &'ast syn::PathSegment) {
            if s.ident == "HashMap" {
                self.0 = Some("HashMap");
            } else if s.ident == "HashSet" {
                self.0 = Some("HashSet");
            }
            syn::visit::visit_path_segment(self, s);
        }
    }
    let mut finder = Finder(None);
    finder.visit_type(ty);
    finder.0
}

/// An option that belongs to one kind (the option table says which) is refused on others,
/// saying why it has no use there.
fn options_fit_the_kind(args: &Args, kind: Kind, errors: &mut Errors) {
    for token in &args.given {
        let Some(spec) = options::find(&token.to_string()) else {
            continue;
        };
        let Kinds::Only(owner, reasons) = spec.kinds else {
            continue;
        };
        let Some((_, why)) = reasons.iter().find(|(k, _)| *k == kind) else {
            continue;
        };
        errors.at(
            token,
            format!(
                "`{}` applies to `{}` functions; this is {} `{}` function, where {why}; \
                 remove `{}`",
                spec.name,
                owner.name(),
                if kind == Kind::Io { "an" } else { "a" },
                kind.name(),
                spec.name
            ),
        );
    }
}

fn given<'a>(args: &'a Args, name: &str) -> Option<&'a Ident> {
    args.given.iter().find(|g| *g == name)
}

/// A sync body cannot be interrupted once it runs.
fn timeout_needs_async(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    if let (Some(token), None) = (given(args, "timeout"), &shape.func.sig.asyncness) {
        errors.at(
            token,
            "`timeout` needs an `async fn`: a sync body cannot be interrupted once it runs; \
             make the function async, or bound the work inside it (e.g. a client timeout)",
        );
    }
}

/// `backoff` is the delay between retries.
fn backoff_needs_retries(args: &Args, errors: &mut Errors) {
    if let (Some(token), None) = (given(args, "backoff"), args.retries) {
        errors.at(
            token,
            "`backoff` has no effect without `retries`; add `retries = N` or remove `backoff`",
        );
    }
}

/// Each retried attempt rebinds a fresh copy of every argument, which needs a name.
fn retries_need_named_arguments(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    if args.retries.unwrap_or(0) == 0 {
        return;
    }
    for p in &shape.params {
        if let Some(pat) = &p.destructure {
            errors.at(
                pat,
                "with `retries`, each attempt gets a fresh copy of the arguments, which \
                 needs a name to copy; bind this argument to a name and destructure it \
                 in the body",
            );
        }
    }
}

/// Each retried attempt needs the receiver again, so it cannot be consumed.
fn retries_need_a_borrowed_receiver(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    if args.retries.unwrap_or(0) == 0 {
        return;
    }
    if let Some(r) = shape.receiver.filter(|r| r.reference.is_none()) {
        errors.at(
            r,
            "with `retries`, each attempt needs the receiver again; take `&self` \
             instead of `self`",
        );
    }
}

/// An async cpu body runs on a pool thread with no async runtime.
fn no_await_in_async_cpu(shape: &Shape<'_>, errors: &mut Errors) {
    if shape.func.sig.asyncness.is_some() {
        AwaitFinder { errors }.visit_block(&shape.func.block);
    }
}

/// `cache = false` makes every caching option meaningless (the option table says which).
fn options_need_the_cache(args: &Args, errors: &mut Errors) {
    if args.cache {
        return;
    }
    for option in args
        .given
        .iter()
        .filter(|o| options::find(&o.to_string()).is_some_and(|spec| !spec.without_cache))
    {
        errors.at(
            option,
            format!(
                "`{option}` has no effect with `cache = false`: the function is measured, \
                 never cached; remove `{option}`"
            ),
        );
    }
}

/// `self` is not hashed, so a method's key must say which instance it belongs to.
fn method_key_names_the_instance(args: &Args, shape: &Shape<'_>, errors: &mut Errors) {
    let Some(r) = shape.receiver.filter(|_| args.cache) else {
        return;
    };
    let self_skipped = args
        .skip
        .as_ref()
        .is_some_and(|(_, list)| list.iter().any(|s| s == "self"));
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

/// Per-tier options only matter for tiers the function uses.
fn tier_options_need_their_tier(args: &Args, errors: &mut Errors) {
    let Some((tiers, _)) = &args.tiers else {
        return;
    };
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

/// Whether a type mentions a reference or a lifetime.
pub(crate) fn mentions_lifetime(ty: &Type) -> bool {
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
