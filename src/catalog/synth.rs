//! A synthetic cohort for the catalog benchmark: metadata-only shards (tables, no pixel datasets)
//! with realistic column distributions, and the clinical CSV exports that label it (about 2% of
//! slices in nodule ranges). Identifiers are pseudonymised with the site key exactly as `pack`
//! does, so the CSVs join through `catalog labels import`.

use super::{h5err, ioerr, CatalogError};
use crate::deid::{IdKind, SiteKey};
use crate::dicom::series::ItemKind;
use crate::pack::format::write_shard_attrs;
use crate::pack::index::{PackIndex, ShardEntry};
use crate::pack::shard::hash_file;
use crate::pack::tables::{write_tables, SeriesRecord, SliceRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

/// Slice thickness (mm) and how often it occurs in a CT archive.
const THICKNESS_WEIGHTS: [(f64, u32); 7] = [
    (0.625, 20),
    (1.0, 25),
    (1.25, 15),
    (2.0, 5),
    (2.5, 10),
    (3.0, 10),
    (5.0, 15),
];
const KERNELS: [&str; 4] = ["STANDARD", "BONE", "LUNG", "SOFT"];
/// Share of series that hold nodules, and the share of their slices inside nodule ranges, so
/// that about 2% of all slices are nodule slices.
const NODULE_SERIES_SHARE: f64 = 0.1;
const NODULE_SLICE_SHARE: f64 = 0.2;
/// Horizon of the derived "death within 5 years" label.
pub const DEATH_HORIZON_DAYS: u32 = 1826;

#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub series: usize,
    pub mean_slices: usize,
    pub series_per_shard: usize,
    pub seed: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct SynthReport {
    pub shards: usize,
    pub patients: usize,
    pub series: usize,
    pub slices: u64,
    pub nodule_slices: u64,
    pub seconds: f64,
}

fn thickness(rng: &mut ChaCha8Rng) -> f64 {
    let total: u32 = THICKNESS_WEIGHTS.iter().map(|w| w.1).sum();
    let mut pick = rng.gen_range(0..total);
    for (t, w) in THICKNESS_WEIGHTS {
        if pick < w {
            return t;
        }
        pick -= w;
    }
    THICKNESS_WEIGHTS[0].0
}

/// Identifiers of series `i`: patient `i / 2` (about two series per patient, some have one).
fn ids(i: usize) -> (String, String, String) {
    let patient = i * 2 / 3;
    (
        format!("SYN{patient:07}"),
        format!("2.25.{patient}.1"),
        format!("2.25.{patient}.1.{i}"),
    )
}

struct SynthSeries {
    record: SeriesRecord,
    slices: Vec<SliceRecord>,
    nodule_range: Option<(u32, u32)>,
}

fn make_series(key: &SiteKey, spec: &SynthSpec, i: usize) -> SynthSeries {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (patient, study, series) = ids(i);
    let n = rng
        .gen_range(spec.mean_slices * 3 / 4..=spec.mean_slices * 5 / 4)
        .max(1);
    let t = thickness(&mut rng);
    let spacing = t.max(0.5);
    let modality = if rng.gen_bool(0.9) { "CT" } else { "MR" };
    let z0 = rng.gen_range(-400.0..-100.0);
    let slices = (0..n)
        .map(|k| SliceRecord {
            series_index: 0,
            position: z0 + k as f64 * spacing,
            image_position: [-180.0, -180.0, z0 + k as f64 * spacing],
            thickness: t,
            sop_key: key.pseudonym(IdKind::Instance, &format!("{series}.{k}")),
            instance_number: k as i32 + 1,
            frame: 0,
        })
        .collect();
    let nodule_range = rng.gen_bool(NODULE_SERIES_SHARE).then(|| {
        let len = ((n as f64 * NODULE_SLICE_SHARE) as u32).max(1);
        let lo = rng.gen_range(1..=(n as u32 - len + 1));
        (lo, lo + len - 1)
    });
    let px = rng.gen_range(0.55..0.95);
    let record = SeriesRecord {
        series_key: key.pseudonym(IdKind::Series, &series),
        study_key: key.pseudonym(IdKind::Study, &study),
        patient_key: key.pseudonym(IdKind::Patient, &patient),
        modality: modality.into(),
        kind: ItemKind::Volume,
        study_day: rng.gen_range(20_000..40_000),
        n_slices: n as u32,
        rows: 512,
        cols: 512,
        samples_per_pixel: 1,
        dtype: "i16".into(),
        pixel_spacing: [px, px],
        slice_spacing: spacing,
        slice_thickness: t,
        orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        origin: [-180.0, -180.0, z0],
        photometric: "MONOCHROME2".into(),
        transform: "hu-linear".into(),
        rescale_slope: 1.0,
        rescale_intercept: -1024.0,
        window_center: -600.0,
        window_width: 1500.0,
        body_part: "CHEST".into(),
        convolution_kernel: KERNELS[rng.gen_range(0..KERNELS.len())].into(),
        dataset: String::new(),
        data_offset: 0,
        data_length: 0,
        first_slice: 0,
        source_hash: blake3::hash(series.as_bytes()).to_hex()[..32].to_string(),
        n_clamped: 0,
        n_padding: 0,
        presentation: Default::default(),
    };
    SynthSeries {
        record,
        slices,
        nodule_range,
    }
}

fn write_shard(
    dir: &Path,
    name: &str,
    key: &SiteKey,
    items: Vec<SynthSeries>,
) -> Result<ShardEntry, CatalogError> {
    let path = dir.join(name);
    let h5 = h5err(&path);
    let mut series = Vec::with_capacity(items.len());
    let mut slices = Vec::new();
    for (index, mut item) in items.into_iter().enumerate() {
        item.record.first_slice = slices.len() as u64;
        item.record.dataset = String::new();
        slices.extend(item.slices.into_iter().map(|mut s| {
            s.series_index = index as u32;
            s
        }));
        series.push(item.record);
    }
    let file = super::store::create_h5(&path)?;
    write_shard_attrs(
        &file,
        &key.fingerprint(),
        "medtrain catalog synth (metadata only)",
    )
    .map_err(&h5)?;
    write_tables(&file, &series, &slices).map_err(|e| CatalogError::invalid(&path, e.to_string()))?;
    file.close().map_err(&h5)?;
    let (blake3, bytes) = hash_file(&path).map_err(ioerr(&path))?;
    Ok(ShardEntry {
        file: name.into(),
        bytes,
        blake3,
        series: series.len() as u64,
        slices: slices.len() as u64,
        pixel_bytes: 0,
        sources: series.iter().map(|s| s.source_hash.clone()).collect(),
    })
}

/// Writes the shards, `index.json` and the label CSVs into `out`.
pub fn generate(out: &Path, key: &SiteKey, spec: &SynthSpec) -> Result<SynthReport, CatalogError> {
    let start = std::time::Instant::now();
    fs::create_dir_all(out).map_err(ioerr(out))?;
    let mut index = PackIndex::new(&key.fingerprint());
    let mut series_csv = String::from("PatientID,StudyInstanceUID,SeriesInstanceUID,Modality,Nodule\n");
    let mut ranges_csv = String::from("PatientID,SeriesInstanceUID,InstanceNumber,Nodule\n");
    let (mut slices, mut nodules) = (0u64, 0u64);
    let shards = spec.series.div_ceil(spec.series_per_shard);
    for k in 0..shards {
        let range = k * spec.series_per_shard..((k + 1) * spec.series_per_shard).min(spec.series);
        let items: Vec<SynthSeries> = range
            .clone()
            .into_par_iter()
            .map(|i| make_series(key, spec, i))
            .collect();
        for (i, item) in range.zip(&items) {
            let (patient, study, series) = ids(i);
            slices += item.slices.len() as u64;
            writeln!(
                series_csv,
                "{patient},{study},{series},{},{}",
                item.record.modality,
                item.nodule_range.is_some() as u8
            )
            .expect("string");
            if let Some((lo, hi)) = item.nodule_range {
                nodules += (hi - lo + 1) as u64;
                writeln!(ranges_csv, "{patient},{series},{lo}-{hi},1").expect("string");
            }
        }
        index
            .shards
            .push(write_shard(out, &format!("shard-0-{k:05}.h5"), key, items)?);
    }
    index.save(out)?;
    let patients = ids(spec.series - 1).0;
    let n_patients = patients[3..].parse::<usize>().unwrap_or(0) + 1;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut patients_csv = String::from("PatientID,FollowUpDays,Death,NoduleCount,MaxNoduleDiameterMM\n");
    for p in 0..n_patients {
        let days: u32 = rng.gen_range(30..4000);
        let death = rng.gen_bool(0.2) as u8;
        let count: u32 = if rng.gen_bool(0.15) {
            rng.gen_range(1..5)
        } else {
            0
        };
        let diameter = if count > 0 {
            format!("{:.1}", rng.gen_range(3.0..30.0))
        } else {
            String::new()
        };
        writeln!(patients_csv, "SYN{p:07},{days},{death},{count},{diameter}").expect("string");
    }
    for (name, text) in [
        ("patients.csv", patients_csv),
        ("series.csv", series_csv),
        ("slices_by_instance.csv", ranges_csv),
    ] {
        let path = out.join(name);
        fs::write(&path, text).map_err(ioerr(&path))?;
    }
    Ok(SynthReport {
        shards,
        patients: n_patients,
        series: spec.series,
        slices,
        nodule_slices: nodules,
        seconds: start.elapsed().as_secs_f64(),
    })
}
