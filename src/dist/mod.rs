//! The process world: MPI when a launcher started us, a world of one otherwise. Rank and size come
//! from MPI; the node-local communicator (shared-memory split) gives the local rank, which picks the
//! GPU and the staging share. Gradients are averaged by `bucket::BucketReducer`.
//!
//! When is MPI initialised? `MEDTRAIN_MPI=always` initialises it, `MEDTRAIN_MPI=never` never does,
//! and `auto` (the default) initialises it only when a launcher's variables are in the environment:
//! any of `OMPI_COMM_WORLD_SIZE` (Open MPI's mpirun), `PMIX_RANK` (PMIx: Open MPI, `srun --mpi=pmix`),
//! `PMI_RANK` or `PMI_SIZE` (MPICH/Hydra, Intel MPI, `srun --mpi=pmi2`), `MV2_COMM_WORLD_SIZE`
//! (MVAPICH2), or `SLURM_STEP_ID` together with any `PMI_*` or `PMIX_*` variable. A plain `srun`
//! without a PMI plug-in therefore starts independent worlds of one, as does a plain shell.

pub mod bucket;
pub mod cli;
pub mod costmodel;

use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// Environment variable that forces (`always`) or forbids (`never`) MPI; `auto` detects a launcher.
pub const MPI_ENV: &str = "MEDTRAIN_MPI";

/// Environment variable that overrides this rank's node name (tests of multi-node plans on one
/// machine). When set, the node layout (node index, local rank and size) comes from the names of all
/// ranks instead of the shared-memory split; set it on every rank or on none.
pub const NODE_NAME_ENV: &str = "MEDTRAIN_NODE_NAME";

/// The node name given by [`NODE_NAME_ENV`], if any (empty counts as unset).
fn node_name_override() -> Option<String> {
    std::env::var(NODE_NAME_ENV).ok().filter(|n| !n.trim().is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("{MPI_ENV}={0:?} is not one of always, never, auto")]
    BadSetting(String),
    #[error("MPI was already initialised in this process (one World per process)")]
    AlreadyInitialised,
    #[error("the MPI library gave a processor name that is not UTF-8 on rank {rank}")]
    ProcessorName { rank: usize },
    #[error("MPI world size {size} does not fit this platform's integers")]
    Size { size: i64 },
}

/// A bad `MEDTRAIN_MPI` is a usage error; a failed MPI start-up fails the job.
pub fn dist_failure(e: DistError) -> crate::exit::Failure {
    match e {
        DistError::BadSetting(_) => crate::exit::usage(e),
        other => crate::exit::Failure::Job(other.to_string()),
    }
}

/// How the user asked for MPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpiMode {
    Always,
    Never,
    Auto,
}

impl MpiMode {
    pub fn parse(value: Option<&str>) -> Result<MpiMode, DistError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("auto") => Ok(MpiMode::Auto),
            Some("always") | Some("1") | Some("yes") => Ok(MpiMode::Always),
            Some("never") | Some("0") | Some("no") => Ok(MpiMode::Never),
            Some(_) => Err(DistError::BadSetting(value.unwrap_or_default().to_string())),
        }
    }
}

/// Variables any one of which means an MPI launcher started this process.
const LAUNCHER_VARS: [&str; 5] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
];

/// The launcher variable that was found, if any (see the module documentation for the rule).
pub fn launcher_from_env<I, K, V>(vars: I) -> Option<String>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut slurm_step = false;
    let mut pmi_any: Option<String> = None;
    for (k, _) in vars {
        let k = k.as_ref();
        if LAUNCHER_VARS.contains(&k) {
            return Some(k.to_string());
        }
        if k == "SLURM_STEP_ID" {
            slurm_step = true;
        }
        if pmi_any.is_none() && (k.starts_with("PMI_") || k.starts_with("PMIX_")) {
            pmi_any = Some(k.to_string());
        }
    }
    match (slurm_step, pmi_any) {
        (true, Some(pmi)) => Some(format!("SLURM_STEP_ID+{pmi}")),
        _ => None,
    }
}

