//! `catalog labels masks`: pixel labels as a label set. NIfTI: a mapping CSV names each label map
//! and the SeriesInstanceUID it annotates (pseudonymised with the site key, as label import does),
//! and each map is aligned to its series' voxel grid by geometry (`grid.rs`). LIDC-IDRI XML names its
//! series and slices itself (`lidc_masks.rs`). Every series' mask is written to a sibling mask shard
//! of its pack shard (`pack::masks`). The label set's file holds the queryable aggregates:
//!
//! - slice level: `pixels` (labelled pixels) and `area_mm2`;
//! - series level: `voxels`, `volume_mm3`, `slices` (slices with any label) and `components`
//!   (connected regions of labelled voxels, 26-connectivity).
//!
//! A series imported is present in every column (an empty mask gives zeros); a series not imported
//! is absent. An import is all or nothing: every problem is collected with its CSV line or file, and
//! the mask shards are written to a partial directory that is removed unless there are none.

use super::super::columns::Level;
use super::super::state::{LabelColumnRef, LabelKind, LabelSetRef};
use super::super::store::{create_h5, write_column};
use super::super::view::{Catalog, LABEL_ABSENT, LABEL_PRESENT, LABEL_UNKNOWN};
use super::super::{h5err, ioerr, CatalogError};
use super::grid::{align, reorder, SeriesGrid};
use super::join::{KeyColumns, KeyIndices, Resolver, Target};
use super::{csv, new_version, normalise, publish, valid_name, LabelError, MAX_REPORTED_PROBLEMS};
use crate::deid::SiteKey;
use crate::h5text::text_attr;
use crate::pack::masks::{MaskData, MaskShardRef, MaskShardWriter};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// File formats of label maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskFormat {
    Nifti,
    Lidc,
    Rtstruct,
    Seg,
}

#[derive(Clone, Debug)]
pub struct MaskImportSpec {
    /// NIfTI: one CSV with a file column and a SeriesInstanceUID column (and optionally PatientID).
    /// LIDC: XML files, or directories searched for `*.xml`. RTSTRUCT and SEG: DICOM files, or
    /// directories searched for `*.dcm`.
    pub inputs: Vec<PathBuf>,
    pub name: String,
    pub version: Option<u32>,
    pub format: MaskFormat,
    pub keys: KeyColumns,
    /// Header of the column naming the mask file (relative paths are relative to the CSV).
    pub file_column: String,
    /// LIDC: readers who must mark a voxel for the consensus (the aggregates and training target).
    pub agreement: u32,
}

#[derive(Debug, serde::Serialize)]
pub struct MaskImportReport {
    pub name: String,
    pub version: u32,
    pub series: usize,
    pub labelled_voxels: u64,
    pub mask_shards: usize,
    pub columns: Vec<String>,
}

/// Aggregates of one series' mask.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskStats {
    /// Labelled pixels per slice.
    pub pixels: Vec<u64>,
    pub voxels: u64,
    pub slices: u64,
    pub components: u64,
}

/// Counts labelled voxels per slice and the connected regions (26-connectivity) of a mask in
/// (slice, row, column) order.
pub fn mask_stats(dims: [usize; 3], mask: &[u16]) -> MaskStats {
    let [n, rows, cols] = dims;
    let plane = rows * cols;
    let pixels: Vec<u64> = (0..n)
        .map(|k| {
            mask[k * plane..(k + 1) * plane]
                .iter()
                .filter(|&&v| v != 0)
                .count() as u64
        })
        .collect();
    let components = label_components(dims, |i| mask[i] != 0).1 as u64;
    MaskStats {
        voxels: pixels.iter().sum(),
        slices: pixels.iter().filter(|&&p| p > 0).count() as u64,
        pixels,
        components,
    }
}

