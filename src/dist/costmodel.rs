//! The allreduce cost model behind `bench comm` and `plan`: a latency-bandwidth (α-β) fit of measured
//! allreduce times, and the closed forms of the ring and tree algorithms that project a step time to a
//! cluster that is not here. The formulas are the standard ones (Thakur, Rabenseifner and Gropp, "Optimization
//! of Collective Communication Operations in MPICH", IJHPCA 2005; Patarasuk and Yuan, "Bandwidth optimal
//! all-reduce algorithms", JPDC 2009); the reduction's arithmetic is folded into β, since the fit
//! measures both together.

use serde::{Deserialize, Serialize};

/// Allreduce cost of one link class: `α` seconds per message, `β` seconds per byte.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlphaBeta {
    pub alpha_s: f64,
    pub beta_s_per_byte: f64,
}

/// One measurement: an allreduce of `bytes` took `seconds` (a median of repeats).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub bytes: f64,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("an α-β fit needs timings at two or more message sizes, got {0}")]
    TooFew(usize),
    #[error("timing {index} is not a positive finite (bytes, seconds) pair: ({bytes}, {seconds})")]
    Invalid { index: usize, bytes: f64, seconds: f64 },
}

impl AlphaBeta {
    /// Least-squares fit of `t = α + β·n` with weights `1/t²`: each point counts by its relative error,
    /// so the 4 KB timings (which set α) weigh as much as the 256 MB ones (which set β). Negative
    /// estimates, which noise gives when one term is negligible, are clamped to zero and the other term
    /// refitted alone.
    pub fn fit(timings: &[Timing]) -> Result<AlphaBeta, FitError> {
        for (index, t) in timings.iter().enumerate() {
            if !(t.bytes.is_finite() && t.seconds.is_finite() && t.bytes >= 0.0 && t.seconds > 0.0) {
                return Err(FitError::Invalid {
                    index,
                    bytes: t.bytes,
                    seconds: t.seconds,
                });
            }
        }
        let distinct = {
            let mut sizes: Vec<f64> = timings.iter().map(|t| t.bytes).collect();
            sizes.sort_by(f64::total_cmp);
            sizes.dedup();
            sizes.len()
        };
        if distinct < 2 {
            return Err(FitError::TooFew(distinct));
        }
        // Weighted normal equations of [1 n]·[α β]ᵀ = t.
        let (mut s00, mut s01, mut s11, mut r0, mut r1) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for t in timings {
            let w = 1.0 / (t.seconds * t.seconds);
            s00 += w;
            s01 += w * t.bytes;
            s11 += w * t.bytes * t.bytes;
            r0 += w * t.seconds;
            r1 += w * t.seconds * t.bytes;
        }
        let det = s00 * s11 - s01 * s01;
        let alpha = (r0 * s11 - r1 * s01) / det;
        let beta = (s00 * r1 - s01 * r0) / det;
        Ok(if alpha < 0.0 {
            AlphaBeta {
                alpha_s: 0.0,
                beta_s_per_byte: r1 / s11,
            }
        } else if beta < 0.0 {
            AlphaBeta {
                alpha_s: r0 / s00,
                beta_s_per_byte: 0.0,
            }
        } else {
            AlphaBeta {
                alpha_s: alpha,
                beta_s_per_byte: beta,
            }
        })
    }

    /// Time of one point-to-point message of `bytes`.
    pub fn message(&self, bytes: f64) -> f64 {
        self.alpha_s + self.beta_s_per_byte * bytes
    }

    /// Bandwidth the fit implies for large messages, bytes per second.
    pub fn bandwidth(&self) -> f64 {
        1.0 / self.beta_s_per_byte
    }
}

/// Allreduce algorithms whose cost the projection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Reduce-scatter then allgather around a ring: 2(p−1) messages of n/p bytes each.
    Ring,
    /// Binomial-tree reduce then broadcast: 2⌈log₂p⌉ messages of n bytes each.
    Tree,
    /// The cheaper of the two at each size, as MPI libraries choose.
    Best,
}

/// Seconds of one allreduce of `bytes` over `ranks` ranks whose every link costs `link`.
pub fn allreduce_time(algorithm: Algorithm, ranks: usize, bytes: f64, link: AlphaBeta) -> f64 {
    if ranks <= 1 {
        return 0.0;
    }
    let p = ranks as f64;
    match algorithm {
        Algorithm::Ring => 2.0 * (p - 1.0) * link.message(bytes / p),
        Algorithm::Tree => 2.0 * (ranks as f64).log2().ceil() * link.message(bytes),
        Algorithm::Best => allreduce_time(Algorithm::Ring, ranks, bytes, link).min(allreduce_time(
            Algorithm::Tree,
            ranks,
            bytes,
            link,
        )),
    }
}

