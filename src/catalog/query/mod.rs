//! `catalog query`: a small filter language over every column and label, with counts, groups and
//! row listings at the patient, series or slice level.
//!
//! # The language
//! ```text
//! slice_thickness <= 1.5 and lidc.nodule = true
//! modality in ['CT', 'MR'] and not (convolution_kernel = 'BONE')
//! pixel_spacing[0] in 0.5..0.8 or outcomes.death_5y is unknown
//! ```
//! - Names: table columns (`modality`, `slice_thickness`, `position`, `instance_number`, ...;
//!   qualify as `patients.n_slices`, `series.n_slices`, `slices.thickness` when ambiguous; vector
//!   columns by element, `pixel_spacing[0]`), and labels as `set.column` (newest version) or
//!   `set@2.column`; a bare label column name works when one label set has it.
//! - Tests: `= != < <= > >=` against a number, `'text'`, `true`/`false`; `in [a, b, ...]`;
//!   ranges `in lo..hi` (inclusive); `is present | absent | unknown` (a label row with no known
//!   value, e.g. censored follow-up, is *unknown*; a row not in the label set is *absent*).
//!   A bare boolean label means `= true`.
//! - Logic: `not`, `and`, `or`, parentheses. Missing values (NaN, absent, unknown) make a
//!   comparison unknown, and a row is selected only when the filter is true, as in SQL.
//! - Levels: a filter is evaluated at its finest column's level; a coarser output level keeps a
//!   row when any of its rows matches (a patient with a matching slice), a finer one keeps all
//!   rows under a matching row (every slice of a matching series).

pub mod bind;
pub mod eval;
pub mod lexer;
pub mod parser;

use crate::catalog::columns::Level;
use crate::catalog::view::Catalog;
use crate::catalog::CatalogError;
use bind::{bind, Cell, Operand};
use eval::{bind_expr, mask, slice_counts, Bound, Links};
use lexer::QueryError;
use parser::{parse, Name};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct Request {
    pub filter: String,
    pub level: Level,
    pub group_by: Vec<String>,
    pub mean: Vec<String>,
    /// Keep the `top` largest groups (by count, ties by key).
    pub top: Option<usize>,
    /// List the selected rows with these columns (empty: a default set for the level).
    pub list: Option<Vec<String>>,
    pub limit: Option<usize>,
}

