//! Who is in the cohort and how each series is stored. Storage and ordering quirks are assigned by
//! quota (a seeded ranking of patients per feature), so even a four-patient test cohort exercises
//! every quirk `pack` must survive, and about half of any cohort has nodules.

use super::anatomy::{self, Anatomy, ScanGeometry};
use super::identity::Identity;
use super::seed::{stream_rng, stream_seed, uid};
use super::PhantomConfig;
use rand::Rng;

/// Per-patient properties handed out by quota: `share` of the cohort (rounded up) has each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feature {
    Nodules,
    /// InstanceNumber 1 is the highest slice (z descends as InstanceNumber rises).
    Descending,
    /// InstanceNumbers are a permutation unrelated to position.
    ScrambledInstances,
    /// uint16 with RescaleIntercept −1024 instead of int16 with intercept 0.
    UnsignedStorage,
    /// A circular reconstruction field of view, PixelPaddingValue outside it.
    CircularFov,
    /// BitsStored 12 instead of 16.
    Bits12,
    ImplicitVr,
    /// Radiograph stored inverted (MONOCHROME1).
    Monochrome1,
    /// Radiograph is DX rather than CR.
    Dx,
    /// Radiograph of 256×256 rather than 128×128.
    LargeRadiograph,
}

impl Feature {
    const ALL: [Feature; 10] = [
        Feature::Nodules,
        Feature::Descending,
        Feature::ScrambledInstances,
        Feature::UnsignedStorage,
        Feature::CircularFov,
        Feature::Bits12,
        Feature::ImplicitVr,
        Feature::Monochrome1,
        Feature::Dx,
        Feature::LargeRadiograph,
    ];

    fn share(self) -> f64 {
        match self {
            Feature::Nodules => 0.5,
            Feature::Descending => 0.3,
            Feature::ScrambledInstances => 0.25,
            Feature::UnsignedStorage => 0.35,
            Feature::CircularFov => 0.4,
            Feature::Bits12 => 0.3,
            Feature::ImplicitVr => 0.25,
            Feature::Monochrome1 => 0.4,
            Feature::Dx => 0.5,
            Feature::LargeRadiograph => 0.1,
        }
    }

    fn stream(self) -> String {
        format!("feature {self:?}")
    }
}

/// For each feature, the rank of every patient in a seeded shuffle; ranks below the quota have it.
pub(crate) struct CohortPlan {
    patients: u32,
    ranks: Vec<Vec<u32>>, // (features, patients)
}

impl CohortPlan {
    pub fn new(seed: u64, patients: u32) -> CohortPlan {
        let ranks = Feature::ALL
            .iter()
            .map(|f| {
                let mut order: Vec<u32> = (0..patients).collect();
                order.sort_by_key(|&p| stream_seed(seed, &f.stream(), p));
                let mut rank = vec![0u32; patients as usize];
                for (r, &p) in order.iter().enumerate() {
                    rank[p as usize] = r as u32;
                }
                rank
            })
            .collect();
        CohortPlan { patients, ranks }
    }

    pub fn has(&self, feature: Feature, patient: u32) -> bool {
        let f = Feature::ALL
            .iter()
            .position(|&g| g == feature)
            .expect("every feature is listed");
        let quota = (feature.share() * f64::from(self.patients)).ceil() as u32;
        self.ranks[f][patient as usize] < quota
    }
}

/// How one CT series is encoded; `ct_volume` needs it too (padding).
#[derive(Clone, Debug)]
pub(crate) struct CtStyle {
    pub descending: bool,
    pub scrambled_instances: bool,
    pub unsigned: bool,
    pub circular_fov: bool,
    pub bits_stored: u16,
    pub implicit_vr: bool,
    pub noise_sigma_hu: f32,
}

#[derive(Clone, Debug)]
pub(crate) struct RadiographStyle {
    pub dx: bool,
    pub monochrome1: bool,
    pub size: usize,
}

/// Low-dose CT noise: σ drawn per series within this range (HU).
const NOISE_SIGMA_HU: std::ops::Range<f32> = 16.0..24.0;
const SMALL_RADIOGRAPH: usize = 128;
const LARGE_RADIOGRAPH: usize = 256;
/// Nodule counts 1, 2, 3 in proportion 6 : 3 : 1 among patients with nodules.
const NODULE_COUNT_WEIGHTS: [u32; 3] = [6, 3, 1];

