//! EfficientNet-Lite beside DINOv2: the published checkpoints are read from their legacy
//! torch format, the candle network reproduces an independent reference, damaged or foreign
//! files are refused by name, and the network trains.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use whaleid::models::efficientnet::is_running_statistic;
use whaleid::models::torch_legacy::writing::legacy_checkpoint;
use whaleid::models::{Backbone, BatchNormMode, EfficientNet, EfficientNetConfig, Kernels, Tap};

mod common;

/// `whaleid ARGS`: (success, stderr).
fn whaleid(args: &[&str]) -> (bool, String) {
    let out = common::whaleid().args(args).output().expect("whaleid runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A state dict of `config`'s shapes, every value `fill`.
fn checkpoint_of(config: &EfficientNetConfig, fill: f32) -> Vec<u8> {
    let shapes = config.tensor_shapes();
    let tensors: Vec<(&str, Vec<usize>, Vec<f32>)> =
        shapes.iter().map(|(n, s)| (n.as_str(), s.clone(), vec![fill; s.iter().product()])).collect();
    legacy_checkpoint(&tensors)
}

#[test]
fn lite0_reproduces_the_reference_features() {
    let Some(weights) = common::models_file("efficientnet_lite0.safetensors") else { return };
    let Some(fixture) = common::shared_file("fixtures/efficientnet_lite0_224_reference.safetensors") else { return };
    let device = Device::Cpu;
    let reference = candle_core::safetensors::load(&fixture, &device).unwrap();
    let (input, expected) = (&reference["input"], &reference["features"]);
    assert_eq!(expected.dims(), [2, 1280]);
    let scale = expected.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();

    let mut model = EfficientNet::load(&weights, &device).unwrap();
    assert_eq!(model.kernels(), Kernels::Fused);
    for kernels in [Kernels::Fused, Kernels::Differentiable] {
        model.set_kernels(kernels);
        let map = model.forward(input).unwrap();
        assert_eq!(map.dims(), [2, 1280, 7, 7]);
        let features = map.mean(3).unwrap().mean(2).unwrap();
        let error = (features - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!("{kernels:?}: max abs error {error:.2e}, {:.2e} of the features' scale {scale:.3}", error / scale);
        assert!(error / scale < 1e-3, "{kernels:?}: error {error} against scale {scale}");
    }
    // Through the backbone interface: the grid's mean stands in for the global vector.
    let features = model.features(input, &[Tap::Output(7)]).unwrap().remove(0);
    assert_eq!((features.rows(), features.cols(), features.stride(), features.width().unwrap()), (7, 7, 32, 1280));
}

#[test]
fn a_tiny_network_takes_any_input_size_and_its_two_paths_agree() {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model =
        EfficientNet::new(&EfficientNetConfig::tiny(), VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
    for (h, w) in [(32, 32), (37, 50)] {
        let images = Tensor::randn(0f32, 1.0, (3, 3, h, w), &device).unwrap();
        let taps = [Tap::Output(1), Tap::Output(2)];
        let slow = model.forward_taps(&images, &taps).unwrap();
        let fused = EfficientNet::with_weights(&model, &HashMap::new()).unwrap().with_kernels(Kernels::Fused);
        let fast = fused.forward_taps(&images, &taps).unwrap();
        // Stem stride 2, then stage 2 strided: sides halve rounding up.
        assert_eq!(slow[1].dims(), [3, 32, h.div_ceil(4), w.div_ceil(4)]);
        for (a, b) in slow.iter().zip(&fast) {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "fused and differentiable differ by {diff}");
        }
        // One image alone (its kernels spread over the threads) gives what it gave in the batch
        // (an image per thread).
        let alone = fused.forward_taps(&images.narrow(0, 1, 1).unwrap(), &taps).unwrap();
        for (a, b) in alone.iter().zip(&fast) {
            let diff =
                (a - b.narrow(0, 1, 1).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "one image alone differs by {diff}");
        }
        // The tail from cached stage-1 maps is what the whole pass gives.
        let tail = model.forward_tail(&slow[0], 1, 2).unwrap();
        let diff = (tail - &slow[1]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5);
    }
}

#[test]
fn training_the_network_gives_every_trainable_tensor_a_gradient() {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let config = EfficientNetConfig::tiny();
    let mut model = EfficientNet::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
    model.set_batch_norm(BatchNormMode::Train);
    let before = model.named_tensors().into_iter().find(|(n, _)| n == "_bn0.running_mean").unwrap().1.copy().unwrap();

    let images = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &device).unwrap();
    let map = model.forward(&images).unwrap();
    let probe = Tensor::randn(0f32, 1.0, map.dims(), &device).unwrap();
    let grads = (map * probe).unwrap().sum_all().unwrap().backward().unwrap();

    let vars = varmap.data().lock().unwrap();
    assert_eq!(vars.len(), config.tensor_shapes().len());
    let mut trainable = 0;
    let mut without_gradient = Vec::new();
    for (name, var) in vars.iter().filter(|(name, _)| !is_running_statistic(name)) {
        trainable += 1;
        let magnitude = grads
            .get(var.as_tensor())
            .map(|g| g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap())
            .unwrap_or(0.0);
        if magnitude == 0.0 || !magnitude.is_finite() {
            without_gradient.push(name.clone());
        }
    }
    assert!(trainable > 20);
    assert!(without_gradient.is_empty(), "no gradient reached: {without_gradient:?}");
    // Train-mode BatchNorm moved the running statistics towards the batch's.
    let after = model.named_tensors().into_iter().find(|(n, _)| n == "_bn0.running_mean").unwrap().1;
    let moved = (after - before).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(moved > 0.0);
}

#[test]
fn fetching_from_damaged_or_foreign_checkpoints_says_which_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models");
    let fetch = |file: &Path| {
        let (ok, stderr) = whaleid(&[
            "models",
            "fetch",
            "--model",
            "efficientnet-lite0",
            "--from",
            file.to_str().unwrap(),
            "--dir",
            out.to_str().unwrap(),
        ]);
        assert!(!ok, "{} was accepted", file.display());
        assert!(stderr.contains(file.file_name().unwrap().to_str().unwrap()), "{stderr}");
        assert!(!out.join("efficientnet_lite0.safetensors").exists());
        stderr
    };

    let other =
        common::write(&dir.path().join("resnet.pth"), legacy_checkpoint(&[("fc.weight", vec![2, 2], vec![0.0; 4])]));
    let err = fetch(&other);
    assert!(err.contains("not an EfficientNet-Lite checkpoint") && err.contains("fc.weight"), "{err}");

    let lite1 = common::write(&dir.path().join("lite1.pth"), checkpoint_of(&EfficientNetConfig::lite1(), 0.0));
    let err = fetch(&lite1);
    assert!(err.contains("not efficientnet_lite0"), "{err}");

    let whole = checkpoint_of(&EfficientNetConfig::lite0(), 0.5);
    let truncated = common::write(&dir.path().join("truncated.pth"), &whole[..whole.len() / 2]);
    let err = fetch(&truncated);
    assert!(err.contains("truncated"), "{err}");

    // Sound, of the right shapes, but not the published weights.
    let retrained = common::write(&dir.path().join("retrained.pth"), &whole);
    let err = fetch(&retrained);
    assert!(err.contains("sha256"), "{err}");

    let zipped = common::write(&dir.path().join("new-format.pth"), b"PK\x03\x04archive/data.pkl...");
    let err = fetch(&zipped);
    assert!(err.contains("zip-format"), "{err}");
}

#[test]
fn a_safetensors_file_missing_a_tensor_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("efficientnet_lite0.safetensors");
    let tensors: HashMap<String, Tensor> = EfficientNetConfig::lite0()
        .tensor_shapes()
        .into_iter()
        .filter(|(name, _)| name != "_blocks.7._bn1.running_var")
        .map(|(name, shape)| (name, Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = whaleid::models::load_backbone(&path, &Device::Cpu).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("efficientnet_lite0.safetensors") && err.contains("_blocks.7._bn1.running_var"), "{err}");
}
