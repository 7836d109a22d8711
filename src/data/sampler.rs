//! The distributed sampler: which samples each rank trains on, step by step, in an epoch. The schedule
//! is a pure function of the seed, the epoch, the world layout and the sample table, so every rank
//! computes its share alone, a run resumed mid-epoch recomputes the epoch and skips the steps already
//! done, and `stage` plans node-local copies from [`Sampler::node_shards`].
//!
//! Two modes:
//! - `global`: one permutation of all samples per epoch, identical on every rank; global step k takes
//!   the k-th chunk of `size * batch` samples and rank r every `size`-th sample of it.
//! - `shard-local`: shards are dealt to nodes (balanced by sample count, re-dealt every `rotate_every`
//!   epochs), each node shuffles its samples within windows of `window_shards` shards, and the node's
//!   sample stream is dealt round-robin to its local ranks. A node reads only its own shards, and at
//!   most `window_shards` of them are open (started and not finished) at any point of the stream.
//!
//! Equal steps on every rank: an epoch has `total / (size * batch)` steps, rounded down with
//! `drop_last` and up without it (`total` = number of samples; class balancing keeps it). In global
//! mode the missing tail is padded by wrapping to the start of the permutation. In shard-local mode
//! every node's stream is cut or padded to `steps * local_size * batch`: a node dealt more than its share
//! drops the end of its stream this epoch (different samples each epoch, as the shard order is
//! reshuffled), a node dealt less repeats samples of its last window (so the window bound holds).

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How samples are spread over ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerMode {
    Global,
    ShardLocal,
}

/// The `[sampler]` table of an experiment config.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// `"global"` (the default: any rank may read any shard) or `"shard-local"` (each node reads only
    /// the shards dealt to it: use it with `stage`).
    pub mode: SamplerMode,
    /// Shards whose samples are shuffled together on a node (shard-local); at least 1.
    pub window_shards: u32,
    /// Re-deal shards to nodes every this many epochs (shard-local); 0 keeps the first deal for the
    /// whole run, so staged shards stay valid.
    pub rotate_every: u32,
    /// Oversample minority classes so that every class is drawn about equally often per epoch.
    pub balance: bool,
    /// Drop the last incomplete step instead of padding it with repeated samples.
    pub drop_last: bool,
}

/// Shards shuffled together by default: enough mixing for CT volumes, few open files per node.
pub const DEFAULT_WINDOW_SHARDS: u32 = 4;

impl Default for SamplerConfig {
    fn default() -> SamplerConfig {
        SamplerConfig {
            mode: SamplerMode::Global,
            window_shards: DEFAULT_WINDOW_SHARDS,
            rotate_every: 0,
            balance: false,
            drop_last: false,
        }
    }
}

/// Where this rank sits in the world. Shard-local mode needs the same `local_size` on every node
/// (`size == nodes * local_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub rank: usize,
    pub size: usize,
    pub node: usize,
    pub nodes: usize,
    pub local_rank: usize,
    pub local_size: usize,
}

