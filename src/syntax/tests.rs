use super::ast::*;
use super::*;
use proptest::prelude::*;

const EXAMPLE: &str = r#"# comment to end of line
const n = 8
const t0 = 2 * n - 1          # consts may use earlier consts; no `step` in consts
layer order: permutation(n) {
    noise:       gumbel
    regularizer: entropy
    temperature: max(0.05, exp(-1e-3 * step))   # an expression; `step` is a variable
    solver:      sinkhorn(iters = 50, tol = 1e-6)
    backward:    implicit
    estimator:   relaxed
}
layer pick: subset(n = 100, k = 10) { regularizer: binary_entropy; temperature: 0.1 }
layer g: gumbel_softmax(10) { temperature: 0.5 }     # a preset used where a support is expected
layer plain: categorical(10) {}                       # an empty body is allowed
layer p: categorical(3)
preset gumbel_softmax: categorical { noise: gumbel; regularizer: entropy; estimator: relaxed }
"#;

// HELPERS

/// The same tree with every span zeroed, to compare structure only.
fn unspan_expr(e: &Expr) -> Expr {
    let kind = match &e.kind {
        ExprKind::Number(v) => ExprKind::Number(*v),
        ExprKind::Ident(n) => ExprKind::Ident(n.clone()),
        ExprKind::Call(c) => ExprKind::Call(unspan_call(c)),
        ExprKind::Neg(x) => ExprKind::Neg(Box::new(unspan_expr(x))),
        ExprKind::Binary(op, l, r) => {
            ExprKind::Binary(*op, Box::new(unspan_expr(l)), Box::new(unspan_expr(r)))
        }
    };
    Expr { kind, span: 0..0 }
}

fn unspan_ident(i: &Ident) -> Ident {
    Ident {
        name: i.name.clone(),
        span: 0..0,
    }
}

fn unspan_call(c: &Call) -> Call {
    Call {
        name: unspan_ident(&c.name),
        args: c
            .args
            .iter()
            .map(|a| Arg {
                name: a.name.as_ref().map(unspan_ident),
                value: unspan_expr(&a.value),
                span: 0..0,
            })
            .collect(),
        span: 0..0,
    }
}

fn parse_expr(text: &str) -> Expr {
    let source = format!("const x = {text}");
    let spec = parse(&source).unwrap_or_else(|d| panic!("{}", d.render("t.sst", &source)));
    match spec.items.as_slice() {
        [Item::Const(c)] => c.value.clone(),
        other => panic!("expected one const, got {other:?}"),
    }
}

fn num(v: f64) -> Expr {
    Expr {
        kind: ExprKind::Number(v),
        span: 0..0,
    }
}

fn id(name: &str) -> Expr {
    Expr {
        kind: ExprKind::Ident(name.to_string()),
        span: 0..0,
    }
}

fn bin(op: BinOp, l: Expr, r: Expr) -> Expr {
    Expr {
        kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
        span: 0..0,
    }
}

fn neg(x: Expr) -> Expr {
    Expr {
        kind: ExprKind::Neg(Box::new(x)),
        span: 0..0,
    }
}

fn err(source: &str) -> Diagnostic {
    match parse(source) {
        Ok(spec) => panic!("expected an error for {source:?}, got {spec:?}"),
        Err(d) => d,
    }
}

/// Asserts the error's position and that its message contains every piece.
fn assert_error(source: &str, line_col: (usize, usize), pieces: &[&str]) -> Diagnostic {
    let d = err(source);
    let rendered = d.render("t.sst", source);
    assert_eq!(d.line_col(source), line_col, "{rendered}");
    for piece in pieces {
        assert!(
            d.message.contains(piece),
            "missing {piece:?} in:\n{rendered}"
        );
    }
    assert!(
        rendered.contains(&format!("t.sst:{}:{}", line_col.0, line_col.1)),
        "{rendered}"
    );
    d
}