/// Everything about one patient that both the writer and `ct_volume` derive from the seed.
pub(crate) struct PatientPlan {
    pub index: u32,
    pub identity: Identity,
    pub geometry: ScanGeometry,
    pub anatomy: Anatomy,
    pub ct: CtStyle,
    pub radiograph: RadiographStyle,
    pub uids: SeriesUids,
    pub noise_stream: u64,
}

pub(crate) struct SeriesUids {
    pub ct_study: String,
    pub ct_series: String,
    pub frame_of_reference: String,
    pub radiograph_study: String,
    pub radiograph_series: String,
}

impl PatientPlan {
    pub fn new(cfg: &PhantomConfig, plan: &CohortPlan, patient: u32) -> PatientPlan {
        assert!(
            patient < cfg.patients,
            "patient {patient} is outside a cohort of {}",
            cfg.patients
        );
        let has = |f| plan.has(f, patient);
        let mut rng = stream_rng(cfg.seed, "styles", patient);
        let nodule_count = if has(Feature::Nodules) {
            draw_nodule_count(&mut rng)
        } else {
            0
        };
        let (geometry, anatomy) = anatomy::sample(
            cfg.seed,
            patient,
            cfg.size,
            cfg.slices,
            cfg.slice_thickness_mm,
            nodule_count,
        );
        let ct = CtStyle {
            descending: has(Feature::Descending),
            scrambled_instances: has(Feature::ScrambledInstances),
            unsigned: has(Feature::UnsignedStorage),
            circular_fov: has(Feature::CircularFov),
            bits_stored: if has(Feature::Bits12) { 12 } else { 16 },
            implicit_vr: has(Feature::ImplicitVr),
            noise_sigma_hu: rng.gen_range(NOISE_SIGMA_HU),
        };
        let radiograph = RadiographStyle {
            dx: has(Feature::Dx),
            monochrome1: has(Feature::Monochrome1),
            size: if has(Feature::LargeRadiograph) {
                LARGE_RADIOGRAPH
            } else {
                SMALL_RADIOGRAPH
            },
        };
        let u = |kind: &str| uid(cfg.seed, kind, patient, 0);
        PatientPlan {
            index: patient,
            identity: Identity::sample(cfg.seed, patient),
            geometry,
            anatomy,
            ct,
            radiograph,
            uids: SeriesUids {
                ct_study: u("ct study"),
                ct_series: u("ct series"),
                frame_of_reference: u("frame of reference"),
                radiograph_study: u("radiograph study"),
                radiograph_series: u("radiograph series"),
            },
            noise_stream: stream_seed(cfg.seed, "ct noise", patient),
        }
    }

    pub fn max_nodule_diameter_mm(&self) -> f64 {
        self.anatomy
            .nodules
            .iter()
            .map(|n| 2.0 * n.radius)
            .fold(0.0, f64::max)
    }
}

fn draw_nodule_count(rng: &mut impl Rng) -> u32 {
    let total: u32 = NODULE_COUNT_WEIGHTS.iter().sum();
    let mut ticket = rng.gen_range(0..total);
    for (count, &weight) in NODULE_COUNT_WEIGHTS.iter().enumerate() {
        if ticket < weight {
            return count as u32 + 1;
        }
        ticket -= weight;
    }
    unreachable!("the ticket is below the total weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_hold_in_small_and_large_cohorts() {
        for (seed, n) in [(1u64, 4u32), (2, 7), (2026, 160)] {
            let plan = CohortPlan::new(seed, n);
            for f in Feature::ALL {
                let count = (0..n).filter(|&p| plan.has(f, p)).count() as u32;
                assert_eq!(count, (f.share() * f64::from(n)).ceil() as u32, "{f:?} in {n}");
                assert!(
                    count >= 1 && count < n,
                    "{f:?} must occur and not be universal in {n}"
                );
            }
        }
    }

    #[test]
    fn quota_membership_depends_on_the_seed() {
        let a = CohortPlan::new(1, 40);
        let b = CohortPlan::new(2, 40);
        let members = |p: &CohortPlan| {
            (0..40)
                .filter(|&i| p.has(Feature::Nodules, i))
                .collect::<Vec<_>>()
        };
        assert_ne!(members(&a), members(&b));
    }
}
