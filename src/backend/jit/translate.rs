//! Cranelift IR for the fused row kernels: one function per [`Kernel`], looping over a range of
//! rows in compiled code. A forward kernel reads `θ` once and writes `w` and `z` once (the soft
//! kernels re-read their own output for the normalisation); a backward kernel reads the saved
//! `w` or solution and the cotangent and writes the gradient.
//!
//! Rows are walked in *units* of four elements (one `f32x4`, two `f64x2`). The noise of a row is
//! written into a scratch row by the Rust helper [`crate::noise::fill_noise`] (Philox and the
//! transform, vectorized for the CPU it runs on), called from the compiled row loop, and read
//! back unit by unit. A row whose length is not a multiple of four is padded by the caller to
//! the next multiple, and its last unit's extra lanes are masked here at compile time (the row
//! length is a constant of the kernel). The unit loops take two units per iteration, and their
//! running sums and maxima ([`Acc`]) alternate between two chains, folded after the loop. The
//! argmax keeps lane-wise maxima only and then finds the first element equal to the largest.

use std::mem::offset_of;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{AbiParam, FuncRef, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

use super::vmath::{self, select, splat_f};
use super::{BackwardArgs, ForwardArgs};
use crate::backend::fused::{Front, Kernel, Pass, Precision, SoftKernel, Solve};

/// Rust kernels the compiled code calls, declared in the function being built.
#[derive(Clone, Copy)]
pub struct Helpers {
    /// The address of the kernel's description, which `solve` and `vjp` read.
    pub kernel: i64,
    /// `fn(kernel, x: *const F, z: *mut F, report, kept: *mut f64)`: a row solved by its Rust
    /// kernel.
    pub solve: FuncRef,
    /// `fn(kernel, x: *const F, s: *const F, g: *const F, grad: *mut F, t: F, kept: *const f64)
    /// -> i64`: a Rust kernel's VJP, 1 where it is not finite.
    pub vjp: FuncRef,
    /// `fn(out: *mut F, theta: *const F, n: i64, seed: i64, sample: i64, batch: i64, kernel)
    /// -> i64`: the noise of the kernel's front (the race's `w`), 1 where `θ` is refused.
    pub noise: FuncRef,
    /// `fn(row: *mut F, n: i64, stride: i64, m: F)`.
    pub exp_normalize: FuncRef,
}

impl Kernel {
    /// The padded row length: `n` rounded up to a whole unit.
    pub fn stride(&self) -> usize {
        self.n.div_ceil(4) * 4
    }

    /// Adds the kernel's signature (`fn(*const Args) -> i64`) and body to `b`'s function.
    pub fn translate(&self, b: &mut FunctionBuilder, pointer: Type, helpers: Helpers) {
        b.func.signature.params.push(AbiParam::new(pointer));
        b.func.signature.returns.push(AbiParam::new(types::I64));
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let args = b.block_params(entry)[0];
        let mut k = Emit {
            b,
            p: self.precision,
            n: self.n,
            stride: self.stride() as i64,
            kept_width: self.kept_width(),
            pointer,
            helpers,
        };
        let status = match self.pass {
            Pass::Forward { front, solve } => k.translate_forward(args, front, solve),
            Pass::Backward { soft, recompute } => k.translate_backward(args, soft, recompute),
        };
        k.b.ins().return_(&[status]);
        k.b.seal_all_blocks();
    }
}

/// The function being built, with the kernel's constants.
struct Emit<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    p: Precision,
    n: usize,
    stride: i64,
    /// The f64 a forward row keeps for the backward pass ([`Kernel::kept_width`]).
    kept_width: usize,
    pointer: Type,
    helpers: Helpers,
}

/// Which lanes of a unit hold elements of the row (`None`: all four).
type Mask = Option<[bool; 4]>;

/// A unit's noise vectors, when the pass draws noise.
type UnitNoise = Option<Vec<Value>>;

/// How the two chains of an [`Acc`] are folded into one.
#[derive(Clone, Copy)]
enum Fold {
    Sum,
    /// Of finite values (a row with a NaN fails its finiteness check before the maximum is
    /// read).
    Max,
}

/// A lane-wise accumulator of one row loop, in two chains: [`Emit::for_each_unit`] swaps them
/// after every unit, so that consecutive units do not wait on each other's addition (three or
/// four cycles each), and folds them into `var` after the loop. Bodies read and write `var`.
#[derive(Clone, Copy)]
struct Acc {
    var: Variable,
    spare: Variable,
    fold: Fold,
}