// THE EXAMPLE

#[test]
fn parses_the_example() {
    let spec = parse(EXAMPLE).unwrap_or_else(|d| panic!("{}", d.render("ex.sst", EXAMPLE)));
    let names: Vec<&str> = spec.items.iter().map(|i| i.name().name.as_str()).collect();
    assert_eq!(
        names,
        [
            "n",
            "t0",
            "order",
            "pick",
            "g",
            "plain",
            "p",
            "gumbel_softmax"
        ]
    );

    let Item::Const(n) = &spec.items[0] else {
        panic!("not a const: {:?}", spec.items[0])
    };
    assert_eq!(unspan_expr(&n.value), num(8.0));
    assert_eq!(&EXAMPLE[n.span.clone()], "const n = 8");
    assert_eq!(&EXAMPLE[n.name.span.clone()], "n");

    let Item::Const(t0) = &spec.items[1] else {
        panic!("not a const")
    };
    assert_eq!(
        unspan_expr(&t0.value),
        bin(BinOp::Sub, bin(BinOp::Mul, num(2.0), id("n")), num(1.0))
    );
    // The span stops before the trailing comment.
    assert_eq!(&EXAMPLE[t0.span.clone()], "const t0 = 2 * n - 1");
    assert_eq!(&EXAMPLE[t0.value.span.clone()], "2 * n - 1");

    let Item::Layer(order) = &spec.items[2] else {
        panic!("not a layer")
    };
    assert_eq!(order.support.name.name, "permutation");
    assert_eq!(order.support.args.len(), 1);
    assert_eq!(order.support.args[0].name, None);
    assert_eq!(order.support.args[0].value.as_ident(), Some("n"));
    assert_eq!(&EXAMPLE[order.support.span.clone()], "permutation(n)");
    assert!(EXAMPLE[order.span.clone()].starts_with("layer order"));
    assert!(EXAMPLE[order.span.clone()].ends_with('}'));
    let fields: Vec<&str> = order.fields.iter().map(|f| f.name.name.as_str()).collect();
    assert_eq!(
        fields,
        [
            "noise",
            "regularizer",
            "temperature",
            "solver",
            "backward",
            "estimator"
        ]
    );
    assert_eq!(order.fields[0].value.as_ident(), Some("gumbel"));
    assert_eq!(order.fields[1].value.as_ident(), Some("entropy"));
    let temperature = &order.fields[2];
    assert_eq!(
        &EXAMPLE[temperature.span.clone()],
        "temperature: max(0.05, exp(-1e-3 * step))"
    );
    let ExprKind::Call(max) = &temperature.value.kind else {
        panic!("not a call: {:?}", temperature.value)
    };
    assert_eq!(max.name.name, "max");
    assert_eq!(max.args.len(), 2);
    assert_eq!(max.args[0].value.as_number(), Some(0.05));
    let ExprKind::Call(exp) = &max.args[1].value.kind else {
        panic!("not a call")
    };
    assert_eq!(
        unspan_expr(&exp.args[0].value),
        bin(BinOp::Mul, neg(num(1e-3)), id("step"))
    );
    assert_eq!(
        temperature.value.to_string(),
        "max(0.05, exp(-0.001 * step))"
    );
    let ExprKind::Call(solver) = &order.fields[3].value.kind else {
        panic!("not a call")
    };
    let arg_names: Vec<_> = solver
        .args
        .iter()
        .map(|a| a.name.as_ref().map(|n| n.name.as_str()))
        .collect();
    assert_eq!(arg_names, [Some("iters"), Some("tol")]);
    assert_eq!(solver.args[0].value.as_number(), Some(50.0));
    assert_eq!(solver.args[1].value.as_number(), Some(1e-6));
    assert_eq!(&EXAMPLE[solver.args[1].span.clone()], "tol = 1e-6");
    assert_eq!(
        order.fields[3].value.to_string(),
        "sinkhorn(iters = 50, tol = 1e-6)"
    );

    let Item::Layer(pick) = &spec.items[3] else {
        panic!("not a layer")
    };
    assert_eq!(pick.support.to_string(), "subset(n = 100, k = 10)");
    let fields: Vec<&str> = pick.fields.iter().map(|f| f.name.name.as_str()).collect();
    assert_eq!(fields, ["regularizer", "temperature"]);
    assert_eq!(pick.fields[1].value.as_number(), Some(0.1));

    let Item::Layer(g) = &spec.items[4] else {
        panic!("not a layer")
    };
    assert_eq!(g.support.to_string(), "gumbel_softmax(10)");
    assert_eq!(g.fields.len(), 1);

    let Item::Layer(plain) = &spec.items[5] else {
        panic!("not a layer")
    };
    assert!(plain.fields.is_empty());
    assert_eq!(
        &EXAMPLE[plain.span.clone()],
        "layer plain: categorical(10) {}"
    );

    let Item::Layer(p) = &spec.items[6] else {
        panic!("not a layer")
    };
    assert!(p.fields.is_empty());
    assert_eq!(&EXAMPLE[p.span.clone()], "layer p: categorical(3)");

    let Item::Preset(preset) = &spec.items[7] else {
        panic!("not a preset")
    };
    assert_eq!(preset.support.name, "categorical");
    let fields: Vec<(&str, Option<&str>)> = preset
        .fields
        .iter()
        .map(|f| (f.name.name.as_str(), f.value.as_ident()))
        .collect();
    assert_eq!(
        fields,
        [
            ("noise", Some("gumbel")),
            ("regularizer", Some("entropy")),
            ("estimator", Some("relaxed"))
        ]
    );
}

