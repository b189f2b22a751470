//! The presets that ship inside the compiler (`stdlib/*.sst`, embedded at build time).

use std::sync::OnceLock;

use crate::syntax::ast::{Item, Preset};

/// The stdlib files: name and text.
pub const FILES: &[(&str, &str)] = &[
    ("stdlib/papers.sst", include_str!("../stdlib/papers.sst")),
    (
        "stdlib/estimators.sst",
        include_str!("../stdlib/estimators.sst"),
    ),
    ("stdlib/subsets.sst", include_str!("../stdlib/subsets.sst")),
    ("stdlib/trees.sst", include_str!("../stdlib/trees.sst")),
    (
        "stdlib/permutations.sst",
        include_str!("../stdlib/permutations.sst"),
    ),
];

/// The stdlib file that defines the built-in preset `name`.
pub fn file_of(name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .zip(presets_by_file())
        .find(|(_, presets)| presets.iter().any(|p| p.name.name == name))
        .map(|((file, _), _)| *file)
}

/// Every built-in preset, parsed once. The stdlib is checked by the test suite, so a parse
/// failure here is a bug in the build, not in the user's input.
pub fn presets() -> impl Iterator<Item = &'static Preset> {
    presets_by_file().iter().flatten()
}

/// The presets of each of [`FILES`], in order, parsed once.
fn presets_by_file() -> &'static [Vec<Preset>] {
    static PRESETS: OnceLock<Vec<Vec<Preset>>> = OnceLock::new();
    PRESETS.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, text)| {
                let spec = crate::syntax::parse(text)
                    .unwrap_or_else(|d| panic!("{}", d.render(name, text)));
                spec.items
                    .into_iter()
                    .filter_map(|item| match item {
                        Item::Preset(p) => Some(p),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    })
}
