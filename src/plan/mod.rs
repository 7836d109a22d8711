//! `medtrain plan`: projects a training job to a cluster that is not here, from parts measured here or
//! given: one rank's step time (`bench step`), the allreduce cost model (`bench comm`, or a preset of a
//! published link rate), the model's gradient size, the real sampler's steps per epoch and the real
//! staging plan (the same function `stage` runs, so its bytes per node equal `stage --dry-run`).

pub mod cli;

use crate::dist::costmodel::{
    hierarchical_allreduce_time, project_step, strong_efficiency, weak_efficiency, Algorithm, AlphaBeta,
    Layout, StepProjection,
};
use serde::Serialize;

/// A link class with a published rate, for clusters whose network cannot be measured from here. α is
/// a typical MPI small-message latency of that class, β the inverse of the nominal data rate: a
/// projection with a preset is an upper bound on what the network gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPreset {
    /// InfiniBand EDR, 100 Gb/s per port (IBTA specification): 12.5 GB/s, α 1.5 µs.
    Edr,
    /// InfiniBand HDR, 200 Gb/s per port (IBTA specification): 25 GB/s, α 1.5 µs.
    Hdr,
    /// NVLink 2 of a V100 SXM2 (NVIDIA V100 datasheet: 300 GB/s aggregate, both directions, six
    /// links): 150 GB/s one way, α 10 µs (an NCCL step, not a raw copy).
    Nvlink2,
    /// PCIe 3.0 x16 (PCI-SIG: 8 GT/s × 16 lanes, 128b/130b): 15.75 GB/s, α 5 µs.
    Pcie3,
}

impl LinkPreset {
    pub fn alpha_beta(self) -> AlphaBeta {
        let (alpha_s, bytes_per_s) = match self {
            LinkPreset::Edr => (1.5e-6, 12.5e9),
            LinkPreset::Hdr => (1.5e-6, 25e9),
            LinkPreset::Nvlink2 => (10e-6, 150e9),
            LinkPreset::Pcie3 => (5e-6, 15.75e9),
        };
        AlphaBeta {
            alpha_s,
            beta_s_per_byte: 1.0 / bytes_per_s,
        }
    }
}

/// What the projection is made from.
#[derive(Clone, Debug, Serialize)]
pub struct PlanInputs {
    /// Seconds of one rank's step (forward, backward, update) at the config's batch.
    pub compute_s: f64,
    /// Training FLOPs of one rank's step (3× the forward FLOPs of convolutions and linear layers).
    pub step_flops: f64,
    pub batch_per_rank: u32,
    pub gradient_bytes: u64,
    pub gpus_per_node: usize,
    pub intra: AlphaBeta,
    pub inter: AlphaBeta,
    /// Fraction of the allreduce hidden behind backward.
    pub overlap: f64,
    pub nvme_bytes: Option<u64>,
    /// Shared-file-system read bandwidth per node and in total, bytes per second.
    pub read_node_bps: Option<f64>,
    pub read_total_bps: Option<f64>,
    pub epochs: u32,
}

/// What the sampler and `stage`'s plan say for one layout.
#[derive(Clone, Debug, Serialize)]
pub struct LayoutFacts {
    pub steps_per_epoch: usize,
    /// Bytes each node stages (the largest node first matters: it finishes last).
    pub max_node_bytes: u64,
    pub total_bytes: u64,
    /// Bytes of the shard each node needs first (what a job with asynchronous staging waits for).
    pub first_shard_bytes: u64,
}

/// One row of the projection.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRow {
    pub ranks: usize,
    pub nodes: usize,
    pub step: StepProjection,
    pub images_per_s: f64,
    pub weak_efficiency: f64,
    pub strong_efficiency: f64,
    pub steps_per_epoch: usize,
    pub epoch_s: f64,
    pub stage_bytes_per_node: u64,
    pub stage_s: Option<f64>,
    pub first_step_wait_s: Option<f64>,
    /// Whether the node's share fits the node-local disk (None: no size given).
    pub fits_nvme: Option<bool>,
}

/// The layouts the table lists: powers of two up to `max_ranks`, packed onto nodes of
/// `gpus_per_node`.
pub fn layouts(max_ranks: usize, gpus_per_node: usize) -> Vec<Layout> {
    let g = gpus_per_node.max(1);
    std::iter::successors(Some(1usize), |r| r.checked_mul(2))
        .take_while(|&r| r <= max_ranks.max(1))
        .map(|ranks| Layout {
            nodes: ranks.div_ceil(g),
            gpus_per_node: ranks.min(g),
        })
        .collect()
}

/// Staging seconds of `bytes` per node when every node reads at once.
fn read_seconds(bytes: u64, nodes: usize, inputs: &PlanInputs) -> Option<f64> {
    let per_node = match (inputs.read_node_bps, inputs.read_total_bps) {
        (Some(n), Some(t)) => n.min(t / nodes as f64),
        (Some(n), None) => n,
        (None, Some(t)) => t / nodes as f64,
        (None, None) => return None,
    };
    Some(bytes as f64 / per_node)
}

