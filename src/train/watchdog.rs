//! The watchdog of the training loop: the loop records which phase it is in and when it entered it;
//! a thread ends the whole job with MPI_Abort when one phase lasts longer than `[train] watchdog_s`,
//! so a stalled rank (stuck I/O, a peer that stopped calling collectives) costs minutes, not the
//! scheduler's time limit.

use crate::dist::AbortHandle;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Exit code of a job ended by the watchdog.
pub const WATCHDOG_EXIT_CODE: i32 = 75;

/// Where the training loop is; the watchdog names it when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Setup = 0,
    Data = 1,
    ForwardBackward = 2,
    Allreduce = 3,
    Optimizer = 4,
    Checkpoint = 5,
    Evaluation = 6,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Data => "data loading",
            Phase::ForwardBackward => "forward/backward",
            Phase::Allreduce => "gradient allreduce",
            Phase::Optimizer => "optimizer step",
            Phase::Checkpoint => "checkpoint write",
            Phase::Evaluation => "evaluation",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Data,
            2 => Phase::ForwardBackward,
            3 => Phase::Allreduce,
            4 => Phase::Optimizer,
            5 => Phase::Checkpoint,
            6 => Phase::Evaluation,
            _ => Phase::Setup,
        }
    }
}

struct Progress {
    origin: Instant,
    /// Milliseconds from `origin` when the current phase was entered.
    entered_ms: AtomicU64,
    phase: AtomicU8,
    /// Global step at the last phase change, for the message.
    step: AtomicU64,
    done: AtomicBool,
}

/// The loop's side of the watchdog; dropping it stops the thread.
pub struct Watchdog {
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the watchdog thread; `timeout` zero starts none (`enter` is then only bookkeeping).
    pub fn start(timeout: Duration, abort: AbortHandle) -> Watchdog {
        let progress = Arc::new(Progress {
            origin: Instant::now(),
            entered_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Setup as u8),
            step: AtomicU64::new(0),
            done: AtomicBool::new(false),
        });
        let thread = (!timeout.is_zero()).then(|| {
            let p = progress.clone();
            let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            std::thread::Builder::new()
                .name("medtrain-watchdog".into())
                .spawn(move || watch(&p, timeout, tick, abort))
                .expect("spawn the watchdog thread")
        });
        Watchdog { progress, thread }
    }

    /// Records that the loop entered `phase` at global step `step`.
    pub fn enter(&self, phase: Phase, step: u64) {
        let p = &self.progress;
        p.step.store(step, Ordering::Relaxed);
        p.phase.store(phase as u8, Ordering::Relaxed);
        p.entered_ms
            .store(p.origin.elapsed().as_millis() as u64, Ordering::Release);
    }
}

fn watch(p: &Progress, timeout: Duration, tick: Duration, abort: AbortHandle) {
    while !p.done.load(Ordering::Acquire) {
        std::thread::park_timeout(tick);
        let entered = p.entered_ms.load(Ordering::Acquire);
        let now = p.origin.elapsed().as_millis() as u64;
        let stuck = Duration::from_millis(now.saturating_sub(entered));
        if stuck > timeout && !p.done.load(Ordering::Acquire) {
            let phase = Phase::from_u8(p.phase.load(Ordering::Relaxed));
            let step = p.step.load(Ordering::Relaxed);
            abort.abort(
                WATCHDOG_EXIT_CODE,
                &format!(
                    "watchdog: no progress for {:.1} s in phase \"{}\" at global step {step} \
                     ([train] watchdog_s = {}); a rank stalled or a peer stopped calling collectives",
                    stuck.as_secs_f64(),
                    phase.name(),
                    timeout.as_secs()
                ),
            );
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.progress.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