/// One rank's place in the machine, derived from every rank's node name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSlot {
    /// Dense node number: nodes are numbered in the order of their lowest rank.
    pub node_index: usize,
    pub nodes: usize,
    /// Position of this rank among the ranks of its node, in rank order.
    pub local_rank: usize,
    pub local_size: usize,
}

/// Maps every rank's node name (in rank order) to its node number and its place on the node. The
/// same input gives the same answer on every rank, so it needs no further communication.
pub fn node_layout(names: &[String]) -> Vec<NodeSlot> {
    let mut order: Vec<&str> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    let mut slots: Vec<(usize, usize)> = Vec::with_capacity(names.len());
    for name in names {
        let node = match order.iter().position(|n| *n == name.as_str()) {
            Some(i) => i,
            None => {
                order.push(name);
                counts.push(0);
                order.len() - 1
            }
        };
        slots.push((node, counts[node]));
        counts[node] += 1;
    }
    slots
        .into_iter()
        .map(|(node, local)| NodeSlot {
            node_index: node,
            nodes: order.len(),
            local_rank: local,
            local_size: counts[node],
        })
        .collect()
}

/// The communicators of an MPI world. Field order is drop order: the node communicator is freed
/// before the universe finalises MPI.
struct MpiWorld {
    world: SimpleCommunicator,
    _node: SimpleCommunicator,
    _universe: Universe,
}

/// The set of processes of this job and this process's place in it.
pub struct World {
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    node_name: String,
    node_index: usize,
    nodes: usize,
    mpi: Option<MpiWorld>,
}

