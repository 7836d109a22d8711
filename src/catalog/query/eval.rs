//! Evaluation. Filters are evaluated column-wise as three-valued masks (false/unknown/true; a row
//! is selected only when true, as in SQL). Coarse predicates are evaluated on the small tables
//! (patients, series) and broadcast down; slices are reached through each series' contiguous row
//! range. A slice count whose only slice-level condition is a label test is answered from the
//! per-series counts stored with the label set, without reading any slice column.

use super::bind::{bind, Cell, Operand, Source, F, T, U};
use super::lexer::QueryError;
use super::parser::{Expr, Presence, Test, Value};
use crate::catalog::columns::Level;
use crate::catalog::state::LabelKind;
use crate::catalog::view::{Catalog, LABEL_PRESENT, LABEL_UNKNOWN};
use crate::catalog::CatalogError;

/// A bound filter: the parsed expression with its operands resolved.
pub enum Bound<'a> {
    All,
    And(Box<Bound<'a>>, Box<Bound<'a>>),
    Or(Box<Bound<'a>>, Box<Bound<'a>>),
    Not(Box<Bound<'a>>),
    Atom(Operand<'a>, Test),
}

impl<'a> Bound<'a> {
    /// The finest level the filter reads (Patient when it reads nothing).
    pub fn level(&self) -> Level {
        match self {
            Bound::All => Level::Patient,
            Bound::And(a, b) | Bound::Or(a, b) => a.level().max(b.level()),
            Bound::Not(a) => a.level(),
            Bound::Atom(op, _) => op.level,
        }
    }

    fn conjuncts(self, out: &mut Vec<Bound<'a>>) {
        match self {
            Bound::And(a, b) => {
                a.conjuncts(out);
                b.conjuncts(out);
            }
            Bound::All => {}
            other => out.push(other),
        }
    }
}

fn check_test(op: &Operand, test: &Test, pos: (usize, usize)) -> Result<(), QueryError> {
    let fail = |m: &str| Err(QueryError::at(pos.0, pos.1, m.to_string()));
    let values: Vec<&Value> = match test {
        Test::Cmp(_, v) => vec![v],
        Test::In(vs) => vs.iter().collect(),
        Test::Range(a, b) => vec![a, b],
        Test::Is(_) => vec![],
    };
    for v in values {
        match (v, op.is_numeric()) {
            (Value::Text(_), true) => return fail("this column is numeric: compare it with a number"),
            (Value::Num(_) | Value::Bool(_), false) => {
                return fail("this column holds text: compare it with 'text'")
            }
            _ => {}
        }
    }
    let ordered =
        matches!(test, Test::Range(..)) || matches!(test, Test::Cmp(o, _) if *o != "=" && *o != "!=");
    if ordered && !op.is_numeric() {
        return fail("text columns support =, != and in [...] only");
    }
    Ok(())
}

pub fn bind_expr<'a>(cat: &'a Catalog, e: &Expr) -> Result<Bound<'a>, QueryError> {
    Ok(match e {
        Expr::All => Bound::All,
        Expr::And(a, b) => Bound::And(Box::new(bind_expr(cat, a)?), Box::new(bind_expr(cat, b)?)),
        Expr::Or(a, b) => Bound::Or(Box::new(bind_expr(cat, a)?), Box::new(bind_expr(cat, b)?)),
        Expr::Not(a) => Bound::Not(Box::new(bind_expr(cat, a)?)),
        Expr::Atom(name, test) => {
            let op = bind(cat, name)?;
            check_test(&op, test, (name.pos, name.len))?;
            Bound::Atom(op, test.clone())
        }
    })
}

fn num_of(v: &Value) -> f64 {
    match v {
        Value::Num(x) => *x,
        Value::Bool(b) => *b as u8 as f64,
        Value::Text(_) => f64::NAN,
    }
}

fn truth(b: bool) -> u8 {
    if b {
        T
    } else {
        F
    }
}

