//! `sst._sst`: sst's specs, layers and forward passes over numpy arrays.
//!
//! The Python package `sst` (python/sst/) re-exports these classes and adds `sst.torch` and
//! `sst.jax`. Arrays come in as numpy arrays of float32 or float64 (read in place, without a
//! copy, whatever their strides) and go out as numpy arrays over sst's own memory (no copy
//! either): `Forward.z` and `Forward.w` are read-only views that keep their forward pass
//! alive, and gradients are handed over to numpy. The interpreter's lock is released while a
//! kernel runs.

use std::path::PathBuf;

use ndarray::ArrayD;
use numpy::{Element, IntoPyArray, PyArray, PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::create_exception;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use sst::{BackendChoice, Mode, Noise, Options, Real};

create_exception!(
    sst,
    SpecError,
    PyValueError,
    "A spec that does not compile. The message holds every diagnostic: file:line:col, the \
     source line with a caret, and what would be valid there."
);
create_exception!(
    sst,
    RequestError,
    PyValueError,
    "A bad request to a layer, on one line: `layer `NAME`: FIELD: what is wrong`. The \
     attributes `layer` and `field` name the layer and the field."
);

/// A compiled spec: its layers by name, in declaration order.
#[pyclass(module = "sst", frozen)]
struct Spec {
    layers: Vec<Py<Layer>>,
    names: Vec<String>,
}

#[pymethods]
impl Spec {
    /// The layer called `name`; `KeyError` naming the declared layers otherwise.
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<Layer>> {
        match self.names.iter().position(|n| n == name) {
            Some(i) => Ok(self.layers[i].clone_ref(py)),
            None => Err(PyKeyError::new_err(format!(
                "no layer `{name}`; the spec declares: {}",
                self.names.join(", ")
            ))),
        }
    }

    fn __contains__(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    fn __len__(&self) -> usize {
        self.layers.len()
    }

    /// The layers' names, in declaration order.
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn __repr__(&self) -> String {
        format!("<sst.Spec with layers {}>", self.names.join(", "))
    }
}

/// One layer of a spec: `forward` samples `z` for `θ`, `backward` returns `∂L/∂θ`.
#[pyclass(module = "sst", frozen)]
struct Layer {
    layer: sst::Layer,
}

/// Which precision a request runs in.
enum Precision<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

/// A forward pass in the precision of its `θ`.
enum Pass {
    F32(sst::Forward<f32>),
    F64(sst::Forward<f64>),
}

#[pymethods]
impl Layer {
    #[getter]
    fn name(&self) -> &str {
        self.layer.name()
    }

    /// The shape of one `θ` (and one `z`); requests may add leading batch axes.
    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.layer.plan().support.shape()
    }

    /// `"hard"` or `"soft"`: what `forward` samples when `mode` is not given.
    #[getter]
    fn default_mode(&self) -> &'static str {
        self.layer.plan().estimator.default_mode().name()
    }

    /// The layer's plan, as `sst check --json` shows it (with its `"program"` and
    /// `"backend"`).
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let plan = self.layer.plan();
        let mut json = plan.to_json(None);
        json["program"] = plan.program_json();
        let (name, why) = self.layer.backend_name::<f32>();
        json["backend"] = serde_json::json!({ "name": name, "why_not_jit": why });
        py.import("json")?
            .call_method1("loads", (json.to_string(),))
    }

    /// Samples `z` for `θ` shaped `[B…, *shape]` (float32 or float64; other numbers are read
    /// as float64). `seed=None` draws a fresh seed (kept in `Forward.seed`); `noise=False`
    /// sets `w = θ`; `mode` is `"hard"`, `"soft"` or `None` (the estimator's);
    /// `temperature` overrides the schedule, which is evaluated at `step`; `samples > 1` (default
    /// 1) adds a leading samples axis; `threads` fixes the row split (the numbers do not change);
    /// `backend` is `"auto"`, `"jit"` or `"reference"`.
    #[pyo3(signature = (theta, *, seed=None, mode=None, temperature=None, step=0.0, samples=None, noise=true, threads=None, backend="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        py: Python<'_>,
        theta: &Bound<'_, PyAny>,
        seed: Option<&Bound<'_, PyAny>>,
        mode: Option<&str>,
        temperature: Option<f64>,
        step: f64,
        samples: Option<&Bound<'_, PyAny>>,
        noise: bool,
        threads: Option<&Bound<'_, PyAny>>,
        backend: &str,
    ) -> PyResult<Forward> {
        let seed = match seed {
            Some(seed) => self.whole(py, "seed", seed, "in [0, 2**64)")?,
            None => rand::random(),
        };
        let samples = match samples {
            Some(samples) => self.whole(py, "samples", samples, "≥ 1")?,
            None => 1,
        };
        let mut opts = Options::default()
            .seed(seed)
            .step(step)
            .samples(samples as usize);
        if !noise {
            opts = opts.noise(Noise::None);
        }
        if let Some(mode) = mode {
            opts = opts.mode(self.parse_mode(py, mode)?);
        }
        if let Some(t) = temperature {
            opts = opts.temperature(t);
        }
        if let Some(n) = threads {
            opts = opts.threads(self.whole(py, "threads", n, "≥ 1")? as usize);
        }
        opts = opts.backend(self.parse_backend(py, backend)?);
        let pass = match self.numbers(py, "theta", theta)? {
            Precision::F32(a) => {
                let theta = a.as_array();
                Pass::F32(self.run(py, || self.layer.try_forward(theta, &opts))?)
            }
            Precision::F64(a) => {
                let theta = a.as_array();
                Pass::F64(self.run(py, || self.layer.try_forward(theta, &opts))?)
            }
        };
        Ok(Forward { pass, seed })
    }

    /// `∂L/∂θ` for `L = ⟨cotangent, z⟩` by the layer's estimator and backward rule, one
    /// gradient per sample (shaped like `fwd.z`). The cotangent has `z`'s dtype and is shaped
    /// like `z` without the samples axis, or like `z` (one per sample).
    fn backward<'py>(
        &self,
        py: Python<'py>,
        fwd: &Forward,
        cotangent: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cotangent = self.numbers(py, "cotangent", cotangent)?;
        match (&fwd.pass, cotangent) {
            (Pass::F32(f), Precision::F32(c)) => {
                let c = c.as_array();
                let grad = self.run(py, || self.layer.try_backward(f, c))?;
                Ok(grad.into_pyarray(py).into_any())
            }
            (Pass::F64(f), Precision::F64(c)) => {
                let c = c.as_array();
                let grad = self.run(py, || self.layer.try_backward(f, c))?;
                Ok(grad.into_pyarray(py).into_any())
            }
            _ => {
                Err(self.request_error(py, "cotangent", format!("expected {} like z", fwd.dtype())))
            }
        }
    }

    /// The score-function (REINFORCE) gradient of a hard forward pass for the losses of its
    /// samples, shaped like `z` without the support's axes: `(f − b)·∇_θ log q(z|θ)` with the
    /// spec's baseline.
    fn reinforce<'py>(
        &self,
        py: Python<'py>,
        fwd: &Forward,
        losses: PyReadonlyArrayDyn<'py, f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let losses = losses.as_array();
        match &fwd.pass {
            Pass::F32(f) => {
                let grad = self.run(py, || self.layer.try_reinforce(f, losses))?;
                Ok(grad.into_pyarray(py).into_any())
            }
            Pass::F64(f) => {
                let grad = self.run(py, || self.layer.try_reinforce(f, losses))?;
                Ok(grad.into_pyarray(py).into_any())
            }
        }
    }

    /// The backend that runs this layer in `dtype` (`"float32"` or `"float64"`), and why not
    /// the JIT when it is `"reference"`.
    #[pyo3(signature = (dtype="float32"))]
    fn backend(&self, py: Python<'_>, dtype: &str) -> PyResult<(&'static str, Option<String>)> {
        match dtype {
            "float32" => Ok(self.layer.backend_name::<f32>()),
            "float64" => Ok(self.layer.backend_name::<f64>()),
            _ => Err(self.request_error(
                py,
                "dtype",
                format!("expected \"float32\" or \"float64\", found {dtype:?}"),
            )),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<sst.Layer {} theta {:?}>",
            self.layer.name(),
            self.layer.plan().support.shape()
        )
    }
}

