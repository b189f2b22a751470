//! `check(&Spec) -> Vec<Plan>`: resolves names through the tables, checks arguments and
//! combinations, and chooses (and explains) every default.

pub mod args;
pub mod tables;

use std::collections::HashMap;

use args::{bind_args, compile_formula, eval_number, with_hint, Consts};
use tables::{find, names, Choice, BACKWARDS, ESTIMATORS, FIELDS, PERTURBATIONS};

use crate::diagnostic::{expected_one_of, number, Diagnostic};
use crate::ir::Program;
use crate::noise::Perturbation;
use crate::plan::{Backward, Decision, Estimator, Formula, Plan};
use crate::support::{self, call_syntax, Regularizer, SoftCall, SoftSolver, SupportRef};
use crate::syntax::ast::{Call, Expr, ExprKind, Field, Item, Layer, Preset, Span, Spec};

/// Checks a parsed spec against the built-in presets; returns one plan per layer, or every
/// error found.
pub fn check(spec: &Spec) -> Result<Vec<Plan>, Vec<Diagnostic>> {
    let mut checker = Checker::default();
    for preset in crate::stdlib::presets() {
        checker.presets.insert(
            preset.name.name.clone(),
            PresetDef {
                preset,
                builtin: true,
            },
        );
    }
    checker.declare(spec);
    let mut plans = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for item in &spec.items {
        let Item::Layer(layer) = item else { continue };
        if seen
            .insert(&layer.name.name, layer.name.span.clone())
            .is_some()
        {
            checker.errors.push(Diagnostic::new(
                layer.name.span.clone(),
                format!("layer `{}` is declared twice", layer.name.name),
            ));
            continue;
        }
        match checker.layer(layer) {
            Ok(plan) => plans.push(plan),
            Err(errors) => checker.errors.extend(errors),
        }
    }
    for item in &spec.items {
        if let Item::Preset(preset) = item {
            let errors = checker.preset_errors(preset);
            checker.errors.extend(errors);
        }
    }
    if checker.errors.is_empty() {
        Ok(plans)
    } else {
        // A user preset's error is found once for the preset and once per layer using it.
        checker
            .errors
            .sort_by(|a, b| (a.span.start, &a.message).cmp(&(b.span.start, &b.message)));
        checker.errors.dedup();
        Err(checker.errors)
    }
}

#[derive(Clone, Copy)]
struct PresetDef<'a> {
    preset: &'a Preset,
    /// Shipped in `stdlib/`: its spans are not in the user's file.
    builtin: bool,
}

/// A field value with where it came from.
#[derive(Clone, Copy)]
struct Given<'a> {
    value: &'a Expr,
    /// `Some(name)` when the value comes from a preset.
    preset: Option<&'a str>,
    /// Where to point diagnostics about this value.
    span: &'a Span,
}

impl Given<'_> {
    fn why(&self) -> String {
        match self.preset {
            Some(p) => format!("from preset `{p}`"),
            None => "set in the layer".to_string(),
        }
    }
}

