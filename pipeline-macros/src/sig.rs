//! What a stage function's signature says: its kind, its item types and its
//! bound arguments.

use syn::spanned::Spanned;
use syn::{
    Error, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType,
    Type, TypeImplTrait, TypeParamBound,
};

use crate::attr::{Errors, StageArgs};

/// Which attribute is expanding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `#[stage]`: iterator in, iterator out.
    Iter,
    /// `#[map_stage]`: one item in, one item out.
    Map,
}

/// What the generated stage does with the function.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Map,
    Iter,
    Producer,
}

/// A parameter bound in `pipe!` (`add_n(7)`), stored in the stage struct.
pub(crate) struct BoundArg {
    /// The name of `new`'s parameter.
    pub name: Ident,
    /// The parameter's type as written.
    pub ty: Type,
    /// For `&T`, the `T`: the struct stores `T::Owned` and lends `&T`.
    pub borrowed: Option<Type>,
}

pub(crate) struct StageFn {
    pub kind: Kind,
    /// The item type taken (not for producers).
    pub input: Option<Type>,
    /// The type of what the function returns per item, `Result` included.
    pub output: Type,
    /// Whether `output` is a `Result` whose `Err` fails the stage.
    pub fallible: bool,
    pub bound: Vec<BoundArg>,
    /// `async fn`: a map stage whose futures run on tokio.
    pub asyncness: Option<syn::token::Async>,
}

