//! The candle DINOv2 backbone reproduces onnxruntime's output of the reference graph, and
//! can be trained: every parameter receives a gradient.

mod common;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use whaleid::models::{Dinov2, Dinov2Config, Kernels};

/// Cosine similarity of each token: [B, T, D] x [B, T, D] -> [B, T].
fn token_cosines(a: &Tensor, b: &Tensor) -> Vec<Vec<f32>> {
    let dot = (a * b).unwrap().sum(D::Minus1).unwrap();
    let norms = (a.sqr().unwrap().sum(D::Minus1).unwrap().sqrt().unwrap()
        * b.sqr().unwrap().sum(D::Minus1).unwrap().sqrt().unwrap())
    .unwrap();
    (dot / norms).unwrap().to_vec2().unwrap()
}

fn min_cosine(model: &Dinov2, input: &Tensor, reference: &Tensor) -> (f32, (usize, usize)) {
    let tokens = model.forward(input).unwrap();
    assert_eq!(tokens.dims(), reference.dims());
    let cosines = token_cosines(&tokens, reference);
    let mut worst = (f32::INFINITY, (0, 0));
    for (image, row) in cosines.iter().enumerate() {
        for (token, &c) in row.iter().enumerate() {
            if c.is_nan() || c < worst.0 {
                worst = (c, (image, token));
            }
        }
    }
    worst
}

#[test]
fn backbone_reproduces_the_onnxruntime_reference_tokens() {
    let Some(weights) = common::real_weights() else { return };
    let Some(fixture) = common::shared_file("fixtures/dinov2_vits14_224_reference.safetensors") else { return };
    let device = Device::Cpu;
    let reference = candle_core::safetensors::load(&fixture, &device).unwrap();
    let input = &reference["input"];
    let expected = &reference["tokens"];
    assert_eq!(input.dims(), [4, 3, 224, 224]);
    assert_eq!(expected.dims(), [4, 257, 384]);

    let mut model = Dinov2::load(&weights, &device).unwrap();
    assert_eq!(model.kernels(), Kernels::Fused);
    let (fused_min, fused_at) = min_cosine(&model, input, expected);
    model.set_kernels(Kernels::Differentiable);
    let (diff_min, diff_at) = min_cosine(&model, input, expected);
    eprintln!(
        "min token cosine vs onnxruntime: fused {fused_min:.7} (image {}, token {}), \
         differentiable {diff_min:.7} (image {}, token {})",
        fused_at.0, fused_at.1, diff_at.0, diff_at.1
    );
    assert!(fused_min >= 0.9999, "fused kernels: min cosine {fused_min} at {fused_at:?}");
    assert!(diff_min >= 0.9999, "differentiable kernels: min cosine {diff_min} at {diff_at:?}");
}

#[test]
fn a_tiny_random_backbone_takes_any_batch_and_non_square_inputs() {
    fn shareable_between_threads<T: Send + Sync>() {}
    shareable_between_threads::<Dinov2>();

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = Dinov2::new(&Dinov2Config::tiny(), vb).unwrap();
    for batch in [1, 3] {
        let images = Tensor::randn(0f32, 1.0, (batch, 3, 28, 42), &device).unwrap();
        let tokens = model.forward(&images).unwrap();
        // 28x42 px = 2x3 patches of 14 px, plus CLS.
        assert_eq!(tokens.dims(), [batch, 1 + 6, 32]);
    }

    // Batch items are independent: image 0 alone equals image 0 within a batch.
    let images = Tensor::randn(0f32, 1.0, (3, 3, 28, 42), &device).unwrap();
    let together = model.forward(&images).unwrap().get(0).unwrap();
    let alone = model.forward(&images.narrow(0, 0, 1).unwrap()).unwrap().get(0).unwrap();
    let diff = (together - alone).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);

    // Fused and differentiable kernels compute the same function.
    let differentiable = model.forward(&images).unwrap();
    let model = model.with_kernels(Kernels::Fused);
    let fused = model.forward(&images).unwrap();
    let diff = (fused - differentiable).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);

    // Inputs that are not a multiple of the patch size are refused, not truncated.
    let odd = Tensor::zeros((1, 3, 30, 42), DType::F32, &device).unwrap();
    assert!(model.forward(&odd).is_err());
}

#[test]
fn training_the_backbone_gives_every_parameter_a_gradient() {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let config = Dinov2Config::tiny();
    let model = Dinov2::new(&config, vb).unwrap();
    assert_eq!(model.kernels(), Kernels::Differentiable);

    let images = Tensor::randn(0f32, 1.0, (3, 3, 28, 42), &device).unwrap();
    let tokens = model.forward(&images).unwrap();
    // A plain sum would be blind to the final LayerNorm (normalised rows sum to zero
    // before the affine part); weight the tokens randomly instead.
    let probe = Tensor::randn(0f32, 1.0, tokens.dims(), &device).unwrap();
    let loss = (tokens * probe).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();

    let vars = varmap.data().lock().unwrap();
    assert_eq!(vars.len(), config.tensor_shapes().len());
    let mut without_gradient = Vec::new();
    for (name, var) in vars.iter() {
        let magnitude = grads
            .get(var.as_tensor())
            .map(|g| g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap())
            .unwrap_or(0.0);
        if magnitude == 0.0 || !magnitude.is_finite() {
            without_gradient.push(name.clone());
        }
    }
    without_gradient.sort();
    assert!(without_gradient.is_empty(), "no gradient reached: {without_gradient:?}");
}
