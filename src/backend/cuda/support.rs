//! Which cuDNN versions work on which GPU architectures, as data: one table, read by the start-up
//! self-test (`selftest`) and cited by the README's support matrix. Pure, so the lookup is unit-tested
//! without a GPU.
//!
//! Versions are cuDNN's own encoding from `cudnnGetVersion` for cuDNN 9 (major·10000 + minor·100 +
//! patch: 9.10.2 → 91002); SMs are major·10 + minor (V100 → 70).

/// What a known combination means for this project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Known not to work: the backend refuses it before training.
    Refuse,
    /// Known to work with caveats: logged, then used.
    Warn,
}

/// One row: cuDNN versions `[cudnn_from, cudnn_below)` on SMs `[sm_from, sm_below)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub cudnn_from: u32,
    pub cudnn_below: u32,
    pub sm_from: u32,
    pub sm_below: u32,
    pub verdict: Verdict,
    /// What goes wrong, as the user will read it.
    pub problem: &'static str,
    /// What to do about it.
    pub remedy: &'static str,
}

/// cuDNN 9.0.0, the oldest release this project builds against.
pub const CUDNN_MIN: u32 = 90000;
/// No upper bound on a row.
const ANY: u32 = u32::MAX;

/// Known combinations of cuDNN and GPU architecture, first match wins. The README's "GPU (CUDA)"
/// support matrix cites this table; change both together.
pub const KNOWN: &[Known] = &[
    Known {
        cudnn_from: 0,
        cudnn_below: CUDNN_MIN,
        sm_from: 0,
        sm_below: ANY,
        verdict: Verdict::Refuse,
        problem: "cuDNN before 9 lacks the API this build uses",
        remedy: "install cuDNN 9 (pip: nvidia-cudnn-cu12 or nvidia-cudnn-cu11 9.x)",
    },
    // cuDNN 9.11 dropped Volta (sm_70, and sm_72 Xavier): conda-forge/cudnn-feedstock#124.
    Known {
        cudnn_from: 91100,
        cudnn_below: ANY,
        sm_from: 70,
        sm_below: 75,
        verdict: Verdict::Refuse,
        problem:
            "cuDNN 9.11 and later ship no Volta (sm_70/sm_72) kernels, batch norm and convolution included",
        remedy: "use cuDNN 9.10 or older on Volta (pip: nvidia-cudnn-cu12<=9.10.2.21)",
    },
    // Below Volta cuDNN 9 still loads, but this project has never checked those GPUs.
    Known {
        cudnn_from: CUDNN_MIN,
        cudnn_below: ANY,
        sm_from: 0,
        sm_below: 70,
        verdict: Verdict::Warn,
        problem: "GPUs older than Volta (sm_70) are not checked by this project",
        remedy: "trust the start-up self-test, and compare with `medtrain bench parity --device cuda`",
    },
];

/// The first row of `KNOWN` that covers `cudnn` on `sm`; None when the combination is not known bad.
pub fn lookup(cudnn: u32, sm: u32) -> Option<&'static Known> {
    KNOWN
        .iter()
        .find(|k| (k.cudnn_from..k.cudnn_below).contains(&cudnn) && (k.sm_from..k.sm_below).contains(&sm))
}

/// cuDNN's version number as text: 91002 → "9.10.2" (cuDNN 9's encoding), 8907 → "8.9.7" (cuDNN 8's).
pub fn cudnn_version_text(v: u32) -> String {
    if v >= 90000 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}.{}", v / 1000, v / 100 % 10, v % 100)
    }
}

/// A refusal or warning for cuDNN `cudnn` on `sm`, as one line; None when nothing is known.
pub fn check(cudnn: u32, sm: u32) -> Option<(Verdict, String)> {
    lookup(cudnn, sm).map(|k| {
        (
            k.verdict,
            format!(
                "cuDNN {} on sm_{sm}: {}; {}",
                cudnn_version_text(cudnn),
                k.problem,
                k.remedy
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_combinations_are_found() {
        // Volta with cuDNN 9.11+ is refused; 9.10 on Volta is fine.
        let (v, msg) = check(91100, 70).expect("known bad");
        assert_eq!(v, Verdict::Refuse);
        assert!(
            msg.contains("cuDNN 9.11.0 on sm_70") && msg.contains("9.10"),
            "{msg}"
        );
        assert_eq!(check(91300, 72).map(|c| c.0), Some(Verdict::Refuse));
        assert_eq!(check(91002, 70), None);
        // Turing and newer with any cuDNN 9: nothing to say.
        for sm in [75, 80, 86, 89, 90, 100, 120] {
            assert_eq!(check(91300, sm), None, "sm_{sm}");
            assert_eq!(check(90000, sm), None, "sm_{sm}");
        }
        // cuDNN 8 is refused everywhere; pre-Volta is a warning.
        let (v, msg) = check(8907, 80).expect("cuDNN 8");
        assert_eq!(v, Verdict::Refuse);
        assert!(msg.contains("cuDNN 8.9.7") && msg.contains("cuDNN 9"), "{msg}");
        assert_eq!(check(90100, 61).map(|c| c.0), Some(Verdict::Warn));
    }

    #[test]
    fn version_text_follows_each_major_encoding() {
        assert_eq!(cudnn_version_text(91002), "9.10.2");
        assert_eq!(cudnn_version_text(90000), "9.0.0");
        assert_eq!(cudnn_version_text(8907), "8.9.7");
    }

    #[test]
    fn rows_are_well_formed() {
        for k in KNOWN {
            assert!(k.cudnn_from < k.cudnn_below && k.sm_from < k.sm_below, "{k:?}");
            assert!(!k.problem.is_empty() && !k.remedy.is_empty());
        }
    }
}
