//! `catalog build`: shards → one catalog. Adding shards to an existing catalog copies the previous
//! generation's rows (a memory copy) and reads only the new shards; patients, series and slices
//! keep their row numbers, so label sets imported earlier stay valid for the rows they cover.

use super::columns::{ascii_bytes, level_columns, ColType, ColumnSpec, Level, SHARD_SERIES, SHARD_SLICES};
use super::state::{CatalogState, ShardRef, STATE_FILE};
use super::store::{le_bytes, open_read, MappedFile, TableWriter};
use super::{h5err, ioerr, CatalogError};
use crate::h5text::read_text_attr;
use crate::pack::format::{read_shard_header, HeaderError, SHARD_FORMAT_VERSION};
use crate::pack::index::PackIndex;
use crate::pack::shard::hash_file;
use crate::pack::tables::{check_extent, claimed_rows, TableError};
use hdf5::types::FixedAscii;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Prefix of a generation's tables file.
pub const TABLES_PREFIX: &str = "tables-";
/// Suffix of files being written; never read.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Generations kept on disk: the current one and the one before, so a reader that loaded the
/// previous `catalog.json` just before an update can still open its files.
pub const GENERATIONS_KEPT: u64 = 2;

#[derive(Debug, serde::Serialize)]
pub struct BuildReport {
    pub generation: u64,
    pub shards_added: usize,
    pub shards_already_catalogued: usize,
    pub patients: u64,
    pub series: u64,
    pub slices: u64,
    pub seconds: f64,
}

/// A shard to catalogue, with its checksum and key fingerprint.
struct ShardInput {
    path: PathBuf,
    blake3: String,
}

fn absolute(path: &Path) -> Result<PathBuf, CatalogError> {
    fs::canonicalize(path).map_err(ioerr(path))
}

/// Pack directories contribute their indexed shards; loose `.h5` files are hashed here.
fn resolve_inputs(inputs: &[PathBuf]) -> Result<(Vec<ShardInput>, Option<String>), CatalogError> {
    let mut shards = Vec::new();
    let mut fingerprint = None;
    for input in inputs {
        if input.is_dir() {
            let index = PackIndex::load(input)?.ok_or_else(|| {
                CatalogError::invalid(
                    input,
                    "is a directory without index.json: pass a pack directory or shard files",
                )
            })?;
            fingerprint.get_or_insert(index.key_fingerprint.clone());
            for entry in index.shards {
                let path = absolute(&input.join(&entry.file))?;
                shards.push(ShardInput {
                    path,
                    blake3: entry.blake3,
                });
            }
        } else {
            let path = absolute(input)?;
            let (blake3, _) = hash_file(&path).map_err(ioerr(&path))?;
            shards.push(ShardInput { path, blake3 });
        }
    }
    Ok((shards, fingerprint))
}

/// Reads one shard column of `rows` rows as raw little-endian bytes (text cells NUL-padded), after
/// checking its extent against `rows` and the file's size (`pack::tables::check_extent`).
fn read_column(
    path: &Path,
    group: &hdf5::Group,
    spec: &ColumnSpec,
    rows: usize,
    file_bytes: u64,
) -> Result<Vec<u8>, CatalogError> {
    let ds = group.dataset(spec.name).map_err(h5err(path))?;
    let width = if spec.width == 1 { 0 } else { spec.width };
    let column = format!("{}/{}", group.name().trim_start_matches('/'), spec.name);
    check_extent(&ds, &column, rows, width, spec.ty.size(), file_bytes)
        .map_err(|e| CatalogError::invalid(path, e.to_string()))?;
    macro_rules! num {
        ($t:ty) => {
            le_bytes(&ds.read_raw::<$t>().map_err(h5err(path))?).to_vec()
        };
    }
    Ok(match spec.ty {
        ColType::U8 => ds.read_raw::<u8>().map_err(h5err(path))?,
        ColType::U32 => num!(u32),
        ColType::I32 => num!(i32),
        ColType::U64 => num!(u64),
        ColType::F64 => num!(f64),
        ColType::Key32 => ds
            .read_raw::<FixedAscii<32>>()
            .map_err(h5err(path))?
            .iter()
            .flat_map(ascii_bytes)
            .collect(),
        ColType::Code16 => ds
            .read_raw::<FixedAscii<16>>()
            .map_err(h5err(path))?
            .iter()
            .flat_map(ascii_bytes)
            .collect(),
    })
}