impl Layout {
    /// A world of one process.
    pub fn single() -> Layout {
        Layout {
            rank: 0,
            size: 1,
            node: 0,
            nodes: 1,
            local_rank: 0,
            local_size: 1,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SamplerError {
    #[error("rank layout is inconsistent: {0}")]
    Layout(String),
    #[error("sampler: the batch size per rank must be at least 1")]
    ZeroBatch,
    #[error("sampler.window_shards must be at least 1")]
    ZeroWindow,
    #[error("sampler: {classes} class entries for {samples} samples (give one per sample, or none)")]
    ClassCount { classes: usize, samples: usize },
    #[error(
        "sampler.mode = \"shard-local\" needs at least one shard per node, but {shards} shards are spread \
         over {nodes} nodes; use mode = \"global\" or fewer nodes"
    )]
    TooFewShards { shards: usize, nodes: usize },
}

/// Streams of the ChaCha8 generator, one per use, so that no two uses share random numbers.
const STREAM_GLOBAL: u64 = 1;
const STREAM_DEAL: u64 = 2;
const STREAM_NODE: u64 = 3;

/// One shard: its id and its samples in index order.
#[derive(Clone, Debug)]
struct Shard {
    id: u32,
    samples: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    seed: u64,
    shard_of: Vec<u32>,
    class_of: Vec<Option<u32>>,
    layout: Layout,
    batch: usize,
    shards: Vec<Shard>, // sorted by id
    steps: usize,
}

impl Sampler {
    /// The sampler over the samples of `ds`: each sample's shard, and its class for balancing.
    pub fn for_dataset(
        cfg: &SamplerConfig,
        seed: u64,
        ds: &super::Dataset,
        layout: Layout,
        batch_per_rank: usize,
    ) -> Result<Sampler, SamplerError> {
        let shard_of: Vec<u32> = (0..ds.len()).map(|i| ds.shard_of(i)).collect();
        let class_of: Vec<Option<u32>> = (0..ds.len()).map(|i| ds.class_of(i)).collect();
        Sampler::new(cfg, seed, shard_of, class_of, layout, batch_per_rank)
    }

    /// `shard_of[i]`: shard of sample i; `class_of[i]`: class for balancing (`None` = unlabelled; an
    /// empty vector leaves every sample unlabelled).
    pub fn new(
        cfg: &SamplerConfig,
        seed: u64,
        shard_of: Vec<u32>,
        class_of: Vec<Option<u32>>,
        layout: Layout,
        batch_per_rank: usize,
    ) -> Result<Sampler, SamplerError> {
        check_layout(&layout, cfg.mode)?;
        if batch_per_rank == 0 {
            return Err(SamplerError::ZeroBatch);
        }
        if cfg.window_shards == 0 {
            return Err(SamplerError::ZeroWindow);
        }
        let class_of = match class_of.len() {
            0 => vec![None; shard_of.len()],
            n if n == shard_of.len() => class_of,
            n => {
                return Err(SamplerError::ClassCount {
                    classes: n,
                    samples: shard_of.len(),
                })
            }
        };
        let mut by_id: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, &s) in shard_of.iter().enumerate() {
            by_id.entry(s).or_default().push(i);
        }
        let shards: Vec<Shard> = by_id
            .into_iter()
            .map(|(id, samples)| Shard { id, samples })
            .collect();
        if cfg.mode == SamplerMode::ShardLocal && shards.len() < layout.nodes {
            return Err(SamplerError::TooFewShards {
                shards: shards.len(),
                nodes: layout.nodes,
            });
        }
        let per_step = layout.size * batch_per_rank;
        let steps = if cfg.drop_last {
            shard_of.len() / per_step
        } else {
            shard_of.len().div_ceil(per_step)
        };
        Ok(Sampler {
            cfg: cfg.clone(),
            seed,
            shard_of,
            class_of,
            layout,
            batch: batch_per_rank,
            shards,
            steps,
        })
    }

    /// Steps per epoch, identical on every rank (a pure function of the inputs shared by all ranks).
    pub fn steps_per_epoch(&self) -> usize {
        self.steps
    }

    /// This rank's sample indices for the epoch, `steps_per_epoch() * batch_per_rank` long, in order:
    /// step k uses entries `k * batch .. (k + 1) * batch`. Resuming at step k = calling this again and
    /// skipping `k * batch` entries.
    pub fn epoch(&self, epoch: u64) -> Vec<usize> {
        let len = self.steps * self.batch;
        match self.cfg.mode {
            SamplerMode::Global => {
                let list = self.global_list(epoch);
                // Step k's global batch is the k-th run of size × batch entries of the permutation, and
                // rank r takes the r-th block of it: one rank with m micro-batches of b sees, micro-batch
                // by micro-batch, what m ranks with one batch of b see.
                let (r, size, batch) = (self.layout.rank, self.layout.size, self.batch);
                (0..len)
                    .map(|k| list[(k / batch) * size * batch + r * batch + k % batch])
                    .collect()
            }
            SamplerMode::ShardLocal => {
                let stream = self.node_stream(epoch, self.layout.node);
                let (l, local) = (self.layout.local_rank, self.layout.local_size);
                (0..len).map(|k| stream[k * local + l]).collect()
            }
        }
    }