/// A value compared with a cell: numbers numerically, text byte-wise, categories by name.
fn cell_matches(op: &Operand, cell: Cell, test: &Test) -> u8 {
    let eq = |v: &Value| -> bool {
        match (cell, v) {
            (Cell::Num(x), v) => x == num_of(v),
            (Cell::Text(t), Value::Text(s)) => t == s.as_bytes(),
            (Cell::Category(c), Value::Text(s)) => match op.source {
                Source::Label { categories, .. } => categories.get(c as usize).is_some_and(|n| n == s),
                _ => false,
            },
            _ => false,
        }
    };
    if cell == Cell::Missing {
        return U;
    }
    match test {
        Test::Cmp("=", v) => truth(eq(v)),
        Test::Cmp("!=", v) => truth(!eq(v)),
        Test::Cmp(o, v) => {
            let Cell::Num(x) = cell else { return U };
            let y = num_of(v);
            truth(match *o {
                "<" => x < y,
                "<=" => x <= y,
                ">" => x > y,
                ">=" => x >= y,
                _ => false,
            })
        }
        Test::In(vs) => truth(vs.iter().any(eq)),
        Test::Range(a, b) => {
            let Cell::Num(x) = cell else { return U };
            truth(x >= num_of(a) && x <= num_of(b))
        }
        Test::Is(_) => unreachable!("presence tests are handled by state"),
    }
}

/// The atom's mask over the rows of its own level.
fn atom_mask(op: &Operand, test: &Test, rows: usize) -> Vec<u8> {
    if let Test::Is(p) = test {
        return (0..rows)
            .map(|r| {
                let s = op.state(r);
                truth(match p {
                    Presence::Present => s == LABEL_PRESENT,
                    Presence::Unknown => s == LABEL_UNKNOWN,
                    Presence::Absent => s != LABEL_PRESENT && s != LABEL_UNKNOWN,
                })
            })
            .collect();
    }
    // Key equality (one series, one patient): binary search in the stored key order.
    if let (Source::Key32(keys), Some(order), Test::Cmp("=", Value::Text(wanted))) =
        (op.source, op.key_order, test)
    {
        let target = crate::catalog::columns::padded::<32>(wanted);
        let mut out = vec![F; rows];
        let first = order.partition_point(|&r| keys[r as usize] < target);
        for &r in order[first..].iter().take_while(|&&r| keys[r as usize] == target) {
            out[r as usize] = T;
        }
        return out;
    }
    // Plain numeric comparisons on f64 columns are the hot path: keep them branch-light.
    if let (Source::F64 { data, width: 1, .. }, Test::Cmp(o, v)) = (op.source, test) {
        let y = num_of(v);
        let cmp = |f: fn(f64, f64) -> bool| {
            data.iter()
                .map(|&x| if x.is_nan() { U } else { truth(f(x, y)) })
                .collect()
        };
        return match *o {
            "=" => cmp(|x, y| x == y),
            "!=" => cmp(|x, y| x != y),
            "<" => cmp(|x, y| x < y),
            "<=" => cmp(|x, y| x <= y),
            ">" => cmp(|x, y| x > y),
            _ => cmp(|x, y| x >= y),
        };
    }
    let n = op.len();
    (0..rows)
        .map(|r| {
            if r < n {
                cell_matches(op, op.cell(r), test)
            } else {
                U
            }
        })
        .collect()
}

/// Row maps between levels, read once per query.
pub struct Links<'a> {
    pub patient_of_series: &'a [u32],
    pub slice_start: &'a [u64],
    pub n_slices: &'a [u32],
    pub series_of_slice: &'a [u32],
    pub rows: [usize; 3],
}