/// The series table of one new shard, column by column, plus what the catalog derives from it.
struct ShardSeries {
    columns: Vec<Vec<u8>>, // one per SHARD_SERIES entry, rows × width × size bytes
    rows: usize,
    slices: usize,
    patient_keys: Vec<[u8; 32]>,
    first_slice: Vec<u64>,
    n_slices: Vec<u32>,
}

fn u32_at(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

fn column_index(specs: &[ColumnSpec], name: &str) -> usize {
    specs.iter().position(|s| s.name == name).expect("known column")
}

fn open_shard(path: &Path, fingerprint: &str) -> Result<hdf5::File, CatalogError> {
    let file = open_read(path)?;
    let found = shard_fingerprint(&file, path)?;
    if found != fingerprint {
        return Err(CatalogError::invalid(
            path,
            format!("made with site key {found}, but the catalog uses key {fingerprint}: catalogue packs of one site key together"),
        ));
    }
    Ok(file)
}

/// The site-key fingerprint of a shard whose root attributes this medtrain reads.
fn shard_fingerprint(file: &hdf5::File, path: &Path) -> Result<String, CatalogError> {
    read_shard_header(file).map_err(|e| match e {
        HeaderError::NotAShard(format) => {
            CatalogError::invalid(path, format!("not a medtrain shard (format {format:?})"))
        }
        HeaderError::Version(version) => CatalogError::invalid(
            path,
            format!(
                "shard format version {version}; this medtrain reads version {SHARD_FORMAT_VERSION}: \
                 repack with this version of medtrain (`medtrain pack`)"
            ),
        ),
        HeaderError::Hdf5(e) => h5err(path)(e),
    })
}

fn read_shard_series(path: &Path, fingerprint: &str) -> Result<ShardSeries, CatalogError> {
    let file = open_shard(path, fingerprint)?;
    let file_bytes = file.size();
    let damaged = |e: TableError| CatalogError::invalid(path, e.to_string());
    let group = file.group("series").map_err(h5err(path))?;
    let key = group.dataset(SHARD_SERIES[0].name).map_err(h5err(path))?;
    let rows = claimed_rows(&key, "series/series_key", file_bytes).map_err(damaged)?;
    let columns = SHARD_SERIES
        .iter()
        .map(|spec| read_column(path, &group, spec, rows, file_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let slices_group = file.group("slices").map_err(h5err(path))?;
    let index = slices_group.dataset("series_index").map_err(h5err(path))?;
    let slices = claimed_rows(&index, "slices/series_index", file_bytes).map_err(damaged)?;
    let keys = &columns[column_index(SHARD_SERIES, "patient_key")];
    let patient_keys = keys
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    let first = &columns[column_index(SHARD_SERIES, "first_slice")];
    let counts = &columns[column_index(SHARD_SERIES, "n_slices")];
    let first_slice: Vec<u64> = (0..rows).map(|i| u64_at(first, i)).collect();
    let n_slices: Vec<u32> = (0..rows).map(|i| u32_at(counts, i)).collect();
    for i in 0..rows {
        if first_slice[i] + n_slices[i] as u64 > slices as u64 {
            return Err(CatalogError::invalid(
                path,
                format!(
                    "series row {i} claims slices beyond the slice table ({slices} rows): re-pack the shard"
                ),
            ));
        }
    }
    Ok(ShardSeries {
        columns,
        rows,
        slices,
        patient_keys,
        first_slice,
        n_slices,
    })
}

/// Row numbers already used when new rows are appended.
#[derive(Clone, Copy, Default)]
struct Bases {
    series: usize,
    slices: usize,
}

/// Builds or extends the catalog in `out` with the shards of `inputs`.
pub fn build(inputs: &[PathBuf], out: &Path) -> Result<BuildReport, CatalogError> {
    let start = Instant::now();
    fs::create_dir_all(out).map_err(ioerr(out))?;
    let (inputs, pack_fingerprint) = resolve_inputs(inputs)?;
    let previous = CatalogState::load(out)?;
    let fingerprint = match (&previous, pack_fingerprint) {
        (Some(p), _) => p.key_fingerprint.clone(),
        (None, Some(f)) => f,
        (None, None) => match inputs.first() {
            Some(s) => {
                let file = open_read(&s.path)?;
                shard_fingerprint(&file, &s.path)?
            }
            None => {
                return Err(CatalogError::invalid(
                    out,
                    "no shards given and no catalog to extend",
                ))
            }
        },
    };
    let mut state = previous
        .clone()
        .unwrap_or_else(|| CatalogState::empty(&fingerprint));
    let known: HashMap<&str, &str> = state
        .shards
        .iter()
        .map(|s| (s.path.as_str(), s.blake3.as_str()))
        .collect();
    let mut new_inputs = Vec::new();
    let mut already = 0;
    for input in inputs {
        let key = input.path.to_string_lossy().to_string();
        match known.get(key.as_str()) {
            Some(h) if *h == input.blake3 => already += 1,
            Some(_) => {
                return Err(CatalogError::invalid(
                    &input.path,
                    "changed since it was catalogued (checksum differs): build a new catalog",
                ))
            }
            None if new_inputs.iter().any(|s: &ShardInput| s.path == input.path) => {}
            None => new_inputs.push(input),
        }
    }
    if new_inputs.is_empty() && previous.is_some() {
        return Ok(report(&state, 0, already, start));
    }
    let news = new_inputs
        .iter()
        .map(|s| read_shard_series(&s.path, &fingerprint))
        .collect::<Result<Vec<_>, _>>()?;
    let old = match &previous {
        Some(p) if !p.tables.is_empty() => Some(open_tables(out, p)?),
        _ => None,
    };
    // Patients keep their rows; new ones are appended in first-seen order.
    let mut patient_rows: HashMap<[u8; 32], u32> = HashMap::new();
    let mut patient_keys: Vec<[u8; 32]> = Vec::new();
    if let Some(old) = &old {
        for key in old.keys("patients/patient_key")? {
            patient_rows.insert(*key, patient_keys.len() as u32);
            patient_keys.push(*key);
        }
    }
    for shard in &news {
        for key in &shard.patient_keys {
            patient_rows.entry(*key).or_insert_with(|| {
                patient_keys.push(*key);
                (patient_keys.len() - 1) as u32
            });
        }
    }
    let old_rows = Bases {
        series: state.series as usize,
        slices: state.slices as usize,
    };
    let total = Bases {
        series: old_rows.series + news.iter().map(|s| s.rows).sum::<usize>(),
        slices: old_rows.slices + news.iter().map(|s| s.slices).sum::<usize>(),
    };
    let generation = state.generation + 1;
    let tables = format!("{TABLES_PREFIX}{generation}.h5");
    let partial = out.join(format!("{tables}{PARTIAL_SUFFIX}"));
    let attrs = [
        ("format", super::state::CATALOG_FORMAT.to_string()),
        ("format_version", super::state::CATALOG_FORMAT_VERSION.to_string()),
        ("key_fingerprint", fingerprint.clone()),
        ("generation", generation.to_string()),
    ];
    let mut writer = TableWriter::create(&partial, &attrs, |level| match level {
        Level::Patient => patient_keys.len(),
        Level::Series => total.series,
        Level::Slice => total.slices,
    })?;
    if let Some(old) = &old {
        copy_old_rows(&mut writer, old, old_rows)?;
    }
    let first_shard = state.shards.len() as u32;
    let mut base = old_rows;
    let mut shown = crate::logging::Progress::new("catalog build: shards written", news.len() as u64);
    for (k, (input, shard)) in new_inputs.iter().zip(&news).enumerate() {
        shown.inc(1);
        write_shard(
            &mut writer,
            &input.path,
            &fingerprint,
            shard,
            first_shard + k as u32,
            base,
            &patient_rows,
        )?;
        state.shards.push(ShardRef {
            path: input.path.to_string_lossy().to_string(),
            blake3: input.blake3.clone(),
            series: shard.rows as u64,
            slices: shard.slices as u64,
        });
        base.series += shard.rows;
        base.slices += shard.slices;
    }
    shown.finish();
    write_patients(&mut writer, &patient_keys, old.as_ref(), &news, &patient_rows)?;
    write_key_order(
        &mut writer,
        Level::Series,
        "series_key",
        "by_series_key",
        total.series,
    );
    write_key_order(
        &mut writer,
        Level::Patient,
        "patient_key",
        "by_patient_key",
        patient_keys.len(),
    );
    writer.finish()?;
    drop(old);
    let final_path = out.join(&tables);
    crate::fsx::commit_file(&partial, &final_path).map_err(ioerr(&final_path))?;
    state.generation = generation;
    state.tables = tables;
    state.patients = patient_keys.len() as u64;
    state.series = total.series as u64;
    state.slices = total.slices as u64;
    state.save(out)?;
    remove_old_generations(out, generation);
    Ok(report(&state, new_inputs.len(), already, start))
}

fn report(state: &CatalogState, added: usize, already: usize, start: Instant) -> BuildReport {
    BuildReport {
        generation: state.generation,
        shards_added: added,
        shards_already_catalogued: already,
        patients: state.patients,
        series: state.series,
        slices: state.slices,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Opens the tables file of a catalog state, checking its attributes.
pub fn open_tables(dir: &Path, state: &CatalogState) -> Result<MappedFile, CatalogError> {
    let path = dir.join(&state.tables);
    MappedFile::open(&path, |file| {
        let generation = read_text_attr(file, "generation").map_err(h5err(&path))?;
        if generation != state.generation.to_string() {
            return Err(CatalogError::invalid(
                &path,
                format!(
                    "holds generation {generation}, but {STATE_FILE} names generation {}",
                    state.generation
                ),
            ));
        }
        Ok(())
    })
}

fn copy_old_rows(writer: &mut TableWriter, old: &MappedFile, rows: Bases) -> Result<(), CatalogError> {
    for (level, n) in [(Level::Series, rows.series), (Level::Slice, rows.slices)] {
        for spec in level_columns(level) {
            let name = format!("{}/{}", level.group(), spec.name);
            let place = *old
                .place(&name)
                .ok_or_else(|| CatalogError::invalid(&old.path, format!("missing dataset {name}")))?;
            let bytes = old_bytes(old, &name, place.ty)?;
            writer.rows_mut(level, spec.name, 0, n).copy_from_slice(bytes);
        }
    }
    Ok(())
}

fn old_bytes<'a>(old: &'a MappedFile, name: &str, ty: ColType) -> Result<&'a [u8], CatalogError> {
    Ok(match ty {
        ColType::U8 => old.u8s(name)?,
        ColType::U32 => le_bytes(old.u32s(name)?),
        ColType::I32 => le_bytes(old.i32s(name)?),
        ColType::U64 => le_bytes(old.u64s(name)?),
        ColType::F64 => le_bytes(old.f64s(name)?),
        ColType::Key32 => le_bytes(old.keys(name)?),
        ColType::Code16 => le_bytes(old.codes(name)?),
    })
}

fn write_shard(
    writer: &mut TableWriter,
    path: &Path,
    fingerprint: &str,
    shard: &ShardSeries,
    shard_index: u32,
    base: Bases,
    patient_rows: &HashMap<[u8; 32], u32>,
) -> Result<(), CatalogError> {
    for (spec, bytes) in SHARD_SERIES.iter().zip(&shard.columns) {
        writer
            .rows_mut(Level::Series, spec.name, base.series, shard.rows)
            .copy_from_slice(bytes);
    }
    let n = shard.rows;
    let shard_col = vec![shard_index; n];
    let shard_row: Vec<u32> = (0..n as u32).collect();
    let patient_row: Vec<u32> = shard.patient_keys.iter().map(|k| patient_rows[k]).collect();
    let slice_start: Vec<u64> = shard.first_slice.iter().map(|f| base.slices as u64 + f).collect();
    let series_columns: [(&str, &[u8]); 4] = [
        ("shard", le_bytes(&shard_col)),
        ("shard_row", le_bytes(&shard_row)),
        ("patient_row", le_bytes(&patient_row)),
        ("slice_start", le_bytes(&slice_start)),
    ];
    for (name, bytes) in series_columns {
        writer
            .rows_mut(Level::Series, name, base.series, n)
            .copy_from_slice(bytes);
    }
    let file = open_shard(path, fingerprint)?;
    let group = file.group("slices").map_err(h5err(path))?;
    for spec in SHARD_SLICES {
        let bytes = read_column(path, &group, spec, shard.slices, file.size())?;
        if bytes.len() != shard.slices * spec.width * spec.ty.size() {
            return Err(CatalogError::invalid(
                path,
                format!("slices/{} has the wrong length: re-pack", spec.name),
            ));
        }
        writer
            .rows_mut(Level::Slice, spec.name, base.slices, shard.slices)
            .copy_from_slice(&bytes);
    }
    let mut series_row = vec![u32::MAX; shard.slices];
    let mut slice_index = vec![0u32; shard.slices];
    for i in 0..n {
        let first = shard.first_slice[i] as usize;
        for k in 0..shard.n_slices[i] as usize {
            series_row[first + k] = (base.series + i) as u32;
            slice_index[first + k] = k as u32;
        }
    }
    if series_row.contains(&u32::MAX) {
        return Err(CatalogError::invalid(
            path,
            "has slices that belong to no series: re-pack the shard",
        ));
    }
    writer
        .rows_mut(Level::Slice, "series_row", base.slices, shard.slices)
        .copy_from_slice(le_bytes(&series_row));
    writer
        .rows_mut(Level::Slice, "slice_index", base.slices, shard.slices)
        .copy_from_slice(le_bytes(&slice_index));
    Ok(())
}

fn write_patients(
    writer: &mut TableWriter,
    keys: &[[u8; 32]],
    old: Option<&MappedFile>,
    news: &[ShardSeries],
    patient_rows: &HashMap<[u8; 32], u32>,
) -> Result<(), CatalogError> {
    let mut n_series = vec![0u32; keys.len()];
    let mut n_slices = vec![0u64; keys.len()];
    if let Some(old) = old {
        let (s, c) = (old.u32s("patients/n_series")?, old.u64s("patients/n_slices")?);
        n_series[..s.len()].copy_from_slice(s);
        n_slices[..c.len()].copy_from_slice(c);
    }
    for shard in news {
        for (key, count) in shard.patient_keys.iter().zip(&shard.n_slices) {
            let row = patient_rows[key] as usize;
            n_series[row] += 1;
            n_slices[row] += *count as u64;
        }
    }
    let n = keys.len();
    writer
        .rows_mut(Level::Patient, "patient_key", 0, n)
        .copy_from_slice(le_bytes(keys));
    writer
        .rows_mut(Level::Patient, "n_series", 0, n)
        .copy_from_slice(le_bytes(&n_series));
    writer
        .rows_mut(Level::Patient, "n_slices", 0, n)
        .copy_from_slice(le_bytes(&n_slices));
    Ok(())
}

/// Writes the row order that sorts a key column (for binary searches on the key).
fn write_key_order(writer: &mut TableWriter, level: Level, key: &str, order: &str, rows: usize) {
    let keys: Vec<[u8; 32]> = writer
        .rows_mut(level, key, 0, rows)
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    let mut sorted: Vec<u32> = (0..rows as u32).collect();
    sorted.sort_unstable_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
    writer
        .rows_mut(level, order, 0, rows)
        .copy_from_slice(le_bytes(&sorted));
}

/// Removes table files of generations older than those kept (best effort: a leftover file is
/// only disk space).
fn remove_old_generations(dir: &Path, current: u64) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let generation = name
            .strip_prefix(TABLES_PREFIX)
            .and_then(|rest| rest.strip_suffix(".h5"))
            .and_then(|g| g.parse::<u64>().ok());
        if generation.is_some_and(|g| g + GENERATIONS_KEPT <= current) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
