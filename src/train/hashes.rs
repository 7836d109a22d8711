//! The two hashes a run is checked with: the weights and settings every rank holds after the
//! broadcast, and the settings that decide where training goes (a resume must match them).

use crate::checkpoint;
use crate::settings::Settings;

/// Hash of the model weights plus settings, compared across ranks after the broadcast.
pub(super) fn replica_hash(params: &[f32], state: &[f32], settings_hash: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for v in params.iter().chain(state) {
        h.update(&v.to_le_bytes());
    }
    h.update(settings_hash.as_bytes());
    *h.finalize().as_bytes()
}

/// Hash of the settings that decide the weights a run reaches: not where the inputs live, how often it
/// checkpoints, validates or explains, where its TensorBoard log goes, how many threads it uses, or
/// where it stops (so a run stopped by `--max-steps` or a signal resumes under the same hash).
pub fn trajectory_hash(s: &Settings) -> String {
    let mut s = s.clone();
    let d = crate::settings::TrainSettings::default();
    s.train.catalog = None;
    s.train.manifest = None;
    s.train.max_steps = None;
    s.train.threads = None;
    s.train.tensorboard = None;
    s.train.explain_every = d.explain_every;
    s.train.prefetch = d.prefetch;
    s.train.checkpoint_every = d.checkpoint_every;
    s.train.keep_checkpoints = d.keep_checkpoints;
    s.train.eval_every = d.eval_every;
    s.train.device = d.device;
    s.train.watchdog_s = d.watchdog_s;
    s.eval = Default::default();
    s.data.shard_dir = None;
    checkpoint::hash_json(&s)
}