impl Layer {
    /// Runs a kernel call with the interpreter's lock released; its error as a `RequestError`.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        call: impl Send + FnOnce() -> Result<T, sst::RequestError>,
    ) -> PyResult<T> {
        py.detach(call).map_err(|e| request_error(py, &e))
    }

    /// `a` as float32 or float64 numbers, read in place; other arrays (and lists, integers)
    /// converted to float64.
    fn numbers<'py>(
        &self,
        py: Python<'py>,
        field: &'static str,
        a: &Bound<'py, PyAny>,
    ) -> PyResult<Precision<'py>> {
        if let Ok(a) = a.extract::<PyReadonlyArrayDyn<'py, f32>>() {
            return Ok(Precision::F32(a));
        }
        if let Ok(a) = a.extract::<PyReadonlyArrayDyn<'py, f64>>() {
            return Ok(Precision::F64(a));
        }
        let numpy = py.import("numpy")?;
        let converted = numpy
            .call_method1("asarray", (a, numpy.getattr("float64")?))
            .map_err(|e| {
                self.request_error(
                    py,
                    field,
                    format!("expected an array of real numbers ({e})"),
                )
            })?;
        Ok(Precision::F64(converted.extract()?))
    }

    /// A Python int that fits in 64 unsigned bits, else a request error on `field` saying what
    /// is `valid`.
    fn whole(
        &self,
        py: Python<'_>,
        field: &'static str,
        x: &Bound<'_, PyAny>,
        valid: &str,
    ) -> PyResult<u64> {
        x.extract::<u64>().map_err(|_| {
            let shown = x.repr().map(|r| r.to_string()).unwrap_or_default();
            self.request_error(
                py,
                field,
                format!("expected an integer {valid}, found {shown}"),
            )
        })
    }

    fn parse_mode(&self, py: Python<'_>, mode: &str) -> PyResult<Mode> {
        match mode {
            "hard" => Ok(Mode::Hard),
            "soft" => Ok(Mode::Soft),
            _ => Err(self.request_error(
                py,
                "mode",
                format!("expected \"hard\", \"soft\" or None, found {mode:?}"),
            )),
        }
    }

    fn parse_backend(&self, py: Python<'_>, name: &str) -> PyResult<BackendChoice> {
        BackendChoice::from_name(name).ok_or_else(|| {
            self.request_error(
                py,
                "backend",
                format!(
                    "expected one of {}, found {name:?}",
                    BackendChoice::NAMES.join(", ")
                ),
            )
        })
    }

    fn request_error(&self, py: Python<'_>, field: &'static str, message: String) -> PyErr {
        let e = sst::RequestError {
            layer: self.layer.name().to_string(),
            field,
            message,
        };
        request_error(py, &e)
    }
}

