//! The hub path without the network: converting what candle-datasets returns (tensors the test
//! makes), finding the hub's address, and failing fast when it is unreachable.

use std::path::Path;
use std::time::{Duration, Instant};

use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::DataShape;
use vae_data::hub::{endpoint, from_tensors, reachable, split_from_tensors};

/// `n` MNIST-like images as candle-datasets gives them: (n, 784) f32 = u8 / 255.
fn images(n: usize) -> anyhow::Result<(Vec<u8>, Tensor)> {
    let px: Vec<u8> = (0..n * 784).map(|i| (i * 7 % 256) as u8).collect();
    let t = Tensor::from_vec(px.clone(), (n, 784), &Device::Cpu)?.to_dtype(DType::F32)? / 255.0;
    Ok((px, t?))
}

fn labels(v: &[u8]) -> anyhow::Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu)?)
}

#[test]
fn hub_tensors_become_a_dataset_with_the_same_pixels() -> anyhow::Result<()> {
    let (px, train) = images(5)?;
    let (_, test) = images(2)?;
    let s = from_tensors(
        "mnist",
        &train,
        &labels(&[0, 1, 2, 3, 9])?,
        &test,
        &labels(&[4, 5])?,
        10,
    )?;
    assert_eq!((s.train.len(), s.test.len()), (5, 2));
    assert_eq!(s.train.shape, DataShape::image(1, 28, 28));
    assert_eq!(s.train.gather_labels(&[4]), Some(vec![9]));
    let mut x = Vec::new();
    s.train.gather(&[3], &mut x);
    // The round trip u8 -> f32 / 255 -> u8 is exact: the batch holds the original bytes.
    let back: Vec<u8> = x.iter().map(|&v| (v * 255.0).round() as u8).collect();
    assert_eq!(back, &px[3 * 784..4 * 784]);
    // CIFAR's shape (n, 3, 32, 32) is taken as channel-major 3x32x32.
    let c = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    let s = from_tensors("cifar10", &c, &labels(&[0, 1])?, &c, &labels(&[2, 3])?, 10)?;
    assert_eq!(s.test.shape, DataShape::image(3, 32, 32));
    Ok(())
}

#[test]
fn bad_hub_tensors_are_refused() -> anyhow::Result<()> {
    let what = Path::new("<hub test>/train");
    let shape = DataShape::image(1, 28, 28);
    let (_, x) = images(3)?;
    let check = |r: vae_data::Result<vae_data::Dataset>, part: &str| {
        let err = r.expect_err("accepted").to_string();
        assert!(err.contains("<hub test>/train"), "{err}");
        assert!(err.contains(part), "error lacks `{part}`: {err}");
    };
    check(
        split_from_tensors(&x, &labels(&[0, 1])?, shape, 10, what),
        "labels of shape [2] for 3 images",
    );
    check(
        split_from_tensors(&x, &labels(&[0, 1, 10])?, shape, 10, what),
        "label 10 at index 2",
    );
    let wrong = Tensor::zeros((3, 100), DType::F32, &Device::Cpu)?;
    check(
        split_from_tensors(&wrong, &labels(&[0, 1, 2])?, shape, 10, what),
        "do not hold 3 examples of 1x28x28",
    );
    let mut v = vec![0.5f32; 2 * 784];
    v[800] = f32::NAN;
    let nan = Tensor::from_vec(v, (2, 784), &Device::Cpu)?;
    check(
        split_from_tensors(&nan, &labels(&[0, 1])?, shape, 10, what),
        "pixel 16 of image 1 is NaN",
    );
    let big = (Tensor::ones((1, 784), DType::F32, &Device::Cpu)? * 2.0)?;
    check(
        split_from_tensors(&big, &labels(&[0])?, shape, 10, what),
        "outside [0, 1]",
    );
    let none = Tensor::zeros((0, 784), DType::F32, &Device::Cpu)?;
    check(
        split_from_tensors(&none, &labels(&[])?, shape, 10, what),
        "zero images",
    );
    Ok(())
}

#[test]
fn an_unreachable_hub_fails_fast_and_the_endpoint_is_read_from_the_environment(
) -> anyhow::Result<()> {
    // A loopback port that was just free: connecting to it is refused at once. No traffic
    // leaves the machine.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let start = Instant::now();
    let r = reachable("127.0.0.1", port, Duration::from_secs(5));
    assert!(r.is_err(), "a closed port answered");
    assert!(start.elapsed() < Duration::from_secs(5));
    // A listener that accepts: reachable.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let open = l.local_addr()?.port();
    assert_eq!(reachable("127.0.0.1", open, Duration::from_secs(5)), Ok(()));

    // The environment is read only by this test in this file.
    for (url, want) in [
        ("http://127.0.0.1:8080/mirror", ("127.0.0.1", 8080)),
        ("https://hub.example", ("hub.example", 443)),
        ("http://[::1]:9000", ("::1", 9000)),
        ("http://localhost", ("localhost", 80)),
    ] {
        std::env::set_var("HF_ENDPOINT", url);
        let (host, port) = endpoint();
        assert_eq!((host.as_str(), port), want, "{url}");
    }
    std::env::remove_var("HF_ENDPOINT");
    assert_eq!(endpoint(), ("huggingface.co".to_string(), 443));
    Ok(())
}