#[derive(Default)]
struct Checker<'a> {
    consts: Consts,
    presets: HashMap<String, PresetDef<'a>>,
    errors: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    /// Records the spec's consts (in order: a const sees the ones before it) and presets.
    fn declare(&mut self, spec: &'a Spec) {
        for item in &spec.items {
            match item {
                Item::Const(c) => {
                    let message = if c.name.name == "step" {
                        "`step` is reserved for the training step".to_string()
                    } else if self.consts.contains_key(&c.name.name) {
                        format!("`{}` is already defined", c.name.name)
                    } else {
                        let value = eval_number(&c.value, &self.consts).unwrap_or_else(|d| {
                            self.errors.push(d);
                            f64::NAN
                        });
                        self.consts.insert(c.name.name.clone(), value);
                        continue;
                    };
                    self.errors
                        .push(Diagnostic::new(c.name.span.clone(), message));
                }
                Item::Preset(p) => self.declare_preset(p),
                Item::Layer(_) => {}
            }
        }
    }

    fn declare_preset(&mut self, preset: &'a Preset) {
        let name = preset.name.name.as_str();
        if let Some(file) = crate::stdlib::file_of(name) {
            self.errors.push(
                Diagnostic::new(
                    preset.name.span.clone(),
                    format!("`{name}` is a built-in preset, defined in {file}"),
                )
                .with_label("already declared by the standard library")
                .with_hint(
                    "built-in presets are available in every spec without a declaration; \
                     give your own preset another name",
                ),
            );
            return;
        }
        let taken = support::entry(name).is_some()
            || Regularizer::ALL.iter().any(|r| r.name() == name)
            || find(ESTIMATORS, name).is_some()
            || self.presets.contains_key(name);
        if taken {
            self.errors.push(Diagnostic::new(
                preset.name.span.clone(),
                format!(
                    "`{name}` is already the name of a support, regularizer, estimator or preset"
                ),
            ));
            return;
        }
        if support::entry(&preset.support.name).is_none() {
            self.errors.push(unknown_support(
                &preset.support.name,
                preset.support.span.clone(),
                &[],
            ));
            return;
        }
        self.presets.insert(
            name.to_string(),
            PresetDef {
                preset,
                builtin: false,
            },
        );
    }

    /// Resolves one layer into a plan.
    fn layer(&self, layer: &'a Layer) -> Result<Plan, Vec<Diagnostic>> {
        let call = &layer.support;
        let (entry, preset) = match support::entry(&call.name.name) {
            Some(entry) => (entry, None),
            None => match self.presets.get(&call.name.name) {
                Some(def) => (
                    support::entry(&def.preset.support.name).expect("checked at declaration"),
                    Some(*def),
                ),
                None => {
                    let presets: Vec<&str> = self.presets.keys().map(String::as_str).collect();
                    return Err(vec![unknown_support(
                        &call.name.name,
                        call.name.span.clone(),
                        &presets,
                    )]);
                }
            },
        };
        // A wrong argument does not stop the check of the fields: they are resolved against
        // a stand-in instance of the same support.
        let mut errors = Vec::new();
        let what = format!("support `{}`", entry.name);
        let built = match bind_args(call, entry.params, &what, &self.consts) {
            Ok(values) => (entry.build)(&values).map_err(|e| {
                let span = argument_span(call, entry.params[e.param].name, e.param);
                vec![Diagnostic::new(span, e.message)]
            }),
            Err(e) => Err(e),
        };
        let support = built.unwrap_or_else(|e| {
            errors.extend(e);
            (entry.random_instance)(0)
        });
        let plan = self.resolve_fields(layer, preset, support);
        match plan {
            Ok(plan) if errors.is_empty() => Ok(plan),
            Ok(_) => Err(errors),
            Err(e) => Err(errors.into_iter().chain(e).collect()),
        }
    }

    /// The errors in the fields of a user preset, checked once whether or not a layer uses it
    /// (against a stand-in instance of its support: a preset has no arguments).
    fn preset_errors(&self, preset: &'a Preset) -> Vec<Diagnostic> {
        let Some(entry) = support::entry(&preset.support.name) else {
            return Vec::new();
        };
        let layer = Layer {
            name: preset.name.clone(),
            support: Call {
                name: preset.support.clone(),
                args: Vec::new(),
                span: preset.support.span.clone(),
            },
            fields: preset.fields.clone(),
            span: preset.span.clone(),
        };
        self.resolve_fields(&layer, None, (entry.random_instance)(0))
            .err()
            .unwrap_or_default()
    }

    /// Resolves the fields of a layer (on top of its preset's) for a support instance.
    fn resolve_fields(
        &self,
        layer: &Layer,
        preset: Option<PresetDef<'_>>,
        support: SupportRef,
    ) -> Result<Plan, Vec<Diagnostic>> {
        let (fields, errors) = merge_fields(layer, preset);
        let mut resolver = LayerResolver {
            consts: &self.consts,
            support,
            fields,
            decisions: Vec::new(),
            errors,
        };
        let plan = resolver.resolve(layer, preset.map(|p| p.preset.name.name.clone()));
        match plan {
            Some(plan) if resolver.errors.is_empty() => Ok(plan),
            _ => Err(resolver.errors),
        }
    }
}

