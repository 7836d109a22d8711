//! `medtrain bench allreduce` and `bench comm`: times the bucketed gradient allreduce against one blocking allreduce
//! of the same bytes, and with `--check` verifies closed-form averages. Run it under `mpirun -np N`
//! or `srun --mpi=pmix`; it is also the test driver of the MPI layer.

use super::bucket::{BucketReducer, ReduceStats, DEFAULT_BUCKET_BYTES};
use super::dist_failure;
use super::World;
use crate::config::parse_size;
use crate::exit::{Failure, EXIT_FAILURES, EXIT_OK};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct AllreduceArgs {
    /// Total gradient size, e.g. 100MB or 1GiB.
    #[arg(long, default_value = "100MB")]
    pub bytes: String,
    /// Number of parameter tensors (of uneven sizes) the gradient is made of.
    #[arg(long, default_value_t = 64)]
    pub tensors: usize,
    /// Target bucket size, e.g. 25MiB.
    #[arg(long)]
    pub bucket_bytes: Option<String>,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Verify every result against its closed form; exit 1 on the first mismatch.
    #[arg(long)]
    pub check: bool,
    /// Print the summary as JSON on stdout (rank 0); per-rank lines then go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Make this rank fail after the first iteration while the others wait in a collective.
    #[arg(long, hide = true)]
    pub fail_rank: Option<usize>,
}

/// Floats per tensor never fall below this many per tensor (keeps every tensor non-empty).
const MIN_FLOATS_PER_TENSOR: usize = 16;

pub fn allreduce(args: AllreduceArgs) -> Result<i32, Failure> {
    let usage = |m: String| Failure::Usage(m);
    let bytes = parse_size("--bytes", &args.bytes).map_err(|e| usage(e.to_string()))?;
    let bucket_bytes = match &args.bucket_bytes {
        Some(s) => parse_size("--bucket-bytes", s).map_err(|e| usage(e.to_string()))? as usize,
        None => DEFAULT_BUCKET_BYTES,
    };
    let len = (bytes / 4) as usize;
    if args.tensors == 0 || len < args.tensors * MIN_FLOATS_PER_TENSOR {
        return Err(usage(format!(
            "--bytes {} is too small for --tensors {} (at least {} bytes per tensor)",
            args.bytes,
            args.tensors,
            4 * MIN_FLOATS_PER_TENSOR
        )));
    }
    if args.iters == 0 {
        return Err(usage("--iters must be at least 1".into()));
    }
    let world = World::init().map_err(dist_failure)?;
    let plan = Plan {
        len,
        boundaries: tensor_starts(len, args.tensors),
        bucket_bytes,
        iters: args.iters,
        check: args.check,
        fail_rank: args.fail_rank,
    };
    let result = match bench(&world, &plan) {
        Ok(mine) => mine,
        Err(reason) if world.is_mpi() => world.abort(EXIT_FAILURES, &reason),
        Err(reason) => return Err(Failure::Job(reason)),
    };
    let gathered: Vec<RankResult> = world
        .allgather_bytes(&serde_json::to_vec(&result).expect("serialisable"))
        .iter()
        .map(|b| serde_json::from_slice(b).expect("every rank sends a RankResult"))
        .collect();
    let line = rank_line(&result);
    if args.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    let summary = Summary::new(&world, &plan, gathered, &result.stats);
    if world.rank() == 0 {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).expect("serialisable")
            );
        } else {
            print_summary(&summary);
        }
    }
    Ok(if summary.ok { EXIT_OK } else { EXIT_FAILURES })
}

#[derive(clap::Args, Debug)]
pub struct CommArgs {
    /// Smallest message (sizes go up by factors of 4).
    #[arg(long, default_value = "4KiB")]
    pub min_bytes: String,
    /// Largest message.
    #[arg(long, default_value = "256MiB")]
    pub max_bytes: String,
    /// Timed iterations per size (the median is taken, then the slowest rank's).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Target bucket size of the bucketed path (training's default when absent).
    #[arg(long)]
    pub bucket_bytes: Option<String>,
    /// Write comm.json (sizes, timings, fits) into this directory (rank 0).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Print the report as JSON on stdout (rank 0).
    #[arg(long)]
    pub json: bool,
}

