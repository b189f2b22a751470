//! The `sst` binary against the contract of DESIGN.md §5: exit codes, stdout/stderr discipline,
//! response shapes, and numbers checked against formulas computed here (softmax, sigmoid and
//! their vector–Jacobian products by hand).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use common::cli::{code, run, text, TempDir};
use common::{expected_count, sigmoid};

/// A spec with one layer, written to a fresh directory.
struct Spec {
    _dir: TempDir,
    path: PathBuf,
}

fn spec(source: &str) -> Spec {
    let dir = TempDir::new();
    let path = dir.write("spec.sst", source);
    Spec { _dir: dir, path }
}

fn eval_raw(path: &Path, layer: Option<&str>, request: &str) -> Output {
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec!["eval", p];
    if let Some(l) = layer {
        args.extend(["--layer", l]);
    }
    run(&args, request)
}

/// Runs a request that must succeed; checks exit 0, exactly one JSON object on stdout, no
/// stderr, the response's keys and that every number is finite.
fn eval_ok(path: &Path, layer: Option<&str>, request: &Value) -> Value {
    let out = eval_raw(path, layer, &request.to_string());
    let stdout = text(&out.stdout);
    assert_eq!(
        code(&out),
        0,
        "request {request}\nstdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let values: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"));
    assert_eq!(values.len(), 1, "expected one JSON value: {stdout}");
    let response = values.into_iter().next().unwrap();
    assert!(response.is_object(), "{response}");
    for key in ["z", "plan", "diagnostics", "warnings"] {
        assert!(response.get(key).is_some(), "no `{key}` in {response}");
    }
    assert!(response["diagnostics"].is_object(), "{response}");
    assert!(response["warnings"].is_array(), "{response}");
    for key in ["z", "grad_theta", "w"] {
        if let Some(v) = response.get(key) {
            all_finite_numbers(v, key);
        }
    }
    for (k, v) in response["diagnostics"].as_object().unwrap() {
        if let Some(x) = v.as_f64() {
            assert!(x.is_finite(), "diagnostics.{k} = {x}");
        }
    }
    response
}

/// Every leaf is a finite number (no `null`, no string).
fn all_finite_numbers(v: &Value, at: &str) {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| all_finite_numbers(x, &format!("{at}[{i}]"))),
        Value::Number(n) => {
            let x = n.as_f64().expect("a float");
            assert!(x.is_finite(), "{at} = {x}");
        }
        other => panic!("{at} is {other}, expected a number"),
    }
}

/// The field a bad-request line names: `error: bad request: [layer `NAME`: ]FIELD: message`
/// (src/cli/eval.rs `FieldError` and src/layer.rs `RequestError`), and the message after it.
fn named_field(stderr: &str) -> (&str, &str) {
    let rest = stderr
        .strip_prefix("error: bad request: ")
        .unwrap_or_else(|| panic!("not a bad-request line: {stderr}"));
    let rest = match rest.strip_prefix("layer `") {
        Some(after) => after.split_once("`: ").expect("layer `NAME`: ").1,
        None => rest,
    };
    rest.split_once(": ")
        .unwrap_or_else(|| panic!("no `FIELD: ` in {stderr}"))
}

/// A request that must fail with exit 3: nothing on stdout, one line on stderr whose field is
/// `field` (the word before the message, not just anywhere in the line); returns the message.
fn eval_bad(path: &Path, request: &str, field: &str) -> String {
    let out = eval_raw(path, None, request);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 3, "request {request}\nstderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout not empty: {}",
        text(&out.stdout)
    );
    assert_eq!(
        stderr.trim_end_matches('\n').lines().count(),
        1,
        "stderr is not one line: {stderr:?}"
    );
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    let (named, message) = named_field(stderr.trim_end());
    assert_eq!(
        named, field,
        "request {request}: stderr names the wrong field: {stderr}"
    );
    message.to_string()
}

fn shape(v: &Value) -> Vec<usize> {
    let mut dims = Vec::new();
    let mut at = v;
    while let Value::Array(items) = at {
        dims.push(items.len());
        match items.first() {
            Some(first) => at = first,
            None => break,
        }
    }
    dims
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

fn softmax(x: &[f64], t: f64) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| ((v - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// `∂⟨c, softmax(θ/T)⟩/∂θ = z ⊙ (c − ⟨c, z⟩) / T`.
fn softmax_grad(theta: &[f64], c: &[f64], t: f64) -> Vec<f64> {
    let z = softmax(theta, t);
    let dot: f64 = z.iter().zip(c).map(|(a, b)| a * b).sum();
    z.iter()
        .zip(c)
        .map(|(zi, ci)| zi * (ci - dot) / t)
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

const CATEGORICAL: &str = "layer pick: categorical(3)\n";

// SUCCESS: SHAPES

#[test]
fn design_example_shapes() {
    let s = spec(CATEGORICAL);
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": [[0,1,2],[2,1,0]], "samples": 4, "noise": {"seed": 7},
                "cotangent": [[1,0,0],[0,0,1]]}),
    );
    assert_eq!(shape(&r["z"]), [4, 2, 3]);
    assert_eq!(shape(&r["grad_theta"]), [4, 2, 3]);
    assert!(r.get("w").is_none(), "w without with_w: {r}");
    // Soft samples of a relaxed layer lie in the open simplex; softmax gradients sum to zero.
    let z = flat(&r["z"]);
    for row in z.chunks(3) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{row:?}");
        assert!(row.iter().all(|&p| p > 0.0 && p < 1.0), "{row:?}");
    }
    for row in flat(&r["grad_theta"]).chunks(3) {
        assert!(row.iter().sum::<f64>().abs() < 1e-12, "{row:?}");
    }
    // Independent samples differ.
    let rows: Vec<&[f64]> = z.chunks(6).collect();
    assert_ne!(rows[0], rows[1]);
}

#[test]
fn samples_axis_and_batch_axis() {
    let s = spec(CATEGORICAL);
    let cases = [
        (json!({"theta": [[0,1,2],[2,1,0]]}), vec![2, 3]),
        (
            json!({"theta": [[0,1,2],[2,1,0]], "samples": 1}),
            vec![2, 3],
        ),
        (json!({"theta": [0,1,2]}), vec![3]),
        (json!({"theta": [0,1,2], "samples": 5}), vec![5, 3]),
    ];
    for (request, want) in &cases {
        let r = eval_ok(&s.path, None, request);
        assert_eq!(&shape(&r["z"]), want, "{request}");
    }
    // Cotangent without the samples axis; the gradient has it.
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": [0,1,2], "samples": 3, "cotangent": [0,1,0], "with_w": true}),
    );
    assert_eq!(shape(&r["grad_theta"]), [3, 3]);
    assert_eq!(shape(&r["w"]), [3, 3]);
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": [[0,1,2],[2,1,0]], "with_w": true}),
    );
    assert_eq!(shape(&r["w"]), shape(&r["z"]));
    assert_eq!(shape(&r["w"]), [2, 3]);
}

