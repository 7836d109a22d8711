//! The start-up self-test: before a job trusts a GPU, a tiny convolution, batch norm, max pool and
//! linear layer run forward and backward, and one SGD and one AdamW step, on the device and on the
//! CPU reference, with the tolerances of `bench parity`. It takes milliseconds on a GPU. A failure
//! names the op, the library it runs on with its version, the GPU's SM and the known remedy.
//!
//! Generic over the backend, so the same code runs on the CPU backend in tests, where a test-only
//! `tamper` hook changes one op's results to show that a wrong kernel is caught and named.

use serde::Serialize;

use super::support::{self, Verdict};
use crate::backend::params::{BatchNormParams, ConvParams, LinearParams, PoolParams};
use crate::backend::parity::{parity_of_tampered, Op, OpParity, Outputs};
use crate::backend::{AdamWHyper, Backend, SgdHyper};

/// Seed of the self-test's random inputs.
const SEED: u64 = 29;

/// What the GPU and its libraries are, as far as the self-test needs to name them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceFacts {
    pub device_name: String,
    /// major·10 + minor (H100 → 90).
    pub sm: Option<u32>,
    /// `cudnnGetVersion` (cuDNN 9: major·10000 + minor·100 + patch).
    pub cudnn: Option<u32>,
    /// "12.9.1"
    pub cublas: Option<String>,
    /// "12.9"
    pub nvrtc: Option<String>,
    /// `cuDriverGetVersion`, e.g. 12040.
    pub driver: Option<i32>,
    /// (library, file) as preloaded by `libs`.
    pub files: Vec<(String, String)>,
}

impl DeviceFacts {
    fn sm_text(&self) -> String {
        self.sm.map_or("sm unknown".into(), |s| format!("sm_{s}"))
    }

    /// The library an op runs on, with its version and file when known.
    pub fn library_of(&self, op: &str) -> String {
        let (lib, version, key) = if op.starts_with("conv") || op.starts_with("batchnorm") {
            ("cuDNN", self.cudnn.map(support::cudnn_version_text), "Cudnn")
        } else if op.starts_with("linear") {
            ("cuBLAS", self.cublas.clone(), "Cublas")
        } else {
            ("medtrain's NVRTC kernels, NVRTC", self.nvrtc.clone(), "Nvrtc")
        };
        let file = self
            .files
            .iter()
            .find(|(l, _)| l == key)
            .map(|(_, f)| format!(" ({f})"))
            .unwrap_or_default();
        format!(
            "{lib} {}{file}",
            version.as_deref().unwrap_or("of unknown version")
        )
    }
}

/// The ops of the self-test, at the smallest shapes that still exercise each path (2D, padding,
/// stride, several channels and a batch of two).
pub(crate) fn cases() -> Vec<Op> {
    let conv = ConvParams::conv2d(2, 3, 4, [8, 8], 3, 1, 1);
    let bn = BatchNormParams::new(2, 4, 64);
    let pool = PoolParams::pool2d(2, 4, [8, 8], 2, 2, 0);
    let fc = LinearParams {
        n: 2,
        in_features: 64,
        out_features: 3,
    };
    vec![
        Op::ConvFwd(conv),
        Op::BnTrain(bn),
        Op::MaxPool(pool),
        Op::Linear(fc),
        Op::LinearBwd(fc),
        Op::MaxPoolBwd(pool),
        Op::BnBwd(bn),
        Op::ConvBwd(conv),
        Op::Sgd(
            SgdHyper {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-4,
                nesterov: false,
            },
            256,
        ),
        Op::AdamW(
            AdamWHyper {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step: 1,
            },
            256,
        ),
    ]
}

/// A passed self-test.
#[derive(Debug, Serialize)]
pub struct Passed {
    pub ops: Vec<OpParity>,
    pub seconds: f64,
    /// A known caveat of this cuDNN on this SM (`support::KNOWN`), logged by the caller.
    pub warning: Option<String>,
}

/// A failed self-test: the first op that failed, and the whole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// The op that failed, or "support table" when the combination is refused before any op runs.
    pub op: String,
    pub message: String,
}

