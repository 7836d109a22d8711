//! Joining CSV records to catalog rows. Identifiers are pseudonymised with the site key exactly as
//! `pack` did, then looked up: patients and series by key, slices within their series by SOP key,
//! InstanceNumber (single or range such as `40-47`), or, only when asked, by ordinal position.

use super::super::columns::Level;
use super::super::view::Catalog;
use super::super::CatalogError;
use super::csv::Record;
use super::normalise;
use crate::deid::{IdKind, SiteKey};
use std::collections::HashMap;

/// CSV headers of the key columns (matched exactly or after `normalise`).
#[derive(Clone, Debug)]
pub struct KeyColumns {
    pub patient: String,
    pub series: String,
    pub sop: String,
    pub instance: String,
}

impl Default for KeyColumns {
    fn default() -> Self {
        KeyColumns {
            patient: "PatientID".into(),
            series: "SeriesInstanceUID".into(),
            sop: "SOPInstanceUID".into(),
            instance: "InstanceNumber".into(),
        }
    }
}

/// Columns that are never labels even when present (StudyInstanceUID identifies nothing the
/// series key does not).
const ALWAYS_KEYS: &[&str] = &["studyinstanceuid", "studyuid"];

pub struct KeyIndices {
    patient: Option<usize>,
    series: Option<usize>,
    sop: Option<usize>,
    instance: Option<usize>,
    by_position: bool,
    others: Vec<usize>,
}

impl KeyIndices {
    pub fn find(keys: &KeyColumns, header: &[String], by_position: bool) -> Result<KeyIndices, String> {
        let find = |name: &str| {
            header
                .iter()
                .position(|h| h == name || normalise(h) == normalise(name))
        };
        let found = KeyIndices {
            patient: find(&keys.patient),
            series: find(&keys.series),
            sop: find(&keys.sop),
            instance: find(&keys.instance),
            by_position,
            others: header
                .iter()
                .enumerate()
                .filter(|(_, h)| ALWAYS_KEYS.contains(&normalise(h).as_str()))
                .map(|(i, _)| i)
                .collect(),
        };
        if found.patient.is_none() && found.series.is_none() {
            return Err(format!(
                "no key column: expected {:?} or {:?} in the header ({}); name them with --patient-column / --series-column",
                keys.patient,
                keys.series,
                header.join(", ")
            ));
        }
        if (found.sop.is_some() || found.instance.is_some()) && found.series.is_none() && found.sop.is_none()
        {
            return Err(format!(
                "slice labels by {:?} need a {:?} column",
                keys.instance, keys.series
            ));
        }
        if by_position && found.instance.is_none() {
            return Err(format!(
                "--by-position needs a {:?} column holding ordinals",
                keys.instance
            ));
        }
        Ok(found)
    }

    pub fn level(&self) -> Level {
        if self.sop.is_some() || self.instance.is_some() {
            Level::Slice
        } else if self.series.is_some() {
            Level::Series
        } else {
            Level::Patient
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        [self.patient, self.series, self.sop, self.instance].contains(&Some(i)) || self.others.contains(&i)
    }
}

pub struct Target {
    pub row: usize,
}

pub struct Resolver<'a> {
    catalog: &'a Catalog,
    key: &'a SiteKey,
    keys: &'a KeyIndices,
    patients: HashMap<[u8; 32], usize>,
    series: HashMap<[u8; 32], usize>,
    /// Only for SOP joins without a series column: every slice by SOP key.
    sops: HashMap<[u8; 32], usize>,
}

fn key32(text: &str) -> [u8; 32] {
    super::super::columns::padded::<32>(text)
}

