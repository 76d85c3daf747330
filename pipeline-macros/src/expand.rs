//! `#[stage]` and `#[map_stage]`: the function, unchanged, plus a stage
//! struct of the same name (structs and functions live in different
//! namespaces, so `add_n(1, 2)` still calls the function while
//! `add_n::new(2)` builds the stage).
//!
//! Input:  #[map_stage(workers = 4)] fn add_n(x: i64, n: i64) -> i64 { .. }
//! Output: fn add_n(..) { .. }
//!         struct add_n { __args: (i64,), __config: StageConfig, .. }
//!         impl add_n { fn new(n: i64) -> Self }
//!         impl Stage for add_n { type In = i64; type Out = i64; fn run(..) }

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Error, GenericParam, Ident, Item, ItemFn, Type};

use crate::attr::{self, StageArgs};
use crate::sig::{self, Flavor, Kind, StageFn};

pub(crate) fn stage(args: TokenStream, item: TokenStream, flavor: Flavor) -> TokenStream {
    let item: Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => return fallback(item, e),
    };
    let Item::Fn(func) = item else {
        let what = if flavor == Flavor::Map {
            "#[map_stage]"
        } else {
            "#[stage]"
        };
        let e = Error::new(
            first_token_span(&item),
            format!("{what} goes on a function: `fn name(input...) -> output`"),
        );
        return fallback(quote!(#item), e);
    };
    // A bad key still gives the stage, from the keys that are valid (the
    // defaults for the others): the only error is the one the user made,
    // not a missing stage wherever `pipe!` uses it.
    let (args, mut attr_errors) = attr::parse(args, flavor);
    let analyzed = sig::analyze(&func, flavor, &args);
    if let Ok(stage) = &analyzed {
        check_async(&args, stage, &mut attr_errors);
    }
    match (analyzed, attr_errors.into_error()) {
        (Ok(stage), None) => generate(&func, &args, &stage),
        (Ok(stage), Some(e)) => {
            let mut out = generate(&func, &args, &stage);
            out.extend(e.into_compile_error());
            out
        }
        (Err(e), None) => fallback(quote!(#func), e),
        // The signature's error may come from the attribute's (a
        // `producer` key misspelt): the attribute's is the user's mistake.
        (Err(_), Some(e)) => fallback(quote!(#func), e),
    }
}

/// The keys and the function must agree on whether the stage is async; and
/// async stages need the `async` feature. Like an attribute's errors, these
/// still give the stage, so they are the only errors the user sees.
fn check_async(args: &StageArgs, stage: &StageFn, errors: &mut attr::Errors) {
    match &stage.asyncness {
        Some(token) => {
            if !cfg!(feature = "async") {
                errors.push(Error::new_spanned(
                    token,
                    "`async fn` stages need parapipe's `async` feature: enable it in Cargo.toml with `features = [\"async\"]` on the parapipe dependency",
                ));
            }
            if let Some(workers) = &args.workers {
                errors.push(Error::new_spanned(
                    workers,
                    "an async stage runs its futures from one worker thread: bound them with `concurrency = N` (futures in flight), not `workers`",
                ));
            }
        }
        None => {
            for (key, value) in [
                (attr::CONCURRENCY, &args.concurrency),
                (attr::TIMEOUT_MS, &args.timeout_ms),
            ] {
                if let Some(value) = value {
                    errors.push(Error::new_spanned(
                        value,
                        format!("`{key}` is for `async fn` stages; a stage of threads runs `workers = N` of them"),
                    ));
                }
            }
        }
    }
}

/// On an item that cannot be a stage, still emit it as written, so one
/// mistake does not cascade into errors everywhere the function is called.
fn fallback(item: TokenStream, error: Error) -> TokenStream {
    let error = error.into_compile_error();
    quote!(#item #error)
}

fn first_token_span(item: &Item) -> Span {
    quote!(#item)
        .into_iter()
        .find(|tt| !matches!(tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == '#'))
        .map_or_else(Span::call_site, |tt| tt.span())
}

fn generate(func: &ItemFn, args: &StageArgs, stage: &StageFn) -> TokenStream {
    let vis = &func.vis;
    let ident = &func.sig.ident;
    let name = args
        .name
        .as_ref()
        .map_or_else(|| ident.to_string(), |n| n.value());
    let rt = quote!(::parapipe::__private);
    let generics = &func.sig.generics;
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let type_params: Vec<_> = generics
        .params
        .iter()
        .filter_map(|p| match p {
            GenericParam::Type(t) => Some(&t.ident),
            _ => None,
        })
        .collect();
    let turbofish = if generics.params.is_empty() {
        quote!()
    } else {
        let params = generics.params.iter().map(|p| match p {
            GenericParam::Type(t) => {
                let i = &t.ident;
                quote!(#i)
            }
            GenericParam::Const(c) => {
                let i = &c.ident;
                quote!(#i)
            }
            GenericParam::Lifetime(l) => {
                let l = &l.lifetime;
                quote!(#l)
            }
        });
        quote!(::<#(#params),*>)
    };

    // Bound arguments: what the struct stores, what `new` takes, what each
    // call passes.
    let stored: Vec<Type> = stage
        .bound
        .iter()
        .map(|b| match &b.borrowed {
            Some(t) => {
                syn::parse_quote_spanned!(b.ty.span()=> <#t as ::std::borrow::ToOwned>::Owned)
            }
            None => b.ty.clone(),
        })
        .collect();
    let new_params = stage.bound.iter().map(|b| {
        let (n, t) = (&b.name, &b.ty);
        quote!(#n: #t)
    });
    let new_values = stage.bound.iter().map(|b| {
        let n = &b.name;
        match &b.borrowed {
            Some(_) => quote!(::std::borrow::ToOwned::to_owned(#n)),
            None => quote!(#n),
        }
    });
    let call_args: Vec<TokenStream> = stage
        .bound
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let i = syn::Index::from(i);
            match &b.borrowed {
                Some(t) => quote!(::core::borrow::Borrow::<#t>::borrow(&self.__args.#i)),
                None => quote!(::core::clone::Clone::clone(&self.__args.#i)),
            }
        })
        .collect();
    let arg_bounds = stored.iter().map(|t| {
        quote_spanned!(t.span()=> #t: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,)
    });
    let where_preds = where_clause.map(|w| {
        let p = &w.predicates;
        quote!(#p,)
    });
    let full_where = quote!(where #where_preds #(#arg_bounds)*);

    // Locals of the generated code are hygienic, so they cannot shadow a
    // bound argument of the same name.
    let cfg = Ident::new("config", Span::mixed_site());
    let item = Ident::new("item", Span::mixed_site());
    let input_var = Ident::new("input", Span::mixed_site());
    let worker = Ident::new("worker", Span::mixed_site());
    let apply = iterator_method("apply", &input_var);
    let apply_fused = iterator_method("apply_fused", &input_var);
    let mut config = quote!(let mut #cfg = #rt::StageConfig::new(#name););
    if let Some(w) = &args.workers {
        config.extend(quote_spanned!(w.span()=> #cfg.set_workers(#w);));
    }
    if let Some(q) = &args.qsize {
        config.extend(quote_spanned!(q.span()=> #cfg.set_queue(#rt::QueueSize::Bounded(#q));));
    }
    if args.unbounded {
        config.extend(quote!(#cfg.set_queue(#rt::QueueSize::Unbounded);));
    }
    if let Some(f) = &args.filter_errors {
        config.extend(quote!(#cfg.set_filter_errors(#f);));
    }
    if args.ordered {
        config.extend(quote!(#cfg.set_ordered(true);));
    }
    if stage.asyncness.is_some() {
        let n = args
            .concurrency
            .as_ref()
            .map_or_else(|| quote!(#rt::DEFAULT_CONCURRENCY), |n| quote!(#n));
        config.extend(quote!(#cfg.set_concurrency(#n);));
        if let Some(ms) = &args.timeout_ms {
            config.extend(quote_spanned!(ms.span()=>
                #cfg.set_timeout(::core::time::Duration::from_millis(#ms));));
        }
    }

    let output = &stage.output;
    let (out_item, error) = if stage.fallible {
        (
            quote_spanned!(output.span()=> <#output as #rt::Fallible>::Ok),
            quote_spanned!(output.span()=> <#output as #rt::Fallible>::Err),
        )
    } else {
        (quote!(#output), quote!(#rt::Infallible))
    };
    let call = quote!(#ident #turbofish);
    let doc = format!(
        "The stage generated by `#[{}]` from the function [`{ident}()`]({ident}()): build it with `{ident}::new(...)`, or name it in `pipe!`.",
        if stage.kind == Kind::Map {
            "map_stage"
        } else {
            "stage"
        }
    );

    let run = match stage.kind {
        Kind::Map if stage.asyncness.is_some() => {
            let input = stage.input.as_ref().expect("a map stage has an input");
            async_map(
                stage,
                input,
                &out_item,
                &call,
                AsyncParts {
                    rt: &rt,
                    ident,
                    impl_generics: &impl_generics,
                    ty_generics: &ty_generics,
                    full_where: &full_where,
                },
            )
        }
        Kind::Map | Kind::Iter => {
            let input = stage
                .input
                .as_ref()
                .expect("a map or iterator stage has an input");
            let wrap_ok = (!stage.fallible).then(|| quote!(.map(::core::result::Result::Ok)));
            let apply_body = if stage.kind == Kind::Map {
                quote!(#input_var.map(self.__parapipe_call()) #wrap_ok)
            } else {
                quote!(::core::iter::IntoIterator::into_iter(#call(#input_var, #(#call_args),*)) #wrap_ok)
            };
            // A map stage's workers run a tighter loop than `apply` allows,
            // and its closure comes from a method that is not generic over
            // the input, so fusing it needs no type erasure.
            let run = (stage.kind == Kind::Map).then(|| {
                let method = if stage.fallible {
                    quote!(try_map)
                } else {
                    quote!(map)
                };
                quote! {
                    fn run(
                        &self,
                        #worker: #rt::Worker<'_, Self::In, Self::Out>,
                    ) -> ::core::result::Result<(), #rt::StageError> {
                        #worker.#method(self.__parapipe_call())
                    }
                    #[inline]
                    #apply_fused {
                        #rt::Stage::apply(self, #input_var)
                    }
                }
            });
            let call_method = (stage.kind == Kind::Map).then(|| {
                quote! {
                    impl #impl_generics #ident #ty_generics #full_where {
                        #[doc(hidden)]
                        #[inline]
                        fn __parapipe_call(&self) -> impl FnMut(#input) -> #output + '_ {
                            move |#item| #call(#item, #(#call_args),*)
                        }
                    }
                }
            });
            quote! {
                impl #impl_generics #rt::Stage for #ident #ty_generics #full_where {
                    type In = #input;
                    type Out = #out_item;
                    type Error = #error;
                    #[inline]
                    #apply {
                        #apply_body
                    }
                    #run
                }
                #call_method
            }
        }
        Kind::Producer => {
            let method = if stage.fallible {
                quote!(try_emit_all)
            } else {
                quote!(emit_all)
            };
            quote! {
                impl #impl_generics #rt::Producer for #ident #ty_generics #full_where {
                    type Out = #out_item;
                    fn produce(
                        &self,
                        #worker: #rt::Emitter<'_, Self::Out>,
                    ) -> ::core::result::Result<(), #rt::StageError> {
                        #worker.#method(#call(#(#call_args),*))
                    }
                }
                impl #impl_generics #rt::IntoSource for #ident #ty_generics #full_where {
                    type Item = #out_item;
                    fn into_pipeline(self) -> #rt::Pipeline<#out_item> {
                        #rt::Pipeline::from_producer(self)
                    }
                }
            }
        }
    };

    let args_field = format_ident!("__args");
    // Spanned on the function's name, so a wrong bound argument in `pipe!`
    // points there as the definition.
    let new_sig = quote_spanned!(ident.span()=> #vis fn new(#(#new_params),*) -> Self);
    quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types, reason = "the stage struct is named after its function")]
        #vis struct #ident #impl_generics #where_clause {
            #args_field: (#(#stored,)*),
            __config: #rt::StageConfig,
            __marker: ::core::marker::PhantomData<fn() -> (#(#type_params,)*)>,
        }

        impl #impl_generics #ident #ty_generics #where_clause {
            /// Builds the stage with its bound arguments and the configuration
            /// of its attribute.
            #[allow(clippy::new_without_default, reason = "`new` mirrors the function's bound arguments")]
            #new_sig {
                #config
                #ident {
                    #args_field: (#(#new_values,)*),
                    __config: #cfg,
                    __marker: ::core::marker::PhantomData,
                }
            }
        }

        impl #impl_generics #rt::Configurable for #ident #ty_generics #where_clause {
            fn config(&self) -> &#rt::StageConfig {
                &self.__config
            }
            fn config_mut(&mut self) -> &mut #rt::StageConfig {
                &mut self.__config
            }
        }

        #run
    }
}

struct AsyncParts<'a> {
    rt: &'a TokenStream,
    ident: &'a Ident,
    impl_generics: &'a syn::ImplGenerics<'a>,
    ty_generics: &'a syn::TypeGenerics<'a>,
    full_where: &'a TokenStream,
}

/// The `Stage` impl of `#[map_stage] async fn`: each item's future is the
/// function's, boxed with clones of the bound arguments it owns, so that it
/// is `'static` and may run on any thread of the runtime.
///
/// Output: impl Stage for fetch { type Error = BoxError; fn apply(..) { apply_async_map(..) } fn run(..) { run_async_map(..) } }
///         impl AsyncStage for fetch {}
///         impl fetch { fn __parapipe_future(&self) -> impl FnMut(In) -> BoxFuture<Out> }
fn async_map(
    stage: &StageFn,
    input: &Type,
    out_item: &TokenStream,
    call: &TokenStream,
    parts: AsyncParts<'_>,
) -> TokenStream {
    let AsyncParts {
        rt,
        ident,
        impl_generics,
        ty_generics,
        full_where,
    } = parts;
    let item = Ident::new("item", Span::mixed_site());
    let input_var = Ident::new("input", Span::mixed_site());
    let apply = iterator_method("apply", &input_var);
    let worker = Ident::new("worker", Span::mixed_site());
    let owned: Vec<Ident> = (0..stage.bound.len())
        .map(|i| Ident::new(&format!("arg{i}"), Span::mixed_site()))
        .collect();
    let clones = owned.iter().enumerate().map(|(i, var)| {
        let i = syn::Index::from(i);
        quote!(let #var = ::core::clone::Clone::clone(&self.__args.#i);)
    });
    let uses = stage
        .bound
        .iter()
        .zip(&owned)
        .map(|(b, var)| match &b.borrowed {
            Some(t) => quote!(::core::borrow::Borrow::<#t>::borrow(&#var)),
            None => quote!(#var),
        });
    let awaited = quote!(#call(#item, #(#uses),*).await);
    let result = if stage.fallible {
        quote!(::core::result::Result::map_err(#awaited, ::core::convert::Into::<#rt::BoxError>::into))
    } else {
        quote!(::core::result::Result::Ok(#awaited))
    };
    let token = stage
        .asyncness
        .as_ref()
        .map_or_else(Span::call_site, |t| t.span);
    // Spanned on `async`: a future that is not `Send` is reported there.
    let boxed = quote_spanned!(token=>
        ::std::boxed::Box::pin(async move { #result }) as #rt::BoxFuture<#out_item>
    );
    let body = if cfg!(feature = "async") {
        quote! {
            #apply {
                #rt::apply_async_map(#input_var, &self.__config, self.__parapipe_future())
            }
            fn run(
                &self,
                #worker: #rt::Worker<'_, Self::In, Self::Out>,
            ) -> ::core::result::Result<(), #rt::StageError> {
                #rt::run_async_map(#worker, &self.__config, self.__parapipe_future())
            }
        }
    } else {
        // Only ever compiled beside the error that asks for the `async`
        // feature, which stops the build: the stage exists so that its uses
        // add no errors of their own.
        quote! {
            #apply {
                let _ = #input_var;
                ::core::iter::empty()
            }
        }
    };
    let future_fn = cfg!(feature = "async").then(|| {
        quote! {
            impl #impl_generics #ident #ty_generics #full_where {
                #[doc(hidden)]
                fn __parapipe_future(&self) -> impl FnMut(#input) -> #rt::BoxFuture<#out_item> + '_ {
                    move |#item| {
                        #(#clones)*
                        #boxed
                    }
                }
            }
            impl #impl_generics #rt::AsyncStage for #ident #ty_generics #full_where {}
        }
    });
    quote! {
        impl #impl_generics #rt::Stage for #ident #ty_generics #full_where {
            type In = #input;
            type Out = #out_item;
            type Error = #rt::BoxError;
            #body
        }
        #future_fn
    }
}

/// The signature of one of `Stage`'s iterator methods (`apply`,
/// `apply_fused`), as every generated stage writes it.
fn iterator_method(name: &str, input: &Ident) -> TokenStream {
    let name = Ident::new(name, Span::call_site());
    quote! {
        fn #name<'a>(
            &'a self,
            #input: impl ::core::iter::Iterator<Item = Self::In> + 'a,
        ) -> impl ::core::iter::Iterator<
            Item = ::core::result::Result<Self::Out, Self::Error>,
        > + 'a
    }
}
