//! The temperature schedule compiled: a plan's [`Formula`] of the training step as a Cranelift
//! function `fn(step: f64) -> f64`, one `translate_*` per node. It performs the operations of
//! [`Formula::eval`] in the same order — `+ − × ÷`, `sqrt`, `abs` and the comparisons of `min`
//! and `max` in compiled code, `exp` and `log` by calls to the same standard-library functions —
//! so it gives the same bits (any NaN for a NaN; `tests/jit.rs` checks random formulas).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, AbiParam, FuncRef, InstBuilder, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};

use super::{finalize, new_module};
use crate::plan::{Arith, Formula, Function};

/// A schedule compiled for this machine.
#[derive(Clone, Copy)]
pub struct Schedule {
    entry: extern "C" fn(f64) -> f64,
}

impl Schedule {
    /// The temperature at training step `step`: [`Formula::eval`]'s value, bit for bit (any NaN
    /// for a NaN).
    pub fn at(&self, step: f64) -> f64 {
        (self.entry)(step)
    }
}

/// `exp` and `ln` as the compiled schedule calls them (the functions [`Formula::eval`] uses).
fn symbols() -> [(&'static str, *const u8); 2] {
    extern "C" fn exp(x: f64) -> f64 {
        x.exp()
    }
    extern "C" fn ln(x: f64) -> f64 {
        x.ln()
    }
    [
        ("sst_schedule_exp", exp as *const u8),
        ("sst_schedule_ln", ln as *const u8),
    ]
}

/// `formula` compiled: declare `fn(f64) -> f64`, define its body from the formula's tree,
/// finalize, fetch the pointer.
pub fn compile(formula: &Formula) -> Result<Schedule, String> {
    let mut module = new_module(&symbols())?;
    let mut unary = module.make_signature();
    unary.params.push(AbiParam::new(types::F64));
    unary.returns.push(AbiParam::new(types::F64));
    let mut ctx = module.make_context();
    ctx.func.signature = unary.clone();
    let mut declare = |name| {
        module
            .declare_function(name, Linkage::Import, &unary)
            .map_err(|e| e.to_string())
    };
    let (exp, ln) = (declare("sst_schedule_exp")?, declare("sst_schedule_ln")?);
    let calls = Calls {
        exp: module.declare_func_in_func(exp, &mut ctx.func),
        ln: module.declare_func_in_func(ln, &mut ctx.func),
    };
    let mut builder_context = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut builder_context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let step = b.block_params(entry)[0];
    let t = translate(&mut b, calls, step, formula);
    b.ins().return_(&[t]);
    b.seal_all_blocks();
    b.finalize(module.target_config());
    let code = finalize(module, ctx, &unary)?;
    // SAFETY: `code` is the finalized code of the function just defined, whose signature is
    // the platform's C convention with one f64 parameter and an f64 result, as the type here;
    // it reads no memory, and it is never freed (`finalize` leaks its module).
    let entry = unsafe { std::mem::transmute::<*const u8, extern "C" fn(f64) -> f64>(code) };
    Ok(Schedule { entry })
}

/// The library functions the schedule calls, declared in it.
#[derive(Clone, Copy)]
struct Calls {
    exp: FuncRef,
    ln: FuncRef,
}

/// The value of one node of the formula.
fn translate(b: &mut FunctionBuilder, calls: Calls, step: Value, f: &Formula) -> Value {
    match f {
        Formula::Num(x) => b.ins().f64const(*x),
        Formula::Step => step,
        Formula::Neg(a) => {
            let a = translate(b, calls, step, a);
            b.ins().fneg(a)
        }
        Formula::Binary(op, l, r) => {
            let (l, r) = (translate(b, calls, step, l), translate(b, calls, step, r));
            translate_arith(b, *op, l, r)
        }
        Formula::Call(function, args) => {
            let args: Vec<Value> = args.iter().map(|a| translate(b, calls, step, a)).collect();
            translate_call(b, calls, *function, &args)
        }
    }
}

fn translate_arith(b: &mut FunctionBuilder, op: Arith, l: Value, r: Value) -> Value {
    match op {
        Arith::Add => b.ins().fadd(l, r),
        Arith::Sub => b.ins().fsub(l, r),
        Arith::Mul => b.ins().fmul(l, r),
        Arith::Div => b.ins().fdiv(l, r),
    }
}

/// A function of the language: `min`/`max` fold their arguments from `+∞`/`−∞`, taking an
/// argument only when it is smaller/larger than the running value (NaNs are passed over), as
/// [`Function::apply`] does.
fn translate_call(
    b: &mut FunctionBuilder,
    calls: Calls,
    function: Function,
    args: &[Value],
) -> Value {
    let library = |b: &mut FunctionBuilder, f: FuncRef| {
        let call = b.ins().call(f, &[args[0]]);
        b.inst_results(call)[0]
    };
    let fold = |b: &mut FunctionBuilder, start: f64, cc: FloatCC| {
        let start = b.ins().f64const(start);
        args.iter().fold(start, |m, &x| {
            let take = b.ins().fcmp(cc, x, m);
            b.ins().select(take, x, m)
        })
    };
    match function {
        Function::Exp => library(b, calls.exp),
        Function::Log => library(b, calls.ln),
        Function::Sqrt => b.ins().sqrt(args[0]),
        Function::Abs => b.ins().fabs(args[0]),
        Function::Min => fold(b, f64::INFINITY, FloatCC::LessThan),
        Function::Max => fold(b, f64::NEG_INFINITY, FloatCC::GreaterThan),
    }
}
