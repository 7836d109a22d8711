//! `catalog split`: patient-level train/val/test splits (a patient's samples all go to one split),
//! stratified on a label, deterministic by seed, written as a manifest: the query, the catalog
//! generation and content hash, the seed, and per split the patients and the samples as runs of
//! consecutive catalog rows (a whole 200-slice series is one run, so 18 M slices stay small).

use crate::catalog::columns::Level;
use crate::catalog::query::bind::{bind, Cell};
use crate::catalog::query::eval::Links;
use crate::catalog::query::parser::Name;
use crate::catalog::query::{for_each, select, up, QueryFailure};
use crate::catalog::store::{create_h5, write_column, MappedFile};
use crate::catalog::view::Catalog;
use crate::catalog::{h5err, ioerr, CatalogError};
use crate::h5text::{read_text_attr, text_attr};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;

/// Identifies a manifest (root attribute `format`).
pub const MANIFEST_FORMAT: &str = "medtrain-manifest";
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug)]
pub struct SplitSpec {
    pub filter: String,
    /// Samples are slices or series.
    pub level: Level,
    pub splits: Vec<(String, f64)>,
    /// A patient-level column/label (its values are the strata) or a filter (patients with a
    /// matching row form one stratum, the others another).
    pub stratify: Option<String>,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SplitPart {
    pub name: String,
    pub patients: Vec<u32>,    // (patients,) catalog patient rows, ascending
    pub runs_start: Vec<u64>,  // (runs,) first catalog row (slice or series) of each run
    pub runs_length: Vec<u32>, // (runs,)
}

impl SplitPart {
    pub fn samples(&self) -> u64 {
        self.runs_length.iter().map(|&n| n as u64).sum()
    }

    /// Every sample row, in order.
    pub fn rows(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs_start
            .iter()
            .zip(&self.runs_length)
            .flat_map(|(&s, &n)| s..s + n as u64)
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestMeta {
    pub format: String,
    pub format_version: u32,
    pub query: String,
    pub level: Level,
    pub catalog: String,
    pub catalog_generation: u64,
    pub catalog_hash: String,
    pub seed: u64,
    pub ratios: Vec<(String, f64)>,
    pub stratify: Option<String>,
    /// Patients per stratum per split, for the record.
    pub strata: BTreeMap<String, Vec<u64>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub meta: ManifestMeta,
    pub splits: Vec<SplitPart>,
}

/// Patient counts per split by largest remainder: within one patient of the ratios.
pub fn allocate(n: usize, ratios: &[f64]) -> Vec<usize> {
    let total: f64 = ratios.iter().sum();
    let exact: Vec<f64> = ratios.iter().map(|r| n as f64 * r / total).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let left = n - counts.iter().sum::<usize>();
    for &i in order.iter().take(left) {
        counts[i] += 1;
    }
    counts
}

/// Stratum of every patient row (`None` when stratification is off).
fn strata(cat: &Catalog, stratify: &str, links: &Links) -> Result<Vec<String>, QueryFailure> {
    let name = Name {
        text: stratify.to_string(),
        pos: 0,
        len: stratify.len(),
    };
    let plain_name = stratify
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.@[]".contains(c));
    if plain_name {
        if let Ok(op) = bind(cat, &name) {
            if op.level == Level::Patient {
                return Ok((0..links.rows[0])
                    .map(|p| match op.cell(p) {
                        Cell::Missing => "unknown".to_string(),
                        _ => op.json(p).to_string(),
                    })
                    .collect());
            }
        }
    }
    let sel = select(cat, stratify, Level::Patient)?;
    let rows = sel.rows.expect("patient selection");
    Ok(rows
        .iter()
        .map(|&b| if b { "true" } else { "false" }.to_string())
        .collect())
}

/// Plans the split (no file written).
pub fn plan(cat: &Catalog, spec: &SplitSpec) -> Result<Manifest, QueryFailure> {
    if spec.level == Level::Patient {
        return Err(QueryFailure::Query(
            "split samples are slices or series (--level slices|series)".into(),
        ));
    }
    if spec.splits.is_empty()
        || spec.splits.iter().any(|(_, r)| !(*r >= 0.0) || !r.is_finite())
        || spec.splits.iter().all(|(_, r)| *r == 0.0)
    {
        return Err(QueryFailure::Query(
            "split ratios must be non-negative numbers, not all zero".into(),
        ));
    }
    let links = Links::new(cat)?;
    let sel = select(cat, &spec.filter, spec.level)?;
    // Samples per patient as runs of consecutive rows (rows arrive in ascending order).
    let mut runs: Vec<Vec<(u64, u32)>> = vec![Vec::new(); links.rows[0]];
    let needs_slices = spec.level == Level::Slice && sel.filter_level == Level::Slice;
    for_each(
        cat,
        &sel,
        &spec.filter,
        needs_slices,
        &links,
        |level, row, weight| {
            let patient = up(&links, level, row, Level::Patient);
            let (start, len) = match (level, spec.level) {
                // Whole series of slices: its contiguous slice rows.
                (Level::Series, Level::Slice) => (links.slice_start[row], weight as u32),
                _ => (row as u64, 1),
            };
            let list = &mut runs[patient];
            match list.last_mut() {
                Some((s, n)) if *s + *n as u64 == start => *n += len,
                _ => list.push((start, len)),
            }
        },
    )?;
    let keys = cat.col_keys(Level::Patient, "patient_key")?;
    let strata_of = match &spec.stratify {
        Some(s) => strata(cat, s, &links)?,
        None => vec!["all".to_string(); links.rows[0]],
    };
    let mut by_stratum: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (p, r) in runs.iter().enumerate() {
        if !r.is_empty() {
            by_stratum.entry(strata_of[p].clone()).or_default().push(p);
        }
    }
    let ratios: Vec<f64> = spec.splits.iter().map(|(_, r)| *r).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); ratios.len()];
    let mut table = BTreeMap::new();
    for (stratum, mut patients) in by_stratum {
        // Order by pseudonym first, so the result does not depend on catalog row order.
        patients.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        patients.shuffle(&mut rng);
        let counts = allocate(patients.len(), &ratios);
        let mut at = 0;
        for (i, &c) in counts.iter().enumerate() {
            members[i].extend(patients[at..at + c].iter().map(|&p| p as u32));
            at += c;
        }
        table.insert(stratum, counts.iter().map(|&c| c as u64).collect());
    }
    let splits = spec
        .splits
        .iter()
        .zip(members)
        .map(|((name, _), mut patients)| {
            patients.sort_unstable();
            let mut all: Vec<(u64, u32)> = patients
                .iter()
                .flat_map(|&p| runs[p as usize].iter().copied())
                .collect();
            all.sort_unstable();
            SplitPart {
                name: name.clone(),
                patients,
                runs_start: all.iter().map(|r| r.0).collect(),
                runs_length: all.iter().map(|r| r.1).collect(),
            }
        })
        .collect();
    Ok(Manifest {
        meta: ManifestMeta {
            format: MANIFEST_FORMAT.into(),
            format_version: MANIFEST_FORMAT_VERSION,
            query: spec.filter.clone(),
            level: spec.level,
            catalog: cat.dir.to_string_lossy().to_string(),
            catalog_generation: cat.state.generation,
            catalog_hash: cat.state.content_hash(),
            seed: spec.seed,
            ratios: spec.splits.clone(),
            stratify: spec.stratify.clone(),
            strata: table,
        },
        splits,
    })
}

impl Manifest {
    /// Writes the manifest atomically (temporary name, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), CatalogError> {
        let partial = path.with_extension("h5.partial");
        let h5 = h5err(&partial);
        let file = create_h5(&partial)?;
        text_attr(&file, "format", MANIFEST_FORMAT).map_err(&h5)?;
        text_attr(&file, "meta", &serde_json::to_string(&self.meta).expect("json")).map_err(&h5)?;
        text_attr(&file, "query", &self.meta.query).map_err(&h5)?;
        text_attr(&file, "catalog_hash", &self.meta.catalog_hash).map_err(&h5)?;
        for part in &self.splits {
            let g = file.create_group(&part.name).map_err(&h5)?;
            write_column(&g, "patients", &part.patients, 1).map_err(&h5)?;
            write_column(&g, "runs_start", &part.runs_start, 1).map_err(&h5)?;
            write_column(&g, "runs_length", &part.runs_length, 1).map_err(&h5)?;
        }
        file.close().map_err(&h5)?;
        crate::fsx::commit_file(&partial, path).map_err(ioerr(path))?;
        crate::fsx::write_checksum(path).map_err(ioerr(path))?;
        Ok(())
    }

