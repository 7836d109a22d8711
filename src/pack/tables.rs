//! The per-series and per-slice tables of a shard, stored column by column as HDF5 datasets
//! (`series/<column>`, `slices/<column>`), so that h5py/pandas users and the catalog read only the
//! columns they need. This file is the single definition of those columns.

use hdf5::types::FixedAscii;
use hdf5::{Group, H5Type};

/// Fixed-length ASCII cell for pseudonyms (hex) and short codes; h5py reads them as `S32`/`S16`.
pub type Key32 = FixedAscii<32>;
pub type Code16 = FixedAscii<16>;

use crate::dicom::series::ItemKind;

/// Presentation attributes of a series (its first object), recorded so that training decides the
/// intensity pipeline from the pack alone. LUT tables themselves are datasets of the shard
/// ([`lut_dataset`]); the table records their first mapped value and entry count (0: no table).
#[derive(Clone, Debug, PartialEq)]
pub struct Presentation {
    pub voi_function: String,           // VOILUTFunction: LINEAR, LINEAR_EXACT, SIGMOID
    pub patient_orientation: String,    // PatientOrientation, e.g. "P\\F" (empty if absent)
    pub burned_in_annotation: u8,       // 0: NO, 1: YES, 2: absent
    pub frame_of_reference_key: String, // HMAC(FrameOfReferenceUID) (empty if absent)
    pub modality_lut_first: f64,        // first mapped stored value of the Modality LUT (NaN: none)
    pub modality_lut_entries: u32,      // entries of the Modality LUT (0: none)
    pub voi_lut_first: f64,             // first mapped value of the first VOI LUT (NaN: none)
    pub voi_lut_entries: u32,           // entries of the first VOI LUT (0: none)
    /// Ultrasound: the tissue region the pixels were cropped to at pack time, as columns and rows of
    /// the source image (x0, y0, x1, y1, inclusive). Column `crop`; `NO_CROP` in every entry: none.
    pub crop: Option<[u32; 4]>,
}

/// `crop` column entries of a series stored uncropped.
pub const NO_CROP: u32 = u32::MAX;

impl Default for Presentation {
    fn default() -> Self {
        Presentation {
            voi_function: "LINEAR".into(),
            patient_orientation: String::new(),
            burned_in_annotation: 2,
            frame_of_reference_key: String::new(),
            modality_lut_first: f64::NAN,
            modality_lut_entries: 0,
            voi_lut_first: f64::NAN,
            voi_lut_entries: 0,
            crop: None,
        }
    }
}

/// Group of the LUT datasets (f64, one value per entry).
pub const LUTS_GROUP: &str = "luts";

/// Dataset of a series' LUT (`which`: "modality" or "voi") beside its pixel dataset `dataset`.
pub fn lut_dataset(dataset: &str, which: &str) -> String {
    let name = dataset.rsplit('/').next().unwrap_or(dataset);
    format!("{LUTS_GROUP}/{name}_{which}")
}

