//! The syntax tree of `pipe!` and `segment!`: the source and the stages
//! between top-level `|`s, each keeping the user's tokens (and so their
//! spans), or, where they did not parse, the error to report there.

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Error, Expr, Ident, Token};

/// `pipe!(...)`, parsed.
pub(crate) struct Pipe {
    /// `serial:`, `distributed(job):`, or neither.
    pub(crate) mode: Mode,
    /// What stands before the first `|`.
    pub(crate) source: Slot<Expr>,
    pub(crate) stages: Vec<Slot<Element>>,
}

pub(crate) enum Mode {
    Parallel,
    Serial,
    Distributed(Expr),
}

/// What stands between two `|`s (or before the first).
pub(crate) struct Slot<T> {
    /// The `|` before it (the whole call for the first).
    pub(crate) bar: Span,
    pub(crate) item: Parsed<T>,
}

pub(crate) enum Parsed<T> {
    Item(T),
    /// Nothing at all: `a | | b`.
    Empty,
    /// Tokens that do not parse as one.
    Invalid(Error),
}

impl<T: Parse> Slot<T> {
    fn parse((bar, tokens): (Span, TokenStream)) -> Self {
        let item = match tokens.is_empty() {
            true => Parsed::Empty,
            false => match T::parse.parse2(tokens) {
                Ok(item) => Parsed::Item(item),
                Err(e) => Parsed::Invalid(e),
            },
        };
        Slot { bar, item }
    }
}

impl<T> Slot<T> {
    pub(crate) fn get(&self) -> Option<&T> {
        match &self.item {
            Parsed::Item(item) => Some(item),
            _ => None,
        }
    }
}

/// A stage of `pipe!`.
pub(crate) struct Element {
    pub(crate) base: Base,
    pub(crate) methods: Vec<Method>,
}

pub(crate) enum Base {
    /// `add_n` or `add_n(7)`: a stage function, built with `add_n::new(7)`.
    Named {
        path: syn::Path,
        args: Option<(syn::token::Paren, Punctuated<Expr, Token![,]>)>,
    },
    /// `{ expr }`: any value that implements `Stage`.
    Value(syn::Block),
    /// `segment!(...)`, or any other macro whose value is a stage.
    Macro(syn::ExprMacro),
}

/// `.workers(2)`: a builder method applied to the stage.
pub(crate) struct Method {
    pub(crate) dot: Token![.],
    pub(crate) name: Ident,
    pub(crate) turbofish: Option<syn::AngleBracketedGenericArguments>,
    pub(crate) paren: syn::token::Paren,
    pub(crate) args: Punctuated<Expr, Token![,]>,
}

impl Parse for Element {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let base = if input.peek(syn::token::Brace) {
            Base::Value(input.parse()?)
        } else if input.peek(Ident)
            || input.peek(Token![::])
            || input.peek(Token![crate])
            || input.peek(Token![self])
            || input.peek(Token![super])
        {
            // Expression-style, so `scale::<u64>` parses and `(7)` is left for the arguments.
            let path = input.parse::<syn::ExprPath>()?.path;
            if input.peek(Token![!]) {
                let bang = input.parse()?;
                let (delimiter, tokens) = input.step(|cursor| match cursor.token_tree() {
                    Some((proc_macro2::TokenTree::Group(g), rest)) => {
                        Ok(((g.delimiter(), g), rest))
                    }
                    _ => Err(cursor.error("expected `(...)` after `!`")),
                })?;
                let delimiter = match delimiter {
                    proc_macro2::Delimiter::Parenthesis => {
                        syn::MacroDelimiter::Paren(syn::token::Paren(tokens.delim_span()))
                    }
                    proc_macro2::Delimiter::Brace => {
                        syn::MacroDelimiter::Brace(syn::token::Brace(tokens.delim_span()))
                    }
                    _ => syn::MacroDelimiter::Bracket(syn::token::Bracket(tokens.delim_span())),
                };
                let mac = syn::Macro {
                    path,
                    bang_token: bang,
                    delimiter,
                    tokens: tokens.stream(),
                };
                Base::Macro(syn::ExprMacro {
                    attrs: Vec::new(),
                    mac,
                })
            } else {
                let args = if input.peek(syn::token::Paren) {
                    let content;
                    let paren = syn::parenthesized!(content in input);
                    Some((paren, content.parse_terminated(Expr::parse, Token![,])?))
                } else {
                    None
                };
                Base::Named { path, args }
            }
        } else {
            return Err(input.error(
                "expected a stage: a `#[stage]` or `#[map_stage]` function (`add_n`, `add_n(7)`), or a stage value in braces (`{ my_stage }`)",
            ));
        };
        let mut methods = Vec::new();
        while input.peek(Token![.]) {
            let dot = input.parse()?;
            let name = input.parse()?;
            let turbofish = if input.peek(Token![::]) {
                input.parse::<Token![::]>()?;
                Some(input.parse()?)
            } else {
                None
            };
            let content;
            let paren = syn::parenthesized!(content in input);
            let args = content.parse_terminated(Expr::parse, Token![,])?;
            methods.push(Method {
                dot,
                name,
                turbofish,
                paren,
                args,
            });
        }
        if !input.is_empty() {
            return Err(input.error(
                "unexpected tokens after the stage; only builder methods (`.workers(2)`) may follow it",
            ));
        }
        Ok(Element { base, methods })
    }
}

