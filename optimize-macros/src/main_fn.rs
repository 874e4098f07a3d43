//! `#[optimize::main]`: flushes and shuts optimize down when the function returns, for
//! programs that use the lazy default instead of keeping an `install` guard.

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;

/// Expands `#[optimize::main]` on `item`, or returns the item with the errors.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if let Some(first) = attr.clone().into_iter().next() {
        errors.at(
            &first,
            "`#[optimize::main]` takes no options; configure optimize in optimize.toml, the \
             environment, or with `optimize::install(..)`",
        );
    }
    let func = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            errors.at_span(
                proc_macro2::Span::call_site(),
                "`#[optimize::main]` goes on the function that runs the program, such as `fn main()`",
            );
            return fallback(item, errors.finish());
        }
    };
    if let Some(asyncness) = &func.sig.asyncness {
        errors.at(
            asyncness,
            "`#[optimize::main]` goes on a synchronous function: write it *below* \
             `#[tokio::main]` (attributes apply from the top, so tokio's first makes `main` \
             synchronous), and optimize then shuts down after tokio's runtime has stopped",
        );
    }
    if let Err(e) = errors.finish() {
        return fallback(item, Err(e));
    }
    let krate = crate::model::default_crate_path();
    let syn::ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    quote! {
        #(#attrs)*
        #vis #sig {
            // Dropped when the function returns, by value, `?` or a panic: flushes queued
            // shared-tier writes and stops the pools (a no-op if optimize never started).
            let __optimize_exit = #krate::__private::ExitGuard::new();
            #block
        }
    }
}

fn fallback(item: TokenStream, errors: Result<(), TokenStream>) -> TokenStream {
    let mut out = item;
    out.extend(errors.err());
    out
}
