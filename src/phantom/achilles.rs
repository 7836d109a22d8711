//! The Achilles cohort (`phantom --cohort achilles`): per patient a healing grade of 1–7 (7:
//! healed) and, written as real DICOM with the patient's identifiers planted, longitudinal imaging of
//! the same tendon: a sagittal MR series and an ultrasound at the first visits (one grade), and a
//! follow-up ultrasound 12 weeks later, by when the tendon has healed by 1–3 grades (at most 7).
//!
//! - Ultrasound: B-mode speckle (Rayleigh), skin line, the tendon as a fibrillar band whose thickness
//!   falls and echogenicity rises with the grade. By patient: RGB, a 3-frame cine loop, or one
//!   MONOCHROME2 frame. Every object has a Sequence of Ultrasound Regions locating the tissue below a
//!   16-row top border; every other patient has the name and ID burned into that border
//!   (BurnedInAnnotation YES), which `pack` crops away.
//! - MR: 5 sagittal slices; the tendon a vertical low-signal band, thicker and brighter inside the
//!   less it has healed.
//!
//! Truth: `healing.csv` (the grade of each series), `features.csv` (a hand-crafted tendon thickness
//! measured with error at each visit, missing for about one visit in ten, and the age) and the
//! planted identifiers. The pixels and the features each carry the grade, so late fusion has two sources.

use super::identity::Identity;
use super::seed::{hex_name, stream_rng, uid};
use super::write::{ds, write_file, DicomBuilder};
use super::{ensure_empty, io_error, truth, PhantomConfig, PhantomError, PhantomSummary};
use dicom_core::value::{DataSetSequence, C};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::fs;
use std::path::Path;

/// Ultrasound image: rows × columns, the top `US_BORDER` rows outside the tissue region.
const US_ROWS: usize = 112;
const US_COLS: usize = 128;
const US_BORDER: usize = 16;
/// Ultrasound pixel spacing, cm (PhysicalDeltaX/Y).
const US_DELTA_CM: f64 = 0.025;
/// Frames of a cine loop.
const US_CINE_FRAMES: usize = 3;
/// MR: slices, rows (superior → inferior), columns (anterior → posterior), spacings in mm.
const MR_SLICES: usize = 5;
const MR_ROWS: usize = 80;
const MR_COLS: usize = 96;
const MR_PIXEL_MM: f64 = 0.5;
const MR_SLICE_MM: f64 = 3.0;
/// A healed tendon's thickness, mm; each grade below 7 adds `SWELLING_MM`.
const HEALED_MM: f64 = 5.0;
const SWELLING_MM: f64 = 1.0;
/// Standard deviation of the hand-crafted thickness measurement, mm, and how often it is missing.
const MEASUREMENT_SD_MM: f64 = 1.5;
const MEASUREMENT_MISSING: f64 = 0.1;
const US_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.6.1";
const US_MULTIFRAME_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.3.1";
const MANUFACTURER: &str = "MEDTRAIN";
/// Burned-in text is drawn with this value; tissue stays below it.
const TEXT_VALUE: u8 = 255;
/// The follow-up ultrasound comes this many days after the first one.
const FOLLOW_UP_DAYS: i64 = 84;
/// Grades healed by the follow-up (inclusive range, capped at 7).
const FOLLOW_UP_GAIN: std::ops::RangeInclusive<u8> = 1..=3;