impl<'a> Links<'a> {
    pub fn new(cat: &'a Catalog) -> Result<Links<'a>, CatalogError> {
        Ok(Links {
            patient_of_series: cat.col_u32(Level::Series, "patient_row")?,
            slice_start: cat.col_u64(Level::Series, "slice_start")?,
            n_slices: cat.col_u32(Level::Series, "n_slices")?,
            series_of_slice: cat.col_u32(Level::Slice, "series_row")?,
            rows: [
                cat.rows(Level::Patient),
                cat.rows(Level::Series),
                cat.rows(Level::Slice),
            ],
        })
    }

    /// Broadcasts a mask from a coarser level to a finer one.
    pub fn broadcast(&self, mask: Vec<u8>, from: Level, to: Level) -> Vec<u8> {
        match (from, to) {
            (a, b) if a == b => mask,
            (Level::Patient, Level::Series) => {
                self.patient_of_series.iter().map(|&p| mask[p as usize]).collect()
            }
            (Level::Series, Level::Slice) => {
                let mut out = vec![F; self.rows[2]];
                for s in 0..self.rows[1] {
                    let start = self.slice_start[s] as usize;
                    out[start..start + self.n_slices[s] as usize].fill(mask[s]);
                }
                out
            }
            (Level::Patient, Level::Slice) => {
                let series = self.broadcast(mask, Level::Patient, Level::Series);
                self.broadcast(series, Level::Series, Level::Slice)
            }
            _ => unreachable!("masks only move to finer levels"),
        }
    }
}

/// The filter's three-valued mask over the rows of `level` (at least as fine as the filter).
pub fn mask(b: &Bound, level: Level, links: &Links) -> Vec<u8> {
    let rows = links.rows[level as usize];
    match b {
        Bound::All => vec![T; rows],
        Bound::And(x, y) => zip(mask(x, level, links), mask(y, level, links), u8::min),
        Bound::Or(x, y) => zip(mask(x, level, links), mask(y, level, links), u8::max),
        Bound::Not(x) => mask(x, level, links).into_iter().map(|v| T - v).collect(),
        Bound::Atom(op, test) => {
            let own = atom_mask(op, test, links.rows[op.level as usize]);
            links.broadcast(own, op.level, level)
        }
    }
}

fn zip(mut a: Vec<u8>, b: Vec<u8>, f: fn(u8, u8) -> u8) -> Vec<u8> {
    for (x, y) in a.iter_mut().zip(b) {
        *x = f(*x, y);
    }
    a
}

/// Per-series slice counts from the label set's stored counts, when the condition is one of the
/// tests they answer (`= true`, `= false`, `is present/unknown/absent`).
fn stored_counts(cat: &Catalog, b: &Bound, links: &Links) -> Option<Vec<u32>> {
    let Bound::Atom(op, test) = b else { return None };
    let (set, column) = op.label?;
    if op.level != Level::Slice {
        return None;
    }
    let Source::Label { kind, .. } = op.source else {
        return None;
    };
    let l = &cat.labels[set];
    let get = |w: &str| l.series_counts(column, w).ok();
    let (tr, pr, un) = (
        get("series_true")?,
        get("series_present")?,
        get("series_unknown")?,
    );
    let at = |v: &[u32], s: usize| v.get(s).copied().unwrap_or(0);
    let n = links.rows[1];
    let is_bool_value = |v: &Value| match v {
        Value::Bool(b) => Some(*b),
        Value::Num(x) if *x == 0.0 || *x == 1.0 => Some(*x == 1.0),
        _ => None,
    };
    let f: Box<dyn Fn(usize) -> u32> = match test {
        Test::Cmp(o @ ("=" | "!="), v) if kind == LabelKind::Bool => {
            let want = is_bool_value(v)? == (*o == "=");
            if want {
                Box::new(move |s| at(tr, s))
            } else {
                Box::new(move |s| at(pr, s) - at(tr, s))
            }
        }
        Test::Is(Presence::Present) => Box::new(move |s| at(pr, s)),
        Test::Is(Presence::Unknown) => Box::new(move |s| at(un, s)),
        Test::Is(Presence::Absent) => Box::new(move |s| links.n_slices[s] - at(pr, s) - at(un, s)),
        _ => return None,
    };
    Some((0..n).map(f).collect())
}

/// Matching slices per series. Coarse conditions select series; the slice-level rest is answered
/// from stored counts when possible, else by scanning.
pub fn slice_counts(cat: &Catalog, b: Bound, links: &Links) -> Vec<u32> {
    let mut conjuncts = Vec::new();
    b.conjuncts(&mut conjuncts);
    let (fine, coarse): (Vec<Bound>, Vec<Bound>) =
        conjuncts.into_iter().partition(|c| c.level() == Level::Slice);
    let series = coarse
        .into_iter()
        .reduce(|a, b| Bound::And(Box::new(a), Box::new(b)))
        .map(|c| mask(&c, Level::Series, links))
        .unwrap_or_else(|| vec![T; links.rows[1]]);
    let select = |s: usize| series[s] == T;
    if fine.is_empty() {
        return (0..links.rows[1])
            .map(|s| if select(s) { links.n_slices[s] } else { 0 })
            .collect();
    }
    if fine.len() == 1 {
        if let Some(counts) = stored_counts(cat, &fine[0], links) {
            return counts
                .into_iter()
                .enumerate()
                .map(|(s, c)| if select(s) { c } else { 0 })
                .collect();
        }
    }
    let fine = fine
        .into_iter()
        .reduce(|a, b| Bound::And(Box::new(a), Box::new(b)))
        .expect("non-empty");
    let m = mask(&fine, Level::Slice, links);
    (0..links.rows[1])
        .map(|s| {
            if !select(s) {
                return 0;
            }
            let start = links.slice_start[s] as usize;
            m[start..start + links.n_slices[s] as usize]
                .iter()
                .filter(|&&v| v == T)
                .count() as u32
        })
        .collect()
}
