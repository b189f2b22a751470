//! `sst eval FILE [--layer NAME]`: one JSON request on stdin, one JSON response on stdout
//! (the contract of DESIGN.md §5).

use std::io::{BufRead, Read, Write};
use std::path::Path;

use ndarray::ArrayD;
use serde::Serialize;
use serde_json::{json, Map, Value as Json};

use super::json::{kind, nested_array, parse_strict, Nested, Ragged};
use super::{load, CliError};
use sst::backend::Choice;
use sst::{Layer, Mode, Noise, Options, Real, RequestError};

/// The request fields, in the order of the contract.
const FIELDS: &[&str] = &[
    "theta",
    "dtype",
    "mode",
    "noise",
    "with_w",
    "temperature",
    "step",
    "samples",
    "cotangent",
];

pub fn run(
    file: &Path,
    layer: Option<&str>,
    serve: bool,
    backend: Choice,
) -> Result<String, CliError> {
    let module = load(file)?;
    let layer = match layer {
        Some(name) => module
            .try_layer(name)
            .map_err(|e| CliError::Usage(e.to_string()))?,
        None => match module.layers() {
            [only] => only,
            [] => {
                return Err(CliError::Usage(format!(
                    "{} declares no layer",
                    file.display()
                )))
            }
            layers => {
                let names: Vec<&str> = layers.iter().map(Layer::name).collect();
                return Err(CliError::Usage(format!(
                    "{} declares {} layers ({}); choose one with --layer NAME",
                    file.display(),
                    layers.len(),
                    names.join(", ")
                )));
            }
        },
    };
    if backend == Choice::Cuda {
        sst::backend::cuda_device()
            .map_err(|why| CliError::Usage(format!("--backend cuda: {why}")))?;
    }
    if serve {
        return serve_lines(layer, backend);
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| CliError::Request(format!("cannot read stdin: {e}")))?;
    answer(layer, &input, backend).map_err(|(_, message)| CliError::Request(message))
}

