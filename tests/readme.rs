//! The README's examples run as written: its spec compiles and its `sst eval` request, read out
//! of the README's shell block, is answered with the shapes the text promises.

mod common;

use common::cli::{code, run, text, TempDir};
use serde_json::Value;

const README: &str = include_str!("../README.md");

/// The body of the first fenced block that opens with ```` ```lang ```` and contains `needle`.
fn block<'a>(lang: &str, needle: &str) -> &'a str {
    let fence = format!("```{lang}\n");
    README
        .split(fence.as_str())
        .skip(1)
        .map(|rest| &rest[..rest.find("```").expect("a closed block")])
        .find(|body| body.contains(needle))
        .unwrap_or_else(|| panic!("no ```{lang} block with {needle:?} in README.md"))
}

#[test]
fn the_readme_spec_and_eval_example_run() {
    let spec = block("sst", "layer pick");
    let shell = block("sh", "sst eval");
    // `$ echo '{…}' | sst eval pick.sst --layer pick`, the JSON over two lines.
    let request = &shell[shell.find("echo '").unwrap() + 6..];
    let request = &request[..request.find('\'').unwrap()];
    let args = shell[shell.find("| sst ").unwrap() + 6..]
        .lines()
        .next()
        .unwrap();
    let dir = TempDir::new();
    let file = dir.write("pick.sst", spec);
    let args: Vec<&str> = args
        .split_whitespace()
        .map(|a| {
            if a == "pick.sst" {
                file.to_str().unwrap()
            } else {
                a
            }
        })
        .collect();
    let out = run(&args, request);
    assert_eq!(code(&out), 0, "{args:?} {request}\n{}", text(&out.stderr));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    let request: Value = serde_json::from_str(request).unwrap();
    let samples = request["samples"].as_u64().unwrap() as usize;
    let rows = request["theta"].as_array().unwrap();
    let shape = |v: &Value| {
        let mut dims = Vec::new();
        let mut at = v;
        while let Value::Array(items) = at {
            dims.push(items.len());
            at = &items[0];
        }
        dims
    };
    let want = vec![samples, rows.len(), rows[0].as_array().unwrap().len()];
    assert_eq!(shape(&response["z"]), want);
    assert_eq!(shape(&response["grad_theta"]), want);
}