/// One message size of `bench comm`: the slowest rank's median of each path.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CommPoint {
    pub bytes: u64,
    pub buckets: usize,
    pub bucketed_s: f64,
    pub raw_s: f64,
}

/// What `bench comm` measures: the points and the α-β fit of each path.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CommReport {
    pub world_size: usize,
    pub nodes: usize,
    pub bucket_bytes: usize,
    pub points: Vec<CommPoint>,
    pub bucketed: super::costmodel::AlphaBeta,
    pub raw: super::costmodel::AlphaBeta,
}

pub fn comm(args: CommArgs) -> Result<i32, Failure> {
    let usage = |m: String| Failure::Usage(m);
    let min = parse_size("--min-bytes", &args.min_bytes).map_err(|e| usage(e.to_string()))?;
    let max = parse_size("--max-bytes", &args.max_bytes).map_err(|e| usage(e.to_string()))?;
    let bucket_bytes = match &args.bucket_bytes {
        Some(s) => parse_size("--bucket-bytes", s).map_err(|e| usage(e.to_string()))? as usize,
        None => DEFAULT_BUCKET_BYTES,
    };
    let floor = (4 * MIN_FLOATS_PER_TENSOR) as u64;
    if min < floor || max < min {
        return Err(usage(format!(
            "--min-bytes {} and --max-bytes {}: need {floor} ≤ min ≤ max",
            args.min_bytes, args.max_bytes
        )));
    }
    if args.iters == 0 {
        return Err(usage("--iters must be at least 1".into()));
    }
    let world = World::init().map_err(dist_failure)?;
    if world.size() < 2 {
        return Err(usage(
            "bench comm measures communication between ranks: run it under mpirun -np 2 (or srun) or more"
                .into(),
        ));
    }
    let mut points = Vec::new();
    let mut bytes = min;
    while bytes <= max {
        let len = (bytes / 4) as usize;
        let tensors = (len / MIN_FLOATS_PER_TENSOR).clamp(1, 64);
        let plan = Plan {
            len,
            boundaries: tensor_starts(len, tensors),
            bucket_bytes,
            iters: args.iters,
            check: false,
            fail_rank: None,
        };
        let mine = match bench(&world, &plan) {
            Ok(mine) => mine,
            Err(reason) => world.abort(EXIT_FAILURES, &reason),
        };
        let times = world.allgather_bytes(
            &serde_json::to_vec(&[mine.bucketed_median_seconds, mine.raw_median_seconds]).expect("json"),
        );
        let slowest = |k: usize| {
            times
                .iter()
                .map(|b| serde_json::from_slice::<[f64; 2]>(b).expect("two timings")[k])
                .fold(0.0, f64::max)
        };
        points.push(CommPoint {
            bytes: (len * 4) as u64,
            buckets: mine.buckets,
            bucketed_s: slowest(0),
            raw_s: slowest(1),
        });
        bytes *= 4;
    }
    let fit = |pick: fn(&CommPoint) -> f64| {
        let timings: Vec<_> = points
            .iter()
            .map(|p| super::costmodel::Timing {
                bytes: p.bytes as f64,
                seconds: pick(p),
            })
            .collect();
        super::costmodel::AlphaBeta::fit(&timings).map_err(|e| Failure::Job(e.to_string()))
    };
    let report = CommReport {
        world_size: world.size(),
        nodes: world.nodes(),
        bucket_bytes,
        bucketed: fit(|p| p.bucketed_s)?,
        raw: fit(|p| p.raw_s)?,
        points,
    };
    if world.rank() == 0 {
        let text = serde_json::to_string_pretty(&report).expect("serialisable");
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir).map_err(|e| Failure::Job(format!("{}: {e}", dir.display())))?;
            let path = dir.join("comm.json");
            crate::fsx::write_atomic(&path, text.as_bytes())
                .map_err(|e| Failure::Job(format!("{}: {e}", path.display())))?;
        }
        if args.json {
            println!("{text}");
        } else {
            print_comm(&report);
        }
    }
    Ok(EXIT_OK)
}

