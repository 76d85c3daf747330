//! Checks a parsed `pipe!` or `segment!`, collecting every mistake, each
//! on the user's tokens.

use proc_macro2::Span;
use syn::Error;

use super::ast::{Element, Mode, Parsed, Pipe, Slot};
use crate::attr::{self, Errors};

pub(crate) fn pipe(pipe: &Pipe) -> syn::Result<()> {
    let mut errors = Errors::default();
    let next_bar = pipe.stages.first().map_or_else(Span::call_site, |s| s.bar);
    match &pipe.source.item {
        Parsed::Item(_) => {}
        Parsed::Empty => errors.push(Error::new(
            next_bar,
            "expected a source before `|`: `pipe!(source | stage | ...)`",
        )),
        Parsed::Invalid(e) => errors.push(e.clone()),
    }
    stages(&pipe.stages, &mut errors);
    let form = match pipe.mode {
        Mode::Parallel => None,
        Mode::Serial => Some("serial"),
        Mode::Distributed(_) => Some("distributed(&job)"),
    };
    if let (Some(form), true, Parsed::Item(_)) = (form, pipe.stages.is_empty(), &pipe.source.item) {
        errors.push(Error::new(
            Span::call_site(),
            format!("`pipe!({form}: ...)` needs at least one stage: `pipe!({form}: source | stage | ...)`"),
        ));
    }
    errors.finish()
}

pub(crate) fn segment(slots: &[Slot<Element>]) -> syn::Result<()> {
    let mut errors = Errors::default();
    if let Some((first, rest)) = slots.split_first() {
        if let Parsed::Empty = first.item {
            let bar = rest.first().map_or_else(Span::call_site, |s| s.bar);
            errors.push(Error::new(bar, "expected a stage before `|`"));
        } else {
            stages(std::slice::from_ref(first), &mut errors);
        }
        stages(rest, &mut errors);
    }
    errors.finish()
}

fn stages(slots: &[Slot<Element>], errors: &mut Errors) {
    for slot in slots {
        match &slot.item {
            Parsed::Item(element) => methods(element, errors),
            Parsed::Empty => errors.push(Error::new(slot.bar, "expected a stage after `|`")),
            Parsed::Invalid(e) => errors.push(e.clone()),
        }
    }
}

/// Builder methods with a literal count are checked as the attribute's
/// keys are: `.workers(0)` fails here, on the `0`.
fn methods(element: &Element, errors: &mut Errors) {
    for m in &element.methods {
        let key = m.name.to_string();
        if (key == attr::WORKERS || key == attr::QSIZE)
            && let Some(arg) = m.args.first()
            && let Err(e) = attr::count(arg, &key)
        {
            errors.push(e);
        }
    }
}
