//! The front end never panics: random text and mutations of valid specs either compile or give
//! diagnostics whose spans lie in the source and render; pathological inputs fail fast.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

/// Valid specs to mutate (and [`stdlib_renamed`]).
const SEEDS: &[&str] = &[
    include_str!("../examples/quickstart.sst"),
    "const n = 8\nconst t0 = 2 * n - 1\nlayer a: categorical(n) {\n    noise: gaussian(sigma = 0.5)\n    \
     regularizer: euclidean\n    temperature: max(0.05, exp(-1e-3 * step))\n    backward: finite_diff(eps = 1e-4)\n    \
     estimator: straight_through\n}\n",
    "layer b: bernoulli(n = 3) { regularizer: binary_entropy; temperature: 0.1 }\nlayer g: gumbel_softmax(10) { temperature: 0.5 }\n",
    "preset p: categorical { noise: none; regularizer: entropy }\nlayer x: p(4) {}\nlayer y: p(\n  n = 2,\n)\n",
    "layer s: sparsemax_layer(3) { temperature: min(1, abs(log(0.5)) + sqrt(step) / 10) }\r\nlayer c: binary_concrete(2)\r\n",
];

/// The shipped presets under new names (the originals cannot be redeclared), used by a layer.
fn stdlib_renamed() -> String {
    let presets = include_str!("../stdlib/papers.sst").replace("preset ", "preset my_");
    format!("{presets}\nlayer a: my_gumbel_softmax(3)\nlayer b: my_binary_concrete(2)\n")
}

fn seeds() -> Vec<String> {
    let mut all: Vec<String> = SEEDS.iter().map(|s| s.to_string()).collect();
    all.push(stdlib_renamed());
    all
}

/// Characters a mutation inserts: the language's punctuation, digits, letters, odd whitespace
/// and multi-byte characters.
const ALPHABET: &[char] = &[
    '(', ')', '{', '}', ':', ';', ',', '=', '+', '-', '*', '/', '#', '\n', '\r', '\t', ' ', '.',
    '0', '1', '9', 'e', 'E', '_', 'a', 'n', 'x', 'é', '€', '𝔸', '\u{0}', '\u{feff}', '"', '\\',
];

/// Compiles `text`; on error checks every diagnostic's span and rendering.
fn check(text: &str) {
    match sst::compile(text) {
        Ok(module) => {
            for layer in module.layers() {
                let plan = layer.plan();
                let _ = plan.to_json(None);
                let _ = layer.try_temperature(&sst::Options::default());
                let _ = layer.try_temperature(&sst::Options::default().step(1e6));
            }
        }
        Err(sst::Error::Compile(e)) => {
            assert!(!e.diagnostics.is_empty(), "an error with no diagnostic");
            for d in &e.diagnostics {
                assert!(
                    d.span.start <= d.span.end && d.span.end <= text.len(),
                    "span {:?} outside the source of {} bytes: {:?}\n{text:?}",
                    d.span,
                    text.len(),
                    d.message
                );
                assert!(text.is_char_boundary(d.span.start), "{:?} {text:?}", d.span);
                assert!(text.is_char_boundary(d.span.end), "{:?} {text:?}", d.span);
                assert!(!d.message.is_empty());
                let (line, col) = d.line_col(text);
                assert!(line >= 1 && col >= 1);
                let rendered = d.render("f.sst", text);
                assert!(rendered.contains(&d.message), "{rendered}");
                assert!(
                    rendered.contains(&format!("f.sst:{line}:{col}")),
                    "{rendered}"
                );
                let one = d.one_line("f.sst", text);
                assert!(one.starts_with(&format!("f.sst:{line}:{col}: error: ")));
            }
            let _ = e.to_string();
        }
        Err(other) => panic!("compile returned a non-compile error: {other}"),
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index),
    Insert(Index, char),
    Replace(Index, char),
    DuplicateLine(Index),
    DeleteLine(Index),
    SwapTokens(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch = prop_oneof![
        3 => proptest::sample::select(ALPHABET),
        1 => any::<char>(),
    ];
    prop_oneof![
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), ch.clone()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        (any::<Index>(), ch).prop_map(|(i, c)| Mutation::Replace(i, c)),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        any::<Index>().prop_map(Mutation::DeleteLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapTokens(a, b)),
    ]
}