fn print_comm(r: &CommReport) {
    println!(
        "allreduce on {} ranks ({} node(s)), buckets of {} bytes",
        r.world_size, r.nodes, r.bucket_bytes
    );
    println!(
        "{:>12} {:>8} {:>12} {:>12} {:>7}",
        "bytes", "buckets", "bucketed ms", "raw ms", "ratio"
    );
    for p in &r.points {
        println!(
            "{:>12} {:>8} {:>12.4} {:>12.4} {:>7.2}",
            p.bytes,
            p.buckets,
            p.bucketed_s * 1e3,
            p.raw_s * 1e3,
            p.bucketed_s / p.raw_s
        );
    }
    for (name, ab) in [("bucketed", r.bucketed), ("raw", r.raw)] {
        println!(
            "{name}: α = {:.2} µs, β = {:.4} ns/byte ({:.2} GB/s)",
            ab.alpha_s * 1e6,
            ab.beta_s_per_byte * 1e9,
            ab.bandwidth() / 1e9
        );
    }
}

struct Plan {
    len: usize,
    boundaries: Vec<usize>,
    bucket_bytes: usize,
    iters: usize,
    check: bool,
    fail_rank: Option<usize>,
}

/// Start offsets of `tensors` tensors of uneven sizes (weights 1..13) covering `len` floats.
fn tensor_starts(len: usize, tensors: usize) -> Vec<usize> {
    let weight = |t: usize| 1 + (t * 7919) % 13;
    let total: usize = (0..tensors).map(weight).sum();
    let mut starts = Vec::with_capacity(tensors);
    let mut at = 0;
    for t in 0..tensors {
        starts.push(at);
        at += len * weight(t) / total;
    }
    starts
}