impl World {
    /// MPI if a launcher started us (or `MEDTRAIN_MPI=always`), else a world of one without MPI.
    pub fn init() -> Result<World, DistError> {
        let mode = MpiMode::parse(std::env::var(MPI_ENV).ok().as_deref())?;
        let launcher = launcher_from_env(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().unwrap_or_default()))),
        );
        let use_mpi = match mode {
            MpiMode::Always => true,
            MpiMode::Never => {
                if let Some(var) = &launcher {
                    tracing::warn!("{MPI_ENV}=never: ignoring the MPI launcher ({var} is set); running as a world of one");
                }
                false
            }
            MpiMode::Auto => launcher.is_some(),
        };
        if !use_mpi {
            return Ok(World::single());
        }
        World::init_mpi()
    }

    fn init_mpi() -> Result<World, DistError> {
        let (universe, threading) =
            mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or(DistError::AlreadyInitialised)?;
        if threading == mpi::Threading::Single {
            tracing::warn!("the MPI library only supports single-threaded processes; medtrain calls MPI from the main thread only");
        }
        let world = universe.world();
        let rank = usize::try_from(world.rank()).map_err(|_| DistError::Size {
            size: world.rank() as i64,
        })?;
        let size = usize::try_from(world.size()).map_err(|_| DistError::Size {
            size: world.size() as i64,
        })?;
        let node = world.split_shared(world.rank());
        let overridden = node_name_override();
        let node_name = match &overridden {
            Some(name) => name.clone(),
            None => mpi::environment::processor_name().map_err(|_| DistError::ProcessorName { rank })?,
        };
        let mut w = World {
            rank,
            size,
            local_rank: node.rank() as usize,
            local_size: node.size() as usize,
            node_name,
            node_index: 0,
            nodes: 1,
            mpi: Some(MpiWorld {
                world,
                _node: node,
                _universe: universe,
            }),
        };
        let names: Vec<String> = w
            .allgather_bytes(w.node_name.as_bytes())
            .into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        let slot = node_layout(&names)[rank];
        if overridden.is_some() {
            w.local_rank = slot.local_rank;
            w.local_size = slot.local_size;
        } else if (slot.local_rank, slot.local_size) != (w.local_rank, w.local_size) {
            tracing::warn!(
                rank,
                node = %w.node_name,
                "node names give local rank {}/{} but the shared-memory split gives {}/{}; using the split",
                slot.local_rank,
                slot.local_size,
                w.local_rank,
                w.local_size
            );
        }
        w.node_index = slot.node_index;
        w.nodes = slot.nodes;
        tracing::debug!(
            rank,
            size,
            local_rank = w.local_rank,
            local_size = w.local_size,
            node = %w.node_name,
            "MPI initialised"
        );
        Ok(w)
    }

    /// A world of one without MPI (tests, tools).
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            local_size: 1,
            node_name: node_name_override().unwrap_or_else(hostname),
            node_index: 0,
            nodes: 1,
            mpi: None,
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }
    pub fn local_size(&self) -> usize {
        self.local_size
    }
    /// MPI processor name, or the host name in a world of one.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }
    pub fn node_index(&self) -> usize {
        self.node_index
    }
    pub fn nodes(&self) -> usize {
        self.nodes
    }
    pub fn is_mpi(&self) -> bool {
        self.mpi.is_some()
    }

    /// The world communicator's raw handle (for the bucket reducer's own communicator).
    pub(crate) fn raw_comm(&self) -> Option<mpi::ffi::MPI_Comm> {
        self.mpi.as_ref().map(|m| m.world.as_raw())
    }

    pub fn barrier(&self) {
        if let Some(m) = &self.mpi {
            m.world.barrier();
        }
    }

    pub fn broadcast_f32(&self, root: usize, data: &mut [f32]) {
        if let Some(m) = &self.mpi {
            m.world.process_at_rank(root as i32).broadcast_into(data);
        }
    }

    /// Broadcasts a buffer of any length: the root's length first, then its bytes.
    pub fn broadcast_bytes(&self, root: usize, data: &mut Vec<u8>) {
        if let Some(m) = &self.mpi {
            let root = m.world.process_at_rank(root as i32);
            let mut len = data.len() as u64;
            root.broadcast_into(&mut len);
            data.resize(len as usize, 0);
            root.broadcast_into(&mut data[..]);
        }
    }

    pub fn allreduce_sum_f32(&self, data: &mut [f32]) {
        self.allreduce(data, mpi::collective::SystemOperation::sum());
    }
    pub fn allreduce_sum_f64(&self, data: &mut [f64]) {
        self.allreduce(data, mpi::collective::SystemOperation::sum());
    }
    pub fn allreduce_max_u64(&self, data: &mut [u64]) {
        self.allreduce(data, mpi::collective::SystemOperation::max());
    }
    pub fn allreduce_min_u64(&self, data: &mut [u64]) {
        self.allreduce(data, mpi::collective::SystemOperation::min());
    }

    /// Sum of every rank's `send` into `recv` (same length): one blocking MPI_Allreduce.
    pub fn allreduce_sum_f32_into(&self, send: &[f32], recv: &mut [f32]) {
        assert_eq!(send.len(), recv.len(), "allreduce buffers of equal length");
        match &self.mpi {
            Some(m) => m
                .world
                .all_reduce_into(send, recv, mpi::collective::SystemOperation::sum()),
            None => recv.copy_from_slice(send),
        }
    }

    /// In place: the bindings have no MPI_IN_PLACE, so the local values are copied once.
    fn allreduce<T: Equivalence + Copy>(&self, data: &mut [T], op: mpi::collective::SystemOperation) {
        if let Some(m) = &self.mpi {
            let local = data.to_vec();
            m.world.all_reduce_into(&local[..], data, op);
        }
    }

    /// Every rank's values, concatenated in rank order (counts may differ between ranks).
    pub fn allgather_f32(&self, local: &[f32]) -> Vec<f32> {
        self.allgather_var(local).0
    }

    /// Every rank's bytes, one entry per rank.
    pub fn allgather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        let (flat, counts) = self.allgather_var(local);
        split_by_counts(&flat, &counts)
    }

    fn allgather_var<T: Equivalence + Copy + Default>(&self, local: &[T]) -> (Vec<T>, Vec<usize>) {
        let Some(m) = &self.mpi else {
            return (local.to_vec(), vec![local.len()]);
        };
        let mut counts = vec![0u64; self.size];
        m.world.all_gather_into(&(local.len() as u64), &mut counts[..]);
        let (counts_i, displs) = counts_and_displacements(&counts);
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut flat = vec![T::default(); total];
        {
            let mut part = mpi::datatype::PartitionMut::new(&mut flat[..], &counts_i[..], &displs[..]);
            m.world.all_gather_varcount_into(local, &mut part);
        }
        (flat, counts.iter().map(|&c| c as usize).collect())
    }

    /// Every rank's bytes on `root` (one entry per rank, `Some` there), `None` elsewhere.
    pub fn gather_bytes(&self, root: usize, local: &[u8]) -> Option<Vec<Vec<u8>>> {
        let Some(m) = &self.mpi else {
            return Some(vec![local.to_vec()]);
        };
        let root_process = m.world.process_at_rank(root as i32);
        let len = local.len() as u64;
        if self.rank != root {
            root_process.gather_into(&len);
            root_process.gather_varcount_into(local);
            return None;
        }
        let mut counts = vec![0u64; self.size];
        root_process.gather_into_root(&len, &mut counts[..]);
        let (counts_i, displs) = counts_and_displacements(&counts);
        let mut flat = vec![0u8; counts.iter().map(|&c| c as usize).sum()];
        {
            let mut part = mpi::datatype::PartitionMut::new(&mut flat[..], &counts_i[..], &displs[..]);
            root_process.gather_varcount_into_root(local, &mut part);
        }
        let counts: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
        Some(split_by_counts(&flat, &counts))
    }

    /// A handle that can end the job from any thread (a watchdog), like `abort`.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            rank: self.rank,
            size: self.size,
            mpi: self.mpi.is_some(),
        }
    }

    /// Logs `reason` with the rank and ends every rank: MPI_Abort(code) under MPI (the launcher
    /// kills the other ranks, even those waiting in a collective), `exit(code)` in a world of one.
    pub fn abort(&self, code: i32, reason: &str) -> ! {
        tracing::error!(
            rank = self.rank,
            size = self.size,
            "rank {} aborts the job: {reason}",
            self.rank
        );
        match &self.mpi {
            Some(m) => m.world.abort(code),
            None => std::process::exit(code),
        }
    }
}