/// Words (letters, digits, `_`, `.`), single symbols and whitespace runs.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' || c == '.' {
            0
        } else if c.is_whitespace() {
            1
        } else {
            2
        }
    };
    for c in text.chars() {
        match out.last_mut() {
            Some(last) if class(c) != 2 && last.chars().next().map(class) == Some(class(c)) => {
                last.push(c)
            }
            _ => out.push(c.to_string()),
        }
    }
    out
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    match m {
        Mutation::Delete(i) if !chars.is_empty() => {
            chars.remove(i.index(chars.len()));
        }
        Mutation::Insert(i, c) => {
            let at = i.index(chars.len() + 1);
            chars.insert(at, *c);
        }
        Mutation::Replace(i, c) if !chars.is_empty() => {
            let at = i.index(chars.len());
            chars[at] = *c;
        }
        Mutation::DuplicateLine(i) | Mutation::DeleteLine(i) => {
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            if lines.is_empty() {
                return text.to_string();
            }
            let at = i.index(lines.len());
            if matches!(m, Mutation::DuplicateLine(_)) {
                let line = lines[at];
                lines.insert(at, line);
            } else {
                lines.remove(at);
            }
            return lines.concat();
        }
        Mutation::SwapTokens(a, b) => {
            let mut toks = tokens(text);
            let words: Vec<usize> = toks
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.trim().is_empty())
                .map(|(i, _)| i)
                .collect();
            if words.len() >= 2 {
                let (x, y) = (words[a.index(words.len())], words[b.index(words.len())]);
                toks.swap(x, y);
            }
            return toks.concat();
        }
        _ => {}
    }
    chars.into_iter().collect()
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn seeds_compile() {
    for seed in seeds() {
        if let Err(e) = sst::compile(&seed) {
            panic!("seed does not compile:\n{e}\n{seed}");
        }
    }
    // The mutation helpers do what they say.
    assert_eq!(tokens("a(1, b)"), ["a", "(", "1", ",", " ", "b", ")"]);
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_spec_alphabet_never_panics(
        chars in proptest::collection::vec(proptest::sample::select(ALPHABET), 0..200),
        words in proptest::collection::vec(
            proptest::sample::select(&[
                "layer ", "const ", "preset ", "categorical", "bernoulli", "step", "temperature",
                "noise", "gumbel", "exp", "max", "a", "n", "1e308", "1e999", "0.5", "= ", ": ",
            ][..]),
            0..20,
        ),
    ) {
        let mut text: String = chars.into_iter().collect();
        for (i, w) in words.iter().enumerate() {
            let at = text.char_indices().nth(i * 7).map_or(text.len(), |(b, _)| b);
            text.insert_str(at, w);
        }
        check(&text);
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn mutated_specs_never_panic(
        seed in proptest::sample::select(seeds()),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let mut text = seed;
        for m in &mutations {
            text = apply(&text, m);
        }
        check(&text);
    }
}

/// Runs `check` and requires a compile error within a generous bound.
fn fails_fast(what: &str, text: &str) {
    let start = Instant::now();
    check(text);
    assert!(
        matches!(sst::compile(text), Err(sst::Error::Compile(_))),
        "{what}: compiled"
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "{what}: took {took:?} for {} bytes",
        text.len()
    );
}

#[test]
fn deep_parentheses() {
    fails_fast("(×100000", &"(".repeat(100_000));
    fails_fast(
        "const x = (×100000",
        &format!("const x = {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
    );
    fails_fast(
        "support args",
        &format!(
            "layer a: categorical({}3{})",
            "(".repeat(50_000),
            ")".repeat(50_000)
        ),
    );
}

#[test]
fn deep_minus() {
    fails_fast("-×100000", &"-".repeat(100_000));
    fails_fast(
        "const x = -×100000 1",
        &format!("const x = {}1", "-".repeat(100_000)),
    );
    fails_fast(
        "- ( alternating",
        &format!("const x = {}1{}", "-(".repeat(20_000), ")".repeat(20_000)),
    );
}

#[test]
fn huge_sources() {
    // Over the size limit: a mebibyte of comment, of valid items, of garbage.
    let comment = format!("# {}\n", "x".repeat((1 << 20) + 10));
    fails_fast("1 MiB comment", &comment);
    let items = "layer a: categorical(3)\n".repeat((1 << 20) / 24 + 10);
    assert!(items.len() > 1 << 20);
    fails_fast("1 MiB of layers", &items);
    fails_fast("1 MiB of @", &"@".repeat((1 << 20) + 1));
}

#[test]
fn long_flat_expressions() {
    fails_fast(
        "1+ ×50000",
        &format!("layer a: categorical({}1)", "1+".repeat(50_000)),
    );
    fails_fast(
        "temperature 1* ×50000",
        &format!(
            "layer a: categorical(3) {{ temperature: {}1 }}",
            "1*".repeat(50_000)
        ),
    );
    fails_fast(
        "a const chain",
        &format!("const x = {}1", "x - ".repeat(50_000)),
    );
    fails_fast(
        "a function with many arguments, then a syntax error",
        &format!(
            "layer a: categorical(3) {{ temperature: max({}1) }} x",
            "1, ".repeat(50_000)
        ),
    );
}

/// Bug: `bind_args` (src/check/args.rs) reports one diagnostic per extra positional argument,
/// each rendering the whole line, so that the time to report grows quadratically: 8000 extra
/// arguments take about 30 s in `sst check`. One diagnostic ("takes 1 argument, found 8001")
/// would do.
#[test]
fn many_extra_arguments_fail_fast() {
    let text = format!("layer a: categorical({}1)", "1, ".repeat(50_000));
    match sst::compile(&text) {
        Err(sst::Error::Compile(e)) => assert!(
            e.diagnostics.len() <= 2,
            "{} diagnostics for one call",
            e.diagnostics.len()
        ),
        _ => panic!("compiled"),
    }
    fails_fast("many arguments", &text);
}

/// Bug: a valid spec whose temperature calls `max` with 50000 arguments takes seconds to
/// compile (time grows quadratically with the number of arguments).
#[test]
fn many_function_arguments_compile_fast() {
    let text = format!(
        "layer a: categorical(3) {{ temperature: max({}1) }}",
        "0.5, ".repeat(50_000)
    );
    let start = Instant::now();
    let module = sst::compile(&text).unwrap_or_else(|e| panic!("{e}"));
    let took = start.elapsed();
    let t = module.layers()[0].try_temperature(&sst::Options::default());
    assert_eq!(t.ok(), Some(1.0));
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn just_inside_the_nesting_limit_compiles() {
    let text = format!(
        "layer a: categorical(3) {{ temperature: {}0.5{} }}",
        "(".repeat(sst::syntax::MAX_DEPTH),
        ")".repeat(sst::syntax::MAX_DEPTH)
    );
    if let Err(e) = sst::compile(&text) {
        panic!("{e}");
    }
    let text = format!(
        "layer a: categorical(3) {{ temperature: {}0.5{} }}",
        "(".repeat(sst::syntax::MAX_DEPTH + 1),
        ")".repeat(sst::syntax::MAX_DEPTH + 1)
    );
    fails_fast("one level too deep", &text);
}