fn unknown_support(name: &str, span: Span, presets: &[&str]) -> Diagnostic {
    let supports: Vec<&str> = support::REGISTRY.iter().map(|e| e.name).collect();
    let mut candidates = supports.clone();
    candidates.extend_from_slice(presets);
    with_hint(
        Diagnostic::new(span, format!("unknown support `{name}`")).with_label(format!(
            "expected a support ({}) or a preset",
            supports.join(", ")
        )),
        name,
        candidates,
    )
}

/// The span of argument `name` (named, or positional at `index`) in `call`, or the call's.
fn argument_span(call: &Call, name: &str, index: usize) -> Span {
    call.args
        .iter()
        .find(|a| a.name.as_ref().is_some_and(|n| n.name == name))
        .or_else(|| call.args.iter().filter(|a| a.name.is_none()).nth(index))
        .map_or(call.span.clone(), |a| a.span.clone())
}

/// The layer's fields on top of its preset's, and the errors for unknown and repeated field
/// names (the other fields are still checked).
fn merge_fields<'a>(
    layer: &'a Layer,
    preset: Option<PresetDef<'a>>,
) -> (HashMap<&'static str, Given<'a>>, Vec<Diagnostic>) {
    let mut merged = HashMap::new();
    let mut errors = Vec::new();
    if let Some(def) = preset {
        for field in &def.preset.fields {
            let span = if def.builtin {
                &layer.support.span
            } else {
                &field.value.span
            };
            if let Some(name) = known_field(field, &mut errors) {
                merged.insert(
                    name,
                    Given {
                        value: &field.value,
                        preset: Some(&def.preset.name.name),
                        span,
                    },
                );
            }
        }
    }
    let mut own: HashMap<&str, &Field> = HashMap::new();
    for field in &layer.fields {
        let Some(name) = known_field(field, &mut errors) else {
            continue;
        };
        if own.insert(name, field).is_some() {
            errors.push(Diagnostic::new(
                field.name.span.clone(),
                format!("field `{name}` is set twice"),
            ));
            continue;
        }
        merged.insert(
            name,
            Given {
                value: &field.value,
                preset: None,
                span: &field.value.span,
            },
        );
    }
    (merged, errors)
}

fn known_field(field: &Field, errors: &mut Vec<Diagnostic>) -> Option<&'static str> {
    let name = FIELDS.iter().find(|f| **f == field.name.name);
    if name.is_none() {
        errors.push(with_hint(
            Diagnostic::new(
                field.name.span.clone(),
                format!("unknown field `{}`", field.name.name),
            )
            .with_label(expected_one_of(FIELDS)),
            &field.name.name,
            FIELDS.iter().copied(),
        ));
    }
    name.copied()
}

/// Resolves the fields of one layer whose support is known.
struct LayerResolver<'a> {
    consts: &'a Consts,
    support: SupportRef,
    fields: HashMap<&'static str, Given<'a>>,
    decisions: Vec<Decision>,
    errors: Vec<Diagnostic>,
}