/// One row of `series/`: everything about a packed series except per-slice values.
///
/// Unknown orientation: a 2D item whose source has no ImageOrientationPatient (radiographs, a lone
/// CT/MR image from an old archive) records all six cosines as NaN. A NaN cosine is never a real
/// value, so readers test `orientation[0].is_nan()` and treat such a series as not placed in the
/// patient frame: pixels are used as stored, nothing is mapped to patient coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesRecord {
    pub series_key: String,  // HMAC(SeriesInstanceUID)
    pub study_key: String,   // HMAC(StudyInstanceUID)
    pub patient_key: String, // HMAC(PatientID)
    pub modality: String,    // CT, MR, CR, DX, US, ...
    pub kind: ItemKind,
    pub study_day: i32, // days from the patient's keyed reference date (i32::MIN when unknown)
    pub n_slices: u32,  // slices (volume) or images/frames (2D items)
    pub rows: u32,
    pub cols: u32,
    pub samples_per_pixel: u8,
    pub dtype: String,              // "i16" (CT, HU), "u16", "u8", ...
    pub pixel_spacing: [f64; 2],    // mm between rows, between columns (NaN if unknown)
    pub slice_spacing: f64,         // mm between slice centres along the normal (NaN for 2D)
    pub slice_thickness: f64,       // nominal SliceThickness, mm (NaN if absent)
    pub orientation: [f64; 6],      // ImageOrientationPatient (row, column cosines); NaN ×6: unknown
    pub origin: [f64; 3],           // ImagePositionPatient of the first stored slice
    pub photometric: String,        // as stored: MONOCHROME1/2, RGB (YBR decoded to RGB), ...
    pub transform: String,          // what was applied to stored values: "hu-linear", "none", ...
    pub rescale_slope: f64,         // modality rescale applied (1 when none)
    pub rescale_intercept: f64,     // (0 when none)
    pub window_center: f64,         // first VOI window of the series (NaN if none)
    pub window_width: f64,          // (NaN if none)
    pub body_part: String,          // BodyPartExamined (coded value, not free text)
    pub convolution_kernel: String, // CT reconstruction kernel
    pub dataset: String,            // path of the pixel dataset in this shard
    pub data_offset: u64,           // byte offset of the contiguous pixel data in the file
    pub data_length: u64,           // bytes of pixel data
    pub first_slice: u64,           // first row of this series in `slices/`
    pub source_hash: String,        // BLAKE3 over the source files (idempotent re-packing)
    pub n_clamped: u64,             // voxels clamped to the int16 range
    pub n_padding: u64,             // padding voxels mapped to the padding HU
    pub presentation: Presentation,
}

/// One row of `slices/`: a slice of a volume or one 2D image/frame, in stored order.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceRecord {
    pub series_index: u32,        // row in `series/`
    pub position: f64,            // mm along the slice normal (0 for 2D items)
    pub image_position: [f64; 3], // ImagePositionPatient (NaN if absent)
    pub thickness: f64,           // SliceThickness of this slice, mm (NaN if absent)
    pub sop_key: String,          // HMAC(SOPInstanceUID)
    pub instance_number: i32,     // InstanceNumber as recorded (i32::MIN when absent)
    pub frame: u32,               // frame within the source object (0 for single-frame)
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("HDF5 table {column}: {source}")]
    Hdf5 { column: String, source: hdf5::Error },
    #[error("table column {column} has {found} rows, expected {expected}")]
    Length {
        column: String,
        expected: usize,
        found: usize,
    },
    #[error("table column {column}: invalid value {value}")]
    Value { column: String, value: String },
    #[error(
        "table column {column} has shape {found:?}, expected {expected:?} ({bytes} bytes in a file of \
         {file_bytes}): the shard is damaged; restore it from the archive or re-pack the series"
    )]
    Extent {
        column: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        bytes: u128,
        file_bytes: u64,
    },
    #[error(
        "table column {column} stores {found_element}-byte values in {storage} bytes, expected \
         {element}-byte values in {bytes} bytes: the shard is damaged; restore it from the archive or \
         re-pack the series"
    )]
    Storage {
        column: String,
        element: usize,
        found_element: usize,
        bytes: u128,
        storage: u64,
    },
}

/// The number of bytes of the file holding `group`: no table of it can be larger.
pub fn file_bytes(group: &Group) -> Result<u64, TableError> {
    let file = group.file().map_err(|source| TableError::Hdf5 {
        column: group.name(),
        source,
    })?;
    Ok(file.size())
}

fn put<T: H5Type>(group: &Group, name: &str, data: &[T], width: usize) -> Result<(), TableError> {
    let wrap = |source| TableError::Hdf5 {
        column: format!("{}/{name}", group.name()),
        source,
    };
    let rows = if width == 0 {
        data.len()
    } else {
        data.len() / width
    };
    let ds = if width == 0 {
        group.new_dataset::<T>().shape(rows).create(name).map_err(wrap)?
    } else {
        group
            .new_dataset::<T>()
            .shape((rows, width))
            .create(name)
            .map_err(wrap)?
    };
    if !data.is_empty() {
        ds.write_raw(data).map_err(wrap)?;
    }
    Ok(())
}

