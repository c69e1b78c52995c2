//! Forward speed of the exact passes (`Kernels::Exact`) against the normal fused ones, for
//! the mlp (784-400-20) and conv presets: encoder then decoder, one image at a time and in
//! batches of 256, on the calling thread.
//!
//! `cargo run -p vae-core --example exact_speed`

use std::time::Instant;

use candle_core::{Device, Tensor};
use vae_core::ops::Kernels;
use vae_core::{DataShape, Preset, Rng, Vae};

fn images_per_second(model: &Vae, x: &Tensor, batch: usize, reps: usize) -> f64 {
    let n = x.dim(0).expect("rows");
    let run = || {
        for s in (0..n).step_by(batch) {
            let xs = x.narrow(0, s, batch.min(n - s)).expect("narrow");
            let q = model.encode(&xs, None).expect("encode");
            model.decode(&q.mu, None).expect("decode");
        }
    };
    run();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    n as f64 / best
}

fn main() {
    vae_core::device::configure_process();
    let dev = Device::Cpu;
    for preset in [Preset::PytorchExample, Preset::Conv] {
        let cfg = preset.model(DataShape::image(1, 28, 28));
        let (_vars, model) = Vae::init(&cfg, &dev, &mut Rng::new(1)).expect("init");
        let n = 512;
        let x = Tensor::from_vec(
            Rng::new(2)
                .normal_vec(n * 784)
                .iter()
                .map(|v| v.abs().min(1.0))
                .collect::<Vec<f32>>(),
            (n, 784),
            &dev,
        )
        .expect("tensor");
        let exact_model = model.with_kernels(Kernels::exact()).expect("exact");
        for batch in [1, 256] {
            let normal = images_per_second(&model, &x, batch, 3);
            let exact = images_per_second(&exact_model, &x, batch, 3);
            println!(
                "{:16} batch {batch:3}: exact {exact:7.0} images/s, normal {normal:7.0} images/s (encoder + decoder, 1 thread)",
                preset.name()
            );
        }
    }
}
