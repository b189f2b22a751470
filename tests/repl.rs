//! `sst repl` driven through a pseudo-terminal as a person would: define a layer, mistype a
//! regularizer and read the hint, sample, read the plan, change the temperature, quit — and the
//! history is there for the next session.

use std::process::Command;
use std::time::Duration;

use expectrl::session::OsSession;
use expectrl::{Eof, Expect, Session};

/// A fresh folder under the target directory for this test's history.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sst-repl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

fn spawn(history: &std::path::Path) -> OsSession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sst"));
    command
        .arg("repl")
        .env("SST_HISTORY", history)
        .env("TERM", "xterm")
        .env("NO_COLOR", "1");
    let mut session = Session::spawn(command).expect("the REPL starts in a pseudo-terminal");
    session.set_expect_timeout(Some(Duration::from_secs(10)));
    session
}

#[test]
fn a_session_as_a_person_types_it() {
    let history = temp_dir("session");
    let mut p = spawn(&history);
    p.expect("sst> ").unwrap();

    p.send_line("layer pick: categorical(4) { temperature: 0.5 }")
        .unwrap();
    p.expect("defined layer pick: categorical(n = 4)").unwrap();

    // A typo in a declaration over several lines: the caret diagnostic and the hint.
    p.send_line("layer coins: bernoulli(3) {").unwrap();
    p.expect("... ").unwrap();
    p.send_line("    regularizer: binary_entropi").unwrap();
    p.send_line("}").unwrap();
    p.expect("unknown regularizer `binary_entropi`").unwrap();
    p.expect("did you mean `binary_entropy`?").unwrap();

    // The failed layer was not kept; the good one still samples.
    p.send_line(":sample coins").unwrap();
    p.expect("no layer `coins`").unwrap();
    p.send_line(":sample pick [0.5, -1, 2, 0] --seed 7 --hard")
        .unwrap();
    p.expect("pick: categorical(n = 4), hard, T = 0.5, seed 7")
        .unwrap();
    p.expect("z").unwrap();

    p.send_line(":plan pick").unwrap();
    p.expect("temperature  0.5").unwrap();

    p.send_line(":set pick.temperature 0.1").unwrap();
    p.expect("layer pick: categorical(4) { temperature: 0.1 }")
        .unwrap();
    p.send_line(":plan pick").unwrap();
    p.expect("temperature  0.1").unwrap();

    // Ctrl-C drops a declaration left open.
    p.send_line("layer open: categorical(3) {").unwrap();
    p.expect("... ").unwrap();
    p.send("\x03").unwrap();
    p.expect("(declaration dropped)").unwrap();
    p.send_line(":list").unwrap();
    p.expect("pick  categorical(n = 4)  relaxed  T = 0.1")
        .unwrap();

    p.send_line(":quit").unwrap();
    p.expect(Eof).unwrap();

    let saved = std::fs::read_to_string(history.join("history")).expect("the history is saved");
    assert!(saved.contains(":set pick.temperature 0.1"), "{saved}");
    let _ = std::fs::remove_dir_all(&history);
}

#[test]
fn ctrl_d_leaves_and_history_comes_back() {
    let history = temp_dir("ctrl-d");
    std::fs::write(history.join("history"), "#V2\n:help\n").unwrap();
    let mut p = spawn(&history);
    p.expect("sst> ").unwrap();
    // Up-arrow recalls the previous session's line.
    p.send("\x1b[A").unwrap();
    p.send("\r").unwrap();
    p.expect("this list").unwrap();
    p.send("\x04").unwrap();
    p.expect(Eof).unwrap();
    let _ = std::fs::remove_dir_all(&history);
}

#[test]
fn a_script_on_stdin_runs_line_by_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sst"))
        .arg("repl")
        .env("SST_HISTORY", temp_dir("script"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"layer a: categorical(3)\n:sample a [1,2,3] --hard\n:sample a [1,2\n:quit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One line failed: the script runs on and exits 1.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains("a: categorical(n = 3), hard, T = 1"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("sst> "),
        "no prompts in a script: {stdout}"
    );
    assert!(stderr.contains("missing its closing `]`"), "{stderr}");
}

/// Ctrl-C while `:bench` runs cancels the command (it stops between runs) and keeps the
/// session with its declarations.
#[test]
fn ctrl_c_cancels_a_long_command_and_keeps_the_session() {
    let history = temp_dir("ctrl-c");
    let mut p = spawn(&history);
    p.expect("sst> ").unwrap();
    p.send_line("layer slow: permutation(48) { temperature: 0.3 }")
        .unwrap();
    p.expect("defined layer slow").unwrap();
    p.send_line(":bench slow").unwrap();
    // Progress: one warm-up run, then the timed ones.
    p.expect(":bench slow: run 1/7").unwrap();
    p.send("\x03").unwrap();
    p.expect("slow: :bench interrupted").unwrap();
    p.send_line(":list").unwrap();
    p.expect("slow  permutation(n = 48)").unwrap();
    p.send_line(":quit").unwrap();
    p.expect(Eof).unwrap();
    let _ = std::fs::remove_dir_all(&history);
}
