//! Bucketed gradient averaging: the flat gradient buffer is cut into buckets of whole parameter
//! tensors, formed from the end (the last layers finish backward first), and each bucket's
//! non-blocking allreduce starts as soon as its layers are done, so communication overlaps backward.
//!
//! The requests go through raw `mpi::ffi` calls: rsmpi's scoped requests would tie the buffers'
//! borrows to a scope that spans the whole backward pass. The buffers are boxed slices allocated
//! once and owned by the reducer, so they never move while a request is outstanding.

use super::World;
use mpi::ffi;
use std::ops::Range;
use std::time::Instant;

/// Default bucket size (bytes of f32 gradients), as in common data-parallel trainers.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReduceStats {
    /// Gradient bytes handed to allreduce.
    pub bytes: u64,
    /// Non-blocking allreduces started.
    pub comm_started: u32,
    /// Seconds spent in `finish` waiting for outstanding requests.
    pub wait_seconds: f64,
    /// Seconds spent copying gradients into and out of the reducer's buffers.
    pub copy_seconds: f64,
}

/// The reducer's own duplicate of the world communicator and its requests.
struct MpiBuckets {
    comm: ffi::MPI_Comm,
    /// One request per bucket, `MPI_REQUEST_NULL` when idle or completed.
    requests: Box<[ffi::MPI_Request]>,
}

pub struct BucketReducer {
    len: usize,
    world_size: usize,
    buckets: Vec<Range<usize>>,
    /// (len): this rank's gradients, at the same offsets as the flat buffer.
    send: Box<[f32]>,
    /// (len): the sums across ranks.
    recv: Box<[f32]>,
    /// Buckets started since the last `finish`.
    started: usize,
    mpi: Option<MpiBuckets>,
    stats: ReduceStats,
}

/// Buckets of whole tensors, highest offsets first: a bucket takes tensors (from the end) while its
/// size stays within `bucket_bytes`; a tensor larger than that gets a bucket of its own. The last
/// bucket (lowest offsets) holds what is left and may be smaller.
pub fn form_buckets(len: usize, boundaries: &[usize], bucket_bytes: usize) -> Vec<Range<usize>> {
    let mut starts: Vec<usize> = boundaries.iter().copied().filter(|&b| b < len).collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "tensor boundaries must be ascending: {boundaries:?}"
    );
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    starts.dedup();
    let cap = bucket_bytes / std::mem::size_of::<f32>();
    let mut buckets = Vec::new();
    if len == 0 {
        return buckets;
    }
    // Walk tensors from the last one down; `end` is the open bucket's upper edge.
    let mut end = len;
    let mut tensor_end = len;
    for &start in starts.iter().rev() {
        let tensor = tensor_end - start;
        let open = end - tensor_end;
        if open > 0 && open + tensor > cap {
            buckets.push(tensor_end..end);
            end = tensor_end;
        }
        if end - start >= cap {
            buckets.push(start..end);
            end = start;
        }
        tensor_end = start;
    }
    if end > 0 {
        buckets.push(0..end);
    }
    buckets
}

impl BucketReducer {
    /// `boundaries`: start offsets (ascending) of each parameter tensor in the flat buffer of `len`
    /// floats; buckets are unions of whole tensors of about `bucket_bytes`, formed from the end.
    pub fn new(world: &World, len: usize, boundaries: &[usize], bucket_bytes: usize) -> BucketReducer {
        let buckets = form_buckets(len, boundaries, bucket_bytes);
        let mpi = world.raw_comm().map(|world_comm| {
            let mut comm = unsafe { ffi::RSMPI_COMM_NULL };
            // SAFETY: `world_comm` is the live world communicator; MPI_Comm_dup writes one handle
            // into `comm`. It is collective, and every rank builds its reducer at the same point.
            unsafe { ffi::MPI_Comm_dup(world_comm, &mut comm) };
            // SAFETY: reading an MPI constant.
            let null = unsafe { ffi::RSMPI_REQUEST_NULL };
            MpiBuckets {
                comm,
                requests: vec![null; buckets.len()].into_boxed_slice(),
            }
        });
        BucketReducer {
            len,
            world_size: world.size(),
            buckets,
            send: vec![0.0; len].into_boxed_slice(),
            recv: vec![0.0; len].into_boxed_slice(),
            started: 0,
            mpi,
            stats: ReduceStats::default(),
        }
    }

