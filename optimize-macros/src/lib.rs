//! The `#[optimize::io]`, `#[optimize::cpu]`, `#[optimize::memory]` and
//! `#[optimize::optimize(kind, ...)]` attributes. Use them through the `optimize` crate.
//!
//! All four are one implementation: parse the options ([`args`], against the table in
//! [`options`]), model the function and check every rule ([`model`], [`check`]), and generate
//! code that calls the runtime ([`expand`]).
//! On any error the user's function is emitted unchanged next to the errors, so one mistake
//! does not cascade into errors at every call site.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::ToTokens;

mod args;
mod check;
mod errors;
mod expand;
mod main_fn;
mod model;
mod options;

use args::Entry;
use errors::Errors;

/// Manages an I/O-bound function: caches its results and records its calls.
/// See the `optimize` crate for the options.
#[proc_macro_attribute]
pub fn io(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry(Entry::Io, attr.into(), item.into()).into()
}

/// Manages a CPU-bound function: caches its results and records its calls.
/// See the `optimize` crate for the options.
#[proc_macro_attribute]
pub fn cpu(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry(Entry::Cpu, attr.into(), item.into()).into()
}

/// Manages a memory-heavy function: caches its results and records its calls.
/// See the `optimize` crate for the options.
#[proc_macro_attribute]
pub fn memory(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry(Entry::Memory, attr.into(), item.into()).into()
}

/// The general form, `#[optimize::optimize(io | cpu | memory, ...)]`: the kind comes first.
/// See the `optimize` crate for the options.
#[proc_macro_attribute]
pub fn optimize(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry(Entry::General, attr.into(), item.into()).into()
}

/// Shuts optimize down when the function returns — by value, `?` or a panic — so that writes
/// queued for Redis and the disk are not lost when a program using the lazy default (no
/// `optimize::install` guard) ends. Put it on `main`; with `#[tokio::main]`, below it.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    main_fn::expand(attr.into(), item.into()).into()
}

fn entry(entry: Entry, attr: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = Errors::default();
    let args = args::parse(entry, attr, &mut errors);
    let func = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(func)) => func,
        Ok(other) => {
            errors.at_span(item_keyword_span(&other), not_a_function(&other));
            return fallback(item, errors.finish());
        }
        Err(e) => {
            errors.push(e);
            return fallback(item, errors.finish());
        }
    };
    let plan = args.and_then(|args| model::build(args, &func, &mut errors));
    match (errors.finish(), plan) {
        (Ok(()), Some(plan)) => expand::expand(&plan, func),
        (Err(compile_errors), _) => fallback(item, Err(compile_errors)),
        (Ok(()), None) => unreachable!("a plan is missing only when an error says why"),
    }
}

/// The user's item exactly as written, followed by the errors.
fn fallback(item: TokenStream2, errors: Result<(), TokenStream2>) -> TokenStream2 {
    let mut out = item;
    out.extend(errors.err());
    out
}

fn not_a_function(item: &syn::Item) -> String {
    let what = match item {
        syn::Item::Struct(_) => "a struct",
        syn::Item::Enum(_) => "an enum",
        syn::Item::Impl(_) => "an impl block (put it on the methods inside)",
        syn::Item::Trait(_) => "a trait",
        syn::Item::Mod(_) => "a module",
        syn::Item::Const(_) => "a constant",
        syn::Item::Static(_) => "a static",
        syn::Item::Type(_) => "a type alias",
        syn::Item::Union(_) => "a union",
        syn::Item::Use(_) => "a `use` item",
        _ => "this item",
    };
    format!("the optimize attributes apply to functions with a body, not to {what}")
}

fn item_keyword_span(item: &syn::Item) -> Span {
    let tokens = match item {
        syn::Item::Struct(i) => i.struct_token.to_token_stream(),
        syn::Item::Enum(i) => i.enum_token.to_token_stream(),
        syn::Item::Impl(i) => i.impl_token.to_token_stream(),
        syn::Item::Trait(i) => i.trait_token.to_token_stream(),
        syn::Item::Mod(i) => i.mod_token.to_token_stream(),
        syn::Item::Const(i) => i.const_token.to_token_stream(),
        syn::Item::Static(i) => i.static_token.to_token_stream(),
        syn::Item::Type(i) => i.type_token.to_token_stream(),
        syn::Item::Union(i) => i.union_token.to_token_stream(),
        syn::Item::Use(i) => i.use_token.to_token_stream(),
        other => other.to_token_stream(),
    };
    tokens
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}
