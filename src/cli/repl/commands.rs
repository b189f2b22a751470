//! The `:` commands: parsing their arguments and running them on a [`Session`].

use std::fmt::Write;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use serde_json::Value as Json;
use sst::noise::{uniform, NoiseKey};
use sst::{Layer, Mode, Options};

use super::session::{Output, Session};
use super::show::{self, Pairs};
use crate::cli::check::plan_table;
use crate::cli::json::nested_array;
use sst::diagnostic::did_you_mean;

/// Every command with its arguments and what it does, for `:help` and completion.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (":load", "FILE", "add the declarations of a .sst file"),
    (
        ":list",
        "",
        "the layers with their support, estimator and temperature",
    ),
    (":plan", "NAME", "the checker's plan for a layer and why"),
    (
        ":sample",
        "NAME [theta] [--seed S] [--hard|--soft] [--T 0.1]",
        "sample z (theta random when omitted)",
    ),
    (
        ":grad",
        "NAME [theta] [cotangent] [--seed S]",
        "the gradient of <cotangent, z> with respect to theta",
    ),
    (
        ":set",
        "NAME.field VALUE",
        "rewrite a field of a layer, e.g. `:set pick.temperature 0.1`",
    ),
    (
        ":bench",
        "NAME",
        "time forward + backward on a random batch of 256",
    ),
    (":help", "", "this list"),
    (":quit", "", "leave (Ctrl-D too)"),
];

/// Set by Ctrl-C while a command runs; long commands check it between steps and stop.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The batch size of `:bench`.
const BENCH_BATCH: usize = 256;
/// Timed runs of `:bench` (after one warm-up); the median is reported.
const BENCH_RUNS: usize = 7;
/// The most entries a random theta or cotangent may have (128 MiB of f64).
const MAX_RANDOM: usize = 1 << 24;

/// Runs one command (the line without its `:`).
pub fn run(session: &mut Session, command: &str) -> Output {
    let (name, rest) = split_word(command);
    let result = match name {
        "load" => load(session, rest),
        "list" => Ok(list(session)),
        "plan" => plan(session, rest),
        "sample" => sample(session, rest),
        "grad" => grad(session, rest),
        "set" => return set(session, rest),
        "bench" => bench(session, rest),
        "help" | "h" | "?" => Ok(help()),
        "quit" | "q" | "exit" => return Output::Quit,
        _ => Err(unknown_command(name)),
    };
    match result {
        Ok(out) => out,
        Err(message) => Output::Error(format!("error: {message}")),
    }
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    }
}

fn unknown_command(name: &str) -> String {
    let typed = format!(":{name}");
    match did_you_mean(&typed, COMMANDS.iter().map(|c| c.0)) {
        Some(c) => format!("unknown command `{typed}`; did you mean `{c}`? (:help lists them)"),
        None => format!("unknown command `{typed}` (:help lists them)"),
    }
}

fn help() -> Output {
    let mut out = String::from(
        "Type a declaration (`layer pick: categorical(4) { temperature: 0.5 }`, `const n = 4`,\n\
         `preset …`) to add it; declaring a layer again replaces it. Commands:\n",
    );
    for (name, args, what) in COMMANDS {
        let _ = writeln!(out, "  {name} {args}\n      {what}");
    }
    out.push_str("theta and cotangents are JSON arrays: [0.5, -1, 2] or [[1, 0], [0, 1]].\n");
    Output::Text(out)
}

// DECLARATIONS

fn load(session: &mut Session, rest: &str) -> Result<Output, String> {
    if rest.is_empty() {
        return Err("usage: :load FILE".into());
    }
    Ok(session.declare_file(std::path::Path::new(rest)))
}

fn set(session: &mut Session, rest: &str) -> Output {
    let (target, value) = split_word(rest);
    let Some((layer, field)) = target.split_once('.') else {
        return Output::Error("error: usage: :set NAME.field VALUE".into());
    };
    session.set_field(layer, field, value.trim())
}