/// One patient of the cohort.
struct Tendon {
    grade: u8,
    thickness_mm: f64,
    /// The hand-crafted feature: None when the measurement is missing.
    measured_mm: Option<f64>,
    variant: UsVariant,
    burned_in: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum UsVariant {
    Rgb,
    Cine,
    Mono,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Rayleigh speckle with mean 1.
fn speckle(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    (-2.0 * u.ln()).sqrt() / 1.253_314_1
}

impl Tendon {
    fn sample(seed: u64, patient: u32) -> Tendon {
        let mut rng = stream_rng(seed, "achilles tendon", patient);
        let grade = rng.gen_range(1..=7u8);
        Tendon::at_grade(&mut rng, grade, patient)
    }

    fn at_grade(rng: &mut ChaCha8Rng, grade: u8, patient: u32) -> Tendon {
        let thickness_mm = HEALED_MM + SWELLING_MM * f64::from(7 - grade) + 0.3 * normal(rng);
        let measured = thickness_mm + MEASUREMENT_SD_MM * normal(rng);
        let missing = rng.gen_bool(MEASUREMENT_MISSING);
        Tendon {
            grade,
            thickness_mm,
            measured_mm: (!missing).then_some(measured),
            variant: [UsVariant::Rgb, UsVariant::Cine, UsVariant::Mono][patient as usize % 3],
            burned_in: patient % 2 == 0,
        }
    }

    /// The same tendon at the follow-up visit: healed by 1–3 grades (at most 7), its thickness and
    /// measurement drawn again (from their own stream).
    fn follow_up(&self, seed: u64, patient: u32) -> Tendon {
        let mut rng = stream_rng(seed, "achilles follow-up", patient);
        let grade = (self.grade + rng.gen_range(FOLLOW_UP_GAIN)).min(7);
        Tendon::at_grade(&mut rng, grade, patient)
    }

    /// One B-mode frame (rows × cols, 8-bit); `shift` moves the tissue down by whole rows.
    fn us_frame(&self, rng: &mut ChaCha8Rng, top: usize, shift: usize) -> Vec<u8> {
        let thick = (self.thickness_mm / (US_DELTA_CM * 10.0)).round() as usize;
        let (t0, t1) = (top + shift, top + shift + thick);
        let echo = 60.0 + 15.0 * f64::from(self.grade);
        let mut img = vec![0u8; US_ROWS * US_COLS];
        for r in US_BORDER..US_ROWS {
            for c in 0..US_COLS {
                let mean = if r < US_BORDER + 3 {
                    170.0 // skin
                } else if (t0..t1).contains(&r) {
                    // Fibrillar: bright and dark striations along the tendon.
                    echo * (1.0 + 0.25 * (std::f64::consts::TAU * (r - t0) as f64 / 4.0).sin())
                } else if r < t0 {
                    55.0
                } else {
                    45.0 // Kager's fat pad
                };
                let v = mean * speckle(rng);
                img[r * US_COLS + c] = v.clamp(0.0, f64::from(TEXT_VALUE - 1)).round() as u8;
            }
        }
        img
    }

    /// One MR slice (rows × cols); `k` its index, the centre slice through the tendon's middle.
    fn mr_slice(&self, rng: &mut ChaCha8Rng, k: usize, centre_col: f64) -> Vec<u16> {
        // Off-centre slices cut the tendon's rounded cross-section narrower.
        let offset = (k as f64 - (MR_SLICES / 2) as f64) * MR_SLICE_MM;
        let half = (self.thickness_mm / 2.0).powi(2) - (offset / 2.0).powi(2);
        let half_px = half.max(0.0).sqrt() / MR_PIXEL_MM;
        let core = 80.0 + 40.0 * f64::from(7 - self.grade);
        let mut img = vec![0u16; MR_ROWS * MR_COLS];
        for r in 0..MR_ROWS {
            for c in 0..MR_COLS {
                let inside = (c as f64 + 0.5 - centre_col).abs() < half_px;
                let (mean, sd) = if inside { (core, 20.0) } else { (400.0, 40.0) };
                img[r * MR_COLS + c] = (mean + sd * normal(rng)).clamp(0.0, 4095.0).round() as u16;
            }
        }
        img
    }
}

/// Draws `text` in 5 × 7 glyphs from (row, col), one pixel per dot.
fn burn_text(img: &mut [u8], cols: usize, row: usize, col: usize, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = crate::font::glyph(ch);
        for (dy, bits) in glyph.iter().enumerate() {
            for dx in 0..5 {
                let c = col + i * 6 + dx;
                if bits & (0b10000 >> dx) != 0 && c < cols {
                    img[(row + dy) * cols + c] = TEXT_VALUE;
                }
            }
        }
    }
}

/// Elements of every file of a patient: identifiers planted as a real archive leaks them.
fn patient_header(
    id: &Identity,
    date: &str,
    modality: &str,
    study_uid: &str,
    series_uid: &str,
) -> DicomBuilder {
    let mut d = DicomBuilder::new();
    d.str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100")
        .str(tags::STUDY_DATE, VR::DA, date)
        .str(tags::SERIES_DATE, VR::DA, date)
        .str(tags::CONTENT_DATE, VR::DA, date)
        .str(tags::STUDY_TIME, VR::TM, "101500")
        .str(tags::MANUFACTURER, VR::LO, MANUFACTURER)
        .str(tags::INSTITUTION_NAME, VR::LO, id.institution)
        .str(tags::REFERRING_PHYSICIAN_NAME, VR::PN, id.referring.dicom())
        .str(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            id.study_description(&format!("ACHILLES {modality}")),
        )
        .str(tags::PATIENT_NAME, VR::PN, id.name.dicom())
        .str(tags::PATIENT_ID, VR::LO, id.patient_id.as_str())
        .str(tags::PATIENT_BIRTH_DATE, VR::DA, id.birth_date.dicom())
        .str(tags::PATIENT_SEX, VR::CS, id.sex.to_string())
        .str(tags::BODY_PART_EXAMINED, VR::CS, "ANKLE")
        .str(tags::LATERALITY, VR::CS, "R")
        .str(tags::MODALITY, VR::CS, modality)
        .str(tags::STUDY_INSTANCE_UID, VR::UI, study_uid)
        .str(tags::SERIES_INSTANCE_UID, VR::UI, series_uid)
        .str(tags::STUDY_ID, VR::SH, "1")
        .str(tags::IMAGE_COMMENTS, VR::LT, id.image_comment());
    d
}

/// The Sequence of Ultrasound Regions: one 2D tissue region below the border, spacing in cm.
fn us_regions() -> DataElement<InMemDicomObject> {
    let mut item = InMemDicomObject::new_empty();
    let mut us = |tag, v: u16| item.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    us(tags::REGION_SPATIAL_FORMAT, 1);
    us(tags::REGION_DATA_TYPE, 1);
    us(tags::PHYSICAL_UNITS_X_DIRECTION, 3);
    us(tags::PHYSICAL_UNITS_Y_DIRECTION, 3);
    let mut ul = |tag, v: u32| item.put(DataElement::new(tag, VR::UL, PrimitiveValue::from(v)));
    ul(tags::REGION_FLAGS, 0);
    ul(tags::REGION_LOCATION_MIN_X0, 0);
    ul(tags::REGION_LOCATION_MIN_Y0, US_BORDER as u32);
    ul(tags::REGION_LOCATION_MAX_X1, US_COLS as u32 - 1);
    ul(tags::REGION_LOCATION_MAX_Y1, US_ROWS as u32 - 1);
    for tag in [tags::PHYSICAL_DELTA_X, tags::PHYSICAL_DELTA_Y] {
        item.put(DataElement::new(tag, VR::FD, PrimitiveValue::from(US_DELTA_CM)));
    }
    DataElement::new(
        tags::SEQUENCE_OF_ULTRASOUND_REGIONS,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    )
}

/// Writes the MR series into `dir`: sagittal slices (rows run inferior, columns posterior) in
/// ascending patient x; returns (files, bytes).
fn write_mr(
    seed: u64,
    patient: u32,
    id: &Identity,
    tendon: &Tendon,
    rng: &mut ChaCha8Rng,
    dir: &Path,
    mr_series: &str,
) -> Result<(u64, u64), PhantomError> {
    let (mut files, mut bytes) = (0u64, 0u64);
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let centre_col = MR_COLS as f64 / 2.0 + rng.gen_range(-6.0..6.0);
    let study = uid(seed, "achilles mr study", patient, 0);
    let frame_of_reference = uid(seed, "achilles mr frame", patient, 0);
    for k in 0..MR_SLICES {
        let x = (k as f64 - (MR_SLICES / 2) as f64) * MR_SLICE_MM;
        let words = tendon.mr_slice(rng, k, centre_col);
        let mut d = patient_header(id, &id.radiograph_date.dicom(), "MR", &study, mr_series);
        d.str(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE)
            .str(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                uid(seed, "achilles mr instance", patient, k as u32).as_str(),
            )
            .str(tags::SERIES_NUMBER, VR::IS, "2")
            .str(tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string())
            .str(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\M")
            .str(tags::SCANNING_SEQUENCE, VR::CS, "SE")
            .str(tags::SEQUENCE_VARIANT, VR::CS, "NONE")
            .str(tags::REPETITION_TIME, VR::DS, "3000")
            .str(tags::ECHO_TIME, VR::DS, "80")
            .str(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "3")
            .str(tags::SLICE_THICKNESS, VR::DS, ds(MR_SLICE_MM, 1))
            .str(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(MR_SLICE_MM, 1))
            .strs(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                &["0", "1", "0", "0", "0", "-1"].map(String::from),
            )
            .strs(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &[ds(x, 2), ds(-24.0, 2), ds(20.0, 2)],
            )
            .str(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference.as_str())
            .strs(
                tags::PIXEL_SPACING,
                VR::DS,
                &[ds(MR_PIXEL_MM, 2), ds(MR_PIXEL_MM, 2)],
            )
            .us(tags::SAMPLES_PER_PIXEL, 1)
            .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
            .us(tags::ROWS, MR_ROWS as u16)
            .us(tags::COLUMNS, MR_COLS as u16)
            .us(tags::BITS_ALLOCATED, 16)
            .us(tags::BITS_STORED, 12)
            .us(tags::HIGH_BIT, 11)
            .us(tags::PIXEL_REPRESENTATION, 0)
            .str(tags::RESCALE_INTERCEPT, VR::DS, "0")
            .str(tags::RESCALE_SLOPE, VR::DS, "1");
        d.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(C::from_vec(words)),
        ));
        let name = format!("{}.dcm", hex_name(seed, "achilles mr file", patient, k as u32));
        bytes += write_file(d.into_inner(), uids::EXPLICIT_VR_LITTLE_ENDIAN, &dir.join(name))?;
        files += 1;
    }

