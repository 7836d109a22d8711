//! Every random choice of the phantom comes from a named stream derived from the cohort seed, so a
//! patient's anatomy, identity and noise can be recomputed alone (by `ct_volume`) without generating
//! the cohort, and adding a stream never shifts the values of another.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Domain separator: changing the phantom's generative model must change this, so old seeds do not
/// silently describe a different cohort.
const STREAM_DOMAIN: &[u8] = b"medtrain phantom v1";
/// Weyl increment of SplitMix64 (2^64 / golden ratio).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
/// Irwin-Hall with four uniforms has variance 4/12; this rescales it to unit variance.
const IRWIN_HALL_4_SCALE: f32 = 1.732_050_8; // sqrt(3)

fn stream_hash(seed: u64, stream: &str, patient: u32, index: u32) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(STREAM_DOMAIN);
    hasher.update(&seed.to_le_bytes());
    hasher.update(&(stream.len() as u64).to_le_bytes());
    hasher.update(stream.as_bytes());
    hasher.update(&patient.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    hasher.finalize()
}

/// A 64-bit seed for one named stream of one patient.
pub(crate) fn stream_seed(seed: u64, stream: &str, patient: u32) -> u64 {
    let bytes = stream_hash(seed, stream, patient, 0);
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("blake3 gives 32 bytes"))
}

/// A generator for one named stream of one patient.
pub(crate) fn stream_rng(seed: u64, stream: &str, patient: u32) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream_seed(seed, stream, patient))
}

/// A DICOM UID of the `2.25.<decimal 128-bit integer>` form (PS3.5 B.2), unique per
/// (seed, kind, patient, index).
pub(crate) fn uid(seed: u64, kind: &str, patient: u32, index: u32) -> String {
    let bytes = stream_hash(seed, kind, patient, index);
    let value = u128::from_le_bytes(bytes.as_bytes()[..16].try_into().expect("blake3 gives 32 bytes"));
    // Zero would be a legal integer but looks like a bug in a UID; 2^-128 odds, but be exact.
    format!("2.25.{}", value.max(1))
}

/// Random-looking hexadecimal text (a file name stem, for instance), 16 characters.
pub(crate) fn hex_name(seed: u64, kind: &str, patient: u32, index: u32) -> String {
    hex::encode(&stream_hash(seed, kind, patient, index).as_bytes()[..8])
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Unit-variance, zero-mean, Gaussian-like noise for element `index` of a stream: a pure function
/// of its arguments, so any voxel's noise can be recomputed without drawing the ones before it.
/// (Irwin-Hall sum of four 16-bit uniforms: bounded at ±2√3, which keeps 12-bit storage safe.)
pub(crate) fn unit_noise(stream: u64, index: u64) -> f32 {
    let bits = splitmix64(stream ^ index.wrapping_mul(GOLDEN_GAMMA));
    let sum: u32 = (0..4).map(|k| ((bits >> (16 * k)) & 0xFFFF) as u32).sum();
    // Each uniform is (u + 0.5) / 65536 in (0, 1), so the sum has mean exactly 2.
    let uniform_sum = (sum as f32 + 2.0) / 65_536.0;
    (uniform_sum - 2.0) * IRWIN_HALL_4_SCALE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_well_formed_and_distinct() {
        let a = uid(1, "series", 0, 0);
        let b = uid(1, "series", 0, 1);
        let c = uid(2, "series", 0, 0);
        for u in [&a, &b, &c] {
            assert!(u.len() <= 64, "{u} is longer than a UI allows");
            let digits = u.strip_prefix("2.25.").expect("2.25 root");
            assert!(
                digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0'),
                "{u}"
            );
        }
        assert!(a != b && a != c && b != c);
        assert_eq!(a, uid(1, "series", 0, 0));
    }

    #[test]
    fn noise_has_zero_mean_unit_variance_and_is_bounded() {
        let n = 200_000u64;
        let samples: Vec<f64> = (0..n).map(|i| unit_noise(42, i) as f64).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(samples.iter().all(|s| s.abs() <= 2.0 * 3f64.sqrt() + 1e-6));
        // A Gaussian puts about 68 % within one sigma; Irwin-Hall(4) about 66.7 %.
        let within = samples.iter().filter(|s| s.abs() < 1.0).count() as f64 / n as f64;
        assert!((0.64..0.70).contains(&within), "fraction within 1 sigma {within}");
    }

    #[test]
    fn streams_are_independent_of_each_other() {
        assert_ne!(stream_seed(7, "anatomy", 3), stream_seed(7, "identity", 3));
        assert_ne!(stream_seed(7, "anatomy", 3), stream_seed(7, "anatomy", 4));
        assert_ne!(stream_seed(7, "ab", 0), stream_seed(7, "a", 0));
    }
}