/// The row of one layout. Weak scaling keeps the per-rank batch; strong scaling keeps the global
/// batch of one rank's step and divides its compute (assumed linear in the batch).
pub fn project(layout: Layout, facts: &LayoutFacts, inputs: &PlanInputs) -> PlanRow {
    let ranks = layout.ranks();
    let allreduce = hierarchical_allreduce_time(
        Algorithm::Best,
        layout,
        inputs.gradient_bytes as f64,
        inputs.intra,
        inputs.inter,
    );
    let one = project_step(1, inputs.compute_s, 0.0, inputs.overlap);
    let step = project_step(ranks, inputs.compute_s, allreduce, inputs.overlap);
    let strong = project_step(ranks, inputs.compute_s / ranks as f64, allreduce, inputs.overlap);
    let stage_s = read_seconds(facts.max_node_bytes, layout.nodes, inputs);
    PlanRow {
        ranks,
        nodes: layout.nodes,
        images_per_s: (ranks as f64 * inputs.batch_per_rank as f64) / step.step_s,
        weak_efficiency: weak_efficiency(&one, &step),
        strong_efficiency: strong_efficiency(&one, &strong),
        steps_per_epoch: facts.steps_per_epoch,
        epoch_s: facts.steps_per_epoch as f64 * step.step_s,
        stage_bytes_per_node: facts.max_node_bytes,
        stage_s,
        first_step_wait_s: read_seconds(facts.first_shard_bytes, layout.nodes, inputs),
        fits_nvme: inputs.nvme_bytes.map(|n| facts.max_node_bytes <= n),
        step,
    }
}

/// The assumptions every plan states beside its table.
pub fn assumptions(inputs: &PlanInputs) -> Vec<String> {
    vec![
        format!(
            "compute: {:.4} s per step of {} images per rank ({:.1} GFLOP, so {:.2} TFLOP/s), the same on every rank; \
             strong scaling divides it linearly",
            inputs.compute_s,
            inputs.batch_per_rank,
            inputs.step_flops / 1e9,
            inputs.step_flops / inputs.compute_s / 1e12
        ),
        format!(
            "allreduce: {} gradient bytes per step, two-level (reduce-scatter in the node, allreduce across nodes, \
             allgather in the node), the cheaper of ring and tree at each level",
            inputs.gradient_bytes
        ),
        format!(
            "links: intra-node α {:.2} µs, {:.2} GB/s; inter-node α {:.2} µs, {:.2} GB/s",
            inputs.intra.alpha_s * 1e6,
            inputs.intra.bandwidth() / 1e9,
            inputs.inter.alpha_s * 1e6,
            inputs.inter.bandwidth() / 1e9
        ),
        format!(
            "overlap: {:.0} % of the allreduce hidden behind backward",
            inputs.overlap * 100.0
        ),
        "data loading keeps up with compute (staged shards on node-local disks); no stragglers".into(),
        "staging: every node reads its share at once from the shared file system; steps per epoch and \
         bytes per node come from the real sampler and staging plan"
            .into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> PlanInputs {
        PlanInputs {
            compute_s: 0.5,
            step_flops: 1e12,
            batch_per_rank: 8,
            gradient_bytes: 100_000_000,
            gpus_per_node: 4,
            intra: LinkPreset::Nvlink2.alpha_beta(),
            inter: LinkPreset::Edr.alpha_beta(),
            overlap: 0.0,
            nvme_bytes: Some(1_000),
            read_node_bps: Some(100.0),
            read_total_bps: Some(200.0),
            epochs: 1,
        }
    }

    #[test]
    fn layouts_pack_ranks_onto_nodes() {
        let l = layouts(512, 4);
        assert_eq!(l.len(), 10);
        assert_eq!((l[0].nodes, l[0].gpus_per_node), (1, 1));
        assert_eq!((l[2].nodes, l[2].gpus_per_node), (1, 4));
        assert_eq!((l[9].nodes, l[9].gpus_per_node, l[9].ranks()), (128, 4, 512));
    }

    #[test]
    fn a_row_follows_the_closed_forms() {
        let i = inputs();
        let facts = LayoutFacts {
            steps_per_epoch: 10,
            max_node_bytes: 2_000,
            total_bytes: 4_000,
            first_shard_bytes: 100,
        };
        let layout = Layout {
            nodes: 2,
            gpus_per_node: 4,
        };
        let row = project(layout, &facts, &i);
        let ar = hierarchical_allreduce_time(Algorithm::Best, layout, 1e8, i.intra, i.inter);
        assert_eq!(row.step.step_s, 0.5 + ar);
        assert_eq!(row.epoch_s, 10.0 * row.step.step_s);
        assert_eq!(row.images_per_s, 64.0 / row.step.step_s);
        // Each of 2 nodes reads at min(100, 200 / 2) = 100 B/s.
        assert_eq!(row.stage_s, Some(20.0));
        assert_eq!(row.first_step_wait_s, Some(1.0));
        assert_eq!(row.fits_nvme, Some(false));
        assert!(row.weak_efficiency < 1.0 && row.weak_efficiency > 0.0);
        let single = project(
            Layout {
                nodes: 1,
                gpus_per_node: 1,
            },
            &facts,
            &i,
        );
        assert_eq!(single.weak_efficiency, 1.0);
        assert_eq!(single.strong_efficiency, 1.0);
    }
}