#[test]
fn support_without_parentheses_is_a_call_without_arguments() {
    let spec = parse("layer a: categorical\nlayer b: categorical() {}").unwrap();
    for item in &spec.items {
        let Item::Layer(layer) = item else {
            panic!("not a layer")
        };
        assert_eq!(layer.support.name.name, "categorical");
        assert!(layer.support.args.is_empty());
    }
    // In an expression a bare name is an identifier, `f()` a call.
    assert_eq!(parse_expr("auto").as_ident(), Some("auto"));
    assert!(matches!(parse_expr("f()").kind, ExprKind::Call(ref c) if c.args.is_empty()));
    assert_eq!(parse_expr("f()").to_string(), "f()");
}

// EXPRESSIONS

#[test]
fn precedence_and_associativity() {
    use BinOp::*;
    let cases = [
        (
            "1 - 2 - 3",
            bin(Sub, bin(Sub, num(1.0), num(2.0)), num(3.0)),
        ),
        (
            "8 / 4 / 2",
            bin(Div, bin(Div, num(8.0), num(4.0)), num(2.0)),
        ),
        (
            "2 * 3 + 4",
            bin(Add, bin(Mul, num(2.0), num(3.0)), num(4.0)),
        ),
        (
            "4 + 2 * 3",
            bin(Add, num(4.0), bin(Mul, num(2.0), num(3.0))),
        ),
        ("-2 * 3", bin(Mul, neg(num(2.0)), num(3.0))),
        ("--3", neg(neg(num(3.0)))),
        ("- - 3", neg(neg(num(3.0)))),
        (
            "2 * (n - 1)",
            bin(Mul, num(2.0), bin(Sub, id("n"), num(1.0))),
        ),
        ("-(a + b)", neg(bin(Add, id("a"), id("b")))),
        ("a - -b", bin(Sub, id("a"), neg(id("b")))),
        (
            "1 - (2 - 3)",
            bin(Sub, num(1.0), bin(Sub, num(2.0), num(3.0))),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(unspan_expr(&parse_expr(text)), expected, "{text}");
    }
}

#[test]
fn number_forms() {
    for (text, value) in [
        ("3", 3.0),
        ("2.5", 2.5),
        ("1e-3", 1e-3),
        (".5", 0.5),
        ("1E+6", 1e6),
        ("3.", 3.0),
        ("0", 0.0),
    ] {
        assert_eq!(parse_expr(text).as_number(), Some(value), "{text}");
    }
}

#[test]
fn expression_spans_are_tight() {
    let source = "const x = (1 + 2) * -y   # c";
    let Item::Const(c) = &parse(source).unwrap().items[0] else {
        panic!()
    };
    assert_eq!(&source[c.value.span.clone()], "(1 + 2) * -y");
    let ExprKind::Binary(_, l, r) = &c.value.kind else {
        panic!()
    };
    assert_eq!(&source[l.span.clone()], "(1 + 2)");
    assert_eq!(&source[r.span.clone()], "-y");
}

#[test]
fn newlines_inside_parentheses_are_whitespace() {
    let source = "layer a: subset(\n  n = 10,   # size\n  k = 3\n) {\n  temperature: max(\n 0.1,\n (1 +\n 2)\n )\n}\n";
    let spec = parse(source).unwrap_or_else(|d| panic!("{}", d.render("t.sst", source)));
    let Item::Layer(layer) = &spec.items[0] else {
        panic!()
    };
    assert_eq!(layer.support.to_string(), "subset(n = 10, k = 3)");
    assert_eq!(layer.fields[0].value.to_string(), "max(0.1, 1 + 2)");
    // Outside parentheses a newline ends the expression.
    assert!(parse("const x = 1 +\n 2").is_err());
}

#[test]
fn separators_and_blank_lines() {
    let source = "\n\n;const a = 1; const b = 2\n\n# only a comment\nlayer l: c {\n\n; t: 1 ;; u: 2\n\n}\n;\n";
    let spec = parse(source).unwrap_or_else(|d| panic!("{}", d.render("t.sst", source)));
    assert_eq!(spec.items.len(), 3);
    let Item::Layer(layer) = &spec.items[2] else {
        panic!()
    };
    assert_eq!(layer.fields.len(), 2);
    assert_eq!(parse("").unwrap().items.len(), 0);
    assert_eq!(parse("# nothing\n\n").unwrap().items.len(), 0);
    assert_eq!(
        parse("const a = 1\r\nconst b = 2\r\n").unwrap().items.len(),
        2
    );
    // Names may contain keywords.
    assert!(parse("layer layers: constant(preset_x) { layer_t: const_1 }").is_ok());
}

#[test]
fn display_prints_minimal_parentheses() {
    for text in [
        "2 * (n - 1)",
        "-x",
        "max(0.05, exp(-0.001 * step))",
        "sinkhorn(iters = 50, tol = 1e-6)",
        "1 - (2 - 3)",
        "1 - 2 - 3",
        "(1 + 2) * (3 + 4)",
        "-(a * b)",
        "--3",
        "a / (b * c)",
        "a * b / c",
        "1e-7 + 1e20 + 12345.5 + 0.0001",
    ] {
        assert_eq!(parse_expr(text).to_string(), text);
    }
    assert_eq!(parse_expr("((a)) + (b * c)").to_string(), "a + b * c");
    assert_eq!(parse_expr("1000000").to_string(), "1000000");
}

// ERRORS

#[test]
fn missing_colon_after_layer_name() {
    assert_error(
        "layer a categorical(3)",
        (1, 9),
        &["expected `:`", "found `categorical`"],
    );
}

#[test]
fn missing_colon_in_field() {
    assert_error(
        "layer a: categorical(3) { temperature 0.5 }",
        (1, 39),
        &["expected `:`", "found `0.5`"],
    );
    let d = assert_error(
        "layer a: categorical(3) {\n  temperature = 0.5\n}",
        (2, 15),
        &["expected `:`", "found `=`"],
    );
    assert!(d.hint.is_some());
}

#[test]
fn unclosed_parenthesis() {
    let d = assert_error(
        "layer a: categorical(3 { }",
        (1, 24),
        &["expected", "`)`", "found `{`"],
    );
    assert!(d.hint.as_deref().unwrap_or("").contains("1:21"), "{d:?}");
}

#[test]
fn comments_are_not_code() {
    // A `#` and the rest of its line are skipped, the newline is kept, offsets are the source's.
    let code: Vec<(usize, u8)> = code_bytes("a#(\n(#)").collect();
    assert_eq!(code, [(0, b'a'), (3, b'\n'), (4, b'(')]);
    // A `)` in a comment closes nothing; the `(` at offset 0 is still open at the end.
    let source = "(x # )\n";
    assert_eq!(unclosed(source, source.len(), b'(', b')'), Some(0));
    assert_eq!(unclosed("(x )# (\n", 8, b'(', b')'), None);
}

#[test]
fn const_without_name() {
    assert_error("const = 3", (1, 7), &["expected a name", "found `=`"]);
}

#[test]
fn keyword_as_name() {
    let d = assert_error(
        "layer layer: categorical(3)",
        (1, 7),
        &["expected a name", "found the keyword `layer`"],
    );
    assert!(d.hint.as_deref().unwrap_or("").contains("keyword"));
    assert_eq!(d.span, 6..11);
}

#[test]
fn operator_without_operand() {
    assert_error(
        "layer a: categorical(3) { temperature: 0.5 * }",
        (1, 46),
        &["expected an expression", "found `}`"],
    );
}

#[test]
fn positional_after_named() {
    let d = assert_error(
        "layer a: f(k = 1, 2)",
        (1, 19),
        &["named argument", "positional argument `2`"],
    );
    assert!(d.label.contains("k = 1"));
    assert!(d.hint.is_some());
    assert_error(
        "const x = g(a = 1, b)",
        (1, 20),
        &["positional argument `b`"],
    );
}

#[test]
fn unclosed_brace_at_end_of_file() {
    let source = "layer a: categorical(3) {\n  temperature: 0.5\n";
    let d = assert_error(source, (2, 19), &["`}`", "found end of file"]);
    assert!(d.message.contains("a field such as `temperature: 0.5`"));
    assert!(d.hint.as_deref().unwrap_or("").contains("1:25"), "{d:?}");
    assert_error("layer a: b {", (1, 13), &["`}`", "found end of file"]);
}

#[test]
fn stray_character() {
    assert_error(
        "const n = 3\n@\n",
        (2, 1),
        &["expected an item", "found `@`"],
    );
    assert_error(
        "layer a: categorical(3) @",
        (1, 25),
        &["expected `{`", "found `@`"],
    );
    assert_error(
        "layer a: b { t: x @ }",
        (1, 19),
        &["an operator", "`}`", "found `@`"],
    );
}

#[test]
fn other_messages() {
    assert_error(
        "layer a:",
        (1, 9),
        &[
            "expected a support such as `subset(n = 10, k = 3)`",
            "end of file",
        ],
    );
    assert_error(
        "layer a: b { : 1 }",
        (1, 14),
        &["expected a field such as `temperature: 0.5`", "found `:`"],
    );
    assert_error(
        "layer a:\nb",
        (1, 9),
        &["expected a support", "found end of line"],
    );
    assert_error("const x = 1e999", (1, 11), &["`1e999`", "too large"]);
    assert_error("const x = 1 2", (1, 13), &["found `2`"]);
    assert_error(
        "layer a: b(k == 1)",
        (1, 15),
        &["expected an expression", "found `=`"],
    );
    assert_error("const é = 1", (1, 7), &["expected a name", "found `é`"]);
}

// LIMITS

fn with_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic or overflow");
}

