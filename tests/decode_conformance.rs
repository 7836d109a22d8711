//! Decode conformance against pydicom 3 on pydicom's own test files.
//!
//! Expected values come from `tests/reference/pydicom_decode.py` (pydicom 3.0.2 with the pylibjpeg
//! plugins pinned in `tests/reference/requirements.txt`), which wrote `tests/reference/pydicom_decode.json`.
//! The files themselves come from `scripts/fetch-test-data.sh`. For every file pydicom decodes we must
//! decode the same shape and dtype with equal values (sha256) for lossless syntaxes, and values within a
//! stated tolerance for lossy ones; the modality LUT result must match too. Every other file must give an
//! error or a decode, never a panic; 12-bit JPEG that pydicom's plugins refuse is checked against DCMTK's
//! `dcmdjpeg` decode recorded by the same script.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use medtrain::dicom::decode::{decode_pixels, open_dicom, DecodedPixels};
use medtrain::dicom::modality::modality_lut;
use serde_json::Value;
use sha2::{Digest, Sha256};

const FIXTURE: &str = include_str!("reference/pydicom_decode.json");

/// Lossy syntaxes: another JPEG/JPEG 2000/JPEG-LS implementation may round its inverse transform and
/// colour conversion differently. Max |difference| allowed on pydicom's subsample, per bits of the
/// decoded container, and the relative difference allowed on the whole-image mean.
const LOSSY_MAX_ABS_DIFF_8BIT: f64 = 2.0;
const LOSSY_MAX_ABS_DIFF_16BIT: f64 = 2.0;
const LOSSY_MEAN_REL_TOL: f64 = 0.005;

/// Files pydicom decodes that we do not (yet), with the reason. The goal is an empty list.
const KNOWN_GAPS: &[(&str, &str)] = &[];

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("MEDTRAIN_PYDICOM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-data/pydicom/data/test_files")
        });
    assert!(
        dir.join("CT_small.dcm").is_file(),
        "pydicom test files not found in {}: run scripts/fetch-test-data.sh (or set MEDTRAIN_PYDICOM_DATA)",
        dir.display()
    );
    dir
}

/// pydicom squeezes frames == 1 and samples == 1 out of its shapes.
fn pydicom_shape(d: &DecodedPixels) -> Vec<u64> {
    let mut shape = Vec::new();
    if d.frames > 1 {
        shape.push(d.frames as u64);
    }
    shape.extend([d.rows as u64, d.cols as u64]);
    if d.samples_per_pixel > 1 {
        shape.push(d.samples_per_pixel as u64);
    }
    shape
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Default)]
struct Tally {
    outcomes: BTreeMap<&'static str, Vec<String>>,
    failures: Vec<String>,
}

impl Tally {
    fn note(&mut self, outcome: &'static str, file: &str) {
        self.outcomes.entry(outcome).or_default().push(file.to_string());
    }
}

/// Compare a lossy decode with pydicom's subsample and mean; returns (max |diff|, mean rel diff).
fn lossy_difference(ours: &DecodedPixels, subsample: &Value) -> (f64, f64) {
    let stride = subsample["stride"].as_u64().unwrap() as usize;
    let values = subsample["values"].as_array().unwrap();
    let max_abs = values
        .iter()
        .enumerate()
        .map(|(i, v)| (ours.pixels.get_f64(i * stride) - v.as_f64().unwrap()).abs())
        .fold(0.0, f64::max);
    let n = ours.pixels.len();
    let mean = (0..n).map(|i| ours.pixels.get_f64(i)).sum::<f64>() / n as f64;
    let reference = subsample["mean"].as_f64().unwrap();
    let rel = (mean - reference).abs() / reference.abs().max(1.0);
    (max_abs, rel)
}

