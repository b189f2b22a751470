//! No line of input crashes the REPL: random bytes, random `:` commands with random arguments
//! and bracket soup go through [`Session::handle`], which must answer every one of them.

use proptest::prelude::*;

use super::session::{Output, Session};

/// A session with a few small layers, so that commands find something to run on.
fn session() -> Session {
    let mut s = Session::new();
    for line in [
        "const n = 4",
        "layer pick: categorical(n) { temperature: 0.5; estimator: straight_through }",
        "layer coins: binary_concrete(3)",
        "layer count: poisson",
    ] {
        assert!(matches!(s.handle(line), Output::Text(_)), "{line}");
    }
    s
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("pick".to_string()),
        Just("coins".to_string()),
        Just("count".to_string()),
        Just("pick.temperature".to_string()),
        Just("coins.noise".to_string()),
        Just("pick.nope".to_string()),
        Just("--seed".to_string()),
        Just("--hard".to_string()),
        Just("--soft".to_string()),
        Just("--T".to_string()),
        Just("gumbel".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        "-?[0-9]{0,3}(\\.[0-9]{0,3})?(e-?[0-9]{1,3})?",
        "\\[[-0-9., \\[\\]ae\"]{0,24}\\]?",
        "[a-z_.]{0,8}",
        any::<String>(),
    ]
}

fn command_line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("load"),
        Just("list"),
        Just("plan"),
        Just("sample"),
        Just("grad"),
        Just("set"),
        Just("bench"),
        Just("help"),
        Just("quit"),
        Just("smaple"),
        Just(""),
    ];
    (name, prop::collection::vec(word(), 0..5))
        .prop_map(|(name, words)| format!(":{name} {}", words.join(" ")))
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => command_line(),
        1 => "[(){}\\[\\];:#a-z0-9 .=,-]{0,30}",
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => "(layer|const|preset) [a-z]{1,3}[:=] ?[a-z_(){}0-9;:. ]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_line_crashes_the_session(lines in prop::collection::vec(line(), 1..8)) {
        let mut s = session();
        for l in &lines {
            let _ = s.handle(l);
        }
        // Whatever happened, the session still answers.
        s.cancel();
        prop_assert!(matches!(s.handle(":list"), Output::Text(_)));
    }
}