    Ok((files, bytes))
}

/// Writes one ultrasound object of visit `visit` (0: first, 1: follow-up) in its own study.
#[allow(clippy::too_many_arguments)]
fn write_us(
    seed: u64,
    patient: u32,
    visit: u32,
    id: &Identity,
    tendon: &Tendon,
    rng: &mut ChaCha8Rng,
    folder: &Path,
    us_date: &str,
    us_series: &str,
) -> Result<(u64, u64), PhantomError> {
    let (mut files, mut bytes) = (0u64, 0u64);
    let dir = folder.join(format!("US_{us_date}_SE{}", 1 + 2 * visit));
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let top = US_BORDER + 12 + rng.gen_range(0..8);
    let frames = if tendon.variant == UsVariant::Cine {
        US_CINE_FRAMES
    } else {
        1
    };
    let mut grey = Vec::with_capacity(frames * US_ROWS * US_COLS);
    for f in 0..frames {
        let mut frame = tendon.us_frame(rng, top, f);
        if tendon.burned_in {
            let text = format!("{} {}", id.name.prose().to_uppercase(), id.patient_id);
            burn_text(&mut frame, US_COLS, 4, 2, &text);
        }
        grey.extend(frame);
    }
    let rgb = tendon.variant == UsVariant::Rgb;
    let pixels: Vec<u8> = match rgb {
        true => grey.iter().flat_map(|&v| [v, v, v]).collect(),
        false => grey,
    };
    let sop = uid(seed, "achilles us instance", patient, visit);
    let mut d = patient_header(
        &id,
        us_date,
        "US",
        &uid(seed, "achilles us study", patient, visit),
        us_series,
    );
    d.str(
        tags::SOP_CLASS_UID,
        VR::UI,
        if frames > 1 {
            US_MULTIFRAME_SOP_CLASS
        } else {
            US_SOP_CLASS
        },
    )
    .str(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str())
    .str(tags::SERIES_NUMBER, VR::IS, "1")
    .str(tags::INSTANCE_NUMBER, VR::IS, "1")
    .str(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY")
    .str(
        tags::BURNED_IN_ANNOTATION,
        VR::CS,
        if tendon.burned_in { "YES" } else { "NO" },
    )
    .us(tags::SAMPLES_PER_PIXEL, if rgb { 3 } else { 1 })
    .str(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        if rgb { "RGB" } else { "MONOCHROME2" },
    )
    .us(tags::ROWS, US_ROWS as u16)
    .us(tags::COLUMNS, US_COLS as u16)
    .us(tags::BITS_ALLOCATED, 8)
    .us(tags::BITS_STORED, 8)
    .us(tags::HIGH_BIT, 7)
    .us(tags::PIXEL_REPRESENTATION, 0);
    if rgb {
        d.us(tags::PLANAR_CONFIGURATION, 0);
    }
    if frames > 1 {
        d.str(tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string())
            .str(tags::FRAME_TIME, VR::DS, "33.3");
    }
    d.put(us_regions());
    d.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(C::from_vec(pixels)),
    ));
    let name = format!("{}.dcm", hex_name(seed, "achilles us file", patient, visit));
    bytes += write_file(d.into_inner(), uids::EXPLICIT_VR_LITTLE_ENDIAN, &dir.join(name))?;
    files += 1;

    Ok((files, bytes))
}

