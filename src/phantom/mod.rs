//! The embedded default cohort: a seeded synthetic lung-screening archive written as real DICOM
//! (low-dose chest CT series with nodules and vessel distractors, optional CR/DX radiographs,
//! identifiers planted everywhere) plus clinical-export ground truth. It is the input of `pack`
//! in the demo and the tests, and `ct_volume` recomputes any series' HU for exact comparisons.

pub mod achilles;
mod anatomy;
pub mod cli;
mod cohort;
mod ct;
mod identity;
mod masks;
mod radiograph;
mod rtstruct;
mod seed;
mod truth;
mod write;

use cohort::{CohortPlan, PatientPlan};
use rayon::prelude::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use truth::PatientTruth;

/// Limits that keep a configuration meaningful (and its UIDs and IDs unique).
const MAX_PATIENTS: u32 = 1_000_000;
const MIN_SIZE: u32 = 16;
const MAX_SIZE: u32 = 1024;
const MAX_SLICES: u32 = 2000;
const MAX_SLICE_THICKNESS_MM: f64 = 20.0;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhantomConfig {
    pub seed: u64,
    /// Enough for 40 or more held-out patients in a validation split.
    pub patients: u32,
    /// Rows = columns of every CT slice.
    pub size: u32,
    pub slices: u32,
    /// Also the slice spacing (contiguous slices).
    pub slice_thickness_mm: f64,
    /// One CR or DX chest radiograph per patient.
    pub radiographs: bool,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            seed: 2026,
            patients: 160,
            size: 96,
            slices: 48,
            slice_thickness_mm: 2.5,
            radiographs: true,
        }
    }
}

