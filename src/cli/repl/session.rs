//! The state of a REPL session: the source text of every declaration accepted so far and the
//! module it compiles to. Every change edits that text and recompiles it whole, so the session
//! always means exactly what its text says; a change that does not compile leaves both as they
//! were.

use sst::syntax::ast::{Item, Layer as LayerItem};
use sst::Module;

use super::commands;

/// The name diagnostics give the session's text.
pub const SOURCE_NAME: &str = "<repl>";

/// What one line of input produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Nothing to print: an empty line, a comment, or a declaration still open.
    Nothing,
    /// A result, for stdout.
    Text(String),
    /// A diagnostic or a one-line error, for stderr; the session goes on.
    Error(String),
    /// `:quit`.
    Quit,
}

pub struct Session {
    /// Every accepted item, one after the other, each ending in a newline.
    source: String,
    module: Module,
    /// The lines of a declaration whose braces or parentheses are still open.
    pending: String,
    /// The seed of the next command that draws random numbers without `--seed`.
    next_seed: u64,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            source: String::new(),
            module: sst::compile_named(SOURCE_NAME, "").expect("the empty spec compiles"),
            pending: String::new(),
            next_seed: 1,
        }
    }

    /// Handles one line: a `:` command, or a line of a declaration (which runs once its braces
    /// and parentheses balance).
    pub fn handle(&mut self, line: &str) -> Output {
        if self.pending.is_empty() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                return Output::Nothing;
            }
            if let Some(command) = trimmed.strip_prefix(':') {
                return commands::run(self, command);
            }
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        if self.pending.len() > sst::syntax::MAX_SOURCE_BYTES {
            self.pending.clear();
            return Output::Error("error: the declaration is too long; dropped it".into());
        }
        if open_brackets(&self.pending) > 0 {
            return Output::Nothing;
        }
        let text = std::mem::take(&mut self.pending);
        self.declare(&text, SOURCE_NAME)
    }

    /// Whether a declaration is waiting for more lines.
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Drops a pending declaration; says whether there was one.
    pub fn cancel(&mut self) -> bool {
        let had = self.is_pending();
        self.pending.clear();
        had
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    #[cfg(test)]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The layers' names, in declaration order.
    pub fn layer_names(&self) -> Vec<String> {
        self.module
            .layers()
            .iter()
            .map(|l| l.name().to_string())
            .collect()
    }

    /// The seed a command uses: the one asked for, or the next of the session's own.
    pub fn seed(&mut self, asked: Option<u64>) -> u64 {
        asked.unwrap_or_else(|| {
            self.next_seed += 1;
            self.next_seed - 1
        })
    }

    /// Adds the items of `text` (typed, or a file's) to the session. A layer declared again
    /// replaces the old one (removed, the new one appended); a const or preset declared again is
    /// replaced where it stands, so that what uses it still follows it.
    pub fn declare(&mut self, text: &str, origin: &str) -> Output {
        let spec = match sst::syntax::parse(text) {
            Ok(spec) => spec,
            Err(d) => return Output::Error(d.render(origin, text)),
        };
        if spec.items.is_empty() {
            return Output::Nothing;
        }
        let mut source = self.source.clone();
        let mut notes = Vec::new();
        for item in &spec.items {
            let item_text = &text[item.span().clone()];
            let replaced = match same_item(&source, item) {
                Some(old) if matches!(item, Item::Layer(_)) => {
                    remove(&mut source, old);
                    source.push_str(item_text);
                    source.push('\n');
                    true
                }
                Some(old) => {
                    source.replace_range(old, item_text);
                    true
                }
                None => {
                    source.push_str(item_text);
                    source.push('\n');
                    false
                }
            };
            notes.push((item.name().name.clone(), replaced));
        }
        if let Err(e) = self.commit(source) {
            return e;
        }
        Output::Text(self.describe_items(&notes))
    }

    /// Adds the items of a file (`:load`, `sst repl FILE`).
    pub fn declare_file(&mut self, path: &std::path::Path) -> Output {
        match std::fs::read_to_string(path) {
            Ok(text) => self.declare(&text, &path.display().to_string()),
            Err(e) => Output::Error(format!("error: cannot read {}: {e}", path.display())),
        }
    }

    /// Rewrites `field` of layer `layer` to `value` (adding the field if the declaration lacks
    /// it) and recompiles.
    pub fn set_field(&mut self, layer: &str, field: &str, value: &str) -> Output {
        if value.is_empty() || value.contains(['{', '}', ';', '#', '\n']) {
            return Output::Error(format!(
                "error: `{value}` is not a field value (an expression or a name such as `0.5` or `gumbel(…)`)"
            ));
        }
        let Some(item) = self.layer_item(layer) else {
            return Output::Error(format!("error: {}", self.no_layer(layer)));
        };
        let mut source = self.source.clone();
        match item.fields.iter().find(|f| f.name.name == field) {
            Some(f) => source.replace_range(f.value.span.clone(), value),
            None => {
                let old = &source[item.span.clone()];
                let new = with_field(old, !item.fields.is_empty(), field, value);
                source.replace_range(item.span.clone(), &new);
            }
        }
        if let Err(e) = self.commit(source) {
            return e;
        }
        let declaration = self
            .layer_item(layer)
            .map(|l| self.source[l.span].to_string())
            .unwrap_or_default();
        Output::Text(format!("{declaration}\n"))
    }

    /// The one-line error for a layer the session does not declare.
    pub fn no_layer(&self, name: &str) -> String {
        let names = self.layer_names();
        if names.is_empty() {
            format!(
                "no layer `{name}`: no layers yet (type one, e.g. `layer pick: categorical(4)`)"
            )
        } else {
            format!(
                "no layer `{name}`; the session declares: {}",
                names.join(", ")
            )
        }
    }

    /// Compiles `source` and makes it the session's, or returns the diagnostics and keeps the
    /// session as it was.
    fn commit(&mut self, source: String) -> Result<(), Output> {
        match sst::compile_named(SOURCE_NAME, &source) {
            Ok(module) => {
                self.source = source;
                self.module = module;
                Ok(())
            }
            Err(e) => Err(Output::Error(e.to_string())),
        }
    }

    /// The declaration of layer `name` in the session's text.
    fn layer_item(&self, name: &str) -> Option<LayerItem> {
        let spec = sst::syntax::parse(&self.source).ok()?;
        spec.items.into_iter().find_map(|item| match item {
            Item::Layer(l) if l.name.name == name => Some(l),
            _ => None,
        })
    }

    /// One line per accepted item: a layer's support, shape, estimator and temperature.
    fn describe_items(&self, notes: &[(String, bool)]) -> String {
        let mut out = String::new();
        for (name, replaced) in notes {
            let verb = if *replaced { "redefined" } else { "defined" };
            match self.module.try_layer(name) {
                Ok(layer) => {
                    let plan = layer.plan();
                    out.push_str(&format!(
                        "{verb} layer {name}: {}, theta {:?}, {}, T = {}\n",
                        plan.support.describe(),
                        plan.support.shape(),
                        plan.decision("estimator").value,
                        plan.decision("temperature").value,
                    ));
                }
                Err(_) => out.push_str(&format!("{verb} {name}\n")),
            }
        }
        out
    }
}