#[test]
fn deep_nesting_is_rejected_before_pest() {
    with_small_stack(|| {
        let start = std::time::Instant::now();
        for source in [
            format!("const x = {}", "(".repeat(100_000)),
            format!("const x = {}1", "-".repeat(100_000)),
            format!("const x = {}1", "-(".repeat(50_000)),
            format!("const x = {}1", "f(".repeat(50_000)),
            format!("layer a: b({}", "(".repeat(100_000)),
        ] {
            let d = parse(&source).unwrap_err();
            assert!(d.message.contains("nested"), "{}", d.message);
            assert!(d.span.end <= source.len());
        }
        assert!(start.elapsed().as_secs() < 5);
    });
}

#[test]
fn nesting_at_the_limit_parses() {
    let depth = MAX_DEPTH / 2;
    let source = format!("const x = {}1{}", "-(".repeat(depth), ")".repeat(depth));
    let value = parse_expr(&source["const x = ".len()..]);
    assert_eq!(value.to_string(), format!("{}1", "-".repeat(depth)));
    let parens = format!(
        "const x = {}1{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert!(parse(&parens).is_ok());
    let too_deep = format!(
        "const x = {}1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(parse(&too_deep).is_err());
    let minus = format!("const x = {}1", "-".repeat(MAX_DEPTH));
    assert!(parse(&minus).is_ok());
    assert!(parse(&format!("const x = {}1", "- ".repeat(MAX_DEPTH + 1))).is_err());
    // Parentheses in comments do not count.
    assert!(parse(&format!("# {}\nconst x = 1", "(".repeat(1000))).is_ok());
}

/// The worst input within the limits (calls nested [`MAX_DEPTH`] deep) needs about 0.7 MiB
/// of stack in a debug build (about 0.25 MiB at opt-level 1): 1 MiB is enough.
#[test]
fn deepest_accepted_input_fits_in_one_mebibyte_of_stack() {
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(|| {
            let calls = format!(
                "const x = {}1{}",
                "f(".repeat(MAX_DEPTH),
                ")".repeat(MAX_DEPTH)
            );
            assert!(parse(&calls).is_ok());
            let parens = format!(
                "layer a: b({}1{})",
                "(".repeat(MAX_DEPTH - 1),
                ")".repeat(MAX_DEPTH - 1)
            );
            assert!(parse(&parens).is_ok());
        })
        .expect("spawn")
        .join()
        .expect("no overflow");
}

#[test]
fn long_chains_are_rejected_not_overflowed() {
    with_small_stack(|| {
        let source = format!("const x = 1{}", " + 1".repeat(100_000));
        let d = parse(&source).unwrap_err();
        assert!(d.message.contains("too deeply nested"), "{}", d.message);
        let ok = format!("const x = 1{}", " + 1".repeat(MAX_EXPR_DEPTH - 1));
        assert!(parse(&ok).is_ok());
    });
}

#[test]
fn huge_input_is_rejected() {
    let source = "#".repeat(MAX_SOURCE_BYTES + 1);
    let d = parse(&source).unwrap_err();
    assert!(d.message.contains("too large"));
    let fine = format!("const a = 1\n{}", "#".repeat(MAX_SOURCE_BYTES - 20));
    assert!(parse(&fine).is_ok());
}

// PROPERTIES

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,5}".prop_filter("not a keyword", |s| !KEYWORDS.contains(&s.as_str()))
}