impl<'a> LayerResolver<'a> {
    fn resolve(&mut self, layer: &Layer, preset: Option<String>) -> Option<Plan> {
        let support_text = self.support.describe();
        let support_why = match &preset {
            Some(p) => format!("preset `{p}` with the layer's arguments"),
            None => "set in the layer".into(),
        };
        self.decide("support", support_text, support_why);
        let noise = self.choice("noise", PERTURBATIONS, "gumbel", || {
            "the default: Gumbel noise, the Gumbel-max trick".into()
        });
        let soft = self.regularizer_and_solver();
        let backward = soft.as_ref().and_then(|s| self.backward(s));
        let estimator = self.choice("estimator", ESTIMATORS, "relaxed", || {
            "the default: forward the soft solution".into()
        });
        let estimator = estimator.filter(|e| self.estimator_fits(*e, noise));
        let temperature = self.temperature();
        let (noise, soft, backward, estimator) = (noise?, soft?, backward?, estimator?);
        let support = &self.support;
        let program = Program {
            row_len: support.shape().iter().product(),
            scores: support.scores(),
            noise,
            coordinates: support.coordinates(),
            hard: support.hard(),
            soft: support.lower(&soft),
            decode: support.decode(),
            backward,
            estimator: estimator
                .lower(support.conditional_gumbel(), support.score_function())
                .expect("estimator_fits checked the support's hook"),
        };
        Some(Plan {
            name: layer.name.name.clone(),
            preset,
            support: self.support.clone(),
            soft,
            estimator,
            program,
            temperature: temperature?,
            decisions: std::mem::take(&mut self.decisions),
        })
    }

    fn decide(&mut self, field: &'static str, value: String, why: String) {
        self.decisions.push(Decision { field, value, why });
    }

    /// A name with optional arguments from a table (`noise`, `estimator`), or its default.
    fn choice<T>(
        &mut self,
        field: &'static str,
        table: &'static [Choice<T>],
        default: &'static str,
        default_why: impl FnOnce() -> String,
    ) -> Option<T> {
        let (call, why) = match self.fields.get(field).copied() {
            None => {
                let choice = find(table, default).expect("defaults are in their tables");
                let values: Vec<_> = choice.params.iter().filter_map(|p| p.default).collect();
                self.decide(
                    field,
                    call_syntax(choice.name, choice.params, &values),
                    default_why(),
                );
                return Some((choice.make)(&values));
            }
            Some(given) => (self.as_call(field, given)?, given.why()),
        };
        let Some(choice) = find(table, &call.name.name) else {
            let valid = names(table);
            self.errors.push(with_hint(
                Diagnostic::new(
                    call.name.span.clone(),
                    format!("unknown {field} `{}`", call.name.name),
                )
                .with_label(expected_one_of(&valid)),
                &call.name.name,
                valid,
            ));
            return None;
        };
        let values = self.bind(&call, choice.params, &format!("{field} `{}`", choice.name))?;
        self.decide(field, call_syntax(choice.name, choice.params, &values), why);
        Some((choice.make)(&values))
    }

    /// Whether the support and the noise allow the estimator (Gumbel-Rao needs conditional
    /// Gumbel sampling, REINFORCE an exact `log q`; both need Gumbel noise); records the error.
    fn estimator_fits(&mut self, estimator: Estimator, noise: Option<Perturbation>) -> bool {
        let (name, available) = match estimator {
            Estimator::GumbelRao { .. } => {
                ("gumbel_rao", self.support.conditional_gumbel().is_some())
            }
            Estimator::Reinforce { .. } => ("reinforce", self.support.score_function().is_some()),
            Estimator::Relaxed | Estimator::StraightThrough => return true,
        };
        let Some(given) = self.fields.get("estimator").copied() else {
            return true;
        };
        let support = self.support.describe();
        let problem = if !available {
            let mut valid = vec!["relaxed", "straight_through"];
            valid.extend(
                self.support
                    .conditional_gumbel()
                    .is_some()
                    .then_some("gumbel_rao"),
            );
            valid.extend(
                self.support
                    .score_function()
                    .is_some()
                    .then_some("reinforce"),
            );
            Some((
                format!(
                    "estimator `{name}` is not available for {}",
                    support_keyword(&support)
                ),
                valid_for(support_keyword(&support), &valid),
            ))
        } else if noise.is_some_and(|n| n != Perturbation::Gumbel) {
            Some((
                format!("estimator `{name}` needs `noise: gumbel`"),
                "its conditional samples and log-probabilities are those of Gumbel noise".into(),
            ))
        } else {
            None
        };
        match problem {
            Some((message, label)) => {
                self.errors
                    .push(Diagnostic::new(given.span.clone(), message).with_label(label));
                false
            }
            None => true,
        }
    }