/// sst's request error as `sst.RequestError`, with `layer` and `field` attributes.
fn request_error(py: Python<'_>, e: &sst::RequestError) -> PyErr {
    let err = RequestError::new_err(e.to_string());
    let value = err.value(py);
    // Setting two string attributes on a fresh exception cannot fail.
    let _ = value.setattr("layer", &e.layer);
    let _ = value.setattr("field", e.field);
    err
}

/// A forward pass: its output `z`, perturbed scores `w`, mode, temperature, seed and report;
/// `Layer.backward` takes it back. `numpy.asarray(fwd)` is `fwd.z`.
#[pyclass(module = "sst", frozen)]
struct Forward {
    pass: Pass,
    seed: u64,
}

#[pymethods]
impl Forward {
    /// The output, `[N?, B…, *shape]` (a samples axis when several were asked for); a
    /// read-only view of the forward pass's memory.
    #[getter]
    fn z<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::view(slf, false, |p| match p {
            Pass::F32(f) => Array::F32(&f.z),
            Pass::F64(f) => Array::F64(&f.z),
        })
    }

    /// The perturbed scores that were used (read-only, like `z`).
    #[getter]
    fn w<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::view(slf, false, |p| match p {
            Pass::F32(f) => Array::F32(&f.w),
            Pass::F64(f) => Array::F64(&f.w),
        })
    }

    /// `z` as a writable view, for the torch wrapper, whose autograd version counter refuses a
    /// backward pass after `z` was written into.
    fn _shared_z<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::view(slf, true, |p| match p {
            Pass::F32(f) => Array::F32(&f.z),
            Pass::F64(f) => Array::F64(&f.z),
        })
    }

    #[getter]
    fn mode(&self) -> &'static str {
        match &self.pass {
            Pass::F32(f) => f.mode.name(),
            Pass::F64(f) => f.mode.name(),
        }
    }

    /// The temperature used.
    #[getter]
    fn temperature(&self) -> f64 {
        match &self.pass {
            Pass::F32(f) => f.temperature,
            Pass::F64(f) => f.temperature,
        }
    }

    /// The noise seed used (pass it back as `seed=` to draw the same sample).
    #[getter]
    fn seed(&self) -> u64 {
        self.seed
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        match &self.pass {
            Pass::F32(_) => "float32",
            Pass::F64(_) => "float64",
        }
    }

    /// What the solvers reported: `{"values": {...}, "warnings": [...]}`.
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = match &self.pass {
            Pass::F32(f) => &f.report,
            Pass::F64(f) => &f.report,
        };
        let values = PyDict::new(py);
        for (k, v) in &report.values {
            values.set_item(k, v)?;
        }
        let out = PyDict::new(py);
        out.set_item("values", values)?;
        out.set_item("warnings", PyList::new(py, &report.warnings)?)?;
        Ok(out)
    }

    #[pyo3(signature = (dtype=None, copy=None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let z = Self::z(slf)?;
        match (dtype, copy) {
            (None, None | Some(false)) => Ok(z),
            _ => z.call_method1(
                "astype",
                (dtype.map_or(z.getattr("dtype")?, |d| d.clone()),),
            ),
        }
    }

    fn __repr__(&self) -> String {
        let shape = match &self.pass {
            Pass::F32(f) => f.z.shape().to_vec(),
            Pass::F64(f) => f.z.shape().to_vec(),
        };
        format!(
            "<sst.Forward {} z {shape:?} {} T={} seed={}>",
            self.mode(),
            self.dtype(),
            self.temperature(),
            self.seed
        )
    }
}

