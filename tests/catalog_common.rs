//! A small cohort packed into real shards (through `ShardWriter`), with the clinical CSV exports
//! that label it. Identifiers are raw here; shards hold their keyed pseudonyms, as after `pack`.

use medtrain::deid::{IdKind, SiteKey};
use medtrain::dicom::decode::PixelBuffer;
use medtrain::dicom::series::ItemKind;
use medtrain::pack::index::PackIndex;
use medtrain::pack::shard::{PackedItem, ShardWriter};
use medtrain::pack::tables::{SeriesRecord, SliceRecord};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

pub const KEY_BYTES: [u8; 32] = [5; 32];
const THICKNESSES: [f64; 5] = [0.625, 1.0, 1.25, 2.5, 5.0];
const KERNELS: [&str; 3] = ["STANDARD", "BONE", "LUNG"];

pub struct FixtureSeries {
    pub patient: String,
    pub study: String,
    pub series: String,
    pub modality: &'static str,
    pub thickness: f64,
    pub kernel: &'static str,
    /// InstanceNumber of each stored slice (stored order = ascending position).
    pub instances: Vec<i32>,
    pub sops: Vec<String>,
}

/// A deterministic pseudo-random number in 0..n from a few integers (no RNG dependency here).
pub fn mix(a: u64, b: u64, n: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    x % n
}

pub fn cohort(patients: usize) -> Vec<FixtureSeries> {
    let mut out = Vec::new();
    for p in 0..patients {
        let n_series = 1 + mix(p as u64, 1, 3) as usize;
        for s in 0..n_series {
            let seed = (p * 10 + s) as u64;
            let n = 3 + mix(seed, 2, 18) as usize;
            let mut instances: Vec<i32> = (1..=n as i32).collect();
            if mix(seed, 3, 3) == 0 {
                // Scrambled InstanceNumbers: not in position order.
                instances.reverse();
                instances.swap(0, n / 2);
            }
            let thickness = if p == 1 && s == 0 {
                f64::NAN
            } else {
                THICKNESSES[mix(seed, 4, 5) as usize]
            };
            out.push(FixtureSeries {
                patient: format!("PAT{p:03}"),
                study: format!("1.2.826.0.1.{p}.1"),
                series: format!("1.2.826.0.1.{p}.1.{s}"),
                modality: if mix(seed, 5, 4) == 0 { "MR" } else { "CT" },
                thickness,
                kernel: KERNELS[mix(seed, 6, 3) as usize],
                sops: (0..n).map(|k| format!("1.2.826.0.1.{p}.1.{s}.{k}")).collect(),
                instances,
            });
        }
    }
    out
}

fn item(key: &SiteKey, s: &FixtureSeries, index: usize) -> PackedItem {
    let n = s.instances.len();
    let record = SeriesRecord {
        series_key: key.pseudonym(IdKind::Series, &s.series),
        study_key: key.pseudonym(IdKind::Study, &s.study),
        patient_key: key.pseudonym(IdKind::Patient, &s.patient),
        modality: s.modality.into(),
        kind: ItemKind::Volume,
        study_day: 1000 + index as i32,
        n_slices: n as u32,
        rows: 2,
        cols: 2,
        samples_per_pixel: 1,
        dtype: "i16".into(),
        pixel_spacing: [0.7, 0.7],
        slice_spacing: 1.0,
        slice_thickness: s.thickness,
        orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        origin: [0.0, 0.0, -50.0],
        photometric: "MONOCHROME2".into(),
        transform: "hu-linear".into(),
        rescale_slope: 1.0,
        rescale_intercept: -1024.0,
        window_center: f64::NAN,
        window_width: f64::NAN,
        body_part: "CHEST".into(),
        convolution_kernel: s.kernel.into(),
        dataset: String::new(),
        data_offset: 0,
        data_length: 0,
        first_slice: 0,
        source_hash: blake3::hash(s.series.as_bytes()).to_hex()[..32].to_string(),
        n_clamped: 0,
        n_padding: 0,
        presentation: Default::default(),
    };
    let slices = (0..n)
        .map(|k| SliceRecord {
            series_index: 0,
            position: -50.0 + k as f64 * 1.5 + index as f64 * 0.01,
            image_position: [0.0, 0.0, -50.0 + k as f64 * 1.5],
            thickness: s.thickness,
            sop_key: key.pseudonym(IdKind::Instance, &s.sops[k]),
            instance_number: s.instances[k],
            frame: 0,
        })
        .collect();
    PackedItem {
        record,
        slices,
        pixels: PixelBuffer::I16(vec![0; n * 4]),
        shape: vec![n, 2, 2],
        luts: Default::default(),
    }
}