/// Rank r's gradient: element j of tensor t is (r+1)·(j mod 7 + 1) + t, so sums and averages over
/// ranks are small integers or halves, exact in f32 whatever the order of summation.
fn fill(rank: usize, len: usize, starts: &[usize]) -> Vec<f32> {
    let mut grad = vec![0.0f32; len];
    for (t, &s) in starts.iter().enumerate() {
        let e = starts.get(t + 1).copied().unwrap_or(len);
        for (j, g) in grad[s..e].iter_mut().enumerate() {
            *g = ((rank + 1) * (j % 7 + 1) + t) as f32;
        }
    }
    grad
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Mismatch {
    what: String,
    iteration: usize,
    index: usize,
    got: f32,
    want: f32,
}

/// The first element of `values` that differs from the closed-form sum (or average) over `n` ranks.
fn first_mismatch(values: &[f32], starts: &[usize], n: usize, average: bool) -> Option<(usize, f32, f32)> {
    let ranks_sum = (n * (n + 1)) as f64 / 2.0;
    for (t, &s) in starts.iter().enumerate() {
        let e = starts.get(t + 1).copied().unwrap_or(values.len());
        for (j, &got) in values[s..e].iter().enumerate() {
            let a = (j % 7 + 1) as f64;
            let sum = a * ranks_sum + (n * t) as f64;
            let want = if average { sum / n as f64 } else { sum } as f32;
            if got != want {
                return Some((s + j, got, want));
            }
        }
    }
    None
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RankResult {
    rank: usize,
    world_size: usize,
    mpi_initialised: bool,
    node: String,
    node_index: usize,
    nodes: usize,
    local_rank: usize,
    local_size: usize,
    buckets: usize,
    bucketed_median_seconds: f64,
    raw_median_seconds: f64,
    checked: bool,
    mismatch: Option<Mismatch>,
    stats: ReduceStats,
}

fn bench(world: &World, plan: &Plan) -> Result<RankResult, String> {
    let n = world.size();
    let starts = &plan.boundaries;
    let grad = fill(world.rank(), plan.len, starts);
    let mut reducer = BucketReducer::new(world, plan.len, starts, plan.bucket_bytes);
    let mut averaged = vec![0.0f32; plan.len];
    let mut summed = vec![0.0f32; plan.len];
    let mut bucketed = Vec::with_capacity(plan.iters);
    let mut raw = Vec::with_capacity(plan.iters);
    let mut mismatch: Option<Mismatch> = None;
    for it in 0..plan.iters {
        // Alternate which variant goes first, so neither always runs on a warm network.
        for variant in [it % 2, 1 - it % 2] {
            world.barrier();
            let t = Instant::now();
            if variant == 0 {
                for i in 0..reducer.buckets().len() {
                    let range = reducer.buckets()[i].clone();
                    reducer.start(i, &grad[range]);
                    reducer.progress();
                }
                reducer.finish(&mut averaged);
                bucketed.push(t.elapsed().as_secs_f64());
            } else {
                world.allreduce_sum_f32_into(&grad, &mut summed);
                raw.push(t.elapsed().as_secs_f64());
            }
        }
        if plan.check && mismatch.is_none() {
            let found = first_mismatch(&averaged, starts, n, true)
                .map(|m| ("bucketed average", m))
                .or_else(|| first_mismatch(&summed, starts, n, false).map(|m| ("raw sum", m)));
            if let Some((what, (index, got, want))) = found {
                tracing::error!(
                    rank = world.rank(),
                    iteration = it,
                    index,
                    got,
                    want,
                    "{what} is wrong"
                );
                mismatch = Some(Mismatch {
                    what: what.into(),
                    iteration: it,
                    index,
                    got,
                    want,
                });
            }
        }
        if plan.fail_rank == Some(world.rank()) {
            return Err(format!(
                "rank {} failed on purpose after iteration {} (--fail-rank)",
                world.rank(),
                it + 1
            ));
        }
        summed.fill(0.0);
        averaged.fill(0.0);
    }
    Ok(RankResult {
        rank: world.rank(),
        world_size: n,
        mpi_initialised: world.is_mpi(),
        node: world.node_name().to_string(),
        node_index: world.node_index(),
        nodes: world.nodes(),
        local_rank: world.local_rank(),
        local_size: world.local_size(),
        buckets: reducer.buckets().len(),
        bucketed_median_seconds: median(&mut bucketed),
        raw_median_seconds: median(&mut raw),
        checked: plan.check,
        mismatch,
        stats: reducer.stats().clone(),
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Serialize)]
struct Summary {
    ok: bool,
    mpi_initialised: bool,
    world_size: usize,
    /// The world size each rank saw, in rank order.
    world_sizes_seen: Vec<usize>,
    nodes: usize,
    bytes: u64,
    floats: usize,
    tensors: usize,
    bucket_bytes: usize,
    buckets: usize,
    iters: usize,
    /// Slowest rank's median seconds.
    bucketed_seconds: f64,
    raw_seconds: f64,
    /// Algorithm bandwidth (gradient bytes / seconds), GB/s.
    bucketed_gbps: f64,
    raw_gbps: f64,
    check: &'static str,
    first_mismatch: Option<(usize, Mismatch)>,
    /// Rank 0's reducer counters over all iterations.
    stats: ReduceStats,
    ranks: Vec<RankResult>,
}

impl Summary {
    fn new(world: &World, plan: &Plan, ranks: Vec<RankResult>, stats: &ReduceStats) -> Summary {
        let sizes: Vec<usize> = ranks.iter().map(|r| r.world_size).collect();
        let same_world = ranks.len() == world.size() && sizes.iter().all(|&s| s == world.size());
        let first_mismatch = ranks.iter().find_map(|r| r.mismatch.clone().map(|m| (r.rank, m)));
        let slowest = |f: fn(&RankResult) -> f64| ranks.iter().map(f).fold(0.0, f64::max);
        let bucketed = slowest(|r| r.bucketed_median_seconds);
        let raw = slowest(|r| r.raw_median_seconds);
        let bytes = (plan.len * 4) as u64;
        Summary {
            ok: same_world && first_mismatch.is_none(),
            mpi_initialised: world.is_mpi(),
            world_size: world.size(),
            world_sizes_seen: sizes,
            nodes: world.nodes(),
            bytes,
            floats: plan.len,
            tensors: plan.boundaries.len(),
            bucket_bytes: plan.bucket_bytes,
            buckets: ranks.first().map_or(0, |r| r.buckets),
            iters: plan.iters,
            bucketed_seconds: bucketed,
            raw_seconds: raw,
            bucketed_gbps: bytes as f64 / bucketed.max(1e-12) / 1e9,
            raw_gbps: bytes as f64 / raw.max(1e-12) / 1e9,
            check: match (plan.check, &first_mismatch) {
                (false, _) => "skipped",
                (true, None) => "passed",
                (true, Some(_)) => "failed",
            },
            first_mismatch,
            stats: stats.clone(),
            ranks,
        }
    }
}

fn rank_line(r: &RankResult) -> String {
    format!(
        "rank {}/{} on {} (node {}/{}, local rank {}/{}): bucketed {:.3} ms in {} bucket(s), raw {:.3} ms{}",
        r.rank,
        r.world_size,
        r.node,
        r.node_index,
        r.nodes,
        r.local_rank,
        r.local_size,
        r.bucketed_median_seconds * 1e3,
        r.buckets,
        r.raw_median_seconds * 1e3,
        match (&r.mismatch, r.checked) {
            (Some(m), _) => format!(
                ", CHECK FAILED: {} at index {} (iteration {}): got {}, want {}",
                m.what, m.index, m.iteration, m.got, m.want
            ),
            (None, true) => ", check passed".into(),
            (None, false) => String::new(),
        }
    )
}

fn print_summary(s: &Summary) {
    if s.mpi_initialised {
        println!(
            "allreduce over {} rank(s) on {} node(s); world sizes seen {:?}",
            s.world_size, s.nodes, s.world_sizes_seen
        );
    } else {
        println!("world of one: MPI was not initialised (no launcher found; MEDTRAIN_MPI=always forces it)");
    }
    println!(
        "  {:.1} MB in {} tensors, {} bucket(s) of about {:.1} MB, {} iteration(s)",
        s.bytes as f64 / 1e6,
        s.tensors,
        s.buckets,
        s.bucket_bytes as f64 / 1e6,
        s.iters
    );
    println!(
        "  bucketed {:.3} ms ({:.2} GB/s), one blocking allreduce {:.3} ms ({:.2} GB/s), slowest rank's median",
        s.bucketed_seconds * 1e3,
        s.bucketed_gbps,
        s.raw_seconds * 1e3,
        s.raw_gbps
    );
    match &s.first_mismatch {
        Some((rank, m)) => println!(
            "  check FAILED on rank {rank}: {} at index {}: got {}, want {}",
            m.what, m.index, m.got, m.want
        ),
        None => println!("  check {}", s.check),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_are_uneven_and_cover_the_buffer() {
        let starts = tensor_starts(3_000_000 / 4, 37);
        assert_eq!(starts.len(), 37);
        assert_eq!(starts[0], 0);
        let sizes: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(sizes.iter().all(|&s| s > 0));
        assert!(sizes.iter().max() > sizes.iter().min());
    }

    #[test]
    fn closed_form_catches_a_wrong_element() {
        let starts = tensor_starts(1000, 5);
        // A world of two, summed by hand.
        let a = fill(0, 1000, &starts);
        let b = fill(1, 1000, &starts);
        let mut sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let avg: Vec<f32> = sum.iter().map(|s| s / 2.0).collect();
        assert_eq!(first_mismatch(&sum, &starts, 2, false), None);
        assert_eq!(first_mismatch(&avg, &starts, 2, true), None);
        sum[777] += 1.0;
        assert_eq!(first_mismatch(&sum, &starts, 2, false).map(|m| m.0), Some(777));
    }
}
