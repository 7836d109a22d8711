//! Batches made ahead of the training step: a background thread fills each batch with rayon (one
//! task per sample) and hands it over through a bounded queue; the step gives buffers back, so
//! after the first few batches nothing is allocated.

use super::dataset::{Dataset, SampleTransform};
use super::{sample_seed, DataError};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// One batch. Rows past `valid` repeat earlier samples of the batch (a padded last batch); their
/// mask is 0 so that they add nothing to a masked loss.
#[derive(Debug, Default)]
pub struct Batch {
    pub step: usize,
    pub input: Vec<f32>,   // (batch, C, D, H, W)
    pub targets: Vec<f32>, // (batch, targets)
    pub mask: Vec<f32>,    // (batch, targets); 0 = unknown label or padding
    pub tabular: Vec<f32>, // (batch, tabular inputs); see `Dataset::tabular`
    /// Segmentation: each sample's mask on its output grid, (batch, D, H, W); empty otherwise.
    pub seg: Vec<f32>,
    pub samples: Vec<usize>,
    pub transforms: Vec<SampleTransform>,
    pub valid: usize,
}

pub struct Loader {
    ready: Option<Receiver<Result<Batch, DataError>>>,
    free: Sender<Batch>,
    worker: Option<JoinHandle<()>>,
    waited: f64,
    made: Arc<AtomicUsize>,
}

/// What the background thread owns.
struct Producer {
    ds: Arc<Dataset>,
    indices: Vec<usize>,
    batch: usize,
    augment: Option<(u64, u64)>,
    made: Arc<AtomicUsize>,
    /// Per-sample results, reused between batches.
    results: Vec<Result<SampleTransform, DataError>>,
}

impl Loader {
    /// Batches of `batch` samples from `indices[start_step*batch..]` (a last partial batch is
    /// padded by repeating samples, with `valid` < batch), made on a background thread with rayon,
    /// at most `prefetch` ready batches queued. `augment`: (run seed, epoch); each sample's
    /// augmentation seed is `sample_seed(run, epoch, sample index)`.
    pub fn new(
        ds: Arc<Dataset>,
        indices: Vec<usize>,
        batch: usize,
        start_step: usize,
        augment: Option<(u64, u64)>,
        prefetch: usize,
    ) -> Loader {
        let (ready_tx, ready_rx) = sync_channel(prefetch);
        let (free_tx, free_rx) = channel();
        let made = Arc::new(AtomicUsize::new(0));
        let mut producer = Producer {
            ds,
            indices,
            batch: batch.max(1),
            augment,
            made: made.clone(),
            results: Vec::new(),
        };
        let worker = std::thread::Builder::new()
            .name("medtrain-loader".into())
            .spawn(move || producer.run(start_step, ready_tx, free_rx))
            .expect("spawn the loader thread");
        Loader {
            ready: Some(ready_rx),
            free: free_tx,
            worker: Some(worker),
            waited: 0.0,
            made,
        }
    }

    /// The next batch; None at the end (or after an error was returned).
    #[allow(clippy::should_implement_trait)] // blocking, fallible, with buffers given back: not an Iterator
    pub fn next(&mut self) -> Option<Result<Batch, DataError>> {
        let rx = self.ready.as_ref()?;
        let start = Instant::now();
        let got = rx.recv().ok();
        self.waited += start.elapsed().as_secs_f64();
        if got.is_none() {
            self.ready = None;
            if let Some(Err(panic)) = self.worker.take().map(|w| w.join()) {
                std::panic::resume_unwind(panic);
            }
        }
        got
    }

    /// Gives a batch's buffers back for reuse.
    pub fn recycle(&mut self, b: Batch) {
        let _ = self.free.send(b);
    }

    /// Seconds `next` spent blocked, summed.
    pub fn wait_seconds(&self) -> f64 {
        self.waited
    }

    /// Batches made so far (handed over, queued, or waiting for room in the queue).
    pub fn batches_made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the queue makes a producer blocked on it stop; then wait for it.
        self.ready = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Producer {
    fn run(&mut self, start_step: usize, ready: SyncSender<Result<Batch, DataError>>, free: Receiver<Batch>) {
        let steps = self.indices.len().div_ceil(self.batch);
        for step in start_step..steps {
            let mut b = free.try_recv().unwrap_or_default();
            let made = self.fill(&mut b, step).map(|()| b);
            let failed = made.is_err();
            self.made.fetch_add(1, Ordering::SeqCst);
            if ready.send(made).is_err() || failed {
                return;
            }
        }
    }

    fn fill(&mut self, b: &mut Batch, step: usize) -> Result<(), DataError> {
        let ds = &*self.ds;
        let n = self.batch;
        let chunk = &self.indices[step * n..((step + 1) * n).min(self.indices.len())];
        let (len, nt) = (ds.sample_len(), ds.num_targets());
        b.step = step;
        b.valid = chunk.len();
        b.samples.clear();
        b.samples.extend((0..n).map(|k| chunk[k % chunk.len()]));
        b.input.resize(n * len, 0.0);
        b.targets.resize(n * nt, 0.0);
        b.mask.resize(n * nt, 0.0);
        let nx = ds.tabular_len();
        b.tabular.resize(n * nx, 0.0);
        let augment = self.augment;
        b.input
            .par_chunks_mut(len)
            .zip(b.samples.par_iter())
            .map(|(out, &i)| ds.load(i, augment.map(|(run, epoch)| sample_seed(run, epoch, i)), out))
            .collect_into_vec(&mut self.results);
        b.transforms.clear();
        for r in self.results.drain(..) {
            b.transforms.push(r?);
        }
        if ds.has_masks() {
            let voxels = ds.extent().iter().map(|&e| e as usize).product::<usize>();
            b.seg.resize(n * voxels, 0.0);
            b.seg
                .par_chunks_mut(voxels)
                .zip(b.samples.par_iter().zip(b.transforms.par_iter()))
                .map(|(out, (&i, t))| ds.mask_target(i, t, out))
                .collect::<Result<Vec<()>, DataError>>()?;
        }
        for (k, &i) in b.samples.iter().enumerate() {
            let (t, m) = (
                &mut b.targets[k * nt..(k + 1) * nt],
                &mut b.mask[k * nt..(k + 1) * nt],
            );
            ds.target(i, t, m);
            ds.tabular(i, &mut b.tabular[k * nx..(k + 1) * nx])?;
            if k >= b.valid {
                m.fill(0.0);
            }
        }
        Ok(())
    }
}