/// Refuses a column whose shape is not `rows` × `width` (0: a 1-D column) or whose bytes (`element`
/// bytes each) the file of `file_bytes` cannot hold, before any of it is read: the HDF5 library would
/// allocate whatever a damaged extent claims, and the process abort.
pub fn check_extent(
    ds: &hdf5::Dataset,
    column: &str,
    rows: usize,
    width: usize,
    element: usize,
    file_bytes: u64,
) -> Result<(), TableError> {
    let expected = if width == 0 { vec![rows] } else { vec![rows, width] };
    let found = ds.shape();
    let bytes = found
        .iter()
        .fold(element as u128, |n, &d| n.saturating_mul(d as u128));
    if found != expected || bytes > file_bytes as u128 {
        return Err(TableError::Extent {
            column: column.to_string(),
            expected,
            found,
            bytes,
            file_bytes,
        });
    }
    // The stored element size and the storage the layout message claims, from the metadata alone: a
    // damaged datatype or layout size made libhdf5 allocate gigabytes for a column of a few bytes
    // (fuzz hdf5_shard, campaign of 2026-12-06).
    let found_element = ds.dtype().map(|t| t.size()).unwrap_or(0);
    let storage = ds.storage_size();
    if found_element != element || u128::from(storage) != bytes {
        return Err(TableError::Storage {
            column: column.to_string(),
            element,
            found_element,
            bytes,
            storage,
        });
    }
    Ok(())
}

/// The number of rows a column claims (its first dimension), refused when its bytes alone exceed the
/// file: the other columns of the table are then checked against it.
pub fn claimed_rows(ds: &hdf5::Dataset, column: &str, file_bytes: u64) -> Result<usize, TableError> {
    let rows = ds.shape().first().copied().unwrap_or(0);
    let element = ds.dtype().map(|t| t.size()).unwrap_or(1).max(1);
    check_extent(ds, column, rows, 0, element, file_bytes).map(|()| rows)
}

/// Reads a column of `rows` rows of `width` values (0: a 1-D column). Its extent is checked against
/// `rows` and against the file's size before anything is read: a damaged extent (any number the file
/// cannot hold) would otherwise make the HDF5 library allocate it, and the process abort.
fn get<T: H5Type>(
    group: &Group,
    name: &str,
    rows: usize,
    width: usize,
    limit: u64,
) -> Result<Vec<T>, TableError> {
    let column = format!("{}/{name}", group.name());
    let ds = group.dataset(name).map_err(|source| TableError::Hdf5 {
        column: column.clone(),
        source,
    })?;
    check_extent(&ds, &column, rows, width, std::mem::size_of::<T>(), limit)?;
    let data: Vec<T> = ds.read_raw().map_err(|source| TableError::Hdf5 {
        column: column.clone(),
        source,
    })?;
    let expected = rows * width.max(1);
    if data.len() != expected {
        return Err(TableError::Length {
            column,
            expected,
            found: data.len(),
        });
    }
    Ok(data)
}

fn ascii<const N: usize>(column: &str, value: &str) -> Result<FixedAscii<N>, TableError> {
    // Values longer than the cell are cut rather than refused: codes are informative only.
    let cut: String = value
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .take(N)
        .collect();
    FixedAscii::<N>::from_ascii(cut.as_bytes()).map_err(|_| TableError::Value {
        column: column.to_string(),
        value: value.to_string(),
    })
}

fn text<const N: usize>(cell: &FixedAscii<N>) -> String {
    cell.as_str().to_string()
}

macro_rules! column {
    ($rows:expr, |$r:ident| $e:expr) => {
        $rows.iter().map(|$r| $e).collect::<Vec<_>>()
    };
}

fn ascii_column<const N: usize, R>(
    rows: &[R],
    name: &str,
    f: impl Fn(&R) -> &str,
) -> Result<Vec<FixedAscii<N>>, TableError> {
    rows.iter().map(|r| ascii::<N>(name, f(r))).collect()
}

