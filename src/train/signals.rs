//! SIGTERM and SIGUSR1 ask a run to stop: Slurm sends them before the time limit (`--signal`), a
//! user sends them with `scancel --signal`. The handler only sets a flag; the training loop reads it
//! once per step, agrees on it with every rank, writes a checkpoint and exits cleanly.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked us to stop, 0 while none has.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: a single atomic store.
    STOP.store(sig, Ordering::SeqCst);
}

/// Installs the handlers (idempotent).
pub fn install() {
    for sig in [libc::SIGTERM, libc::SIGUSR1] {
        // SAFETY: `on_signal` is an `extern "C"` function that only performs an atomic store, which is
        // async-signal-safe; `sigaction` is given a zeroed, then filled, struct that lives for the call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The signal number that asked to stop, if any.
pub fn requested() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "signal",
    }
}