/// Labels the connected regions (26-connectivity) of the voxels where `fg` holds, in a (slice,
/// row, column) grid: label 0 is background, regions are numbered from 1 in the order of their
/// first voxel. Returns the labels and the number of regions.
pub fn label_components(dims: [usize; 3], fg: impl Fn(usize) -> bool) -> (Vec<u32>, usize) {
    let [n, rows, cols] = dims;
    let plane = rows * cols;
    let mut labels = vec![0u32; n * plane];
    let mut count = 0;
    let mut stack = Vec::new();
    for start in 0..labels.len() {
        if labels[start] != 0 || !fg(start) {
            continue;
        }
        count += 1;
        labels[start] = count as u32;
        stack.push(start);
        while let Some(at) = stack.pop() {
            let (k, r, c) = (at / plane, at % plane / cols, at % cols);
            for kk in k.saturating_sub(1)..(k + 2).min(n) {
                for rr in r.saturating_sub(1)..(r + 2).min(rows) {
                    for cc in c.saturating_sub(1)..(c + 2).min(cols) {
                        let next = (kk * rows + rr) * cols + cc;
                        if labels[next] == 0 && fg(next) {
                            labels[next] = count as u32;
                            stack.push(next);
                        }
                    }
                }
            }
        }
    }
    (labels, count)
}

/// The grid of catalog series `row`.
pub fn series_grid(cat: &Catalog, row: usize) -> Result<SeriesGrid, CatalogError> {
    let n = cat.col_u32(Level::Series, "n_slices")?[row] as usize;
    let start = cat.col_u64(Level::Series, "slice_start")?[row] as usize;
    let sp = cat.col_f64(Level::Series, "pixel_spacing")?;
    let or = cat.col_f64(Level::Series, "orientation")?;
    let ipp = cat.col_f64(Level::Slice, "image_position")?;
    Ok(SeriesGrid {
        dims: [
            n,
            cat.col_u32(Level::Series, "rows")?[row] as usize,
            cat.col_u32(Level::Series, "cols")?[row] as usize,
        ],
        spacing: [sp[2 * row], sp[2 * row + 1]],
        orientation: std::array::from_fn(|i| or[6 * row + i]),
        positions: (start..start + n)
            .map(|s| [ipp[3 * s], ipp[3 * s + 1], ipp[3 * s + 2]])
            .collect(),
    })
}

/// One mask resolved to its series: where it came from (for errors), and the file.
struct Job {
    whence: String,
    file: PathBuf,
    row: usize,
}

/// A loaded mask: the stored labels, the consensus the aggregates count, series-level extras.
struct Loaded {
    labels: Vec<u16>,
    consensus: Vec<u16>,
    extra: BTreeMap<&'static str, Option<f64>>,
}

impl Loaded {
    /// Labels whose bits are ROIs or segments: a voxel counts when any bit is set.
    fn any_bit(labels: Vec<u16>) -> Loaded {
        Loaded {
            consensus: labels.iter().map(|&b| (b != 0) as u16).collect(),
            labels,
            extra: BTreeMap::new(),
        }
    }
}

/// Reads one mask file and aligns it to its series; the labels in series order.
fn load_mask(
    spec: &MaskImportSpec,
    cat: &Catalog,
    key: &SiteKey,
    grid: &SeriesGrid,
    job: &Job,
) -> Result<Loaded, String> {
    match spec.format {
        MaskFormat::Nifti => {
            let n = crate::nifti::read(&job.file).map_err(|e| e.to_string())?;
            let lps = n.affine_lps();
            let map = align(grid, n.dim, &lps)?;
            let labels = reorder(&map, grid, n.dim, &n.values)?;
            Ok(Loaded {
                consensus: labels.clone(),
                labels,
                extra: BTreeMap::new(),
            })
        }
        MaskFormat::Lidc => {
            let (row, read) = super::lidc_masks::series_row(cat, key, &job.file)?;
            let v = super::lidc_masks::volume(cat, key, row, &read)?;
            let consensus = v
                .labels
                .iter()
                .map(|b| (b.count_ones() >= spec.agreement) as u16)
                .collect();
            Ok(Loaded {
                labels: v.labels,
                consensus,
                extra: v.extra,
            })
        }
        MaskFormat::Seg => {
            let (row, seg) = super::seg_masks::series_row(cat, key, &job.file)?;
            Ok(Loaded::any_bit(super::seg_masks::volume(
                cat, key, row, grid, &seg,
            )?))
        }
        MaskFormat::Rtstruct => {
            let (row, rt) = super::rtstruct_masks::series_row(cat, key, &job.file)?;
            Ok(Loaded::any_bit(super::rtstruct_masks::volume(
                cat, key, row, grid, &rt,
            )?))
        }
    }
}

