//! Procedural macros of parapipe. Use them through the `parapipe` crate,
//! where they are documented.

#![deny(missing_docs)]

mod attr;
mod expand;
mod pipe;
mod sig;

use proc_macro::TokenStream;

/// See `parapipe::stage`.
#[proc_macro_attribute]
pub fn stage(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::stage(args.into(), item.into(), sig::Flavor::Iter).into()
}

/// See `parapipe::map_stage`.
#[proc_macro_attribute]
pub fn map_stage(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::stage(args.into(), item.into(), sig::Flavor::Map).into()
}

/// See `parapipe::segment`.
#[proc_macro]
pub fn segment(input: TokenStream) -> TokenStream {
    pipe::expand_segment(input.into()).into()
}

/// See `parapipe::pipe`.
#[proc_macro]
pub fn pipe(input: TokenStream) -> TokenStream {
    pipe::expand(input.into()).into()
}
