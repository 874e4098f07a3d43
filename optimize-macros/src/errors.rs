//! Collects every error of one expansion so they are reported together (serde_derive's
//! `Ctxt`). It must be consumed with [`Errors::finish`]: dropping it unchecked is a bug in the
//! macro (an error found and then lost), so `Drop` panics then.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

#[derive(Default)]
pub(crate) struct Errors {
    all: Option<syn::Error>,
    finished: bool,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.all {
            Some(all) => all.combine(error),
            None => self.all = Some(error),
        }
    }

    pub(crate) fn at<T: ToTokens>(&mut self, tokens: T, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn at_span(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Every error as `compile_error!` invocations, or `Ok` when there was none.
    pub(crate) fn finish(mut self) -> Result<(), TokenStream> {
        self.finished = true;
        match self.all.take() {
            Some(e) => Err(e.to_compile_error()),
            None => Ok(()),
        }
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            panic!("optimize-macros: errors were collected but never reported (call `finish`)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reports_every_error() {
        let mut errors = Errors::default();
        errors.at_span(Span::call_site(), "first");
        errors.at_span(Span::call_site(), "second");
        let tokens = errors.finish().unwrap_err().to_string();
        assert!(
            tokens.contains("first") && tokens.contains("second"),
            "{tokens}"
        );
        assert!(Errors::default().finish().is_ok());
    }

    #[test]
    #[should_panic(expected = "never reported")]
    fn dropping_unfinished_errors_panics() {
        let mut errors = Errors::default();
        errors.at_span(Span::call_site(), "lost");
        drop(errors);
    }
}