/// The LIDC or RTSTRUCT files of the inputs (directories searched for `*.xml` or `*.dcm`), each
/// resolved to its series.
fn resolve_files(
    spec: &MaskImportSpec,
    cat: &Catalog,
    key: &SiteKey,
) -> Result<(Vec<Job>, usize), LabelError> {
    let (ext, what) = match spec.format {
        MaskFormat::Rtstruct => ("dcm", "RTSTRUCT DICOM"),
        MaskFormat::Seg => ("dcm", "DICOM SEG"),
        _ => ("xml", "LIDC XML"),
    };
    let series_of = |file: &Path| match spec.format {
        MaskFormat::Rtstruct => super::rtstruct_masks::series_row(cat, key, file).map(|(row, _)| row),
        MaskFormat::Seg => super::seg_masks::series_row(cat, key, file).map(|(row, _)| row),
        _ => super::lidc_masks::series_row(cat, key, file).map(|(row, _)| row),
    };
    let mut files = Vec::new();
    for input in &spec.inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(input)
                .into_iter()
                .filter_map(Result::ok)
                .map(|e| e.into_path())
                .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        return Err(LabelError::Usage(format!("no {what} files in the inputs")));
    }
    let (mut jobs, mut problems) = (Vec::new(), Vec::new());
    let mut first: BTreeMap<usize, String> = BTreeMap::new();
    for file in &files {
        let whence = file.display().to_string();
        match series_of(file) {
            Ok(row) => {
                if let Some(other) = first.insert(row, whence.clone()) {
                    problems.push(format!("{whence}: the same series as {other}"));
                    continue;
                }
                jobs.push(Job {
                    whence,
                    file: file.clone(),
                    row,
                });
            }
            Err(reason) => problems.push(format!("{whence}: {reason}")),
        }
    }
    if !problems.is_empty() {
        return Err(LabelError::Rejected {
            path: spec.inputs[0].clone(),
            problems: finish_problems(problems),
        });
    }
    let n = jobs.len();
    Ok((jobs, n))
}

fn resolve(spec: &MaskImportSpec, cat: &Catalog, key: &SiteKey) -> Result<(Vec<Job>, usize), LabelError> {
    if spec.format != MaskFormat::Nifti {
        return resolve_files(spec, cat, key);
    }
    let csv_path = match spec.inputs.as_slice() {
        [one] => one.clone(),
        _ => return Err(LabelError::Usage("NIfTI masks take one mapping CSV".into())),
    };
    let text = fs::read_to_string(&csv_path).map_err(|e| CatalogError::from(ioerr(&csv_path)(e)))?;
    let rejected = |problems| LabelError::Rejected {
        path: csv_path.clone(),
        problems,
    };
    let table =
        csv::parse(&text).map_err(|(line, reason)| rejected(vec![format!("line {line}: {reason}")]))?;
    let file_col = table
        .header
        .iter()
        .position(|h| normalise(h) == normalise(&spec.file_column))
        .ok_or_else(|| {
            LabelError::Usage(format!(
                "{}: no column {:?} naming the mask files (header: {})",
                csv_path.display(),
                spec.file_column,
                table.header.join(", ")
            ))
        })?;
    let keys = KeyIndices::find(&spec.keys, &table.header, false)
        .map_err(|e| LabelError::Usage(format!("{}: {e}", csv_path.display())))?;
    if keys.level() != Level::Series {
        return Err(LabelError::Usage(format!(
            "{}: a mask annotates a whole series: the CSV needs a {} column and no SOP or instance column",
            csv_path.display(),
            spec.keys.series
        )));
    }
    let resolver = Resolver::new(cat, key, &keys)?;
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    let mut first: BTreeMap<usize, usize> = BTreeMap::new();
    for record in &table.records {
        match resolver.targets(record) {
            Ok(targets) => {
                let Target { row } = targets[0];
                if let Some(line) = first.insert(row, record.line) {
                    problems.push(format!("line {}: the same series as line {line}", record.line));
                    continue;
                }
                let file = base.join(&record.fields[file_col]);
                jobs.push(Job {
                    whence: format!("line {} ({})", record.line, file.display()),
                    file,
                    row,
                });
            }
            Err(reason) => problems.push(format!("line {}: {reason}", record.line)),
        }
    }
    if !problems.is_empty() {
        return Err(rejected(finish_problems(problems)));
    }
    Ok((jobs, table.records.len()))
}

