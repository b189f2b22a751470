//! Pest pairs → AST, one `lower_<rule>` function per grammar rule.
//!
//! Nothing here panics: where the grammar guarantees a child, its absence is still reported as an
//! internal error rather than unwrapped. Spans are tight (no trailing whitespace or comment).

use std::sync::OnceLock;

use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};

use super::ast::{
    Arg, BinOp, Call, Const, Expr, ExprKind, Field, Ident, Item, Layer, Preset, Spec,
};
use super::grammar::Rule;
use super::MAX_EXPR_DEPTH;
use crate::diagnostic::Diagnostic;

type Result<T> = std::result::Result<T, Diagnostic>;

// HELPERS

/// Punctuation and keywords: matched by the grammar, carrying nothing the AST needs.
fn is_punctuation(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::colon
            | Rule::equals
            | Rule::comma
            | Rule::lparen
            | Rule::rparen
            | Rule::lbrace
            | Rule::rbrace
            | Rule::sep
            | Rule::kw_const
            | Rule::kw_layer
            | Rule::kw_preset
            | Rule::EOI
    )
}

/// The children of a pair that carry meaning.
struct Children<'i> {
    parent: pest::Span<'i>,
    rest: std::iter::Peekable<pest::iterators::Pairs<'i, Rule>>,
}

impl<'i> Children<'i> {
    fn of(pair: Pair<'i, Rule>) -> Self {
        Children {
            parent: pair.as_span(),
            rest: pair.into_inner().peekable(),
        }
    }

    fn skip_punctuation(&mut self) {
        while self.rest.next_if(|p| is_punctuation(p.as_rule())).is_some() {}
    }

    /// The next meaningful child, which must be one of `rules`.
    fn expect(&mut self, rules: &[Rule]) -> Result<Pair<'i, Rule>> {
        self.skip_punctuation();
        match self.rest.next() {
            Some(pair) if rules.contains(&pair.as_rule()) => Ok(pair),
            other => Err(internal(
                self.parent.start()..self.parent.end(),
                &format!("expected {rules:?}, got {:?}", other.map(|p| p.as_rule())),
            )),
        }
    }

    /// The next meaningful child when it is `rule`.
    fn optional(&mut self, rule: Rule) -> Option<Pair<'i, Rule>> {
        self.skip_punctuation();
        self.rest.next_if(|p| p.as_rule() == rule)
    }

    /// All remaining meaningful children.
    fn remaining(mut self) -> impl Iterator<Item = Pair<'i, Rule>> {
        self.skip_punctuation();
        self.rest.filter(|p| !is_punctuation(p.as_rule()))
    }
}

fn internal(span: std::ops::Range<usize>, what: &str) -> Diagnostic {
    Diagnostic::new(span, format!("internal parser error: {what}"))
        .with_label("while reading this")
        .with_hint("this is a bug in sst; please report it with the spec")
}

/// The pair's span without trailing whitespace or comments (pest may include the whitespace it
/// skipped before an optional part that did not match). No `#` occurs outside comments.
fn tight_span(pair: &Pair<'_, Rule>) -> std::ops::Range<usize> {
    let start = pair.as_span().start();
    let mut text = pair.as_str();
    loop {
        text = text.trim_end();
        let line_start = text.rfind('\n').map_or(0, |i| i + 1);
        match text[line_start..].find('#') {
            Some(hash) => text = &text[..line_start + hash],
            None => break,
        }
    }
    start..start + text.len()
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
            .op(Op::prefix(Rule::neg))
    })
}

// ITEMS

