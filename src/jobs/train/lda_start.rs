//! Starting the head from what a closed form already knows: the neck from Fisher's linear
//! discriminant, the loss's class weights from the classes' mean embeddings.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::cache::TokenCache;
use super::config::TrainConfig;
use super::error::TrainError;
use super::lda::Lda;
use super::validation::TrainingRow;
use crate::models::{Head, Pooling};

/// What the LDA start is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdaFeatures {
    /// The CLS token alone (the GeM part's columns start at zero; the loss may bring it in).
    Cls,
    /// CLS and GeM together: twice the dimensions to estimate from the same photos.
    Pooled,
}

/// The training features as the LDA start sees them: pooled once, standardised with the
/// training set's statistics (which the neck's BatchNorm takes over).
pub struct LdaStart {
    mean: Vec<f64>,
    var: Vec<f64>,
    standardised: Vec<Vec<f32>>,
    labels: Vec<u32>,
}

/// A neck's Linear layer: weight (row-major, out x in) and bias.
pub struct LinearStart {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl LdaStart {
    pub fn pool(head: &Head, cache: &TokenCache, train: &[TrainingRow], device: &Device) -> Result<Self, TrainError> {
        let mut pooled = Vec::with_capacity(train.len());
        for chunk in train.chunks(256) {
            let rows: Vec<usize> = chunk.iter().map(|t| t.row).collect();
            pooled.extend(head.pooling.forward(&cache.batch(&rows, device)?)?.to_vec2::<f32>()?);
        }
        let dim = pooled.first().map_or(0, Vec::len);
        let n = pooled.len().max(1) as f64;
        let mean: Vec<f64> = (0..dim).map(|j| pooled.iter().map(|v| v[j] as f64).sum::<f64>() / n).collect();
        let var: Vec<f64> =
            (0..dim).map(|j| pooled.iter().map(|v| (v[j] as f64 - mean[j]).powi(2)).sum::<f64>() / n).collect();
        let standardised = pooled
            .iter()
            .map(|v| (0..dim).map(|j| ((v[j] as f64 - mean[j]) / (var[j] + 1e-5).sqrt()) as f32).collect())
            .collect();
        Ok(LdaStart { mean, var, standardised, labels: train.iter().map(|t| t.class).collect() })
    }

    /// The Linear layer projecting `features` of the standardised features onto their
    /// discriminant directions (zero rows past the number of individuals minus one, zero
    /// columns for the features left out); `None` when too few individuals have two crops.
    pub fn linear(&self, config: &TrainConfig, features: LdaFeatures) -> Option<LinearStart> {
        let dim = self.mean.len();
        let used = match features {
            LdaFeatures::Cls => Pooling::cls_dims(dim),
            LdaFeatures::Pooled => dim,
        };
        let inputs: Vec<Vec<f32>> = self.standardised.iter().map(|v| v[..used].to_vec()).collect();
        let lda = Lda::fit(&inputs, &self.labels, config.lda_ridge)?;
        let out_dim = config.embedding_dim;
        let (narrow, bias) = lda.linear(out_dim);
        let mut weight = vec![0f32; out_dim * dim];
        for k in 0..out_dim {
            weight[k * dim..][..used].copy_from_slice(&narrow[k * used..][..used]);
        }
        Some(LinearStart { weight, bias })
    }

    /// Sets the neck: the BatchNorm to the training statistics, the Linear layer to `linear`.
    pub fn set_neck(&self, vars: &VarMap, linear: &LinearStart, device: &Device) -> Result<(), TrainError> {
        let dim = self.mean.len();
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        let set = |name: &str, values: Vec<f32>| -> Result<(), TrainError> {
            let var = data.get(name).ok_or_else(|| TrainError::Data(format!("no variable {name}")))?;
            var.set(&Tensor::from_vec(values, var.shape(), device)?)?;
            Ok(())
        };
        set("neck.bn.running_mean", self.mean.iter().map(|&m| m as f32).collect())?;
        set("neck.bn.running_var", self.var.iter().map(|&v| v as f32).collect())?;
        set("neck.bn.weight", vec![1.0; dim])?;
        set("neck.bn.bias", vec![0.0; dim])?;
        set("neck.linear.weight", linear.weight.clone())?;
        set("neck.linear.bias", linear.bias.clone())?;
        Ok(())
    }
}

/// Sets each class's rows of the loss (ArcFace weights, sub-centres, proxies) to the mean
/// direction of its training embeddings ("weight imprinting"), plus a little of their random
/// start so sub-centres differ: the loss then starts from what the head already knows
/// instead of pulling an LDA start towards random class directions.
pub fn imprint_class_weights(
    vars: &VarMap,
    head: &Head,
    cache: &TokenCache,
    train: &[TrainingRow],
    classes: usize,
    device: &Device,
) -> Result<(), TrainError> {
    let mut sums: Vec<Vec<f32>> = Vec::new();
    for chunk in train.chunks(256) {
        let rows: Vec<usize> = chunk.iter().map(|t| t.row).collect();
        let embeddings = head.forward(&cache.batch(&rows, device)?)?.to_vec2::<f32>()?;
        for (t, e) in chunk.iter().zip(embeddings) {
            if sums.is_empty() {
                sums = vec![vec![0.0; e.len()]; classes];
            }
            for (s, v) in sums[t.class as usize].iter_mut().zip(&e) {
                *s += v;
            }
        }
    }
    for s in &mut sums {
        crate::jobs::search::normalise(s);
    }
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in data.iter().filter(|(name, _)| name.starts_with("loss.")) {
        let Ok((rows, dim)) = var.as_tensor().dims2() else { continue };
        if classes == 0 || rows % classes != 0 || sums.first().is_none_or(|s| s.len() != dim) {
            continue;
        }
        let per_class = rows / classes;
        let current = var.as_tensor().to_vec2::<f32>()?;
        let imprinted: Vec<f32> = current
            .iter()
            .enumerate()
            .flat_map(|(r, row)| {
                let mean = &sums[r / per_class];
                mean.iter().zip(row).map(|(m, x)| m + 0.05 * x).collect::<Vec<_>>()
            })
            .collect();
        var.set(&Tensor::from_vec(imprinted, (rows, dim), device)?)
            .map_err(|e| TrainError::Data(format!("{name}: {e}")))?;
    }
    Ok(())
}