    /// Ranges in reduction order (first = highest offsets).
    pub fn buckets(&self) -> &[Range<usize>] {
        &self.buckets
    }

    /// Copies `part` (= grad[buckets()[i]]) into bucket i's buffer and starts its non-blocking
    /// allreduce (world of one: only the copy). Buckets are started in order 0, 1, 2…
    pub fn start(&mut self, i: usize, part: &[f32]) {
        assert_eq!(
            i, self.started,
            "buckets are started in order: expected {}, got {i}",
            self.started
        );
        let range = self.buckets[i].clone();
        assert_eq!(
            part.len(),
            range.len(),
            "bucket {i} covers {range:?} ({} floats), got {}",
            range.len(),
            part.len()
        );
        let t = Instant::now();
        match &mut self.mpi {
            None => {
                self.recv[range.clone()].copy_from_slice(part);
                self.stats.copy_seconds += t.elapsed().as_secs_f64();
            }
            Some(m) => {
                self.send[range.clone()].copy_from_slice(part);
                self.stats.copy_seconds += t.elapsed().as_secs_f64();
                let count = i32::try_from(range.len()).expect("a bucket holds under 2^31 floats");
                // SAFETY: `send` and `recv` are boxed slices owned by the reducer and never moved or
                // touched at this range until the request completes in `progress`/`finish` (or Drop
                // waits for it); the range lies inside both; `comm` is the reducer's live communicator.
                unsafe {
                    ffi::MPI_Iallreduce(
                        self.send[range.clone()].as_ptr() as *const std::ffi::c_void,
                        self.recv[range.clone()].as_mut_ptr() as *mut std::ffi::c_void,
                        count,
                        ffi::RSMPI_FLOAT,
                        ffi::RSMPI_SUM,
                        m.comm,
                        &mut m.requests[i],
                    );
                }
                self.stats.comm_started += 1;
            }
        }
        self.stats.bytes += (range.len() * std::mem::size_of::<f32>()) as u64;
        self.started += 1;
    }

    /// Drives outstanding requests (MPI_Testall); cheap; call between layers of backward.
    pub fn progress(&mut self) {
        if let Some(m) = &mut self.mpi {
            if self.started == 0 {
                return;
            }
            let mut flag = 0;
            // SAFETY: the first `started` requests are live or MPI_REQUEST_NULL (completed ones are
            // set to null by MPI), and their buffers are owned by `self`.
            unsafe {
                ffi::MPI_Testall(
                    self.started as i32,
                    m.requests.as_mut_ptr(),
                    &mut flag,
                    ffi::RSMPI_STATUSES_IGNORE,
                )
            };
        }
    }

    /// Starts nothing; waits for every bucket (all must have been started) and writes the average
    /// (sum / world size) into `out`, the full flat buffer of length `len`.
    pub fn finish(&mut self, out: &mut [f32]) {
        assert_eq!(
            self.started,
            self.buckets.len(),
            "finish needs every bucket started ({} of {})",
            self.started,
            self.buckets.len()
        );
        assert_eq!(out.len(), self.len, "finish writes the whole flat buffer");
        let t = Instant::now();
        self.wait_all();
        self.stats.wait_seconds += t.elapsed().as_secs_f64();
        let t = Instant::now();
        if self.world_size == 1 {
            out.copy_from_slice(&self.recv);
        } else {
            // Division, not a multiplication by 1/size: the average of exactly summed values is
            // then correctly rounded (exact when representable).
            let n = self.world_size as f32;
            for (o, s) in out.iter_mut().zip(self.recv.iter()) {
                *o = *s / n;
            }
        }
        self.stats.copy_seconds += t.elapsed().as_secs_f64();
        self.started = 0;
    }

