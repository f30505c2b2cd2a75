//! The learning rate over a run.

/// Linear warm-up, then cosine decay to zero.
pub fn learning_rate(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, 100, 10, 100).abs() < 1e-12);
    }
}