fn check_decodable(
    entry: &Value,
    obj: &dicom_object::DefaultDicomObject,
    ours: &DecodedPixels,
) -> Result<String, String> {
    let expected_shape: Vec<u64> = entry["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let shape = pydicom_shape(ours);
    if shape != expected_shape {
        return Err(format!("shape {shape:?}, pydicom {expected_shape:?}"));
    }
    let dtype = entry["dtype"].as_str().unwrap();
    if ours.pixels.dtype_name() != dtype {
        return Err(format!("dtype {}, pydicom {dtype}", ours.pixels.dtype_name()));
    }
    let mut note = String::new();
    if entry["lossy"].as_bool().unwrap() {
        let (max_abs, rel) = lossy_difference(ours, &entry["subsample"]);
        let tol = if dtype.ends_with('8') {
            LOSSY_MAX_ABS_DIFF_8BIT
        } else {
            LOSSY_MAX_ABS_DIFF_16BIT
        };
        if max_abs > tol || rel > LOSSY_MEAN_REL_TOL {
            return Err(format!(
                "lossy: max |diff| {max_abs} (tolerance {tol}), mean rel diff {rel:.5}"
            ));
        }
        note = format!("max|d|={max_abs} mean_rel={rel:.1e}");
    } else if sha256_hex(&ours.pixels.to_le_bytes()) != entry["sha256"].as_str().unwrap() {
        return Err("lossless: sha256 differs from pydicom's".to_string());
    }
    check_modality_lut(entry, obj, ours)?;
    Ok(note)
}

fn check_modality_lut(
    entry: &Value,
    obj: &dicom_object::DefaultDicomObject,
    ours: &DecodedPixels,
) -> Result<(), String> {
    let lut = modality_lut(obj).map_err(|e| format!("modality LUT: {e}"))?;
    let rescaled: Vec<f64> = (0..ours.pixels.len())
        .map(|i| lut.apply(ours.pixels.get_f64(i)))
        .collect();
    match entry.get("modality_lut") {
        Some(reference) if entry["lossy"].as_bool().unwrap() => {
            // Lossy inputs differ slightly, so compare the subsample with the pixel tolerance scaled
            // by the LUT's gain.
            let stride = reference["stride"].as_u64().unwrap() as usize;
            let gain = (lut.apply(1.0) - lut.apply(0.0)).abs().max(1.0);
            let tol = LOSSY_MAX_ABS_DIFF_16BIT * gain;
            let worst = reference["values"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, v)| (rescaled[i * stride] - v.as_f64().unwrap()).abs())
                .fold(0.0, f64::max);
            if worst > tol {
                return Err(format!(
                    "modality LUT {lut:?}: max |diff| {worst} > {tol} on the subsample"
                ));
            }
            Ok(())
        }
        Some(reference) => {
            let bytes: Vec<u8> = rescaled.iter().flat_map(|v| v.to_le_bytes()).collect();
            if sha256_hex(&bytes) != reference["sha256_f64"].as_str().unwrap() {
                let stride = reference["stride"].as_u64().unwrap() as usize;
                let first = reference["values"][0].as_f64().unwrap();
                return Err(format!(
                    "modality LUT {lut:?}: sha256 differs (first subsample value {} vs pydicom {first}, stride {stride})",
                    rescaled[0]
                ));
            }
            Ok(())
        }
        None if (0..ours.pixels.len()).any(|i| rescaled[i] != ours.pixels.get_f64(i)) => Err(format!(
            "modality LUT {lut:?} changes values where pydicom's does not"
        )),
        None => Ok(()),
    }
}