    fn wait_all(&mut self) {
        if let Some(m) = &mut self.mpi {
            if self.started > 0 {
                // SAFETY: as in `progress`.
                unsafe {
                    ffi::MPI_Waitall(
                        self.started as i32,
                        m.requests.as_mut_ptr(),
                        ffi::RSMPI_STATUSES_IGNORE,
                    )
                };
            }
        }
    }

    pub fn stats(&self) -> &ReduceStats {
        &self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = ReduceStats::default();
    }
}

fn mpi_finalized() -> bool {
    let mut flag = 0;
    // SAFETY: MPI_Finalized may be called at any time, even after MPI_Finalize.
    unsafe { ffi::MPI_Finalized(&mut flag) };
    flag != 0
}

impl Drop for BucketReducer {
    fn drop(&mut self) {
        if self.mpi.is_none() || mpi_finalized() {
            return;
        }
        // Outstanding requests still write into `recv`: wait before the buffers are freed.
        self.wait_all();
        if let Some(m) = &mut self.mpi {
            // SAFETY: the communicator was duplicated in `new` and no request on it is outstanding.
            unsafe { ffi::MPI_Comm_free(&mut m.comm) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: usize = 4; // bytes per float

    #[test]
    fn buckets_fill_from_the_end_with_whole_tensors() {
        // Tensors: [0,10) [10,30) [30,35) [35,60) [60,100), cap 40 floats.
        let b = form_buckets(100, &[0, 10, 30, 35, 60], 40 * F);
        // 40 from the end is exactly one full bucket; then 25+5 = 30 (adding 20 would give 50);
        // then 20+10 = 30, the uneven last bucket.
        assert_eq!(b, vec![60..100, 30..60, 0..30]);
    }

    #[test]
    fn an_oversized_tensor_gets_its_own_bucket() {
        // Tensors: [0,4) [4,8) [8,108) [108,110) [110,112), cap 10 floats.
        let b = form_buckets(112, &[0, 4, 8, 108, 110], 10 * F);
        assert_eq!(b, vec![108..112, 8..108, 0..8]);
    }

    #[test]
    fn buckets_cover_the_buffer_in_reverse_order_without_splitting_tensors() {
        let len = 10_000;
        let starts: Vec<usize> = (0..37).map(|t| t * t * 7).filter(|&s| s < len).collect();
        for cap in [0usize, 1, 64, 1000, 4096, 1 << 20] {
            let b = form_buckets(len, &starts, cap * F);
            assert_eq!(b.first().map(|r| r.end), Some(len));
            assert_eq!(b.last().map(|r| r.start), Some(0));
            for w in b.windows(2) {
                assert_eq!(w[0].start, w[1].end, "contiguous, highest first: {b:?}");
            }
            for r in &b {
                assert!(starts.contains(&r.start), "{r:?} starts at a tensor boundary");
                let tensors = starts.iter().filter(|&&s| r.contains(&s)).count();
                assert!(
                    r.len() <= cap.max(1) || tensors == 1,
                    "{r:?} over {cap} has one tensor"
                );
            }
        }
        // Everything fits in one bucket.
        assert_eq!(form_buckets(len, &starts, len * F), vec![0..len]);
        // No boundaries: the whole buffer is one tensor.
        assert_eq!(form_buckets(50, &[], 8 * F), vec![0..50]);
        assert!(form_buckets(0, &[0], 8).is_empty());
    }

    #[test]
    fn single_world_reducer_copies() {
        let w = World::single();
        let grad: Vec<f32> = (0..30).map(|i| i as f32 * 0.5).collect();
        let mut r = BucketReducer::new(&w, 30, &[0, 10, 20], 10 * F);
        assert_eq!(r.buckets(), &[20..30, 10..20, 0..10]);
        for i in 0..r.buckets().len() {
            let range = r.buckets()[i].clone();
            r.start(i, &grad[range]);
            r.progress();
        }
        let mut out = vec![0.0; 30];
        r.finish(&mut out);
        assert_eq!(out, grad);
        assert_eq!(r.stats().bytes, 120);
        assert_eq!(r.stats().comm_started, 0);
    }
}
