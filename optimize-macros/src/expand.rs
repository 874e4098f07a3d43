//! Code generation from a validated [`Plan`]. The generated code only wires the function to
//! the runtime (`<crate>::__private`); all behaviour lives there.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, PatIdent};

use crate::args::Kind;
use crate::model::{KeySource, Param, Plan};

pub(crate) fn expand(plan: &Plan, func: ItemFn) -> TokenStream {
    if !plan.options.cache {
        return expand_measured(plan, func);
    }
    let krate = &plan.krate;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let fn_name = &sig.ident;

    // The signature binds destructuring patterns to plain names; the body destructures them.
    let mut outer_sig = sig.clone();
    for (input, param) in outer_sig
        .inputs
        .iter_mut()
        .filter(|i| matches!(i, FnArg::Typed(_)))
        .zip(&plan.params)
    {
        if let FnArg::Typed(pt) = input {
            strip_mut_for_retries(plan, pt);
            if param.destructure.is_some() {
                *pt.pat = Pat::Ident(PatIdent {
                    attrs: Vec::new(),
                    by_ref: None,
                    mutability: None,
                    ident: param.binding.clone(),
                    subpat: None,
                });
            }
        }
    }
    let destructure: Vec<TokenStream> = plan
        .params
        .iter()
        .filter_map(|p| {
            let pat = p.destructure.as_ref()?;
            let binding = &p.binding;
            Some(quote!(let #pat = #binding;))
        })
        .collect();

    // Hashing whole arguments must happen before destructuring moves them; a key expression
    // may name destructured bindings, so it is evaluated after.
    let key = key_tokens(plan);
    let (key_before, key_after) = match plan.key {
        KeySource::Args(_) => (quote!(let __optimize_key = #key;), quote!()),
        KeySource::Expr(_) => (quote!(), quote!(let __optimize_key = #key;)),
    };

    let main_statics = site_tokens(plan, fn_name, Register::Yes);
    let site_statics = site_tokens(plan, fn_name, Register::No);
    // Spanned on the return type: "cannot be cached" errors point there.
    let ret_span = match &sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => sig.ident.span(),
    };
    // Explicit L2/L3 need a serializable value: checked here, reported on the return type.
    let require_shared = match &plan.options.tiers {
        Some((t, _)) if t.l2 || t.l3 => {
            let arg = quote_spanned!(ret_span=> __optimize_policy);
            quote! { let __optimize_policy = #krate::__private::require_shared(#arg); }
        }
        _ => quote!(),
    };
    // Serializable values may use L2/L3; others stay in L1.
    let codec = if plan.ret_borrows {
        quote!(let __optimize_codec = ::core::option::Option::None;)
    } else {
        quote! {
            let __optimize_codec = {
                #[allow(unused_imports)]
                use #krate::__private::{NoCodecProbe as _, SerdeCodecProbe as _};
                (&#krate::__private::codec_probe(&__optimize_policy)).codec()
            };
        }
    };
    let policy = policy_tokens(plan);
    let policy = quote! {
        #policy
        #require_shared
        #codec
    };
    // The receiver and method carry the return type's span: a return type that cannot be
    // cached fails the call's `CacheValue` bound, and that error then points at the type.
    let site = quote_spanned!(ret_span=> __optimize_site);
    let call_async = quote_spanned!(ret_span=> call_async);
    let call_sync = quote_spanned!(ret_span=> call_sync);
    let policy_arg = quote_spanned!(ret_span=> __optimize_policy);
    let body = routed_body(plan, &block, ret_span);
    // Tags are hashed from the arguments before the body takes them; each `format_args!`
    // carries its literal's span, so a placeholder whose argument is not `Display` is
    // reported on the tag.
    let (tags, call_async, call_sync, tags_arg) = match &plan.options.tags {
        Some(templates) => {
            let hashes = templates.iter().map(|t| {
                let lit = &t.lit;
                quote_spanned! {lit.span()=>
                    #krate::__private::tag_hash_fmt(::core::format_args!(#lit))
                }
            });
            (
                quote! { let __optimize_tags = [#(#hashes),*]; },
                quote_spanned!(ret_span=> call_async_tagged),
                quote_spanned!(ret_span=> call_sync_tagged),
                quote!(&__optimize_tags,),
            )
        }
        None => (quote!(), call_async, call_sync, quote!()),
    };
    // A body that may go on after the call returned (soft timeout, refresh-ahead) takes its
    // own entry point, which needs it to be `Send + 'static`.
    let background = plan.options.soft_timeout.is_some() || plan.options.refresh_ahead.is_some();
    let (call_async, call_sync, tags_arg) = match (background, plan.options.tags.is_some()) {
        (false, _) => (call_async, call_sync, tags_arg),
        (true, tagged) => (
            quote_spanned!(ret_span=> call_async_background),
            quote_spanned!(ret_span=> call_sync_background),
            if tagged { tags_arg } else { quote!(&[],) },
        ),
    };
    let call = if sig.asyncness.is_some() {
        let await_ = quote_spanned!(ret_span=> await);
        quote! {
            #site
                .#call_async(#policy_arg, __optimize_codec, __optimize_key, #tags_arg #body)
                .#await_
        }
    } else {
        quote! {
            #site.#call_sync(#policy_arg, __optimize_codec, __optimize_key, #tags_arg #body)
        }
    };

    // From the key to the call: the function's body as generated.
    let run_body = quote! {
        #key_before
        #tags
        #(#destructure)*
        #key_after
        #policy
        #call
    };
    let main = match &plan.options.predict {
        None => quote! {
            #(#attrs)*
            #vis #outer_sig {
                #main_statics
                #run_body
            }
        },
        Some((model, _)) => {
            let key_of = key_of_tokens(plan, &key_before, &key_after, &destructure);
            let parts = Predicting {
                attrs: &attrs,
                vis: &vis,
                sig: &outer_sig,
                statics: &main_statics,
                run_body,
                key_of,
                stepper: stepper_tokens(plan, model),
            };
            predicting_main(plan, parts)
        }
    };

    let cache_fn = format_ident!("{}_cache", fn_name);
    let invalidate_fn = format_ident!("{}_invalidate", fn_name);
    let cache_doc = format!(
        "Cache handle of [`{fn_name}`](#): statistics, size and invalidation of every entry \
         (generated by `#[optimize::{}]`).",
        plan.kind.name()
    );
    let invalidate_doc = format!(
        "Removes the cached result of `{fn_name}` for these arguments; `true` if there was one \
         (generated by `#[optimize::{}]`).",
        plan.kind.name()
    );

    // The invalidation companion takes the same arguments, but only borrows `self`.
    let mut invalidate_sig = outer_sig.clone();
    invalidate_sig.ident = invalidate_fn;
    invalidate_sig.asyncness = None;
    invalidate_sig.output = syn::parse_quote!(-> bool);
    for input in invalidate_sig.inputs.iter_mut() {
        if let FnArg::Receiver(r) = input {
            *input = FnArg::Receiver(syn::parse_quote_spanned!(r.span()=> &self));
        } else if let FnArg::Typed(pt) = input {
            if let Pat::Ident(pi) = &mut *pt.pat {
                pi.mutability = None;
            }
        }
    }

    quote! {
        #main

        #[doc = #cache_doc]
        #[allow(dead_code)]
        #vis fn #cache_fn() -> &'static #krate::Site {
            #site_statics
            __optimize_site
        }

        #[doc = #invalidate_doc]
        #[allow(
            dead_code,
            unused_variables,
            clippy::needless_pass_by_value,
            clippy::too_many_arguments
        )]
        #vis #invalidate_sig {
            #site_statics
            #key_before
            #(#destructure)*
            #key_after
            match __optimize_key {
                ::core::option::Option::Some(key) => __optimize_site.invalidate(key),
                ::core::option::Option::None => false,
            }
        }
    }
}

/// The pieces of a function with `predict` that [`predicting_main`] puts together.
struct Predicting<'a> {
    attrs: &'a [syn::Attribute],
    vis: &'a syn::Visibility,
    sig: &'a syn::Signature,
    statics: &'a TokenStream,
    /// What the function does today, from the key to the call.
    run_body: TokenStream,
    key_of: TokenStream,
    stepper: TokenStream,
}

/// A function with `predict`: its call becomes a closure of its arguments (`__optimize_run`),
/// so the prefetch of a predicted argument set can make the very same call without naming the
/// function (`f` or `Self::f`, which the attribute cannot tell apart). Before each call, the
/// runtime's model learns from it and starts the prefetches it expects.
fn predicting_main(plan: &Plan, p: Predicting<'_>) -> TokenStream {
    let ret = &plan.ret;
    let (attrs, vis, statics, run_body, key_of, stepper) = (
        p.attrs,
        p.vis,
        p.statics,
        &p.run_body,
        &p.key_of,
        &p.stepper,
    );
    // The closure takes the arguments as the signature binds them (`mut` included); the
    // function itself only hands them over.
    let closure_params: Vec<TokenStream> = p
        .sig
        .inputs
        .iter()
        .filter_map(|i| match i {
            FnArg::Typed(pt) => Some(pt.to_token_stream()),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let mut sig = p.sig.clone();
    for input in sig.inputs.iter_mut() {
        if let FnArg::Typed(pt) = input {
            if let Pat::Ident(pi) = &mut *pt.pat {
                pi.mutability = None;
            }
        }
    }
    let bindings: Vec<&syn::Ident> = plan.params.iter().map(|p| &p.binding).collect();
    let types: Vec<&syn::Type> = plan.params.iter().map(|p| &*p.ty).collect();
    if plan.is_async {
        quote! {
            #(#attrs)*
            #vis #sig {
                #statics
                let __optimize_run = move |#(#closure_params),*| async move { #run_body };
                let __optimize_args = (#(#bindings,)*);
                #[allow(unused_variables)]
                let __optimize_key_of = #key_of;
                __optimize_site.predict_async(
                    &__optimize_args,
                    __optimize_key_of,
                    #stepper,
                    move |(#(#bindings,)*): (#(#types,)*)| async move {
                        let _ = __optimize_run(#(#bindings),*).await;
                    },
                );
                let (#(#bindings,)*) = __optimize_args;
                __optimize_run(#(#bindings),*).await
            }
        }
    } else {
        quote! {
            #(#attrs)*
            #vis #sig {
                #statics
                let __optimize_run = move |#(#closure_params),*| -> #ret { #run_body };
                let __optimize_args = (#(#bindings,)*);
                #[allow(unused_variables)]
                let __optimize_key_of = #key_of;
                __optimize_site.predict_sync(
                    &__optimize_args,
                    __optimize_key_of,
                    #stepper,
                    move |(#(#bindings,)*): (#(#types,)*)| {
                        let _ = __optimize_run(#(#bindings),*);
                    },
                );
                let (#(#bindings,)*) = __optimize_args;
                __optimize_run(#(#bindings),*)
            }
        }
    }
}

/// The closure computing the key of an argument tuple, as the call computes it: arguments
/// hashed whole are borrowed from the tuple; a `key = ...` expression or a destructuring
/// pattern gets its own copies.
fn key_of_tokens(
    plan: &Plan,
    key_before: &TokenStream,
    key_after: &TokenStream,
    destructure: &[TokenStream],
) -> TokenStream {
    let krate = &plan.krate;
    let bindings: Vec<&syn::Ident> = plan.params.iter().map(|p| &p.binding).collect();
    let types: Vec<&syn::Type> = plan.params.iter().map(|p| &*p.ty).collect();
    let borrowed = matches!(plan.key, KeySource::Args(_)) && destructure.is_empty();
    let bind = if borrowed {
        quote!(let (#(#bindings,)*) = __optimize_args;)
    } else {
        quote!(let (#(#bindings,)*) = ::core::clone::Clone::clone(__optimize_args);)
    };
    quote! {
        |__optimize_args: &(#(#types,)*)| -> ::core::option::Option<#krate::__private::ArgsKey> {
            #bind
            #key_before
            #(#destructure)*
            #key_after
            __optimize_key
        }
    }
}

/// `Some(Stepper { .. })` for `predict = "sequential"`: reads and steps the named integer
/// argument of the tuple (errors about a type that is not an integer point at it); `None`
/// for markov.
fn stepper_tokens(plan: &Plan, model: &crate::args::Predict) -> TokenStream {
    let krate = &plan.krate;
    let crate::args::Predict::Sequential(name) = model else {
        return quote!(::core::option::Option::None);
    };
    let index = match name {
        Some(name) => plan.params.iter().position(|p| p.binding == name.as_str()),
        None => Some(0),
    };
    let Some(index) = index else {
        // Reported by the checks.
        return quote!(::core::option::Option::None);
    };
    let ty = &plan.params[index].ty;
    let types: Vec<&syn::Type> = plan.params.iter().map(|p| &*p.ty).collect();
    let field = syn::Index::from(index);
    let position = quote_spanned! {ty.span()=>
        <#ty as #krate::__private::Step>::position(&__optimize_args.#field)
    };
    let advance = quote_spanned! {ty.span()=>
        <#ty as #krate::__private::Step>::advance(&__optimize_args.#field, __optimize_by)
    };
    quote! {
        ::core::option::Option::Some(#krate::__private::Stepper::<(#(#types,)*)> {
            position: |__optimize_args| ::core::option::Option::Some(#position),
            advance: |__optimize_args, __optimize_by| {
                let mut __optimize_next = ::core::clone::Clone::clone(__optimize_args);
                __optimize_next.#field = #advance?;
                ::core::option::Option::Some(__optimize_next)
            },
        })
    }
}

/// `cache = false`: the body runs on every call and is measured; only the `_cache()` companion
/// (statistics) is generated. The signature is kept as written.
fn expand_measured(plan: &Plan, func: ItemFn) -> TokenStream {
    let krate = &plan.krate;
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = func;
    for input in sig.inputs.iter_mut() {
        if let FnArg::Typed(pt) = input {
            strip_mut_for_retries(plan, pt);
        }
    }
    let fn_name = &sig.ident;
    let main_statics = site_tokens(plan, fn_name, Register::Yes);
    let site_statics = site_tokens(plan, fn_name, Register::No);
    let policy = policy_tokens(plan);
    let ret_span = match &sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => sig.ident.span(),
    };
    let body = routed_body(plan, &block, ret_span);
    let call = if sig.asyncness.is_some() {
        quote!(__optimize_site.call_measured_async(__optimize_policy, #body).await)
    } else {
        quote!(__optimize_site.call_measured_sync(__optimize_policy, #body))
    };
    let cache_fn = format_ident!("{}_cache", fn_name);
    let cache_doc = format!(
        "Statistics of [`{fn_name}`](#), which is measured but never cached (generated by \
         `#[optimize::{}(cache = false)]`).",
        plan.kind.name()
    );
    quote! {
        #(#attrs)*
        #vis #sig {
            #main_statics
            #policy
            #call
        }

        #[doc = #cache_doc]
        #[allow(dead_code)]
        #vis fn #cache_fn() -> &'static #krate::Site {
            #site_statics
            __optimize_site
        }
    }
}

/// With `retries`, each attempt rebinds a fresh copy of every argument; the signature's own
/// bindings are then only copied from, so `mut` moves to the copies.
fn strip_mut_for_retries(plan: &Plan, pt: &mut syn::PatType) {
    if plan.retries() > 0 {
        if let Pat::Ident(pi) = &mut *pt.pat {
            pi.mutability = None;
        }
    }
}

/// The body, wrapped for its kind (docs/pools.md): a closure for a sync function, a future for an
/// async one. The runtime's `Site` methods named here decide where and when it runs.
fn routed_body(plan: &Plan, block: &syn::Block, ret_span: proc_macro2::Span) -> TokenStream {
    let krate = &plan.krate;
    let ret = &plan.ret;
    let on_timeout = match plan.options.timeout {
        Some(_) => {
            let f = quote_spanned! {ret_span=>
                <#ret as #krate::__private::TimeoutOutput>::timed_out
            };
            quote!(::core::option::Option::Some(#f as fn(_) -> _))
        }
        None => quote!(::core::option::Option::None),
    };
    let should_retry = quote_spanned! {ret_span=>
        <#ret as #krate::__private::RetryOutput>::should_retry
    };
    // Each attempt gets its own copies; the originals stay for the next one.
    let clones: Vec<TokenStream> = plan
        .params
        .iter()
        .map(|p| {
            let name = &p.binding;
            let mutability = p.mutable.then(|| quote!(mut));
            quote_spanned! {p.ty.span()=>
                let #mutability #name = ::core::clone::Clone::clone(&#name);
            }
        })
        .collect();
    let site = quote!(__optimize_site);
    let retrying = plan.retries() > 0;
    // How the return type answers a full queue, chosen by trait dispatch (`None`: it waits).
    let rej = quote! {
        {
            #[allow(unused_imports)]
            use #krate::__private::{CanReject as _, WaitsInstead as _};
            (&#krate::__private::RejectProbe::<#ret>::NEW).on_rejected()
        }
    };
    match (plan.is_async, plan.kind) {
        (false, Kind::Io) if retrying => quote! {
            move || #site.io_sync(#rej, #should_retry, || -> #ret { #(#clones)* #block })
        },
        (false, Kind::Io) => quote!(move || #site.io_sync_once(#rej, move || -> #ret #block)),
        (false, Kind::Cpu) => quote!(move || #site.cpu_sync(#rej, move || -> #ret #block)),
        (false, Kind::Memory) => quote!(move || #site.memory_sync(#rej, move || -> #ret #block)),
        (true, Kind::Io) if retrying => quote! {
            #site.io_async(#rej, #on_timeout, #should_retry, move || {
                #(#clones)*
                async move #block
            })
        },
        (true, Kind::Io) => quote!(#site.io_async_once(#rej, #on_timeout, async move #block)),
        // Owned arguments travel to the pool with the body; borrowed ones cannot outlive the
        // call, so the caller waits for the pool instead.
        (true, Kind::Cpu) if plan.args_borrow => {
            quote!(#site.cpu_async_borrowed(#rej, move || -> #ret #block))
        }
        (true, Kind::Cpu) => quote!(#site.cpu_async(#rej, move || -> #ret #block)),
        (true, Kind::Memory) => quote!(#site.memory_async(#rej, async move #block)),
    }
}

/// `let __optimize_policy = ...;`: what the return type means for the cache, chosen by trait
/// dispatch on the declared type (see the runtime's `policy` module).
fn policy_tokens(plan: &Plan) -> TokenStream {
    let krate = &plan.krate;
    let ret = &plan.ret;
    quote! {
        let __optimize_policy = {
            #[allow(unused_imports)]
            use #krate::__private::{OptionProbe as _, ResultProbe as _, ValueProbe as _};
            (&#krate::__private::Probe::<#ret>::NEW).policy()
        };
    }
}

/// The expression computing the call's key (`Option<ArgsKey>`). Each hashed value is spanned
/// on the user's token, so "not Serialize" errors point at the argument or key expression.
fn key_tokens(plan: &Plan) -> TokenStream {
    let krate = &plan.krate;
    let pushes: Vec<TokenStream> = match &plan.key {
        KeySource::Args(bindings) => bindings
            .iter()
            .map(|b| {
                quote_spanned! {b.span()=>
                    #krate::__private::KeyPart::write_key(&#b, &mut __optimize_hasher);
                }
            })
            .collect(),
        KeySource::Expr(expr) => vec![quote_spanned! {expr.span()=>
            #krate::__private::KeyPart::write_key(&(#expr), &mut __optimize_hasher);
        }],
    };
    quote! {
        {
            let mut __optimize_hasher = #krate::__private::KeyHasher::new();
            #(#pushes)*
            __optimize_hasher.finish()
        }
    }
}

/// Whether a function's statics register it with the runtime: the function's own do; its
/// companions' (same id) only resolve the same site.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Register {
    Yes,
    No,
}

/// The statics binding this function to its runtime site, and `__optimize_site`.
///
/// `SiteMeta` is built with `const fn` calls, one per option the user wrote, so every default
/// lives in the runtime (tokio-macros emits builder calls for the same reason).
fn site_tokens(plan: &Plan, fn_name: &syn::Ident, register: Register) -> TokenStream {
    let krate = &plan.krate;
    let fn_name_str = fn_name.to_string();
    let kind = match plan.kind {
        Kind::Io => quote!(Io),
        Kind::Cpu => quote!(Cpu),
        Kind::Memory => quote!(Memory),
    };
    let duration = |d: std::time::Duration| {
        let nanos = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        quote!(#krate::__private::Duration::from_nanos(#nanos))
    };
    // One builder call per option the user wrote; the option table names the method.
    let mut calls: Vec<TokenStream> = Vec::new();
    let mut call = |option: &str, arg: Option<TokenStream>| {
        let method = crate::options::find(option)
            .and_then(|spec| spec.meta)
            .unwrap_or_else(|| panic!("`{option}` has no SiteMeta method in options.rs"));
        let method = format_ident!("{method}");
        calls.push(match arg {
            Some(arg) => quote!(.#method(#arg)),
            None => quote!(.#method()),
        });
    };
    if let Some(name) = &plan.options.name {
        call("name", Some(name.into_token_stream()));
    }
    let o = &plan.options;
    if !o.cache {
        call("cache", None);
    }
    if !o.lease {
        call("lease", None);
    }
    if let Some((d, _)) = o.ttl {
        call("ttl", Some(duration(d)));
    }
    if let Some((t, _)) = &o.tiers {
        let (l1, l2, l3) = (t.l1, t.l2, t.l3);
        call("tiers", Some(quote!(#l1, #l2, #l3)));
    }
    if let Some((d, _)) = o.l2_ttl {
        call("l2_ttl", Some(duration(d)));
    }
    if let Some((d, _)) = o.fail_safe {
        call("fail_safe", Some(duration(d)));
    }
    if let Some((d, _)) = o.fail_safe_throttle {
        call("fail_safe_throttle", Some(duration(d)));
    }
    if let Some((d, _)) = o.soft_timeout {
        call("soft_timeout", Some(duration(d)));
    }
    if let Some((r, _)) = o.refresh_ahead {
        call("refresh_ahead", Some(quote!(#r)));
    }
    if let Some((n, _)) = &o.stale_if_busy {
        call("stale_if_busy", Some(quote!(#n)));
    }
    if let Some((model, _)) = &o.predict {
        let variant = match model {
            crate::args::Predict::Markov => quote!(Markov),
            crate::args::Predict::Sequential(_) => quote!(Sequential),
        };
        call(
            "predict",
            Some(quote!(#krate::__private::PredictModel::#variant)),
        );
    }
    if let Some((c, _)) = o.predict_confidence {
        call("predict_confidence", Some(quote!(#c)));
    }
    if let Some((d, _)) = &o.predict_depth {
        call("predict_depth", Some(quote!(#d)));
    }
    if let Some((d, _)) = o.l3_ttl {
        call("l3_ttl", Some(duration(d)));
    }
    if let Some((n, _)) = o.compress_above {
        call("compress_above", Some(n.into_token_stream()));
    }
    if let Some(v) = o.version.filter(|v| *v != 0) {
        call("version", Some(v.into_token_stream()));
    }
    if let Some((p, _)) = o.priority {
        let variant = format_ident!("{}", p.variant());
        call(
            "priority",
            Some(quote!(#krate::__private::Priority::#variant)),
        );
    }
    if let Some(c) = o.concurrency {
        call("concurrency", Some(c.into_token_stream()));
    }

    if let Some((d, _)) = o.timeout {
        call("timeout", Some(duration(d)));
    }
    if let Some(n) = o.retries.filter(|n| *n != 0) {
        call("retries", Some(n.into_token_stream()));
    }
    if let Some((d, _)) = o.backoff {
        call("backoff", Some(duration(d)));
    }
    if let Some(m) = o.mem {
        call("mem", Some(m.into_token_stream()));
    }
    if let Some(v) = o.level {
        let v = format_ident!("{v}");
        call("level", Some(quote!(#krate::__private::Level::#v)));
    }
    match (o.capacity, &o.capacity_size) {
        // Last of the option calls (the closure's borrow ends in this match). A size bounds the function's L1 in bytes, whatever its kind.
        (Some(c), Some(_)) => calls.push(quote!(.capacity_bytes(#c))),
        (Some(c), None) => call("capacity", Some(c.into_token_stream())),
        (None, _) => {}
    }
    if let Some((min, max)) = o.adaptive_concurrency {
        calls.push(quote!(.adaptive_concurrency(#min, #max)));
    }
    // Not options: the signature says them.
    if plan.has_receiver {
        calls.push(quote!(.receiver()));
    }
    // What the signature's types resolve to, hashed at the first call (a closure in the body
    // can name the impl's generics and `Self`, which an item could not).
    // Named with `'static` for every lifetime (type names and sizes do not depend on them),
    // so the companions, whose signatures lack the function's lifetimes, can name them too.
    let types: Vec<syn::Type> = plan.types.iter().cloned().map(static_lifetimes).collect();
    // One generic function per signature, shared by the function and its companions (a
    // closure is compiled once per use); a closure past the tuples the runtime implements.
    let types_fn = if types.len() <= 12 {
        quote! {
            ::core::option::Option::Some(
                #krate::__private::type_schema_of::<(#(#types,)*)> as fn() -> u64
            )
        }
    } else {
        quote! {
            ::core::option::Option::Some((|| #krate::__private::type_schema(
                &[#(::core::any::type_name::<#types>()),*],
                &[#(::core::mem::size_of::<#types>()),*],
            )) as fn() -> u64)
        }
    };
    let json_key = json_key_tokens(plan);
    let schema = plan.schema;
    let is_async = plan.is_async;
    let owner = if plan.has_receiver {
        quote!(::core::option::Option::Some(
            ::core::any::type_name::<Self> as fn() -> &'static str
        ))
    } else {
        quote!(::core::option::Option::None)
    };
    // Registration puts the function in the runtime's list before any call (linkme).
    let registration = match register {
        Register::Yes => quote! {
            #[#krate::__private::linkme::distributed_slice(#krate::__private::FUNCTIONS)]
            #[linkme(crate = #krate::__private::linkme)]
        },
        Register::No => quote!(),
    };
    quote! {
        #registration
        static __OPTIMIZE_META: #krate::__private::SiteMeta = #krate::__private::SiteMeta::new(
            ::core::concat!(
                ::core::module_path!(), "::", #fn_name_str, "@",
                ::core::file!(), ":", ::core::line!(), ":", ::core::column!()
            ),
            ::core::module_path!(),
            #fn_name_str,
            #krate::__private::Kind::#kind,
            #is_async,
            #schema,
        )
        #(#calls)*;
        static __OPTIMIZE_SITE: #krate::__private::SiteSlot =
            #krate::__private::SiteSlot::new(&__OPTIMIZE_META);
        let __optimize_site = __OPTIMIZE_SITE.get(#owner, #types_fn, #json_key);
    }
}

/// `Some(fn)` computing the key from the key arguments given as JSON (for invalidation over
/// HTTP and the CLI), read into owned types (`&str` as `String`, `&[T]` as `Vec<T>`, `&T` as
/// `T`), which serialize as the borrowed ones do, so the key is the call's. A closure in the
/// body can name the impl's generics and `Self`. Types that are not `Deserialize` (or not
/// `Serialize`, reported once, on the call's own key) make it answer an error at run time
/// (a probe), never a compile error. `None` without a cache, or
/// with a key expression or a destructured argument: the arguments alone do not give the
/// key there.
fn json_key_tokens(plan: &Plan) -> TokenStream {
    let krate = &plan.krate;
    let KeySource::Args(bindings) = &plan.key else {
        return quote!(::core::option::Option::None);
    };
    if !plan.options.cache {
        return quote!(::core::option::Option::None);
    }
    let params: Vec<&Param> = bindings
        .iter()
        .filter_map(|b| plan.params.iter().find(|p| &p.binding == b))
        .collect();
    if params.len() != bindings.len() || params.iter().any(|p| p.destructure.is_some()) {
        return quote!(::core::option::Option::None);
    }
    let owned: Vec<syn::Type> = params.iter().map(|p| owned_type(&p.ty)).collect();
    let names: Vec<String> = bindings.iter().map(ToString::to_string).collect();
    quote! {
        ::core::option::Option::Some((|__optimize_json: &#krate::__private::JsonValue| {
            #[allow(unused_imports)]
            use #krate::__private::{JsonArgsDecode as _, JsonArgsRefuse as _};
            (&#krate::__private::JsonArgs::<(#(#owned,)*)>::NEW)
                .key(__optimize_json, &[#(#names),*])
        }) as #krate::__private::JsonKeyFn)
    }
}

/// The owned type a borrowed parameter is read into from JSON.
fn owned_type(ty: &syn::Type) -> syn::Type {
    match ty {
        syn::Type::Reference(r) => match &*r.elem {
            syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                syn::parse_quote!(::std::string::String)
            }
            syn::Type::Slice(slice) => {
                let elem = static_lifetimes((*slice.elem).clone());
                syn::parse_quote!(::std::vec::Vec<#elem>)
            }
            elem => static_lifetimes(elem.clone()),
        },
        syn::Type::Paren(p) => owned_type(&p.elem),
        other => static_lifetimes(other.clone()),
    }
}

/// `ty` with every lifetime replaced by `'static`.
fn static_lifetimes(mut ty: syn::Type) -> syn::Type {
    struct ToStatic;
    impl syn::visit_mut::VisitMut for ToStatic {
        fn visit_lifetime_mut(&mut self, l: &mut syn::Lifetime) {
            l.ident = syn::Ident::new("static", l.ident.span());
        }
        fn visit_type_reference_mut(&mut self, r: &mut syn::TypeReference) {
            if r.lifetime.is_none() {
                r.lifetime = Some(syn::Lifetime::new("'static", r.and_token.span));
            }
            syn::visit_mut::visit_type_reference_mut(self, r);
        }
    }
    syn::visit_mut::VisitMut::visit_type_mut(&mut ToStatic, &mut ty);
    ty
}