    /// Shards node `node` reads in epoch `epoch`, in order of first use (for staging). In global mode a
    /// node may read any shard: the list holds every shard the epoch uses, in order of first use.
    pub fn node_shards(&self, epoch: u64, node: usize) -> Vec<u32> {
        let samples = match self.cfg.mode {
            SamplerMode::Global => self.global_list(epoch),
            SamplerMode::ShardLocal if node < self.layout.nodes => self.node_stream(epoch, node),
            SamplerMode::ShardLocal => Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        samples
            .iter()
            .map(|&i| self.shard_of[i])
            .filter(|&s| seen.insert(s))
            .collect()
    }

    /// The shards dealt to each node in `epoch`, by shard id (each node's list in dealing order).
    pub fn deal(&self, epoch: u64) -> Vec<Vec<u32>> {
        self.deal_positions(epoch)
            .into_iter()
            .map(|d| d.into_iter().map(|p| self.shards[p].id).collect())
            .collect()
    }

    /// The whole epoch in global mode: `steps * size * batch` samples; global step k is chunk k.
    fn global_list(&self, epoch: u64) -> Vec<usize> {
        let mut rng = rng(self.seed, STREAM_GLOBAL, epoch, 0);
        let all: Vec<usize> = (0..self.shard_of.len()).collect();
        let mut order = self.expand_balanced(&all, &mut rng);
        order.shuffle(&mut rng);
        let total = self.steps * self.layout.size * self.batch;
        (0..total).map(|i| order[i % order.len()]).collect()
    }

    /// Shard positions (into `self.shards`) per node for the rotation period of `epoch`: largest shards
    /// first (seeded order among equals), each to the node with the fewest samples so far.
    fn deal_positions(&self, epoch: u64) -> Vec<Vec<usize>> {
        let period = if self.cfg.rotate_every == 0 {
            0
        } else {
            epoch / self.cfg.rotate_every as u64
        };
        let mut rng = rng(self.seed, STREAM_DEAL, period, 0);
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        order.shuffle(&mut rng);
        order.sort_by_key(|&p| std::cmp::Reverse(self.shards[p].samples.len())); // stable
        let nodes = self.layout.nodes;
        let mut dealt = vec![Vec::new(); nodes];
        let mut load = vec![0usize; nodes];
        for p in order {
            let node = (0..nodes).min_by_key(|&n| (load[n], n)).unwrap_or(0);
            load[node] += self.shards[p].samples.len();
            dealt[node].push(p);
        }
        dealt
    }

    /// Node `node`'s sample stream in shard-local mode, `steps * local_size * batch` long; local rank l
    /// takes entries l, l + local_size, ...
    fn node_stream(&self, epoch: u64, node: usize) -> Vec<usize> {
        let mut shards = self.deal_positions(epoch).swap_remove(node);
        let mut rng = rng(self.seed, STREAM_NODE, epoch, node as u64);
        shards.shuffle(&mut rng);
        let samples: Vec<usize> = shards
            .iter()
            .flat_map(|&p| self.shards[p].samples.iter().copied())
            .collect();
        let copies = self.balanced_copies(&samples, &mut rng);
        let copies_of: BTreeMap<usize, u32> = samples.iter().copied().zip(copies).collect();
        let mut stream = Vec::with_capacity(samples.len());
        let mut last_window = 0..0;
        for window in shards.chunks(self.cfg.window_shards as usize) {
            let start = stream.len();
            for &p in window {
                for &i in &self.shards[p].samples {
                    stream.extend(std::iter::repeat_n(i, copies_of[&i] as usize));
                }
            }
            stream[start..].shuffle(&mut rng);
            if stream.len() > start {
                last_window = start..stream.len();
            }
        }
        let target = self.steps * self.layout.local_size * self.batch;
        stream.truncate(target);
        let pad: Vec<usize> = stream[last_window.start.min(stream.len())..].to_vec();
        let mut k = 0;
        while stream.len() < target && !pad.is_empty() {
            stream.push(pad[k % pad.len()]);
            k += 1;
        }
        stream
    }

    /// `samples` with each repeated as often as [`Self::balanced_copies`] says.
    fn expand_balanced(&self, samples: &[usize], rng: &mut ChaCha8Rng) -> Vec<usize> {
        let copies = self.balanced_copies(samples, rng);
        samples
            .iter()
            .zip(copies)
            .flat_map(|(&i, c)| std::iter::repeat_n(i, c as usize))
            .collect()
    }

    /// How many times each of `samples` is drawn this epoch. Without balancing, once each. With it,
    /// the labelled samples' slots are split equally between the classes present; a class fills its
    /// slots with whole passes over its samples plus a seeded subset for the remainder, so minority
    /// classes are repeated and majority classes subsampled. Unlabelled samples are drawn once. The
    /// total equals `samples.len()`.
    fn balanced_copies(&self, samples: &[usize], rng: &mut ChaCha8Rng) -> Vec<u32> {
        let mut copies = vec![1u32; samples.len()];
        if !self.cfg.balance {
            return copies;
        }
        let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new(); // class → positions in `samples`
        for (pos, &i) in samples.iter().enumerate() {
            if let Some(c) = self.class_of[i] {
                by_class.entry(c).or_default().push(pos);
            }
        }
        let labelled: usize = by_class.values().map(Vec::len).sum();
        let classes = by_class.len();
        for (j, members) in by_class.values_mut().enumerate() {
            let quota = labelled / classes + usize::from(j < labelled % classes);
            let (whole, rest) = (quota / members.len(), quota % members.len());
            members.shuffle(rng);
            for (k, &pos) in members.iter().enumerate() {
                copies[pos] = (whole + usize::from(k < rest)) as u32;
            }
        }
        copies
    }
}

fn check_layout(l: &Layout, mode: SamplerMode) -> Result<(), SamplerError> {
    let bad = |what: String| Err(SamplerError::Layout(what));
    if l.size == 0 || l.rank >= l.size {
        return bad(format!("rank {} of a world of {}", l.rank, l.size));
    }
    if l.nodes == 0 || l.node >= l.nodes {
        return bad(format!("rank {}: node {} of {} nodes", l.rank, l.node, l.nodes));
    }
    if l.local_size == 0 || l.local_rank >= l.local_size {
        return bad(format!(
            "rank {}: local rank {} of {} on its node",
            l.rank, l.local_rank, l.local_size
        ));
    }
    if mode == SamplerMode::ShardLocal && l.size != l.nodes * l.local_size {
        return bad(format!(
            "rank {}: shard-local sampling needs the same number of ranks on every node, but {} ranks \
             over {} nodes with {} on this one; launch equal ranks per node or use mode = \"global\"",
            l.rank, l.size, l.nodes, l.local_size
        ));
    }
    Ok(())
}

/// The generator for one use (`stream`) and its coordinates (epoch, node, period), from the run seed.
pub(crate) fn rng(seed: u64, stream: u64, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key.chunks_exact_mut(8).zip([seed, stream, a, b]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};

    use super::*;

    fn layouts(nodes: usize, local: usize) -> Vec<Layout> {
        (0..nodes * local)
            .map(|rank| Layout {
                rank,
                size: nodes * local,
                node: rank / local,
                nodes,
                local_rank: rank % local,
                local_size: local,
            })
            .collect()
    }

    fn config(mode: SamplerMode) -> SamplerConfig {
        SamplerConfig {
            mode,
            ..SamplerConfig::default()
        }
    }

    /// Samplers for every rank of the world.
    fn world(
        cfg: &SamplerConfig,
        seed: u64,
        shard_of: &[u32],
        nodes: usize,
        local: usize,
        batch: usize,
    ) -> Vec<Sampler> {
        layouts(nodes, local)
            .into_iter()
            .map(|l| Sampler::new(cfg, seed, shard_of.to_vec(), vec![], l, batch).unwrap())
            .collect()
    }

    /// `shards` shards of `per_shard` samples, samples of a shard contiguous.
    fn uniform_shards(shards: u32, per_shard: u32) -> Vec<u32> {
        (0..shards * per_shard).map(|i| i / per_shard).collect()
    }

    /// Shards of uneven sizes 1..=max, interleaved sample ids.
    fn uneven_shards(shards: u32, seed: u64) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut shard_of: Vec<u32> = (0..shards)
            .flat_map(|s| std::iter::repeat_n(s, 1 + (s as usize * 7) % 11))
            .collect();
        shard_of.shuffle(&mut rng);
        shard_of
    }