impl<'a> Resolver<'a> {
    pub fn new(
        catalog: &'a Catalog,
        key: &'a SiteKey,
        keys: &'a KeyIndices,
    ) -> Result<Resolver<'a>, CatalogError> {
        let index = |level, name| -> Result<HashMap<[u8; 32], usize>, CatalogError> {
            Ok(catalog
                .col_keys(level, name)?
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, i))
                .collect())
        };
        let sops = if keys.sop.is_some() && keys.series.is_none() {
            index(Level::Slice, "sop_key")?
        } else {
            HashMap::new()
        };
        Ok(Resolver {
            catalog,
            key,
            keys,
            patients: index(Level::Patient, "patient_key")?,
            series: index(Level::Series, "series_key")?,
            sops,
        })
    }

    /// The catalog rows a record labels, or why it labels none.
    pub fn targets(&self, record: &Record) -> Result<Vec<Target>, String> {
        let cell = |i: usize| record.fields[i].as_str();
        let patient = match self.keys.patient {
            Some(i) => Some(self.patient_row(cell(i))?),
            None => None,
        };
        let series = match self.keys.series {
            Some(i) => Some(self.series_row(cell(i), patient)?),
            None => None,
        };
        match self.keys.level() {
            Level::Patient => Ok(vec![Target {
                row: patient.expect("patient key"),
            }]),
            Level::Series => Ok(vec![Target {
                row: series.expect("series key"),
            }]),
            Level::Slice => self.slice_rows(record, series, patient),
        }
    }

    fn patient_row(&self, id: &str) -> Result<usize, String> {
        if id.is_empty() {
            return Err("empty PatientID".into());
        }
        let k = key32(&self.key.pseudonym(IdKind::Patient, id));
        self.patients
            .get(&k)
            .copied()
            .ok_or_else(|| format!("PatientID {id:?} is not in the catalog (unknown key)"))
    }

    fn series_row(&self, uid: &str, patient: Option<usize>) -> Result<usize, String> {
        if uid.is_empty() {
            return Err("empty SeriesInstanceUID".into());
        }
        let k = key32(&self.key.pseudonym(IdKind::Series, uid));
        let row = *self
            .series
            .get(&k)
            .ok_or_else(|| format!("SeriesInstanceUID {uid:?} is not in the catalog (unknown key)"))?;
        if let Some(p) = patient {
            let owner = self
                .catalog
                .col_u32(Level::Series, "patient_row")
                .map_err(|e| e.to_string())?[row];
            if owner as usize != p {
                return Err(format!(
                    "series {uid:?} belongs to another patient than this record's PatientID"
                ));
            }
        }
        Ok(row)
    }

    fn slice_rows(
        &self,
        record: &Record,
        series: Option<usize>,
        patient: Option<usize>,
    ) -> Result<Vec<Target>, String> {
        let c = self.catalog;
        let err = |e: CatalogError| e.to_string();
        let series_range = |s: usize| -> Result<std::ops::Range<usize>, String> {
            let start = c.col_u64(Level::Series, "slice_start").map_err(err)?[s] as usize;
            let n = c.col_u32(Level::Series, "n_slices").map_err(err)?[s] as usize;
            Ok(start..start + n)
        };
        if let Some(i) = self.keys.sop {
            let uid = record.fields[i].as_str();
            let k = key32(&self.key.pseudonym(IdKind::Instance, uid));
            let row = match series {
                Some(s) => {
                    let range = series_range(s)?;
                    let sops = &c.col_keys(Level::Slice, "sop_key").map_err(err)?[range.clone()];
                    sops.iter().position(|x| *x == k).map(|p| range.start + p)
                }
                None => self.sops.get(&k).copied(),
            }
            .ok_or_else(|| {
                format!("SOPInstanceUID {uid:?} is not in the catalog (unknown key, or not in this series)")
            })?;
            if let Some(p) = patient {
                let s = c.col_u32(Level::Slice, "series_row").map_err(err)?[row] as usize;
                if c.col_u32(Level::Series, "patient_row").map_err(err)?[s] as usize != p {
                    return Err(format!("SOPInstanceUID {uid:?} belongs to another patient"));
                }
            }
            return Ok(vec![Target { row }]);
        }
        let s = series.expect("checked: instance joins need a series");
        let range = series_range(s)?;
        let text = &record.fields[self.keys.instance.expect("slice join column")];
        let (lo, hi) = parse_range(text)?;
        if self.keys.by_position {
            return self.by_position(range, lo, hi);
        }
        let numbers = &c.col_i32s_slice(range.clone()).map_err(err)?;
        let mut out = Vec::new();
        for n in lo..=hi {
            let hits: Vec<usize> = numbers
                .iter()
                .enumerate()
                .filter(|(_, &x)| x == n)
                .map(|(p, _)| p)
                .collect();
            match hits.as_slice() {
                [p] => out.push(Target { row: range.start + p }),
                [] => {
                    let (min, max) = (numbers.iter().min(), numbers.iter().max());
                    return Err(format!(
                        "InstanceNumber {n} is not in the series (out of range; it holds {} slices numbered {}..{})",
                        numbers.len(),
                        min.map_or("-".into(), |m| m.to_string()),
                        max.map_or("-".into(), |m| m.to_string())
                    ));
                }
                _ => {
                    return Err(format!(
                        "InstanceNumber {n} occurs {} times in the series: join by SOPInstanceUID",
                        hits.len()
                    ))
                }
            }
        }
        Ok(out)
    }

    /// 1-based ordinals in ascending position along the slice normal.
    fn by_position(&self, range: std::ops::Range<usize>, lo: i32, hi: i32) -> Result<Vec<Target>, String> {
        let positions = &self
            .catalog
            .col_f64(Level::Slice, "position")
            .map_err(|e| e.to_string())?[range.clone()];
        let mut order: Vec<usize> = (0..positions.len()).collect();
        order.sort_by(|a, b| positions[*a].total_cmp(&positions[*b]));
        (lo..=hi)
            .map(|k| {
                if k < 1 || k as usize > order.len() {
                    Err(format!(
                        "slice ordinal {k} is out of range: the series has {} slices (1..{})",
                        order.len(),
                        order.len()
                    ))
                } else {
                    Ok(Target {
                        row: range.start + order[k as usize - 1],
                    })
                }
            })
            .collect()
    }
}

/// `"40"`, `"40-47"`, `"40–47"` (en dash) or `"40..47"`, inclusive.
pub fn parse_range(text: &str) -> Result<(i32, i32), String> {
    let bad = || format!("{text:?} is not an instance number or range such as 40-47");
    let t = text.trim();
    let parts: Vec<&str> = if t.contains("..") {
        t.split("..").collect()
    } else {
        // A leading minus is a sign, not a range separator.
        match t[1.min(t.len())..].find(['-', '–', '—']) {
            Some(p) => {
                let p = p + 1;
                let sep_len = t[p..].chars().next().map_or(1, char::len_utf8);
                vec![&t[..p], &t[p + sep_len..]]
            }
            None => vec![t],
        }
    };
    let nums: Vec<i32> = parts
        .iter()
        .map(|p| p.trim().parse::<i32>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match nums.as_slice() {
        [n] => Ok((*n, *n)),
        [a, b] if a <= b => Ok((*a, *b)),
        [a, b] => Err(format!("range {text:?} is reversed ({a} > {b})")),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("40"), Ok((40, 40)));
        assert_eq!(parse_range("40-47"), Ok((40, 47)));
        assert_eq!(parse_range("40–47"), Ok((40, 47)));
        assert_eq!(parse_range(" 3..5 "), Ok((3, 5)));
        assert!(parse_range("47-40").is_err());
        assert!(parse_range("x").is_err());
        assert!(parse_range("").is_err());
    }
}
