//! How a command ends: the process exit codes and the `Failure` that decides between them. Every verb
//! returns `Result<i32, Failure>`; `cli::run` turns it into the exit status.
//!
//! Exit codes: 0 ok, 1 failures recorded (e.g. quarantined inputs) or the job failed, 2 usage or
//! configuration error.

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURES: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// A failure that decides the exit code.
pub enum Failure {
    Usage(String),
    Job(String),
}

impl<E: std::fmt::Display> From<E> for Failure
where
    E: std::error::Error,
{
    fn from(e: E) -> Failure {
        Failure::Job(e.to_string())
    }
}

impl Failure {
    /// The exit code this failure ends the process with.
    pub fn code(&self) -> i32 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Job(_) => EXIT_FAILURES,
        }
    }
}

/// A usage or configuration error (exit 2) with `e` as its message.
pub fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}