/// What to do when `op` fails on a combination the support table says nothing about.
fn generic_remedy(op: &str) -> &'static str {
    if op.starts_with("conv") || op.starts_with("batchnorm") {
        "try another cuDNN 9 release (pip: nvidia-cudnn-cu12==9.10.2.21), then `medtrain bench parity --device cuda`"
    } else if op.starts_with("linear") {
        "check that libcublas and libcublasLt are the same release of the build's CUDA major, then `medtrain bench parity --device cuda`"
    } else {
        "delete the compiled-kernel cache ($MEDTRAIN_CACHE_DIR), and check NVRTC against the driver (`nvidia-smi`), then `medtrain bench parity --device cuda`"
    }
}

/// The message of one failed op.
pub fn failure_message(o: &OpParity, facts: &DeviceFacts) -> String {
    let what = match &o.error {
        Some(e) => format!("failed: {e}"),
        None => format!(
            "differs from the CPU reference: max abs error {:.3e} (max rel {:.3e}) exceeds {:.0e} + {:.0e}·|cpu|",
            o.max_abs_err, o.max_rel_err, o.atol, o.rtol
        ),
    };
    let known = match (facts.cudnn, facts.sm) {
        (Some(c), Some(sm)) if o.op.starts_with("conv") || o.op.starts_with("batchnorm") => {
            support::check(c, sm).map(|(_, m)| m)
        }
        _ => None,
    };
    format!(
        "GPU self-test: {} {what}; library: {}; device: {} ({}); remedy: {}",
        o.op,
        facts.library_of(o.op),
        facts.device_name,
        facts.sm_text(),
        known.as_deref().unwrap_or(generic_remedy(o.op))
    )
}

/// Runs the self-test on `dev` (results passed through `tamper` before comparison; pass
/// `&|_, _| {}` outside tests). The support table is read first: a refused combination fails
/// without running anything.
pub fn run_tampered<B: Backend>(
    dev: &B,
    facts: &DeviceFacts,
    tamper: &dyn Fn(&'static str, &mut Outputs),
) -> Result<Passed, Failed> {
    let start = std::time::Instant::now();
    let mut warning = None;
    if let (Some(c), Some(sm)) = (facts.cudnn, facts.sm) {
        match support::check(c, sm) {
            Some((Verdict::Refuse, m)) => {
                return Err(Failed {
                    op: "support table".into(),
                    message: format!("GPU self-test: {} ({}): {m}", facts.device_name, facts.sm_text()),
                })
            }
            Some((Verdict::Warn, m)) => warning = Some(m),
            None => {}
        }
    }
    let mut ops = Vec::new();
    for op in cases() {
        let r = parity_of_tampered(dev, &op, SEED, tamper);
        if !r.pass {
            return Err(Failed {
                op: r.op.to_string(),
                message: failure_message(&r, facts),
            });
        }
        ops.push(r);
    }
    Ok(Passed {
        ops,
        seconds: start.elapsed().as_secs_f64(),
        warning,
    })
}

/// Runs the self-test on `dev`.
pub fn run<B: Backend>(dev: &B, facts: &DeviceFacts) -> Result<Passed, Failed> {
    run_tampered(dev, facts, &|_, _| {})
}

/// What a job does when the GPU fails its self-test (or cannot be opened) on some rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every rank's GPU passed: train on the GPUs.
    UseGpu,
    /// `--device auto` with MEDTRAIN_ALLOW_CPU_FALLBACK=1: every rank uses the CPU (logged).
    UseCpu(String),
    /// Refused with this message (exit 2).
    Refuse(String),
}