fn number_strategy() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as f;
    prop_oneof![
        (0u32..1000).prop_map(f64::from),
        0.0f64..10.0,
        f::POSITIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
    ]
}

fn expr_strategy() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        number_strategy().prop_map(num),
        name_strategy().prop_map(|n| id(&n))
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let op = prop_oneof![
            Just(BinOp::Add),
            Just(BinOp::Sub),
            Just(BinOp::Mul),
            Just(BinOp::Div)
        ];
        let call = (
            name_strategy(),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec((name_strategy(), inner.clone()), 0..3),
        )
            .prop_map(|(name, positional, named)| {
                let args = positional
                    .into_iter()
                    .map(|value| Arg {
                        name: None,
                        value,
                        span: 0..0,
                    })
                    .chain(named.into_iter().map(|(n, value)| Arg {
                        name: Some(Ident {
                            name: n,
                            span: 0..0,
                        }),
                        value,
                        span: 0..0,
                    }))
                    .collect();
                Expr {
                    kind: ExprKind::Call(Call {
                        name: Ident { name, span: 0..0 },
                        args,
                        span: 0..0,
                    }),
                    span: 0..0,
                }
            });
        prop_oneof![
            inner.clone().prop_map(neg),
            (op, inner.clone(), inner).prop_map(|(op, l, r)| bin(op, l, r)),
            call,
        ]
    })
}