/// 12-bit JPEG that pydicom's plugins refuse is compared with DCMTK's decode instead.
fn check_against_dcmtk(reference: &Value, ours: &DecodedPixels) -> Result<String, String> {
    let expected_shape: Vec<u64> = reference["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    if pydicom_shape(ours) != expected_shape
        || ours.pixels.dtype_name() != reference["dtype"].as_str().unwrap()
    {
        return Err(format!(
            "shape/dtype {:?} {}",
            pydicom_shape(ours),
            ours.pixels.dtype_name()
        ));
    }
    let (max_abs, rel) = lossy_difference(ours, &reference["subsample"]);
    if max_abs > LOSSY_MAX_ABS_DIFF_16BIT || rel > LOSSY_MEAN_REL_TOL {
        return Err(format!("max |diff| {max_abs}, mean rel diff {rel:.5}"));
    }
    Ok(format!("max|d|={max_abs} mean_rel={rel:.1e}"))
}

fn run_entry(dir: &Path, entry: &Value, tally: &mut Tally) {
    let file = entry["file"].as_str().unwrap();
    let path = dir.join(file);
    let decodable = entry["decodable"].as_bool().unwrap();
    let known_gap = KNOWN_GAPS.iter().find(|(f, _)| *f == file);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let obj = open_dicom(&path).map_err(|e| e.to_string())?;
        let decoded = decode_pixels(&obj).map_err(|e| e.to_string());
        Ok::<_, String>((obj, decoded))
    }));
    let (obj, decoded) = match result {
        Err(_) => {
            tally.failures.push(format!("{file}: PANIC"));
            return tally.note("PANIC", file);
        }
        Ok(Err(open_error)) if decodable && known_gap.is_none() => {
            tally.failures.push(format!(
                "{file}: pydicom decodes it but we cannot open it: {open_error}"
            ));
            return tally.note("FAIL", file);
        }
        Ok(Err(open_error)) => {
            println!("  {file}: open error: {open_error}");
            return tally.note(
                if decodable {
                    "known gap"
                } else {
                    "error (pydicom fails too)"
                },
                file,
            );
        }
        Ok(Ok(pair)) => pair,
    };
    match (decodable, decoded) {
        (true, Ok(ours)) => match check_decodable(entry, &obj, &ours) {
            Ok(note) => {
                if !note.is_empty() {
                    println!("  {file}: lossy {note}");
                }
                tally.note(
                    if entry["lossy"].as_bool().unwrap() {
                        "match (lossy, within tolerance)"
                    } else {
                        "match (sha256 equal)"
                    },
                    file,
                )
            }
            Err(why) if known_gap.is_some() => {
                println!("  {file}: known gap ({}): {why}", known_gap.unwrap().1);
                tally.note("known gap", file)
            }
            Err(why) => {
                tally.failures.push(format!("{file}: {why}"));
                tally.note("FAIL", file)
            }
        },
        (true, Err(e)) if known_gap.is_some() => {
            println!("  {file}: known gap ({}): {e}", known_gap.unwrap().1);
            tally.note("known gap", file)
        }
        (true, Err(e)) => {
            tally
                .failures
                .push(format!("{file}: pydicom decodes it, we fail: {e}"));
            tally.note("FAIL", file)
        }
        (false, Ok(ours)) => match entry.get("dcmtk_reference") {
            Some(reference) => match check_against_dcmtk(reference, &ours) {
                Ok(note) => {
                    println!(
                        "  {file}: pydicom fails ({}), we match dcmdjpeg: {note}",
                        entry["error"]
                    );
                    tally.note("match (dcmdjpeg, lossy tolerance)", file)
                }
                Err(why) => {
                    tally
                        .failures
                        .push(format!("{file}: differs from dcmdjpeg: {why}"));
                    tally.note("FAIL", file)
                }
            },
            None => {
                println!("  {file}: pydicom fails ({}), we decode", entry["error"]);
                tally.note("decoded (pydicom fails)", file)
            }
        },
        (false, Err(e)) if entry.get("dcmtk_reference").is_some() => {
            tally
                .failures
                .push(format!("{file}: dcmdjpeg decodes it, we fail: {e}"));
            tally.note("FAIL", file)
        }
        (false, Err(e)) => {
            println!("  {file}: pydicom fails ({}), we fail: {e}", entry["error"]);
            tally.note("error (pydicom fails too)", file)
        }
    }
}

