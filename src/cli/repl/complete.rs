//! Tab completion: commands, the session's layer names, and the words of the language
//! (supports, presets, fields, regularizers, estimators, noises, backward rules).

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use sst::check::tables::{names, BACKWARDS, ESTIMATORS, FIELDS, PERTURBATIONS};
use sst::support::{Regularizer, REGISTRY};

use super::commands::COMMANDS;

/// What the completer offers; the layer names change as the session does.
#[derive(Default)]
pub struct Vocabulary {
    pub layers: Vec<String>,
}

/// Commands whose first argument is a layer.
const TAKES_LAYER: &[&str] = &[":plan", ":sample", ":grad", ":set", ":bench"];

impl Vocabulary {
    /// The words of the language a declaration may use.
    fn language(&self) -> Vec<String> {
        let mut words: Vec<String> = ["layer", "const", "preset", "step"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        words.extend(REGISTRY.iter().map(|e| e.name.to_string()));
        words.extend(sst::stdlib::presets().map(|p| p.name.name.clone()));
        words.extend(Regularizer::ALL.iter().map(|r| r.name().to_string()));
        for table in [names(PERTURBATIONS), names(ESTIMATORS), names(BACKWARDS)] {
            words.extend(table.iter().map(|w| w.to_string()));
        }
        words.extend(FIELDS.iter().map(|w| w.to_string()));
        words.extend(self.layers.iter().cloned());
        words
    }

    /// Where the word under the cursor starts, and the words that complete it.
    pub fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let mut start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| {
                i + before[i..].chars().next().map_or(1, char::len_utf8)
            });
        if &before[..start] == ":" {
            start = 0;
        }
        let word = &before[start..];
        let command = line.split_whitespace().next().unwrap_or("");
        let candidates: Vec<String> = if start == 0 && word.starts_with(':') {
            // With the space that the arguments follow.
            COMMANDS.iter().map(|c| format!("{} ", c.0)).collect()
        } else if TAKES_LAYER.contains(&command) && before[..start].trim() == command {
            self.layers.clone()
        } else if command == ":set" && before[..start].ends_with('.') {
            FIELDS.iter().map(|w| w.to_string()).collect()
        } else if command.starts_with(':') {
            Vec::new()
        } else {
            self.declaration_words(&before[..start])
        };
        let mut found: Vec<String> = candidates
            .into_iter()
            .filter(|c| c.starts_with(word))
            .collect();
        found.sort();
        found.dedup();
        (start, found)
    }

    /// The words that fit after `head` in a declaration: a field's values after `field:`,
    /// supports and presets after `layer NAME:`, any word of the language elsewhere.
    fn declaration_words(&self, head: &str) -> Vec<String> {
        let Some(head) = head.trim_end().strip_suffix(':') else {
            return self.language();
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        let key = words
            .last()
            .map_or("", |w| w.trim_start_matches(['{', ';']));
        let list: Vec<&str> = match key {
            "regularizer" => Regularizer::ALL.iter().map(|r| r.name()).collect(),
            "noise" => names(PERTURBATIONS),
            "estimator" => names(ESTIMATORS),
            "backward" => names(BACKWARDS),
            "temperature" => ["step", "exp", "log", "sqrt", "abs", "min", "max"].to_vec(),
            _ if words.len() >= 2 && words[words.len() - 2] == "layer" => {
                let mut supports: Vec<&str> = REGISTRY.iter().map(|e| e.name).collect();
                supports.extend(sst::stdlib::presets().map(|p| p.name.name.as_str()));
                supports
            }
            _ if words.len() >= 2 && words[words.len() - 2] == "preset" => {
                REGISTRY.iter().map(|e| e.name).collect()
            }
            _ => return self.language(),
        };
        list.into_iter().map(str::to_string).collect()
    }
}

/// The rustyline helper: completion from the [`Vocabulary`], file names after `:load`.
#[derive(Default)]
pub struct ReplHelper {
    pub vocabulary: Vocabulary,
    files: FilenameCompleter,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        if line.starts_with(":load ") {
            return self.files.complete(line, pos, ctx);
        }
        let (start, words) = self.vocabulary.complete(line, pos);
        let pairs = words
            .into_iter()
            .map(|w| Pair {
                display: w.clone(),
                replacement: w,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        Vocabulary {
            layers: vec!["pick".into(), "coins".into()],
        }
    }

    #[test]
    fn commands_layers_fields_and_words_complete() {
        let v = vocabulary();
        assert_eq!(v.complete(":sa", 3), (0, vec![":sample ".to_string()]));
        assert_eq!(v.complete(":plan p", 7), (6, vec!["pick".to_string()]));
        assert_eq!(
            v.complete(":set pick.temp", 14),
            (10, vec!["temperature".to_string()])
        );
        assert_eq!(
            v.complete("layer a: categorical(3) { regularizer: binary_e", 47),
            (39, vec!["binary_entropy".to_string()])
        );
        assert_eq!(
            v.complete("layer a: categ", 14),
            (9, vec!["categorical".to_string()])
        );
        assert!(v
            .complete("layer a: b", 10)
            .1
            .contains(&"bernoulli".to_string()));
        assert!(v.complete(":sample pick [1, 2", 18).1.is_empty());
        // After `field:` only that field's values; after `layer NAME:` supports and presets.
        assert_eq!(
            v.complete("layer x: bernoulli(2) { regularizer: binary_", 44)
                .1,
            vec!["binary_entropy".to_string()]
        );
        assert_eq!(
            v.complete("layer x: c { noise: g", 21).1,
            vec!["gaussian".to_string(), "gumbel".to_string()]
        );
        let supports = v.complete("layer x: b", 10).1;
        assert!(supports.contains(&"binary_concrete".to_string()));
        assert!(!supports.contains(&"binary_entropy".to_string()));
    }
}