/// Writes one patient's ultrasound and MR series; returns (files, bytes, truth rows).
fn write_patient(
    seed: u64,
    patient: u32,
    dicom_dir: &Path,
) -> Result<(u64, u64, Vec<String>, Vec<String>, Vec<String>), PhantomError> {
    let id = Identity::sample(seed, patient);
    let tendon = Tendon::sample(seed, patient);
    let mut rng = stream_rng(seed, "achilles pixels", patient);
    let folder = dicom_dir.join(id.folder_name());
    let (mut files, mut bytes) = (0u64, 0u64);
    let (us_date, mr_date) = (id.ct_date.dicom(), id.radiograph_date.dicom());
    let us_series = uid(seed, "achilles us series", patient, 0);
    let mr_series = uid(seed, "achilles mr series", patient, 0);

    let (f, b) = write_us(
        seed, patient, 0, &id, &tendon, &mut rng, &folder, &us_date, &us_series,
    )?;
    files += f;
    bytes += b;

    let dir = folder.join(format!("MR_{mr_date}_SE2"));
    let (f, b) = write_mr(seed, patient, &id, &tendon, &mut rng, &dir, &mr_series)?;
    files += f;
    bytes += b;

    // The follow-up ultrasound, its pixels drawn after the first visits' (which stay as they were).
    let later = tendon.follow_up(seed, patient);
    let later_date = id.ct_date.plus_days(FOLLOW_UP_DAYS).dicom();
    let later_series = uid(seed, "achilles us series", patient, 1);
    let (f, b) = write_us(
        seed,
        patient,
        1,
        &id,
        &later,
        &mut rng,
        &folder,
        &later_date,
        &later_series,
    )?;
    files += f;
    bytes += b;

    let age = id.ct_date.age_years_since(id.birth_date);
    let measured = |t: &Tendon| t.measured_mm.map_or(String::new(), |m| format!("{m:.2}"));
    let visits = [
        (&us_series, &tendon),
        (&mr_series, &tendon),
        (&later_series, &later),
    ];
    let healing = visits
        .iter()
        .map(|(s, t)| format!("{},{s},{}", id.patient_id, t.grade))
        .collect();
    let features = visits
        .iter()
        .map(|(s, t)| format!("{},{s},{},{age}", id.patient_id, measured(t)))
        .collect();
    Ok((files, bytes, healing, features, id.planted()))
}