// SUCCESS: VALUES AGAINST HAND COMPUTATIONS

#[test]
fn no_noise_soft_is_softmax_and_gradient_is_its_vjp() {
    let s = spec(CATEGORICAL);
    let theta = [[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]];
    let c = [[1.0, 0.0, -2.0], [0.5, 0.5, 1.5]];
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": theta, "noise": "none", "samples": 3, "with_w": true,
                "cotangent": c}),
    );
    assert_eq!(shape(&r["z"]), [3, 2, 3]);
    let z = flat(&r["z"]);
    let w = flat(&r["w"]);
    let g = flat(&r["grad_theta"]);
    for sample in 0..3 {
        for b in 0..2 {
            let at = (sample * 2 + b) * 3..(sample * 2 + b + 1) * 3;
            assert_eq!(&w[at.clone()], &theta[b], "w == theta without noise");
            assert_close(&z[at.clone()], &softmax(&theta[b], 1.0), 1e-12, "z");
            assert_close(&g[at], &softmax_grad(&theta[b], &c[b], 1.0), 1e-12, "grad");
        }
    }
    // The N samples are equal.
    assert_eq!(z[..6], z[6..12]);
    assert_eq!(z[..6], z[12..]);
}

#[test]
fn hard_mode_without_noise_is_the_argmax() {
    let s = spec(CATEGORICAL);
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": [[0.5, -1.0, 2.0], [3.0, 0.3, -0.7]], "noise": "none", "mode": "hard"}),
    );
    assert_eq!(flat(&r["z"]), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(r["diagnostics"]["mode"], "hard");
    // Straight-through: the hard forward, the softmax gradient at the same w.
    let st = spec("layer st: categorical(3) { estimator: straight_through; temperature: 0.5 }");
    let theta = [0.2, 1.0, -0.4];
    let c = [1.0, -1.0, 0.25];
    let r = eval_ok(
        &st.path,
        None,
        &json!({"theta": theta, "noise": "none", "cotangent": c}),
    );
    assert_eq!(flat(&r["z"]), [0.0, 1.0, 0.0]);
    assert_close(
        &flat(&r["grad_theta"]),
        &softmax_grad(&theta, &c, 0.5),
        1e-12,
        "straight-through gradient",
    );
}

#[test]
fn seeded_soft_sample_is_softmax_of_w() {
    let s = spec("layer pick: categorical(4) { temperature: 0.7 }");
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": [0.1, 0.2, -0.3, 1.0], "noise": {"seed": 11}, "with_w": true,
                "samples": 2}),
    );
    let w = flat(&r["w"]);
    let z = flat(&r["z"]);
    for s in 0..2 {
        let at = s * 4..(s + 1) * 4;
        assert_close(
            &z[at.clone()],
            &softmax(&w[at], 0.7),
            1e-12,
            "z = softmax(w/T)",
        );
    }
    assert_ne!(w[..4], [0.1, 0.2, -0.3, 1.0], "gumbel noise was added");
    assert_ne!(w[..4], w[4..], "samples differ");
}

#[test]
fn bernoulli_sigmoid_and_gradient() {
    let s = spec("layer coins: bernoulli(3) { temperature: 0.5 }");
    let theta = [0.4, -1.2, 0.0];
    let c = [1.0, 2.0, -1.0];
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": theta, "noise": "none", "cotangent": c}),
    );
    let want: Vec<f64> = theta.iter().map(|t| sigmoid(t / 0.5)).collect();
    assert_close(&flat(&r["z"]), &want, 1e-12, "sigmoid");
    let grad: Vec<f64> = want
        .iter()
        .zip(c)
        .map(|(z, c)| c * z * (1.0 - z) / 0.5)
        .collect();
    assert_close(&flat(&r["grad_theta"]), &grad, 1e-12, "sigmoid vjp");
    assert_eq!(r["plan"]["hard_solver"], "threshold");
    assert_eq!(r["plan"]["soft_solver"], "sigmoid");
}

#[test]
fn same_seed_same_bytes_other_seed_other_sample() {
    let s = spec(CATEGORICAL);
    let req = |seed: u64| {
        json!({"theta": [[0,1,2],[2,1,0]], "samples": 2, "noise": {"seed": seed},
               "cotangent": [[1,0,0],[0,0,1]]})
        .to_string()
    };
    let a = eval_raw(&s.path, None, &req(42));
    let b = eval_raw(&s.path, None, &req(42));
    assert_eq!(code(&a), 0);
    assert_eq!(a.stdout, b.stdout, "same seed, different bytes");
    let c = eval_ok(&s.path, None, &serde_json::from_str(&req(43)).unwrap());
    let a: Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_ne!(a["z"], c["z"], "another seed gave the same z");
    // The default noise is seed 0.
    let d0 = eval_raw(&s.path, None, r#"{"theta": [0, 1, 2]}"#);
    let d1 = eval_raw(
        &s.path,
        None,
        r#"{"theta": [0, 1, 2], "noise": {"seed": 0}}"#,
    );
    assert_eq!(d0.stdout, d1.stdout);
}

#[test]
fn f32_requests() {
    let s = spec(CATEGORICAL);
    let theta = [0.5, -1.0, 2.0];
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": theta, "dtype": "f32", "noise": "none", "cotangent": [1, 0, 0]}),
    );
    assert_eq!(r["diagnostics"]["dtype"], "f32");
    assert_close(&flat(&r["z"]), &softmax(&theta, 1.0), 1e-6, "f32 softmax");
    assert_close(
        &flat(&r["grad_theta"]),
        &softmax_grad(&theta, &[1.0, 0.0, 0.0], 1.0),
        1e-6,
        "f32 grad",
    );
    // A value that does not fit in f32.
    eval_bad(
        &s.path,
        r#"{"theta": [1e39, 0, 0], "dtype": "f32"}"#,
        "theta",
    );
}

// SUCCESS: THE PLAN

#[test]
fn plan_reports_every_choice_and_the_temperature_used() {
    let s = spec(CATEGORICAL);
    let r = eval_ok(&s.path, None, &json!({"theta": [0, 1, 2]}));
    let plan = &r["plan"];
    assert_eq!(plan["support"], "categorical(n = 3)");
    assert_eq!(plan["hard_solver"], "argmax");
    assert_eq!(plan["soft_solver"], "softmax");
    assert_eq!(plan["noise"], "gumbel");
    assert_eq!(plan["regularizer"], "entropy");
    assert_eq!(plan["backward"], "closed_form");
    assert_eq!(plan["estimator"], "relaxed");
    assert_eq!(plan["temperature"].as_f64(), Some(1.0));
    assert_eq!(r["diagnostics"]["mode"], "soft");

    // An override replaces the spec's temperature, and is the one used.
    let theta = [0.0, 1.0, 2.0];
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": theta, "temperature": 0.25, "noise": "none"}),
    );
    assert_eq!(r["plan"]["temperature"].as_f64(), Some(0.25));
    assert_close(
        &flat(&r["z"]),
        &softmax(&theta, 0.25),
        1e-12,
        "z at T = 0.25",
    );
}

