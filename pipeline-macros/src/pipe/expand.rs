//! Generates the code of a valid `pipe!` or `segment!`. Every token of a
//! stage's wiring sits on that stage, so rustc reports a type mismatch
//! there rather than on the whole call.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Expr, Ident};

use super::ast::{Base, Element, Mode, Pipe, Slot};

/// The stages of a validated pipe: every slot holds one.
fn elements(slots: &[Slot<Element>]) -> Vec<&Element> {
    slots.iter().filter_map(Slot::get).collect()
}

fn to_stage_expr(stage: &Element) -> TokenStream {
    // Tokens we add sit on the stage too: see the wiring in `generate`.
    let span = stage.first_span();
    let mut expr = match &stage.base {
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
    for m in &stage.methods {
        let (dot, name, turbofish) = (&m.dot, &m.name, &m.turbofish);
        let turbofish = turbofish.as_ref().map(|t| quote_spanned!(span=> ::#t));
        let mut call = quote!(#dot #name #turbofish);
        m.paren.surround(&mut call, |t| m.args.to_tokens(t));
        expr = quote!(#expr #call);
    }
    expr
}

/// `segment!(a | b(7) | segment!(..))`: the stages as one chain, checked
/// link by link, each link spanned on its stage.
pub(crate) fn segment(slots: &[Slot<Element>]) -> TokenStream {
    let stages = elements(slots);
    let rt = quote!(::parapipe::__private);
    let chain = chain_expr(&stages);
    quote! {{
        #[allow(unused_imports, reason = "not every segment! uses every trait")]
        use #rt::StageExt as _;
        #[allow(unused_braces, reason = "`{ stage }` is segment! syntax for a stage value")]
        let segment = #rt::Segment::new(#chain);
        segment
    }}
}

/// The stages as one chain, `link(link(Leaf(a), Leaf(b)), c)`, each link
/// spanned on its stage so a type mismatch is reported there.
fn chain_expr(stages: &[&Element]) -> TokenStream {
    let mut chain: Option<TokenStream> = None;
    for stage in stages {
        let span = stage.first_span();
        let rt = quote_spanned!(span=> ::parapipe::__private);
        let expr = to_stage_expr(stage);
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

/// `pipe!(...)`, in its mode.
pub(crate) fn pipe(pipe: &Pipe) -> TokenStream {
    let source = pipe.source.get().expect("validated: the source parsed");
    let stages = elements(&pipe.stages);
    let rt = quote!(::parapipe::__private);
    match &pipe.mode {
        Mode::Serial => {
            // Input:  pipe!(serial: src | a | b)
            // Output: SerialPipeline::new(src, link(Leaf(a::new()), Leaf(b::new())))
            //         spanned on the first stage, which must take the source's items.
            let chain = chain_expr(&stages);
            let span = stages[0].first_span();
            let rt_spanned = quote_spanned!(span=> ::parapipe::__private);
            let new = quote_spanned!(span=> #rt_spanned::SerialPipeline::new(#source, #chain));
            quote! {{
                #[allow(unused_imports, reason = "not every pipe! uses every trait")]
                use #rt::StageExt as _;
                #[allow(unused_braces, reason = "`{ stage }` is pipe! syntax for a stage value")]
                let pipeline = #new;
                pipeline
            }}
        }
        Mode::Distributed(job) => distributed(job, source, &stages),
        Mode::Parallel => {
            // Input:  pipe!(0..100 | add_n(7).workers(2))
            // Output: {
            //             let p = (&&&SourceArg::new(0..100)).__parapipe_source();
            //             let p = then(p, add_n::new(7).workers(2));   // spanned on `add_n`
            //             p
            //         }
            let var = Ident::new("__parapipe_pipeline", Span::mixed_site());
            let wiring = wiring(&stages, "then");
            let source_span = source_first_span(source);
            let source_call = quote_spanned! {source_span=>
                (&&&#rt::SourceArg::new(#source)).__parapipe_source()
            };
            quote! {{
                #[allow(unused_imports, reason = "not every pipe! uses every trait")]
                use #rt::{StageExt as _, ViaChannel as _, ViaIntoSource as _, ViaStream as _};
                let #var = #source_call;
                #(#wiring)*
                #var
            }}
        }
    }
}

/// `let p = link(p, stage);` for each stage, with `link` a function of
/// `__private` (`then`, or `nats_then`). Every token of a statement sits on
/// its stage, so rustc reports a mismatch there rather than on the whole
/// `pipe!` call.
fn wiring(stages: &[&Element], link: &str) -> Vec<TokenStream> {
    stages
        .iter()
        .map(|stage| {
            let expr = to_stage_expr(stage);
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
fn distributed(job: &Expr, source: &Expr, stages: &[&Element]) -> TokenStream {
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
