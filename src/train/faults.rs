//! Fault injection for the fault tests and the soak run, read from `MEDTRAIN_FAULT`:
//! `KIND@STEP` or `KIND@STEP:rank:R` (only rank R), KIND one of `error` (the rank returns an error),
//! `stall` (the rank stops making progress), `nan` / `inf` (its gradient is poisoned after the
//! allreduce, so only that rank sees it), `kill` (the rank sends itself SIGKILL before the step) or
//! `kill-in-checkpoint` (rank 0 sends itself SIGKILL in the middle of writing the checkpoint of step
//! STEP, after the weights and before the state file) or `kill-in-eval` (the rank sends itself
//! SIGKILL in the end-of-epoch evaluation after step STEP, once that epoch's checkpoint is written; a
//! run resuming that evaluation is not killed again). The older form `rank:R:step:S` means
//! `error@S:rank:R`.

/// The environment variable holding the fault.
pub const FAULT_ENV: &str = "MEDTRAIN_FAULT";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Error,
    Stall,
    Nan,
    Inf,
    Kill,
    KillInCheckpoint,
    KillInEval,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub step: u64,
    /// None: every rank.
    pub rank: Option<usize>,
    pub spec: String,
}

impl Fault {
    /// The fault set in the environment, if any; an unreadable spec is an error naming it.
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(FAULT_ENV) {
            Ok(spec) if !spec.trim().is_empty() => Fault::parse(spec.trim()).map(Some),
            _ => Ok(None),
        }
    }

    pub fn parse(spec: &str) -> Result<Fault, String> {
        let bad = || {
            format!(
                "{FAULT_ENV}={spec:?}: expected KIND@STEP or KIND@STEP:rank:R with KIND one of \
                 error, stall, nan, inf, kill, kill-in-checkpoint, kill-in-eval (or rank:R:step:S)"
            )
        };
        let parts: Vec<&str> = spec.split(':').collect();
        if let ["rank", r, "step", s] = parts.as_slice() {
            return Ok(Fault {
                kind: FaultKind::Error,
                step: s.parse().map_err(|_| bad())?,
                rank: Some(r.parse().map_err(|_| bad())?),
                spec: spec.into(),
            });
        }
        let (kind, rest) = spec.split_once('@').ok_or_else(bad)?;
        let kind = match kind {
            "error" => FaultKind::Error,
            "stall" => FaultKind::Stall,
            "nan" => FaultKind::Nan,
            "inf" => FaultKind::Inf,
            "kill" => FaultKind::Kill,
            "kill-in-checkpoint" => FaultKind::KillInCheckpoint,
            "kill-in-eval" => FaultKind::KillInEval,
            _ => return Err(bad()),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (step, rank) = match parts.as_slice() {
            [s] => (s.parse().map_err(|_| bad())?, None),
            [s, "rank", r] => (s.parse().map_err(|_| bad())?, Some(r.parse().map_err(|_| bad())?)),
            _ => return Err(bad()),
        };
        Ok(Fault {
            kind,
            step,
            rank,
            spec: spec.into(),
        })
    }

    /// Whether the fault fires on `rank` at global step `step`.
    pub fn hits(&self, kind: FaultKind, rank: usize, step: u64) -> bool {
        self.kind == kind && self.step == step && self.rank.is_none_or(|r| r == rank)
    }
}

/// Ends this process with SIGKILL, as a node failure or the scheduler's hard kill would.
pub fn kill_self(what: &str) -> ! {
    tracing::warn!("injected fault: SIGKILL {what}");
    // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so this does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// Called by the checkpoint writer between its files: SIGKILL when `MEDTRAIN_FAULT` asks for a death
/// while the checkpoint of `global_step` is being written.
pub fn checkpoint_kill_point(global_step: u64) {
    if let Ok(Some(f)) = Fault::from_env() {
        if f.kind == FaultKind::KillInCheckpoint && f.step == global_step {
            kill_self(&format!("while writing the checkpoint of step {global_step}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let f = Fault::parse("nan@3:rank:1").unwrap();
        assert_eq!((f.kind, f.step, f.rank), (FaultKind::Nan, 3, Some(1)));
        assert!(f.hits(FaultKind::Nan, 1, 3) && !f.hits(FaultKind::Nan, 0, 3));
        let f = Fault::parse("stall@0").unwrap();
        assert!(f.hits(FaultKind::Stall, 5, 0));
        let f = Fault::parse("rank:1:step:2").unwrap();
        assert_eq!((f.kind, f.step, f.rank), (FaultKind::Error, 2, Some(1)));
        let f = Fault::parse("kill-in-eval@6:rank:0").unwrap();
        assert_eq!((f.kind, f.step, f.rank), (FaultKind::KillInEval, 6, Some(0)));
        let f = Fault::parse("kill-in-checkpoint@4").unwrap();
        assert_eq!((f.kind, f.step, f.rank), (FaultKind::KillInCheckpoint, 4, None));
        for bad in ["nan", "nan@x", "boom@1", "nan@1:rank", "nan@1:rank:x"] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }
}
