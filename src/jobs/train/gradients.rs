//! Gradient accumulation and clipping by global norm.

use candle_core::Var;
use candle_core::backprop::GradStore;

/// `sum` plus `more`, variable by variable (gradient accumulation).
pub fn add_gradients(mut sum: GradStore, more: GradStore, vars: &[Var]) -> candle_core::Result<GradStore> {
    for v in vars {
        let total = match (sum.remove(v.as_tensor()), more.get(v.as_tensor())) {
            (Some(a), Some(b)) => (a + b)?,
            (Some(a), None) => a,
            (None, Some(b)) => b.clone(),
            (None, None) => continue,
        };
        sum.insert(v.as_tensor(), total);
    }
    Ok(sum)
}

pub fn scale_gradients(grads: &mut GradStore, vars: &[Var], factor: f64) -> candle_core::Result<()> {
    if factor == 1.0 {
        return Ok(());
    }
    for v in vars {
        if let Some(g) = grads.remove(v.as_tensor()) {
            grads.insert(v.as_tensor(), (g * factor)?);
        }
    }
    Ok(())
}

/// Scales all gradients down together when their global L2 norm exceeds `max_norm`.
pub fn clip_gradients(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> candle_core::Result<()> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        scale_gradients(grads, vars, max_norm / norm)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn accumulated_gradients_are_those_of_the_whole_batch() {
        let w = Var::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
        let x = Tensor::new(&[[1f32, 2., 3.], [0.5, -1., 1.], [2., 0., -1.], [1., 1., 1.]], &Device::Cpu).unwrap();
        // The loss of a batch is a mean over its rows, as every loss here is.
        let loss = |rows: &Tensor| {
            rows.broadcast_mul(w.as_tensor()).unwrap().sum(1).unwrap().sqr().unwrap().mean_all().unwrap()
        };
        let vars = [w.clone()];
        let whole = loss(&x).backward().unwrap();
        let halves = add_gradients(
            loss(&x.narrow(0, 0, 2).unwrap()).backward().unwrap(),
            loss(&x.narrow(0, 2, 2).unwrap()).backward().unwrap(),
            &vars,
        )
        .unwrap();
        let mut halves = halves;
        scale_gradients(&mut halves, &vars, 0.5).unwrap();
        let a = whole.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let b = halves.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
}