/// A cluster layout for the projection.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub nodes: usize,
    pub gpus_per_node: usize,
}

impl Layout {
    pub fn ranks(&self) -> usize {
        self.nodes * self.gpus_per_node
    }
}

/// Two-level allreduce, as NCCL and hierarchical MPI collectives run it: reduce-scatter inside each
/// node (`intra`), an allreduce of the node's 1/g share across nodes (`inter`, one rank per node per
/// share, all shares at once), then an allgather inside the node. One node is the intra-node allreduce.
pub fn hierarchical_allreduce_time(
    algorithm: Algorithm,
    layout: Layout,
    bytes: f64,
    intra: AlphaBeta,
    inter: AlphaBeta,
) -> f64 {
    let g = layout.gpus_per_node.max(1);
    if layout.nodes <= 1 {
        return allreduce_time(algorithm, g, bytes, intra);
    }
    let gf = g as f64;
    // Reduce-scatter and allgather of a ring inside the node: (g−1) messages of n/g bytes each.
    let inside = if g > 1 {
        2.0 * (gf - 1.0) * intra.message(bytes / gf)
    } else {
        0.0
    };
    inside + allreduce_time(algorithm, layout.nodes, bytes / gf, inter)
}

/// One projected training step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepProjection {
    pub ranks: usize,
    pub compute_s: f64,
    pub allreduce_s: f64,
    /// The part of the allreduce not hidden behind backward.
    pub exposed_s: f64,
    pub step_s: f64,
}

/// Step time from the compute time of one rank's batch, the allreduce time, and the measured fraction
/// `overlap` (0..1) of communication hidden behind backward by the buckets.
pub fn project_step(ranks: usize, compute_s: f64, allreduce_s: f64, overlap: f64) -> StepProjection {
    let exposed = allreduce_s * (1.0 - overlap.clamp(0.0, 1.0));
    StepProjection {
        ranks,
        compute_s,
        allreduce_s,
        exposed_s: exposed,
        step_s: compute_s + exposed,
    }
}

/// Weak scaling (the per-rank batch fixed): efficiency T(1)/T(N).
pub fn weak_efficiency(one: &StepProjection, many: &StepProjection) -> f64 {
    one.step_s / many.step_s
}

