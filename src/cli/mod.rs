//! The `sst` command: `check`, `eval`, `demo`, `bench` and `repl`.
//!
//! Exit status: 0 success, 1 spec error (caret diagnostics on stderr), 2 usage error, 3 bad
//! request (one line on stderr). On error nothing is written to stdout.

mod bench;
mod check;
mod demo;
mod eval;
mod json;
mod repl;
mod sorting;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sst",
    version,
    about = "Compile and run structured discrete latent layers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a spec and print each layer's plan and why each default was chosen.
    Check {
        file: PathBuf,
        /// Print the plans as JSON.
        #[arg(long)]
        json: bool,
        /// Show at most this many errors (the rest are counted).
        #[arg(long, default_value_t = sst::MAX_ERRORS)]
        max_errors: usize,
    },
    /// Read one JSON request on stdin, write one JSON response on stdout.
    #[command(after_help = EVAL_FIELDS)]
    Eval {
        file: PathBuf,
        /// The layer to run; may be omitted when the spec declares one layer.
        #[arg(long)]
        layer: Option<String>,
        /// Serve many requests: one JSON request per line of stdin, one JSON response per line
        /// of stdout; a bad request answers {"error": {"field", "message"}} and the process
        /// goes on.
        #[arg(long)]
        serve: bool,
        /// The backend: auto (the JIT where it applies), reference or jit; the numbers agree
        /// (hard samples and `w` bit for bit, soft outputs within 1e-6 in f64).
        #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(sst::backend::Choice::NAMES))]
        backend: String,
    },
    /// Compile the bundled presets and examples and sample every layer.
    Demo,
    /// Time the standard workloads (the ones `bench/peers/run.sh` compares with peers).
    Bench {
        /// Print the timings as JSON.
        #[arg(long)]
        json: bool,
        /// Timed runs per workload (after one warm-up); the median is reported.
        #[arg(long, default_value_t = bench::REPEATS, value_parser = clap::value_parser!(u16).range(1..))]
        repeats: u16,
        /// Threads each request's rows are split over (compare with peers on as many).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: u16,
        /// The backend: auto (the JIT where it applies), reference or jit.
        #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(sst::backend::Choice::NAMES))]
        backend: String,
        /// Time only the workloads whose name contains this text (e.g. `arborescence`).
        #[arg(long, value_name = "TEXT")]
        only: Option<String>,
    },
    /// Declare layers and try them interactively (reads a script when stdin is not a terminal).
    Repl {
        /// A spec to load first.
        file: Option<PathBuf>,
    },
}

/// The request fields, for `sst eval --help` (the contract: DESIGN.md §5 and the README).
const EVAL_FIELDS: &str = "\
Request fields (a JSON object; unknown or repeated keys are an error):
  theta        required: nested array, the layer's shape with any leading batch axes
  dtype        \"f64\" (default) or \"f32\"
  mode         \"hard\" or \"soft\" (default from the estimator)
  noise        \"none\" or {\"seed\": <u64>} (default {\"seed\": 0})
  with_w       true adds the perturbed parameters \"w\" to the response
  temperature  a number > 0, overrides the spec
  step         integer training step for temperature schedules (default 0)
  samples      integer N >= 1 (default 1); N > 1 adds a leading samples axis
  cotangent    nested array shaped like z without the samples axis; adds \"grad_theta\"

Response: {\"z\", \"grad_theta\"?, \"w\"?, \"plan\", \"diagnostics\", \"warnings\"}.
Exit status: 0 ok, 1 spec error, 2 usage error, 3 bad request (one line naming the field).";

/// A failure of a subcommand, with its exit status.
pub enum CliError {
    /// Exit 1: the spec does not compile (rendered diagnostics).
    Spec(String),
    /// Exit 2: no such file, no such layer, a missing `--layer`.
    Usage(String),
    /// Exit 3: a bad request (one line).
    Request(String),
}

impl CliError {
    fn status(&self) -> i32 {
        match self {
            CliError::Spec(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Request(_) => 3,
        }
    }
}

/// Runs the command line; returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Check {
            file,
            json,
            max_errors,
        } => check::run(&file, json, max_errors),
        Command::Eval {
            file,
            layer,
            serve,
            backend,
        } => eval::run(&file, layer.as_deref(), serve, choice(&backend)),
        Command::Demo => demo::run(),
        Command::Bench {
            json,
            repeats,
            threads,
            backend,
            only,
        } => bench::run(
            json,
            repeats.into(),
            threads.into(),
            choice(&backend),
            only.as_deref().unwrap_or(""),
        ),
        Command::Repl { file } => repl::run(file.as_deref()),
    };
    match result {
        Ok(out) => {
            // A reader that closed the pipe early (`| head`) is not an error of ours.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
            0
        }
        Err(e) => {
            match &e {
                CliError::Spec(s) => eprint!("{s}"),
                CliError::Usage(s) => eprintln!("error: {s}"),
                CliError::Request(s) => eprintln!("error: bad request: {s}"),
            }
            e.status()
        }
    }
}

/// The backend named by `--backend` (clap has checked the name).
fn choice(name: &str) -> sst::backend::Choice {
    sst::backend::Choice::from_name(name).unwrap_or_default()
}

/// Reads and compiles a spec file: a missing file is a usage error, a bad spec a spec error
/// (showing the first [`sst::MAX_ERRORS`] diagnostics).
fn load(path: &Path) -> Result<sst::Module, CliError> {
    load_showing(path, sst::MAX_ERRORS)
}

/// [`load`], showing at most `max_errors` diagnostics.
fn load_showing(path: &Path, max_errors: usize) -> Result<sst::Module, CliError> {
    match sst::compile_file(path) {
        Ok(m) => Ok(m),
        Err(sst::Error::Compile(e)) => Err(CliError::Spec(e.render(max_errors))),
        Err(e) => Err(CliError::Usage(e.to_string())),
    }
}