    /// The field's value as `name` or `name(args)`, its spans moved to where diagnostics
    /// should point (the layer's support, for a built-in preset's value).
    fn as_call(&mut self, field: &str, given: Given<'_>) -> Option<Call> {
        let mut call = match &given.value.kind {
            ExprKind::Ident(name) => Call {
                name: crate::syntax::ast::Ident {
                    name: name.clone(),
                    span: given.value.span.clone(),
                },
                args: Vec::new(),
                span: given.value.span.clone(),
            },
            ExprKind::Call(call) => call.clone(),
            _ => {
                self.errors.push(
                    Diagnostic::new(
                        given.span.clone(),
                        format!("`{field}` expects a name, found an expression"),
                    )
                    .with_label(format!("expected a name such as `{}`", example(field))),
                );
                return None;
            }
        };
        if given.span != &given.value.span {
            call.span = given.span.clone();
            call.name.span = given.span.clone();
            for arg in &mut call.args {
                arg.span = given.span.clone();
                arg.value.span = given.span.clone();
            }
        }
        Some(call)
    }

    fn bind(
        &mut self,
        call: &Call,
        params: &[support::Param],
        what: &str,
    ) -> Option<Vec<support::Value>> {
        match bind_args(call, params, what, self.consts) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.extend(e);
                None
            }
        }
    }

    /// The regularizer (or the support's default) and its soft solver, with `solver` checked.
    fn regularizer_and_solver(&mut self) -> Option<SoftCall> {
        let offered = self.support.soft_solvers();
        let name = self.support.describe();
        let valid: Vec<&str> = offered.iter().map(|s| s.regularizer.name()).collect();
        let solver: SoftSolver = match self.fields.get("regularizer").copied() {
            None => {
                let s = offered[0];
                self.decide(
                    "regularizer",
                    s.regularizer.name().into(),
                    format!("the default for {}", support_keyword(&name)),
                );
                s
            }
            Some(given) => {
                let call = self.as_call("regularizer", given)?;
                let found = offered
                    .iter()
                    .find(|s| s.regularizer.name() == call.name.name);
                let Some(&s) = found else {
                    let known = Regularizer::ALL.iter().any(|r| r.name() == call.name.name);
                    let message = if known {
                        format!(
                            "regularizer `{}` has no solver for {}",
                            call.name.name,
                            support_keyword(&name)
                        )
                    } else {
                        format!("unknown regularizer `{}`", call.name.name)
                    };
                    let all: Vec<&str> = Regularizer::ALL.iter().map(|r| r.name()).collect();
                    self.errors.push(with_hint(
                        Diagnostic::new(call.name.span.clone(), message)
                            .with_label(valid_for(support_keyword(&name), &valid)),
                        &call.name.name,
                        if known { valid.clone() } else { all },
                    ));
                    return None;
                };
                if !call.args.is_empty() {
                    self.errors.push(Diagnostic::new(
                        call.span.clone(),
                        "a regularizer takes no arguments",
                    ));
                    return None;
                }
                self.decide("regularizer", s.regularizer.name().into(), given.why());
                s
            }
        };
        self.decide(
            "hard_solver",
            self.support.hard().name().into(),
            format!("the exact solver of {}", support_keyword(&name)),
        );
        let (args, why) = match self.fields.get("solver").copied() {
            None => {
                let values: Vec<_> = solver.params.iter().filter_map(|p| p.default).collect();
                let why = format!(
                    "the only solver for {} on {}",
                    solver.regularizer.name(),
                    support_keyword(&name)
                );
                (values, why)
            }
            Some(given) => {
                let call = self.as_call("solver", given)?;
                if call.name.name != solver.name {
                    self.errors
                        .push(wrong_solver(&call, solver, offered, support_keyword(&name)));
                    return None;
                }
                let values =
                    self.bind(&call, solver.params, &format!("solver `{}`", solver.name))?;
                (values, given.why())
            }
        };
        self.decide(
            "soft_solver",
            call_syntax(solver.name, solver.params, &args),
            why,
        );
        Some(SoftCall { solver, args })
    }

    fn backward(&mut self, soft: &SoftCall) -> Option<Backward> {
        let solver = soft.solver;
        let valid: Vec<&str> = solver
            .rules
            .iter()
            .map(|r| r.name())
            .chain(["finite_diff"])
            .collect();
        let Some(given) = self.fields.get("backward").copied() else {
            let rule = solver.rules[0];
            self.decide("backward", rule.name().into(), solver.why_rule.into());
            return Some(Backward::Native(rule));
        };
        let call = self.as_call("backward", given)?;
        let Some(choice) = find(BACKWARDS, &call.name.name) else {
            self.errors.push(with_hint(
                Diagnostic::new(
                    call.name.span.clone(),
                    format!("unknown backward rule `{}`", call.name.name),
                )
                .with_label(valid_for(solver.name, &valid)),
                &call.name.name,
                names(BACKWARDS),
            ));
            return None;
        };
        if !valid.contains(&choice.name) {
            self.errors.push(
                Diagnostic::new(
                    call.name.span.clone(),
                    format!(
                        "backward rule `{}` is not available for {}",
                        choice.name, solver.name
                    ),
                )
                .with_label(valid_for(solver.name, &valid)),
            );
            return None;
        }
        let values = self.bind(
            &call,
            choice.params,
            &format!("backward rule `{}`", choice.name),
        )?;
        self.decide(
            "backward",
            call_syntax(choice.name, choice.params, &values),
            given.why(),
        );
        Some((choice.make)(&values))
    }

    fn temperature(&mut self) -> Option<Formula> {
        let Some(given) = self.fields.get("temperature").copied() else {
            self.decide("temperature", "1".into(), "the default".into());
            return Some(Formula::Num(1.0));
        };
        let formula = match compile_formula(given.value, self.consts) {
            Ok(f) => f,
            Err(d) => {
                self.errors.push(d);
                return None;
            }
        };
        if !formula.uses_step() {
            let t = formula.eval(0.0);
            if !(t > 0.0 && t.is_finite()) {
                self.errors.push(
                    Diagnostic::new(
                        given.span.clone(),
                        format!("temperature must be > 0, found {}", number(t)),
                    )
                    .with_label("expected a positive number or a schedule of `step`"),
                );
                return None;
            }
        }
        self.decide("temperature", given.value.to_string(), given.why());
        Some(formula)
    }
}