/// Strong scaling (the global batch fixed): speed-up T(1)/T(N) divided by N.
pub fn strong_efficiency(one: &StepProjection, many: &StepProjection) -> f64 {
    one.step_s / many.step_s / many.ranks as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(f64::MIN_POSITIVE)
    }

    fn sizes() -> Vec<f64> {
        (12..=28).map(|k| (1u64 << k) as f64).collect() // 4 KiB … 256 MiB
    }

    #[test]
    fn the_fit_recovers_known_alpha_and_beta() {
        let truth = AlphaBeta {
            alpha_s: 12e-6,
            beta_s_per_byte: 1.0 / 9e9,
        };
        let exact: Vec<Timing> = sizes()
            .into_iter()
            .map(|bytes| Timing {
                bytes,
                seconds: truth.message(bytes),
            })
            .collect();
        let fit = AlphaBeta::fit(&exact).unwrap();
        assert!(close(fit.alpha_s, truth.alpha_s, 1e-9), "{fit:?}");
        assert!(close(fit.beta_s_per_byte, truth.beta_s_per_byte, 1e-9), "{fit:?}");
        // ±5 % multiplicative noise, alternating (a fixed pattern, so the test is repeatable).
        let noisy: Vec<Timing> = exact
            .iter()
            .enumerate()
            .map(|(i, t)| Timing {
                bytes: t.bytes,
                seconds: t.seconds * if i % 2 == 0 { 1.05 } else { 0.95 },
            })
            .collect();
        let fit = AlphaBeta::fit(&noisy).unwrap();
        assert!(close(fit.alpha_s, truth.alpha_s, 0.10), "{fit:?}");
        assert!(close(fit.beta_s_per_byte, truth.beta_s_per_byte, 0.10), "{fit:?}");
    }

    #[test]
    fn the_fit_refuses_what_it_cannot_fit() {
        let one = [Timing {
            bytes: 4096.0,
            seconds: 1e-5,
        }];
        assert_eq!(AlphaBeta::fit(&one), Err(FitError::TooFew(1)));
        let bad = [
            Timing {
                bytes: 4096.0,
                seconds: 1e-5,
            },
            Timing {
                bytes: 8192.0,
                seconds: f64::NAN,
            },
        ];
        assert!(matches!(
            AlphaBeta::fit(&bad),
            Err(FitError::Invalid { index: 1, .. })
        ));
    }

    #[test]
    fn pure_latency_gives_no_negative_beta() {
        let flat: Vec<Timing> = sizes()
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| Timing {
                bytes,
                seconds: if i % 2 == 0 { 1.01e-5 } else { 0.99e-5 },
            })
            .collect();
        let fit = AlphaBeta::fit(&flat).unwrap();
        assert!(fit.alpha_s > 0.0 && fit.beta_s_per_byte >= 0.0, "{fit:?}");
    }

    #[test]
    fn ring_and_tree_match_their_closed_forms_for_small_n() {
        let l = AlphaBeta {
            alpha_s: 1.0,
            beta_s_per_byte: 0.5,
        };
        // p = 2: ring sends 2 messages of n/2; tree sends 2 messages of n.
        assert_eq!(
            allreduce_time(Algorithm::Ring, 2, 8.0, l),
            2.0 * (1.0 + 0.5 * 4.0)
        );
        assert_eq!(
            allreduce_time(Algorithm::Tree, 2, 8.0, l),
            2.0 * (1.0 + 0.5 * 8.0)
        );
        // p = 4: ring 6 messages of n/4 = 6·(1 + 1) = 12; tree 2·2 messages of n = 4·5 = 20.
        assert_eq!(allreduce_time(Algorithm::Ring, 4, 8.0, l), 12.0);
        assert_eq!(allreduce_time(Algorithm::Tree, 4, 8.0, l), 20.0);
        // p = 3: tree depth ⌈log₂3⌉ = 2.
        assert_eq!(allreduce_time(Algorithm::Tree, 3, 8.0, l), 4.0 * 5.0);
        // Tiny messages: the tree's fewer messages win; large ones: the ring's bandwidth term.
        let latency_bound = AlphaBeta {
            alpha_s: 1.0,
            beta_s_per_byte: 1e-9,
        };
        assert!(
            allreduce_time(Algorithm::Best, 64, 8.0, latency_bound)
                == allreduce_time(Algorithm::Tree, 64, 8.0, latency_bound)
        );
        assert!(allreduce_time(Algorithm::Best, 64, 1e12, l) == allreduce_time(Algorithm::Ring, 64, 1e12, l));
        assert_eq!(allreduce_time(Algorithm::Ring, 1, 8.0, l), 0.0);
    }

    #[test]
    fn hierarchical_reduces_to_flat_forms_at_the_edges() {
        let intra = AlphaBeta {
            alpha_s: 1.0,
            beta_s_per_byte: 0.25,
        };
        let inter = AlphaBeta {
            alpha_s: 2.0,
            beta_s_per_byte: 0.5,
        };
        let one_node = Layout {
            nodes: 1,
            gpus_per_node: 4,
        };
        assert_eq!(
            hierarchical_allreduce_time(Algorithm::Ring, one_node, 8.0, intra, inter),
            allreduce_time(Algorithm::Ring, 4, 8.0, intra)
        );
        let one_gpu = Layout {
            nodes: 4,
            gpus_per_node: 1,
        };
        assert_eq!(
            hierarchical_allreduce_time(Algorithm::Ring, one_gpu, 8.0, intra, inter),
            allreduce_time(Algorithm::Ring, 4, 8.0, inter)
        );
        // 2 nodes × 2 GPUs, n = 8: inside 2·1·(1 + 0.25·4) = 4; across 2 ranks of n/2 = 4 bytes:
        // 2·(2 + 0.5·2) = 6.
        let two_by_two = Layout {
            nodes: 2,
            gpus_per_node: 2,
        };
        assert_eq!(
            hierarchical_allreduce_time(Algorithm::Ring, two_by_two, 8.0, intra, inter),
            10.0
        );
    }

    #[test]
    fn step_projection_and_efficiencies() {
        let one = project_step(1, 0.5, 0.0, 0.6);
        let many = project_step(8, 0.5, 0.25, 0.6);
        assert!(close(many.exposed_s, 0.1, 1e-12));
        assert!(close(many.step_s, 0.6, 1e-12));
        assert!(close(weak_efficiency(&one, &many), 0.5 / 0.6, 1e-12));
        // Strong scaling: each of 8 ranks computes an eighth.
        let strong = project_step(8, 0.5 / 8.0, 0.25, 0.6);
        assert!(close(
            strong_efficiency(&one, &strong),
            0.5 / (0.0625 + 0.1) / 8.0,
            1e-12
        ));
    }
}
