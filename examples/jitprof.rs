use sst::{Mode, Options};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("soft");
    let m = sst::compile("layer l: categorical(1000) { temperature: 0.5 }").unwrap();
    let l = m.layer("l");
    let theta = ndarray::Array2::<f32>::from_shape_fn((1024, 1000), |(i, j)| {
        ((i * 31 + j * 17) % 97) as f32 / 25.0 - 2.0
    })
    .into_dyn();
    let cot = theta.mapv(|x| x * 0.5);
    let t0 = std::time::Instant::now();
    for s in 0..200u64 {
        let o = Options::default().seed(s).threads(1);
        match which {
            "hard" => {
                l.forward(theta.view(), &o.mode(Mode::Hard));
            }
            "none" => {
                l.forward(theta.view(), &o.mode(Mode::Hard).noise(sst::Noise::None));
            }
            "ref" => {
                l.forward(
                    theta.view(),
                    &o.mode(Mode::Hard).backend(sst::Backend::Reference),
                );
            }
            "fwd" => {
                l.forward(theta.view(), &o.mode(Mode::Soft));
            }
            _ => {
                let f = l.forward(theta.view(), &o.mode(Mode::Soft));
                l.backward(&f, cot.view());
            }
        }
    }
    eprintln!(
        "{which}: {:.3} ms/call",
        t0.elapsed().as_secs_f64() * 1e3 / 200.0
    );
}