    /// Reads a manifest after checking it against its checksum file (`manifest.h5.blake3`): the HDF5
    /// library is never handed a damaged manifest (on some damage it allocates gigabytes or loops).
    pub fn load(path: &Path) -> Result<Manifest, CatalogError> {
        crate::fsx::verify_checksum(path).map_err(|why| {
            CatalogError::invalid(
                path,
                format!("damaged or incomplete manifest ({why}): re-run `medtrain catalog split`"),
            )
        })?;
        let mut meta_text = String::new();
        let file = MappedFile::open(path, |f| {
            let format = read_text_attr(f, "format").unwrap_or_default();
            if format != MANIFEST_FORMAT {
                return Err(CatalogError::invalid(
                    path,
                    format!("not a medtrain manifest (format {format:?})"),
                ));
            }
            meta_text = read_text_attr(f, "meta").map_err(h5err(path))?;
            Ok(())
        })?;
        let meta: ManifestMeta = serde_json::from_str(&meta_text)
            .map_err(|e| CatalogError::invalid(path, format!("bad manifest metadata: {e}")))?;
        if meta.format_version != MANIFEST_FORMAT_VERSION {
            return Err(CatalogError::invalid(
                path,
                format!("manifest version {}; re-run the split", meta.format_version),
            ));
        }
        let splits = meta
            .ratios
            .iter()
            .map(|(name, _)| {
                Ok(SplitPart {
                    name: name.clone(),
                    patients: file.u32s(&format!("{name}/patients"))?.to_vec(),
                    runs_start: file.u64s(&format!("{name}/runs_start"))?.to_vec(),
                    runs_length: file.u32s(&format!("{name}/runs_length"))?.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, CatalogError>>()?;
        Ok(Manifest { meta, splits })
    }
}

#[cfg(test)]
mod tests {
    use super::allocate;

    #[test]
    fn largest_remainder_stays_within_one() {
        assert_eq!(allocate(10, &[0.8, 0.1, 0.1]), vec![8, 1, 1]);
        assert_eq!(allocate(7, &[0.8, 0.1, 0.1]), vec![5, 1, 1]);
        for n in 0..200 {
            let c = allocate(n, &[0.7, 0.15, 0.15]);
            assert_eq!(c.iter().sum::<usize>(), n);
            for (k, r) in [0.7, 0.15, 0.15].iter().enumerate() {
                assert!((c[k] as f64 - n as f64 * r).abs() < 1.0 + 1e-9, "{n}: {c:?}");
            }
        }
    }
}
