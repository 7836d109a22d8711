//! `pack` on many MPI ranks: rank 0 prepares the directory (commits journals of a killed run,
//! removes uncommitted shards, writes the index), every rank packs its round-robin share into its
//! own shards and journal, then rank 0 commits the journals and merges the reports. Outcomes travel
//! as data, so a rank that fails never leaves the others waiting, and every rank returns the same
//! result (the same exit code).

use super::journal::commit_journals;
use super::quarantine::QuarantineEntry;
use super::run::{
    finish_pack, pack_share, prepare_pack, run_pack, PackError, PackOptions, PackReport, ShareReport,
};
use crate::dist::World;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The coordinating rank.
const ROOT: usize = 0;

/// A step's result as sent between ranks.
#[derive(Serialize, Deserialize)]
enum Outcome<T> {
    Done(T),
    Failed {
        rank: usize,
        usage: bool,
        reason: String,
    },
}

impl<T: Serialize + DeserializeOwned> Outcome<T> {
    /// Serialises a borrowed result (`Outcome<&T>` has the same form as `Outcome<T>`).
    fn of(rank: usize, result: Result<&T, &PackError>) -> Vec<u8> {
        let outcome: Outcome<&T> = match result {
            Ok(v) => Outcome::Done(v),
            Err(e) => Outcome::Failed {
                rank,
                usage: is_usage(e),
                reason: e.to_string(),
            },
        };
        serde_json::to_vec(&outcome).expect("outcomes serialise")
    }

    fn decode(bytes: &[u8]) -> Result<T, PackError> {
        match serde_json::from_slice(bytes).expect("every rank sends an outcome") {
            Outcome::Done(v) => Ok(v),
            Outcome::Failed { rank, usage, reason } => Err(PackError::OnRank { rank, usage, reason }),
        }
    }
}

/// Errors that mean the command was given wrong inputs (exit status 2), not that the job failed.
pub fn is_usage(e: &PackError) -> bool {
    matches!(
        e,
        PackError::Key(_) | PackError::MissingRoot(_) | PackError::OnRank { usage: true, .. }
    )
}

/// Root's result on the root, the root's result as received elsewhere.
fn from_root<T>(world: &World, root_result: Result<T, PackError>) -> Result<T, PackError>
where
    T: Serialize + DeserializeOwned,
{
    let mut bytes = if world.rank() == ROOT {
        Outcome::of(ROOT, root_result.as_ref())
    } else {
        Vec::new()
    };
    world.broadcast_bytes(ROOT, &mut bytes);
    if world.rank() == ROOT {
        root_result
    } else {
        Outcome::<T>::decode(&bytes)
    }
}

/// Packs `opts.roots` into `opts.out` with every rank of `world` (`opts.rank`/`opts.workers` must be
/// the world's). Returns the merged report on every rank; the quarantine entries on rank 0 only.
pub fn run_pack_ranks(
    world: &World,
    opts: &PackOptions,
) -> Result<(PackReport, Vec<QuarantineEntry>), PackError> {
    if world.size() == 1 {
        return run_pack(opts);
    }
    let rank = world.rank();
    let prepared = if rank == ROOT { prepare_pack(opts) } else { Ok(()) };
    from_root(world, prepared)?;

    let share = pack_share(opts);
    if let Err(e) = &share {
        tracing::error!(rank, "packing this rank's share failed: {e}");
    }
    let gathered = world.gather_bytes(ROOT, &Outcome::of(rank, share.as_ref()));
    let merged = gathered.map(|all| finish_on_root(opts, &all));
    let mut bytes = match &merged {
        Some(result) => Outcome::of(ROOT, result.as_ref().map(|m| &m.0)),
        None => Vec::new(),
    };
    world.broadcast_bytes(ROOT, &mut bytes);
    match merged {
        Some(result) => result,
        None => Outcome::<PackReport>::decode(&bytes).map(|report| (report, Vec::new())),
    }
}

/// Rank 0: merge every share, or when a rank failed, still commit what the others committed.
fn finish_on_root(
    opts: &PackOptions,
    all: &[Vec<u8>],
) -> Result<(PackReport, Vec<QuarantineEntry>), PackError> {
    let mut shares: Vec<ShareReport> = Vec::with_capacity(all.len());
    let mut failure: Option<PackError> = None;
    for bytes in all {
        match Outcome::<ShareReport>::decode(bytes) {
            Ok(share) => shares.push(share),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        None => finish_pack(opts, shares),
        Some(e) => {
            let kept = super::index::PackIndex::load(&opts.out)
                .map_err(PackError::from)
                .and_then(|index| match index {
                    Some(index) => commit_journals(&opts.out, index).map_err(PackError::from),
                    None => Ok(super::index::PackIndex::new(&opts.key.fingerprint())),
                });
            if let Err(k) = kept {
                tracing::error!("committing the journals of the ranks that finished failed too: {k}");
            }
            Err(e)
        }
    }
}