/// Writes `series/` and `slices/` under `root` (a shard file or group).
pub fn write_tables(root: &Group, series: &[SeriesRecord], slices: &[SliceRecord]) -> Result<(), TableError> {
    let wrap = |column: &'static str| {
        move |source| TableError::Hdf5 {
            column: column.to_string(),
            source,
        }
    };
    let g = root.create_group("series").map_err(wrap("series"))?;
    put(
        &g,
        "series_key",
        &ascii_column::<32, _>(series, "series_key", |r| &r.series_key)?,
        0,
    )?;
    put(
        &g,
        "study_key",
        &ascii_column::<32, _>(series, "study_key", |r| &r.study_key)?,
        0,
    )?;
    put(
        &g,
        "patient_key",
        &ascii_column::<32, _>(series, "patient_key", |r| &r.patient_key)?,
        0,
    )?;
    put(
        &g,
        "modality",
        &ascii_column::<16, _>(series, "modality", |r| &r.modality)?,
        0,
    )?;
    put(&g, "kind", &column!(series, |r| r.kind as u8), 0)?;
    put(&g, "study_day", &column!(series, |r| r.study_day), 0)?;
    put(&g, "n_slices", &column!(series, |r| r.n_slices), 0)?;
    put(&g, "rows", &column!(series, |r| r.rows), 0)?;
    put(&g, "cols", &column!(series, |r| r.cols), 0)?;
    put(
        &g,
        "samples_per_pixel",
        &column!(series, |r| r.samples_per_pixel),
        0,
    )?;
    put(
        &g,
        "dtype",
        &ascii_column::<16, _>(series, "dtype", |r| &r.dtype)?,
        0,
    )?;
    put(
        &g,
        "pixel_spacing",
        &series.iter().flat_map(|r| r.pixel_spacing).collect::<Vec<_>>(),
        2,
    )?;
    put(&g, "slice_spacing", &column!(series, |r| r.slice_spacing), 0)?;
    put(&g, "slice_thickness", &column!(series, |r| r.slice_thickness), 0)?;
    put(
        &g,
        "orientation",
        &series.iter().flat_map(|r| r.orientation).collect::<Vec<_>>(),
        6,
    )?;
    put(
        &g,
        "origin",
        &series.iter().flat_map(|r| r.origin).collect::<Vec<_>>(),
        3,
    )?;
    put(
        &g,
        "photometric",
        &ascii_column::<16, _>(series, "photometric", |r| &r.photometric)?,
        0,
    )?;
    put(
        &g,
        "transform",
        &ascii_column::<16, _>(series, "transform", |r| &r.transform)?,
        0,
    )?;
    put(&g, "rescale_slope", &column!(series, |r| r.rescale_slope), 0)?;
    put(
        &g,
        "rescale_intercept",
        &column!(series, |r| r.rescale_intercept),
        0,
    )?;
    put(&g, "window_center", &column!(series, |r| r.window_center), 0)?;
    put(&g, "window_width", &column!(series, |r| r.window_width), 0)?;
    put(
        &g,
        "body_part",
        &ascii_column::<16, _>(series, "body_part", |r| &r.body_part)?,
        0,
    )?;
    put(
        &g,
        "convolution_kernel",
        &ascii_column::<16, _>(series, "convolution_kernel", |r| &r.convolution_kernel)?,
        0,
    )?;
    put(
        &g,
        "dataset",
        &ascii_column::<32, _>(series, "dataset", |r| &r.dataset)?,
        0,
    )?;
    put(&g, "data_offset", &column!(series, |r| r.data_offset), 0)?;
    put(&g, "data_length", &column!(series, |r| r.data_length), 0)?;
    put(&g, "first_slice", &column!(series, |r| r.first_slice), 0)?;
    put(
        &g,
        "source_hash",
        &ascii_column::<32, _>(series, "source_hash", |r| &r.source_hash)?,
        0,
    )?;
    put(&g, "n_clamped", &column!(series, |r| r.n_clamped), 0)?;
    put(&g, "n_padding", &column!(series, |r| r.n_padding), 0)?;
    put(
        &g,
        "voi_function",
        &ascii_column::<16, _>(series, "voi_function", |r| &r.presentation.voi_function)?,
        0,
    )?;
    put(
        &g,
        "patient_orientation",
        &ascii_column::<16, _>(series, "patient_orientation", |r| {
            &r.presentation.patient_orientation
        })?,
        0,
    )?;
    put(
        &g,
        "burned_in_annotation",
        &column!(series, |r| r.presentation.burned_in_annotation),
        0,
    )?;
    put(
        &g,
        "crop",
        &series
            .iter()
            .flat_map(|r| r.presentation.crop.unwrap_or([NO_CROP; 4]))
            .collect::<Vec<_>>(),
        4,
    )?;
    put(
        &g,
        "frame_of_reference_key",
        &ascii_column::<32, _>(series, "frame_of_reference_key", |r| {
            &r.presentation.frame_of_reference_key
        })?,
        0,
    )?;
    put(
        &g,
        "modality_lut_first",
        &column!(series, |r| r.presentation.modality_lut_first),
        0,
    )?;
    put(
        &g,
        "modality_lut_entries",
        &column!(series, |r| r.presentation.modality_lut_entries),
        0,
    )?;
    put(
        &g,
        "voi_lut_first",
        &column!(series, |r| r.presentation.voi_lut_first),
        0,
    )?;
    put(
        &g,
        "voi_lut_entries",
        &column!(series, |r| r.presentation.voi_lut_entries),
        0,
    )?;

    let g = root.create_group("slices").map_err(wrap("slices"))?;
    put(&g, "series_index", &column!(slices, |r| r.series_index), 0)?;
    put(&g, "position", &column!(slices, |r| r.position), 0)?;
    put(
        &g,
        "image_position",
        &slices.iter().flat_map(|r| r.image_position).collect::<Vec<_>>(),
        3,
    )?;
    put(&g, "thickness", &column!(slices, |r| r.thickness), 0)?;
    put(
        &g,
        "sop_key",
        &ascii_column::<32, _>(slices, "sop_key", |r| &r.sop_key)?,
        0,
    )?;
    put(&g, "instance_number", &column!(slices, |r| r.instance_number), 0)?;
    put(&g, "frame", &column!(slices, |r| r.frame), 0)?;
    Ok(())
}