/// Packs `series` into `shards` shard files under `dir` with an index, like `pack` does.
pub fn write_pack(
    dir: &Path,
    key: &SiteKey,
    series: &[FixtureSeries],
    shards: usize,
    first_index: usize,
) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut index = PackIndex::load(dir)
        .unwrap()
        .unwrap_or_else(|| PackIndex::new(&key.fingerprint()));
    let per = series.len().div_ceil(shards);
    for (k, chunk) in series.chunks(per).enumerate() {
        let name = format!("shard-0-{:04}.h5", first_index + k);
        let mut w = ShardWriter::create(dir, &name, &key.fingerprint()).unwrap();
        for (i, s) in chunk.iter().enumerate() {
            w.add(item(key, s, k * per + i)).unwrap();
        }
        index.shards.push(w.finish().unwrap());
    }
    index.save(dir).unwrap();
    dir.to_path_buf()
}

/// The site key written to a file (mode 0600) for the CLI and the reference script.
pub fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("site.key");
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    let mut f = options.open(&path).unwrap();
    writeln!(f, "{}", hex::encode(KEY_BYTES)).unwrap();
    path
}

/// Clinical CSV exports of the cohort, shaped like the phantom's.
pub fn write_csvs(dir: &Path, series: &[FixtureSeries]) {
    let mut patients = String::from("PatientID,FollowUpDays,Death,NoduleCount,MaxNoduleDiameterMM\n");
    let mut seen = Vec::new();
    for s in series {
        if seen.contains(&s.patient) {
            continue;
        }
        let p = seen.len() as u64;
        seen.push(s.patient.clone());
        let days = 200 + mix(p, 7, 3000);
        let death = mix(p, 8, 3) == 0;
        let count = mix(p, 9, 4);
        let diameter = if count == 0 {
            String::new()
        } else {
            format!("{:.1}", 3.0 + mix(p, 10, 200) as f64 / 10.0)
        };
        if p == 5 {
            // A patient without any label row: absent, not unknown.
            continue;
        }
        writeln!(
            patients,
            "{},{days},{},{count},{diameter}",
            s.patient, death as u8
        )
        .unwrap();
    }
    fs::write(dir.join("patients.csv"), patients).unwrap();
    let mut by_series = String::from("PatientID,StudyInstanceUID,SeriesInstanceUID,Modality,Nodule\n");
    let mut by_sop = String::from("PatientID,SeriesInstanceUID,SOPInstanceUID,Nodule\n");
    let mut by_instance = String::from("PatientID,SeriesInstanceUID,InstanceNumber,Nodule\n");
    for (i, s) in series.iter().enumerate() {
        let nodule = mix(i as u64, 11, 3) == 0;
        writeln!(
            by_series,
            "{},{},{},{},{}",
            s.patient, s.study, s.series, s.modality, nodule as u8
        )
        .unwrap();
        for (k, sop) in s.sops.iter().enumerate() {
            if mix(i as u64, k as u64 + 100, 4) != 0 {
                let value = if mix(i as u64, k as u64 + 200, 9) == 0 {
                    "NA".to_string()
                } else {
                    (mix(i as u64, k as u64, 5) == 0)
                        .then_some("1")
                        .unwrap_or("0")
                        .to_string()
                };
                writeln!(by_sop, "{},{},{sop},{value}", s.patient, s.series).unwrap();
            }
        }
        if nodule {
            // A range of InstanceNumbers (scrambled series included) and a single one.
            let n = s.instances.len() as i32;
            let lo = 1 + mix(i as u64, 12, (n / 2) as u64) as i32;
            let hi = (lo + 3).min(n);
            writeln!(by_instance, "{},{},{lo}-{hi},1", s.patient, s.series).unwrap();
            if hi < n {
                writeln!(by_instance, "{},{},{n},0", s.patient, s.series).unwrap();
            }
        }
    }
    fs::write(dir.join("series.csv"), by_series).unwrap();
    fs::write(dir.join("slices_by_sop.csv"), by_sop).unwrap();
    fs::write(dir.join("slices_by_instance.csv"), by_instance).unwrap();
}
