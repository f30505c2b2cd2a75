//! The shape of a DINOv2 backbone, and the tensor names and shapes it is stored under
//! (Hugging Face `Dinov2Model` names, without a `dinov2.` prefix).

/// Hyper-parameters of a DINOv2 vision transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    pub in_channels: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_size: usize,
    /// Side of the square position-embedding grid the weights were trained with
    /// (37 for DINOv2: 518 px / 14).
    pub position_grid: usize,
    pub layer_norm_eps: f64,
}

impl Dinov2Config {
    /// `facebook/dinov2-small`: ViT-S/14, 12 blocks, width 384, 6 heads.
    pub fn vits14() -> Self {
        Self {
            in_channels: 3,
            patch_size: 14,
            hidden_size: 384,
            num_layers: 12,
            num_heads: 6,
            mlp_size: 1536,
            position_grid: 37,
            layer_norm_eps: 1e-6,
        }
    }

    /// A two-block model a few kilobytes in size, for tests of the plumbing (any batch, any
    /// input size that is a multiple of 14, gradients) where real weights would be slow.
    pub fn tiny() -> Self {
        Self {
            in_channels: 3,
            patch_size: 14,
            hidden_size: 32,
            num_layers: 2,
            num_heads: 2,
            mlp_size: 64,
            position_grid: 4,
            layer_norm_eps: 1e-6,
        }
    }

    /// Its name in model keys: `dinov2_vits14` for ViT-S/14, else its shape.
    pub fn name(&self) -> String {
        match *self == Self::vits14() {
            true => "dinov2_vits14".to_string(),
            false => format!("dinov2_{}d{}x{}p{}", self.hidden_size, self.num_layers, self.num_heads, self.patch_size),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Every tensor of the backbone with its shape, in a stable order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.hidden_size;
        let m = self.mlp_size;
        let p = self.patch_size;
        let grid = self.position_grid;
        let mut shapes = vec![
            ("embeddings.cls_token".to_string(), vec![1, 1, d]),
            ("embeddings.position_embeddings".to_string(), vec![1, 1 + grid * grid, d]),
            ("embeddings.patch_embeddings.projection.weight".to_string(), vec![d, self.in_channels, p, p]),
            ("embeddings.patch_embeddings.projection.bias".to_string(), vec![d]),
        ];
        for layer in 0..self.num_layers {
            let prefix = format!("encoder.layer.{layer}");
            let mut push = |name: &str, shape: Vec<usize>| {
                shapes.push((format!("{prefix}.{name}"), shape));
            };
            push("norm1.weight", vec![d]);
            push("norm1.bias", vec![d]);
            for module in ["query", "key", "value"] {
                push(&format!("attention.attention.{module}.weight"), vec![d, d]);
                push(&format!("attention.attention.{module}.bias"), vec![d]);
            }
            push("attention.output.dense.weight", vec![d, d]);
            push("attention.output.dense.bias", vec![d]);
            push("layer_scale1.lambda1", vec![d]);
            push("norm2.weight", vec![d]);
            push("norm2.bias", vec![d]);
            push("mlp.fc1.weight", vec![m, d]);
            push("mlp.fc1.bias", vec![m]);
            push("mlp.fc2.weight", vec![d, m]);
            push("mlp.fc2.bias", vec![d]);
            push("layer_scale2.lambda1", vec![d]);
        }
        shapes.push(("layernorm.weight".to_string(), vec![d]));
        shapes.push(("layernorm.bias".to_string(), vec![d]));
        shapes
    }

    /// Total number of parameters (22,056,192 for ViT-S/14).
    pub fn parameter_count(&self) -> usize {
        self.tensor_shapes().iter().map(|(_, shape)| shape.iter().product::<usize>()).sum()
    }
}