#[test]
fn temperature_schedule_at_the_request_step() {
    let s = spec(
        "const t0 = 2\nlayer pick: categorical(3) {\n  temperature: max(0.1, t0 * exp(-step / 1000))\n}\n",
    );
    let theta = [0.3, -0.2, 1.1];
    for step in [0u64, 500, 1000, 10_000] {
        let want_t = f64::max(0.1, 2.0 * (-(step as f64) / 1000.0).exp());
        let r = eval_ok(
            &s.path,
            None,
            &json!({"theta": theta, "step": step, "noise": "none"}),
        );
        let t = r["plan"]["temperature"].as_f64().unwrap();
        assert!(
            (t - want_t).abs() <= 1e-12 * want_t,
            "step {step}: T = {t}, want {want_t}"
        );
        assert_close(&flat(&r["z"]), &softmax(&theta, want_t), 1e-12, "z");
    }
}

#[test]
fn presets_and_layer_selection() {
    let s = spec(
        "layer a: gumbel_softmax(3) { temperature: 0.5 }\n\
         layer b: sparsemax_layer(4)\n\
         layer c: binary_concrete(2)\n",
    );
    let r = eval_ok(
        &s.path,
        Some("b"),
        &json!({"theta": [3.0, 0.0, 0.0, 0.0], "noise": "none"}),
    );
    assert_eq!(r["plan"]["soft_solver"], "sparsemax");
    assert_eq!(r["plan"]["name"], "b");
    // sparsemax of a point far outside the simplex is its nearest vertex.
    assert_eq!(flat(&r["z"]), [1.0, 0.0, 0.0, 0.0]);
    let r = eval_ok(
        &s.path,
        Some("c"),
        &json!({"theta": [0.0, 0.0], "noise": "none"}),
    );
    assert_eq!(flat(&r["z"]), [0.5, 0.5]);
    let r = eval_ok(&s.path, Some("a"), &json!({"theta": [0, 0, 0]}));
    assert_eq!(r["plan"]["temperature"].as_f64(), Some(0.5));
}

// FAILURES: SPEC ERRORS (1) AND USAGE ERRORS (2)

#[test]
fn spec_error_exits_1_with_caret_diagnostics() {
    let dir = TempDir::new();
    let path = dir.write(
        "bad.sst",
        "layer a: categorical(3) {\n    noise: gumble\n}\n",
    );
    let p = path.to_str().unwrap();
    for args in [
        vec!["eval", p],
        vec!["check", p],
        vec!["check", "--json", p],
    ] {
        let out = run(&args, r#"{"theta": [0, 1, 2]}"#);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(stderr.contains(&format!("{p}:2:12")), "{stderr}");
        assert!(stderr.contains('^'), "{stderr}");
        assert!(stderr.contains("unknown noise `gumble`"), "{stderr}");
        assert!(stderr.contains("did you mean `gumbel`?"), "{stderr}");
    }
}

fn usage_error(args: &[&str], stdin: &str, says: &str) {
    let out = run(args, stdin);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 2, "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    assert!(
        stderr.contains(says),
        "{args:?}: stderr lacks {says:?}: {stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new();
    let missing = dir.0.join("missing.sst");
    let missing = missing.to_str().unwrap();
    let req = r#"{"theta": [0, 1, 2]}"#;
    usage_error(&["eval", missing], req, "missing.sst");
    usage_error(&["check", missing], "", "missing.sst");
    let two = dir.write(
        "two.sst",
        "layer a: categorical(3)\nlayer b: bernoulli(3)\n",
    );
    let two = two.to_str().unwrap();
    usage_error(&["eval", two], req, "--layer");
    usage_error(&["eval", two, "--layer", "c"], req, "`c`");
    usage_error(&[], "", "Usage");
    usage_error(&["frobnicate"], "", "frobnicate");
    usage_error(&["eval"], req, "FILE");
    // A spec with no layer at all cannot be evaluated either.
    let none = dir.write("none.sst", "# nothing\n");
    let out = run(&["eval", none.to_str().unwrap()], req);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    // With --layer the right layer runs.
    let out = run(&["eval", two, "--layer", "b"], req);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["plan"]["support"], "bernoulli(n = 3)");
}

// FAILURES: BAD REQUESTS (3)

