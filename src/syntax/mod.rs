//! The front end: `.sst` source → [`ast::Spec`], or the first syntax error as a [`Diagnostic`].
//!
//! Three steps: a cheap pre-scan enforces the size and nesting limits (so that no input can
//! overflow the stack of the recursive parser), pest parses with `grammar/sst.pest`, and
//! `lower.rs` turns the pest pairs into the AST. A pest error is turned into an
//! `expected X, found Y` message through one table of plain words (`RULE_WORDS`).

pub mod ast;
mod lower;

use pest::error::{ErrorVariant, InputLocation};
use pest::Parser as _;

use crate::diagnostic::Diagnostic;

/// The deepest nesting accepted: parentheses plus runs of unary minus (`-(-(--x))` counts 5).
pub const MAX_DEPTH: usize = 64;
/// The largest source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// The deepest expression tree accepted (a chain `1 + 1 + ...` is as deep as it is long, so a
/// flat sum may have this many terms).
pub const MAX_EXPR_DEPTH: usize = 1024;

mod grammar {
    // pest_derive resolves the path against the crate root first (then `src/`): this is
    // `<crate>/grammar/sst.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "grammar/sst.pest"]
    pub struct SstParser;
}

use grammar::{Rule, SstParser};

/// Parses a whole spec; the error is the first syntax error.
pub fn parse(source: &str) -> Result<ast::Spec, Diagnostic> {
    check_limits(source)?;
    let mut pairs =
        SstParser::parse(Rule::spec, source).map_err(|error| syntax_error(source, &error))?;
    match pairs.next() {
        Some(spec) => lower::lower_spec(spec),
        None => Err(Diagnostic::new(
            0..0,
            "internal error: the parser returned nothing",
        )),
    }
}

// LIMITS

/// Rejects input too large or too deeply nested, before pest (which recurses) sees it.
///
/// The nesting score is the number of open parentheses plus the runs of unary minus in front of
/// them plus the current run of `-` (signs separated only by whitespace or comments).
fn check_limits(source: &str) -> Result<(), Diagnostic> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostic::new(
            0..0,
            format!(
                "the spec is too large ({} bytes; at most {MAX_SOURCE_BYTES})",
                source.len()
            ),
        )
        .with_label("spec starts here"));
    }
    // Weight each open parenthesis adds to the score (1 + the minus run before it).
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut score = 0usize;
    let mut run = 0usize;
    for (i, byte) in code_bytes(source) {
        match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'-' => {
                run += 1;
                if score + run > MAX_DEPTH {
                    return Err(Diagnostic::new(
                        i..i + 1,
                        format!("too many nested `-` (at most {MAX_DEPTH} levels of nesting)"),
                    )
                    .with_label("nested too deeply"));
                }
            }
            b'(' => {
                let weight = 1 + run;
                run = 0;
                if score + weight > MAX_DEPTH {
                    return Err(Diagnostic::new(
                        i..i + 1,
                        format!("parentheses nested too deeply (at most {MAX_DEPTH} levels)"),
                    )
                    .with_label("nested too deeply"));
                }
                score += weight;
                open.push((i, weight));
            }
            b')' => {
                run = 0;
                if let Some((_, weight)) = open.pop() {
                    score -= weight;
                }
            }
            _ => run = 0,
        }
    }
    Ok(())
}

/// The bytes of `source` that are code, with their offsets: a `#` and the rest of its line up
/// to the newline are a comment and skipped (the language has no strings); the newline is kept.
fn code_bytes(source: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut in_comment = false;
    source.bytes().enumerate().filter(move |&(_, byte)| {
        match byte {
            b'#' => in_comment = true,
            b'\n' => in_comment = false,
            _ => {}
        }
        !in_comment
    })
}

// SYNTAX ERRORS