fn finish_problems(mut problems: Vec<String>) -> Vec<String> {
    let total = problems.len();
    problems.truncate(MAX_REPORTED_PROBLEMS);
    if total > MAX_REPORTED_PROBLEMS {
        problems.push(format!("... and {} more problems", total - MAX_REPORTED_PROBLEMS));
    }
    problems.push("nothing was imported: fix these and run the import again".into());
    problems
}

/// Imports the masks a mapping CSV lists as a new version of a mask label set.
pub fn import_masks(
    dir: &Path,
    key: &SiteKey,
    spec: &MaskImportSpec,
) -> Result<MaskImportReport, LabelError> {
    let cat = Catalog::open(dir)?;
    key.check_fingerprint(&format!("catalog {}", dir.display()), &cat.state.key_fingerprint)
        .map_err(CatalogError::from)?;
    if !valid_name(&spec.name) {
        return Err(LabelError::Usage(format!(
            "label set name {:?} must be letters, digits and _ (not starting with a digit)",
            spec.name
        )));
    }
    let version = new_version(&cat.state, &spec.name, spec.version)?;
    let (mut jobs, records) = resolve(spec, &cat, key)?;
    let shard_of = cat.col_u32(Level::Series, "shard")?;
    let shard_row = cat.col_u32(Level::Series, "shard_row")?;
    jobs.sort_by_key(|j| (shard_of[j.row], shard_row[j.row]));

    let masks_dir_name = format!("masks-{}-v{version}", spec.name);
    let masks_dir = dir.join(&masks_dir_name);
    let partial = dir.join(format!("{masks_dir_name}.partial"));
    // Left by an import that did not finish (the state never listed it).
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_dir_all(&masks_dir);
    fs::create_dir_all(&partial).map_err(|e| CatalogError::from(ioerr(&partial)(e)))?;
    let result = write_masks(&cat, key, spec, &jobs, &partial);
    let (stats, extras, shards) = match result {
        Ok(ok) => ok,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    crate::fsx::commit_dir(&partial, &masks_dir).map_err(|e| CatalogError::from(ioerr(&masks_dir)(e)))?;

    let columns = mask_columns(spec.format);
    let file = format!("labels-{}-v{version}.h5", spec.name);
    write_mask_label_file(&dir.join(&file), &cat, spec, version, &stats, &extras, &columns)?;
    let (blake3, _) = crate::pack::shard::hash_file(&dir.join(&file))
        .map_err(|e| CatalogError::from(ioerr(&dir.join(&file))(e)))?;
    let mut inputs = Vec::new();
    for j in &jobs {
        let (hash, _) =
            crate::pack::shard::hash_file(&j.file).map_err(|e| CatalogError::from(ioerr(&j.file)(e)))?;
        inputs.push(serde_json::json!({
            "file": j.file.file_name().map(|n| n.to_string_lossy().to_string()),
            "blake3": hash,
        }));
    }
    let voxels = stats.values().map(|s| s.voxels).sum();
    let meta = LabelSetRef {
        name: spec.name.clone(),
        version,
        level: Level::Slice,
        file,
        blake3,
        rows: cat.rows(Level::Slice) as u64,
        columns: columns.clone(),
        provenance: serde_json::json!({
            "inputs": spec.inputs.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().to_string())).collect::<Vec<_>>(),
            "files": inputs,
            "records": records,
            "format": spec.format,
            "labels": match spec.format {
                MaskFormat::Nifti => "the label map's values".to_string(),
                MaskFormat::Lidc => format!("bit r of a voxel's value: reader r (file order) outlined it; the aggregates count voxels outlined by at least {} readers", spec.agreement),
                MaskFormat::Seg => "bit s of a voxel's value: the s-th segment of the file's Segment Sequence covers it (fractional: at half the maximum value or more); foreground: any segment".to_string(),
                MaskFormat::Rtstruct => "bit r of a voxel's value: the r-th ROI of the file's ROI Contour Sequence covers it (even-odd rule at pixel centres, holes by nesting); foreground: any ROI".to_string(),
            },
            "alignment": "by geometry: every mask axis along a series axis, voxel centres within a tenth of a pixel; never resampled",
        }),
        masks: Some(super::super::state::MaskSetRef {
            dir: masks_dir_name,
            shards: shards.clone(),
            readers_agree: (spec.format == MaskFormat::Lidc).then_some(spec.agreement),
        }),
    };
    publish(dir, &cat.state, meta)?;
    Ok(MaskImportReport {
        name: spec.name.clone(),
        version,
        series: jobs.len(),
        labelled_voxels: voxels,
        mask_shards: shards.len(),
        columns: columns.iter().map(|c| c.name.clone()).collect(),
    })
}