/// Ends the job from any thread: MPI_Abort on MPI_COMM_WORLD under MPI, `exit` in a world of one.
#[derive(Clone, Copy, Debug)]
pub struct AbortHandle {
    rank: usize,
    size: usize,
    mpi: bool,
}

impl AbortHandle {
    pub fn abort(&self, code: i32, reason: &str) -> ! {
        tracing::error!(
            rank = self.rank,
            size = self.size,
            "rank {} of {} aborts the job: {reason}",
            self.rank,
            self.size
        );
        eprintln!(
            "medtrain: rank {} of {} aborts the job: {reason}",
            self.rank, self.size
        );
        if self.mpi {
            // SAFETY: MPI was initialised by the World this handle came from and is not finalised
            // while training runs; MPI_Abort does not return.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
            }
        }
        std::process::exit(code)
    }
}

/// MPI counts are C ints: a gather of 2 GiB or more from one rank is a programming error here.
fn counts_and_displacements(counts: &[u64]) -> (Vec<i32>, Vec<i32>) {
    let mut displs = Vec::with_capacity(counts.len());
    let mut at: u64 = 0;
    for &c in counts {
        displs.push(i32::try_from(at).expect("gathered data under 2 GiB elements"));
        at += c;
    }
    i32::try_from(at).expect("gathered data under 2 GiB elements");
    let counts = counts.iter().map(|&c| c as i32).collect();
    (counts, displs)
}