/// The decision every rank takes from the agreed verdict (`all_ok`: every rank's GPU passed;
/// `reason`: this rank's failure, or None when another rank failed). `auto`: `--device auto`, where
/// a failing GPU falls back to the CPU only when `allow_fallback`.
pub fn decide(all_ok: bool, reason: Option<&str>, auto: bool, allow_fallback: bool) -> Decision {
    if all_ok {
        return Decision::UseGpu;
    }
    let why = reason.unwrap_or("the GPU of another rank failed its start-up self-test (see that rank's log)");
    if auto && allow_fallback {
        Decision::UseCpu(format!(
            "{why}; every rank uses the CPU (MEDTRAIN_ALLOW_CPU_FALLBACK=1)"
        ))
    } else if auto {
        Decision::Refuse(format!(
            "--device auto: a GPU is visible but unusable: {why}. Fix it, run with --device cpu, or set \
             MEDTRAIN_ALLOW_CPU_FALLBACK=1 to train on the CPU instead"
        ))
    } else {
        Decision::Refuse(format!("--device cuda: {why}"))
    }
}

/// MEDTRAIN_ALLOW_CPU_FALLBACK: "1", "true" or "yes" allow it; anything else does not.
pub fn allow_fallback_from(value: Option<&str>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("1" | "true" | "yes")
    )
}