/// An array of a forward pass in its precision.
enum Array<'a> {
    F32(&'a ArrayD<f32>),
    F64(&'a ArrayD<f64>),
}

impl Forward {
    /// A numpy view of one of `slf`'s arrays, keeping `slf` alive; read-only unless `writable`.
    fn view<'py>(
        slf: &Bound<'py, Self>,
        writable: bool,
        pick: impl Fn(&Pass) -> Array<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let owner = slf.clone().into_any();
        let view = match pick(&slf.get().pass) {
            Array::F32(a) => borrow(a, owner),
            Array::F64(a) => borrow(a, owner),
        };
        if !writable {
            let kwargs = PyDict::new(slf.py());
            kwargs.set_item("write", false)?;
            view.call_method("setflags", (), Some(&kwargs))?;
        }
        Ok(view)
    }
}

/// A numpy array over `a`'s memory, owned by `owner`.
fn borrow<'py, F: Real + Element>(a: &ArrayD<F>, owner: Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    // SAFETY: `a` is an array of a `Forward` held by `owner`, a frozen Python object: the
    // forward pass is never mutated or dropped while `owner` lives, and its arrays' heap
    // memory never moves. The numpy array keeps `owner` alive for as long as it exists.
    let view: Bound<'py, PyArrayDyn<F>> = unsafe { PyArray::borrow_from_array(a, owner) };
    view.into_any()
}

/// Compiles a spec held in a string (diagnostics name it `<spec>`).
#[pyfunction]
fn compile_text(py: Python<'_>, source: &str) -> PyResult<Spec> {
    spec(py, sst::compile(source))
}

/// Reads and compiles a spec file.
#[pyfunction]
fn compile_file(py: Python<'_>, path: PathBuf) -> PyResult<Spec> {
    spec(py, sst::compile_file(path))
}

fn spec(py: Python<'_>, module: Result<sst::Module, sst::Error>) -> PyResult<Spec> {
    let module = module.map_err(|e| match e {
        sst::Error::Compile(e) => SpecError::new_err(e.to_string()),
        sst::Error::Io { .. } => pyo3::exceptions::PyOSError::new_err(e.to_string()),
        other => PyValueError::new_err(other.to_string()),
    })?;
    let layers = module
        .layers()
        .iter()
        .map(|l| Py::new(py, Layer { layer: l.clone() }))
        .collect::<PyResult<Vec<_>>>()?;
    let names = module
        .layers()
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    Ok(Spec { layers, names })
}

/// Every registered support, as the generic tests see it: `name`, `summary`, `example` (spec
/// syntax), `instance` (a moderate instance in spec syntax) and its relaxations `solvers`, each
/// `{"regularizer", "solver", "params", "rules"}` (the solver's own argument names and its
/// native backward rules, the default first).
#[pyfunction]
fn supports(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    for entry in sst::support::REGISTRY {
        let instance = (entry.gradient_instance)(0);
        let solvers = PyList::empty(py);
        for s in instance.soft_solvers() {
            let d = PyDict::new(py);
            d.set_item("regularizer", s.regularizer.name())?;
            d.set_item("solver", s.name)?;
            d.set_item(
                "params",
                s.params.iter().map(|p| p.name).collect::<Vec<_>>(),
            )?;
            d.set_item(
                "rules",
                s.rules.iter().map(|r| r.name()).collect::<Vec<_>>(),
            )?;
            solvers.append(d)?;
        }
        let d = PyDict::new(py);
        d.set_item("name", entry.name)?;
        d.set_item("summary", entry.summary)?;
        d.set_item("example", entry.example)?;
        d.set_item("instance", instance.describe())?;
        d.set_item("solvers", solvers)?;
        out.append(d)?;
    }
    Ok(out)
}

#[pymodule]
fn _sst(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compile_text, m)?)?;
    m.add_function(wrap_pyfunction!(compile_file, m)?)?;
    m.add_function(wrap_pyfunction!(supports, m)?)?;
    m.add_class::<Spec>()?;
    m.add_class::<Layer>()?;
    m.add_class::<Forward>()?;
    m.add("SpecError", m.py().get_type::<SpecError>())?;
    m.add("RequestError", m.py().get_type::<RequestError>())?;
    Ok(())
}