/// `--serve`: one request per line of stdin, one response per line of stdout, flushed after
/// each; a bad request answers `{"error": {"field": …, "message": …}}` on its line and the
/// process goes on (the layer, and the running baseline of `reinforce(baseline = ema)`, are
/// kept across requests). Blank lines are skipped; the process ends at the end of its input.
fn serve_lines(layer: &Layer, backend: Choice) -> Result<String, CliError> {
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let reply = match line {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => answer(layer, &line, backend),
            Err(e) => Err(("request", format!("cannot read stdin: {e}"))),
        };
        let reply = reply.unwrap_or_else(|(field, message)| {
            let error = json!({"error": {"field": field, "message": message}});
            format!("{error}\n")
        });
        // A reader that went away ends the session.
        if out
            .write_all(reply.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(String::new())
}

/// The response to one request (a line of JSON text) on `backend`, or what is wrong with it:
/// the field and a one-line message.
fn answer(layer: &Layer, input: &str, backend: Choice) -> Result<String, (&'static str, String)> {
    let mut request = Request::parse(input).map_err(|e| (e.0, e.to_string()))?;
    request.options.backend = backend;
    let result = match request.dtype {
        Dtype::F64 => respond::<f64>(layer, &request),
        Dtype::F32 => respond::<f32>(layer, &request),
    };
    result.map_err(|e| (e.field, e.to_string()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F64,
    F32,
}

/// A parsed request.
struct Request {
    theta: ArrayD<f64>,
    dtype: Dtype,
    options: Options,
    with_w: bool,
    cotangent: Option<ArrayD<f64>>,
}

/// A request field that is wrong: `field: message`.
struct FieldError(&'static str, String);

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

impl Request {
    fn parse(input: &str) -> Result<Request, FieldError> {
        let value = parse_strict(input)
            .map_err(|e| FieldError("request", format!("malformed JSON: {e}")))?;
        let Json::Object(fields) = value else {
            return Err(FieldError(
                "request",
                format!("expected a JSON object, found {}", kind(&value)),
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(FieldError(
                "request",
                format!(
                    "unknown field `{unknown}`; expected one of: {}",
                    FIELDS.join(", ")
                ),
            ));
        }
        let theta = fields
            .get("theta")
            .ok_or_else(|| FieldError("theta", "missing (a nested array of numbers)".into()))?;
        let theta = nested_array(theta).map_err(|e| FieldError("theta", e))?;
        let cotangent = fields
            .get("cotangent")
            .map(|c| nested_array(c).map_err(|e| FieldError("cotangent", e)))
            .transpose()?;
        let dtype = match fields.get("dtype") {
            None => Dtype::F64,
            Some(v) => match v.as_str() {
                Some("f64") => Dtype::F64,
                Some("f32") => Dtype::F32,
                _ => {
                    return Err(FieldError(
                        "dtype",
                        format!("expected \"f64\" or \"f32\", found {v}"),
                    ))
                }
            },
        };
        let mode = match fields.get("mode") {
            None => None,
            Some(v) => match v.as_str() {
                Some("hard") => Some(Mode::Hard),
                Some("soft") => Some(Mode::Soft),
                _ => {
                    return Err(FieldError(
                        "mode",
                        format!("expected \"hard\" or \"soft\", found {v}"),
                    ))
                }
            },
        };
        let options = Options {
            mode,
            noise: parse_noise(fields.get("noise"))?,
            temperature: fields
                .get("temperature")
                .map(|v| number(v, "temperature"))
                .transpose()?,
            step: fields
                .get("step")
                .map(|v| integer(v, "step"))
                .transpose()?
                .unwrap_or(0) as f64,
            samples: fields
                .get("samples")
                .map(|v| integer(v, "samples"))
                .transpose()?
                .unwrap_or(1) as usize,
            ..Options::default()
        };
        if options.samples == 0 {
            return Err(FieldError("samples", "must be at least 1".into()));
        }
        let with_w = match fields.get("with_w") {
            None => false,
            Some(Json::Bool(b)) => *b,
            Some(v) => {
                return Err(FieldError(
                    "with_w",
                    format!("expected true or false, found {v}"),
                ))
            }
        };
        Ok(Request {
            theta,
            dtype,
            options,
            with_w,
            cotangent,
        })
    }
}

fn parse_noise(value: Option<&Json>) -> Result<Noise, FieldError> {
    let fail = |v: &Json| {
        FieldError(
            "noise",
            format!("expected \"none\" or {{\"seed\": <u64>}}, found {v}"),
        )
    };
    match value {
        None => Ok(Noise::Seed(0)),
        Some(Json::String(s)) if s == "none" => Ok(Noise::None),
        Some(v @ Json::Object(map)) => match (map.len(), map.get("seed").and_then(Json::as_u64)) {
            (1, Some(seed)) => Ok(Noise::Seed(seed)),
            _ => Err(fail(v)),
        },
        Some(v) => Err(fail(v)),
    }
}

fn number(value: &Json, field: &'static str) -> Result<f64, FieldError> {
    value
        .as_f64()
        .ok_or_else(|| FieldError(field, format!("expected a number, found {value}")))
}

fn integer(value: &Json, field: &'static str) -> Result<u64, FieldError> {
    value.as_u64().ok_or_else(|| {
        FieldError(
            field,
            format!("expected a non-negative integer, found {value}"),
        )
    })
}

#[derive(Serialize)]
struct Response<'a, F: Real> {
    z: Nested<'a, F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grad_theta: Option<Nested<'a, F>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<Ragged<'a, F>>,
    plan: Json,
    diagnostics: Json,
    warnings: &'a [String],
}

/// Runs the request in precision `F` and writes the response.
fn respond<F: Real>(layer: &Layer, request: &Request) -> Result<String, RequestError> {
    let error = |field, message: String| RequestError {
        layer: layer.name().to_string(),
        field,
        message,
    };
    let theta = to_precision::<F>(&request.theta).map_err(|m| error("theta", m))?;
    // `z` and the gradient are shaped like θ (with the samples axis): refused before running.
    let outputs = 1 + usize::from(request.cotangent.is_some());
    let numbers = request.options.samples as u128 * theta.len() as u128 * outputs as u128;
    check_text_size(numbers, &request.options).map_err(|(f, m)| error(f, m))?;
    let fwd = layer.try_forward(theta.view(), &request.options)?;
    if request.with_w {
        // `w`'s length is known only now (counts' rows hold K + 1 numbers).
        let numbers = numbers + fwd.w.len() as u128;
        check_text_size(numbers, &request.options).map_err(|(f, m)| error(f, m))?;
    }
    let grad = match &request.cotangent {
        Some(c) => {
            // `sst eval`'s contract: one cotangent for every sample (the library also takes one
            // per sample, as a tape brings them).
            if c.shape() != fwd.cotangent_shape.as_slice() {
                return Err(error(
                    "cotangent",
                    format!(
                        "expected shape {:?} (like z, without the samples axis), found {:?}",
                        fwd.cotangent_shape,
                        c.shape()
                    ),
                ));
            }
            let c = to_precision::<F>(c).map_err(|m| error("cotangent", m))?;
            Some(layer.try_backward(&fwd, c.view())?)
        }
        None => None,
    };
    for (field, array) in [
        ("z", Some(&fwd.z)),
        ("grad_theta", grad.as_ref()),
        ("w", Some(&fwd.w)),
    ] {
        // `−∞` in `w` pads rows truncated at a smaller `K` (dropped in the response).
        let wrong = |x: &&F| !(x.is_finite() || (field == "w" && **x == F::neg_infinity()));
        if let Some(bad) = array.and_then(|a| a.iter().find(wrong)) {
            return Err(error(
                field,
                format!("the result holds {bad}; this is a bug in a solver, please report it"),
            ));
        }
    }
    if let Some((key, value)) = fwd.report.values.iter().find(|(_, v)| !v.is_finite()) {
        return Err(error(
            "diagnostics",
            format!("{key} is {value}; this is a bug in a solver, please report it"),
        ));
    }
    let mut diagnostics = Map::new();
    diagnostics.insert("mode".into(), json!(fwd.mode.name()));
    diagnostics.insert("dtype".into(), json!(F::NAME));
    diagnostics.insert("samples".into(), json!(request.options.samples));
    for (key, &value) in &fwd.report.values {
        diagnostics.insert((*key).into(), json_number(value));
    }
    let response = Response {
        z: Nested(fwd.z.view()),
        grad_theta: grad.as_ref().map(|g| Nested(g.view())),
        w: request.with_w.then(|| Ragged(fwd.w.view())),
        plan: plan_for_request(layer, &request.options, fwd.temperature),
        diagnostics: Json::Object(diagnostics),
        warnings: &fwd.report.warnings,
    };
    let mut out = serde_json::to_string(&response).expect("numbers are finite");
    out.push('\n');
    Ok(out)
}

/// A diagnostic as JSON: whole numbers (counts, iterations, `K`) as integers.
fn json_number(x: f64) -> Json {
    if x.fract() == 0.0 && x.abs() < 2f64.powi(53) {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// The most bytes of JSON text a response may take: 1 GiB.
pub const TEXT_BUDGET: u128 = 1 << 30;
/// The longest a number is written in JSON (`-1.2345678901234567e-300,`).
const BYTES_PER_NUMBER: u128 = 25;

/// Refuses up front a response of `numbers` numbers whose text may exceed [`TEXT_BUDGET`].
fn check_text_size(numbers: u128, options: &Options) -> Result<(), (&'static str, String)> {
    if numbers * BYTES_PER_NUMBER <= TEXT_BUDGET {
        return Ok(());
    }
    let field = if options.samples > 1 {
        "samples"
    } else {
        "theta"
    };
    Err((
        field,
        format!(
            "the response would hold {numbers} numbers, more than {} GiB of JSON text \
             ({} numbers); split the request",
            TEXT_BUDGET >> 30,
            TEXT_BUDGET / BYTES_PER_NUMBER
        ),
    ))
}

/// The layer's plan object with the temperature this request used (and why).
fn plan_for_request(layer: &Layer, options: &Options, temperature: f64) -> Json {
    let mut plan = layer.plan().to_json(Some(temperature));
    let why = match (options.temperature, options.step) {
        (Some(_), _) => Some("set by the request".to_string()),
        (None, step) if step != 0.0 => Some(format!("the spec's schedule at step {step}")),
        _ => None,
    };
    if let (Some(why), Some(reasons)) = (why, plan.get_mut("reasons")) {
        reasons["temperature"] = json!(why);
    }
    plan
}

/// The array in precision `F`; a value that overflows it is an error.
fn to_precision<F: Real>(a: &ArrayD<f64>) -> Result<ArrayD<F>, String> {
    match a.iter().find(|&&x| !F::of(x).is_finite()) {
        Some(x) => Err(format!("{x} does not fit in {}", F::NAME)),
        None => Ok(a.mapv(F::of)),
    }
}
