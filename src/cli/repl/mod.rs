//! `sst repl [FILE]`: declare layers and try them interactively.
//!
//! The loop reads lines with rustyline (history, tab completion, Ctrl-C cancels the input,
//! Ctrl-D leaves) and hands each to [`Session::handle`], which knows nothing of terminals: a
//! declaration is added to the session's text and the text recompiled, a `:` command runs on
//! the compiled module. When stdin is not a terminal the same loop reads a script line by line,
//! without prompts; a script exits 1 when a line failed (or it ended inside a declaration).
//! Ctrl-C while a long command runs (`:bench`) cancels that command and keeps the session.

pub(super) mod commands;
mod complete;
mod session;
pub(super) mod show;
#[cfg(test)]
mod tests;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Editor};

pub use session::{Output, Session};

use super::CliError;
use complete::ReplHelper;

const PROMPT: &str = "sst> ";
/// The prompt while a declaration's braces or parentheses are open.
const CONTINUE: &str = "...  ";

pub fn run(file: Option<&Path>) -> Result<String, CliError> {
    let interactive = std::io::stdin().is_terminal();
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .build();
    let mut editor = Editor::<ReplHelper, DefaultHistory>::with_config(config)
        .map_err(|e| CliError::Usage(format!("cannot start the line editor: {e}")))?;
    editor.set_helper(Some(ReplHelper::default()));
    let history = history_path();
    if let Some(path) = &history {
        // A first session has no history yet.
        let _ = editor.load_history(path);
    }
    let mut session = Session::new();
    if interactive {
        println!("sst repl: type a declaration such as `layer pick: categorical(4)`, or :help. Ctrl-D leaves.");
        // Ctrl-C while a command runs cancels the command, not the session (rustyline reads
        // Ctrl-C at the prompt itself, as a key).
        if let Err(e) = ctrlc::set_handler(|| commands::INTERRUPTED.store(true, Ordering::SeqCst)) {
            eprintln!("warning: Ctrl-C will end the session: {e}");
        }
    }
    // Script mode: how many lines failed, for the exit status.
    let mut errors = 0;
    if let Some(file) = file {
        errors += usize::from(print(session.declare_file(file)) == Printed::Error);
    }
    loop {
        if let Some(helper) = editor.helper_mut() {
            helper.vocabulary.layers = session.layer_names();
        }
        let prompt = match (interactive, session.is_pending()) {
            (false, _) => "",
            (true, false) => PROMPT,
            (true, true) => CONTINUE,
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if interactive && !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                commands::INTERRUPTED.store(false, Ordering::SeqCst);
                match print(session.handle(&line)) {
                    Printed::Quit => break,
                    Printed::Error => errors += 1,
                    Printed::Text => {}
                }
            }
            Err(ReadlineError::Interrupted) => {
                if session.cancel() {
                    println!("(declaration dropped)");
                }
            }
            Err(ReadlineError::Eof) => {
                if session.cancel() {
                    eprintln!("error: the input ended inside a declaration (a brace or parenthesis is not closed); it was dropped");
                    errors += 1;
                }
                break;
            }
            Err(e) => {
                save_history(&mut editor, history.as_deref());
                return Err(CliError::Usage(format!("cannot read input: {e}")));
            }
        }
    }
    save_history(&mut editor, history.as_deref());
    if !interactive && errors > 0 {
        // A script that failed somewhere exits 1, like a spec that does not compile.
        let s = if errors == 1 { "" } else { "s" };
        return Err(CliError::Spec(format!(
            "error: the script had {errors} failing line{s}\n"
        )));
    }
    Ok(String::new())
}

/// What [`print`] printed.
#[derive(PartialEq, Eq)]
enum Printed {
    Text,
    Error,
    Quit,
}

/// Prints an output (results on stdout, errors on stderr).
fn print(output: Output) -> Printed {
    let newline = |s: &str| if s.ends_with('\n') { "" } else { "\n" };
    match output {
        Output::Nothing => {}
        Output::Text(text) => {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{text}{}", newline(&text));
            let _ = out.flush();
        }
        Output::Error(text) => {
            eprint!("{text}{}", newline(&text));
            return Printed::Error;
        }
        Output::Quit => return Printed::Quit,
    }
    Printed::Text
}

/// `$SST_HISTORY` (a file, or a folder to hold `history`), else `sst/history` in the
/// platform's data folder (`$XDG_DATA_HOME`, `~/.local/share`, …).
fn history_path() -> Option<PathBuf> {
    let path = match std::env::var_os("SST_HISTORY") {
        Some(p) if Path::new(&p).is_dir() => Path::new(&p).join("history"),
        Some(p) => PathBuf::from(p),
        None => dirs::data_dir()?.join("sst").join("history"),
    };
    Some(path)
}

fn save_history(editor: &mut Editor<ReplHelper, DefaultHistory>, path: Option<&Path>) {
    let Some(path) = path else { return };
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = editor.save_history(path) {
        eprintln!(
            "warning: cannot save the history to {}: {e}",
            path.display()
        );
    }
}