fn list(session: &Session) -> Output {
    let layers = session.module().layers();
    if layers.is_empty() {
        return Output::Text("no layers yet\n".into());
    }
    let rows: Vec<[String; 4]> = layers
        .iter()
        .map(|l| {
            let plan = l.plan();
            [
                l.name().to_string(),
                plan.support.describe(),
                plan.decision("estimator").value.clone(),
                format!("T = {}", plan.decision("temperature").value),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    Output::Text(out)
}

fn plan(session: &Session, rest: &str) -> Result<Output, String> {
    let layer = find_layer(session, rest.trim())?;
    Ok(Output::Text(plan_table(layer.plan())))
}

fn find_layer<'a>(session: &'a Session, name: &str) -> Result<&'a Layer, String> {
    if name.is_empty() {
        return Err("which layer? (:list shows them)".into());
    }
    session
        .module()
        .try_layer(name)
        .map_err(|_| session.no_layer(name))
}

// ARGUMENTS

/// A command's arguments after the layer name: arrays in order, and the flags.
#[derive(Default)]
struct Args {
    arrays: Vec<ArrayD<f64>>,
    seed: Option<u64>,
    mode: Option<Mode>,
    temperature: Option<f64>,
}

/// Splits `text` into `[…]` arrays (brackets balanced) and whitespace-separated words.
fn tokens(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let end = if rest.starts_with('[') {
            let mut depth = 0i64;
            rest.char_indices()
                .find_map(|(i, c)| {
                    match c {
                        '[' => depth += 1,
                        ']' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i + 1)
                })
                .ok_or("an array is missing its closing `]`")?
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        out.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Ok(out)
}

fn parse_args(words: &[&str]) -> Result<Args, String> {
    let mut args = Args::default();
    let mut words = words.iter();
    while let Some(&word) = words.next() {
        let mut value = |flag: &str| {
            words
                .next()
                .copied()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match word {
            "--seed" => {
                let v = value(word)?;
                args.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed takes an integer ≥ 0, found `{v}`"))?,
                );
            }
            "--T" | "--temperature" => {
                let v = value(word)?;
                let t: f64 = v
                    .parse()
                    .map_err(|_| format!("{word} takes a number, found `{v}`"))?;
                if !(t > 0.0 && t.is_finite()) {
                    return Err(format!("{word} must be a finite number > 0, found `{v}`"));
                }
                args.temperature = Some(t);
            }
            "--hard" => args.mode = Some(Mode::Hard),
            "--soft" => args.mode = Some(Mode::Soft),
            w if w.starts_with('[') => args.arrays.push(parse_array(w)?),
            w => {
                return Err(format!(
                    "unexpected `{w}` (expected an array such as [0.5, -1, 2], --seed S, --hard, --soft or --T 0.1)"
                ))
            }
        }
    }
    Ok(args)
}

/// A JSON array of numbers, nested as deep as the array's rank, rectangular.
pub fn parse_array(text: &str) -> Result<ArrayD<f64>, String> {
    let json: Json =
        serde_json::from_str(text).map_err(|e| format!("malformed array `{text}`: {e}"))?;
    nested_array(&json).map_err(|e| format!("array `{text}`: {e}"))
}

/// Uniform numbers in `[-scale, scale]` of `shape`, from `seed` (on a stream of its own, apart
/// from the layer's noise).
pub(in crate::cli) fn random(
    shape: &[usize],
    seed: u64,
    stream: u32,
    scale: f64,
) -> Result<ArrayD<f64>, String> {
    let key = NoiseKey {
        seed,
        sample: u32::MAX - stream,
        batch: 0,
    };
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_RANDOM)
        .ok_or_else(|| {
            format!("shape {shape:?} is too large to draw at random (at most {MAX_RANDOM} entries)")
        })?;
    let data = (0..n)
        .map(|i| scale * (2.0 * uniform::<f64>(key, i as u64) - 1.0))
        .collect();
    Ok(ArrayD::from_shape_vec(IxDyn(shape), data).expect("sizes agree"))
}

// SAMPLING

/// The layer, its arguments, θ (given or random) and the seed, for `:sample` and `:grad`.
struct Request<'a> {
    layer: &'a Layer,
    args: Args,
    theta: ArrayD<f64>,
    theta_label: String,
    seed: u64,
}

