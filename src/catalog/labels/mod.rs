//! `catalog labels import`: label columns from clinical CSV exports, joined to catalog rows through
//! keyed pseudonyms of PatientID / SeriesInstanceUID / SOPInstanceUID (or InstanceNumber) made with
//! the site key, so raw identifiers never enter the catalog. An import is all or nothing: every
//! problem is collected with its CSV line, and nothing is written unless there are none.

pub mod csv;
pub mod grid;
mod join;
mod lidc_masks;
pub mod masks;
mod rtstruct_masks;
mod seg_masks;

use super::columns::Level;
use super::state::{CatalogState, LabelColumnRef, LabelKind, LabelSetRef};
use super::store::{create_h5, write_column};
use super::view::{Catalog, LABEL_ABSENT, LABEL_PRESENT, LABEL_UNKNOWN};
use super::{h5err, ioerr, CatalogError};
use crate::deid::SiteKey;
use crate::h5text::text_attr;
use join::{KeyColumns, Target};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Problems reported before giving up (the rest are counted).
pub const MAX_REPORTED_PROBLEMS: usize = 50;
/// Cells that mean "value not known" rather than a type error.
pub const UNKNOWN_CELLS: &[&str] = &["", "na", "n/a", "nan", "null", "unknown", "?", "."];

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{path}: {}", .problems.join("\n  "))]
    Rejected { path: PathBuf, problems: Vec<String> },
    #[error("label import: {0}")]
    Usage(String),
}

/// A label column to import: its name in the catalog, its CSV header and (optionally) its type.
#[derive(Clone, Debug)]
pub struct LabelSpec {
    pub name: String,
    pub column: String,
    pub kind: Option<LabelKind>,
}

/// "Event within a horizon" from follow-up time and an event flag (censoring policy): true when the
/// event happened at or before `days`; false when follow-up reached `days` without it (or the event
/// came later); unknown when follow-up ended before `days` without the event (censored).
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventWithin {
    pub name: String,
    pub event: String,
    pub time: String,
    pub days: f64,
}

#[derive(Clone, Debug, Default)]
pub struct ImportSpec {
    pub csv: PathBuf,
    pub name: String,
    /// Defaults to the newest existing version + 1.
    pub version: Option<u32>,
    pub keys: KeyColumns,
    /// Empty: every column that is not a key column (nor ignored), with inferred types.
    pub labels: Vec<LabelSpec>,
    pub ignore: Vec<String>,
    /// The instance column holds 1-based ordinals in ascending position instead of InstanceNumber.
    pub by_position: bool,
    pub event_within: Vec<EventWithin>,
}

#[derive(Debug, serde::Serialize)]
pub struct ImportReport {
    pub name: String,
    pub version: u32,
    pub level: Level,
    pub records: usize,
    pub rows_labelled: usize,
    pub columns: Vec<String>,
}

/// Normalised header name for forgiving matches ("Patient ID" = "patient_id" = "PatientID").
pub fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn is_unknown(cell: &str) -> bool {
    UNKNOWN_CELLS.contains(&cell.to_ascii_lowercase().as_str())
}

fn parse_bool(cell: &str) -> Option<bool> {
    match cell.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "t" => Some(true),
        "0" | "false" | "no" | "n" | "f" => Some(false),
        _ => None,
    }
}

fn infer_kind(cells: impl Iterator<Item = String>) -> LabelKind {
    let cells: Vec<String> = cells.filter(|c| !is_unknown(c)).collect();
    if cells.iter().all(|c| parse_bool(c).is_some()) {
        LabelKind::Bool
    } else if cells.iter().all(|c| c.parse::<i64>().is_ok()) {
        LabelKind::Int
    } else if cells.iter().all(|c| c.parse::<f64>().is_ok_and(f64::is_finite)) {
        LabelKind::Float
    } else {
        LabelKind::Category
    }
}

/// One label column being assembled, dense over the rows of its level.
struct Column {
    meta: LabelColumnRef,
    csv: Option<usize>,
    values: Vec<f64>, // (rows,)
    states: Vec<u8>,  // (rows,) LABEL_ABSENT / LABEL_PRESENT / LABEL_UNKNOWN
}

