//! What the training examples share: arguments, reproducible data, a progress bar, Adam on
//! candle variables, and an SVG plot of the training curves.
#![allow(dead_code)] // each example uses part of it

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use sst::noise::{uniforms, NoiseKey};

/// `[STEPS] [--plot PATH] [--check]`: training steps, where the SVG goes (none when absent),
/// and whether to exit with an error when the example misses its stated target.
pub struct Args {
    pub steps: usize,
    pub plot: Option<String>,
    pub check: bool,
}

impl Args {
    pub fn parse(default_steps: usize) -> Args {
        let mut args = Args {
            steps: default_steps,
            plot: None,
            check: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--plot" => args.plot = Some(it.next().expect("--plot PATH")),
                "--check" => args.check = true,
                n => args.steps = n.parse().expect("STEPS, --plot PATH or --check"),
            }
        }
        args
    }
}

/// `n` uniforms in (0, 1) from `(seed, stream)`, the same on every machine.
pub fn uniform(seed: u64, stream: u32, n: usize) -> Vec<f32> {
    let key = NoiseKey {
        seed,
        sample: stream,
        batch: u32::MAX,
    };
    (0..n).map(|i| uniforms::<f32>(key, i as u64)[0]).collect()
}

/// A progress bar of `steps` steps that shows the last loss (hidden off a terminal).
pub fn progress(steps: usize) -> ProgressBar {
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("template");
    ProgressBar::new(steps as u64).with_style(style)
}

/// Adam (Kingma & Ba 2015) with `β = (0.9, 0.999)`, `ε = 1e-8`, on candle variables.
pub struct Adam {
    lr: f64,
    t: i32,
    moments: Vec<(Tensor, Tensor)>,
}

impl Adam {
    pub fn new(lr: f64) -> Adam {
        Adam {
            lr,
            t: 0,
            moments: Vec::new(),
        }
    }

    /// One step of every variable against its gradient in `grads`.
    pub fn step(&mut self, vars: &[&Var], grads: &GradStore) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (0.9f64, 0.999f64);
        for (k, var) in vars.iter().enumerate() {
            let g = grads
                .get(var.as_tensor())
                .expect("every variable has a gradient");
            if self.moments.len() <= k {
                self.moments.push((g.zeros_like()?, g.zeros_like()?));
            }
            let (m, v) = &mut self.moments[k];
            *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&*m / (1.0 - b1.powi(self.t)))?;
            let v_hat = (&*v / (1.0 - b2.powi(self.t)))?;
            let update = ((m_hat / (v_hat.sqrt()? + 1e-8)?)? * self.lr)?;
            var.set(&(var.as_tensor() - update)?)?;
        }
        Ok(())
    }
}

/// Writes an SVG of one or more curves over the training steps.
pub fn plot(path: &str, title: &str, y_label: &str, curves: &[(&str, &[f64])]) {
    let steps = curves.iter().map(|c| c.1.len()).max().unwrap_or(1).max(2);
    let values = curves.iter().flat_map(|c| c.1.iter().copied());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let pad = 0.05 * (hi - lo).max(1e-9);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).expect("draw");
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0..steps, (lo - pad)..(hi + pad))
        .expect("axes");
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_label)
        .draw()
        .expect("mesh");
    for (k, (name, ys)) in curves.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(ys.iter().copied().enumerate(), color))
            .expect("curve")
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .expect("legend");
    root.present().expect("write the SVG");
}