/// The error for a `solver` that is not the regularizer's: another regularizer's solver (with
/// the hint to switch regularizer) or an unknown name.
fn wrong_solver(
    call: &Call,
    solver: SoftSolver,
    offered: &[SoftSolver],
    support: &str,
) -> Diagnostic {
    let wanted = solver.regularizer.name();
    let label = format!("the solver for {wanted} on {support} is `{}`", solver.name);
    match offered.iter().find(|s| s.name == call.name.name) {
        Some(other) => Diagnostic::new(
            call.name.span.clone(),
            format!(
                "solver `{}` solves {}, not {wanted}",
                other.name,
                other.regularizer.name()
            ),
        )
        .with_label(label)
        .with_hint(format!(
            "set `regularizer: {}` to use `{}`",
            other.regularizer.name(),
            other.name
        )),
        None => with_hint(
            Diagnostic::new(
                call.name.span.clone(),
                format!("unknown solver `{}` for {support}", call.name.name),
            )
            .with_label(label),
            &call.name.name,
            offered.iter().map(|s| s.name),
        ),
    }
}

/// The label listing the valid choices: `valid for {owner}: a, b, c`.
fn valid_for(owner: &str, valid: &[&str]) -> String {
    format!("valid for {owner}: {}", valid.join(", "))
}

/// `categorical` from `categorical(n = 10)`.
fn support_keyword(described: &str) -> &str {
    described.split('(').next().unwrap_or(described)
}

fn example(field: &str) -> &'static str {
    match field {
        "noise" => "gumbel",
        "regularizer" => "entropy",
        "backward" => "closed_form",
        "estimator" => "relaxed",
        _ => "auto",
    }
}