/// Parses one cell; `Ok(None)` is an unknown value.
fn parse_cell(meta: &mut LabelColumnRef, cell: &str) -> Result<Option<f64>, String> {
    if is_unknown(cell) {
        return Ok(None);
    }
    let bad = |what: &str| format!("column {}: {cell:?} is not {what}", meta.name);
    match meta.kind {
        LabelKind::Bool => parse_bool(cell)
            .map(|b| Some(b as u8 as f64))
            .ok_or_else(|| bad("a boolean (0/1, true/false)")),
        LabelKind::Int => cell
            .parse::<i64>()
            .map(|v| Some(v as f64))
            .map_err(|_| bad("an integer")),
        LabelKind::Float => match cell.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(bad("a number")),
        },
        LabelKind::Category => {
            let code = match meta.categories.iter().position(|c| c == cell) {
                Some(code) => code,
                None => {
                    meta.categories.push(cell.to_string());
                    meta.categories.len() - 1
                }
            };
            Ok(Some(code as f64))
        }
    }
}

fn label_columns(
    spec: &ImportSpec,
    table: &csv::Table,
    keys: &join::KeyIndices,
    rows: usize,
) -> Result<Vec<Column>, LabelError> {
    let find = |header: &str| {
        table
            .header
            .iter()
            .position(|h| h == header || normalise(h) == normalise(header))
    };
    let ignored: Vec<String> = spec.ignore.iter().map(|s| normalise(s)).collect();
    let wanted: Vec<LabelSpec> = if spec.labels.is_empty() {
        table
            .header
            .iter()
            .enumerate()
            .filter(|(i, h)| !keys.contains(*i) && !ignored.contains(&normalise(h)))
            .map(|(_, h)| LabelSpec {
                name: label_name(h),
                column: h.clone(),
                kind: None,
            })
            .collect()
    } else {
        spec.labels.clone()
    };
    let mut columns = Vec::new();
    for w in wanted {
        let index = find(&w.column).ok_or_else(|| {
            LabelError::Usage(format!(
                "{}: no column {:?} (header: {})",
                spec.csv.display(),
                w.column,
                table.header.join(", ")
            ))
        })?;
        let kind = w
            .kind
            .unwrap_or_else(|| infer_kind(table.records.iter().map(|r| r.fields[index].clone())));
        columns.push(Column {
            meta: LabelColumnRef {
                name: w.name,
                kind,
                categories: Vec::new(),
                level: None,
            },
            csv: Some(index),
            values: vec![f64::NAN; rows],
            states: vec![LABEL_ABSENT; rows],
        });
    }
    for e in &spec.event_within {
        columns.push(Column {
            meta: LabelColumnRef {
                name: e.name.clone(),
                kind: LabelKind::Bool,
                categories: Vec::new(),
                level: None,
            },
            csv: None,
            values: vec![f64::NAN; rows],
            states: vec![LABEL_ABSENT; rows],
        });
    }
    Ok(columns)
}