pub(super) fn lower_spec(pair: Pair<'_, Rule>) -> Result<Spec> {
    let items = Children::of(pair)
        .remaining()
        .map(|item| match item.as_rule() {
            Rule::const_item => lower_const_item(item).map(Item::Const),
            Rule::layer_item => lower_layer_item(item).map(Item::Layer),
            Rule::preset_item => lower_preset_item(item).map(Item::Preset),
            other => Err(internal(
                tight_span(&item),
                &format!("unexpected item {other:?}"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Spec { items })
}

fn lower_const_item(pair: Pair<'_, Rule>) -> Result<Const> {
    let span = tight_span(&pair);
    let mut children = Children::of(pair);
    let name = lower_ident(children.expect(&[Rule::ident])?);
    let value = lower_expr(children.expect(&[Rule::expr])?)?;
    Ok(Const { name, value, span })
}

fn lower_layer_item(pair: Pair<'_, Rule>) -> Result<Layer> {
    let span = tight_span(&pair);
    let mut children = Children::of(pair);
    let name = lower_ident(children.expect(&[Rule::ident])?);
    let support = lower_support(children.expect(&[Rule::support])?)?;
    let fields = match children.optional(Rule::body) {
        Some(body) => lower_body(body)?,
        None => Vec::new(),
    };
    Ok(Layer {
        name,
        support,
        fields,
        span,
    })
}

fn lower_preset_item(pair: Pair<'_, Rule>) -> Result<Preset> {
    let span = tight_span(&pair);
    let mut children = Children::of(pair);
    let name = lower_ident(children.expect(&[Rule::ident])?);
    let support = lower_ident(children.expect(&[Rule::support_name])?);
    let fields = match children.optional(Rule::body) {
        Some(body) => lower_body(body)?,
        None => Vec::new(),
    };
    Ok(Preset {
        name,
        support,
        fields,
        span,
    })
}

/// `categorical` or `categorical(10)`: a call whose arguments may be absent.
fn lower_support(pair: Pair<'_, Rule>) -> Result<Call> {
    let span = tight_span(&pair);
    let mut children = Children::of(pair);
    let name = lower_ident(children.expect(&[Rule::support_name])?);
    let args = match children.optional(Rule::args) {
        Some(args) => lower_args(args)?,
        None => Vec::new(),
    };
    Ok(Call { name, args, span })
}

// FIELDS

fn lower_body(pair: Pair<'_, Rule>) -> Result<Vec<Field>> {
    Children::of(pair).remaining().map(lower_field).collect()
}

fn lower_field(pair: Pair<'_, Rule>) -> Result<Field> {
    let mut children = Children::of(pair);
    let name = lower_ident(children.expect(&[Rule::field_name])?);
    let value = lower_expr(children.expect(&[Rule::expr])?)?;
    let span = name.span.start..value.span.end;
    Ok(Field { name, value, span })
}

// EXPRESSIONS

/// `ident`, `support_name` and `field_name`: a name with its span.
fn lower_ident(pair: Pair<'_, Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: tight_span(&pair),
    }
}

fn lower_number(pair: Pair<'_, Rule>) -> Result<Expr> {
    let span = tight_span(&pair);
    let text = pair.as_str();
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(Expr {
            kind: ExprKind::Number(value),
            span,
        }),
        _ => Err(
            Diagnostic::new(span, format!("the number `{text}` is too large"))
                .with_label("does not fit in a 64-bit float")
                .with_hint("numbers must lie within about ±1.8e308"),
        ),
    }
}

/// `expr` and `expr_nl`: prefix and infix operators around primaries, by precedence.
/// Returns the expression with its tree depth, which is capped at [`MAX_EXPR_DEPTH`].
fn lower_expr(pair: Pair<'_, Rule>) -> Result<Expr> {
    lower_expr_with_depth(pair).map(|(expr, _)| expr)
}

/// `depth` when within [`MAX_EXPR_DEPTH`], else an error at `span`.
fn deeper(depth: usize, span: &std::ops::Range<usize>) -> Result<usize> {
    if depth > MAX_EXPR_DEPTH {
        Err(Diagnostic::new(
            span.clone(),
            format!("expression too deeply nested (at most {MAX_EXPR_DEPTH} levels)"),
        )
        .with_label("too deep")
        .with_hint("split it into consts"))
    } else {
        Ok(depth)
    }
}

fn lower_expr_with_depth(pair: Pair<'_, Rule>) -> Result<(Expr, usize)> {
    pratt()
        .map_primary(lower_primary)
        .map_prefix(|op, operand| {
            let (operand, depth) = operand?;
            let span = op.as_span().start()..operand.span.end;
            let depth = deeper(depth + 1, &span)?;
            let kind = match op.as_rule() {
                Rule::neg => ExprKind::Neg(Box::new(operand)),
                other => return Err(internal(span, &format!("unknown prefix {other:?}"))),
            };
            Ok((Expr { kind, span }, depth))
        })
        .map_infix(|lhs, op, rhs| {
            let (lhs, lhs_depth) = lhs?;
            let (rhs, rhs_depth) = rhs?;
            let span = lhs.span.start..rhs.span.end;
            let depth = deeper(lhs_depth.max(rhs_depth) + 1, &span)?;
            let op = match op.as_rule() {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                other => return Err(internal(span, &format!("unknown operator {other:?}"))),
            };
            let kind = ExprKind::Binary(op, Box::new(lhs), Box::new(rhs));
            Ok((Expr { kind, span }, depth))
        })
        .parse(pair.into_inner())
}

/// A primary: `number`, `ident`, `call` or `paren`.
fn lower_primary(pair: Pair<'_, Rule>) -> Result<(Expr, usize)> {
    match pair.as_rule() {
        Rule::number => lower_number(pair).map(|e| (e, 1)),
        Rule::ident => {
            let ident = lower_ident(pair);
            let expr = Expr {
                kind: ExprKind::Ident(ident.name),
                span: ident.span,
            };
            Ok((expr, 1))
        }
        Rule::call => {
            let call = lower_call(pair)?;
            let depth = call_depth(&call);
            let span = call.span.clone();
            let expr = Expr {
                kind: ExprKind::Call(call),
                span,
            };
            Ok((expr, depth))
        }
        Rule::paren => lower_paren(pair),
        other => Err(internal(
            tight_span(&pair),
            &format!("unexpected primary {other:?}"),
        )),
    }
}

/// Depth of a call: one more than its deepest argument (arguments were capped when lowered,
/// and parentheses nesting is capped by the pre-scan, so this cannot run away).
fn call_depth(call: &Call) -> usize {
    fn depth(expr: &Expr) -> usize {
        match &expr.kind {
            ExprKind::Number(_) | ExprKind::Ident(_) => 1,
            ExprKind::Call(call) => call_depth(call),
            ExprKind::Neg(operand) => depth(operand) + 1,
            ExprKind::Binary(_, lhs, rhs) => depth(lhs).max(depth(rhs)) + 1,
        }
    }
    1 + call.args.iter().map(|a| depth(&a.value)).max().unwrap_or(0)
}

/// `( expr )`: the inner expression, its span widened to the parentheses.
fn lower_paren(pair: Pair<'_, Rule>) -> Result<(Expr, usize)> {
    let span = tight_span(&pair);
    let mut children = Children::of(pair);
    let (inner, depth) = lower_expr_with_depth(children.expect(&[Rule::expr_nl])?)?;
    Ok((
        Expr {
            kind: inner.kind,
            span,
        },
        depth,
    ))
}

/// `name(args)` inside an expression.
fn lower_call(pair: Pair<'_, Rule>) -> Result<Call> {
    let span = tight_span(&pair);
    let mut children = Children::of(pair);
    let name = lower_ident(children.expect(&[Rule::ident])?);
    let args = lower_args(children.expect(&[Rule::args])?)?;
    Ok(Call { name, args, span })
}

/// `(a, b, k = c)`: positional arguments first, then named ones.
fn lower_args(pair: Pair<'_, Rule>) -> Result<Vec<Arg>> {
    let mut args: Vec<Arg> = Vec::new();
    let mut first_named: Option<usize> = None;
    for child in Children::of(pair).remaining() {
        let arg = match child.as_rule() {
            Rule::named_arg => lower_named_arg(child)?,
            Rule::positional_arg => lower_positional_arg(child)?,
            other => {
                return Err(internal(
                    tight_span(&child),
                    &format!("unexpected argument {other:?}"),
                ))
            }
        };
        if arg.name.is_some() {
            first_named.get_or_insert(args.len());
        } else if let Some(index) = first_named {
            let named_text = args[index].to_string();
            return Err(Diagnostic::new(
                arg.span.clone(),
                format!(
                    "expected a named argument such as `name = value`, found the positional \
                         argument `{}`",
                    arg.value
                ),
            )
            .with_label(format!("positional argument after `{named_text}`"))
            .with_hint(format!(
                "positional arguments come first: move this one before `{named_text}` or \
                     give it a name"
            )));
        }
        args.push(arg);
    }
    Ok(args)
}

fn lower_named_arg(pair: Pair<'_, Rule>) -> Result<Arg> {
    let mut children = Children::of(pair);
    let name = lower_ident(children.expect(&[Rule::ident])?);
    let value = lower_expr(children.expect(&[Rule::expr_nl])?)?;
    let span = name.span.start..value.span.end;
    Ok(Arg {
        name: Some(name),
        value,
        span,
    })
}

fn lower_positional_arg(pair: Pair<'_, Rule>) -> Result<Arg> {
    let mut children = Children::of(pair);
    let value = lower_expr(children.expect(&[Rule::expr_nl])?)?;
    let span = value.span.clone();
    Ok(Arg {
        name: None,
        value,
        span,
    })
}
