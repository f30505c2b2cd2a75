//! EfficientNet-Lite's shape: seven stages of inverted-residual blocks (MBConv without
//! squeeze-excitation, ReLU6), widths and depths scaled per variant, the stem and head
//! fixed, as the published Lite checkpoints are laid out.

/// One inverted-residual block: 1x1 expansion (absent when `expand_ratio` is 1), depthwise
/// `kernel` x `kernel` convolution at `stride`, 1x1 projection; the input is added back when
/// the stride is 1 and the widths match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub input: usize,
    pub output: usize,
    pub expand_ratio: usize,
    pub kernel: usize,
    pub stride: usize,
    /// 0-based stage this block belongs to.
    pub stage: usize,
}

impl BlockSpec {
    pub fn expanded(&self) -> usize {
        self.input * self.expand_ratio
    }

    pub fn residual(&self) -> bool {
        self.stride == 1 && self.input == self.output
    }
}

/// A stage: (repeats, kernel, stride, expand ratio, output width).
pub type StageSpec = (usize, usize, usize, usize, usize);

/// The base network's stages.
const STAGES: [StageSpec; 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// An EfficientNet-Lite variant.
#[derive(Debug, Clone, PartialEq)]
pub struct EfficientNetConfig {
    /// `efficientnet_lite0`...: the name in model keys and file names.
    pub name: String,
    pub width_multiplier: f64,
    pub depth_multiplier: f64,
    /// The resolution it was trained at: the default input side.
    pub resolution: usize,
    pub stem_width: usize,
    pub head_width: usize,
    pub batch_norm_eps: f64,
    /// Stage widths and repeats are taken from here instead of the scaled base network
    /// (small random networks for tests).
    pub stages_override: Option<Vec<StageSpec>>,
}

impl EfficientNetConfig {
    fn lite(index: usize, width: f64, depth: f64, resolution: usize) -> Self {
        Self {
            name: format!("efficientnet_lite{index}"),
            width_multiplier: width,
            depth_multiplier: depth,
            resolution,
            stem_width: 32,
            head_width: 1280,
            batch_norm_eps: 1e-3,
            stages_override: None,
        }
    }

    pub fn lite0() -> Self {
        Self::lite(0, 1.0, 1.0, 224)
    }

    pub fn lite1() -> Self {
        Self::lite(1, 1.0, 1.1, 240)
    }

    pub fn lite2() -> Self {
        Self::lite(2, 1.1, 1.2, 260)
    }

    /// A small network of the same structure (two stages, one of them strided), for tests.
    pub fn tiny() -> Self {
        Self {
            name: "efficientnet_tiny".into(),
            stem_width: 8,
            head_width: 32,
            resolution: 32,
            stages_override: Some(vec![(1, 3, 1, 1, 8), (2, 5, 2, 3, 16)]),
            ..Self::lite0()
        }
    }

    /// `efficientnet-lite0` (as typed on the command line) -> the variant.
    pub fn by_name(name: &str) -> Option<Self> {
        match name.replace('-', "_").to_ascii_lowercase().as_str() {
            "efficientnet_lite0" => Some(Self::lite0()),
            "efficientnet_lite1" => Some(Self::lite1()),
            "efficientnet_lite2" => Some(Self::lite2()),
            _ => None,
        }
    }

    /// Rounds a scaled width to a multiple of 8, never more than 10% below it.
    fn round_width(&self, width: usize) -> usize {
        let scaled = width as f64 * self.width_multiplier;
        let mut rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
        if (rounded as f64) < 0.9 * scaled {
            rounded += 8;
        }
        rounded
    }

    /// Every block in order. Lite keeps the first and last stages at one block and the stem
    /// and head at their base widths.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let stages: Vec<StageSpec> = match &self.stages_override {
            Some(stages) => stages.clone(),
            None => STAGES
                .iter()
                .enumerate()
                .map(|(i, &(repeats, kernel, stride, expand, output))| {
                    let fixed = i == 0 || i == STAGES.len() - 1;
                    let repeats =
                        if fixed { repeats } else { (repeats as f64 * self.depth_multiplier).ceil() as usize };
                    (repeats, kernel, stride, expand, self.round_width(output))
                })
                .collect(),
        };
        let mut input = self.stem_width;
        let mut blocks = Vec::new();
        for (stage, &(repeats, kernel, stride, expand_ratio, output)) in stages.iter().enumerate() {
            for r in 0..repeats {
                let stride = if r == 0 { stride } else { 1 };
                blocks.push(BlockSpec { input, output, expand_ratio, kernel, stride, stage });
                input = output;
            }
        }
        blocks
    }

    /// The number of stages.
    pub fn stages(&self) -> usize {
        self.stages_override.as_ref().map_or(STAGES.len(), Vec::len)
    }

    /// The total stride of the network: 2 for the stem, times every strided block.
    pub fn total_stride(&self) -> usize {
        self.blocks().iter().map(|b| b.stride).product::<usize>() * 2
    }

    /// The name and shape of every tensor the network reads (PyTorch `EfficientNet` names,
    /// without the classifier `_fc` and BatchNorm's `num_batches_tracked`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let batch_norm = |out: &mut Vec<(String, Vec<usize>)>, prefix: &str, width: usize| {
            for part in ["weight", "bias", "running_mean", "running_var"] {
                out.push((format!("{prefix}.{part}"), vec![width]));
            }
        };
        out.push(("_conv_stem.weight".into(), vec![self.stem_width, 3, 3, 3]));
        batch_norm(&mut out, "_bn0", self.stem_width);
        for (i, b) in self.blocks().iter().enumerate() {
            let p = format!("_blocks.{i}");
            let mid = b.expanded();
            if b.expand_ratio != 1 {
                out.push((format!("{p}._expand_conv.weight"), vec![mid, b.input, 1, 1]));
                batch_norm(&mut out, &format!("{p}._bn0"), mid);
            }
            out.push((format!("{p}._depthwise_conv.weight"), vec![mid, 1, b.kernel, b.kernel]));
            batch_norm(&mut out, &format!("{p}._bn1"), mid);
            out.push((format!("{p}._project_conv.weight"), vec![b.output, mid, 1, 1]));
            batch_norm(&mut out, &format!("{p}._bn2"), b.output);
        }
        let last = self.blocks().last().map_or(self.stem_width, |b| b.output);
        out.push(("_conv_head.weight".into(), vec![self.head_width, last, 1, 1]));
        batch_norm(&mut out, "_bn1", self.head_width);
        out
    }

    pub fn parameter_count(&self) -> usize {
        self.tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variants_have_the_published_block_layouts() {
        let lite0 = EfficientNetConfig::lite0().blocks();
        assert_eq!(lite0.len(), 16);
        let strided: Vec<usize> = lite0.iter().enumerate().filter(|(_, b)| b.stride == 2).map(|(i, _)| i).collect();
        assert_eq!(strided, vec![1, 3, 5, 11]);
        assert_eq!(EfficientNetConfig::lite0().total_stride(), 32);
        assert_eq!(EfficientNetConfig::lite1().blocks().len(), 21);
        let lite2 = EfficientNetConfig::lite2().blocks();
        assert_eq!(lite2.len(), 21);
        let widths: Vec<usize> = lite2.iter().map(|b| b.output).collect();
        assert_eq!((widths[1], widths[4], widths[8], widths[12], widths[16], widths[20]), (24, 48, 88, 120, 208, 352));
        assert_eq!((lite2[4].kernel, lite2[4].expanded()), (5, 144));
    }
}
