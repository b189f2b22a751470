//! Tests as data (STYLE.md §9): every `tests/ui/*.sst` file is compiled and its diagnostics are
//! compared with the annotations it carries, one comment line each:
//!
//! - `# error: LINE:COL TEXT`: a diagnostic at LINE:COL whose message contains TEXT. The
//!   diagnostics and the `error` annotations must match one to one; a file with no `error`
//!   annotation must compile.
//! - `# hint: LINE:COL TEXT`: the diagnostic at LINE:COL has a hint containing TEXT.
//! - `# plan: LAYER FIELD = VALUE`: (compiling files) the plan of LAYER decided VALUE for FIELD.
//! - `# temperature: LAYER STEP VALUE`: (compiling files) LAYER's temperature at STEP is VALUE
//!   (relative tolerance 1e-12; the values are computed by hand, not by sst).
//! - `# layers: N`: (compiling files) the spec declares N layers.
//! - `# bug(CHECK): DESCRIPTION`: the file shows a known bug that makes CHECK fail (`caret`: the
//!   rendered diagnostic has no `^`; `diagnostics`: the set of diagnostics or hints differs from
//!   the annotations, which say what *should* be reported). The `ui` test skips that check for
//!   that file until the marker is removed with the fix. Files of fixed bugs keep a
//!   `# regression (fixed):` comment.
//!
//! Every rendered diagnostic must show `FILE:LINE:COL` and a caret `^`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sst::{Error, Options};

#[derive(Debug, Clone, PartialEq)]
struct Expected {
    line: usize,
    col: usize,
    text: String,
}

#[derive(Debug, Default)]
struct Annotations {
    errors: Vec<Expected>,
    hints: Vec<Expected>,
    plans: Vec<(String, String, String)>,
    temperatures: Vec<(String, f64, f64)>,
    layers: Option<usize>,
    /// The checks a known bug breaks: `caret`, `diagnostics`.
    bugs: Vec<String>,
}

fn ui_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    files.sort();
    files
}

/// `LINE:COL REST` → (line, col, rest).
fn position(text: &str) -> Result<(usize, usize, String), String> {
    let (pos, rest) = text.split_once(' ').unwrap_or((text, ""));
    let (line, col) = pos
        .split_once(':')
        .ok_or_else(|| format!("expected LINE:COL, found {pos:?}"))?;
    let parse = |s: &str| {
        s.parse::<usize>()
            .map_err(|e| format!("bad number {s:?} in {pos:?}: {e}"))
    };
    Ok((parse(line)?, parse(col)?, rest.trim().to_string()))
}

fn parse_annotations(text: &str) -> Result<Annotations, String> {
    let mut a = Annotations::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(comment) = line.strip_prefix('#') else {
            continue;
        };
        let comment = comment.trim();
        let at = |e: String| format!("annotation on line {}: {e}", i + 1);
        if let Some(rest) = comment.strip_prefix("error:") {
            let (line, col, text) = position(rest.trim()).map_err(at)?;
            a.errors.push(Expected { line, col, text });
        } else if let Some(rest) = comment.strip_prefix("hint:") {
            let (line, col, text) = position(rest.trim()).map_err(at)?;
            a.hints.push(Expected { line, col, text });
        } else if let Some(rest) = comment.strip_prefix("plan:") {
            let (left, value) = rest
                .split_once('=')
                .ok_or_else(|| at("expected `LAYER FIELD = VALUE`".into()))?;
            let mut words = left.split_whitespace();
            let (Some(layer), Some(field), None) = (words.next(), words.next(), words.next())
            else {
                return Err(at("expected `LAYER FIELD = VALUE`".into()));
            };
            a.plans
                .push((layer.into(), field.into(), value.trim().to_string()));
        } else if let Some(rest) = comment.strip_prefix("temperature:") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [layer, step, value] = words[..] else {
                return Err(at("expected `LAYER STEP VALUE`".into()));
            };
            let number = |s: &str| s.parse::<f64>().map_err(|e| at(format!("{s:?}: {e}")));
            a.temperatures
                .push((layer.into(), number(step)?, number(value)?));
        } else if let Some(rest) = comment.strip_prefix("layers:") {
            a.layers = Some(
                rest.trim()
                    .parse()
                    .map_err(|e| at(format!("bad count: {e}")))?,
            );
        } else if let Some(rest) = comment.strip_prefix("bug(") {
            let (check, _) = rest
                .split_once("):")
                .ok_or_else(|| at("expected `bug(CHECK): DESCRIPTION`".into()))?;
            if !["caret", "diagnostics"].contains(&check) {
                return Err(at(format!("unknown check {check:?} in bug(...)")));
            }
            a.bugs.push(check.to_string());
        }
    }
    Ok(a)
}

