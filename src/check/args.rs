//! Expressions and argument lists: folding consts, compiling temperature schedules, and binding
//! `f(a, b = 2)` against a declared parameter list.

use std::collections::HashMap;

use crate::diagnostic::{did_you_mean, expected_one_of, number, Diagnostic};
use crate::plan::{Arith, Formula, FUNCTIONS};
use crate::support::{Param, ParamKind, Value};
use crate::syntax::ast::{BinOp, Call, Expr, ExprKind};

/// The consts of a spec, by name.
/// The spec's consts by name; a const whose declaration failed is kept as NaN, so that its uses
/// point back at it instead of calling the name unknown.
pub type Consts = HashMap<String, f64>;

/// Compiles an expression into a [`Formula`], folding consts; `step` stays a variable.
pub fn compile_formula(expr: &Expr, consts: &Consts) -> Result<Formula, Diagnostic> {
    Ok(match &expr.kind {
        ExprKind::Number(x) => Formula::Num(*x),
        ExprKind::Ident(name) if name == "step" => Formula::Step,
        ExprKind::Ident(name) => match consts.get(name) {
            Some(&x) if x.is_nan() => {
                return Err(Diagnostic::new(
                    expr.span.clone(),
                    format!("the const `{name}` has no value: its declaration is an error"),
                )
                .with_label("see the error at its declaration"))
            }
            Some(&x) => Formula::Num(x),
            None => return Err(unknown_name(expr.span.clone(), name, consts)),
        },
        ExprKind::Neg(a) => Formula::Neg(Box::new(compile_formula(a, consts)?)),
        ExprKind::Binary(op, a, b) => Formula::Binary(
            arith(*op),
            Box::new(compile_formula(a, consts)?),
            Box::new(compile_formula(b, consts)?),
        ),
        ExprKind::Call(call) => compile_call(call, consts)?,
    })
}

/// The formula's operator for the syntax tree's.
fn arith(op: BinOp) -> Arith {
    match op {
        BinOp::Add => Arith::Add,
        BinOp::Sub => Arith::Sub,
        BinOp::Mul => Arith::Mul,
        BinOp::Div => Arith::Div,
    }
}

