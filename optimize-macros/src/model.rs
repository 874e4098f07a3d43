//! From options and function to a plan: the function's shape, checked by every rule of
//! [`crate::check`], then the decisions expansion needs.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::{Expr, FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::args::{Args, Kind};
use crate::check::mentions_lifetime;
use crate::errors::Errors;

/// A validated plan for one annotated function: the options as parsed (checked by every
/// rule) and what expansion needs to know about the function.
pub(crate) struct Plan {
    /// The options, as parsed; the runtime supplies the defaults of those not given.
    pub(crate) options: Args,
    pub(crate) kind: Kind,
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
    /// Some argument (or the receiver) borrows: an async cpu body cannot be sent to the pool
    /// on its own, so the caller waits for it.
    pub(crate) args_borrow: bool,
    /// The argument and return types: the runtime hashes what they resolve to.
    pub(crate) types: Vec<Type>,
}

impl Plan {
    /// Extra attempts after an `Err` (0 without `retries`).
    pub(crate) fn retries(&self) -> u32 {
        self.options.retries.unwrap_or(0)
    }
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

/// The function as the rules see it: its parameters (with the bindings the rewritten
/// signature uses), receiver and return type.
pub(crate) struct Shape<'f> {
    pub(crate) func: &'f ItemFn,
    pub(crate) params: Vec<Param>,
    /// Parameters bound to a plain name (those `skip(...)` may name).
    pub(crate) named: Vec<Ident>,
    pub(crate) receiver: Option<&'f syn::Receiver>,
    /// Each argument type as written (for the schema hash).
    pub(crate) arg_types: Vec<String>,
    pub(crate) ret: Option<&'f Type>,
}

impl<'f> Shape<'f> {
    fn of(func: &'f ItemFn) -> Self {
        let mut shape = Shape {
            func,
            params: Vec::new(),
            named: Vec::new(),
            receiver: None,
            arg_types: Vec::new(),
            ret: match &func.sig.output {
                ReturnType::Default => None,
                ReturnType::Type(_, ty) => Some(ty),
            },
        };
        for (i, input) in func.sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(r) => shape.receiver = Some(r),
                FnArg::Typed(pt) => {
                    shape.arg_types.push(pt.ty.to_token_stream().to_string());
                    match &*pt.pat {
                        Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                            shape.named.push(pi.ident.clone());
                            shape.params.push(Param {
                                binding: pi.ident.clone(),
                                destructure: None,
                                ty: pt.ty.clone(),
                                mutable: pi.mutability.is_some(),
                            });
                        }
                        pat => shape.params.push(Param {
                            binding: format_ident!("__optimize_arg{}", i),
                            destructure: Some(Box::new(pat.clone())),
                            ty: pt.ty.clone(),
                            mutable: false,
                        }),
                    }
                }
            }
        }
        shape
    }
}

/// Checks the options against the function (every rule of [`crate::check`]) and builds the
/// plan. The plan is `None` only when no kind was given; other errors go to `errors`.
pub(crate) fn build(mut args: Args, func: &ItemFn, errors: &mut Errors) -> Option<Plan> {
    let shape = Shape::of(func);
    crate::check::all(&args, &shape, errors);

    let ret = shape
        .ret
        .map_or_else(|| quote!(()), |ty| ty.to_token_stream());
    let ret_borrows = shape.ret.is_some_and(mentions_lifetime);
    let args_borrow =
        shape.receiver.is_some() || shape.params.iter().any(|p| mentions_lifetime(&p.ty));
    let skip: Vec<Ident> = args
        .skip
        .as_ref()
        .map(|(_, list)| list.clone())
        .unwrap_or_default();
    let key = match args.key.take() {
        Some(expr) => KeySource::Expr(expr),
        None => KeySource::Args(
            shape
                .params
                .iter()
                .filter(|p| !skip.contains(&p.binding))
                .map(|p| p.binding.clone())
                .collect(),
        ),
    };
    let krate = match args.krate.take() {
        Some(path) => path.to_token_stream(),
        None => default_crate_path(),
    };
    let schema = schema_hash(&shape.arg_types, &ret.to_string());
    let mut types: Vec<Type> = shape.params.iter().map(|p| (*p.ty).clone()).collect();
    types.push(shape.ret.cloned().unwrap_or_else(|| syn::parse_quote!(())));
    Some(Plan {
        types,
        kind: args.kind?,
        options: args,
        krate,
        key,
        has_receiver: shape.receiver.is_some(),
        params: shape.params,
        is_async: func.sig.asyncness.is_some(),
        schema,
        ret,
        ret_borrows,
        args_borrow,
    })
}

/// Hash of the signature's types: changing an argument or return type changes every key, so
/// bytes written for the old types are never decoded as the new ones.
pub(crate) fn schema_hash(arg_types: &[String], ret: &str) -> u64 {
    let text = format!("({})->{}", arg_types.join(","), ret);
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

pub(crate) fn default_crate_path() -> TokenStream {
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