#[test]
fn bad_requests_exit_3_naming_the_field() {
    let s = spec(CATEGORICAL);
    let p = &s.path;
    // Faults of the request as a whole: the field is `request`, so the message must say which.
    let whole: &[(&str, &str)] = &[
        ("", "malformed JSON"),
        ("{", "malformed JSON"),
        (
            r#"{"theta": [0, 1, 2]} {"theta": [0, 1, 2]}"#,
            "malformed JSON",
        ),
        (r#"{"theta": [NaN, 1, 2]}"#, "malformed JSON"),
        ("[0, 1, 2]", "expected a JSON object"),
        (
            r#"{"theta": [0, 1, 2], "tempreature": 1}"#,
            "unknown field `tempreature`",
        ),
    ];
    for (request, says) in whole {
        let message = eval_bad(p, request, "request");
        assert!(message.contains(says), "{request}: {message}");
    }
    let cases: &[(&str, &str)] = &[
        (r#"{}"#, "theta"),
        (r#"{"theta": [0, 1]}"#, "theta"),
        (r#"{"theta": [0, 1, 2, 3]}"#, "theta"),
        (r#"{"theta": [[0, 1], [2, 3]]}"#, "theta"),
        (r#"{"theta": [[[0, 1]]]}"#, "theta"),
        (r#"{"theta": [[0, 1, 2], [0, 1]]}"#, "theta"),
        (r#"{"theta": [0, "1", 2]}"#, "theta"),
        (r#"{"theta": [0, null, 2]}"#, "theta"),
        (r#"{"theta": 3}"#, "theta"),
        (r#"{"theta": []}"#, "theta"),
        (r#"{"theta": [0, 1, 2], "temperature": 0}"#, "temperature"),
        (r#"{"theta": [0, 1, 2], "temperature": -1}"#, "temperature"),
        (r#"{"theta": [0, 1, 2], "temperature": "1"}"#, "temperature"),
        (r#"{"theta": [0, 1, 2], "dtype": "f16"}"#, "dtype"),
        (r#"{"theta": [0, 1, 2], "mode": "medium"}"#, "mode"),
        (r#"{"theta": [0, 1, 2], "noise": "some"}"#, "noise"),
        (r#"{"theta": [0, 1, 2], "noise": {"seed": -1}}"#, "noise"),
        (
            r#"{"theta": [0, 1, 2], "noise": {"seed": 1, "x": 2}}"#,
            "noise",
        ),
        (r#"{"theta": [0, 1, 2], "samples": 0}"#, "samples"),
        (r#"{"theta": [0, 1, 2], "samples": 1.5}"#, "samples"),
        (r#"{"theta": [0, 1, 2], "step": -3}"#, "step"),
        (r#"{"theta": [0, 1, 2], "with_w": 1}"#, "with_w"),
        (r#"{"theta": [0, 1, 2], "cotangent": [1, 0]}"#, "cotangent"),
        (
            r#"{"theta": [0, 1, 2], "cotangent": [[1, 0, 0]]}"#,
            "cotangent",
        ),
        (
            r#"{"theta": [[0, 1, 2], [2, 1, 0]], "cotangent": [1, 0, 0]}"#,
            "cotangent",
        ),
        (
            r#"{"theta": [0, 1, 2], "samples": 2, "cotangent": [[1, 0, 0], [1, 0, 0]]}"#,
            "cotangent",
        ),
        (
            r#"{"theta": [0, 1, 2], "cotangent": [1, "a", 0]}"#,
            "cotangent",
        ),
    ];
    for (request, field) in cases {
        eval_bad(p, request, field);
    }
    // A schedule that reaches T ≤ 0 at the request's step.
    let s = spec("layer pick: categorical(3) { temperature: 1 - step / 10 }");
    eval_ok(&s.path, None, &json!({"theta": [0, 1, 2], "step": 5}));
    eval_bad(
        &s.path,
        r#"{"theta": [0, 1, 2], "step": 10}"#,
        "temperature",
    );
    eval_bad(
        &s.path,
        r#"{"theta": [0, 1, 2], "step": 20}"#,
        "temperature",
    );
}

// `sst check` AND `sst demo`

#[test]
fn check_prints_every_layer_and_its_choices() {
    let dir = TempDir::new();
    let path = dir.write(
        "two.sst",
        "layer pick: categorical(5) { estimator: straight_through }\n\
         layer coins: binary_concrete(2) { temperature: 0.5 }\n",
    );
    let out = run(&["check", path.to_str().unwrap()], "");
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    for piece in [
        "pick",
        "categorical(n = 5)",
        "argmax",
        "softmax",
        "straight_through",
        "coins",
        "bernoulli(n = 2)",
        "binary_concrete",
        "sigmoid",
        "0.5",
    ] {
        assert!(stdout.contains(piece), "missing {piece:?}:\n{stdout}");
    }

    let out = run(&["check", "--json", path.to_str().unwrap()], "");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("check --json is JSON");
    let layers = v["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["name"], "pick");
    assert_eq!(layers[0]["support"], "categorical(n = 5)");
    assert_eq!(layers[0]["estimator"], "straight_through");
    assert_eq!(layers[0]["hard_solver"], "argmax");
    assert_eq!(layers[1]["name"], "coins");
    assert_eq!(layers[1]["support"], "bernoulli(n = 2)");
    assert_eq!(layers[1]["soft_solver"], "sigmoid");
    for layer in layers {
        for key in [
            "support",
            "noise",
            "regularizer",
            "hard_solver",
            "soft_solver",
            "backward",
            "estimator",
            "temperature",
        ] {
            assert!(layer.get(key).is_some(), "no `{key}` in {layer}");
        }
    }
    // `check --json` shows the kernel IR program: the nodes a backend runs.
    let program = &layers[0]["program"];
    assert_eq!(program["row_len"], 5);
    assert_eq!(program["hard"], "argmax");
    assert_eq!(program["soft"], "softmax");
    assert_eq!(program["estimator"], "straight_through");
    assert_eq!(layers[1]["program"]["soft"], "sigmoid");
    assert_eq!(layers[1]["program"]["coordinates"], "binary");
    // Both layers run on the JIT (categorical with entropy, bernoulli with binary entropy).
    if cfg!(feature = "jit") {
        assert_eq!(layers[0]["backend"]["name"], "jit");
        assert_eq!(layers[1]["backend"]["name"], "jit");
        assert!(
            stdout.contains("jit  # fused Cranelift kernels"),
            "{stdout}"
        );
    }
    // The plan of `eval` is the layer's object of `check --json`, but for the temperature, the
    // program and the backend.
    let r = eval_ok(&path, Some("pick"), &json!({"theta": [0, 0, 0, 0, 0]}));
    let mut from_eval = r["plan"].clone();
    let mut from_check = layers[0].clone();
    from_eval.as_object_mut().unwrap().remove("temperature");
    from_check.as_object_mut().unwrap().remove("temperature");
    from_check.as_object_mut().unwrap().remove("program");
    from_check.as_object_mut().unwrap().remove("backend");
    assert_eq!(from_eval, from_check);
}

#[test]
fn demo_shows_presets_and_quickstart_layers() {
    let out = run(&["demo"], "");
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    for name in [
        "gumbel_softmax",
        "sparsemax_layer",
        "binary_concrete",
        "quickstart",
        "layer pick",
        "layer sparse",
        "layer coins",
        "layer race",
    ] {
        assert!(stdout.contains(name), "demo lacks {name:?}:\n{stdout}");
    }
    // It ends with a model that learned to sort through a Gumbel-Sinkhorn layer: the loss went
    // down, and at least 90 % of held-out positions are right (no progress bar off a terminal).
    let learned = stdout
        .split("== a model learns through a layer")
        .nth(1)
        .expect("the demo trains a model");
    let number_before = |marker: &str| -> f64 {
        let head = &learned[..learned.find(marker).expect(marker)];
        let word = head.split_whitespace().last().expect("a number");
        word.trim_end_matches('%').parse().expect("a number")
    };
    let losses: Vec<f64> = learned
        .split("loss ")
        .nth(2)
        .expect("loss a → b")
        .split(['→', ';'])
        .take(2)
        .map(|x| x.trim().parse().expect("a loss"))
        .collect();
    assert!(losses[1] < 0.9 * losses[0], "{losses:?}");
    assert!(number_before("of positions correct") >= 90.0, "{learned}");
    assert!(!text(&out.stderr).contains("learning to sort"));
}

#[test]
fn quickstart_layers_evaluate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.sst");
    for (layer, n) in [("pick", 6), ("sparse", 6), ("coins", 4), ("race", 6)] {
        let theta: Vec<f64> = (0..n).map(|i| 0.3 * i as f64 - 0.5).collect();
        let cot: Vec<f64> = (0..n)
            .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
            .collect();
        let r = eval_ok(
            &path,
            Some(layer),
            &json!({"theta": [theta.clone(), theta], "samples": 2, "cotangent": [cot.clone(), cot],
                    "step": 300, "with_w": true}),
        );
        assert_eq!(shape(&r["z"]), [2, 2, n], "{layer}");
        assert_eq!(shape(&r["grad_theta"]), [2, 2, n], "{layer}");
        assert_eq!(shape(&r["w"]), [2, 2, n], "{layer}");
    }
    // `pick` anneals: T = max(0.1, exp(-step / 1000)).
    let r = eval_ok(
        &path,
        Some("pick"),
        &json!({"theta": [0, 0, 0, 0, 0, 0], "step": 300}),
    );
    let want = f64::max(0.1, (-0.3f64).exp());
    assert!((r["plan"]["temperature"].as_f64().unwrap() - want).abs() < 1e-12);
}

// FINITE DIFFERENCES

/// `finite_diff` agrees with the sigmoid's closed-form gradient `c ⊙ z(1 − z) / T`.
#[test]
fn finite_diff_matches_the_closed_form() {
    let s = spec("layer r: bernoulli(3) { backward: finite_diff(eps = 1e-4); temperature: 0.5 }");
    let theta = [0.3, -1.0, 2.0];
    let c = [2.0, -1.0, 0.5];
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": theta, "cotangent": c, "noise": "none"}),
    );
    let want: Vec<f64> = theta
        .iter()
        .zip(c)
        .map(|(t, c)| {
            let z = sigmoid(t / 0.5);
            c * z * (1.0 - z) / 0.5
        })
        .collect();
    assert_close(&flat(&r["grad_theta"]), &want, 1e-7, "finite_diff");
    assert_eq!(r["plan"]["backward"], "finite_diff(eps = 0.0001)");
}

/// Bug: `finite_diff` (src/grad/mod.rs:27) takes `h = eps / ‖g‖` with `‖g‖ = sqrt(Σ g²)`, which
/// overflows for entries ≳ 1e154 (h = 0: the gradient is NaN and `sst eval` exits 3 with "this
/// is a bug in a solver") and underflows for entries ≲ 1e-154 (‖g‖ = 0: the gradient is
/// silently 0). The closed-form rule gives the finite answers; a scaled norm would too.
#[test]
fn finite_diff_with_huge_and_tiny_cotangents() {
    let s = spec("layer r: bernoulli(3) { backward: finite_diff }");
    let theta = [0.3, -1.0, 2.0];
    for scale in [1e300, 1e-300] {
        let c = [scale, scale, 0.0];
        let r = eval_ok(
            &s.path,
            None,
            &json!({"theta": theta, "cotangent": c, "noise": "none"}),
        );
        let want: Vec<f64> = theta
            .iter()
            .zip(c)
            .map(|(t, c)| c * sigmoid(*t) * (1.0 - sigmoid(*t)))
            .collect();
        let got = flat(&r["grad_theta"]);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs(),
                "cotangent scale {scale}: got {got:?}, want {want:?}"
            );
        }
    }
}

// REQUEST CAPS (README: "Requests are capped at 2²⁸ numbers per output, integer arguments at
// 2³¹ − 1")

/// A request whose output would exceed 2²⁸ = 268435456 numbers (samples × batch × row length,
/// where a count's row is its K + 1 scores) is a bad request naming `samples` and the cap; the
/// same count layer with few samples runs.
#[test]
fn requests_over_two_to_the_28_numbers_are_refused_naming_samples() {
    let cap: u64 = 1 << 28;
    let cat = spec(CATEGORICAL);
    // One row of 3: ⌊2²⁸/3⌋ + 1 samples is just over the cap.
    let over = cap / 3 + 1;
    let message = eval_bad(
        &cat.path,
        &json!({"theta": [0, 1, 2], "samples": over}).to_string(),
        "samples",
    );
    // Through `sst eval` the response's text budget (1 GiB of JSON) is met first; the library's
    // own cap is tested in tests/reliability.rs.
    assert!(message.contains("JSON"), "{message}");
    // The batch counts: two rows of 3 reach the cap with half as many samples.
    eval_bad(
        &cat.path,
        &json!({"theta": [[0, 1, 2], [2, 1, 0]], "samples": cap / 6 + 1}).to_string(),
        "samples",
    );
    // Beyond every size type: the largest u64.
    eval_bad(
        &cat.path,
        &json!({"theta": [0, 1, 2], "samples": u64::MAX}).to_string(),
        "samples",
    );
    // A count's output row is one number, but its scores are K + 1 = 10⁵: 2700 samples hold
    // 2.7·10⁸ > 2²⁸ scores, while 2700 numbers of z alone would be far below the cap.
    let count = spec("layer c: poisson(max = 99999)\n");
    let message = eval_bad(
        &count.path,
        &json!({"theta": [0.5], "samples": 2700}).to_string(),
        "samples",
    );
    assert!(message.contains(&cap.to_string()), "{message}");
    let r = eval_ok(&count.path, None, &json!({"theta": [0.5], "samples": 2}));
    assert_eq!(shape(&r["z"]), [2, 1]);
}

/// An integer argument above 2³¹ − 1 is a spec error (exit 1) with a caret under the argument,
/// written directly or reached through a const; 2³¹ − 1 itself is accepted.
#[test]
fn integer_arguments_over_two_to_the_31_are_spec_errors() {
    let dir = TempDir::new();
    let cases = [
        ("direct.sst", "layer l: categorical(2147483648)\n", "1:22"),
        (
            "const.sst",
            "const n = 65536 * 32768\nlayer l: subset(n = 10, k = n)\n",
            "2:29",
        ),
    ];
    for (name, source, at) in cases {
        let path = dir.write(name, source);
        let p = path.to_str().unwrap();
        for args in [vec!["check", p], vec!["eval", p]] {
            let out = run(&args, r#"{"theta": [0, 1, 2]}"#);
            let stderr = text(&out.stderr);
            assert_eq!(code(&out), 1, "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
            assert!(stderr.contains(&format!("{p}:{at}")), "{stderr}");
            assert!(stderr.contains('^'), "{stderr}");
            assert!(
                stderr.contains("must be at most 2147483647, found 2147483648"),
                "{stderr}"
            );
        }
    }
    let largest = dir.write("largest.sst", "layer l: categorical(2147483647)\n");
    let out = run(&["check", largest.to_str().unwrap()], "");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("categorical(n = 2147483647)"));
}

// COUNTS, PERMUTATIONS, TREES AND REINFORCE THROUGH `sst eval`

/// `log p_k = k·θ − e^θ − ln k!` (Poisson, θ = log λ), by the test's log-gamma.
fn poisson_log_pmf(theta: f64, k: usize) -> f64 {
    k as f64 * theta - theta.exp() - common::ln_gamma(k as f64 + 1.0)
}

/// `log q_k` of the Poisson pmf truncated to `{0..max}` and renormalised.
fn truncated_poisson_log_pmf(theta: f64, max: usize) -> Vec<f64> {
    let lp: Vec<f64> = (0..=max).map(|k| poisson_log_pmf(theta, k)).collect();
    let log_total = lp.iter().map(|x| x.exp()).sum::<f64>().ln();
    lp.iter().map(|x| x - log_total).collect()
}

/// `P(X > max)` summed directly over the next 200 outcomes (λ ≤ 10 here: the rest is < 1e-100).
fn poisson_tail(theta: f64, max: usize) -> f64 {
    (max + 1..max + 200)
        .map(|k| poisson_log_pmf(theta, k).exp())
        .sum()
}

/// The relaxed count `Σ_k k·softmax(w/T)_k`.
fn relaxed_count(w: &[f64], t: f64) -> f64 {
    let x: Vec<f64> = w.iter().map(|x| x / t).collect();
    expected_count(&x)
}

/// A count layer through `sst eval` (DESIGN.md §5: `θ` `[B, 1]`, `z` `[B, 1]`): with `max = auto`
/// each row is truncated on its own at the smallest `K_b` keeping its tail below 1e-6; the
/// response's `diagnostics.truncation_k` is the largest `K_b` and `dropped_mass` the largest row
/// tail; `w` (with `with_w`) has `K_b + 1` entries in row `b` — the closed-form truncated log-pmf
/// without noise — and `z`, `grad_theta` are the relaxed count `Σ k·softmax(log q(θ)/T)_k` and
/// `c·dz/dθ` (central differences of that formula). With seeded samples `w` gains the samples
/// axis and `z` is the relaxed count of each perturbed row; an explicit `max` that drops more
/// than 1e-3 of the mass is reported in `warnings`.
#[test]
fn eval_counts_reports_the_truncation_and_w_of_length_k_plus_one() {
    let t = 0.5;
    let s = spec(&format!(
        "layer c: poisson(max = auto) {{ temperature: {t} }}\n"
    ));
    let thetas = [2f64.ln(), 6f64.ln()];
    let cot = [1.0, -2.0];
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": [[thetas[0]], [thetas[1]]], "noise": "none", "with_w": true,
                "cotangent": [[cot[0]], [cot[1]]]}),
    );
    assert_eq!(r["plan"]["support"], "poisson(max = auto)");
    let ks: Vec<usize> = thetas
        .iter()
        .map(|&th| (1..).find(|&k| poisson_tail(th, k) < 1e-6).unwrap())
        .collect();
    assert!(
        ks[0] < ks[1],
        "the rates need truncations of their own: {ks:?}"
    );
    let k = r["diagnostics"]["truncation_k"]
        .as_u64()
        .expect("truncation_k") as usize;
    assert_eq!(k, ks[1]);
    let worst = poisson_tail(thetas[0], ks[0]).max(poisson_tail(thetas[1], ks[1]));
    let dropped = r["diagnostics"]["dropped_mass"].as_f64().unwrap();
    assert!((dropped - worst).abs() <= 1e-13, "{dropped} vs {worst}");
    assert_eq!(shape(&r["z"]), [2, 1]);
    assert_eq!(shape(&r["grad_theta"]), [2, 1]);
    let (z, g) = (flat(&r["z"]), flat(&r["grad_theta"]));
    for (b, &theta) in thetas.iter().enumerate() {
        let log_q = truncated_poisson_log_pmf(theta, ks[b]);
        assert_close(&flat(&r["w"][b]), &log_q, 1e-10, "w");
        assert_close(&z[b..=b], &[relaxed_count(&log_q, t)], 1e-12, "z");
        let h = 1e-5;
        let at = |th: f64| relaxed_count(&truncated_poisson_log_pmf(th, ks[b]), t);
        let want = cot[b] * (at(theta + h) - at(theta - h)) / (2.0 * h);
        assert_close(&g[b..=b], &[want], 1e-7, "grad_theta");
    }
    // Seeded samples: w [N][B][K_b + 1], each z the relaxed count of its own perturbed row.
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": [[thetas[0]], [thetas[1]]], "noise": {"seed": 3}, "samples": 3,
                "with_w": true, "cotangent": [[1.0], [1.0]]}),
    );
    assert_eq!(shape(&r["z"]), [3, 2, 1]);
    assert_eq!(shape(&r["grad_theta"]), [3, 2, 1]);
    let z = flat(&r["z"]);
    for sample in 0..3 {
        for (b, &kb) in ks.iter().enumerate() {
            let row = flat(&r["w"][sample][b]);
            assert_eq!(row.len(), kb + 1);
            let zi = z[sample * 2 + b];
            assert_close(&[zi], &[relaxed_count(&row, t)], 1e-12, "seeded z");
        }
    }
    // An explicit truncation that cuts 73 % of Poisson(5): a warning, the output still given.
    let cut = spec("layer c: poisson(max = 4)\n");
    let r = eval_ok(
        &cut.path,
        None,
        &json!({"theta": [5f64.ln()], "with_w": true}),
    );
    assert_eq!(shape(&r["w"]), [5]);
    let warnings = r["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("K = 4")),
        "{warnings:?}"
    );
}

/// Nested JSON rows of a row-major `n × n` matrix.
fn rows(m: &[f64], n: usize) -> Value {
    json!(m.chunks(n).map(<[f64]>::to_vec).collect::<Vec<_>>())
}

/// Every permutation of `0..n` (as `perm[item] = position`), by recursion.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..n {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// The permutation matrix (rows = items, columns = positions) of largest `Σ_i w[i][perm(i)]`,
/// by enumeration.
fn best_permutation(w: &[f64], n: usize) -> Vec<f64> {
    let score = |p: &Vec<usize>| (0..n).map(|i| w[i * n + p[i]]).sum::<f64>();
    let best = permutations(n)
        .into_iter()
        .max_by(|a, b| score(a).total_cmp(&score(b)))
        .unwrap();
    let mut z = vec![0.0; n * n];
    for (i, &j) in best.iter().enumerate() {
        z[i * n + j] = 1.0;
    }
    z
}

/// Row sums and column sums of a row-major `n × n` matrix.
fn row_and_column_sums(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = (0..n).map(|i| m[i * n..(i + 1) * n].iter().sum()).collect();
    let cols = (0..n).map(|j| (0..n).map(|i| m[i * n + j]).sum()).collect();
    (rows, cols)
}

/// `permutation(4)` through `sst eval`: hard `z` is the permutation matrix of the best
/// assignment of `w` (enumerating all 24, with and without noise, per sample); soft `z` is doubly
/// stochastic and satisfies the entropic optimality condition `log z_ij − w_ij/T = a_i + b_j`
/// (its double differences vanish); `grad_theta` has `z`'s shape with the samples axis, and its
/// rows and columns sum to zero because adding a constant to a row or a column of `θ` leaves
/// `z` unchanged.
#[test]
fn eval_permutation_hard_soft_and_gradient() {
    let (n, t) = (4, 0.5);
    let s = spec(&format!(
        "layer p: permutation({n}) {{ temperature: {t} }}\n"
    ));
    let theta: Vec<f64> = common::Rng(5).vec(n * n, -1.0, 1.0);
    let cot: Vec<f64> = common::Rng(6).vec(n * n, -1.0, 1.0);
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": rows(&theta, n), "noise": "none", "mode": "hard"}),
    );
    assert_eq!(shape(&r["z"]), [n, n]);
    assert_eq!(flat(&r["z"]), best_permutation(&theta, n));
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": rows(&theta, n), "noise": {"seed": 9}, "mode": "hard", "samples": 3,
                "with_w": true}),
    );
    assert_eq!(shape(&r["z"]), [3, n, n]);
    for (z, w) in flat(&r["z"]).chunks(n * n).zip(flat(&r["w"]).chunks(n * n)) {
        assert_eq!(z, best_permutation(w, n), "hard z of the perturbed w");
    }
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": rows(&theta, n), "noise": {"seed": 9}, "samples": 2, "with_w": true,
                "cotangent": rows(&cot, n)}),
    );
    assert_eq!(shape(&r["z"]), [2, n, n]);
    assert_eq!(shape(&r["grad_theta"]), [2, n, n]);
    let (z, w, g) = (flat(&r["z"]), flat(&r["w"]), flat(&r["grad_theta"]));
    for sample in 0..2 {
        let at = sample * n * n..(sample + 1) * n * n;
        let (z, w, g) = (&z[at.clone()], &w[at.clone()], &g[at]);
        let (zr, zc) = row_and_column_sums(z, n);
        assert_close(&zr, &[1.0; 4], 1e-8, "row sums of z");
        assert_close(&zc, &[1.0; 4], 1e-8, "column sums of z");
        assert!(z.iter().all(|&x| x > 0.0 && x < 1.0), "{z:?}");
        let dual = |i: usize, j: usize| z[i * n + j].ln() - w[i * n + j] / t;
        for i in 1..n {
            for j in 1..n {
                let dd = dual(i, j) - dual(i, 0) - dual(0, j) + dual(0, 0);
                assert!(dd.abs() < 1e-6, "double difference at ({i}, {j}): {dd}");
            }
        }
        let scale = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(
            scale > 1e-3,
            "a gradient that vanishes proves nothing: {g:?}"
        );
        let (gr, gc) = row_and_column_sums(g, n);
        for x in gr.iter().chain(&gc) {
            assert!(
                x.abs() <= 1e-6 * scale,
                "gradient row/column sums {gr:?} {gc:?}"
            );
        }
    }
}

/// Every spanning tree (undirected, `z[i][j] = z[j][i] = 1` on its edges) or every arborescence
/// rooted at `root` (`z[i][j] = 1` for the edge `i → j`) of the complete graph on `n` nodes, as
/// row-major `n × n` matrices: the edge sets of size n − 1 without a cycle, or the parent maps
/// under which every node reaches the root.
fn trees(n: usize, directed: Option<usize>) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    match directed {
        None => {
            let edges: Vec<(usize, usize)> = (0..n)
                .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
                .collect();
            for mask in 0u32..1 << edges.len() {
                if mask.count_ones() as usize != n - 1 {
                    continue;
                }
                let mut component: Vec<usize> = (0..n).collect();
                let mut z = vec![0.0; n * n];
                let mut acyclic = true;
                for (e, &(i, j)) in edges.iter().enumerate() {
                    if mask & 1 << e == 0 {
                        continue;
                    }
                    let (ci, cj) = (component[i], component[j]);
                    acyclic &= ci != cj;
                    component.iter_mut().for_each(|c| {
                        if *c == cj {
                            *c = ci
                        }
                    });
                    z[i * n + j] = 1.0;
                    z[j * n + i] = 1.0;
                }
                if acyclic {
                    out.push(z);
                }
            }
        }
        Some(root) => {
            let others: Vec<usize> = (0..n).filter(|&v| v != root).collect();
            for code in 0..n.pow(others.len() as u32) {
                let mut parent = vec![root; n];
                let mut c = code;
                for &v in &others {
                    parent[v] = c % n;
                    c /= n;
                }
                let reaches_root = |mut v: usize| {
                    for _ in 0..n {
                        if v == root {
                            return true;
                        }
                        v = parent[v];
                    }
                    false
                };
                if others.iter().any(|&v| parent[v] == v) || !(0..n).all(reaches_root) {
                    continue;
                }
                let mut z = vec![0.0; n * n];
                for &v in &others {
                    z[parent[v] * n + v] = 1.0;
                }
                out.push(z);
            }
        }
    }
    out
}

/// `Σ_τ P(τ)·z_τ` with `P(τ) ∝ exp(Σ_{(i,j) read} θ_ij z_τij / T)`: the edge marginals of the Gibbs
/// distribution over `trees`; `read(i, j)` says which entries of θ weigh an edge.
fn tree_marginals(
    trees: &[Vec<f64>],
    theta: &[f64],
    read: &dyn Fn(usize) -> bool,
    t: f64,
) -> Vec<f64> {
    let scores: Vec<f64> = trees
        .iter()
        .map(|z| {
            (0..z.len())
                .filter(|&e| read(e))
                .map(|e| theta[e] * z[e])
                .sum()
        })
        .collect();
    let p = softmax(&scores, t);
    let mut mu = vec![0.0; theta.len()];
    for (z, pk) in trees.iter().zip(p) {
        mu.iter_mut().zip(z).for_each(|(m, x)| *m += pk * x);
    }
    mu
}

/// `∂⟨c, μ(θ)⟩/∂θ` by central differences of the enumerated marginals (h = 1e-5).
fn tree_marginals_gradient(
    trees: &[Vec<f64>],
    theta: &[f64],
    read: &dyn Fn(usize) -> bool,
    t: f64,
    c: &[f64],
) -> Vec<f64> {
    let h = 1e-5;
    let loss = |th: &[f64]| -> f64 {
        let mu = tree_marginals(trees, th, read, t);
        mu.iter().zip(c).map(|(m, c)| m * c).sum()
    };
    (0..theta.len())
        .map(|e| {
            let (mut up, mut down) = (theta.to_vec(), theta.to_vec());
            up[e] += h;
            down[e] -= h;
            (loss(&up) - loss(&down)) / (2.0 * h)
        })
        .collect()
}

/// `spanning_tree(4)` and `arborescence(4, root = 0)` through `sst eval`, against enumeration of
/// all 16 spanning trees / 16 arborescences of the complete graph: hard `z` (no noise) is the
/// maximum-weight tree; soft `z` is the Gibbs edge marginals (the spanning tree's symmetric with
/// a zero diagonal); `grad_theta` is the central-difference gradient of `⟨c, marginals⟩`, exactly
/// zero on the entries the support ignores (below the diagonal and the diagonal for the spanning
/// tree; the diagonal and the edges into the root for the arborescence), which hold large
/// values here to show they are ignored.
#[test]
fn eval_trees_against_enumeration() {
    let (n, t) = (4, 0.7);
    let cot = common::Rng(12).vec(n * n, -1.0, 1.0);
    let upper = |e: usize| e / n < e % n;
    // Off the diagonal and not into the root 0.
    let arborescence_reads = |e: usize| {
        let (i, j) = (e / n, e % n);
        i != j && j != 0
    };
    type Read<'a> = &'a dyn Fn(usize) -> bool;
    let cases: [(&str, Option<usize>, Read); 2] = [
        ("spanning_tree(4)", None, &upper),
        ("arborescence(4, root = 0)", Some(0), &arborescence_reads),
    ];
    for (support, root, read) in cases {
        let mut theta = common::Rng(11).vec(n * n, -1.0, 1.0);
        for (e, x) in theta.iter_mut().enumerate() {
            if !read(e) {
                *x = 50.0;
            }
        }
        let s = spec(&format!("layer t: {support} {{ temperature: {t} }}\n"));
        let all = trees(n, root);
        assert_eq!(all.len(), 16, "{support}: Cayley, n^(n−2) = 16 for n = 4");
        let r = eval_ok(
            &s.path,
            None,
            &json!({"theta": rows(&theta, n), "noise": "none", "mode": "hard"}),
        );
        let weight = |z: &Vec<f64>| {
            (0..n * n)
                .filter(|&e| read(e))
                .map(|e| theta[e] * z[e])
                .sum::<f64>()
        };
        let best = all
            .iter()
            .max_by(|a, b| weight(a).total_cmp(&weight(b)))
            .unwrap();
        assert_eq!(&flat(&r["z"]), best, "{support}: hard z");
        let r = eval_ok(
            &s.path,
            None,
            &json!({"theta": rows(&theta, n), "noise": "none", "cotangent": rows(&cot, n)}),
        );
        assert_eq!(shape(&r["z"]), [n, n]);
        assert_eq!(shape(&r["grad_theta"]), [n, n]);
        let z = flat(&r["z"]);
        assert_close(&z, &tree_marginals(&all, &theta, read, t), 1e-10, support);
        if root.is_none() {
            for i in 0..n {
                assert_eq!(z[i * n + i], 0.0, "diagonal");
                for j in 0..n {
                    assert_eq!(z[i * n + j], z[j * n + i], "symmetric");
                }
            }
        }
        let g = flat(&r["grad_theta"]);
        let want = tree_marginals_gradient(&all, &theta, read, t, &cot);
        assert_close(&g, &want, 1e-7, support);
        for (e, &ge) in g.iter().enumerate() {
            if !read(e) {
                assert_eq!(ge, 0.0, "{support}: entry {e} is ignored");
            }
        }
    }
}

/// `reinforce(baseline = none)` on a batch of categoricals through `sst eval`: `z` is hard
/// (one-hot) and `grad_theta` is the score-function estimate per sample, computed here from its
/// formula: `f(z)·∇_θ log q(z|θ)` with `f(z) = ⟨c_b, z⟩` and, for a categorical with Gumbel
/// noise, `log q(e_k|θ) = θ_k − logsumexp θ`, so `∇_θ log q = e_k − softmax(θ)`.
#[test]
fn eval_reinforce_is_the_score_function_of_each_sample() {
    let s = spec("layer r: categorical(4) { estimator: reinforce(baseline = none) }\n");
    let theta = [[0.5, -1.0, 2.0, 0.0], [0.0, 0.3, -0.2, 0.1]];
    let cot = [[1.0, -2.0, 0.5, 3.0], [0.2, 0.0, -1.0, 1.0]];
    let n = 8;
    let r = eval_ok(
        &s.path,
        None,
        &json!({"theta": theta, "samples": n, "noise": {"seed": 4}, "cotangent": cot}),
    );
    assert_eq!(r["diagnostics"]["mode"], "hard");
    assert_eq!(shape(&r["z"]), [n, 2, 4]);
    assert_eq!(shape(&r["grad_theta"]), [n, 2, 4]);
    let (z, g) = (flat(&r["z"]), flat(&r["grad_theta"]));
    let mut picked = Vec::new();
    for (i, (zi, gi)) in z.chunks(4).zip(g.chunks(4)).enumerate() {
        let b = i % 2;
        assert_eq!(
            zi.iter().filter(|&&x| x == 1.0).count(),
            1,
            "one-hot: {zi:?}"
        );
        assert_eq!(
            zi.iter().filter(|&&x| x == 0.0).count(),
            3,
            "one-hot: {zi:?}"
        );
        let f: f64 = zi.iter().zip(&cot[b]).map(|(a, c)| a * c).sum();
        let q = softmax(&theta[b], 1.0);
        let want: Vec<f64> = zi.iter().zip(&q).map(|(zk, qk)| f * (zk - qk)).collect();
        assert_close(gi, &want, 1e-12, "score function");
        picked.push(zi.iter().position(|&x| x == 1.0).unwrap());
    }
    picked.sort_unstable();
    picked.dedup();
    assert!(
        picked.len() > 1,
        "every sample picked the same outcome: {picked:?}"
    );
}

// `sst bench`

/// `sst bench --help` names its options.
#[test]
fn bench_usage_names_its_json_option() {
    let out = run(&["bench", "--help"], "");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("--json"),
        "{}",
        text(&out.stdout)
    );
}

/// `sst bench --json` runs and prints a JSON list of workloads, each named and timed (one timed
/// run each, to keep the test short).
#[test]
fn bench_json_lists_named_workloads() {
    let out = run(&["bench", "--json", "--repeats", "1"], "");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench --json is JSON");
    let rows = v.as_array().expect("a list of workloads");
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in [
        "gumbel_softmax_fwd_bwd",
        "gumbel_max_hard",
        "gumbel_sparsemax_fwd_bwd",
    ] {
        for dtype in ["f32", "f64"] {
            assert!(
                names
                    .iter()
                    .any(|n| n.starts_with(want) && n.ends_with(dtype)),
                "no {want} … {dtype} in {names:?}"
            );
        }
    }
    for r in rows {
        let ms = r["median_ms"].as_f64().expect("median_ms");
        assert!(ms.is_finite() && ms > 0.0, "{r}");
    }
}

/// `sst bench --only TEXT` times the workloads whose name contains TEXT (and reports the compile
/// times, which every run has).
#[test]
fn bench_only_times_the_named_workloads() {
    let out = run(
        &[
            "bench",
            "--json",
            "--repeats",
            "1",
            "--only",
            "arborescence_marginals_fwd_16x64",
        ],
        "",
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench --json is JSON");
    let names: Vec<&str> = v
        .as_array()
        .expect("a list of workloads")
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "compile_specs",
            "arborescence_marginals_fwd_16x64_f64",
            "jit_compile_total"
        ]
    );
}

/// Numbers reach the layer exactly: with no noise, `w = θ` comes back bit for bit for 2000
/// random doubles over many magnitudes, written in the request as Rust's shortest round-trip
/// decimals (JSON parsing that is off by an ulp would show here).
#[test]
fn request_numbers_are_read_exactly() {
    let mut rng = common::Rng(0xF1_0A7);
    let theta: Vec<f64> = (0..2000)
        .map(|_| rng.uniform(-1.0, 1.0) * 10f64.powi((rng.next_u64() % 40) as i32 - 20))
        .collect();
    let list: Vec<String> = theta.iter().map(|x| format!("{x:?}")).collect();
    let s = spec("layer l: categorical(2000) {}");
    let request = format!(
        r#"{{"theta": [{}], "noise": "none", "with_w": true}}"#,
        list.join(", ")
    );
    let out = eval_raw(&s.path, None, &request);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let response: Value = serde_json::from_str(&text(&out.stdout)).expect("JSON");
    let w = flat(&response["w"]);
    for (i, (a, b)) in theta.iter().zip(&w).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "θ[{i}] = {a:?} came back as {b:?}"
        );
    }
}