/// Braces and parentheses opened and not yet closed, outside comments (negative when more close
/// than open; the parser then reports it).
pub fn open_brackets(text: &str) -> i64 {
    let mut depth = 0;
    for line in text.lines() {
        for c in line.chars().take_while(|&c| c != '#') {
            match c {
                '{' | '(' => depth += 1,
                '}' | ')' => depth -= 1,
                _ => {}
            }
        }
    }
    depth
}

/// The span of the item of `source` with the same kind and name as `item`.
fn same_item(source: &str, item: &Item) -> Option<std::ops::Range<usize>> {
    let spec = sst::syntax::parse(source).ok()?;
    spec.items
        .iter()
        .find(|old| {
            std::mem::discriminant(*old) == std::mem::discriminant(item)
                && old.name().name == item.name().name
        })
        .map(|old| old.span().clone())
}

/// Removes `span` from `source` with the newline that ends it.
fn remove(source: &mut String, span: std::ops::Range<usize>) {
    let end = if source[span.end..].starts_with('\n') {
        span.end + 1
    } else {
        span.end
    };
    source.replace_range(span.start..end, "");
}

/// A layer declaration with `field: value` added to its body (or a body added).
fn with_field(declaration: &str, has_fields: bool, field: &str, value: &str) -> String {
    let Some(close) = declaration.trim_end().strip_suffix('}').map(str::len) else {
        return format!("{declaration} {{ {field}: {value} }}");
    };
    let (head, tail) = declaration.split_at(close);
    if head.contains('\n') {
        // A body over several lines: the field on a line of its own before the `}`.
        let line_start = head.trim_end_matches([' ', '\t']);
        let newline = if line_start.ends_with('\n') { "" } else { "\n" };
        format!("{line_start}{newline}    {field}: {value}\n{tail}")
    } else {
        let head = head.trim_end();
        let sep = if has_fields { ";" } else { "" };
        format!("{head}{sep} {field}: {value} {tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_ignore_comments() {
        assert_eq!(open_brackets("layer a: categorical(3) { # }\n"), 1);
        assert_eq!(open_brackets("{\n(\n)\n}"), 0);
        assert_eq!(open_brackets("}"), -1);
    }

    #[test]
    fn fields_are_added_to_every_shape_of_body() {
        assert_eq!(
            with_field("layer a: categorical(3)", false, "temperature", "0.1"),
            "layer a: categorical(3) { temperature: 0.1 }"
        );
        assert_eq!(
            with_field("layer a: categorical(3) {}", false, "temperature", "0.1"),
            "layer a: categorical(3) { temperature: 0.1 }"
        );
        assert_eq!(
            with_field("layer a: c { noise: none }", true, "temperature", "0.1"),
            "layer a: c { noise: none; temperature: 0.1 }"
        );
        assert_eq!(
            with_field(
                "layer a: c {\n    noise: none # x\n}",
                true,
                "temperature",
                "0.1"
            ),
            "layer a: c {\n    noise: none # x\n    temperature: 0.1\n}"
        );
    }

    #[test]
    fn a_failed_declaration_keeps_the_state() {
        let mut s = Session::new();
        assert!(matches!(
            s.handle("layer a: categorical(3)"),
            Output::Text(_)
        ));
        let before = s.source().to_string();
        let out = s.handle("layer b: bernoulli(2) { regularizer: binary_entropi }");
        let Output::Error(text) = out else {
            panic!("{out:?}")
        };
        assert!(text.contains("did you mean"), "{text}");
        assert_eq!(s.source(), before);
    }

    #[test]
    fn redefining_a_layer_replaces_it_and_multi_line_input_waits() {
        let mut s = Session::new();
        s.handle("const n = 3");
        s.handle("layer a: categorical(n)");
        assert_eq!(s.handle("layer a: bernoulli(n) {"), Output::Nothing);
        assert!(s.is_pending());
        assert!(
            matches!(s.handle("  temperature: 0.5 }"), Output::Text(t) if t.contains("redefined"))
        );
        assert_eq!(
            s.source(),
            "const n = 3\nlayer a: bernoulli(n) {\n  temperature: 0.5 }\n"
        );
        assert!(matches!(s.handle("const n = 4"), Output::Text(_)));
        assert_eq!(s.module().layer("a").plan().support.shape(), vec![4]);
    }

    #[test]
    fn set_rewrites_or_adds_a_field() {
        let mut s = Session::new();
        s.handle("layer a: categorical(3) { temperature: 0.5 }");
        assert!(
            matches!(s.set_field("a", "temperature", "0.1"), Output::Text(t) if t.contains("temperature: 0.1"))
        );
        assert!(matches!(s.set_field("a", "noise", "none"), Output::Text(_)));
        assert_eq!(
            s.source(),
            "layer a: categorical(3) { temperature: 0.1; noise: none }\n"
        );
        assert!(matches!(
            s.set_field("a", "temperature", "-1"),
            Output::Error(_)
        ));
        assert!(matches!(
            s.set_field("b", "temperature", "1"),
            Output::Error(_)
        ));
        assert_eq!(
            s.source(),
            "layer a: categorical(3) { temperature: 0.1; noise: none }\n"
        );
    }
}