fn rows_of(group: &Group, name: &str) -> Result<usize, TableError> {
    let ds = group.dataset(name).map_err(|source| TableError::Hdf5 {
        column: format!("{}/{name}", group.name()),
        source,
    })?;
    Ok(ds.shape().first().copied().unwrap_or(0))
}

fn fixed<const N: usize>(v: &[f64], i: usize) -> [f64; N] {
    std::array::from_fn(|k| v[i * N + k])
}

/// Reads `series/` under `root`.
pub fn read_series(root: &Group) -> Result<Vec<SeriesRecord>, TableError> {
    let g = root.group("series").map_err(|source| TableError::Hdf5 {
        column: "series".into(),
        source,
    })?;
    let n = rows_of(&g, "series_key")?;
    let limit = file_bytes(&g)?;
    let s32 = |name| get::<Key32>(&g, name, n, 0, limit);
    let s16 = |name| get::<Code16>(&g, name, n, 0, limit);
    let f64s = |name, w| get::<f64>(&g, name, n, w, limit);
    let u64s = |name| get::<u64>(&g, name, n, 0, limit);
    let u32s = |name| get::<u32>(&g, name, n, 0, limit);
    let (series_key, study_key, patient_key) = (s32("series_key")?, s32("study_key")?, s32("patient_key")?);
    let (modality, dtype, photometric, transform) = (
        s16("modality")?,
        s16("dtype")?,
        s16("photometric")?,
        s16("transform")?,
    );
    let (body_part, kernel, dataset, source_hash) = (
        s16("body_part")?,
        s16("convolution_kernel")?,
        s32("dataset")?,
        s32("source_hash")?,
    );
    let kind = get::<u8>(&g, "kind", n, 0, limit)?;
    let study_day = get::<i32>(&g, "study_day", n, 0, limit)?;
    let (n_slices, rows, cols) = (u32s("n_slices")?, u32s("rows")?, u32s("cols")?);
    let spp = get::<u8>(&g, "samples_per_pixel", n, 0, limit)?;
    let (spacing, orientation, origin) = (
        f64s("pixel_spacing", 2)?,
        f64s("orientation", 6)?,
        f64s("origin", 3)?,
    );
    let (slice_spacing, thickness) = (f64s("slice_spacing", 0)?, f64s("slice_thickness", 0)?);
    let (slope, intercept) = (f64s("rescale_slope", 0)?, f64s("rescale_intercept", 0)?);
    let (wc, ww) = (f64s("window_center", 0)?, f64s("window_width", 0)?);
    let (offset, length, first) = (u64s("data_offset")?, u64s("data_length")?, u64s("first_slice")?);
    let (clamped, padding) = (u64s("n_clamped")?, u64s("n_padding")?);
    let (voi_function, patient_orientation) = (s16("voi_function")?, s16("patient_orientation")?);
    let burned_in = get::<u8>(&g, "burned_in_annotation", n, 0, limit)?;
    let crop = get::<u32>(&g, "crop", n, 4, limit)?;
    let frame_of_reference = s32("frame_of_reference_key")?;
    let (mlut_first, mlut_entries) = (f64s("modality_lut_first", 0)?, u32s("modality_lut_entries")?);
    let (vlut_first, vlut_entries) = (f64s("voi_lut_first", 0)?, u32s("voi_lut_entries")?);
    (0..n)
        .map(|i| {
            Ok(SeriesRecord {
                series_key: text(&series_key[i]),
                study_key: text(&study_key[i]),
                patient_key: text(&patient_key[i]),
                modality: text(&modality[i]),
                kind: ItemKind::from_code(kind[i]).ok_or_else(|| TableError::Value {
                    column: "series/kind".into(),
                    value: kind[i].to_string(),
                })?,
                study_day: study_day[i],
                n_slices: n_slices[i],
                rows: rows[i],
                cols: cols[i],
                samples_per_pixel: spp[i],
                dtype: text(&dtype[i]),
                pixel_spacing: fixed::<2>(&spacing, i),
                slice_spacing: slice_spacing[i],
                slice_thickness: thickness[i],
                orientation: fixed::<6>(&orientation, i),
                origin: fixed::<3>(&origin, i),
                photometric: text(&photometric[i]),
                transform: text(&transform[i]),
                rescale_slope: slope[i],
                rescale_intercept: intercept[i],
                window_center: wc[i],
                window_width: ww[i],
                body_part: text(&body_part[i]),
                convolution_kernel: text(&kernel[i]),
                dataset: text(&dataset[i]),
                data_offset: offset[i],
                data_length: length[i],
                first_slice: first[i],
                source_hash: text(&source_hash[i]),
                n_clamped: clamped[i],
                n_padding: padding[i],
                presentation: Presentation {
                    voi_function: text(&voi_function[i]),
                    patient_orientation: text(&patient_orientation[i]),
                    burned_in_annotation: burned_in[i],
                    frame_of_reference_key: text(&frame_of_reference[i]),
                    modality_lut_first: mlut_first[i],
                    modality_lut_entries: mlut_entries[i],
                    voi_lut_first: vlut_first[i],
                    voi_lut_entries: vlut_entries[i],
                    crop: Some(std::array::from_fn(|k| crop[i * 4 + k])).filter(|c| *c != [NO_CROP; 4]),
                },
            })
        })
        .collect()
}

/// Reads `slices/` under `root`.
pub fn read_slices(root: &Group) -> Result<Vec<SliceRecord>, TableError> {
    let g = root.group("slices").map_err(|source| TableError::Hdf5 {
        column: "slices".into(),
        source,
    })?;
    let n = rows_of(&g, "series_index")?;
    let limit = file_bytes(&g)?;
    let series_index = get::<u32>(&g, "series_index", n, 0, limit)?;
    let position = get::<f64>(&g, "position", n, 0, limit)?;
    let ipp = get::<f64>(&g, "image_position", n, 3, limit)?;
    let thickness = get::<f64>(&g, "thickness", n, 0, limit)?;
    let sop = get::<Key32>(&g, "sop_key", n, 0, limit)?;
    let instance = get::<i32>(&g, "instance_number", n, 0, limit)?;
    let frame = get::<u32>(&g, "frame", n, 0, limit)?;
    Ok((0..n)
        .map(|i| SliceRecord {
            series_index: series_index[i],
            position: position[i],
            image_position: fixed::<3>(&ipp, i),
            thickness: thickness[i],
            sop_key: text(&sop[i]),
            instance_number: instance[i],
            frame: frame[i],
        })
        .collect())
}