/// Series-level extra values (LIDC characteristics) per catalog series row.
type Extras = BTreeMap<usize, BTreeMap<&'static str, Option<f64>>>;

/// Reads, aligns and writes every mask; the statistics and extras per catalog series row and the
/// mask shards.
fn write_masks(
    cat: &Catalog,
    key: &SiteKey,
    spec: &MaskImportSpec,
    jobs: &[Job],
    partial: &Path,
) -> Result<(BTreeMap<usize, MaskStats>, Extras, Vec<MaskShardRef>), LabelError> {
    let shard_of = cat.col_u32(Level::Series, "shard")?;
    let series_keys = cat.col_keys(Level::Series, "series_key")?;
    let mut problems = Vec::new();
    let mut stats = BTreeMap::new();
    let mut extras = BTreeMap::new();
    let mut shards = Vec::new();
    let mut writer: Option<(u32, MaskShardWriter)> = None;
    let set = format!("{}", spec.name);
    for job in jobs {
        let grid = series_grid(cat, job.row)?;
        let Loaded {
            labels,
            consensus,
            extra,
        } = match load_mask(spec, cat, key, &grid, job) {
            Ok(l) => l,
            Err(reason) => {
                problems.push(format!("{}: {reason}", job.whence));
                continue;
            }
        };
        stats.insert(job.row, mask_stats(grid.dims, &consensus));
        extras.insert(job.row, extra);
        if !problems.is_empty() {
            continue; // nothing more is written; the rest is still checked
        }
        let shard = shard_of[job.row];
        if writer.as_ref().is_some_and(|(s, _)| *s != shard) {
            let (_, w) = writer.take().expect("open");
            shards.push(
                w.finish()
                    .map_err(|e| CatalogError::invalid(partial, e.to_string()))?,
            );
        }
        if writer.is_none() {
            let pack_file = Path::new(&cat.state.shards[shard as usize].path)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let stem = pack_file.strip_suffix(".h5").unwrap_or(&pack_file).to_string();
            let w = MaskShardWriter::create(partial, &format!("{stem}.masks.h5"), &pack_file, &set)
                .map_err(|e| CatalogError::invalid(partial, e.to_string()))?;
            writer = Some((shard, w));
        }
        let key = super::super::columns::cell_text(&series_keys[job.row]);
        let (_, w) = writer.as_mut().expect("open");
        w.add(key, grid.dims, &MaskData::from_labels(labels))
            .map_err(|e| CatalogError::invalid(partial, e.to_string()))?;
    }
    if !problems.is_empty() {
        return Err(LabelError::Rejected {
            path: spec.inputs[0].clone(),
            problems: finish_problems(problems),
        });
    }
    if let Some((_, w)) = writer {
        shards.push(
            w.finish()
                .map_err(|e| CatalogError::invalid(partial, e.to_string()))?,
        );
    }
    Ok((stats, extras, shards))
}

fn mask_columns(format: MaskFormat) -> Vec<LabelColumnRef> {
    let col = |name: &str, kind, level| LabelColumnRef {
        name: name.into(),
        kind,
        categories: Vec::new(),
        level: Some(level),
    };
    vec![
        col("pixels", LabelKind::Int, Level::Slice),
        col("area_mm2", LabelKind::Float, Level::Slice),
        col("voxels", LabelKind::Int, Level::Series),
        col("volume_mm3", LabelKind::Float, Level::Series),
        col("slices", LabelKind::Int, Level::Series),
        col("components", LabelKind::Int, Level::Series),
    ]
    .into_iter()
    .chain(
        (format == MaskFormat::Lidc)
            .then(|| {
                [
                    col("readers", LabelKind::Int, Level::Series),
                    col("malignancy_max", LabelKind::Float, Level::Series),
                    col("subtlety_min", LabelKind::Float, Level::Series),
                ]
            })
            .into_iter()
            .flatten(),
    )
    .collect()
}

