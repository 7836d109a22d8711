//! The catalog's columns: those copied from every shard (see `pack/tables.rs`, the single
//! definition of shard columns) plus those the catalog adds to join the three levels.

use hdf5::types::FixedAscii;

/// The three row kinds of a catalog, coarse to fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Patient = 0,
    Series = 1,
    Slice = 2,
}

impl Level {
    pub fn group(self) -> &'static str {
        match self {
            Level::Patient => "patients",
            Level::Series => "series",
            Level::Slice => "slices",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "patient" | "patients" => Some(Level::Patient),
            "series" => Some(Level::Series),
            "slice" | "slices" => Some(Level::Slice),
            _ => None,
        }
    }
}

/// Storage type of a column cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    U8,
    U32,
    I32,
    U64,
    F64,
    /// 32-byte NUL-padded ASCII (pseudonyms, hashes, dataset paths); h5py reads `S32`.
    Key32,
    /// 16-byte NUL-padded ASCII (codes such as modality); h5py reads `S16`.
    Code16,
}

impl ColType {
    pub fn size(self) -> usize {
        match self {
            ColType::U8 => 1,
            ColType::U32 | ColType::I32 => 4,
            ColType::U64 | ColType::F64 => 8,
            ColType::Key32 => 32,
            ColType::Code16 => 16,
        }
    }

    pub fn is_text(self) -> bool {
        matches!(self, ColType::Key32 | ColType::Code16)
    }
}

/// One column: its dataset name under the level's group, type and cells per row.
#[derive(Clone, Copy, Debug)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub ty: ColType,
    /// Cells per row: 1 for scalars, 2/3/6 for vectors (stored as an (n, width) dataset).
    pub width: usize,
}

const fn col(name: &'static str, ty: ColType, width: usize) -> ColumnSpec {
    ColumnSpec { name, ty, width }
}

use ColType::*;

/// `series/` columns copied verbatim from the shards (same names and types as `pack/tables.rs`).
pub const SHARD_SERIES: &[ColumnSpec] = &[
    col("series_key", Key32, 1),
    col("study_key", Key32, 1),
    col("patient_key", Key32, 1),
    col("modality", Code16, 1),
    col("kind", U8, 1),
    col("study_day", I32, 1),
    col("n_slices", U32, 1),
    col("rows", U32, 1),
    col("cols", U32, 1),
    col("samples_per_pixel", U8, 1),
    col("dtype", Code16, 1),
    col("pixel_spacing", F64, 2),
    col("slice_spacing", F64, 1),
    col("slice_thickness", F64, 1),
    col("orientation", F64, 6),
    col("origin", F64, 3),
    col("photometric", Code16, 1),
    col("transform", Code16, 1),
    col("rescale_slope", F64, 1),
    col("rescale_intercept", F64, 1),
    col("window_center", F64, 1),
    col("window_width", F64, 1),
    col("body_part", Code16, 1),
    col("convolution_kernel", Code16, 1),
    col("dataset", Key32, 1),
    col("data_offset", U64, 1),
    col("data_length", U64, 1),
    col("first_slice", U64, 1),
    col("source_hash", Key32, 1),
    col("n_clamped", U64, 1),
    col("n_padding", U64, 1),
    col("voi_function", Code16, 1),
    col("patient_orientation", Code16, 1),
    col("burned_in_annotation", U8, 1),
    col("frame_of_reference_key", Key32, 1),
    col("modality_lut_first", F64, 1),
    col("modality_lut_entries", U32, 1),
    col("voi_lut_first", F64, 1),
    col("voi_lut_entries", U32, 1),
];

/// `series/` columns the catalog adds.
pub const CATALOG_SERIES: &[ColumnSpec] = &[
    // Index of the shard in `catalog.json`'s shard list.
    col("shard", U32, 1),
    // Row of the series inside its shard's `series/` table.
    col("shard_row", U32, 1),
    col("patient_row", U32, 1),
    // First row of the series in the catalog's `slices/` (its slices are contiguous).
    col("slice_start", U64, 1),
    // Series rows ordered by series_key: `series_key = '...'` is a binary search.
    col("by_series_key", U32, 1),
];

/// `slices/` columns copied verbatim from the shards.
pub const SHARD_SLICES: &[ColumnSpec] = &[
    col("series_index", U32, 1),
    col("position", F64, 1),
    col("image_position", F64, 3),
    col("thickness", F64, 1),
    col("sop_key", Key32, 1),
    col("instance_number", I32, 1),
    col("frame", U32, 1),
];

/// `slices/` columns the catalog adds.
pub const CATALOG_SLICES: &[ColumnSpec] = &[
    col("series_row", U32, 1),
    // 0-based place of the slice in its series' stored order (ascending position for volumes).
    col("slice_index", U32, 1),
];

/// `patients/` columns (all computed by the catalog).
pub const PATIENTS: &[ColumnSpec] = &[
    col("patient_key", Key32, 1),
    col("n_series", U32, 1),
    col("n_slices", U64, 1),
    // Patient rows ordered by patient_key.
    col("by_patient_key", U32, 1),
];

/// Every column of a level, in storage order.
pub fn level_columns(level: Level) -> Vec<ColumnSpec> {
    match level {
        Level::Patient => PATIENTS.to_vec(),
        Level::Series => [SHARD_SERIES, CATALOG_SERIES].concat(),
        Level::Slice => [SHARD_SLICES, CATALOG_SLICES].concat(),
    }
}

/// Text of a NUL-padded cell.
pub fn cell_text(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or("")
}

/// A NUL-padded cell of `N` bytes holding `text` (cut to `N`).
pub fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut cell = [0u8; N];
    let n = text.len().min(N);
    cell[..n].copy_from_slice(&text.as_bytes()[..n]);
    cell
}

/// The raw bytes of a fixed ASCII HDF5 cell, NUL-padded.
pub fn ascii_bytes<const N: usize>(cell: &FixedAscii<N>) -> [u8; N] {
    padded::<N>(cell.as_str())
}
