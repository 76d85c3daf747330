//! `examples/packages.rs`: the package index summarised by a plain loop,
//! one record per item and coarse blocks gives one summary, on this
//! machine's real package index (apt's lists; `.ci/run` fetches them).

#[allow(dead_code, reason = "the tests use part of the example")]
#[path = "../examples/packages.rs"]
mod packages;

use packages::{Summary, blocks, coarse, package_index, parse, per_record, sequential, stanzas};

/// The index, or `None` (said loudly) on a machine without apt's lists.
fn index() -> Option<String> {
    match package_index() {
        Ok(text) => Some(text),
        Err(why) if std::env::var_os("PARAPIPE_REQUIRE_APT_LISTS").is_some() => {
            panic!("PARAPIPE_REQUIRE_APT_LISTS is set, but: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: no package index on this machine: {why}");
            None
        }
    }
}

/// The first `bytes` of the index, cut after a whole stanza.
fn prefix(text: &str, bytes: usize) -> String {
    blocks(text.to_owned(), bytes).next().unwrap_or_default()
}

#[test]
fn three_ways_one_summary() {
    let Some(text) = index() else { return };
    // A debug build parses slowly: the first 4 MB are thousands of packages.
    let text = prefix(&text, 4 << 20);
    let want = sequential(text.clone());
    assert!(want.packages > 1000, "{} packages", want.packages);
    assert_eq!(per_record(text.clone()).unwrap(), want);
    assert_eq!(coarse(text).unwrap(), want);
}

#[test]
fn pieces_put_back_together_are_the_text() {
    let Some(text) = index() else { return };
    let text = prefix(&text, 1 << 20);
    for size in [1, 100, 4096, 1 << 16, 1 << 30] {
        let pieces: Vec<String> = blocks(text.clone(), size).collect();
        assert_eq!(pieces.concat(), text, "pieces of {size} bytes");
        // Every piece but the last ends a stanza, and each stanza is whole.
        for piece in &pieces[..pieces.len() - 1] {
            assert!(
                piece.ends_with("\n\n"),
                "{size}: {:?}",
                &piece[piece.len() - 20..]
            );
            assert!(piece.len() >= size.min(text.len()));
        }
    }
    let n = stanzas(text.clone()).count();
    let packages = stanzas(text).filter_map(|s| parse(&s)).count();
    assert_eq!(n, packages, "each stanza is one package");
}

#[test]
fn a_stanza_parses() {
    let stanza = "Package: 0ad\nVersion: 0.0.26-3\nInstalled-Size: 28591\n\
                  Maintainer: Debian Games Team <pkg-games-devel@lists.alioth.debian.org>\n\
                  Depends: 0ad-data (>= 0.0.26), libc6 (>= 2.34), zlib1g\n\
                  Tag: game::strategy,\n interface::x11\nSection: games\n";
    let p = parse(stanza).unwrap();
    assert_eq!(p.name, "0ad");
    assert_eq!(p.section, "games");
    assert_eq!(p.installed_kib, 28591);
    assert_eq!(p.depends, 3);
    assert!(
        parse("Version: 1\n").is_none(),
        "no Package field, no package"
    );
    let s = Summary::default().with(Some(p)).with(None);
    assert_eq!(s.packages, 1);
    assert_eq!(s.largest, (28591, "0ad".to_owned()));
}

#[test]
fn empty_and_blank_texts() {
    for text in ["", "\n", "\n\n\n", "  \n \n"] {
        assert_eq!(sequential(text.to_owned()), Summary::default(), "{text:?}");
        assert_eq!(
            per_record(text.to_owned()).unwrap(),
            Summary::default(),
            "{text:?}"
        );
        assert_eq!(
            coarse(text.to_owned()).unwrap(),
            Summary::default(),
            "{text:?}"
        );
    }
}