fn write_mask_label_file(
    path: &Path,
    cat: &Catalog,
    spec: &MaskImportSpec,
    version: u32,
    stats: &BTreeMap<usize, MaskStats>,
    extras: &Extras,
    columns: &[LabelColumnRef],
) -> Result<(), CatalogError> {
    let (n_series, n_slices) = (cat.rows(Level::Series), cat.rows(Level::Slice));
    let slice_start = cat.col_u64(Level::Series, "slice_start")?;
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut series_state = vec![LABEL_ABSENT; n_series];
    let mut slice_state = vec![LABEL_ABSENT; n_slices];
    for c in columns {
        let rows = if c.level == Some(Level::Series) {
            n_series
        } else {
            n_slices
        };
        values.insert(&c.name, vec![f64::NAN; rows]);
    }
    for (&row, s) in stats {
        let grid = series_grid(cat, row)?;
        let (area, step) = (grid.pixel_area(), grid.slice_step());
        let voxel = area * if step > 0.0 { step } else { f64::NAN };
        series_state[row] = LABEL_PRESENT;
        let mut set = |name: &str, at: usize, v: f64| values.get_mut(name).expect("column")[at] = v;
        set("voxels", row, s.voxels as f64);
        set("volume_mm3", row, s.voxels as f64 * voxel);
        set("slices", row, s.slices as f64);
        set("components", row, s.components as f64);
        for (name, v) in &extras[&row] {
            set(name, row, v.unwrap_or(f64::NAN));
        }
        for (k, p) in s.pixels.iter().enumerate() {
            let at = slice_start[row] as usize + k;
            slice_state[at] = LABEL_PRESENT;
            set("pixels", at, *p as f64);
            set("area_mm2", at, *p as f64 * area);
        }
    }
    let partial = path.with_extension("h5.partial");
    let h5 = h5err(&partial);
    let file = create_h5(&partial)?;
    text_attr(&file, "format", "medtrain-labels").map_err(&h5)?;
    text_attr(&file, "name", &spec.name).map_err(&h5)?;
    text_attr(&file, "version", &version.to_string()).map_err(&h5)?;
    text_attr(&file, "level", Level::Slice.group()).map_err(&h5)?;
    for c in columns {
        let g = file.create_group(&c.name).map_err(&h5)?;
        text_attr(&g, "kind", &format!("{:?}", c.kind).to_lowercase()).map_err(&h5)?;
        text_attr(&g, "categories", "[]").map_err(&h5)?;
        let level = c.level.unwrap_or(Level::Slice);
        text_attr(&g, "level", level.group()).map_err(&h5)?;
        write_column(&g, "value", &values[c.name.as_str()], 1).map_err(&h5)?;
        let mut states = if level == Level::Series {
            series_state.clone()
        } else {
            slice_state.clone()
        };
        if level == Level::Series {
            // A characteristic no reader gave is unknown, not absent.
            for (row, extra) in extras {
                if let Some(None) = extra.get(c.name.as_str()) {
                    states[*row] = LABEL_UNKNOWN;
                }
            }
        }
        write_column(&g, "state", &states, 1).map_err(&h5)?;
    }
    file.close().map_err(&h5)?;
    crate::fsx::commit_file(&partial, path).map_err(ioerr(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_touch_by_corners_and_pixels_count_per_slice() {
        // 2 slices of 3×3: a diagonal pair across slices joins (26-connectivity); a far voxel does not.
        let mut m = vec![0u16; 18];
        m[0] = 1; // slice 0, row 0, col 0
        m[9 + 4] = 2; // slice 1, row 1, col 1: a corner neighbour of the first
        m[9 + 8] = 1; // slice 1, row 2, col 2: a corner neighbour of the second
        m[2] = 1; // slice 0, row 0, col 2: an edge neighbour of (1,1,1)? no: (0,0,2)-(1,1,1) is a corner
        m[6] = 0;
        let s = mask_stats([2, 3, 3], &m);
        assert_eq!(s.pixels, vec![2, 2]);
        assert_eq!((s.voxels, s.slices, s.components), (4, 2, 1));
        let mut far = vec![0u16; 18];
        far[0] = 1;
        far[9 + 8] = 1;
        assert_eq!(mask_stats([2, 3, 3], &far).components, 2);
    }
}