#[test]
fn decodes_pydicom_test_files_like_pydicom() {
    let dir = data_dir();
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let entries = fixture["files"].as_array().unwrap();
    assert!(entries.len() > 100, "fixture lists only {} files", entries.len());
    let mut tally = Tally::default();
    for entry in entries {
        run_entry(&dir, entry, &mut tally);
    }
    println!("\n{:<36} {:>5}", "outcome", "files");
    for (outcome, files) in &tally.outcomes {
        println!("{outcome:<36} {:>5}", files.len());
    }
    let matched: usize = tally
        .outcomes
        .iter()
        .filter(|(k, _)| k.starts_with("match") && !k.contains("dcmdjpeg"))
        .map(|(_, v)| v.len())
        .sum();
    let decodable = entries
        .iter()
        .filter(|e| e["decodable"].as_bool().unwrap())
        .count();
    println!(
        "matched {matched} of {decodable} files pydicom decodes; known gaps: {}",
        KNOWN_GAPS.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} failures:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
}

/// Cut and corrupted copies of files in every syntax: decoding must end in Ok or Err, never a panic.
#[test]
fn damaged_files_give_errors_not_panics() {
    let dir = data_dir();
    let files = [
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "JPGExtended.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
        "image_dfl.dcm",
    ];
    let scratch = tempfile::tempdir().unwrap();
    let mut errors = 0;
    for name in files {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let mut variants: Vec<Vec<u8>> = [0.5, 0.9, 0.99]
            .iter()
            .map(|f| bytes[..(bytes.len() as f64 * f) as usize].to_vec())
            .collect();
        for stride in [97usize, 1009] {
            // Overwrite bytes in the second half (mostly pixel data) with a pattern.
            let mut damaged = bytes.clone();
            for i in (bytes.len() / 2..bytes.len()).step_by(stride) {
                damaged[i] = damaged[i].wrapping_mul(31).wrapping_add(7);
            }
            variants.push(damaged);
        }
        for (k, variant) in variants.iter().enumerate() {
            let path = scratch.path().join(format!("{k}_{name}"));
            std::fs::write(&path, variant).unwrap();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                open_dicom(&path).and_then(|obj| decode_pixels(&obj))
            }));
            match outcome {
                Err(_) => panic!("{name} variant {k}: panic escaped open_dicom/decode_pixels"),
                Ok(Err(e)) => {
                    assert!(!e.to_string().is_empty());
                    errors += 1;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
    // Cutting a file in half always loses pixel data, so at least those must be errors.
    assert!(
        errors >= files.len(),
        "only {errors} errors over {} damaged files",
        files.len() * 5
    );
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let err = open_dicom(Path::new("/nonexistent/x.dcm"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.dcm"), "{err}");
}

/// A JPEG 2000 frame whose codestream is larger than Rows × Columns say (or has fewer components than
/// Samples per Pixel): a codec error naming both geometries, not a panic inside the decoder.
#[test]
fn jpeg2000_geometry_disagreeing_with_the_header_is_a_codec_error() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use medtrain::dicom::decode::DecodeError;
    let path = data_dir().join("MR_small_jp2klossless.dcm");
    let good = open_dicom(&path).unwrap();
    decode_pixels(&good).unwrap();
    for (tag, value, said) in [
        (
            tags::ROWS,
            32u16,
            "64×64 with 1 components, but the header says 64×32 with 1",
        ),
        (
            tags::SAMPLES_PER_PIXEL,
            3,
            "64×64 with 1 components, but the header says 64×64 with 3",
        ),
    ] {
        let mut obj = good.clone();
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        match decode_pixels(&obj) {
            Err(e @ DecodeError::Codec { .. }) => assert!(e.to_string().contains(said), "{e}"),
            other => panic!("expected a codec error, got {:?}", other.map(|p| p.rows)),
        }
    }
}
