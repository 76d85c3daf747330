//! `#[stage(key = value, ...)]` arguments.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Error, Expr, ExprLit, Lit, LitBool, LitStr, Meta, Token};

use crate::sig::Flavor;

pub(crate) const WORKERS: &str = "workers";
pub(crate) const QSIZE: &str = "qsize";
const UNBOUNDED: &str = "unbounded";
const FILTER_ERRORS: &str = "filter_errors";
const NAME: &str = "name";
const ORDERED: &str = "ordered";
const PRODUCER: &str = "producer";
pub(crate) const CONCURRENCY: &str = "concurrency";
pub(crate) const TIMEOUT_MS: &str = "timeout_ms";

/// The parsed and validated arguments.
#[derive(Default)]
pub(crate) struct StageArgs {
    pub workers: Option<Expr>,
    pub qsize: Option<Expr>,
    pub unbounded: bool,
    pub filter_errors: Option<LitBool>,
    pub name: Option<LitStr>,
    pub producer: bool,
    pub ordered: bool,
    /// `async fn` stages only: futures in flight.
    pub concurrency: Option<Expr>,
    /// `async fn` stages only: per-item timeout, in milliseconds.
    pub timeout_ms: Option<Expr>,
}

/// Collects every error instead of stopping at the first.
#[derive(Default)]
pub(crate) struct Errors(Option<Error>);

impl Errors {
    pub fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }

    pub fn into_error(self) -> Option<Error> {
        self.0
    }
}

fn valid_keys(flavor: Flavor) -> String {
    let mut keys = vec![WORKERS, QSIZE, UNBOUNDED, FILTER_ERRORS, NAME, ORDERED];
    match flavor {
        Flavor::Iter => keys.push(PRODUCER),
        Flavor::Map => keys.extend([CONCURRENCY, TIMEOUT_MS]),
    }
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The keys given, as far as they are valid, and every error in them: a
/// stage is still generated from the valid keys, so that the user sees only
/// the mistake they made, not its consequences wherever the stage is used.
pub(crate) fn parse(args: TokenStream, flavor: Flavor) -> (StageArgs, Errors) {
    let mut out = StageArgs::default();
    let mut errors = Errors::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(e) => {
            errors.push(e);
            return (out, errors);
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let mut unbounded_span = None;
    for meta in metas {
        let path = meta.path();
        let Some(key) = path.get_ident().map(|i| i.to_string()) else {
            errors.push(Error::new_spanned(
                path,
                format!("unknown key; valid keys are {}", valid_keys(flavor)),
            ));
            continue;
        };
        if seen.contains(&key) {
            errors.push(Error::new_spanned(path, format!("duplicate key `{key}`")));
            continue;
        }
        seen.push(key.clone());
        let result = match key.as_str() {
            WORKERS => value(&meta, &key)
                .and_then(|e| count(e, &key))
                .map(|e| out.workers = Some(e)),
            QSIZE => value(&meta, &key)
                .and_then(|e| count(e, &key))
                .map(|e| out.qsize = Some(e)),
            UNBOUNDED => flag(&meta, &key).map(|()| {
                out.unbounded = true;
                unbounded_span = Some(path.span());
            }),
            FILTER_ERRORS => match &meta {
                Meta::Path(p) => {
                    out.filter_errors = Some(LitBool::new(true, p.span()));
                    Ok(())
                }
                _ => value(&meta, &key).and_then(|e| match e {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => {
                        out.filter_errors = Some(b.clone());
                        Ok(())
                    }
                    other => Err(Error::new_spanned(other, "expected `true` or `false`")),
                }),
            },
            NAME => value(&meta, &key).and_then(|e| match e {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => {
                    check_name(s)?;
                    out.name = Some(s.clone());
                    Ok(())
                }
                other => Err(Error::new_spanned(other, "expected a string literal")),
            }),
            PRODUCER if flavor == Flavor::Iter => flag(&meta, &key).map(|()| out.producer = true),
            ORDERED => flag(&meta, &key).map(|()| out.ordered = true),
            CONCURRENCY if flavor == Flavor::Map => value(&meta, &key)
                .and_then(|e| count(e, &key))
                .map(|e| out.concurrency = Some(e)),
            TIMEOUT_MS if flavor == Flavor::Map => value(&meta, &key)
                .and_then(|e| count(e, &key))
                .map(|e| out.timeout_ms = Some(e)),
            _ => Err(Error::new_spanned(
                path,
                format!("unknown key `{key}`; valid keys are {}", valid_keys(flavor)),
            )),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    if let (Some(span), Some(_)) = (unbounded_span, &out.qsize) {
        errors.push(Error::new(
            span,
            "`qsize` and `unbounded` cannot be used together: `unbounded` removes the queue limit that `qsize` sets",
        ));
        out.unbounded = false;
    }
    (out, errors)
}

fn value<'m>(meta: &'m Meta, key: &str) -> syn::Result<&'m Expr> {
    match meta {
        Meta::NameValue(nv) => Ok(&nv.value),
        _ => Err(Error::new_spanned(meta, format!("expected `{key} = ...`"))),
    }
}

fn flag(meta: &Meta, key: &str) -> syn::Result<()> {
    match meta {
        Meta::Path(_) => Ok(()),
        _ => Err(Error::new_spanned(
            meta,
            format!("`{key}` takes no value: write just `{key}`"),
        )),
    }
}

/// A count of workers or items: a positive integer literal, or any other
/// expression (a constant, say), which the runtime checks when the pipeline
/// starts.
pub(crate) fn count(expr: &Expr, key: &str) -> syn::Result<Expr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) if int.base10_digits().starts_with('-') => Err(Error::new_spanned(
            int,
            format!("`{key}` must be a positive integer, not a negative number"),
        )),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => {
            let n: u64 = int.base10_parse()?;
            if n == 0 {
                let hint = if key == QSIZE {
                    "; for a queue without a limit write `unbounded`"
                } else {
                    ""
                };
                return Err(Error::new_spanned(
                    int,
                    format!("`{key}` must be at least 1{hint}"),
                ));
            }
            Ok(expr.clone())
        }
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => Err(Error::new_spanned(
            expr,
            format!("`{key}` must be a positive integer, not a negative number"),
        )),
        Expr::Lit(ExprLit { lit, .. }) => Err(Error::new_spanned(
            lit,
            format!("`{key}` must be a positive integer"),
        )),
        other => Ok(other.clone()),
    }
}

fn check_name(name: &LitStr) -> syn::Result<()> {
    let value = name.value();
    if value.is_empty() {
        return Err(Error::new_spanned(name, "a stage name cannot be empty"));
    }
    if value.contains("__") {
        return Err(Error::new_spanned(
            name,
            "a stage name cannot contain `__`, which separates levels in profiler names",
        ));
    }
    Ok(())
}