/// A catalog-friendly name for a CSV header: lower case, non-alphanumerics as `_`.
pub fn label_name(header: &str) -> String {
    header
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .to_ascii_lowercase()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Applies the censoring policy to one record.
fn event_within(e: &EventWithin, event: Option<f64>, time: Option<f64>) -> Option<bool> {
    match (event, time) {
        (Some(ev), Some(t)) if ev != 0.0 => Some(t <= e.days),
        (Some(_), Some(t)) if t >= e.days => Some(false),
        _ => None,
    }
}

/// Imports one CSV as a new label set version; returns what was imported.
pub fn import(dir: &Path, key: &SiteKey, spec: &ImportSpec) -> Result<ImportReport, LabelError> {
    let catalog = Catalog::open(dir)?;
    key.check_fingerprint(
        &format!("catalog {}", dir.display()),
        &catalog.state.key_fingerprint,
    )
    .map_err(CatalogError::from)?;
    if !valid_name(&spec.name) {
        return Err(LabelError::Usage(format!(
            "label set name {:?} must be letters, digits and _ (not starting with a digit)",
            spec.name
        )));
    }
    let text = fs::read_to_string(&spec.csv).map_err(|e| CatalogError::from(ioerr(&spec.csv)(e)))?;
    let table = csv::parse(&text).map_err(|(line, reason)| LabelError::Rejected {
        path: spec.csv.clone(),
        problems: vec![format!("line {line}: {reason}")],
    })?;
    let keys = join::KeyIndices::find(&spec.keys, &table.header, spec.by_position)
        .map_err(|e| LabelError::Usage(format!("{}: {e}", spec.csv.display())))?;
    let level = keys.level();
    let rows = catalog.rows(level);
    let mut columns = label_columns(spec, &table, &keys, rows)?;
    for c in &columns {
        if !valid_name(&c.meta.name) {
            return Err(LabelError::Usage(format!(
                "label name {:?} is not usable: rename it with --label NAME=COLUMN",
                c.meta.name
            )));
        }
    }
    let resolver = join::Resolver::new(&catalog, key, &keys)?;
    let mut problems = Vec::new();
    let mut first_line: HashMap<usize, usize> = HashMap::new();
    let mut labelled = 0;
    for record in &table.records {
        let targets = match resolver.targets(record) {
            Ok(t) => t,
            Err(reason) => {
                problems.push(format!("line {}: {reason}", record.line));
                continue;
            }
        };
        let mut parsed = Vec::with_capacity(columns.len());
        let mut bad = false;
        for c in columns.iter_mut() {
            match c.csv {
                Some(i) => match parse_cell(&mut c.meta, &record.fields[i]) {
                    Ok(v) => parsed.push(v),
                    Err(reason) => {
                        problems.push(format!("line {}: {reason}", record.line));
                        bad = true;
                        parsed.push(None);
                    }
                },
                None => parsed.push(None),
            }
        }
        for e in &spec.event_within {
            let by_name = |n: &str| {
                columns.iter().position(|c| {
                    c.meta.name == label_name(n)
                        || c.csv.is_some_and(|i| normalise(&table.header[i]) == normalise(n))
                })
            };
            let (Some(ev), Some(t)) = (by_name(&e.event), by_name(&e.time)) else {
                return Err(LabelError::Usage(format!(
                    "--event-within {}: columns {} and {} must be imported labels",
                    e.name, e.event, e.time
                )));
            };
            let at = columns
                .iter()
                .position(|c| c.meta.name == e.name)
                .expect("derived column");
            parsed[at] = event_within(e, parsed[ev], parsed[t]).map(|b| b as u8 as f64);
        }
        if bad {
            continue;
        }
        for Target { row } in targets {
            if let Some(first) = first_line.insert(row, record.line) {
                problems.push(format!(
                    "line {}: duplicate of line {first} (same {:?} row)",
                    record.line, level
                ));
                continue;
            }
            labelled += 1;
            for (c, v) in columns.iter_mut().zip(&parsed) {
                c.states[row] = if v.is_some() { LABEL_PRESENT } else { LABEL_UNKNOWN };
                c.values[row] = v.unwrap_or(f64::NAN);
            }
        }
    }
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(MAX_REPORTED_PROBLEMS);
        if total > MAX_REPORTED_PROBLEMS {
            problems.push(format!("... and {} more problems", total - MAX_REPORTED_PROBLEMS));
        }
        problems.push("nothing was imported: fix these lines and run the import again".into());
        return Err(LabelError::Rejected {
            path: spec.csv.clone(),
            problems,
        });
    }
    let version = new_version(&catalog.state, &spec.name, spec.version)?;
    let series_counts = (level == Level::Slice)
        .then(|| catalog.col_u64(Level::Series, "slice_start"))
        .transpose()?;
    let file = format!("labels-{}-v{version}.h5", spec.name);
    let path = dir.join(&file);
    write_label_file(
        &path,
        &spec.name,
        version,
        level,
        &columns,
        series_counts,
        catalog.col_u32(Level::Series, "n_slices")?,
    )?;
    let (blake3, _) =
        crate::pack::shard::hash_file(&path).map_err(|e| CatalogError::from(ioerr(&path)(e)))?;
    let (csv_hash, _) =
        crate::pack::shard::hash_file(&spec.csv).map_err(|e| CatalogError::from(ioerr(&spec.csv)(e)))?;
    let meta = LabelSetRef {
        name: spec.name.clone(),
        version,
        level,
        file,
        blake3,
        rows: rows as u64,
        columns: columns.iter().map(|c| c.meta.clone()).collect(),
        provenance: serde_json::json!({
            "csv": spec.csv.file_name().map(|n| n.to_string_lossy().to_string()),
            "csv_blake3": csv_hash,
            "records": table.records.len(),
            "by_position": spec.by_position,
            "event_within": spec.event_within,
            "censoring": "event_within: true if the event happened at or before the horizon, false if follow-up reached the horizon without it, unknown if follow-up ended earlier without it",
        }),
        masks: None,
    };
    publish(dir, &catalog.state, meta.clone())?;
    Ok(ImportReport {
        name: meta.name,
        version,
        level,
        records: table.records.len(),
        rows_labelled: labelled,
        columns: meta.columns.iter().map(|c| c.name.clone()).collect(),
    })
}