/// Checks one file; returns its failures, one line each. `strict` runs the checks a known bug
/// breaks too.
fn check_file(path: &Path, strict: bool) -> Vec<String> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut failures = Vec::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: cannot read: {e}")],
    };
    let annotations = match parse_annotations(&text) {
        Ok(a) => a,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let run = |check: &str| strict || !annotations.bugs.iter().any(|b| b == check);
    let shown = path.display().to_string();
    match sst::compile_named(&shown, &text) {
        Ok(module) => {
            if !annotations.errors.is_empty() && run("diagnostics") {
                failures.push(format!(
                    "{name}: compiles, but {} error(s) were expected: {:?}",
                    annotations.errors.len(),
                    annotations.errors
                ));
            }
            if let Some(n) = annotations.layers {
                if module.layers().len() != n {
                    failures.push(format!(
                        "{name}: {} layers, expected {n}",
                        module.layers().len()
                    ));
                }
            }
            for (layer, field, value) in &annotations.plans {
                let Ok(l) = module.try_layer(layer) else {
                    failures.push(format!("{name}: no layer `{layer}`"));
                    continue;
                };
                match l.plan().decisions.iter().find(|d| d.field == field) {
                    Some(d) if &d.value == value => {}
                    Some(d) => failures.push(format!(
                        "{name}: layer `{layer}`: {field} = {:?}, expected {value:?}",
                        d.value
                    )),
                    None => failures.push(format!(
                        "{name}: layer `{layer}`: no decision for `{field}`"
                    )),
                }
            }
            for (layer, step, expected) in &annotations.temperatures {
                let Ok(l) = module.try_layer(layer) else {
                    failures.push(format!("{name}: no layer `{layer}`"));
                    continue;
                };
                match l.try_temperature(&Options::default().step(*step)) {
                    Ok(t) if (t - expected).abs() <= 1e-12 * expected.abs().max(1.0) => {}
                    Ok(t) => failures.push(format!(
                        "{name}: layer `{layer}` at step {step}: T = {t}, expected {expected}"
                    )),
                    Err(e) => failures.push(format!("{name}: layer `{layer}`: {e}")),
                }
            }
        }
        Err(Error::Compile(e)) => {
            if annotations.errors.is_empty() && run("diagnostics") {
                failures.push(format!("{name}: expected to compile, but:\n{e}"));
            }
            if !annotations.plans.is_empty() || !annotations.temperatures.is_empty() {
                failures.push(format!(
                    "{name}: has plan/temperature annotations but does not compile"
                ));
            }
            let found: Vec<(usize, usize, &sst::Diagnostic)> = e
                .diagnostics
                .iter()
                .map(|d| {
                    let (l, c) = d.line_col(&text);
                    (l, c, d)
                })
                .collect();
            for (l, c, d) in &found {
                let rendered = d.render(&shown, &text);
                if !rendered.contains(&format!("{shown}:{l}:{c}")) {
                    failures.push(format!(
                        "{name}: the rendering of {l}:{c} lacks `{shown}:{l}:{c}`:\n{rendered}"
                    ));
                }
                if !rendered.contains(&d.message) {
                    failures.push(format!(
                        "{name}: the rendering of {l}:{c} lacks its message:\n{rendered}"
                    ));
                }
                if run("caret") && !rendered.contains('^') {
                    failures.push(format!(
                        "{name}: the rendering of {l}:{c} has no caret `^`:\n{rendered}"
                    ));
                }
                if d.span.end > text.len() || d.span.start > d.span.end {
                    failures.push(format!("{name}: span {:?} out of the source", d.span));
                }
            }
            if run("diagnostics") {
                failures.extend(match_diagnostics(&name, &annotations, &found));
            }
        }
        Err(other) => failures.push(format!("{name}: unexpected error kind: {other}")),
    }
    failures
}

