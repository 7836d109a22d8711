//! `medtrain bench`: the benchmarks and checks of every layer, one subcommand each: the MPI allreduce
//! and its cost model (`dist::cli`), the backend on a device against the CPU (`device`), the GPU
//! start-up self-test (`backend::cuda::selftest`), the input pipeline (`loader`) and Grad-CAM
//! (`explain::bench`). Above the layers it measures, so none of them imports the command line.

pub mod device;
pub mod loader;

use crate::exit::Failure;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Bucketed gradient allreduce vs one blocking allreduce (run under mpirun or srun).
    Allreduce(crate::dist::cli::AllreduceArgs),
    /// The allreduce cost model of this machine: bucketed and raw allreduce from 4 KiB to 256 MiB, with
    /// the α-β fit of each (run under mpirun or srun, 2 ranks or more).
    Comm(crate::dist::cli::CommArgs),
    /// Training-step throughput (images/s) and peak device memory on synthetic data; one process.
    Step(device::StepArgs),
    /// Every backend op on the device against the CPU reference (atol + rtol·|ref| per op); exit 1 on
    /// a mismatch.
    Parity(device::ParityArgs),
    /// The same seeded training run on the CPU and on the device; exit 1 when the loss curves differ.
    Curve(device::CurveArgs),
    /// The start-up self-test every GPU job runs (tiny conv, batch norm, pool, linear forward and
    /// backward, SGD and AdamW steps against the CPU), with the device's SM and library versions;
    /// exit 2 when it fails or CUDA is unavailable.
    Selftest(crate::backend::cuda::selftest::SelfTestArgs),
    /// Input-pipeline throughput without a model: a split read through the training loader for some
    /// epochs (run under mpirun or srun for several ranks reading at once).
    Loader(loader::LoaderBenchArgs),
    /// Milliseconds per Grad-CAM map (resnet18 512×512, 3D ResNet 128³); on a GPU also every block
    /// output's map against the CPU reference (exit 1 on a mismatch).
    Explain(crate::explain::bench::ExplainBenchArgs),
}

pub fn run(args: BenchArgs) -> Result<i32, Failure> {
    match args.what {
        BenchCommand::Allreduce(a) => crate::dist::cli::allreduce(a),
        BenchCommand::Comm(a) => crate::dist::cli::comm(a),
        BenchCommand::Step(a) => device::step(a),
        BenchCommand::Parity(a) => device::parity(a),
        BenchCommand::Curve(a) => device::curve(a),
        BenchCommand::Selftest(a) => crate::backend::cuda::selftest::command(a),
        BenchCommand::Explain(a) => crate::explain::bench::run(a),
        BenchCommand::Loader(a) => loader::run(a),
    }
}