impl PhantomConfig {
    pub fn validate(&self) -> Result<(), PhantomError> {
        let bad = |key: &'static str, reason: String| Err(PhantomError::Config { key, reason });
        if !(1..=MAX_PATIENTS).contains(&self.patients) {
            return bad(
                "patients",
                format!("{} is not within 1..={MAX_PATIENTS}", self.patients),
            );
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return bad(
                "size",
                format!("{} is not within {MIN_SIZE}..={MAX_SIZE}", self.size),
            );
        }
        if !(1..=MAX_SLICES).contains(&self.slices) {
            return bad(
                "slices",
                format!("{} is not within 1..={MAX_SLICES}", self.slices),
            );
        }
        let t = self.slice_thickness_mm;
        if !(t > 0.0 && t <= MAX_SLICE_THICKNESS_MM) {
            return bad(
                "slice_thickness_mm",
                format!("{t} is not within (0, {MAX_SLICE_THICKNESS_MM}] mm"),
            );
        }
        Ok(())
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PhantomSummary {
    pub patients: u32,
    /// CT series plus radiographs.
    pub series: u32,
    /// DICOM files written (truth files not counted).
    pub files: u64,
    /// Bytes of the DICOM files written.
    pub bytes: u64,
    pub dicom_dir: PathBuf, // <out>/dicom
    pub truth_dir: PathBuf, // <out>/truth
    /// Every identifying string planted (names in PN and prose form, IDs, accession numbers, dates
    /// as YYYYMMDD, institution, physicians, free text, the private tag value, folder names),
    /// sorted and without duplicates.
    pub planted_identifiers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PhantomError {
    #[error("phantom setting `{key}`: {reason}; change it in the [phantom] config or the command line")]
    Config { key: &'static str, reason: String },
    #[error("{path} already holds files; remove it or choose another output directory")]
    OutputNotEmpty { path: PathBuf },
    #[error("cannot write {path}: {source}; check the output directory's permissions and free space")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot encode DICOM file {path}: {reason}")]
    Dicom { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PhantomError + '_ {
    move |source| PhantomError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// HU of one CT series exactly as written, for comparing a reader's output voxel for voxel.
#[derive(Clone, Debug)]
pub struct CtVolume {
    pub patient_id: String,
    pub series_uid: String,
    pub slices: usize,
    pub rows: usize,
    pub cols: usize,
    /// Noise included, after int16 rounding; voxels outside a circular FOV are −1024.
    pub hu: Vec<i16>, // (slices, rows, cols), slices in ascending z
    pub pixel_spacing: [f64; 2], // (row spacing, column spacing) mm
    pub slice_spacing: f64,      // mm
    /// ImagePositionPatient of the first (lowest) slice.
    pub origin: [f64; 3],
    /// Voxels whose stored value equals PixelPaddingValue (0 when the series declares none). In an
    /// unsigned series an in-FOV −1024 HU is stored as 0 = the padding value, so it counts too.
    pub padding_voxels: u64,
}

/// Recomputes the CT series of `patient` (0-based, below `cfg.patients`) without writing files.
///
/// # Panics
/// If `patient >= cfg.patients`.
pub fn ct_volume(cfg: &PhantomConfig, patient: u32) -> CtVolume {
    let cohort = CohortPlan::new(cfg.seed, cfg.patients);
    let plan = PatientPlan::new(cfg, &cohort, patient);
    let rendered = ct::render_volume(&plan);
    let g = &plan.geometry;
    CtVolume {
        patient_id: plan.identity.patient_id.clone(),
        series_uid: plan.uids.ct_series.clone(),
        slices: g.slices,
        rows: g.rows,
        cols: g.cols,
        hu: rendered.hu,
        pixel_spacing: [g.pixel_spacing, g.pixel_spacing],
        slice_spacing: g.slice_spacing,
        origin: g.origin,
        padding_voxels: rendered.padding_voxels,
    }
}

/// What one patient contributed.
struct PatientOutput {
    truth: PatientTruth,
    planted: Vec<String>,
    series: u32,
    files: u64,
    bytes: u64,
}

/// Writes the cohort under `out` (`dicom/` and `truth/`, which must be absent or empty).
pub fn generate(cfg: &PhantomConfig, out: &Path) -> Result<PhantomSummary, PhantomError> {
    cfg.validate()?;
    let dicom_dir = out.join("dicom");
    let truth_dir = out.join("truth");
    for dir in [&dicom_dir, &truth_dir] {
        ensure_empty(dir)?;
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let cohort = CohortPlan::new(cfg.seed, cfg.patients);
    for sub in [masks::MASKS_DIR, masks::LIDC_DIR, rtstruct::RTSTRUCT_DIR] {
        let d = truth_dir.join(sub);
        fs::create_dir_all(&d).map_err(io_error(&d))?;
    }
    let outputs: Vec<PatientOutput> = (0..cfg.patients)
        .into_par_iter()
        .map(|p| write_patient(cfg, &cohort, p, &dicom_dir, &truth_dir))
        .collect::<Result<_, _>>()?;
    let mut planted: Vec<String> = outputs.iter().flat_map(|o| o.planted.iter().cloned()).collect();
    planted.sort();
    planted.dedup();
    write_truth(&truth_dir, &outputs, &planted)?;
    Ok(PhantomSummary {
        patients: cfg.patients,
        series: outputs.iter().map(|o| o.series).sum(),
        files: outputs.iter().map(|o| o.files).sum(),
        bytes: outputs.iter().map(|o| o.bytes).sum(),
        dicom_dir,
        truth_dir,
        planted_identifiers: planted,
    })
}

fn ensure_empty(dir: &Path) -> Result<(), PhantomError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(PhantomError::OutputNotEmpty {
                path: dir.to_path_buf(),
            }),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(dir)(e)),
    }
}

fn write_patient(
    cfg: &PhantomConfig,
    cohort: &CohortPlan,
    patient: u32,
    dicom_dir: &Path,
    truth_dir: &Path,
) -> Result<PatientOutput, PhantomError> {
    let plan = PatientPlan::new(cfg, cohort, patient);
    let id = &plan.identity;
    let patient_dir = dicom_dir.join(id.folder_name());
    let (mut files, mut bytes) = (0u64, 0u64);

    let ct_dir = patient_dir.join(format!("CT_{}_SE2", id.ct_date.dicom()));
    fs::create_dir_all(&ct_dir).map_err(io_error(&ct_dir))?;
    let rendered = ct::render_volume(&plan);
    let header = write::ct_series_header(&plan);
    let slices = ct::slice_files(cfg.seed, &plan);
    for slice in &slices {
        bytes += write::write_ct_slice(&header, &plan, &rendered, slice, &ct_dir.join(&slice.file_name))?;
        files += 1;
    }
    let mask_row = masks::write_lesion_mask(&plan, truth_dir).map_err(io_error(truth_dir))?;
    masks::write_lidc_xml(cfg.seed, &plan, &slices, truth_dir).map_err(io_error(truth_dir))?;
    rtstruct::write_rtstruct(cfg.seed, &plan, &slices, truth_dir)?;

    let mut radiograph_modality = None;
    if cfg.radiographs {
        let modality = if plan.radiograph.dx { "DX" } else { "CR" };
        let dir = patient_dir.join(format!("{modality}_{}_SE1", id.radiograph_date.dicom()));
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let (detector, pixels) = radiograph::render(&plan);
        let sop_uid = seed::uid(cfg.seed, "radiograph instance", patient, 0);
        let name = format!("{}.dcm", seed::hex_name(cfg.seed, "radiograph file", patient, 0));
        bytes += write::write_radiograph(&plan, &detector, pixels, &sop_uid, &dir.join(name))?;
        files += 1;
        radiograph_modality = Some(modality);
    }

    let mut truth = PatientTruth::new(cfg.seed, &plan, &slices, radiograph_modality);
    truth.masks.push(mask_row);
    Ok(PatientOutput {
        truth,
        planted: id.planted(),
        series: 1 + u32::from(radiograph_modality.is_some()),
        files,
        bytes,
    })
}

fn write_truth(dir: &Path, outputs: &[PatientOutput], planted: &[String]) -> Result<(), PhantomError> {
    type Rows = fn(&PatientTruth) -> &Vec<String>;
    let tables: [(&str, &str, Rows); 6] = [
        (truth::PATIENTS_CSV, truth::PATIENTS_HEADER, |t| &t.patients),
        (truth::SERIES_CSV, truth::SERIES_HEADER, |t| &t.series),
        (truth::SLICES_BY_SOP_CSV, truth::SLICES_BY_SOP_HEADER, |t| {
            &t.slices_by_sop
        }),
        (
            truth::SLICES_BY_INSTANCE_CSV,
            truth::SLICES_BY_INSTANCE_HEADER,
            |t| &t.slices_by_instance,
        ),
        (truth::LESIONS_CSV, truth::LESIONS_HEADER, |t| &t.lesions),
        (masks::MASKS_CSV, masks::MASKS_HEADER, |t| &t.masks),
    ];
    for (name, header, rows) in tables {
        let lines = std::iter::once(header).chain(
            outputs
                .iter()
                .flat_map(|o| rows(&o.truth).iter().map(String::as_str)),
        );
        write_lines(&dir.join(name), lines)?;
    }
    write_lines(&dir.join(truth::PLANTED_TXT), planted.iter().map(String::as_str))
}

fn write_lines<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> Result<(), PhantomError> {
    let file = fs::File::create(path).map_err(io_error(path))?;
    let mut writer = std::io::BufWriter::new(file);
    for line in lines {
        writeln!(writer, "{line}").map_err(io_error(path))?;
    }
    writer.flush().map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_out_of_range_values_naming_the_key() {
        let cfg = PhantomConfig {
            size: 8,
            ..PhantomConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("`size`"), "{err}");
        let cfg = PhantomConfig {
            slice_thickness_mm: 0.0,
            ..PhantomConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("slice_thickness_mm"));
        assert!(PhantomConfig::default().validate().is_ok());
    }

    #[test]
    fn config_reads_partial_json_and_rejects_unknown_keys() {
        let cfg: PhantomConfig = serde_json::from_str(r#"{"patients": 4}"#).unwrap();
        assert_eq!((cfg.patients, cfg.size, cfg.seed), (4, 96, 2026));
        assert!(serde_json::from_str::<PhantomConfig>(r#"{"patient": 4}"#).is_err());
    }

    /// The trivial baseline the issue names: score each series by its brightest lung voxel. Vessels
    /// are as dense as nodules, so it must stay a weak classifier (AUC ≤ 0.75).
    #[test]
    fn brightest_lung_voxel_is_a_weak_nodule_detector() {
        let cfg = PhantomConfig {
            patients: 60,
            ..PhantomConfig::default()
        };
        let cohort = CohortPlan::new(cfg.seed, cfg.patients);
        let mut scored: Vec<(i16, bool)> = Vec::new();
        for p in 0..cfg.patients {
            let plan = PatientPlan::new(&cfg, &cohort, p);
            let hu = ct::render_volume(&plan).hu;
            let g = &plan.geometry;
            let mut brightest = i16::MIN;
            for k in 0..g.slices {
                let scale = plan.anatomy.lung_scale(g.z(k));
                for i in 0..g.rows {
                    for j in 0..g.cols {
                        if plan.anatomy.tissue(g.x(j), g.y(i), scale) == anatomy::Tissue::Lung {
                            brightest = brightest.max(hu[(k * g.rows + i) * g.cols + j]);
                        }
                    }
                }
            }
            scored.push((brightest, !plan.anatomy.nodules.is_empty()));
        }
        let auc = mann_whitney_auc(&scored);
        eprintln!("brightest-lung-voxel AUC {auc:.3}");
        assert!(auc <= 0.75, "brightest-lung-voxel AUC {auc:.3}");
    }

    /// P(score of a positive > score of a negative), ties counting one half.
    fn mann_whitney_auc(scored: &[(i16, bool)]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for &(a, _) in scored.iter().filter(|s| s.1) {
            for &(b, _) in scored.iter().filter(|s| !s.1) {
                wins += if a > b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
                pairs += 1.0;
            }
        }
        wins / pairs
    }

    #[test]
    fn auc_of_a_perfect_and_a_useless_score() {
        assert_eq!(
            mann_whitney_auc(&[(3, true), (2, true), (1, false), (0, false)]),
            1.0
        );
        assert_eq!(mann_whitney_auc(&[(1, true), (1, false)]), 0.5);
    }

    #[test]
    fn ct_volume_matches_the_declared_shape_and_clips() {
        let cfg = PhantomConfig {
            patients: 3,
            size: 24,
            slices: 5,
            ..PhantomConfig::default()
        };
        let v = ct_volume(&cfg, 1);
        assert_eq!(v.hu.len(), v.slices * v.rows * v.cols);
        assert_eq!((v.slices, v.rows, v.cols), (5, 24, 24));
        assert!(v.hu.iter().all(|&h| (ct::HU_MIN..=ct::HU_MAX).contains(&h)));
        assert!(v.series_uid.starts_with("2.25."));
    }
}
