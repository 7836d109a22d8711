//! Names → columns. A name is a table column (`slice_thickness`, `series.n_slices`,
//! `pixel_spacing[0]`) or a label (`set.column`, `set@2.column`, or a bare column name when only
//! one label set has it). Each operand knows its level and reads cells straight from the maps.

use super::lexer::QueryError;
use super::parser::Name;
use crate::catalog::columns::{cell_text, level_columns, ColType, Level};
use crate::catalog::state::LabelKind;
use crate::catalog::view::{Catalog, LABEL_PRESENT, LABEL_UNKNOWN};

/// Three-valued truth (Kleene): `and` is min, `or` is max, `not` is `T - x`.
pub const F: u8 = 0;
pub const U: u8 = 1;
pub const T: u8 = 2;

#[derive(Clone, Copy)]
pub enum Source<'a> {
    F64 {
        data: &'a [f64],
        width: usize,
        index: usize,
    },
    U8(&'a [u8]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    /// i32::MIN marks a missing value (InstanceNumber, study day).
    I32(&'a [i32]),
    Key32(&'a [[u8; 32]]),
    Code16(&'a [[u8; 16]]),
    Label {
        values: &'a [f64],
        states: &'a [u8],
        kind: LabelKind,
        categories: &'a [String],
    },
}

#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub level: Level,
    pub source: Source<'a>,
    /// Label set index in the catalog and column name (for the per-series count fast path).
    pub label: Option<(usize, &'a str)>,
    /// Rows in key order, for key columns that have one (`series_key`, `patient_key`).
    pub key_order: Option<&'a [u32]>,
}

/// A cell as a typed value; `Missing` for NaN, absent or unknown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    Missing,
    Num(f64),
    Text(&'a [u8]),
    Category(u32),
}

impl<'a> Operand<'a> {
    pub fn is_numeric(&self) -> bool {
        match self.source {
            Source::Key32(_) | Source::Code16(_) => false,
            Source::Label { kind, .. } => kind != LabelKind::Category,
            _ => true,
        }
    }

    /// Rows this operand has (label sets imported before shards were added have fewer).
    pub fn len(&self) -> usize {
        match self.source {
            Source::F64 { data, width, .. } => data.len() / width,
            Source::U8(d) => d.len(),
            Source::U32(d) => d.len(),
            Source::U64(d) => d.len(),
            Source::I32(d) => d.len(),
            Source::Key32(d) => d.len(),
            Source::Code16(d) => d.len(),
            Source::Label { states, .. } => states.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn num(&self, row: usize) -> Option<f64> {
        let x = match self.source {
            Source::F64 { data, width, index } => data[row * width + index],
            Source::U8(d) => d[row] as f64,
            Source::U32(d) => d[row] as f64,
            Source::U64(d) => d[row] as f64,
            Source::I32(d) if d[row] == i32::MIN => return None,
            Source::I32(d) => d[row] as f64,
            Source::Label { values, states, .. } => {
                if row >= states.len() || states[row] != LABEL_PRESENT {
                    return None;
                }
                values[row]
            }
            Source::Key32(_) | Source::Code16(_) => return None,
        };
        (!x.is_nan()).then_some(x)
    }

    #[inline]
    pub fn cell(&self, row: usize) -> Cell<'a> {
        match self.source {
            Source::Key32(d) => Cell::Text(trim(&d[row])),
            Source::Code16(d) => Cell::Text(trim(&d[row])),
            Source::Label {
                kind: LabelKind::Category,
                values,
                states,
                ..
            } => {
                if row < states.len() && states[row] == LABEL_PRESENT {
                    Cell::Category(values[row] as u32)
                } else {
                    Cell::Missing
                }
            }
            _ => self.num(row).map_or(Cell::Missing, Cell::Num),
        }
    }

    /// Label state of a row (absent beyond the rows the set covers); tables: present unless missing.
    #[inline]
    pub fn state(&self, row: usize) -> u8 {
        match self.source {
            Source::Label { states, .. } => states.get(row).copied().unwrap_or(0),
            _ => match self.cell(row) {
                Cell::Missing => 0,
                Cell::Text(t) if t.is_empty() => 0,
                _ => LABEL_PRESENT,
            },
        }
    }

    pub fn is_unknown_state(&self, row: usize) -> bool {
        self.state(row) == LABEL_UNKNOWN
    }

    /// JSON rendering of a cell (categories by name, booleans as true/false).
    pub fn json(&self, row: usize) -> serde_json::Value {
        match (self.cell(row), self.source) {
            (Cell::Missing, _) => serde_json::Value::Null,
            (Cell::Text(t), _) => String::from_utf8_lossy(t).into(),
            (Cell::Category(c), Source::Label { categories, .. }) => {
                categories.get(c as usize).cloned().unwrap_or_default().into()
            }
            (
                Cell::Num(x),
                Source::Label {
                    kind: LabelKind::Bool,
                    ..
                },
            ) => (x != 0.0).into(),
            (Cell::Num(x), _) if x.fract() == 0.0 && x.abs() < 9e15 => (x as i64).into(),
            (Cell::Num(x), _) => x.into(),
            (Cell::Category(c), _) => c.into(),
        }
    }
}

fn trim(cell: &[u8]) -> &[u8] {
    cell_text(cell).as_bytes()
}

fn qualifier(text: &str) -> Option<Level> {
    match text {
        "patients" | "patient" => Some(Level::Patient),
        "series" => Some(Level::Series),
        "slices" | "slice" => Some(Level::Slice),
        _ => None,
    }
}

/// Table column `name` (optionally `name[k]`) at `level`.
fn table_operand<'a>(cat: &'a Catalog, level: Level, name: &str) -> Option<Result<Operand<'a>, String>> {
    let (base, index) = match name.split_once('[') {
        Some((b, rest)) => (b, rest.trim_end_matches(']').parse::<usize>().ok()),
        None => (name, None),
    };
    let spec = level_columns(level).into_iter().find(|s| s.name == base)?;
    let path = format!("{}/{}", level.group(), spec.name);
    let t = &cat.tables;
    let err = |e: crate::catalog::CatalogError| e.to_string();
    let source = (|| -> Result<Source<'a>, String> {
        if spec.width > 1 || index.is_some() {
            let k = index.ok_or_else(|| {
                format!(
                    "{base} has {} values per row: use {base}[0]..{base}[{}]",
                    spec.width,
                    spec.width - 1
                )
            })?;
            if k >= spec.width || spec.ty != ColType::F64 {
                return Err(format!("{base}[{k}] is out of range (0..{})", spec.width - 1));
            }
            return Ok(Source::F64 {
                data: t.f64s(&path).map_err(err)?,
                width: spec.width,
                index: k,
            });
        }
        Ok(match spec.ty {
            ColType::F64 => Source::F64 {
                data: t.f64s(&path).map_err(err)?,
                width: 1,
                index: 0,
            },
            ColType::U8 => Source::U8(t.u8s(&path).map_err(err)?),
            ColType::U32 => Source::U32(t.u32s(&path).map_err(err)?),
            ColType::U64 => Source::U64(t.u64s(&path).map_err(err)?),
            ColType::I32 => Source::I32(t.i32s(&path).map_err(err)?),
            ColType::Key32 => Source::Key32(t.keys(&path).map_err(err)?),
            ColType::Code16 => Source::Code16(t.codes(&path).map_err(err)?),
        })
    })();
    let order_name = match (level, spec.name) {
        (Level::Series, "series_key") => Some("series/by_series_key"),
        (Level::Patient, "patient_key") => Some("patients/by_patient_key"),
        _ => None,
    };
    let key_order = order_name.and_then(|n| t.u32s(n).ok());
    Some(source.map(|source| Operand {
        level,
        source,
        label: None,
        key_order,
    }))
}

fn label_operand<'a>(cat: &'a Catalog, set: usize, column: &str) -> Result<Operand<'a>, String> {
    let l = &cat.labels[set];
    let meta = l.column(column).ok_or_else(|| {
        let names: Vec<&str> = l.meta.columns.iter().map(|c| c.name.as_str()).collect();
        format!(
            "label set {} has no column {column} (it has {})",
            l.meta.name,
            names.join(", ")
        )
    })?;
    let meta_name: &'a str = &meta.name;
    Ok(Operand {
        level: meta.level.unwrap_or(l.meta.level),
        source: Source::Label {
            values: l.values(column).map_err(|e| e.to_string())?,
            states: l.states(column).map_err(|e| e.to_string())?,
            kind: meta.kind,
            categories: &meta.categories,
        },
        label: Some((set, meta_name)),
        key_order: None,
    })
}

