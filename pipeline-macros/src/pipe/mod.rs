//! `pipe!(source | stage | stage(args).method(..) | { expr })` and
//! `segment!(stage | ...)`, in three phases: [`ast`] parses the input into
//! a syntax tree that keeps the user's tokens, [`valid`] checks it and
//! collects every mistake, [`expand`] generates the code. Errors become
//! tokens in one place, here.

mod ast;
mod expand;
mod valid;

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Error;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    pipe(input).unwrap_or_else(into_expr_error)
}

pub(crate) fn expand_segment(input: TokenStream) -> TokenStream {
    segment(input).unwrap_or_else(into_expr_error)
}

fn pipe(input: TokenStream) -> syn::Result<TokenStream> {
    if input.is_empty() {
        return Err(Error::new(
            Span::call_site(),
            "`pipe!` needs a source and stages: `pipe!(source | stage | ...)`",
        ));
    }
    let pipe = ast::pipe(input)?;
    valid::pipe(&pipe)?;
    Ok(expand::pipe(&pipe))
}

fn segment(input: TokenStream) -> syn::Result<TokenStream> {
    if input.is_empty() {
        return Err(Error::new(
            Span::call_site(),
            "`segment!` needs at least one stage: `segment!(stage | stage | ...)`",
        ));
    }
    let stages = ast::segment(input)?;
    valid::segment(&stages)?;
    Ok(expand::segment(&stages))
}

/// `pipe!` and `segment!` are expressions: several `compile_error!`s need a
/// block.
fn into_expr_error(e: Error) -> TokenStream {
    let errors = e.into_compile_error();
    quote!({ #errors })
}