fn compile_call(call: &Call, consts: &Consts) -> Result<Formula, Diagnostic> {
    let name = call.name.name.as_str();
    let Some(&(_, function, min, max)) = FUNCTIONS.iter().find(|f| f.0 == name) else {
        let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
        return Err(with_hint(
            Diagnostic::new(call.name.span.clone(), format!("unknown function `{name}`"))
                .with_label(expected_one_of(&names)),
            name,
            names,
        ));
    };
    if let Some(named) = call.args.iter().find_map(|a| a.name.as_ref()) {
        return Err(Diagnostic::new(
            named.span.clone(),
            format!("`{name}` takes positional arguments only"),
        )
        .with_label("remove the name"));
    }
    let count = call.args.len();
    if count < min || count > max {
        let expected = match (min, max) {
            (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
            (a, _) => format!("at least {a} arguments"),
        };
        return Err(Diagnostic::new(
            call.span.clone(),
            format!("`{name}` takes {expected}, found {count}"),
        ));
    }
    let args = call
        .args
        .iter()
        .map(|a| compile_formula(&a.value, consts))
        .collect::<Result<_, _>>()?;
    Ok(Formula::Call(function, args))
}

fn unknown_name(span: std::ops::Range<usize>, name: &str, consts: &Consts) -> Diagnostic {
    let mut known: Vec<&str> = consts.keys().map(String::as_str).collect();
    known.sort_unstable();
    known.push("step");
    with_hint(
        Diagnostic::new(span, format!("unknown name `{name}`"))
            .with_label("expected a number, a const or `step`"),
        name,
        known,
    )
}

/// Adds "did you mean `x`?" when a candidate is close to `word`.
pub fn with_hint<'a>(
    d: Diagnostic,
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Diagnostic {
    match did_you_mean(word, candidates) {
        Some(near) => d.with_hint(format!("did you mean `{near}`?")),
        None => d,
    }
}

/// Evaluates an expression that must not depend on `step` to a finite number.
pub fn eval_number(expr: &Expr, consts: &Consts) -> Result<f64, Diagnostic> {
    let formula = compile_formula(expr, consts)?;
    if formula.uses_step() {
        return Err(
            Diagnostic::new(expr.span.clone(), "`step` is only allowed in `temperature`")
                .with_label("expected a constant expression"),
        );
    }
    let x = formula.eval(0.0);
    if !x.is_finite() {
        return Err(Diagnostic::new(
            expr.span.clone(),
            format!("this expression evaluates to {}", number(x)),
        )
        .with_label("expected a finite number"));
    }
    Ok(x)
}

/// Binds `call`'s arguments (positional first, then named) to `params`, fills defaults and
/// checks each value's kind. `what` names the callee in messages, e.g. "support `subset`".
pub fn bind_args(
    call: &Call,
    params: &[Param],
    what: &str,
    consts: &Consts,
) -> Result<Vec<Value>, Vec<Diagnostic>> {
    let mut slots: Vec<Option<(Value, &Expr)>> = vec![None; params.len()];
    let mut errors = Vec::new();
    let signature = signature(&call.name.name, params);
    if params.is_empty() && !call.args.is_empty() {
        return Err(vec![Diagnostic::new(
            call.span.clone(),
            format!("{what} takes no arguments"),
        )
        .with_label(format!("write just `{}`", call.name.name))]);
    }
    let positional = call.args.iter().filter(|a| a.name.is_none()).count();
    if positional > params.len() {
        let extra = call
            .args
            .iter()
            .filter(|a| a.name.is_none())
            .nth(params.len());
        let span = extra.map_or(call.span.clone(), |a| a.span.clone());
        return Err(vec![Diagnostic::new(
            span,
            format!(
                "{what} takes {} argument{}, found {positional}",
                params.len(),
                if params.len() == 1 { "" } else { "s" }
            ),
        )
        .with_label(format!("expected {signature}"))]);
    }
    let mut position = 0;
    for arg in &call.args {
        let index = match &arg.name {
            None => {
                position += 1;
                position - 1
            }
            Some(name) => match params.iter().position(|p| p.name == name.name) {
                Some(i) => i,
                None => {
                    errors.push(with_hint(
                        Diagnostic::new(
                            name.span.clone(),
                            format!("{what} has no argument `{}`", name.name),
                        )
                        .with_label(format!("expected {signature}")),
                        &name.name,
                        params.iter().map(|p| p.name),
                    ));
                    continue;
                }
            },
        };
        if slots[index].is_some() {
            errors.push(Diagnostic::new(
                arg.span.clone(),
                format!("argument `{}` is given twice", params[index].name),
            ));
            continue;
        }
        match check_value(&arg.value, params[index], consts) {
            Ok(v) => slots[index] = Some((v, &arg.value)),
            Err(d) => errors.push(d),
        }
    }
    let mut values = Vec::with_capacity(params.len());
    for (param, slot) in params.iter().zip(&slots) {
        match (slot, param.default) {
            (Some((v, _)), _) => values.push(*v),
            (None, Some(v)) => values.push(v),
            (None, None) if errors.is_empty() => errors.push(
                Diagnostic::new(
                    call.span.clone(),
                    format!("missing argument `{}` of {what}", param.name),
                )
                .with_label(format!("expected {signature}")),
            ),
            (None, None) => {}
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// `name(a, b = 1)`: the parameters in positional order with their defaults.
pub fn signature(name: &str, params: &[Param]) -> String {
    if params.is_empty() {
        return format!("`{name}`");
    }
    let parts: Vec<String> = params
        .iter()
        .map(|p| match p.default {
            Some(v) => format!("{} = {v}", p.name),
            None => p.name.to_string(),
        })
        .collect();
    format!("`{name}({})`", parts.join(", "))
}

fn check_value(expr: &Expr, param: Param, consts: &Consts) -> Result<Value, Diagnostic> {
    let names = param.kind.names();
    if let (Some(word), false) = (expr.as_ident(), names.is_empty()) {
        return match names.iter().find(|n| **n == word) {
            Some(name) => Ok(Value::Name(name)),
            None => Err(with_hint(
                Diagnostic::new(
                    expr.span.clone(),
                    format!("argument `{}` cannot be `{word}`", param.name),
                )
                .with_label(format!("expected {}", param.kind.expected())),
                word,
                names.iter().copied(),
            )),
        };
    }
    let x = eval_number(expr, consts)?;
    let fail = || {
        let expected = param.kind.expected();
        Diagnostic::new(
            expr.span.clone(),
            format!(
                "argument `{}` must be {expected}, found {}",
                param.name,
                number(x)
            ),
        )
        .with_label(format!("expected {expected}"))
    };
    match param.kind {
        ParamKind::Int { .. } | ParamKind::IntOrName { .. } if x > param.kind.max() as f64 => {
            Err(Diagnostic::new(
                expr.span.clone(),
                format!(
                    "argument `{}` must be at most {}, found {}",
                    param.name,
                    param.kind.max(),
                    number(x)
                ),
            )
            .with_label(format!("expected {}", param.kind.expected())))
        }
        ParamKind::Int { min, .. } | ParamKind::IntOrName { min, .. } => {
            if x.fract() != 0.0 || (x as i64) < min {
                Err(fail())
            } else {
                Ok(Value::Int(x as i64))
            }
        }
        ParamKind::Positive if x > 0.0 => Ok(Value::Real(x)),
        ParamKind::Positive | ParamKind::Name(_) => Err(fail()),
    }
}