/// One-to-one matching of `error` annotations with diagnostics, and of `hint` annotations with
/// the hints of the diagnostics at their positions.
fn match_diagnostics(
    name: &str,
    annotations: &Annotations,
    found: &[(usize, usize, &sst::Diagnostic)],
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut used = vec![false; found.len()];
    for want in &annotations.errors {
        let hit = found.iter().enumerate().position(|(i, (l, c, d))| {
            !used[i] && *l == want.line && *c == want.col && d.message.contains(&want.text)
        });
        match hit {
            Some(i) => used[i] = true,
            None => failures.push(format!(
                "{name}: missing error {}:{} containing {:?}",
                want.line, want.col, want.text
            )),
        }
    }
    for (i, (l, c, d)) in found.iter().enumerate() {
        if !used[i] {
            failures.push(format!(
                "{name}: unexpected error {l}:{c} {:?} (hint: {:?})",
                d.message, d.hint
            ));
        }
    }
    for want in &annotations.hints {
        let ok = found.iter().any(|(l, c, d)| {
            *l == want.line
                && *c == want.col
                && d.hint.as_deref().is_some_and(|h| h.contains(&want.text))
        });
        if !ok {
            let at: Vec<_> = found
                .iter()
                .filter(|(l, c, _)| *l == want.line && *c == want.col)
                .map(|(_, _, d)| d.hint.clone())
                .collect();
            failures.push(format!(
                "{name}: no hint containing {:?} at {}:{} (hints there: {at:?})",
                want.text, want.line, want.col
            ));
        }
    }
    failures
}

fn report(failures: &[String]) -> String {
    let mut out = format!("{} failure(s):\n", failures.len());
    for f in failures {
        let _ = writeln!(out, "- {f}");
    }
    out
}

#[test]
fn ui() {
    let files = ui_files();
    assert!(!files.is_empty(), "tests/ui holds no .sst files");
    let failures: Vec<String> = files.iter().flat_map(|f| check_file(f, false)).collect();
    assert!(failures.is_empty(), "{}", report(&failures));
}

/// The harness itself: annotations parse, and a wrong annotation is caught.
#[test]
fn harness_catches_mismatches() {
    let a = parse_annotations(
        "# error: 3:5 unknown x\n# hint: 3:5 did you\n# plan: a noise = gaussian(sigma = 1)\n\
         # temperature: a 10 0.5\n# layers: 2\n# bug(caret): text\n",
    )
    .unwrap();
    assert_eq!(
        a.errors,
        [Expected {
            line: 3,
            col: 5,
            text: "unknown x".into()
        }]
    );
    assert_eq!(a.hints.len(), 1);
    assert_eq!(
        a.plans,
        [("a".into(), "noise".into(), "gaussian(sigma = 1)".into())]
    );
    assert_eq!(a.temperatures, [("a".into(), 10.0, 0.5)]);
    assert_eq!(a.layers, Some(2));
    assert_eq!(a.bugs, ["caret"]);
    assert!(parse_annotations("# error: x unknown").is_err());
    assert!(parse_annotations("# bug(nothing): x").is_err());

    let dir = std::env::temp_dir().join(format!("sst-ui-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // Right position, wrong text; and a diagnostic nobody expected.
    let wrong = write(
        "wrong.sst",
        "layer a: categorical(3) { noise: gumble }\n# error: 1:34 unknown estimator\n",
    );
    let f = check_file(&wrong, false);
    assert!(f.iter().any(|m| m.contains("missing error 1:34")), "{f:?}");
    assert!(
        f.iter().any(|m| m.contains("unexpected error 1:34")),
        "{f:?}"
    );
    // An expected error that does not come.
    let compiles = write(
        "compiles.sst",
        "layer a: categorical(3)\n# error: 1:1 boom\n",
    );
    assert!(check_file(&compiles, false)
        .iter()
        .any(|m| m.contains("compiles, but")));
    // A file with no annotation that does not compile.
    let fails = write("fails.sst", "layer a: categorical(0)\n");
    assert!(check_file(&fails, false)
        .iter()
        .any(|m| m.contains("expected to compile")));
    // A wrong plan value and a wrong temperature.
    let plan = write(
        "plan.sst",
        "layer a: categorical(3)\n# plan: a noise = none\n# temperature: a 0 2\n",
    );
    let f = check_file(&plan, false);
    assert_eq!(f.len(), 2, "{f:?}");
    // A hint that is not there.
    let hint = write(
        "hint.sst",
        "layer a: categorical(3) { noise: xyzzy }\n# error: 1:34 unknown noise\n# hint: 1:34 did you mean\n",
    );
    assert!(check_file(&hint, false)
        .iter()
        .any(|m| m.contains("no hint containing")));
    let _ = std::fs::remove_dir_all(&dir);
}
