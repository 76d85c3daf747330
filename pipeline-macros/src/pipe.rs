//! `pipe!(source | stage | stage(args).method(..) | { expr })`.
//!
//! Input:  pipe!(0..100 | add_n(7).workers(2))
//! Output: {
//!             let p = (&&SourceArg::new(0..100)).__parapipe_source();
//!             let p = then(p, add_n::new(7).workers(2));   // spanned on `add_n`
//!             p
//!         }
//!
//! Each stage is wired by its own call, spanned on the stage's tokens, so a
//! stage whose input type does not match is reported on that stage.

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Error, Expr, Ident, Token};

use crate::attr::{self, Errors};

/// A stage of `pipe!`.
struct Element {
    base: Base,
    methods: Vec<Method>,
}

enum Base {
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
struct Method {
    dot: Token![.],
    name: Ident,
    turbofish: Option<syn::AngleBracketedGenericArguments>,
    paren: syn::token::Paren,
    args: Punctuated<Expr, Token![,]>,
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
    fn first_span(&self) -> Span {
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
    fn is_segment(&self) -> bool {
        matches!(&self.base, Base::Macro(m) if m.mac.path.segments.last().is_some_and(|s| s.ident == "segment"))
    }

    fn validate(&self, errors: &mut Errors) {
        for m in &self.methods {
            let key = m.name.to_string();
            if (key == attr::WORKERS || key == attr::QSIZE)
                && let Some(arg) = m.args.first()
                && let Err(e) = attr::count(arg, &key)
            {
                errors.push(e);
            }
        }
    }

    fn to_stage_expr(&self) -> TokenStream {
        // Tokens we add sit on the stage too: see the wiring in `generate`.
        let span = self.first_span();
        let mut expr = match &self.base {
            Base::Named { path, args } => {
                let new = Ident::new("new", span);
                match args {
                    Some((paren, args)) => {
                        let mut call = quote_spanned!(span=> #path::#new);
                        paren.surround(&mut call, |t| args.to_tokens(t));
                        call
                    }
                    None => quote_spanned!(span=> #path::#new()),
                }
            }
            Base::Value(block) => quote!(#block),
            Base::Macro(m) => quote!(#m),
        };
        for m in &self.methods {
            let (dot, name, turbofish) = (&m.dot, &m.name, &m.turbofish);
            let turbofish = turbofish.as_ref().map(|t| quote_spanned!(span=> ::#t));
            let mut call = quote!(#dot #name #turbofish);
            m.paren.surround(&mut call, |t| m.args.to_tokens(t));
            expr = quote!(#expr #call);
        }
        expr
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

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    parse_and_generate(input).unwrap_or_else(into_expr_error)
}

pub(crate) fn expand_segment(input: TokenStream) -> TokenStream {
    generate_segment(input).unwrap_or_else(into_expr_error)
}

/// `pipe!` and `segment!` are expressions: several `compile_error!`s need a
/// block.
fn into_expr_error(e: Error) -> TokenStream {
    let errors = e.into_compile_error();
    quote!({ #errors })
}

/// Parses the stages, collecting every error.
fn parse_stages(
    segments: impl Iterator<Item = (Span, TokenStream)>,
    errors: &mut Errors,
) -> Vec<Element> {
    let mut stages = Vec::new();
    for (bar, tokens) in segments {
        if tokens.is_empty() {
            errors.push(Error::new(bar, "expected a stage after `|`"));
            continue;
        }
        match Element::parse.parse2(tokens) {
            Ok(element) => {
                element.validate(errors);
                stages.push(element);
            }
            Err(e) => errors.push(e),
        }
    }
    stages
}

/// `segment!(a | b(7) | segment!(..))`: the stages as one chain, checked
/// link by link, each link spanned on its stage.
fn generate_segment(input: TokenStream) -> syn::Result<TokenStream> {
    if input.is_empty() {
        return Err(Error::new(
            Span::call_site(),
            "`segment!` needs at least one stage: `segment!(stage | stage | ...)`",
        ));
    }
    let mut errors = Errors::default();
    let mut segments = split(input)?.into_iter();
    let (_, first) = segments.next().expect("split returns at least one segment");
    let mut stages = Vec::new();
    if first.is_empty() {
        let bar = segments
            .clone()
            .next()
            .map_or_else(Span::call_site, |s| s.0);
        errors.push(Error::new(bar, "expected a stage before `|`"));
    } else {
        stages = parse_stages(std::iter::once((Span::call_site(), first)), &mut errors);
    }
    stages.extend(parse_stages(segments, &mut errors));
    errors.finish()?;
    let rt = quote!(::parapipe::__private);
    let chain = chain_expr(&stages);
    Ok(quote! {{
        #[allow(unused_imports, reason = "not every segment! uses every trait")]
        use #rt::StageExt as _;
        #[allow(unused_braces, reason = "`{ stage }` is segment! syntax for a stage value")]
        let segment = #rt::Segment::new(#chain);
        segment
    }})
}

/// The stages as one chain, `link(link(Leaf(a), Leaf(b)), c)`, each link
/// spanned on its stage so a type mismatch is reported there.
fn chain_expr(stages: &[Element]) -> TokenStream {
    let mut chain: Option<TokenStream> = None;
    for stage in stages {
        let span = stage.first_span();
        let rt = quote_spanned!(span=> ::parapipe::__private);
        let expr = stage.to_stage_expr();
        let link = if stage.is_segment() {
            expr
        } else {
            quote_spanned!(span=> #rt::Leaf(#expr))
        };
        chain = Some(match chain {
            None => link,
            Some(prev) => quote_spanned!(span=> #rt::link(#prev, #link)),
        });
    }
    chain.unwrap_or_default()
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

fn parse_and_generate(input: TokenStream) -> syn::Result<TokenStream> {
    if input.is_empty() {
        return Err(Error::new(
            Span::call_site(),
            "`pipe!` needs a source and stages: `pipe!(source | stage | ...)`",
        ));
    }
    let (job, input) = strip_distributed(input)?;
    let (serial, input) = strip_serial(input);
    if let (true, Some(job)) = (serial, &job) {
        return Err(Error::new_spanned(
            job,
            "a pipeline is either `serial:` or `distributed(..):`, not both",
        ));
    }
    let segments = split(input)?;
    let mut errors = Errors::default();
    let mut segments = segments.into_iter();
    let (_, source) = segments.next().expect("split returns at least one segment");
    let source: Option<Expr> = if source.is_empty() {
        errors.push(Error::new(
            segments
                .clone()
                .next()
                .map_or_else(Span::call_site, |s| s.0),
            "expected a source before `|`: `pipe!(source | stage | ...)`",
        ));
        None
    } else {
        match syn::parse2::<Expr>(source) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.push(e);
                None
            }
        }
    };
    let stages = parse_stages(segments, &mut errors);
    if (serial || job.is_some()) && stages.is_empty() && source.is_some() {
        let form = if serial {
            "serial"
        } else {
            "distributed(&job)"
        };
        errors.push(Error::new(
            Span::call_site(),
            format!("`pipe!({form}: ...)` needs at least one stage: `pipe!({form}: source | stage | ...)`"),
        ));
    }
    errors.finish()?;
    let source = source.expect("a missing source is an error above");
    let rt = quote!(::parapipe::__private);
    if serial {
        // Input:  pipe!(serial: src | a | b)
        // Output: SerialPipeline::new(src, link(Leaf(a::new()), Leaf(b::new())))
        //         spanned on the first stage, which must take the source's items.
        let chain = chain_expr(&stages);
        let span = stages[0].first_span();
        let rt_spanned = quote_spanned!(span=> ::parapipe::__private);
        let new = quote_spanned!(span=> #rt_spanned::SerialPipeline::new(#source, #chain));
        return Ok(quote! {{
            #[allow(unused_imports, reason = "not every pipe! uses every trait")]
            use #rt::StageExt as _;
            #[allow(unused_braces, reason = "`{ stage }` is pipe! syntax for a stage value")]
            let pipeline = #new;
            pipeline
        }});
    }
    if let Some(job) = job {
        return Ok(distributed(&job, &source, &stages));
    }
    let var = Ident::new("__parapipe_pipeline", Span::mixed_site());
    let wiring = wiring(&stages, "then");
    let source_span = source_first_span(&source);
    let source_call = quote_spanned! {source_span=>
        (&&#rt::SourceArg::new(#source)).__parapipe_source()
    };
    Ok(quote! {{
        #[allow(unused_imports, reason = "not every pipe! uses every trait")]
        use #rt::{StageExt as _, ViaChannel as _, ViaIntoSource as _};
        let #var = #source_call;
        #(#wiring)*
        #var
    }})
}

/// `let p = link(p, stage);` for each stage, with `link` a function of
/// `__private` (`then`, or `nats_then`). Every token of a statement sits on
/// its stage, so rustc reports a mismatch there rather than on the whole
/// `pipe!` call.
fn wiring(stages: &[Element], link: &str) -> Vec<TokenStream> {
    stages
        .iter()
        .map(|stage| {
            let expr = stage.to_stage_expr();
            let span = stage.first_span();
            let var = Ident::new("__parapipe_pipeline", Span::mixed_site().located_at(span));
            let rt = quote_spanned!(span=> ::parapipe::__private);
            let link = Ident::new(link, span);
            quote_spanned! {span=>
                #[allow(unused_braces, reason = "`{ stage }` is pipe! syntax for a stage value")]
                let #var = #rt::#link(#var, #expr);
            }
        })
        .collect()
}

/// Input:  pipe!(distributed(job): src | a | b(7))
/// Output: {
///             let p = nats_source(&(job), src);      // spanned on `src`
///             let p = nats_then(p, a::new());         // spanned on `a`
///             let p = nats_then(p, b::new(7));        // spanned on `b`
///             p
///         }
/// Each call requires the items to be serialisable, so a stage whose items
/// are not is reported on that stage, and only in this form.
fn distributed(job: &Expr, source: &Expr, stages: &[Element]) -> TokenStream {
    let rt = quote!(::parapipe::__private);
    let var = Ident::new("__parapipe_pipeline", Span::mixed_site());
    let wiring = wiring(stages, "nats_then");
    let source_span = source_first_span(source);
    let job_span = job
        .to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span());
    let job = quote_spanned!(job_span=> &(#job));
    let source_call = quote_spanned!(source_span=> #rt::nats_source(#job, #source));
    quote! {{
        #[allow(unused_imports, reason = "not every pipe! uses every trait")]
        use #rt::StageExt as _;
        let #var = #source_call;
        #(#wiring)*
        #var
    }}
}

fn source_first_span(source: &Expr) -> Span {
    source
        .to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}