fn request<'a>(
    session: &'a mut Session,
    rest: &str,
    max_arrays: usize,
) -> Result<Request<'a>, String> {
    let (name, rest) = split_word(rest);
    let mut args = parse_args(&tokens(rest)?)?;
    if args.arrays.len() > max_arrays {
        return Err(format!(
            "expected at most {max_arrays} array(s), found {}",
            args.arrays.len()
        ));
    }
    // Check the name before a seed is spent on it; then borrow the layer for good.
    find_layer(session, name)?;
    let seed = session.seed(args.seed);
    let layer = find_layer(session, name)?;
    let (theta, theta_label) = if args.arrays.is_empty() {
        let shape = layer.plan().support.shape();
        (
            random(&shape, seed, 0, 2.0)?,
            format!("(random, seed {seed})"),
        )
    } else {
        (args.arrays.remove(0), "(given)".to_string())
    };
    Ok(Request {
        layer,
        args,
        theta,
        theta_label,
        seed,
    })
}

impl Request<'_> {
    fn options(&self) -> Options {
        let mut opts = Options::default().seed(self.seed);
        if let Some(mode) = self.args.mode {
            opts = opts.mode(mode);
        }
        if let Some(t) = self.args.temperature {
            opts = opts.temperature(t);
        }
        opts
    }

    fn forward(&self) -> Result<sst::Forward<f64>, String> {
        self.layer
            .try_forward(self.theta.view(), &self.options())
            .map_err(|e| e.to_string())
    }
}

/// `NAME: WHAT, MODE, T = …, seed …` and the θ used, the first lines of `:sample` and `:grad`.
fn heading(req: &Request<'_>, fwd: &sst::Forward<f64>, what: &str) -> String {
    format!(
        "{}: {what}, {}, T = {}, seed {}\ntheta {}\n{}",
        req.layer.name(),
        fwd.mode.name(),
        fwd.temperature,
        req.seed,
        req.theta_label,
        show::array(&req.theta, false)
    )
}

fn sample(session: &mut Session, rest: &str) -> Result<Output, String> {
    let req = request(session, rest, 1)?;
    let fwd = req.forward()?;
    let plan = req.layer.plan();
    let describe = plan.support.describe();
    let mut out = heading(&req, &fwd, &describe);
    let _ = write!(out, "w\n{}", show::array(&fwd.w, false));
    let _ = write!(out, "z\n{}", show::array(&fwd.z, fwd.mode == Mode::Soft));
    if plan.support.shape().len() >= 2 {
        if let Some(pairs) = show::pairs(&fwd.z, Pairs::for_program(&plan.program)) {
            let _ = write!(out, "pairs\n{pairs}");
        }
    }
    report(&mut out, &fwd.report);
    Ok(Output::Text(out))
}

fn grad(session: &mut Session, rest: &str) -> Result<Output, String> {
    let mut req = request(session, rest, 2)?;
    let fwd = req.forward()?;
    let (cotangent, label) = match req.args.arrays.pop() {
        Some(c) => (c, "(given)".to_string()),
        None => (
            random(&fwd.cotangent_shape, req.seed, 1, 1.0)?,
            format!("(random, seed {})", req.seed),
        ),
    };
    let grad = req
        .layer
        .try_backward(&fwd, cotangent.view())
        .map_err(|e| e.to_string())?;
    let mut out = heading(&req, &fwd, "d<cotangent, z>/dtheta");
    let _ = write!(out, "z\n{}", show::array(&fwd.z, fwd.mode == Mode::Soft));
    let _ = write!(out, "cotangent {label}\n{}", show::array(&cotangent, false));
    let _ = write!(out, "grad theta\n{}", show::array(&grad, false));
    report(&mut out, &fwd.report);
    Ok(Output::Text(out))
}

