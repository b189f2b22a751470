//! The syntax tree of a `.sst` spec: plain data, every node with its byte-offset span.
//!
//! The tree says what was written, not whether it means anything: which supports, fields and
//! identifiers exist is decided by the checker.

use std::fmt;

/// Byte offsets into the source, `start..end`.
pub type Span = std::ops::Range<usize>;

/// A whole spec: its items in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Const(Const),
    Layer(Layer),
    Preset(Preset),
}

/// `const NAME = EXPR`
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `layer NAME: SUPPORT { fields }`
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: Ident,
    pub support: Call,
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `preset NAME: SUPPORT { fields }`
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: Ident,
    pub support: Ident,
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `NAME: EXPR` inside a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `name` or `name(args)`; `args` is empty when there were no parentheses or empty ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// A positional (`name == None`) or named argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Number(f64),
    Ident(String),
    /// Only `ident(...)` with parentheses; a bare identifier is [`ExprKind::Ident`].
    Call(Call),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    /// The operator as written in a spec.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    /// Binding strength: `*` and `/` bind tighter than `+` and `-`.
    fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }
}

impl Item {
    pub fn name(&self) -> &Ident {
        match self {
            Item::Const(c) => &c.name,
            Item::Layer(l) => &l.name,
            Item::Preset(p) => &p.name,
        }
    }

    pub fn span(&self) -> &Span {
        match self {
            Item::Const(c) => &c.span,
            Item::Layer(l) => &l.span,
            Item::Preset(p) => &p.span,
        }
    }
}

impl Expr {
    /// The name, when the expression is a bare identifier.
    pub fn as_ident(&self) -> Option<&str> {
        match &self.kind {
            ExprKind::Ident(name) => Some(name),
            _ => None,
        }
    }

    /// The value, when the expression is a number literal.
    pub fn as_number(&self) -> Option<f64> {
        match self.kind {
            ExprKind::Number(value) => Some(value),
            _ => None,
        }
    }

    /// Binding strength of the expression's outermost operator (atoms bind tightest).
    fn precedence(&self) -> u8 {
        match &self.kind {
            ExprKind::Binary(op, _, _) => op.precedence(),
            ExprKind::Neg(_) => 3,
            // A negative literal (never produced by the parser) prints like a negation.
            ExprKind::Number(v) if v.is_sign_negative() => 3,
            _ => 4,
        }
    }
}

// DISPLAY: spec syntax with the fewest parentheses that keep the tree the same.

/// Prints a number so that it parses back to the same `f64`: plain decimals for ordinary
/// magnitudes, `1e-6` style for very small or very large ones.
fn write_number(f: &mut fmt::Formatter<'_>, value: f64) -> fmt::Result {
    let magnitude = value.abs();
    if value == 0.0 || (1e-4..1e16).contains(&magnitude) || !value.is_finite() {
        write!(f, "{value}")
    } else {
        write!(f, "{value:e}")
    }
}

/// Writes `expr`, in parentheses when it binds more loosely than `min_precedence`.
fn write_operand(f: &mut fmt::Formatter<'_>, expr: &Expr, min_precedence: u8) -> fmt::Result {
    if expr.precedence() < min_precedence {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Number(value) => write_number(f, *value),
            ExprKind::Ident(name) => f.write_str(name),
            ExprKind::Call(call) => {
                // Always with parentheses: `f()` without them would read back as an identifier.
                write!(f, "{}(", call.name.name)?;
                write_args(f, &call.args)?;
                f.write_str(")")
            }
            ExprKind::Neg(operand) => {
                f.write_str("-")?;
                write_operand(f, operand, 3)
            }
            ExprKind::Binary(op, lhs, rhs) => {
                // Left associative: the right operand of equal precedence needs parentheses.
                let precedence = op.precedence();
                write_operand(f, lhs, precedence)?;
                write!(f, " {} ", op.symbol())?;
                write_operand(f, rhs, precedence + 1)
            }
        }
    }
}

fn write_args(f: &mut fmt::Formatter<'_>, args: &[Arg]) -> fmt::Result {
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{arg}")?;
    }
    Ok(())
}

/// `name` when there are no arguments (as a support is written), else `name(args)`.
impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name.name)?;
        if !self.args.is_empty() {
            f.write_str("(")?;
            write_args(f, &self.args)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{} = ", name.name)?;
        }
        write!(f, "{}", self.value)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}