impl Request {
    pub fn count(filter: &str, level: Level) -> Request {
        Request {
            filter: filter.into(),
            level,
            group_by: vec![],
            mean: vec![],
            top: None,
            list: None,
            limit: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Group {
    pub key: Vec<serde_json::Value>,
    pub count: u64,
    pub mean: Vec<Option<f64>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Answer {
    pub filter: String,
    pub level: Level,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Group>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Vec<serde_json::Value>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryFailure {
    /// The query text is wrong; the message carries a caret line.
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

fn name_error(q: &str, e: QueryError) -> QueryFailure {
    QueryFailure::Query(e.render(q))
}

/// Which rows of the output level are selected.
pub struct Selection {
    pub level: Level,
    /// Matching slices per series (slice output).
    pub series_counts: Option<Vec<u32>>,
    /// Selected rows of the output level (patients or series).
    pub rows: Option<Vec<bool>>,
    /// The filter's finest level.
    pub filter_level: Level,
}

impl Selection {
    pub fn count(&self) -> u64 {
        match (&self.series_counts, &self.rows) {
            (Some(c), _) => c.iter().map(|&x| x as u64).sum(),
            (_, Some(r)) => r.iter().filter(|&&x| x).count() as u64,
            _ => 0,
        }
    }
}

/// Evaluates a filter for an output level.
pub fn select(cat: &Catalog, filter: &str, level: Level) -> Result<Selection, QueryFailure> {
    let expr = parse(filter).map_err(|e| name_error(filter, e))?;
    let bound = bind_expr(cat, &expr).map_err(|e| name_error(filter, e))?;
    let links = Links::new(cat)?;
    Ok(select_bound(cat, bound, level, &links))
}

fn select_bound(cat: &Catalog, bound: Bound, level: Level, links: &Links) -> Selection {
    let filter_level = bound.level();
    let series_of = |bound: Bound| -> Vec<bool> {
        if bound.level() == Level::Slice {
            slice_counts(cat, bound, links).iter().map(|&c| c > 0).collect()
        } else {
            mask(&bound, Level::Series, links)
                .iter()
                .map(|&v| v == bind::T)
                .collect()
        }
    };
    match level {
        Level::Slice => Selection {
            level,
            series_counts: Some(slice_counts(cat, bound, links)),
            rows: None,
            filter_level,
        },
        Level::Series => Selection {
            level,
            series_counts: None,
            rows: Some(series_of(bound)),
            filter_level,
        },
        Level::Patient => {
            let rows = if filter_level == Level::Patient {
                mask(&bound, Level::Patient, links)
                    .iter()
                    .map(|&v| v == bind::T)
                    .collect()
            } else {
                let mut p = vec![false; links.rows[0]];
                for (s, keep) in series_of(bound).into_iter().enumerate() {
                    if keep {
                        p[links.patient_of_series[s] as usize] = true;
                    }
                }
                p
            };
            Selection {
                level,
                series_counts: None,
                rows: Some(rows),
                filter_level,
            }
        }
    }
}

/// Calls `f(row, weight)` for every selected output row, or, for slice output whose filter and
/// `needs_slices` stay at series level, for every series with its number of matching slices.
/// The first argument says which level the row belongs to.
pub(crate) fn for_each(
    cat: &Catalog,
    sel: &Selection,
    filter: &str,
    needs_slices: bool,
    links: &Links,
    mut f: impl FnMut(Level, usize, u64),
) -> Result<(), QueryFailure> {
    match (&sel.series_counts, &sel.rows) {
        (Some(counts), _) if !needs_slices => {
            for (s, &c) in counts.iter().enumerate() {
                if c > 0 {
                    f(Level::Series, s, c as u64);
                }
            }
        }
        (Some(counts), _) => {
            let slice_mask = if sel.filter_level == Level::Slice {
                let expr = parse(filter).map_err(|e| name_error(filter, e))?;
                let bound = bind_expr(cat, &expr).map_err(|e| name_error(filter, e))?;
                Some(mask(&bound, Level::Slice, links))
            } else {
                None
            };
            for (s, &c) in counts.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                let start = links.slice_start[s] as usize;
                for row in start..start + links.n_slices[s] as usize {
                    if slice_mask.as_ref().is_none_or(|m| m[row] == bind::T) {
                        f(Level::Slice, row, 1);
                    }
                }
            }
        }
        (_, Some(rows)) => {
            for (r, &keep) in rows.iter().enumerate() {
                if keep {
                    f(sel.level, r, 1);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Maps a row of `from` to the row of the coarser `to`.
pub(crate) fn up(links: &Links, from: Level, row: usize, to: Level) -> usize {
    match (from, to) {
        (a, b) if a == b => row,
        (Level::Slice, _) => up(links, Level::Series, links.series_of_slice[row] as usize, to),
        (Level::Series, Level::Patient) => links.patient_of_series[row] as usize,
        _ => unreachable!("only coarser levels"),
    }
}

fn bind_names<'a>(
    cat: &'a Catalog,
    names: &[String],
    level: Level,
    what: &str,
) -> Result<Vec<Operand<'a>>, QueryFailure> {
    names
        .iter()
        .map(|n| {
            let name = Name {
                text: n.clone(),
                pos: 0,
                len: n.len(),
            };
            let op = bind(cat, &name).map_err(|e| name_error(n, e))?;
            if op.level > level {
                return Err(QueryFailure::Query(format!(
                    "{what} {n} is a {:?}-level column; use --level {} or a coarser column",
                    op.level,
                    op.level.group()
                )));
            }
            Ok(op)
        })
        .collect()
}

/// Group key cell: exact bytes of a text/number so grouping never rounds; inline, so grouping
/// allocates nothing per row.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyCell {
    Missing,
    Num(i64, u64),
    Text([u8; 32]),
    Category(u32),
}

fn key_cell(c: Cell) -> KeyCell {
    match c {
        Cell::Missing => KeyCell::Missing,
        Cell::Num(x) => KeyCell::Num(x.floor() as i64, x.to_bits()),
        Cell::Text(t) => {
            let mut cell = [0u8; 32];
            let n = t.len().min(32);
            cell[..n].copy_from_slice(&t[..n]);
            KeyCell::Text(cell)
        }
        Cell::Category(c) => KeyCell::Category(c),
    }
}

/// A word-at-a-time multiplicative hash (as in rustc's FxHash): group keys are short and not
/// attacker-chosen, so speed matters more than SipHash's flooding resistance.
#[derive(Default)]
struct KeyHasher(u64);

const HASH_SEED: u64 = 0x517c_c1b7_2722_0a95;

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(HASH_SEED);
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }
    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
    #[inline]
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
}

type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

struct Acc {
    row: (Level, usize),
    count: u64,
    sums: Vec<f64>,
    ns: Vec<u64>,
}

/// Runs a request: count, and groups or rows when asked.
pub fn run(cat: &Catalog, req: &Request) -> Result<Answer, QueryFailure> {
    let expr = parse(&req.filter).map_err(|e| name_error(&req.filter, e))?;
    let bound = bind_expr(cat, &expr).map_err(|e| name_error(&req.filter, e))?;
    let links = Links::new(cat)?;
    let sel = select_bound(cat, bound, req.level, &links);
    let mut answer = Answer {
        filter: req.filter.clone(),
        level: req.level,
        count: sel.count(),
        group_by: None,
        mean: None,
        groups: None,
        columns: None,
        rows: None,
    };
    if !req.group_by.is_empty() || !req.mean.is_empty() {
        answer.groups = Some(groups(cat, req, &sel, &links)?);
        answer.group_by = Some(req.group_by.clone());
        answer.mean = Some(req.mean.clone());
    } else if let Some(columns) = &req.list {
        let columns = if columns.is_empty() {
            default_columns(req.level)
        } else {
            columns.clone()
        };
        let ops = bind_names(cat, &columns, req.level, "column")?;
        let mut rows = Vec::new();
        let limit = req.limit.unwrap_or(usize::MAX);
        for_each(
            cat,
            &sel,
            &req.filter,
            req.level == Level::Slice,
            &links,
            |level, row, _| {
                if rows.len() < limit {
                    rows.push(
                        ops.iter()
                            .map(|op| op.json(up(&links, level, row, op.level)))
                            .collect(),
                    );
                }
            },
        )?;
        answer.columns = Some(columns);
        answer.rows = Some(rows);
    }
    Ok(answer)
}

fn default_columns(level: Level) -> Vec<String> {
    let names: &[&str] = match level {
        Level::Patient => &["patient_key", "n_series", "patients.n_slices"],
        Level::Series => &[
            "series_key",
            "patient_key",
            "modality",
            "n_slices",
            "slice_thickness",
            "shard",
            "shard_row",
        ],
        Level::Slice => &[
            "series_key",
            "slice_index",
            "instance_number",
            "position",
            "thickness",
            "sop_key",
            "shard",
        ],
    };
    names.iter().map(|s| s.to_string()).collect()
}

fn groups(cat: &Catalog, req: &Request, sel: &Selection, links: &Links) -> Result<Vec<Group>, QueryFailure> {
    let keys = bind_names(cat, &req.group_by, req.level, "group-by column")?;
    let means = bind_names(cat, &req.mean, req.level, "mean column")?;
    for (op, n) in means.iter().zip(&req.mean) {
        if !op.is_numeric() {
            return Err(QueryFailure::Query(format!(
                "mean {n}: the column is not numeric"
            )));
        }
    }
    let needs_slices =
        req.level == Level::Slice && keys.iter().chain(&means).any(|o| o.level == Level::Slice);
    let new_acc = |level, row| Acc {
        row: (level, row),
        count: 0,
        sums: vec![0.0; means.len()],
        ns: vec![0; means.len()],
    };
    let add = |acc: &mut Acc, level, row, weight: u64| {
        acc.count += weight;
        for (i, op) in means.iter().enumerate() {
            if let Some(x) = op.num(up(links, level, row, op.level)) {
                acc.sums[i] += x * weight as f64;
                acc.ns[i] += weight;
            }
        }
    };
    let mut table: KeyMap<Vec<KeyCell>, Acc> = KeyMap::default();
    if keys.len() == 1 && keys[0].key_order.is_some() {
        // A unique key (series_key, patient_key): the key's row is the group, no hashing.
        let key_level = keys[0].level;
        let mut dense: Vec<Option<Acc>> = (0..links.rows[key_level as usize]).map(|_| None).collect();
        for_each(
            cat,
            sel,
            &req.filter,
            needs_slices,
            links,
            |level, row, weight| {
                let k = up(links, level, row, key_level);
                add(
                    dense[k].get_or_insert_with(|| new_acc(level, row)),
                    level,
                    row,
                    weight,
                );
            },
        )?;
        for (k, acc) in dense.into_iter().enumerate() {
            if let Some(acc) = acc {
                table.insert(vec![key_cell(keys[0].cell(k))], acc);
            }
        }
    } else {
        let mut scratch: Vec<KeyCell> = Vec::with_capacity(keys.len());
        for_each(
            cat,
            sel,
            &req.filter,
            needs_slices,
            links,
            |level, row, weight| {
                scratch.clear();
                scratch.extend(
                    keys.iter()
                        .map(|op| key_cell(op.cell(up(links, level, row, op.level)))),
                );
                match table.get_mut(scratch.as_slice()) {
                    Some(acc) => add(acc, level, row, weight),
                    None => {
                        let mut acc = new_acc(level, row);
                        add(&mut acc, level, row, weight);
                        table.insert(scratch.clone(), acc);
                    }
                }
            },
        )?;
    }
    let mut entries: Vec<(Vec<KeyCell>, Acc)> = table.into_iter().collect();
    match req.top {
        Some(n) => {
            let order = |a: &(Vec<KeyCell>, Acc), b: &(Vec<KeyCell>, Acc)| {
                b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0))
            };
            if n < entries.len() {
                entries.select_nth_unstable_by(n, order);
                entries.truncate(n);
            }
            entries.sort_by(order);
        }
        None => entries.sort_by(|a, b| a.0.cmp(&b.0)),
    }
    Ok(entries
        .into_iter()
        .map(|(_, acc)| {
            let (level, row) = acc.row;
            Group {
                key: keys
                    .iter()
                    .map(|op| op.json(up(links, level, row, op.level)))
                    .collect(),
                count: acc.count,
                mean: acc
                    .sums
                    .iter()
                    .zip(&acc.ns)
                    .map(|(s, &n)| (n > 0).then(|| s / n as f64))
                    .collect(),
            }
        })
        .collect())
}