pub(crate) fn analyze(func: &ItemFn, flavor: Flavor, args: &StageArgs) -> syn::Result<StageFn> {
    let sig = &func.sig;
    let mut errors = Errors::default();
    if let (Some(token), Flavor::Iter) = (&sig.asyncness, flavor) {
        errors.push(Error::new_spanned(
            token,
            "a `#[stage]` function cannot be `async`: for one future per item write `#[map_stage] async fn` (with `concurrency = N` futures in flight); for an async source, give `pipe!` a `futures_core::Stream` as its source",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(Error::new_spanned(
            variadic,
            "a stage function cannot be variadic",
        ));
    }
    for param in &sig.generics.params {
        if let GenericParam::Lifetime(l) = param {
            errors.push(Error::new_spanned(
                l,
                "a stage function cannot have lifetime parameters: its items and bound arguments cross threads, so they must be `'static`",
            ));
        }
    }

    let mut params = sig.inputs.iter();
    let kind = match flavor {
        Flavor::Map => Kind::Map,
        Flavor::Iter if args.producer || sig.inputs.is_empty() => Kind::Producer,
        Flavor::Iter => Kind::Iter,
    };

    let input = match kind {
        Kind::Producer => None,
        Kind::Map => match params.next() {
            Some(FnArg::Typed(pt)) => {
                if let Some(t) = find_impl_trait(&pt.ty) {
                    errors.push(Error::new_spanned(
                        t,
                        "the item type of a `#[map_stage]` cannot be `impl Trait`: name the type",
                    ));
                }
                Some((*pt.ty).clone())
            }
            Some(FnArg::Receiver(r)) => return Err(not_a_method(r)),
            None => {
                return Err(Error::new(
                    sig.paren_token.span.join(),
                    "a `#[map_stage]` function takes the item as its first parameter: `fn f(item: T, ...) -> U`",
                ));
            }
        },
        Kind::Iter => match params.next() {
            Some(FnArg::Typed(pt)) => match iterator_item(&pt.ty) {
                Some(item) => Some(item),
                None => {
                    errors.push(Error::new_spanned(
                        &pt.ty,
                        "the first parameter of a `#[stage]` function is its input and must be `impl Iterator<Item = T>`; \
                         for one item at a time use `#[map_stage]`, and for a stage without input (a producer) write `#[stage(producer)]`",
                    ));
                    None
                }
            },
            Some(FnArg::Receiver(r)) => return Err(not_a_method(r)),
            None => unreachable!("a stage without parameters is a producer"),
        },
    };

    let mut bound = Vec::new();
    for (i, param) in params.enumerate() {
        let pt = match param {
            FnArg::Typed(pt) => pt,
            FnArg::Receiver(r) => return Err(not_a_method(r)),
        };
        match bound_arg(i, &pt.pat, &pt.ty) {
            Ok(arg) => bound.push(arg),
            Err(e) => errors.push(e),
        }
    }

    let (output, fallible) = match (&sig.output, kind) {
        (ReturnType::Default, Kind::Map) => (syn::parse_quote!(()), false),
        (ReturnType::Type(_, ty), Kind::Map) => {
            if let Some(t) = find_impl_trait(ty) {
                errors.push(Error::new_spanned(
                    t,
                    "a `#[map_stage]` function cannot return `impl Trait`: name the type, or use `#[stage]`",
                ));
            }
            ((**ty).clone(), is_result(ty))
        }
        (ReturnType::Default, _) => {
            errors.push(Error::new(
                sig.ident.span(),
                "a `#[stage]` function returns its output items: add `-> impl Iterator<Item = T>`",
            ));
            (syn::parse_quote!(()), false)
        }
        (ReturnType::Type(_, ty), _) => match &**ty {
            Type::ImplTrait(it) => match trait_item(it) {
                Some(item) => {
                    let fallible = is_result(&item);
                    (item, fallible)
                }
                None => {
                    errors.push(Error::new_spanned(
                        ty,
                        "a `#[stage]` function returns `impl Iterator<Item = T>` (or a type that implements `IntoIterator`)",
                    ));
                    (syn::parse_quote!(()), false)
                }
            },
            other => (
                syn::parse_quote!(<#other as ::core::iter::IntoIterator>::Item),
                false,
            ),
        },
    };

    errors.finish()?;
    Ok(StageFn {
        kind,
        input,
        output,
        fallible,
        bound,
        asyncness: sig.asyncness,
    })
}

fn not_a_method(r: &syn::Receiver) -> Error {
    Error::new_spanned(
        r,
        "a stage must be a free function, not a method: the generated stage struct calls it by name",
    )
}

fn bound_arg(i: usize, pat: &Pat, ty: &Type) -> syn::Result<BoundArg> {
    if let Some(t) = find_impl_trait(ty) {
        return Err(Error::new_spanned(
            t,
            "a bound argument cannot be `impl Trait`: the stage stores it, so name its type or use a generic parameter",
        ));
    }
    let name = match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
            Ident::new(&p.ident.to_string(), p.ident.span())
        }
        _ => Ident::new(&format!("arg{i}"), pat.span()),
    };
    let borrowed = match ty {
        Type::Reference(r) => {
            if let Some(m) = &r.mutability {
                return Err(Error::new_spanned(
                    m,
                    "a bound argument cannot be `&mut`: every worker shares it",
                ));
            }
            match &r.lifetime {
                // `&'static T` is stored as it is.
                Some(l) if l.ident == "static" => None,
                Some(l) => {
                    return Err(Error::new_spanned(
                        l,
                        "a bound argument cannot have a named lifetime: the stage stores an owned copy and lends it",
                    ));
                }
                None => Some((*r.elem).clone()),
            }
        }
        _ => None,
    };
    Ok(BoundArg {
        name,
        ty: ty.clone(),
        borrowed,
    })
}

/// `T` of `impl Iterator<Item = T>` (or `IntoIterator`).
fn iterator_item(ty: &Type) -> Option<Type> {
    match ty {
        Type::ImplTrait(it) => trait_item(it),
        Type::Paren(p) => iterator_item(&p.elem),
        _ => None,
    }
}

fn trait_item(it: &TypeImplTrait) -> Option<Type> {
    it.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(tb) = bound else {
            return None;
        };
        let last = tb.path.segments.last()?;
        if last.ident != "Iterator" && last.ident != "IntoIterator" {
            return None;
        }
        let PathArguments::AngleBracketed(ab) = &last.arguments else {
            return None;
        };
        ab.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(at) if at.ident == "Item" => Some(at.ty.clone()),
            _ => None,
        })
    })
}

/// Whether a type is written as a `Result` (`Result<T, E>`, `io::Result<T>`):
/// its `Err` then fails the stage.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(tp) if tp.qself.is_none() => {
            tp.path.segments.last().is_some_and(|s| s.ident == "Result")
        }
        Type::Paren(p) => is_result(&p.elem),
        _ => false,
    }
}

fn find_impl_trait(ty: &Type) -> Option<&TypeImplTrait> {
    match ty {
        Type::ImplTrait(it) => Some(it),
        Type::Reference(r) => find_impl_trait(&r.elem),
        Type::Paren(p) => find_impl_trait(&p.elem),
        _ => None,
    }
}