    /// Most shards open (started, not finished) at once along `samples`.
    fn max_open_shards(samples: &[usize], shard_of: &[u32]) -> usize {
        let mut first = HashMap::new();
        let mut last = HashMap::new();
        for (pos, &i) in samples.iter().enumerate() {
            first.entry(shard_of[i]).or_insert(pos);
            last.insert(shard_of[i], pos);
        }
        (0..samples.len())
            .map(|pos| {
                first
                    .keys()
                    .filter(|s| first[*s] <= pos && pos <= last[*s])
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// A node's stream rebuilt from its ranks' lists (local rank l holds positions l, l + local, ...).
    fn interleave(lists: &[Vec<usize>]) -> Vec<usize> {
        let len = lists[0].len();
        (0..len)
            .flat_map(|k| lists.iter().map(move |list| list[k]))
            .collect()
    }

    #[test]
    fn global_shares_are_disjoint_equal_and_cover_everything() {
        for (n, ranks, batch) in [(48, 4, 3), (50, 4, 3), (7, 2, 2), (5, 3, 4), (100, 1, 8)] {
            let shard_of = uniform_shards(n, 1);
            let cfg = config(SamplerMode::Global);
            let ranks_samplers = world(&cfg, 9, &shard_of, 1, ranks, batch);
            let steps = ranks_samplers[0].steps_per_epoch();
            assert_eq!(steps, (n as usize).div_ceil(ranks * batch));
            let lists: Vec<Vec<usize>> = ranks_samplers.iter().map(|s| s.epoch(3)).collect();
            for (r, list) in lists.iter().enumerate() {
                assert_eq!(ranks_samplers[r].steps_per_epoch(), steps);
                assert_eq!(list.len(), steps * batch);
            }
            let union: HashSet<usize> = lists.iter().flatten().copied().collect();
            assert_eq!(union.len(), n as usize, "n={n}: every sample used");
            if n as usize % (ranks * batch) == 0 {
                assert_eq!(
                    lists.iter().flatten().count(),
                    n as usize,
                    "no repeats when it divides"
                );
            }

            let cfg = SamplerConfig {
                drop_last: true,
                ..cfg
            };
            let dropped = world(&cfg, 9, &shard_of, 1, ranks, batch);
            let steps = n as usize / (ranks * batch);
            let lists: Vec<Vec<usize>> = dropped.iter().map(|s| s.epoch(3)).collect();
            let all: Vec<usize> = lists.iter().flatten().copied().collect();
            let distinct: HashSet<usize> = all.iter().copied().collect();
            assert_eq!(all.len(), steps * ranks * batch);
            assert_eq!(distinct.len(), all.len(), "n={n}: shares disjoint");
        }
    }

    #[test]
    fn global_epochs_differ_and_seeds_repeat() {
        let shard_of = uniform_shards(10, 10);
        let cfg = config(SamplerMode::Global);
        let a = world(&cfg, 1, &shard_of, 2, 2, 4);
        let b = world(&cfg, 1, &shard_of, 2, 2, 4);
        let c = world(&cfg, 2, &shard_of, 2, 2, 4);
        assert_eq!(a[1].epoch(5), b[1].epoch(5));
        assert_ne!(a[1].epoch(5), a[1].epoch(6));
        assert_ne!(a[1].epoch(5), c[1].epoch(5));
        // Global step k is one chunk of the epoch's permutation, spread over the ranks.
        let full = a[0].global_list(5);
        let step2: BTreeSet<usize> = a.iter().flat_map(|s| s.epoch(5)[8..12].to_vec()).collect();
        assert_eq!(step2, full[2 * 16..3 * 16].iter().copied().collect());
    }

    /// Runs every check of shard-local mode on one world.
    fn check_shard_local(cfg: &SamplerConfig, shard_of: &[u32], nodes: usize, local: usize, batch: usize) {
        let samplers = world(cfg, 17, shard_of, nodes, local, batch);
        let steps = samplers[0].steps_per_epoch();
        let n = shard_of.len();
        let per_step = nodes * local * batch;
        assert_eq!(
            steps,
            if cfg.drop_last {
                n / per_step
            } else {
                n.div_ceil(per_step)
            }
        );
        for epoch in 0..4 {
            let deal = samplers[0].deal(epoch);
            let dealt: Vec<u32> = deal.iter().flatten().copied().collect();
            assert_eq!(
                dealt.iter().copied().collect::<BTreeSet<_>>().len(),
                dealt.len(),
                "a shard on two nodes"
            );
            for node in 0..nodes {
                let ranks = &samplers[node * local..(node + 1) * local];
                let lists: Vec<Vec<usize>> = ranks.iter().map(|s| s.epoch(epoch)).collect();
                for (s, list) in ranks.iter().zip(&lists) {
                    assert_eq!(s.steps_per_epoch(), steps);
                    assert_eq!(list.len(), steps * batch);
                    assert!(max_open_shards(list, shard_of) <= cfg.window_shards as usize);
                }
                let stream = interleave(&lists);
                let mut seen = HashSet::new();
                let first_use: Vec<u32> = stream
                    .iter()
                    .map(|&i| shard_of[i])
                    .filter(|&s| seen.insert(s))
                    .collect();
                for (s, _) in ranks.iter().enumerate() {
                    assert_eq!(samplers[node * local + s].node_shards(epoch, node), first_use);
                }
                let own: HashSet<u32> = deal[node].iter().copied().collect();
                assert!(
                    first_use.iter().all(|s| own.contains(s)),
                    "node {node} reads a shard it was not dealt"
                );
                assert!(max_open_shards(&stream, shard_of) <= cfg.window_shards as usize);
            }
        }
    }

    #[test]
    fn shard_local_worlds() {
        let base = config(SamplerMode::ShardLocal);
        for window in [1, 2, 3] {
            for drop_last in [false, true] {
                let cfg = SamplerConfig {
                    window_shards: window,
                    drop_last,
                    rotate_every: 2,
                    ..base.clone()
                };
                check_shard_local(&cfg, &uniform_shards(8, 6), 2, 2, 3);
                check_shard_local(&cfg, &uniform_shards(5, 3), 1, 3, 2);
                check_shard_local(&cfg, &uneven_shards(13, 4), 3, 2, 2);
                check_shard_local(&cfg, &uneven_shards(4, 5), 4, 1, 5);
            }
        }
    }

    #[test]
    fn shard_local_covers_everything_when_shares_divide() {
        // 8 shards of 6 samples on 2 nodes of 2 ranks, batch 3: each node gets 24 samples = 4 steps.
        let shard_of = uniform_shards(8, 6);
        let samplers = world(&config(SamplerMode::ShardLocal), 3, &shard_of, 2, 2, 3);
        let all: Vec<usize> = samplers.iter().flat_map(|s| s.epoch(0)).collect();
        assert_eq!(all.len(), 48);
        assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), 48);
    }

    #[test]
    fn rotation_redeals_after_k_epochs() {
        let shard_of = uniform_shards(16, 4);
        let cfg = SamplerConfig {
            rotate_every: 3,
            ..config(SamplerMode::ShardLocal)
        };
        let s = &world(&cfg, 5, &shard_of, 4, 1, 2)[0];
        let sets = |e| {
            s.deal(e)
                .into_iter()
                .map(|d| d.into_iter().collect::<BTreeSet<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(sets(0), sets(1));
        assert_eq!(sets(0), sets(2));
        assert_ne!(sets(2), sets(3));
        assert_eq!(sets(3), sets(5));
        assert_ne!(sets(5), sets(6));
        // Within a period only the order changes (each node reads its 4 shards whole: 16 samples).
        let as_set = |v: Vec<u32>| v.into_iter().collect::<BTreeSet<_>>();
        assert_eq!(as_set(s.node_shards(0, 1)), as_set(s.node_shards(1, 1)));
        assert!((1..3).any(|e| s.node_shards(0, 1) != s.node_shards(e, 1)));
        let never = SamplerConfig {
            rotate_every: 0,
            ..cfg
        };
        let s = &world(&never, 5, &shard_of, 4, 1, 2)[0];
        let first = s.deal(0);
        let sorted = |d: Vec<Vec<u32>>| {
            d.into_iter()
                .map(|d| d.into_iter().collect::<BTreeSet<_>>())
                .collect::<Vec<_>>()
        };
        for e in 1..10 {
            assert_eq!(sorted(s.deal(e)), sorted(first.clone()));
        }
    }

    #[test]
    fn deal_is_balanced_by_sample_count() {
        let shard_of = uneven_shards(40, 8);
        let s = &world(&config(SamplerMode::ShardLocal), 5, &shard_of, 4, 1, 2)[0];
        let counts: HashMap<u32, usize> = shard_of.iter().fold(HashMap::new(), |mut m, &x| {
            *m.entry(x).or_default() += 1;
            m
        });
        let largest = counts.values().copied().max().unwrap();
        let loads: Vec<usize> = s
            .deal(0)
            .iter()
            .map(|d| d.iter().map(|x| counts[x]).sum())
            .collect();
        let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(hi - lo <= largest, "{loads:?}");
    }

    fn class_shares(lists: &[Vec<usize>], class_of: &[Option<u32>]) -> HashMap<Option<u32>, f64> {
        let all: Vec<usize> = lists.iter().flatten().copied().collect();
        let mut counts: HashMap<Option<u32>, f64> = HashMap::new();
        for &i in &all {
            *counts.entry(class_of[i]).or_default() += 1.0;
        }
        counts.values_mut().for_each(|c| *c /= all.len() as f64);
        counts
    }

    #[test]
    fn balance_equalises_class_frequencies() {
        // 10% positives, scattered over 20 shards of 20 samples.
        let shard_of = uniform_shards(20, 20);
        let class_of: Vec<Option<u32>> = (0..400).map(|i| Some(u32::from(i % 10 == 3))).collect();
        for mode in [SamplerMode::Global, SamplerMode::ShardLocal] {
            let cfg = SamplerConfig {
                balance: true,
                ..config(mode)
            };
            let lists: Vec<Vec<usize>> = layouts(2, 2)
                .into_iter()
                .map(|l| {
                    Sampler::new(&cfg, 4, shard_of.clone(), class_of.clone(), l, 5)
                        .unwrap()
                        .epoch(1)
                })
                .collect();
            let shares = class_shares(&lists, &class_of);
            assert!((shares[&Some(1)] - 0.5).abs() < 0.05, "{mode:?}: {shares:?}");
            // Every positive is drawn, about five times each.
            let positives: HashSet<usize> =
                lists.iter().flatten().copied().filter(|&i| i % 10 == 3).collect();
            assert_eq!(positives.len(), 40);
            let unbalanced = SamplerConfig {
                balance: false,
                ..cfg
            };
            let lists: Vec<Vec<usize>> = layouts(2, 2)
                .into_iter()
                .map(|l| {
                    Sampler::new(&unbalanced, 4, shard_of.clone(), class_of.clone(), l, 5)
                        .unwrap()
                        .epoch(1)
                })
                .collect();
            assert!((class_shares(&lists, &class_of)[&Some(1)] - 0.1).abs() < 0.03);
        }
    }

    #[test]
    fn balance_keeps_unlabelled_samples_once() {
        let shard_of = uniform_shards(1, 30);
        let class_of: Vec<Option<u32>> = (0..30)
            .map(|i| {
                if i < 10 {
                    None
                } else if i < 28 {
                    Some(0)
                } else {
                    Some(7)
                }
            })
            .collect();
        let cfg = SamplerConfig {
            balance: true,
            ..config(SamplerMode::Global)
        };
        let s = Sampler::new(&cfg, 1, shard_of, class_of.clone(), Layout::single(), 10).unwrap();
        let list = s.epoch(0);
        assert_eq!(list.len(), 30);
        let shares = class_shares(&[list.clone()], &class_of);
        assert_eq!(
            (shares[&None], shares[&Some(0)], shares[&Some(7)]),
            (10.0 / 30.0, 10.0 / 30.0, 10.0 / 30.0)
        );
        assert_eq!(list.iter().filter(|&&i| i < 10).collect::<HashSet<_>>().len(), 10);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cfg = config(SamplerMode::ShardLocal);
        let two = layouts(2, 1)[0];
        let err = Sampler::new(&cfg, 0, vec![0, 0, 0], vec![], two, 1).unwrap_err();
        assert_eq!(err, SamplerError::TooFewShards { shards: 1, nodes: 2 });
        assert!(err.to_string().contains("global"));
        assert_eq!(
            Sampler::new(&cfg, 0, vec![0], vec![], Layout::single(), 0).unwrap_err(),
            SamplerError::ZeroBatch
        );
        let zero_window = SamplerConfig {
            window_shards: 0,
            ..cfg.clone()
        };
        assert_eq!(
            Sampler::new(&zero_window, 0, vec![0], vec![], Layout::single(), 1).unwrap_err(),
            SamplerError::ZeroWindow
        );
        let uneven = Layout {
            rank: 0,
            size: 3,
            node: 0,
            nodes: 2,
            local_rank: 0,
            local_size: 2,
        };
        assert!(matches!(
            Sampler::new(&cfg, 0, vec![0, 1], vec![], uneven, 1),
            Err(SamplerError::Layout(_))
        ));
        assert!(Sampler::new(&config(SamplerMode::Global), 0, vec![0, 1], vec![], uneven, 1).is_ok());
        let outside = Layout {
            rank: 4,
            ..Layout::single()
        };
        assert!(matches!(
            Sampler::new(&cfg, 0, vec![0], vec![], outside, 1),
            Err(SamplerError::Layout(_))
        ));
        let classes = Sampler::new(&cfg, 0, vec![0, 0], vec![None], Layout::single(), 1).unwrap_err();
        assert_eq!(
            classes,
            SamplerError::ClassCount {
                classes: 1,
                samples: 2
            }
        );
        // An empty dataset in global mode: no steps, no panic.
        let empty = Sampler::new(
            &config(SamplerMode::Global),
            0,
            vec![],
            vec![],
            Layout::single(),
            4,
        )
        .unwrap();
        assert_eq!((empty.steps_per_epoch(), empty.epoch(0)), (0, vec![]));
        assert!(empty.node_shards(0, 0).is_empty());
    }

    #[test]
    fn config_reads_from_toml() {
        let cfg: SamplerConfig = toml::from_str("mode = \"global\"\nbalance = true\n").unwrap();
        assert_eq!(
            cfg,
            SamplerConfig {
                mode: SamplerMode::Global,
                balance: true,
                ..SamplerConfig::default()
            }
        );
        let cfg: SamplerConfig =
            toml::from_str("mode = \"shard-local\"\nwindow_shards = 8\nrotate_every = 5\n").unwrap();
        assert_eq!(
            (cfg.mode, cfg.window_shards, cfg.rotate_every),
            (SamplerMode::ShardLocal, 8, 5)
        );
        let err = toml::from_str::<SamplerConfig>("windows = 8\n").unwrap_err();
        assert!(err.to_string().contains("windows"), "{err}");
        assert!(toml::from_str::<SamplerConfig>("mode = \"local\"\n").is_err());
    }
}