/// Plain words for the grammar rules a syntax error can mention, in the order a message lists
/// them. Rules absent here are never reported (silent or only reached through others).
const RULE_WORDS: &[(Rule, &str)] = &[
    (Rule::kw_const, "an item (`const`, `layer` or `preset`)"),
    (Rule::kw_layer, "an item (`const`, `layer` or `preset`)"),
    (Rule::kw_preset, "an item (`const`, `layer` or `preset`)"),
    (Rule::const_item, "an item (`const`, `layer` or `preset`)"),
    (Rule::layer_item, "an item (`const`, `layer` or `preset`)"),
    (Rule::preset_item, "an item (`const`, `layer` or `preset`)"),
    (Rule::support, "a support such as `subset(n = 10, k = 3)`"),
    (
        Rule::support_name,
        "a support such as `subset(n = 10, k = 3)`",
    ),
    (Rule::field, "a field such as `temperature: 0.5`"),
    (Rule::field_name, "a field such as `temperature: 0.5`"),
    (Rule::ident, "a name"),
    (Rule::keyword, "a name"),
    (Rule::named_arg, "an argument"),
    (Rule::positional_arg, "an argument"),
    (Rule::expr, "an expression"),
    (Rule::expr_nl, "an expression"),
    (Rule::number, "an expression"),
    (Rule::neg, "an expression"),
    (Rule::paren, "an expression"),
    (Rule::call, "an expression"),
    (Rule::colon, "`:`"),
    (Rule::equals, "`=`"),
    (Rule::add, "an operator such as `+`"),
    (Rule::sub, "an operator such as `+`"),
    (Rule::mul, "an operator such as `+`"),
    (Rule::div, "an operator such as `+`"),
    (Rule::comma, "`,`"),
    (Rule::rparen, "`)`"),
    (Rule::args, "`(`"),
    (Rule::lparen, "`(`"),
    (Rule::body, "`{`"),
    (Rule::lbrace, "`{`"),
    (Rule::rbrace, "`}`"),
    (Rule::sep, "a new line (or `;`)"),
    (Rule::EOI, "end of file"),
];

const KEYWORDS: [&str; 3] = ["layer", "const", "preset"];

/// Turns a pest error into `expected X, found Y` with the offending token as the span.
fn syntax_error(source: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let position = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((start, _)) => start,
    }
    .min(source.len());
    let (found, span) = found_token(source, position);
    let positives = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            return Diagnostic::new(span, message.clone()).with_label("here");
        }
    };
    let at_end = span.start >= source.trim_end().len();
    let expected = expected_words(&positives, at_end);
    let message = if expected.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {}, found {found}", join_words(&expected))
    };
    let label = match expected.first() {
        Some(first) if expected.len() == 1 => format!("expected {first}"),
        _ => "unexpected here".to_string(),
    };
    let mut diagnostic = Diagnostic::new(span.clone(), message).with_label(label);
    if let Some(hint) = hint_for(source, &positives, &span, position) {
        diagnostic = diagnostic.with_hint(hint);
    }
    diagnostic
}

/// The words for the expected rules, deduplicated, in table order. A `(` that only continues an
/// identifier into a call is dropped when an operator could also follow.
///
/// At the end of the file, separators and the end of file itself are not worth suggesting.
fn expected_words(positives: &[Rule], at_end: bool) -> Vec<&'static str> {
    let operator_possible = positives
        .iter()
        .any(|r| matches!(r, Rule::add | Rule::sub | Rule::mul | Rule::div));
    let mut words: Vec<(usize, &'static str)> = Vec::new();
    for rule in positives {
        if operator_possible && matches!(rule, Rule::lparen | Rule::args) {
            continue;
        }
        if at_end && matches!(rule, Rule::sep | Rule::EOI) {
            continue;
        }
        if let Some(index) = RULE_WORDS.iter().position(|(r, _)| r == rule) {
            let word = RULE_WORDS[index].1;
            let first = RULE_WORDS
                .iter()
                .position(|(_, w)| *w == word)
                .unwrap_or(index);
            if !words.iter().any(|(_, w)| *w == word) {
                words.push((first, word));
            }
        }
    }
    // "an expression" covers a bare name and an opening parenthesis too.
    if words.iter().any(|(_, w)| *w == "an expression") {
        words.retain(|(_, w)| *w != "a name" && *w != "`(`");
    }
    words.sort_by_key(|(order, _)| *order);
    words.into_iter().map(|(_, w)| w).collect()
}