/// Writes the Achilles cohort under `out` (`dicom/` and `truth/`, which must be absent or empty):
/// `cfg.seed` and `cfg.patients` apply; the CT settings do not.
pub fn generate(cfg: &PhantomConfig, out: &Path) -> Result<PhantomSummary, PhantomError> {
    cfg.validate()?;
    let dicom_dir = out.join("dicom");
    let truth_dir = out.join("truth");
    for dir in [&dicom_dir, &truth_dir] {
        ensure_empty(dir)?;
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let outputs = (0..cfg.patients)
        .into_par_iter()
        .map(|p| write_patient(cfg.seed, p, &dicom_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let mut healing = vec!["PatientID,SeriesInstanceUID,Score".to_string()];
    let mut features = vec!["PatientID,SeriesInstanceUID,Thickness,Age".to_string()];
    let mut planted = Vec::new();
    let (mut files, mut bytes) = (0, 0);
    for (f, b, h, x, p) in outputs {
        files += f;
        bytes += b;
        healing.extend(h);
        features.extend(x);
        planted.extend(p);
    }
    planted.sort();
    planted.dedup();
    let write = |name: &str, lines: &[String]| {
        let path = truth_dir.join(name);
        fs::write(&path, lines.join("\n") + "\n").map_err(io_error(&path))
    };
    write(HEALING_CSV, &healing)?;
    write(FEATURES_CSV, &features)?;
    write(truth::PLANTED_TXT, &planted)?;
    Ok(PhantomSummary {
        patients: cfg.patients,
        series: 3 * cfg.patients,
        files,
        bytes,
        dicom_dir,
        truth_dir,
        planted_identifiers: planted,
    })
}

/// The truth files of the Achilles cohort.
pub const HEALING_CSV: &str = "healing.csv";
pub const FEATURES_CSV: &str = "features.csv";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grade_sets_thickness_and_echogenicity() {
        let healed = Tendon {
            grade: 7,
            thickness_mm: 5.0,
            measured_mm: None,
            variant: UsVariant::Mono,
            burned_in: false,
        };
        let swollen = Tendon {
            grade: 1,
            thickness_mm: 11.0,
            ..healed
        };
        let mut rng = stream_rng(1, "test", 0);
        let top = US_BORDER + 12;
        let band = |t: &Tendon, rng: &mut ChaCha8Rng| {
            let img = t.us_frame(rng, top, 0);
            let rows = (t.thickness_mm / 0.25).round() as usize;
            let mean = img[top * US_COLS..(top + rows) * US_COLS]
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / (rows * US_COLS) as f64;
            (rows, mean, img)
        };
        let (rows_h, mean_h, img) = band(&healed, &mut rng);
        let (rows_s, mean_s, _) = band(&swollen, &mut rng);
        assert_eq!((rows_h, rows_s), (20, 44));
        assert!(mean_h > 1.5 * mean_s, "healed {mean_h} vs swollen {mean_s}");
        assert!(
            img[..US_BORDER * US_COLS].iter().all(|&v| v == 0),
            "the border is empty"
        );
        assert!(
            img.iter().all(|&v| v < TEXT_VALUE),
            "tissue never reaches the text value"
        );
    }
}
