//! What a run trains on, and how a batch of it becomes the head's input.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::augment::{ImageAugmentation, augment_tokens};
use super::cache::TokenCache;
use super::config::TrainConfig;
use super::error::TrainError;
use crate::jobs::embed::Crop;
use std::sync::Arc;

use crate::models::{Backbone, Tap, pool_tokens};

/// What a run trains on.
pub struct Inputs<'a> {
    /// The frozen backbone's tokens at the trained depth, pooled: all that `head` training
    /// reads, and what every mode's LDA start, baselines and first validation are made of.
    pub pooled: &'a TokenCache,
    /// For `last-blocks` and `full`: the backbone to fine-tune and what feeds it.
    pub tuned: Option<TunedInputs<'a>>,
}

impl<'a> Inputs<'a> {
    pub fn head(pooled: &'a TokenCache) -> Self {
        Self { pooled, tuned: None }
    }
}

pub struct TunedInputs<'a> {
    /// The weights fine-tuning starts from (not changed itself).
    pub backbone: &'a dyn Backbone,
    /// The input side in pixels.
    pub size: u32,
    pub source: TunedSource<'a>,
}

pub enum TunedSource<'a> {
    /// `last-blocks`: the tokens entering the first tuned block (a [`Tap::Input`] cache),
    /// row for row as `Inputs::pooled`.
    BlockInputs(&'a TokenCache),
    /// `full`: the crops, row for row as `Inputs::pooled`, decoded and augmented every step.
    Images(&'a [Crop]),
}

/// The trainable backbone of a `last-blocks` or `full` run, and how it is fed.
pub(super) struct TunedBackbone<'a> {
    /// On the run's variables (differentiable kernels).
    pub(super) model: Arc<dyn Backbone>,
    pub(super) inputs: &'a TunedInputs<'a>,
    /// The tuned blocks are `from..depth`.
    pub(super) from: usize,
    pub(super) depth: usize,
    pub(super) grid: usize,
}

/// Makes the head's input, `[B, 1 + grid², D]`, for rows of the pooled cache: straight from
/// the cache, or through the tuned blocks from their cached inputs, or through the whole
/// backbone from the photos.
pub(super) struct Feeder<'a> {
    pub(super) cache: &'a TokenCache,
    pub(super) tuned: Option<TunedBackbone<'a>>,
    pub(super) augmentation: &'a ImageAugmentation,
}

impl Feeder<'_> {
    /// The tokens of `rows` and the positions in `rows` they are of (a photo that can no
    /// longer be read is left out). With `rng` (training) the inputs are augmented.
    pub(super) fn tokens(
        &self,
        rows: &[usize],
        config: &TrainConfig,
        tokens_per_crop: usize,
        mut rng: Option<&mut rand_chacha::ChaCha8Rng>,
    ) -> Result<(Tensor, Vec<usize>), TrainError> {
        let mut kept: Vec<usize> = (0..rows.len()).collect();
        let tokens = match &self.tuned {
            None => self.cache.batch(rows, &Device::Cpu)?, // head training runs on the CPU
            Some(t) => {
                let device = t.model.device().clone();
                let output = match t.inputs.source {
                    TunedSource::BlockInputs(inputs) => {
                        t.model.forward_tail(&inputs.batch(rows, &device)?, t.from, t.depth)?
                    }
                    TunedSource::Images(crops) => {
                        let seeds: Vec<Option<u64>> = match rng.as_deref_mut() {
                            Some(r) => rows.iter().map(|_| Some(r.random())).collect(),
                            None => vec![None; rows.len()],
                        };
                        let (images, ok) = self.images(crops, rows, &seeds, t.inputs.size);
                        kept = ok;
                        if kept.is_empty() {
                            return Ok((Tensor::zeros((0, tokens_per_crop, 1), DType::F32, &device)?, kept));
                        }
                        let side = t.inputs.size as usize;
                        let batch = Tensor::from_vec(images.concat(), (images.len(), 3, side, side), &device)?;
                        t.model.features(&batch, &[Tap::Output(t.depth)])?.remove(0)
                    }
                };
                pool_tokens(output.tokens(), output.rows(), output.cols(), t.grid)?
            }
        };
        let tokens = match rng {
            Some(r) => augment_tokens(&tokens, tokens_per_crop, config.token_dropout, config.token_noise, r)?,
            None => tokens,
        };
        Ok((tokens, kept))
    }

    /// Decodes the crops of `rows` in parallel: augmented where a seed is given, else as for
    /// inference. Returns the inputs and the positions in `rows` they are of.
    fn images(&self, crops: &[Crop], rows: &[usize], seeds: &[Option<u64>], size: u32) -> (Vec<Vec<f32>>, Vec<usize>) {
        use rayon::prelude::*;
        let augmentation = self.augmentation;
        let prepared: Vec<Option<Vec<f32>>> = rows
            .par_iter()
            .zip(seeds)
            .map(|(&row, seed)| {
                let crop = crops.get(row)?;
                let img = crate::base::photo::decode_file(&crop.photo).ok()?;
                Some(match seed {
                    Some(seed) => {
                        augmentation.prepare(&img, crop.bbox, size, &mut rand_chacha::ChaCha8Rng::seed_from_u64(*seed))
                    }
                    None => crate::models::prepare(&img, crop.bbox, size),
                })
            })
            .collect();
        let mut inputs = Vec::with_capacity(rows.len());
        let mut kept = Vec::with_capacity(rows.len());
        for (i, p) in prepared.into_iter().enumerate() {
            if let Some(p) = p {
                inputs.push(p);
                kept.push(i);
            }
        }
        (inputs, kept)
    }
}
