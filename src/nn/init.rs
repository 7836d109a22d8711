//! Seeded initialisation, as torchvision's ResNet does it: He (Kaiming) normal with fan_out for
//! convolutions, γ = 1 and β = 0 for batch norm, PyTorch's default uniform for the classifier.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::table::NamedTable;

/// One standard normal draw (Box–Muller); plain arithmetic so every platform gives the same values.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Fills `param` from the table: each entry draws from its own stream (seed, entry index), so adding a
/// layer does not change the others.
pub fn init_params(table: &NamedTable, param: &mut [f32], seed: u64) {
    for (index, e) in table.entries().iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let values = &mut param[e.range.clone()];
        let leaf = e.name.rsplit('.').next().unwrap_or("");
        let is_bn = e.name.contains("bn") || e.name.contains("downsample.1");
        match (leaf, e.shape.len(), is_bn) {
            ("weight", 1, true) => values.fill(1.0),
            ("bias", _, true) => values.fill(0.0),
            ("weight", 2, false) => {
                // nn.Linear default: U(±1/√fan_in) (kaiming_uniform with a = √5).
                let bound = 1.0 / (e.shape[1] as f32).sqrt();
                values.iter_mut().for_each(|v| *v = rng.gen_range(-bound..bound));
            }
            ("bias", _, false) => {
                let fan_in = table.entries()[index - 1].shape.iter().skip(1).product::<usize>() as f32;
                let bound = 1.0 / fan_in.sqrt();
                values.iter_mut().for_each(|v| *v = rng.gen_range(-bound..bound));
            }
            _ => {
                // Convolution (C_out, C_in/g, k...): std = √(2 / fan_out), fan_out = C_out · kernel volume.
                let fan_out = e.shape[0] * e.shape[2..].iter().product::<usize>();
                let std = (2.0 / fan_out as f32).sqrt();
                values.iter_mut().for_each(|v| *v = normal(&mut rng) * std);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::resnet::{build, ResNetConfig};

    #[test]
    fn he_init_has_the_right_scale_and_is_seeded() {
        let spec = build(&ResNetConfig::resnet18(1, 2, 16), 1, [1, 32, 32]);
        let mut a = vec![0.0; spec.params.len()];
        let mut b = vec![0.0; spec.params.len()];
        init_params(&spec.params, &mut a, 5);
        init_params(&spec.params, &mut b, 5);
        assert_eq!(a, b, "same seed, same weights");
        init_params(&spec.params, &mut b, 6);
        assert_ne!(a, b);
        let conv = spec.params.find("layer3.0.conv2.weight").unwrap(); // (64, 64, 3, 3)
        let values = &a[conv.range.clone()];
        let var = values.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / values.len() as f64;
        let want = 2.0 / (64.0 * 9.0);
        assert!((var / want - 1.0).abs() < 0.05, "variance {var} vs He {want}");
        let gamma = spec.params.find("layer3.0.bn2.weight").unwrap();
        assert!(a[gamma.range.clone()].iter().all(|&v| v == 1.0));
        let fc = spec.params.find("fc.weight").unwrap();
        let bound = 1.0 / (128f32).sqrt();
        assert!(a[fc.range.clone()].iter().all(|v| v.abs() <= bound));
    }
}
