//! Errors a person can act on: a span in the source, a message, a label under the span and an
//! optional hint, rendered with ariadne or as one line.

use std::ops::Range;

use ariadne::{CharSet, Config, IndexType, Label, Report, ReportKind, Source};

/// A number as messages show it: plainly where that is short (`2.5`, `1000`), in scientific
/// notation where plain digits would run long (`1e-320`, `3e300`).
pub fn number(x: f64) -> String {
    let magnitude = x.abs();
    if magnitude == 0.0 || !x.is_finite() || (1e-4..1e15).contains(&magnitude) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Byte offsets into the source.
pub type Span = Range<usize>;

/// A source text indexed once, for rendering many diagnostics against it: the byte offset of
/// each line's start and ariadne's own line table. Rendering `e` diagnostics then costs
/// `O(len + e·(line length + log lines))`, not `O(e·len)`.
pub struct Indexed<'a> {
    text: &'a str,
    /// Byte offset of the start of each line: 0, then one past each `\n`.
    starts: Vec<usize>,
    lines: Source<&'a str>,
}

impl<'a> Indexed<'a> {
    pub fn new(text: &'a str) -> Self {
        let newlines = text.match_indices('\n').map(|(i, _)| i + 1);
        Indexed {
            text,
            starts: std::iter::once(0).chain(newlines).collect(),
            lines: Source::from(text),
        }
    }

    /// 1-based (line, column) of the byte `offset` (clamped into the text, moved back to the
    /// start of the char it falls in); the column is counted in chars.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let start = floor_char_boundary(self.text, offset);
        let line = self.starts.partition_point(|&s| s <= start) - 1;
        let column = self.text[self.starts[line]..start].chars().count() + 1;
        (line + 1, column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    /// Shown beside the carets under the span; may be empty.
    pub label: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with an empty label and no hint.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            label: String::new(),
            hint: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// 1-based (line, column) of `span.start`; the column is counted in chars.
    pub fn line_col(&self, source: &str) -> (usize, usize) {
        Indexed::new(source).line_col(self.span.start)
    }

    /// Renders with ariadne (ASCII, no colour):
    ///
    /// ```text
    /// error: expected `:`, found `categorical`
    ///    ,-[ spec.sst:1:9 ]
    ///    |
    ///  1 | layer a categorical(3)
    ///    |         ^^^^^|^^^^^
    ///    |              `------- expected `:`
    ///    |
    ///    | help: ...
    /// ---'
    /// ```
    ///
    /// Never panics: out-of-range spans are clamped into the source.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        self.render_in(file_name, &Indexed::new(source))
    }

    /// [`Diagnostic::render`] against a source indexed once for many diagnostics.
    pub fn render_in(&self, file_name: &str, source: &Indexed) -> String {
        let span = display_span(source.text, &self.span);
        let at = source.line_col(self.span.start);
        let rendered =
            std::panic::catch_unwind(|| self.render_ariadne(file_name, source, span, at));
        match rendered {
            Ok(Some(text)) => text,
            // ariadne failed or panicked on some odd input: fall back to the plain form.
            _ => self.render_plain(file_name, at),
        }
    }

    fn render_ariadne(
        &self,
        file_name: &str,
        source: &Indexed,
        span: Span,
        at: (usize, usize),
    ) -> Option<String> {
        let config = Config::default()
            .with_color(false)
            .with_char_set(CharSet::Ascii)
            .with_index_type(IndexType::Byte);
        // ariadne underlines only labels with a message: an unlabelled span still gets one.
        let text = if self.label.is_empty() {
            "here"
        } else {
            self.label.as_str()
        };
        let label = Label::new((file_name, span.clone())).with_message(text);
        let mut report = Report::build(ReportKind::Error, (file_name, span))
            .with_config(config)
            .with_message(&self.message)
            .with_label(label);
        if let Some(hint) = &self.hint {
            report = report.with_help(hint);
        }
        let mut out = Vec::new();
        report
            .finish()
            .write((file_name, &source.lines), &mut out)
            .ok()?;
        let text = String::from_utf8(out).ok()?;
        Some(self.house_style(&text, file_name, at))
    }