impl Element {
    pub(crate) fn first_span(&self) -> Span {
        match &self.base {
            Base::Named { path, .. } => path
                .segments
                .first()
                .map_or_else(Span::call_site, |s| s.ident.span()),
            Base::Value(block) => block.brace_token.span.join(),
            Base::Macro(m) => m
                .mac
                .path
                .segments
                .first()
                .map_or_else(Span::call_site, |s| s.ident.span()),
        }
    }

    /// Whether the element is a nested `segment!`, which is a chain itself
    /// rather than one stage.
    pub(crate) fn is_segment(&self) -> bool {
        matches!(&self.base, Base::Macro(m) if m.mac.path.segments.last().is_some_and(|s| s.ident == "segment"))
    }
}

/// The segments of `pipe!` between top-level `|`s, each with the span of
/// the `|` before it (or of the whole call for the first).
fn split(input: TokenStream) -> syn::Result<Vec<(Span, TokenStream)>> {
    let mut segments = vec![(Span::call_site(), TokenStream::new())];
    let mut tokens = input.into_iter().peekable();
    while let Some(tt) = tokens.next() {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == '|' => {
                if p.spacing() == Spacing::Joint
                    && let Some(TokenTree::Punct(next)) = tokens.peek()
                    && next.as_char() == '|'
                {
                    return Err(Error::new(
                        p.span(),
                        "`||` is not a stage separator: write one `|` between stages",
                    ));
                }
                segments.push((p.span(), TokenStream::new()));
            }
            _ => segments
                .last_mut()
                .expect("segments is never empty")
                .1
                .extend([tt]),
        }
    }
    Ok(segments)
}

/// `pipe!(serial: ...)`: strips the `serial:` prefix, if there is one.
fn strip_serial(input: TokenStream) -> (bool, TokenStream) {
    let mut tokens = input.clone().into_iter();
    match (tokens.next(), tokens.next()) {
        (Some(TokenTree::Ident(i)), Some(TokenTree::Punct(p)))
            if i == "serial" && p.as_char() == ':' && p.spacing() == Spacing::Alone =>
        {
            (true, tokens.collect())
        }
        _ => (false, input),
    }
}

/// `pipe!(distributed(job): ...)`: strips the prefix, if there is one, and
/// returns the job expression.
fn strip_distributed(input: TokenStream) -> syn::Result<(Option<Expr>, TokenStream)> {
    let mut tokens = input.clone().into_iter();
    match (tokens.next(), tokens.next(), tokens.next()) {
        (Some(TokenTree::Ident(i)), Some(TokenTree::Group(g)), Some(TokenTree::Punct(p)))
            if i == "distributed"
                && g.delimiter() == proc_macro2::Delimiter::Parenthesis
                && p.as_char() == ':'
                && p.spacing() == Spacing::Alone =>
        {
            if g.stream().is_empty() {
                return Err(Error::new(
                    g.span(),
                    "`distributed` needs the job: `pipe!(distributed(&job): source | stage | ...)`",
                ));
            }
            Ok((Some(syn::parse2(g.stream())?), tokens.collect()))
        }
        _ => Ok((None, input)),
    }
}

/// Parses `pipe!`'s input. Only what leaves nothing to check further is an
/// error here (`||`, an empty `distributed()`); everything else is kept for
/// validation, which reports every mistake at once.
pub(crate) fn pipe(input: TokenStream) -> syn::Result<Pipe> {
    let (job, input) = strip_distributed(input)?;
    let (serial, input) = strip_serial(input);
    let mode = match (serial, job) {
        (true, Some(job)) => {
            return Err(Error::new_spanned(
                job,
                "a pipeline is either `serial:` or `distributed(..):`, not both",
            ));
        }
        (true, None) => Mode::Serial,
        (false, Some(job)) => Mode::Distributed(job),
        (false, None) => Mode::Parallel,
    };
    let mut slots = split(input)?.into_iter();
    let first = slots.next().expect("split returns at least one slot");
    Ok(Pipe {
        mode,
        source: Slot::parse(first),
        stages: slots.map(Slot::parse).collect(),
    })
}

/// Parses `segment!`'s input: stages only.
pub(crate) fn segment(input: TokenStream) -> syn::Result<Vec<Slot<Element>>> {
    Ok(split(input)?.into_iter().map(Slot::parse).collect())
}