/// The version a new import of set `name` gets: `asked`, or the newest + 1; an existing version is
/// refused (versions are immutable).
fn new_version(state: &CatalogState, name: &str, asked: Option<u32>) -> Result<u32, LabelError> {
    let sets = || state.label_sets.iter().filter(|l| l.name == name);
    let version = asked.unwrap_or_else(|| sets().map(|l| l.version).max().unwrap_or(0) + 1);
    if sets().any(|l| l.version == version) {
        return Err(LabelError::Usage(format!(
            "label set {name} version {version} already exists; versions are immutable: import a new version"
        )));
    }
    Ok(version)
}

/// Adds the label set to the newest state (re-read so a concurrent build is not undone).
fn publish(dir: &Path, seen: &CatalogState, meta: LabelSetRef) -> Result<(), CatalogError> {
    let mut state = CatalogState::load(dir)?.unwrap_or_else(|| seen.clone());
    state.label_sets.push(meta);
    state.save(dir)
}

fn write_label_file(
    path: &Path,
    name: &str,
    version: u32,
    level: Level,
    columns: &[Column],
    slice_start: Option<&[u64]>,
    n_slices: &[u32],
) -> Result<(), CatalogError> {
    let partial = path.with_extension("h5.partial");
    let h5 = h5err(&partial);
    let file = create_h5(&partial)?;
    text_attr(&file, "format", "medtrain-labels").map_err(&h5)?;
    text_attr(&file, "name", name).map_err(&h5)?;
    text_attr(&file, "version", &version.to_string()).map_err(&h5)?;
    text_attr(&file, "level", level.group()).map_err(&h5)?;
    for c in columns {
        let g = file.create_group(&c.meta.name).map_err(&h5)?;
        text_attr(&g, "kind", &format!("{:?}", c.meta.kind).to_lowercase()).map_err(&h5)?;
        text_attr(
            &g,
            "categories",
            &serde_json::to_string(&c.meta.categories).expect("json"),
        )
        .map_err(&h5)?;
        write_column(&g, "value", &c.values, 1).map_err(&h5)?;
        write_column(&g, "state", &c.states, 1).map_err(&h5)?;
        if let Some(starts) = slice_start {
            let (t, p, u) = per_series_counts(c, starts, n_slices);
            write_column(&g, "series_true", &t, 1).map_err(&h5)?;
            write_column(&g, "series_present", &p, 1).map_err(&h5)?;
            write_column(&g, "series_unknown", &u, 1).map_err(&h5)?;
        }
    }
    file.close().map_err(&h5)?;
    crate::fsx::commit_file(&partial, path).map_err(ioerr(path))
}

/// Slices per series that are true (non-zero), present, unknown.
fn per_series_counts(c: &Column, starts: &[u64], n_slices: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let n = starts.len();
    let (mut t, mut p, mut u) = (vec![0u32; n], vec![0u32; n], vec![0u32; n]);
    for s in 0..n {
        let range = starts[s] as usize..starts[s] as usize + n_slices[s] as usize;
        for (state, value) in c.states[range.clone()].iter().zip(&c.values[range]) {
            match *state {
                LABEL_PRESENT => {
                    p[s] += 1;
                    t[s] += (*value != 0.0) as u32;
                }
                LABEL_UNKNOWN => u[s] += 1,
                _ => {}
            }
        }
    }
    (t, p, u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn censoring_policy() {
        let e = EventWithin {
            name: "death_5y".into(),
            event: "death".into(),
            time: "days".into(),
            days: 1826.0,
        };
        assert_eq!(event_within(&e, Some(1.0), Some(400.0)), Some(true));
        assert_eq!(event_within(&e, Some(1.0), Some(2000.0)), Some(false));
        assert_eq!(event_within(&e, Some(0.0), Some(2000.0)), Some(false));
        assert_eq!(event_within(&e, Some(0.0), Some(1095.0)), None);
        assert_eq!(event_within(&e, None, Some(3000.0)), None);
    }

    #[test]
    fn kinds_are_inferred() {
        let cells = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(infer_kind(cells(&["0", "1", "NA"])), LabelKind::Bool);
        assert_eq!(infer_kind(cells(&["0", "7"])), LabelKind::Int);
        assert_eq!(infer_kind(cells(&["0.5", "7"])), LabelKind::Float);
        assert_eq!(infer_kind(cells(&["CT", "MR"])), LabelKind::Category);
        assert_eq!(label_name("Max Diameter (mm)"), "max_diameter_mm");
    }
}