/// `medtrain bench selftest`: the start-up self-test alone, with what it found about the device and
/// its libraries.
#[derive(clap::Args, Debug)]
pub struct SelfTestArgs {
    /// cuda, or cpu (the CPU against itself, which checks the harness).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct SelfTestReport {
    pub device: String,
    pub facts: DeviceFacts,
    pub pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub ops: Vec<OpParity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn report<B: Backend>(b: &B, facts: DeviceFacts) -> SelfTestReport {
    let (pass, seconds, warning, ops, error) = match run(b, &facts) {
        Ok(p) => (true, Some(p.seconds), p.warning, p.ops, None),
        Err(f) => (false, None, None, Vec::new(), Some(f.message)),
    };
    SelfTestReport {
        device: b.name().into(),
        facts,
        pass,
        seconds,
        warning,
        ops,
        error,
    }
}

/// Exit 0 when the self-test passes, 2 when it fails or CUDA is unavailable (as `--device cuda`).
pub fn command(args: SelfTestArgs) -> std::result::Result<i32, crate::exit::Failure> {
    use crate::exit::{Failure, EXIT_OK, EXIT_USAGE};
    let r = match args.device.as_str() {
        "cuda" => {
            let b = super::CudaBackend::for_local_rank_unchecked(0, 1)
                .map_err(|e| Failure::Usage(format!("--device cuda: {e}")))?;
            report(&b, b.facts())
        }
        "cpu" => report(
            &crate::backend::cpu::CpuBackend,
            DeviceFacts {
                device_name: "host CPU".into(),
                ..DeviceFacts::default()
            },
        ),
        other => return Err(Failure::Usage(format!("--device {other:?}: use cpu or cuda"))),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serialisable"));
    } else if r.pass {
        println!(
            "GPU self-test passed: {} ops on {} in {:.1} ms",
            r.ops.len(),
            r.facts.device_name,
            r.seconds.unwrap_or(0.0) * 1e3
        );
        if let Some(w) = &r.warning {
            println!("warning: {w}");
        }
    } else {
        println!("{}", r.error.as_deref().unwrap_or("GPU self-test failed"));
    }
    Ok(if r.pass { EXIT_OK } else { EXIT_USAGE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    fn volta(cudnn: u32) -> DeviceFacts {
        DeviceFacts {
            device_name: "Tesla V100-SXM2-32GB".into(),
            sm: Some(70),
            cudnn: Some(cudnn),
            cublas: Some("12.9.1".into()),
            nvrtc: Some("12.9".into()),
            driver: Some(12040),
            files: vec![("Cudnn".into(), "/opt/lib/libcudnn.so.9".into())],
        }
    }

    #[test]
    fn passes_on_the_cpu_reference_in_under_a_second() {
        let p = run(&CpuBackend, &DeviceFacts::default()).expect("the CPU matches itself");
        assert_eq!(p.ops.len(), cases().len());
        let names: Vec<&str> = p.ops.iter().map(|o| o.op).collect();
        for want in [
            "conv_forward",
            "conv_backward",
            "batchnorm_forward_train",
            "batchnorm_backward",
            "max_pool_forward",
            "max_pool_backward",
            "linear_forward",
            "linear_backward",
            "sgd_step",
            "adamw_step",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(p.seconds < 1.0, "self-test took {} s", p.seconds);
    }

    #[test]
    fn a_wrong_result_is_named_by_op_library_version_and_sm() {
        // One wrong value in batch norm's output, as a broken cuDNN kernel would give.
        let tamper = |op: &'static str, out: &mut Outputs| {
            if op == "batchnorm_forward_train" {
                out.0[0][5] += 0.01;
            }
        };
        let e = run_tampered(&CpuBackend, &volta(91002), &tamper).expect_err("caught");
        assert_eq!(e.op, "batchnorm_forward_train");
        for part in [
            "batchnorm_forward_train differs from the CPU reference",
            "cuDNN 9.10.2 (/opt/lib/libcudnn.so.9)",
            "Tesla V100-SXM2-32GB (sm_70)",
            "remedy: try another cuDNN 9 release",
        ] {
            assert!(e.message.contains(part), "{part:?} not in {}", e.message);
        }
        // A linear result is blamed on cuBLAS, an optimizer step on the NVRTC kernels.
        let e = run_tampered(&CpuBackend, &volta(91002), &|op, out: &mut Outputs| {
            if op == "linear_backward" {
                out.0[1][0] = f32::NAN;
            }
        })
        .expect_err("caught");
        assert!(
            e.message.contains("linear_backward") && e.message.contains("cuBLAS 12.9.1"),
            "{e}"
        );
        let e = run_tampered(&CpuBackend, &volta(91002), &|op, out: &mut Outputs| {
            if op == "sgd_step" {
                out.0[0][0] *= 1.001;
            }
        })
        .expect_err("caught");
        assert!(
            e.message.contains("sgd_step") && e.message.contains("NVRTC 12.9"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_combination_fails_before_any_op() {
        let e = run(&CpuBackend, &volta(91100)).expect_err("refused");
        assert_eq!(e.op, "support table");
        assert!(
            e.message.contains("cuDNN 9.11.0 on sm_70") && e.message.contains("9.10"),
            "{e}"
        );
        let mut pascal = volta(91002);
        pascal.sm = Some(61);
        let p = run(&CpuBackend, &pascal).expect("a warning only");
        assert!(p.warning.expect("warned").contains("sm_70"));
    }

    #[test]
    fn the_decision_is_the_same_on_every_rank() {
        assert_eq!(decide(true, None, false, false), Decision::UseGpu);
        assert_eq!(decide(true, None, true, true), Decision::UseGpu);
        // --device cuda: refused, whatever the fallback setting.
        for fallback in [false, true] {
            let Decision::Refuse(m) = decide(false, Some("GPU self-test: conv_forward x"), false, fallback)
            else {
                panic!("cuda must refuse")
            };
            assert!(m.starts_with("--device cuda: GPU self-test: conv_forward"), "{m}");
        }
        // auto: refused unless the fallback is allowed; a rank whose own GPU passed says why.
        let Decision::Refuse(m) = decide(false, None, true, false) else {
            panic!()
        };
        assert!(
            m.contains("another rank") && m.contains("MEDTRAIN_ALLOW_CPU_FALLBACK=1"),
            "{m}"
        );
        let Decision::UseCpu(m) = decide(false, Some("r"), true, true) else {
            panic!()
        };
        assert!(m.starts_with("r;"), "{m}");
    }

    #[test]
    fn fallback_setting_is_parsed() {
        for v in ["1", "true", "YES", " 1 "] {
            assert!(allow_fallback_from(Some(v)), "{v}");
        }
        for v in ["0", "", "no", "2"] {
            assert!(!allow_fallback_from(Some(v)), "{v}");
        }
        assert!(!allow_fallback_from(None));
    }

    #[test]
    fn the_command_reports_on_the_cpu_and_refuses_unknown_devices() {
        let r = report(&CpuBackend, DeviceFacts::default());
        assert!(r.pass && r.error.is_none() && r.ops.len() == cases().len());
        let args = SelfTestArgs {
            device: "tpu".into(),
            json: false,
        };
        assert!(matches!(command(args), Err(crate::exit::Failure::Usage(_))));
    }
}