impl<'b> Emit<'_, 'b> {
    fn load_field(&mut self, ty: Type, args: Value, offset: usize) -> Value {
        self.b
            .ins()
            .load(ty, MemFlagsData::trusted(), args, offset as i32)
    }

    /// The byte address of row `row` (i64) of the array at `base`.
    fn row_base(&mut self, base: Value, row: Value) -> Value {
        let bytes = self.stride * self.p.bytes();
        let off = self.b.ins().imul_imm_s(row, bytes);
        let off = self.cast_pointer(off);
        self.b.ins().iadd(base, off)
    }

    fn cast_pointer(&mut self, v: Value) -> Value {
        match self.pointer == types::I64 {
            true => v,
            false => self.b.ins().ireduce(self.pointer, v),
        }
    }

    /// Loads the unit at element `idx` of the row at `row`.
    fn load_unit(&mut self, row: Value, idx: Value) -> Vec<Value> {
        let addr = self.element_address(row, idx);
        (0..self.p.per_unit())
            .map(|v| {
                self.b.ins().load(
                    self.p.vector(),
                    MemFlagsData::new().with_notrap(),
                    addr,
                    16 * v as i32,
                )
            })
            .collect()
    }

    fn store_unit(&mut self, row: Value, idx: Value, unit: &[Value]) {
        let addr = self.element_address(row, idx);
        for (v, &x) in unit.iter().enumerate() {
            self.b
                .ins()
                .store(MemFlagsData::new().with_notrap(), x, addr, 16 * v as i32);
        }
    }

    fn element_address(&mut self, row: Value, idx: Value) -> Value {
        let off = self.b.ins().imul_imm_s(idx, self.p.bytes());
        let off = self.cast_pointer(off);
        self.b.ins().iadd(row, off)
    }

    /// `for i in start..end { body(i) }` with `i: i64`.
    fn counted_loop(&mut self, start: Value, end: Value, body: &mut dyn FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[start.into()]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        // The exit is the branch's first target and the body its second: with the body first,
        // Cranelift's loop-invariant code motion (0.135) missed every loop here (the row
        // addresses and vector constants were recomputed per unit, inner loops ~1.6× slower).
        let done = self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, i, end);
        self.b.ins().brif(done, exit, &[], inner, &[]);
        self.b.switch_to_block(inner);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.ins().jump(header, &[next.into()]);
        self.b.switch_to_block(exit);
    }

    /// Calls `body(idx, mask, noise)` for every unit of a row, in order: the full units in a
    /// loop two at a time, then the partial unit; `noise` the unit of the noise row when there
    /// is one. The accumulators `accs` alternate chains from unit to unit and are folded at the
    /// end.
    fn for_each_unit(
        &mut self,
        noise_row: Option<Value>,
        accs: &[Acc],
        body: &mut dyn FnMut(&mut Self, Value, Mask, UnitNoise),
    ) {
        let full = self.n / 4;
        let mut unit = |k: &mut Self, idx: Value, mask: Mask| {
            let g = noise_row.map(|row| k.load_unit(row, idx));
            body(k, idx, mask, g);
            k.swap_chains(accs);
        };
        let (zero, pairs) = (self.iconst(0), self.iconst((full / 2) as i64));
        self.counted_loop(zero, pairs, &mut |k, pair| {
            let idx = k.b.ins().imul_imm_s(pair, 8);
            unit(k, idx, None);
            let idx = k.b.ins().iadd_imm_s(idx, 4);
            unit(k, idx, None);
        });
        if full % 2 == 1 {
            let idx = self.iconst(4 * (full - 1) as i64);
            unit(self, idx, None);
        }
        if self.n.div_ceil(4) > full {
            let idx = self.iconst(4 * full as i64);
            let mask = self.mask(full);
            unit(self, idx, mask);
        }
        for acc in accs {
            let (a, b) = (self.b.use_var(acc.var), self.b.use_var(acc.spare));
            let folded = match acc.fold {
                Fold::Sum => self.b.ins().fadd(a, b),
                Fold::Max => vmath::max(self.b, self.p, a, b),
            };
            self.b.def_var(acc.var, folded);
        }
    }

    /// Exchanges each accumulator's two chains (no instruction: the variables are renamed).
    fn swap_chains(&mut self, accs: &[Acc]) {
        for acc in accs {
            let (a, b) = (self.b.use_var(acc.var), self.b.use_var(acc.spare));
            self.b.def_var(acc.var, b);
            self.b.def_var(acc.spare, a);
        }
    }

    fn iconst(&mut self, x: i64) -> Value {
        self.b.ins().iconst(types::I64, x)
    }

    /// The lanes of unit `unit` inside the row, when some are not.
    fn mask(&self, unit: usize) -> Mask {
        let lanes = std::array::from_fn(|l| 4 * unit + l < self.n);
        (!lanes.iter().all(|&x| x)).then_some(lanes)
    }

    /// `x` where the mask holds, `fill` elsewhere, vector by vector.
    fn masked(&mut self, mask: Mask, unit: Vec<Value>, fill: f64) -> Vec<Value> {
        let Some(lanes) = mask else { return unit };
        let per = self.p.lanes();
        unit.into_iter()
            .enumerate()
            .map(|(v, x)| {
                let bits: Vec<u64> = (0..per)
                    .map(|l| if lanes[v * per + l] { u64::MAX } else { 0 })
                    .collect();
                let m = match self.p {
                    Precision::F32 => vmath::lanes_i32(
                        self.b,
                        [
                            bits[0] as u32,
                            bits[1] as u32,
                            bits[2] as u32,
                            bits[3] as u32,
                        ],
                    ),
                    Precision::F64 => vmath::lanes_i64(self.b, [bits[0], bits[1]]),
                };
                let fill = splat_f(self.b, self.p, fill);
                select(self.b, self.p, m, x, fill)
            })
            .collect()
    }

    /// The sum of a vector's lanes, as a scalar (NaN if any lane is).
    fn lane_sum(&mut self, v: Value) -> Value {
        let mut s = self.b.ins().extractlane(v, 0);
        for l in 1..self.p.lanes() {
            let x = self.b.ins().extractlane(v, l as u8);
            s = self.b.ins().fadd(s, x);
        }
        s
    }

    /// The largest lane of a vector without NaNs, as a scalar.
    fn lane_max(&mut self, v: Value) -> Value {
        let mut m = self.b.ins().extractlane(v, 0);
        for l in 1..self.p.lanes() {
            let x = self.b.ins().extractlane(v, l as u8);
            let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, m);
            m = self.b.ins().select(gt, x, m);
        }
        m
    }

    /// An accumulator of the precision's vectors, every lane starting at `init`.
    fn acc(&mut self, init: f64, fold: Fold) -> Acc {
        let ty = self.p.vector();
        let (var, spare) = (self.b.declare_var(ty), self.b.declare_var(ty));
        let v = splat_f(self.b, self.p, init);
        self.b.def_var(var, v);
        self.b.def_var(spare, v);
        Acc { var, spare, fold }
    }

    /// `acc += x − x` for each vector: a lane of `acc` becomes NaN once an `x` is ±∞ or NaN.
    fn track_finite(&mut self, acc: Acc, unit: &[Value]) {
        let d = unit.iter().map(|&x| self.b.ins().fsub(x, x));
        let d: Vec<Value> = d.collect();
        let d = d[1..].iter().fold(d[0], |s, &x| self.b.ins().fadd(s, x));
        let a = self.b.use_var(acc.var);
        let a = self.b.ins().fadd(a, d);
        self.b.def_var(acc.var, a);
    }

    /// `acc += x`.
    fn add_to(&mut self, acc: Acc, x: Value) {
        let a = self.b.use_var(acc.var);
        let a = self.b.ins().fadd(a, x);
        self.b.def_var(acc.var, a);
    }

    /// Returns `row` from the function when `acc` saw a value that is not finite.
    fn fail_unless_finite(&mut self, acc: Acc, row: Value) {
        let a = self.b.use_var(acc.var);
        let s = self.lane_sum(a);
        let bad = self.b.ins().fcmp(FloatCC::Unordered, s, s);
        self.return_row_if(bad, row);
    }

    /// Returns `row` from the function when `failed` (an integer or a comparison) is not zero.
    fn return_row_if(&mut self, failed: Value, row: Value) {
        let (fail, ok) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(failed, fail, &[], ok, &[]);
        self.b.switch_to_block(fail);
        self.b.ins().return_(&[row]);
        self.b.switch_to_block(ok);
    }

    fn splat_scalar(&mut self, x: Value) -> Value {
        self.b.ins().splat(self.p.vector(), x)
    }

    /// The forward kernel: for each row `i` of `start..end` (batch row `i mod B`, sample
    /// `i div B`), `w = θ + noise`, then the solve, checking that `w` and `w/T` are finite.
    /// Returns −1, or the first row whose numbers are not (the driver re-runs the reference
    /// backend for its sentence).
    fn translate_forward(&mut self, args: Value, front: Front, solve: Solve) -> Value {
        let ptr = self.pointer;
        let theta = self.load_field(ptr, args, offset_of!(ForwardArgs<f64>, theta));
        let w = self.load_field(ptr, args, offset_of!(ForwardArgs<f64>, w));
        let z = self.load_field(ptr, args, offset_of!(ForwardArgs<f64>, z));
        let scratch = self.load_field(ptr, args, offset_of!(ForwardArgs<f64>, scratch));
        let noise_row = self.load_field(ptr, args, offset_of!(ForwardArgs<f64>, noise));
        let start = self.load_field(types::I64, args, offset_of!(ForwardArgs<f64>, start));
        let end = self.load_field(types::I64, args, offset_of!(ForwardArgs<f64>, end));
        let batch = self.load_field(types::I64, args, offset_of!(ForwardArgs<f64>, batch));
        let seed = self.load_field(types::I64, args, offset_of!(ForwardArgs<f64>, seed));
        let report = self.load_field(ptr, args, offset_of!(ForwardArgs<f64>, report));
        let kept = self.load_field(ptr, args, offset_of!(ForwardArgs<f64>, kept));
        let kept_bytes = 8 * self.kept_width as i64;
        let t = self.load_field(types::F64, args, offset_of!(ForwardArgs<f64>, temperature));
        let t = match self.p {
            Precision::F32 => self.b.ins().fdemote(types::F32, t),
            Precision::F64 => t,
        };
        let t = self.splat_scalar(t);
        let n = self.iconst(self.n as i64);
        let kernel = self.b.ins().iconst(self.pointer, self.helpers.kernel);
        self.counted_loop(start, end, &mut |k, i| {
            let sample = k.b.ins().udiv(i, batch);
            let past = k.b.ins().imul(sample, batch);
            let row_b = k.b.ins().isub(i, past);
            let j = k.b.ins().isub(i, start);
            let theta_row = k.row_base(theta, row_b);
            let w_row = k.row_base(w, j);
            let z_row = k.row_base(z, j);
            let kept_offset = k.b.ins().imul_imm_s(j, kept_bytes);
            let kept_offset = k.cast_pointer(kept_offset);
            let kept_row = k.b.ins().iadd(kept, kept_offset);
            // The row's noise into the noise row: (seed, sample, batch row) is its key; the race
            // writes `w` itself there, or fails on a `θ` it cannot take (the reference backend
            // then says so).
            let noise = (front != Front::None).then(|| {
                let args = [noise_row, theta_row, n, seed, sample, row_b, kernel];
                let call = k.b.ins().call(k.helpers.noise, &args);
                let failed = k.b.inst_results(call)[0];
                k.return_row_if(failed, i);
                noise_row
            });
            let additive = !matches!(front, Front::Race | Front::RaceLogistic);
            let arrays = [theta_row, w_row, z_row, scratch, report, kept_row];
            k.translate_row_forward((noise, additive), solve, t, arrays, i);
        });
        self.iconst(-1)
    }

    /// One row of the forward kernel: `w = θ + noise`, or the noise row itself where the noise
    /// is not `additive`.
    fn translate_row_forward(
        &mut self,
        (noise, additive): (Option<Value>, bool),
        solve: Solve,
        t: Value,
        [theta_row, w_row, z_row, scratch, report, kept_row]: [Value; 6],
        row: Value,
    ) {
        let zero = splat_f(self.b, self.p, 0.0);
        let finite_w = self.acc(0.0, Fold::Sum);
        let finite_x = self.acc(0.0, Fold::Sum);
        let best = self.acc(f64::NEG_INFINITY, Fold::Max);
        let accs = match solve {
            Solve::Argmax => vec![finite_w, best],
            Solve::Soft(_) => vec![finite_w, finite_x, best],
            _ => vec![finite_w],
        };
        self.for_each_unit(noise, &accs, &mut |k, idx, mask, g| {
            let theta = k.load_unit(theta_row, idx);
            let w: Vec<Value> = match g {
                None => theta,
                Some(g) if !additive => g,
                Some(g) => theta
                    .iter()
                    .zip(g)
                    .map(|(&th, g)| k.b.ins().fadd(th, g))
                    .collect(),
            };
            k.store_unit(w_row, idx, &w);
            k.track_finite(finite_w, &w);
            match solve {
                Solve::Positive => {
                    let one = splat_f(k.b, k.p, 1.0);
                    let z: Vec<Value> = w
                        .iter()
                        .map(|&x| {
                            let pos = k.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                            select(k.b, k.p, pos, one, zero)
                        })
                        .collect();
                    k.store_unit(z_row, idx, &z);
                }
                Solve::Argmax => {
                    let w = k.masked(mask, w, f64::NEG_INFINITY);
                    k.track_max(best, &w);
                }
                Solve::Soft(soft) => {
                    let x = k.scaled(&w, t);
                    k.soft_unit(soft, x, [z_row, scratch], idx, mask, [finite_x, best]);
                }
                Solve::TopK { .. } | Solve::Combinatorial(_) => {}
            }
        });
        self.fail_unless_finite(finite_w, row);
        match solve {
            Solve::Positive => {}
            Solve::Argmax => self.write_one_hot(best, w_row, z_row),
            Solve::TopK { .. } | Solve::Combinatorial(_) => {
                self.solve_in_rust([w_row, z_row, report, kept_row])
            }
            Solve::Soft(soft) => {
                let rows = [z_row, scratch, report, kept_row];
                self.finish_soft(soft, rows, [finite_x, best], row)
            }
        }
    }

    /// The first pass of a soft kernel over one unit of `x = w/T`: softmax stores `x` and keeps
    /// its (masked) maximum in `best`, sigmoid and clip store their output, the kernels solved
    /// in Rust store `x` in `x_row`; all watch `x` in `finite_x`.
    fn soft_unit(
        &mut self,
        soft: SoftKernel,
        x: Vec<Value>,
        [out_row, x_row]: [Value; 2],
        idx: Value,
        mask: Mask,
        [finite_x, best]: [Acc; 2],
    ) {
        self.track_finite(finite_x, &x);
        match soft {
            SoftKernel::Softmax => {
                self.store_unit(out_row, idx, &x);
                let x = self.masked(mask, x, f64::NEG_INFINITY);
                self.track_max(best, &x);
            }
            SoftKernel::Sigmoid => {
                let s = self.sigmoid(&x);
                self.store_unit(out_row, idx, &s);
            }
            SoftKernel::Clip => {
                let s = self.clip(&x);
                self.store_unit(out_row, idx, &s);
            }
            SoftKernel::Sparsemax
            | SoftKernel::Threshold { .. }
            | SoftKernel::CappedSimplex { .. }
            | SoftKernel::Sinkhorn { .. }
            | SoftKernel::MatrixTree { .. }
            | SoftKernel::Esp { .. }
            | SoftKernel::ChainDp { .. } => self.store_unit(x_row, idx, &x),
        }
    }

    /// `clip(x + ½, 0, 1)` as the reference computes it: `max` with 0, then `min` with 1.
    fn clip(&mut self, x: &[Value]) -> Vec<Value> {
        let (half, zero, one) = (
            splat_f(self.b, self.p, 0.5),
            splat_f(self.b, self.p, 0.0),
            splat_f(self.b, self.p, 1.0),
        );
        x.iter()
            .map(|&x| {
                let y = self.b.ins().fadd(x, half);
                let y = vmath::max(self.b, self.p, y, zero);
                let above = self.b.ins().fcmp(FloatCC::GreaterThan, y, one);
                select(self.b, self.p, above, one, y)
            })
            .collect()
    }

    /// After [`Emit::soft_unit`] over a row: returns `row` from the function if `x` overflowed;
    /// softmax then normalises `exp(x − max)` in place, the kernels solved in Rust are called
    /// (recording into `report` and keeping into `kept`, null pointers where nothing is
    /// recorded or kept).
    fn finish_soft(
        &mut self,
        soft: SoftKernel,
        [out_row, x_row, report, kept]: [Value; 4],
        [finite_x, best]: [Acc; 2],
        row: Value,
    ) {
        self.fail_unless_finite(finite_x, row);
        match soft {
            SoftKernel::Softmax => {
                let m = self.b.use_var(best.var);
                let m = self.lane_max(m);
                self.normalize_exp(out_row, m);
            }
            SoftKernel::Sigmoid | SoftKernel::Clip => {}
            _ => self.solve_in_rust([x_row, out_row, report, kept]),
        }
    }

    /// `out_row` solved from `in_row` by the kernel's Rust solver (`sst_solve`).
    fn solve_in_rust(&mut self, [in_row, out_row, report, kept]: [Value; 4]) {
        let kernel = self.b.ins().iconst(self.pointer, self.helpers.kernel);
        let solve = self.helpers.solve;
        self.b
            .ins()
            .call(solve, &[kernel, in_row, out_row, report, kept]);
    }

    /// `w / T` vector by vector.
    fn scaled(&mut self, w: &[Value], t: Value) -> Vec<Value> {
        w.iter().map(|&x| self.b.ins().fdiv(x, t)).collect()
    }

    /// `σ(x) = 1/(1 + e^{−x})` for `x ≥ 0`, `e^x/(1 + e^x)` below, from `e = exp(−|x|)`.
    fn sigmoid(&mut self, x: &[Value]) -> Vec<Value> {
        let na: Vec<Value> = x
            .iter()
            .map(|&x| {
                let a = self.b.ins().fabs(x);
                self.b.ins().fneg(a)
            })
            .collect();
        let e = vmath::exp(self.b, self.p, &na);
        let (one, zero) = (splat_f(self.b, self.p, 1.0), splat_f(self.b, self.p, 0.0));
        x.iter()
            .zip(e)
            .map(|(&x, e)| {
                let d = self.b.ins().fadd(one, e);
                let pos = self.b.ins().fdiv(one, d);
                let neg = self.b.ins().fdiv(e, d);
                let ge = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, zero);
                select(self.b, self.p, ge, pos, neg)
            })
            .collect()
    }

    /// Keeps, lane by lane, the largest value seen in `best` (of finite values, see
    /// [`Fold::Max`]).
    fn track_max(&mut self, best: Acc, unit: &[Value]) {
        let m = unit[1..]
            .iter()
            .fold(unit[0], |m, &x| vmath::max(self.b, self.p, x, m));
        let acc = self.b.use_var(best.var);
        let acc = vmath::max(self.b, self.p, m, acc);
        self.b.def_var(best.var, acc);
    }

    /// Writes the one-hot of the row's largest `w` (the lowest index among equals): the largest
    /// of `best`'s lanes, then the first element of `w_row` equal to it.
    fn write_one_hot(&mut self, best: Acc, w_row: Value, z_row: Value) {
        let m = self.b.use_var(best.var);
        let m = self.lane_max(m);
        let at = self.first_index_of(w_row, m);
        let zero = splat_f(self.b, self.p, 0.0);
        let zeros = vec![zero; self.p.per_unit()];
        self.for_each_unit(None, &[], &mut |k, idx, _, _| {
            k.store_unit(z_row, idx, &zeros)
        });
        let addr = self.element_address(z_row, at);
        let one = match self.p {
            Precision::F32 => self.b.ins().f32const(1.0),
            Precision::F64 => self.b.ins().f64const(1.0),
        };
        self.b
            .ins()
            .store(MemFlagsData::new().with_notrap(), one, addr, 0);
    }

    /// The index (i64) of the first of the row's `n` elements equal to `m` (`m` is one of them):
    /// the full units compared four lanes at a time until one matches, then the partial unit.
    /// Clamped to the row, so that even a miss writes inside it.
    fn first_index_of(&mut self, row: Value, m: Value) -> Value {
        let m = self.splat_scalar(m);
        let full = self.n / 4;
        let (header, body, tail, found) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.append_block_param(header, types::I64);
        self.b.append_block_param(found, types::I64);
        self.b.append_block_param(found, types::I32);
        let zero = self.iconst(0);
        self.b.ins().jump(header, &[zero.into()]);
        self.b.switch_to_block(header);
        let unit = self.b.block_params(header)[0];
        let done = self
            .b
            .ins()
            .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, unit, full as i64);
        // The exit first, as in `counted_loop`.
        self.b.ins().brif(done, tail, &[], body, &[]);
        self.b.switch_to_block(body);
        let idx = self.b.ins().imul_imm_s(unit, 4);
        let bits = self.equal_lanes(row, idx, m);
        let next = self.b.ins().iadd_imm_s(unit, 1);
        self.b.ins().brif(
            bits,
            found,
            &[unit.into(), bits.into()],
            header,
            &[next.into()],
        );
        self.b.switch_to_block(tail);
        let bits = self.partial_equal_lanes(row, m);
        let last = self.iconst(full as i64);
        self.b.ins().jump(found, &[last.into(), bits.into()]);
        self.b.switch_to_block(found);
        let [unit, bits] = [0, 1].map(|i| self.b.block_params(found)[i]);
        let lane = self.b.ins().ctz(bits);
        let lane = self.b.ins().uextend(types::I64, lane);
        let at = self.b.ins().imul_imm_s(unit, 4);
        let at = self.b.ins().iadd(at, lane);
        let last = self.iconst(self.n as i64 - 1);
        self.b.ins().umin(at, last)
    }

    /// [`Emit::equal_lanes`] of the partial unit, its lanes past the row cleared (0 when the row
    /// has no partial unit).
    fn partial_equal_lanes(&mut self, row: Value, m: Value) -> Value {
        let full = self.n / 4;
        match self.n - 4 * full {
            0 => self.b.ins().iconst(types::I32, 0),
            inside => {
                let idx = self.iconst(4 * full as i64);
                let bits = self.equal_lanes(row, idx, m);
                self.b.ins().band_imm_u(bits, (1i64 << inside) - 1)
            }
        }
    }

    /// The lanes of the unit at `idx` equal to `m`, as the bits of an i32 (lane `l`, bit `l`).
    fn equal_lanes(&mut self, row: Value, idx: Value, m: Value) -> Value {
        let unit = self.load_unit(row, idx);
        let per = self.p.lanes();
        let mut bits = self.b.ins().iconst(types::I32, 0);
        for (v, x) in unit.into_iter().enumerate() {
            let eq = self.b.ins().fcmp(FloatCC::Equal, x, m);
            let b = self.b.ins().vhigh_bits(types::I32, eq);
            let b = self.b.ins().ishl_imm_u(b, (per * v) as i64);
            bits = self.b.ins().bor(bits, b);
        }
        bits
    }

    /// `row ← exp(row − m) / Σ exp(row − m)` by the Rust helper
    /// ([`crate::kernels::softmax::exp_normalize`], vectorized for the CPU), which also
    /// zeroes the padding past `n`.
    fn normalize_exp(&mut self, row: Value, m: Value) {
        let n = self.iconst(self.n as i64);
        let stride = self.iconst(self.stride);
        let exp_normalize = self.helpers.exp_normalize;
        self.b.ins().call(exp_normalize, &[row, n, stride, m]);
    }

    /// The backward kernel: for each row `i` of `start..end`, `grad = J_sᵀ g / T` with the soft
    /// solution `s` (and what its solve kept) saved or re-solved from the saved `w`, `g` the
    /// cotangent row (`i − start` per sample, else the batch row), and `x = w/T` for the VJPs
    /// that read it. Returns −1, or the first row whose re-solve or VJP met a number that is
    /// not finite.
    fn translate_backward(&mut self, args: Value, soft: SoftKernel, recompute: bool) -> Value {
        let ptr = self.pointer;
        let w = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, w));
        let solution = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, solution));
        let cotangent = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, cotangent));
        let grad = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, grad));
        let scratch = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, scratch));
        let scratch_x = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, scratch_x));
        let kept = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, kept));
        let kept_scratch = self.load_field(ptr, args, offset_of!(BackwardArgs<f64>, kept_scratch));
        let kept_bytes = 8 * soft.kept_width() as i64;
        let start = self.load_field(types::I64, args, offset_of!(BackwardArgs<f64>, start));
        let end = self.load_field(types::I64, args, offset_of!(BackwardArgs<f64>, end));
        let batch = self.load_field(types::I64, args, offset_of!(BackwardArgs<f64>, batch));
        let per_sample =
            self.load_field(types::I64, args, offset_of!(BackwardArgs<f64>, per_sample));
        let t = self.load_field(types::F64, args, offset_of!(BackwardArgs<f64>, temperature));
        let t_scalar = match self.p {
            Precision::F32 => self.b.ins().fdemote(types::F32, t),
            Precision::F64 => t,
        };
        let t = self.splat_scalar(t_scalar);
        self.counted_loop(start, end, &mut |k, i| {
            let j = k.b.ins().isub(i, start);
            let row_b = k.b.ins().urem(i, batch);
            let c = k.b.ins().select(per_sample, j, row_b);
            let g_row = k.row_base(cotangent, c);
            let grad_row = k.row_base(grad, j);
            let w_row = k.row_base(w, j);
            let (s_row, kept_row) = match recompute {
                true => {
                    k.resolve(soft, w_row, [scratch, scratch_x, kept_scratch], t, i);
                    (scratch, kept_scratch)
                }
                false => {
                    if soft.vjp_reads_x() {
                        k.scale_row(w_row, scratch_x, t, i);
                    }
                    let offset = k.b.ins().imul_imm_s(j, kept_bytes);
                    let offset = k.cast_pointer(offset);
                    (k.row_base(solution, j), k.b.ins().iadd(kept, offset))
                }
            };
            let rows = [scratch_x, s_row, g_row, grad_row, kept_row];
            k.translate_row_vjp(soft, rows, [t, t_scalar], i);
        });
        self.iconst(-1)
    }

    /// `scratch[0] = soft(w/T)` for one row (`scratch[1]` holds `x` where the kernel needs it,
    /// `scratch[2]` what it keeps); returns `row` from the function if `w/T` overflows.
    fn resolve(
        &mut self,
        soft: SoftKernel,
        w_row: Value,
        [out_row, x_row, kept]: [Value; 3],
        t: Value,
        row: Value,
    ) {
        let vars = [
            self.acc(0.0, Fold::Sum),
            self.acc(f64::NEG_INFINITY, Fold::Max),
        ];
        self.for_each_unit(None, &vars, &mut |k, idx, mask, _| {
            let w = k.load_unit(w_row, idx);
            let x = k.scaled(&w, t);
            k.soft_unit(soft, x, [out_row, x_row], idx, mask, vars);
        });
        // Nothing is recorded: the reference backend discards a re-solve's report.
        let null = self.b.ins().iconst(self.pointer, 0);
        self.finish_soft(soft, [out_row, x_row, null, kept], vars, row);
    }

    /// `x_row = w/T` for one row; returns `row` from the function if it overflows.
    fn scale_row(&mut self, w_row: Value, x_row: Value, t: Value, row: Value) {
        let finite = self.acc(0.0, Fold::Sum);
        self.for_each_unit(None, &[finite], &mut |k, idx, _, _| {
            let w = k.load_unit(w_row, idx);
            let x = k.scaled(&w, t);
            k.track_finite(finite, &x);
            k.store_unit(x_row, idx, &x);
        });
        self.fail_unless_finite(finite, row);
    }

    /// `grad = J_sᵀ g / T` for one row (`t` splatted, and as a scalar; `x = w/T` and what the
    /// solve kept, for the VJPs that read them); returns `row` from the function where the VJP
    /// is not finite.
    fn translate_row_vjp(
        &mut self,
        soft: SoftKernel,
        [x_row, s_row, g_row, grad_row, kept_row]: [Value; 5],
        [t, t_scalar]: [Value; 2],
        row: Value,
    ) {
        match soft {
            SoftKernel::Sigmoid => {
                // g·s·(1 − s), in the reference's order.
                let one = splat_f(self.b, self.p, 1.0);
                self.write_vjp([s_row, g_row, grad_row], t, &|b, s, g| {
                    let gs = b.ins().fmul(g, s);
                    let c = b.ins().fsub(one, s);
                    b.ins().fmul(gs, c)
                });
            }
            SoftKernel::Sparsemax => {
                // Σ g and |S| over the support S = {s > 0}, then (g − Σg/|S|) on S.
                let zero = splat_f(self.b, self.p, 0.0);
                let one = splat_f(self.b, self.p, 1.0);
                let sum = self.acc(0.0, Fold::Sum);
                let count = self.acc(0.0, Fold::Sum);
                self.for_each_unit(None, &[sum, count], &mut |k, idx, _, _| {
                    let (s, g) = (k.load_unit(s_row, idx), k.load_unit(g_row, idx));
                    for v in 0..s.len() {
                        let on = k.b.ins().fcmp(FloatCC::GreaterThan, s[v], zero);
                        let gv = select(k.b, k.p, on, g[v], zero);
                        let cv = select(k.b, k.p, on, one, zero);
                        k.add_to(sum, gv);
                        k.add_to(count, cv);
                    }
                });
                let (s_total, c_total) = (self.b.use_var(sum.var), self.b.use_var(count.var));
                let s_total = self.lane_sum(s_total);
                let c_total = self.lane_sum(c_total);
                // A row without support (never, for a solution of the simplex) gets zeros.
                let mean = self.b.ins().fdiv(s_total, c_total);
                let mean = self.splat_scalar(mean);
                let p = self.p;
                self.write_vjp([s_row, g_row, grad_row], t, &|b, s, g| {
                    let on = b.ins().fcmp(FloatCC::GreaterThan, s, zero);
                    let centred = b.ins().fsub(g, mean);
                    select(b, p, on, centred, zero)
                });
            }
            SoftKernel::Clip => {
                // g where 0 < s < 1, else 0.
                let (zero, one) = (splat_f(self.b, self.p, 0.0), splat_f(self.b, self.p, 1.0));
                let p = self.p;
                self.write_vjp([s_row, g_row, grad_row], t, &|b, s, g| {
                    let above = b.ins().fcmp(FloatCC::GreaterThan, s, zero);
                    let below = b.ins().fcmp(FloatCC::LessThan, s, one);
                    let inside = b.ins().band(above, below);
                    select(b, p, inside, g, zero)
                });
            }
            SoftKernel::Softmax => {
                let dot = self.acc(0.0, Fold::Sum);
                self.for_each_unit(None, &[dot], &mut |k, idx, _, _| {
                    let (s, g) = (k.load_unit(s_row, idx), k.load_unit(g_row, idx));
                    for v in 0..s.len() {
                        let p = k.b.ins().fmul(g[v], s[v]);
                        k.add_to(dot, p);
                    }
                });
                let d = self.b.use_var(dot.var);
                let d = self.lane_sum(d);
                let gz = self.splat_scalar(d);
                // s·(g − ⟨g, s⟩).
                self.write_vjp([s_row, g_row, grad_row], t, &|b, s, g| {
                    let c = b.ins().fsub(g, gz);
                    b.ins().fmul(s, c)
                });
            }
            SoftKernel::Threshold { .. }
            | SoftKernel::CappedSimplex { .. }
            | SoftKernel::Sinkhorn { .. }
            | SoftKernel::MatrixTree { .. }
            | SoftKernel::Esp { .. }
            | SoftKernel::ChainDp { .. } => {
                let kernel = self.b.ins().iconst(self.pointer, self.helpers.kernel);
                let vjp = self.helpers.vjp;
                let args = [kernel, x_row, s_row, g_row, grad_row, t_scalar, kept_row];
                let call = self.b.ins().call(vjp, &args);
                let failed = self.b.inst_results(call)[0];
                self.return_row_if(failed, row);
            }
        }
    }

    /// `grad = f(s, g) / T` over a row, unit by unit.
    fn write_vjp(
        &mut self,
        [s_row, g_row, grad_row]: [Value; 3],
        t: Value,
        f: &dyn Fn(&mut FunctionBuilder, Value, Value) -> Value,
    ) {
        self.for_each_unit(None, &[], &mut |k, idx, _, _| {
            let (s, g) = (k.load_unit(s_row, idx), k.load_unit(g_row, idx));
            let out: Vec<Value> = (0..s.len())
                .map(|v| {
                    let d = f(k.b, s[v], g[v]);
                    k.b.ins().fdiv(d, t)
                })
                .collect();
            k.store_unit(grad_row, idx, &out);
        });
    }
}