/// Source mutations: replace, insert or delete a byte, or duplicate a slice.
fn mutate(source: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut bytes = source.as_bytes().to_vec();
    for &(at, kind, byte) in edits {
        let at = at % (bytes.len() + 1);
        match kind % 4 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {
                let end = (at + usize::from(byte % 16)).min(bytes.len());
                let slice = bytes[at..end].to_vec();
                bytes.splice(at..at, slice);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn check_no_panic(source: &str) -> Result<(), TestCaseError> {
    if let Err(d) = parse(source) {
        prop_assert!(d.span.start <= d.span.end, "{d:?}");
        prop_assert!(d.span.end <= source.len(), "{d:?}");
        prop_assert!(source.is_char_boundary(d.span.start), "{d:?}");
        prop_assert!(source.is_char_boundary(d.span.end), "{d:?}");
        let (line, col) = d.line_col(source);
        let rendered = d.render("f.sst", source);
        prop_assert!(
            rendered.contains(&format!("f.sst:{line}:{col}")),
            "{rendered}"
        );
        prop_assert!(rendered.starts_with("error: "), "{rendered}");
        let _ = d.one_line("f.sst", source);
    }
    Ok(())
}

proptest! {
    #[test]
    fn display_round_trips(expr in expr_strategy()) {
        let text = expr.to_string();
        let source = format!("const x = {text}");
        let parsed = parse(&source).map_err(|d| {
            TestCaseError::fail(d.render("t.sst", &source))
        })?;
        let Item::Const(c) = &parsed.items[0] else {
            return Err(TestCaseError::fail("not a const"));
        };
        prop_assert_eq!(unspan_expr(&c.value), expr);
        prop_assert_eq!(c.value.to_string(), text);
    }

    #[test]
    fn random_strings_never_panic(source in "[a-z0-9 (){}:;,=+*/#.\\-\\n\\t@é]{0,80}") {
        check_no_panic(&source)?;
    }

    #[test]
    fn arbitrary_strings_never_panic(source in any::<String>()) {
        check_no_panic(&source)?;
    }

    #[test]
    fn mutated_example_never_panics(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
    ) {
        check_no_panic(&mutate(EXAMPLE, &edits))?;
    }
}

#[test]
fn example_round_trips_through_display() {
    let spec = parse(EXAMPLE).unwrap();
    for item in &spec.items {
        let fields = match item {
            Item::Layer(l) => {
                let printed = l.support.to_string();
                let again = parse(&format!("layer x: {printed}")).unwrap();
                let Item::Layer(l2) = &again.items[0] else {
                    panic!()
                };
                assert_eq!(unspan_call(&l2.support), unspan_call(&l.support));
                &l.fields
            }
            Item::Preset(p) => &p.fields,
            Item::Const(c) => {
                assert_eq!(
                    unspan_expr(&parse_expr(&c.value.to_string())),
                    unspan_expr(&c.value)
                );
                continue;
            }
        };
        for field in fields {
            let again = parse_expr(&field.value.to_string());
            assert_eq!(unspan_expr(&again), unspan_expr(&field.value));
        }
    }
}