/// The solver's diagnostics and warnings, when it reported any.
fn report(out: &mut String, report: &sst::Report) {
    for (key, value) in &report.values {
        // Counts print as integers, residuals and masses in scientific notation.
        if value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(out, "{key} = {value}");
        } else {
            let _ = writeln!(out, "{key} = {value:.3e}");
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
}

fn bench(session: &mut Session, rest: &str) -> Result<Output, String> {
    let (name, extra) = split_word(rest);
    if !extra.is_empty() {
        return Err(format!("unexpected `{extra}`; usage: :bench NAME"));
    }
    find_layer(session, name)?;
    let seed = session.seed(None);
    let layer = find_layer(session, name)?;
    let mut shape = vec![BENCH_BATCH];
    shape.extend(layer.plan().support.shape());
    let theta = random(&shape, seed, 0, 2.0)?;
    let opts = Options::default().seed(seed);
    let cotangent = random(&shape, seed, 1, 1.0)?;
    let run = || -> Result<_, sst::RequestError> {
        let fwd = layer.try_forward(theta.view(), &opts)?;
        layer.try_backward(&fwd, cotangent.view())
    };
    let progress = std::io::stderr().is_terminal();
    let mut times = Vec::with_capacity(BENCH_RUNS);
    // One warm-up run, then the timed ones; Ctrl-C stops between runs.
    for i in 0..=BENCH_RUNS {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(format!("{name}: :bench interrupted"));
        }
        if progress {
            eprint!("\r:bench {name}: run {i}/{BENCH_RUNS}");
        }
        let start = Instant::now();
        std::hint::black_box(run()).map_err(|e| e.to_string())?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    times.sort_by(f64::total_cmp);
    Ok(Output::Text(format!(
        "{name}: forward + backward, theta {shape:?}: {:.3} ms (median of {BENCH_RUNS})\n",
        times[BENCH_RUNS / 2]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_parse_rectangular_only() {
        assert_eq!(parse_array("[0.5, -1, 2]").unwrap().shape(), &[3]);
        assert_eq!(
            parse_array("[[1, 2], [3, 4], [5, 6]]").unwrap().shape(),
            &[3, 2]
        );
        assert!(parse_array("[[1, 2], [3]]").is_err());
        assert!(parse_array("[[1, 2], 3]").is_err());
        assert!(parse_array("[1, \"a\"]").is_err());
        assert!(parse_array("[1, 2").is_err());
    }

    #[test]
    fn tokens_keep_arrays_whole() {
        assert_eq!(
            tokens(" [1, [2, 3]] --seed 4 [5 ,6]").unwrap(),
            vec!["[1, [2, 3]]", "--seed", "4", "[5 ,6]"]
        );
        assert!(tokens("[1, 2").is_err());
    }

    #[test]
    fn commands_print_what_a_person_reads() {
        let mut s = Session::new();
        s.handle("layer a: categorical(3) { temperature: 0.5 }");
        let Output::Text(text) = s.handle(":sample a [1, 2, 3] --seed 7 --hard") else {
            panic!()
        };
        assert!(
            text.starts_with("a: categorical(n = 3), hard, T = 0.5, seed 7"),
            "{text}"
        );
        let Output::Text(text) = s.handle(":grad a") else {
            panic!()
        };
        assert!(text.contains("cotangent (random, seed 1)"), "{text}");
        assert!(matches!(s.handle(":sample b"), Output::Error(e) if e.contains("no layer `b`")));
        assert!(matches!(s.handle(":sample a [1, 2]"), Output::Error(e) if e.contains("theta")));
        assert!(
            matches!(s.handle(":sampel a"), Output::Error(e) if e.contains("did you mean `:sample`"))
        );
        assert!(matches!(s.handle(":list"), Output::Text(t) if t.contains("categorical(n = 3)")));
        assert!(matches!(s.handle(":plan a"), Output::Text(t) if t.contains("temperature")));
        assert!(matches!(s.handle(":bench a"), Output::Text(t) if t.contains(" ms ")));
        assert_eq!(s.handle(":quit"), Output::Quit);
    }
}