    /// Adjusts ariadne's output to the house style: `error:` and `help:` in lower case, the
    /// location from [`Diagnostic::line_col`] (ariadne places an offset at the very end of a file
    /// on the last line instead), and a `^` under a span one column wide, where ariadne draws
    /// only the `|` that leads to the label.
    fn house_style(&self, text: &str, file_name: &str, (line, column): (usize, usize)) -> String {
        let mut out = String::with_capacity(text.len() + 16);
        let mut previous_was_source = false;
        for (i, row) in text.split_inclusive('\n').enumerate() {
            let (body, newline) = match row.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (row, ""),
            };
            let margin_end = body.find("| ").map(|at| at + 2);
            let margin = margin_end.map(|end| &body[..end]);
            let is_source =
                margin.is_some_and(|m| m.trim_end_matches("| ").trim().parse::<usize>().is_ok());
            let rewritten = if i == 0 {
                body.strip_prefix("Error:")
                    .map(|rest| format!("error:{rest}"))
            } else if body.trim_start().starts_with(",-[") {
                let indent = &body[..body.len() - body.trim_start().len()];
                Some(format!("{indent},-[ {file_name}:{line}:{column} ]"))
            } else if let (Some(margin), Some(end)) = (margin, margin_end) {
                let rest = &body[end..];
                if !is_source && margin.trim() == "|" && rest.starts_with("Help: ") {
                    Some(format!("{margin}help: {}", &rest["Help: ".len()..]))
                } else if previous_was_source && margin.trim() == "|" && rest.trim() == "|" {
                    Some(format!("{margin}{}", rest.replacen('|', "^", 1)))
                } else {
                    None
                }
            } else {
                None
            };
            out.push_str(rewritten.as_deref().unwrap_or(body));
            out.push_str(newline);
            previous_was_source = is_source;
        }
        out
    }

    fn render_plain(&self, file_name: &str, (line, column): (usize, usize)) -> String {
        let mut out = format!(
            "error: {}\n --> {file_name}:{line}:{column}\n",
            self.message
        );
        if let Some(hint) = &self.hint {
            out.push_str(&format!("help: {hint}\n"));
        }
        out
    }

    /// One line: `FILE:LINE:COL: error: MESSAGE` (+ ` (hint: ...)` when there is a hint).
    pub fn one_line(&self, file_name: &str, source: &str) -> String {
        let (line, column) = self.line_col(source);
        let mut out = format!("{file_name}:{line}:{column}: error: {}", self.message);
        if let Some(hint) = &self.hint {
            out.push_str(&format!(" (hint: {hint})"));
        }
        out
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The label listing what would be valid: `expected one of: a, b, c`.
pub fn expected_one_of<S: AsRef<str>>(names: &[S]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    format!("expected one of: {}", names.join(", "))
}

/// The closest candidate within a small edit distance, for "did you mean `x`?" hints.
///
/// The allowed distance grows with the word: 1 edit for words up to 5 chars, 2 up to 8, then 3.
/// Ties go to the earliest candidate.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let length = word.chars().count();
    let limit = match length {
        0 => return None,
        1..=5 => 1,
        6..=8 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let distance = strsim::damerau_levenshtein(word, candidate);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

fn floor_char_boundary(source: &str, index: usize) -> usize {
    let mut index = index.min(source.len());
    while !source.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// The span clamped into the source on char boundaries; an empty span is widened to the char
/// it points at (when there is one) so the carets have something to stand under.
fn display_span(source: &str, span: &Span) -> Span {
    let start = floor_char_boundary(source, span.start);
    let end = floor_char_boundary(source, span.end).max(start);
    if start < end {
        return start..end;
    }
    match source[start..].chars().next() {
        Some(c) => start..start + c.len_utf8(),
        None => start..start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let source = "ab\nçé x\n";
        let d = Diagnostic::new(8..9, "m");
        assert_eq!(source[8..9].to_string(), "x");
        assert_eq!(d.line_col(source), (2, 4));
        assert_eq!(Diagnostic::new(0..0, "m").line_col(source), (1, 1));
        assert_eq!(Diagnostic::new(999..1000, "m").line_col(source), (3, 1));
        // Inside a multi-byte char: the char's own column.
        assert_eq!(Diagnostic::new(4..5, "m").line_col(source), (2, 1));
        assert_eq!(Diagnostic::new(0..0, "m").line_col(""), (1, 1));
    }

    /// The index gives the (line, column) of a scan from the start, at every byte offset of a
    /// text with multi-byte chars, empty lines and no final newline, and past its end; and a
    /// diagnostic renders the same against the index as against the text.
    #[test]
    fn indexed_line_col_is_the_scan_from_the_start() {
        let scan = |source: &str, offset: usize| {
            let start = floor_char_boundary(source, offset);
            let before = &source[..start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            (line, before[line_start..].chars().count() + 1)
        };
        for source in ["", "\n", "ab\nçé x\n", "a\n\n€b\nlast", "x = 1\r\ny"] {
            let index = Indexed::new(source);
            for offset in 0..source.len() + 3 {
                assert_eq!(
                    index.line_col(offset),
                    scan(source, offset),
                    "{source:?} @ {offset}"
                );
                let d = Diagnostic::new(offset..offset + 1, "m").with_label("l");
                assert_eq!(d.render_in("f", &index), d.render("f", source));
            }
        }
    }

    #[test]
    fn render_shows_location_carets_label_and_help() {
        let source = "const n = 8\nlayer a categorical(3)\n";
        let d = Diagnostic::new(20..31, "expected `:`, found `categorical`")
            .with_label("expected `:`")
            .with_hint("write `layer a: categorical(3)`");
        let text = d.render("spec.sst", source);
        assert!(
            text.starts_with("error: expected `:`, found `categorical`"),
            "{text}"
        );
        assert!(text.contains("spec.sst:2:9"), "{text}");
        assert!(text.contains("layer a categorical(3)"), "{text}");
        assert!(text.contains("^^^"), "{text}");
        assert!(text.contains("expected `:`\n"), "{text}");
        assert!(
            text.contains("help: write `layer a: categorical(3)`"),
            "{text}"
        );
        assert!(!text.contains("Help"), "{text}");
        // The carets stand under `categorical`.
        let source_line = text.lines().find(|l| l.contains("layer a")).unwrap();
        let caret_line = text.lines().find(|l| l.contains('^')).unwrap();
        let col = source_line.find("categorical").unwrap();
        assert_eq!(caret_line.find('^'), Some(col), "{text}");
    }

    #[test]
    fn one_line_form() {
        let source = "x\n  @";
        let d = Diagnostic::new(4..5, "expected a name, found `@`");
        assert_eq!(
            d.one_line("a.sst", source),
            "a.sst:2:3: error: expected a name, found `@`"
        );
        let d = d.with_hint("remove it");
        assert_eq!(
            d.one_line("a.sst", source),
            "a.sst:2:3: error: expected a name, found `@` (hint: remove it)"
        );
    }

    #[test]
    fn render_never_panics_on_odd_spans() {
        let sources = ["", "x", "ab\n", "é", "αβγ\nδ\n", "a\r\nb", "\n\n\n"];
        for source in sources {
            for start in 0..=source.len() + 2 {
                for end in [0, start, start + 1, start + 3, source.len(), usize::MAX] {
                    let d = Diagnostic::new(start..end, "boom")
                        .with_label("here")
                        .with_hint("fix it");
                    let text = d.render("f.sst", source);
                    assert!(text.contains("boom"), "{source:?} {start}..{end}: {text}");
                    let (line, col) = d.line_col(source);
                    assert!(
                        text.contains(&format!("f.sst:{line}:{col}")),
                        "{source:?} {start}..{end}: {text}"
                    );
                    let _ = d.one_line("f.sst", source);
                }
            }
        }
    }

    #[test]
    fn render_at_end_of_file_and_across_newline() {
        let source = "layer a: categorical(3) {\n";
        let d = Diagnostic::new(
            source.len()..source.len(),
            "expected `}`, found end of file",
        )
        .with_label("expected `}`");
        let text = d.render("f.sst", source);
        assert!(text.contains("f.sst:2:1"), "{text}");
        let d = Diagnostic::new(20..27, "spans a newline").with_label("x");
        let text = d.render("f.sst", source);
        assert!(text.contains("f.sst:1:21"), "{text}");
    }

    #[test]
    fn did_you_mean_picks_the_closest_near_miss() {
        let names = ["entropy", "binary_entropy", "expfamily"];
        assert_eq!(
            did_you_mean("binary_entorpy", names),
            Some("binary_entropy")
        );
        assert_eq!(did_you_mean("entropi", names), Some("entropy"));
        assert_eq!(did_you_mean("gumbel", names), None);
        assert_eq!(did_you_mean("", names), None);
        assert_eq!(did_you_mean("x", ["y", "xx"]), Some("y"));
    }
}