fn join_words(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The end of the last token: trailing whitespace and comments (`#` starts a comment; the
/// language has no strings) are not code.
fn end_of_code(source: &str) -> usize {
    let mut code = source.trim_end();
    loop {
        let line_start = code.rfind('\n').map_or(0, |i| i + 1);
        match code[line_start..].find('#') {
            Some(hash) => code = code[..line_start + hash].trim_end(),
            None => return code.len(),
        }
    }
}

/// The offending token at `position` in words, and its span: a word, a number, a symbol,
/// "end of line" or "end of file".
fn found_token(source: &str, position: usize) -> (String, ast::Span) {
    let mut start = position.min(source.len());
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    let rest = &source[start..];
    if rest.trim().is_empty() {
        // Point just after the last token, where the missing text belongs.
        let end = end_of_code(source);
        return ("end of file".to_string(), end..end);
    }
    let Some(first) = rest.chars().next() else {
        return ("end of file".to_string(), start..start);
    };
    if first == '\n' || rest.starts_with("\r\n") {
        let len = if first == '\n' { 1 } else { 2 };
        return ("end of line".to_string(), start..start + len);
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let len = if first.is_ascii_digit() || first == '.' {
        // A number, possibly with a fraction and an exponent sign.
        let mut end = 0;
        let mut previous = ' ';
        for c in rest.chars() {
            let sign = (c == '+' || c == '-') && matches!(previous, 'e' | 'E');
            if !(is_word(c) || c == '.' || sign) {
                break;
            }
            end += c.len_utf8();
            previous = c;
        }
        end
    } else if is_word(first) {
        rest.find(|c: char| !is_word(c)).unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    let text = &rest[..len];
    let found = if KEYWORDS.contains(&text) {
        format!("the keyword `{text}`")
    } else {
        format!("`{}`", text.escape_debug())
    };
    (found, start..start + len)
}

/// A hint where the mistake is a common one.
fn hint_for(source: &str, positives: &[Rule], span: &ast::Span, position: usize) -> Option<String> {
    let found = source.get(span.clone()).unwrap_or("");
    let expects = |rule: Rule| positives.contains(&rule);
    let expects_name = expects(Rule::ident) || expects(Rule::field_name);
    if KEYWORDS.contains(&found) && (expects_name || expects(Rule::support_name)) {
        return Some(format!(
            "`{found}` is a keyword and cannot be used as a name"
        ));
    }
    if found == "=" && expects(Rule::colon) {
        return Some(
            "fields and supports follow a `:`, as in `temperature: 0.5`; `=` is for consts and \
             named arguments"
                .to_string(),
        );
    }
    if found == ":" && expects(Rule::equals) {
        return Some("a const is written `const n = 8`".to_string());
    }
    if expects(Rule::rparen) {
        if let Some(open) = unclosed(source, position, b'(', b')') {
            let (line, column) = Diagnostic::new(open..open, "").line_col(source);
            return Some(format!("the `(` at {line}:{column} is not closed"));
        }
    }
    if expects(Rule::rbrace) && span.is_empty() {
        if let Some(open) = unclosed(source, position, b'{', b'}') {
            let (line, column) = Diagnostic::new(open..open, "").line_col(source);
            return Some(format!(
                "add `}}` to close the body opened at {line}:{column}"
            ));
        }
    }
    None
}

/// The innermost `open` before `position` that is not closed before it (comments skipped).
fn unclosed(source: &str, position: usize, open: u8, close: u8) -> Option<usize> {
    let mut stack = Vec::new();
    for (i, byte) in code_bytes(source).take_while(|&(i, _)| i < position) {
        if byte == open {
            stack.push(i);
        } else if byte == close {
            stack.pop();
        }
    }
    stack.pop()
}

#[cfg(test)]
mod tests;