/// Resolves a name to an operand, or an error pointing at it.
pub fn bind<'a>(cat: &'a Catalog, name: &Name) -> Result<Operand<'a>, QueryError> {
    let fail = |m: String| QueryError::at(name.pos, name.len, m);
    let text = name.text.as_str();
    if let Some((prefix, rest)) = text.split_once('.') {
        if let Some(level) = qualifier(prefix) {
            return table_operand(cat, level, rest)
                .unwrap_or_else(|| Err(format!("{} has no column {rest}", level.group())))
                .map_err(fail);
        }
        let (set, version) = match prefix.split_once('@') {
            Some((s, v)) => (
                s,
                Some(
                    v.trim_start_matches('v')
                        .parse::<u32>()
                        .map_err(|_| fail(format!("bad label set version in {prefix}")))?,
                ),
            ),
            None => (prefix, None),
        };
        let found = cat
            .labels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.meta.name == set && version.is_none_or(|v| l.meta.version == v))
            .max_by_key(|(_, l)| l.meta.version)
            .map(|(i, _)| i)
            .ok_or_else(|| {
                let sets: Vec<String> = cat
                    .labels
                    .iter()
                    .map(|l| format!("{}@{}", l.meta.name, l.meta.version))
                    .collect();
                fail(format!(
                    "no label set {prefix} (label sets: {})",
                    if sets.is_empty() {
                        "none".into()
                    } else {
                        sets.join(", ")
                    }
                ))
            })?;
        return label_operand(cat, found, rest).map_err(fail);
    }
    for level in [Level::Series, Level::Slice, Level::Patient] {
        if let Some(r) = table_operand(cat, level, text) {
            return r.map_err(fail);
        }
    }
    let mut hits: Vec<usize> = Vec::new();
    for (i, l) in cat.labels.iter().enumerate() {
        let newest = cat.label_set(&l.meta.name, None).map(|n| n.meta.version) == Some(l.meta.version);
        if newest && l.column(text).is_some() {
            hits.push(i);
        }
    }
    match hits.as_slice() {
        [i] => label_operand(cat, *i, text).map_err(fail),
        [] => Err(fail(format!("unknown column or label {text:?}"))),
        many => {
            let sets: Vec<&str> = many.iter().map(|i| cat.labels[*i].meta.name.as_str()).collect();
            Err(fail(format!(
                "{text} is in several label sets ({}): write set.{text}",
                sets.join(", ")
            )))
        }
    }
}