fn split_by_counts<T: Copy>(flat: &[T], counts: &[usize]) -> Vec<Vec<T>> {
    let mut at = 0;
    counts
        .iter()
        .map(|&c| {
            let part = flat[at..at + c].to_vec();
            at += c;
            part
        })
        .collect()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_node() {
        let slots = node_layout(&names(&["a", "a", "a"]));
        for (r, s) in slots.iter().enumerate() {
            assert_eq!(
                *s,
                NodeSlot {
                    node_index: 0,
                    nodes: 1,
                    local_rank: r,
                    local_size: 3
                }
            );
        }
    }

    #[test]
    fn interleaved_nodes_are_numbered_by_lowest_rank() {
        // Ranks dealt round-robin over three nodes, and a node that appears last.
        let slots = node_layout(&names(&["n2", "n0", "n2", "n1", "n0", "n2", "n9"]));
        let got: Vec<(usize, usize, usize, usize)> = slots
            .iter()
            .map(|s| (s.node_index, s.nodes, s.local_rank, s.local_size))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 4, 0, 3),
                (1, 4, 0, 2),
                (0, 4, 1, 3),
                (2, 4, 0, 1),
                (1, 4, 1, 2),
                (0, 4, 2, 3),
                (3, 4, 0, 1),
            ]
        );
    }

    #[test]
    fn blocks_of_ranks_per_node() {
        let list: Vec<String> = (0..8).map(|r| format!("node{}", r / 4)).collect();
        let slots = node_layout(&list);
        for (r, s) in slots.iter().enumerate() {
            assert_eq!(
                (s.node_index, s.nodes, s.local_rank, s.local_size),
                (r / 4, 2, r % 4, 4)
            );
        }
        assert!(node_layout(&[]).is_empty());
    }

    #[test]
    fn launcher_rule() {
        let env = |pairs: &[&str]| -> Option<String> { launcher_from_env(pairs.iter().map(|k| (*k, "1"))) };
        assert_eq!(env(&["HOME", "PATH"]), None);
        assert_eq!(
            env(&["OMPI_COMM_WORLD_SIZE"]).as_deref(),
            Some("OMPI_COMM_WORLD_SIZE")
        );
        assert_eq!(env(&["PMIX_RANK"]).as_deref(), Some("PMIX_RANK"));
        assert_eq!(env(&["PMI_SIZE"]).as_deref(), Some("PMI_SIZE"));
        assert_eq!(
            env(&["MV2_COMM_WORLD_SIZE"]).as_deref(),
            Some("MV2_COMM_WORLD_SIZE")
        );
        // A Slurm step alone is not a launcher (plain srun without a PMI plug-in)…
        assert_eq!(env(&["SLURM_STEP_ID", "SLURM_PROCID"]), None);
        // …a PMI variable alone is not either, but both together are.
        assert_eq!(env(&["PMI_FD"]), None);
        assert_eq!(
            env(&["SLURM_STEP_ID", "PMI_FD"]).as_deref(),
            Some("SLURM_STEP_ID+PMI_FD")
        );
    }

    #[test]
    fn mode_setting() {
        assert_eq!(MpiMode::parse(None).unwrap(), MpiMode::Auto);
        assert_eq!(MpiMode::parse(Some("ALWAYS")).unwrap(), MpiMode::Always);
        assert_eq!(MpiMode::parse(Some("never")).unwrap(), MpiMode::Never);
        assert!(
            matches!(MpiMode::parse(Some("sometimes")), Err(DistError::BadSetting(v)) if v == "sometimes")
        );
    }

    #[test]
    fn single_world_collectives_are_identities() {
        let w = World::single();
        assert!(!w.is_mpi());
        assert_eq!(
            (w.rank(), w.size(), w.local_rank(), w.local_size(), w.nodes()),
            (0, 1, 0, 1, 1)
        );
        let mut v = vec![1.5f32, -2.0];
        w.allreduce_sum_f32(&mut v);
        assert_eq!(v, vec![1.5, -2.0]);
        assert_eq!(w.allgather_bytes(b"abc"), vec![b"abc".to_vec()]);
        assert_eq!(w.gather_bytes(0, b"x"), Some(vec![b"x".to_vec()]));
        assert_eq!(w.allgather_f32(&[3.0]), vec![3.0]);
    }
}
