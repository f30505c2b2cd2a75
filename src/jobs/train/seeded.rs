//! Trainable variables drawn from the run's seed.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::Rng;

/// Variables on a `VarMap` whose fresh values are drawn from a seeded generator as their
/// `Init` asks (candle's own CPU random numbers cannot be seeded, and a run must be
/// repeatable from its seed); variables already in the map are handed out as they are.
pub(super) struct SeededVars {
    pub(super) vars: VarMap,
    pub(super) rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
}

impl candle_nn::var_builder::SimpleBackend for SeededVars {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        use candle_nn::init::NormalOrUniform;
        let mut data = self.vars.data().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!("{name} is {:?}, {:?} was asked for", var.dims(), shape.dims());
            }
            return Ok(var.as_tensor().clone());
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let n = shape.elem_count();
        let normal = |rng: &mut rand_chacha::ChaCha8Rng, mean: f64, std: f64| -> candle_core::Result<Vec<f32>> {
            let d = rand_distr::Normal::new(mean, std).map_err(|e| candle_core::Error::msg(format!("{name}: {e}")))?;
            Ok((0..n).map(|_| rng.sample(d) as f32).collect())
        };
        let uniform = |rng: &mut rand_chacha::ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
            (0..n).map(|_| if up > lo { rng.random_range(lo..up) as f32 } else { lo as f32 }).collect()
        };
        let values = match init {
            candle_nn::Init::Const(c) => vec![c as f32; n],
            candle_nn::Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            candle_nn::Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev)?,
            candle_nn::Init::Kaiming { dist, fan, non_linearity } => {
                let std = non_linearity.gain() / (fan.for_shape(&shape).max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std)?,
                    NormalOrUniform::Uniform => uniform(&mut rng, -(3f64.sqrt()) * std, 3f64.sqrt() * std),
                }
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)?;
        data.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let data = self.vars.data().lock().unwrap_or_else(|p| p.into_inner());
        match data.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype)?.to_device(device),
            None => candle_core::bail!("no variable {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.data().lock().unwrap_or_else(|p| p.into_inner()).contains_key(name)
    }
}
