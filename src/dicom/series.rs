//! Series assembly: files grouped by SeriesInstanceUID, CT/MR slices ordered by position along the
//! slice normal (never by InstanceNumber), and the volume geometry checked before any pixel is
//! decoded. 2D modalities (CR/DX/US, multi-frame objects) become one item per object, and so does a
//! series of a single CT/MR image without the geometry to place it (orientation unknown).

use super::header::ImageHeader;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a series' pixels are laid out (in a shard: the `kind` column, its dataset's shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ItemKind {
    /// CT/MR slices ordered along the slice normal: one (slices, rows, cols) volume.
    Volume = 0,
    /// Independent 2D images (CR/DX/US/other, and a lone CT/MR image without
    /// ImageOrientationPatient/ImagePositionPatient): (images, rows, cols[, samples]).
    Images = 1,
}

impl ItemKind {
    pub fn from_code(code: u8) -> Option<ItemKind> {
        match code {
            0 => Some(ItemKind::Volume),
            1 => Some(ItemKind::Images),
            _ => None,
        }
    }
}

/// Modalities whose single-frame slices form volumes.
const VOLUME_MODALITIES: &[&str] = &["CT", "MR", "PT", "NM"];
/// Two slices closer than this along the normal are at the same position (mm).
const SAME_POSITION_MM: f64 = 1e-3;
/// Direction cosines of two slices agree within this.
const ORIENTATION_TOLERANCE: f64 = 1e-4;
/// Pixel spacings of two slices agree within this fraction.
const SPACING_TOLERANCE: f64 = 1e-3;
/// A step between neighbouring slices may deviate this fraction from the median step.
const GAP_TOLERANCE: f64 = 0.1;

/// A source file whose header has been read.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub content_hash: blake3::Hash,
    pub header: ImageHeader,
}

/// One unit to pack: a volume (all slices of a CT/MR series) or one 2D object.
#[derive(Clone, Debug)]
pub struct PackItem {
    pub kind: ItemKind,
    /// Files in stored order: ascending position along the normal for volumes.
    pub files: Vec<SourceFile>,
    /// Position of each file along the slice normal, mm (0 for 2D items).
    pub positions: Vec<f64>,
    /// Median step between slice centres, mm (NaN for 2D items and single slices).
    pub slice_spacing: f64,
    /// BLAKE3 over the content hashes of the files, in a path-independent order.
    pub source_hash: String,
    /// Files dropped because the same SOP instance occurred twice at one position.
    pub duplicate_copies: usize,
}

/// Why a series cannot be packed as a volume.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum GeometryError {
    #[error("slices differ in {what}: {first} vs {other}")]
    Inconsistent {
        what: &'static str,
        first: String,
        other: String,
    },
    #[error("slice without {0}: cannot order the volume")]
    MissingGeometry(&'static str),
    #[error("ImageOrientationPatient is degenerate (row and column cosines are parallel or zero)")]
    DegenerateOrientation,
    #[error("two different slices at the same position {position:.3} mm along the normal")]
    DuplicatePosition { position: f64 },
    #[error(
        "gap in the volume: step of {step:.3} mm between {from:.3} and {to:.3} mm, expected {expected:.3} mm"
    )]
    Gap {
        from: f64,
        to: f64,
        step: f64,
        expected: f64,
    },
}

/// Groups files by series, in the order of their SeriesInstanceUID.
pub fn group_by_series(files: Vec<SourceFile>) -> Vec<Vec<SourceFile>> {
    let mut groups: BTreeMap<String, Vec<SourceFile>> = BTreeMap::new();
    for file in files {
        groups
            .entry(file.header.series_uid.clone())
            .or_default()
            .push(file);
    }
    groups.into_values().collect()
}

fn source_hash(files: &[SourceFile]) -> String {
    let mut hashes: Vec<[u8; 32]> = files.iter().map(|f| *f.content_hash.as_bytes()).collect();
    hashes.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for h in &hashes {
        hasher.update(h);
    }
    hasher.finalize().to_hex()[..32].to_string()
}

fn is_volume(files: &[SourceFile]) -> bool {
    files.iter().all(|f| {
        let h = &f.header;
        VOLUME_MODALITIES.contains(&h.modality.as_str()) && h.frames == 1 && h.samples_per_pixel == 1
    })
}

/// A series of one slice that lacks the geometry to place it in the patient (no
/// ImageOrientationPatient or ImagePositionPatient), as older CT/MR and some exports have. One
/// image needs no ordering: it is packed as a 2D item, its orientation recorded as unknown.
fn is_unplaced_single_slice(files: &[SourceFile]) -> bool {
    match files {
        [one] => one.header.image_orientation.is_none() || one.header.image_position.is_none(),
        _ => false,
    }
}

/// Turns one series into pack items: a checked volume, or one item per 2D object.
pub fn assemble(files: Vec<SourceFile>) -> Result<Vec<PackItem>, GeometryError> {
    if is_volume(&files) && !is_unplaced_single_slice(&files) {
        return assemble_volume(files).map(|item| vec![item]);
    }
    let mut files = files;
    files.sort_by(|a, b| {
        (a.header.instance_number, &a.header.sop_instance_uid)
            .cmp(&(b.header.instance_number, &b.header.sop_instance_uid))
    });
    Ok(files
        .into_iter()
        .map(|f| {
            let one = vec![f];
            PackItem {
                kind: ItemKind::Images,
                positions: vec![0.0; 1],
                slice_spacing: f64::NAN,
                source_hash: source_hash(&one),
                files: one,
                duplicate_copies: 0,
            }
        })
        .collect())
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The unit normal of an ImageOrientationPatient (row × column cosines).
pub fn slice_normal(orientation: [f64; 6]) -> Result<[f64; 3], GeometryError> {
    let n = cross(
        [orientation[0], orientation[1], orientation[2]],
        [orientation[3], orientation[4], orientation[5]],
    );
    let len = dot(n, n).sqrt();
    if !(len > 0.5) {
        return Err(GeometryError::DegenerateOrientation);
    }
    Ok([n[0] / len, n[1] / len, n[2] / len])
}

fn check_same<T: PartialEq + std::fmt::Debug>(
    what: &'static str,
    files: &[SourceFile],
    get: impl Fn(&ImageHeader) -> T,
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), GeometryError> {
    let first = get(&files[0].header);
    for f in &files[1..] {
        let other = get(&f.header);
        if !same(&first, &other) {
            return Err(GeometryError::Inconsistent {
                what,
                first: format!("{first:?}"),
                other: format!("{other:?}"),
            });
        }
    }
    Ok(())
}

fn close(a: &[f64], b: &[f64], tolerance: f64) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= tolerance * x.abs().max(y.abs()).max(1.0))
}

fn assemble_volume(files: Vec<SourceFile>) -> Result<PackItem, GeometryError> {
    check_same(
        "size (rows, columns)",
        &files,
        |h| (h.rows, h.cols),
        |a, b| a == b,
    )?;
    check_same("BitsAllocated", &files, |h| h.bits_allocated, |a, b| a == b)?;
    check_same(
        "PixelRepresentation",
        &files,
        |h| h.pixel_representation,
        |a, b| a == b,
    )?;
    let mut orientations = Vec::with_capacity(files.len());
    for f in &files {
        orientations.push(
            f.header
                .image_orientation
                .ok_or(GeometryError::MissingGeometry("ImageOrientationPatient"))?,
        );
        if f.header.image_position.is_none() {
            return Err(GeometryError::MissingGeometry("ImagePositionPatient"));
        }
    }
    check_same(
        "ImageOrientationPatient",
        &files,
        |h| h.image_orientation.unwrap_or_default(),
        |a, b| close(a, b, ORIENTATION_TOLERANCE),
    )?;
    check_same(
        "PixelSpacing",
        &files,
        |h| h.pixel_spacing.unwrap_or([f64::NAN; 2]),
        |a, b| close(a, b, SPACING_TOLERANCE) || (a[0].is_nan() && b[0].is_nan()),
    )?;
    let normal = slice_normal(orientations[0])?;
    let mut ordered: Vec<(f64, SourceFile)> = files
        .into_iter()
        .map(|f| (dot(f.header.image_position.unwrap_or_default(), normal), f))
        .collect();
    ordered.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| a.1.header.sop_instance_uid.cmp(&b.1.header.sop_instance_uid))
    });

    let mut kept: Vec<(f64, SourceFile)> = Vec::with_capacity(ordered.len());
    let mut duplicate_copies = 0;
    for (pos, file) in ordered {
        if let Some((last_pos, last)) = kept.last() {
            if (pos - last_pos).abs() < SAME_POSITION_MM {
                if last.header.sop_instance_uid == file.header.sop_instance_uid {
                    duplicate_copies += 1;
                    continue;
                }
                return Err(GeometryError::DuplicatePosition { position: pos });
            }
        }
        kept.push((pos, file));
    }
    let positions: Vec<f64> = kept.iter().map(|(p, _)| *p).collect();
    let slice_spacing = check_steps(&positions)?;
    let files: Vec<SourceFile> = kept.into_iter().map(|(_, f)| f).collect();
    Ok(PackItem {
        kind: ItemKind::Volume,
        source_hash: source_hash(&files),
        files,
        positions,
        slice_spacing,
        duplicate_copies,
    })
}

/// The median step between slices; an error if any step deviates from it (a missing slice).
fn check_steps(positions: &[f64]) -> Result<f64, GeometryError> {
    if positions.len() < 2 {
        return Ok(f64::NAN);
    }
    let steps: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    for (i, step) in steps.iter().enumerate() {
        if (step - median).abs() > GAP_TOLERANCE * median {
            return Err(GeometryError::Gap {
                from: positions[i],
                to: positions[i + 1],
                step: *step,
                expected: median,
            });
        }
    }
    Ok(median)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(uid: &str, z: f64, instance: i32) -> SourceFile {
        SourceFile {
            path: PathBuf::from(format!("{uid}.dcm")),
            content_hash: blake3::hash(uid.as_bytes()),
            header: ImageHeader {
                series_uid: "1.2.3".into(),
                sop_instance_uid: uid.into(),
                modality: "CT".into(),
                instance_number: Some(instance),
                rows: 4,
                cols: 4,
                frames: 1,
                samples_per_pixel: 1,
                bits_allocated: 16,
                image_position: Some([0.0, 0.0, z]),
                image_orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
                pixel_spacing: Some([0.7, 0.7]),
                ..Default::default()
            },
        }
    }

    #[test]
    fn orders_by_position_not_instance_number() {
        let files = vec![slice("a", 5.0, 1), slice("b", -5.0, 2), slice("c", 0.0, 3)];
        let item = assemble_volume(files).unwrap();
        let uids: Vec<_> = item
            .files
            .iter()
            .map(|f| f.header.sop_instance_uid.as_str())
            .collect();
        assert_eq!(uids, ["b", "c", "a"]);
        assert_eq!(item.positions, [-5.0, 0.0, 5.0]);
        assert_eq!(item.slice_spacing, 5.0);
    }

    #[test]
    fn oblique_normal_orders_along_the_normal() {
        // Sagittal slices: rows along +y, columns along -z, so the normal (row × column) is -x.
        let mut files = vec![slice("a", 0.0, 1), slice("b", 0.0, 2)];
        files[0].header.image_orientation = Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]);
        files[1].header.image_orientation = Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]);
        files[0].header.image_position = Some([3.0, 0.0, 0.0]);
        files[1].header.image_position = Some([1.0, 0.0, 0.0]);
        let item = assemble_volume(files).unwrap();
        assert_eq!(item.files[0].header.sop_instance_uid, "a");
        assert_eq!(item.positions, [-3.0, -1.0]);
    }

    #[test]
    fn gap_and_duplicate_are_reported() {
        let gap = vec![
            slice("a", 0.0, 1),
            slice("b", 1.0, 2),
            slice("c", 3.0, 3),
            slice("d", 4.0, 4),
        ];
        assert!(matches!(assemble_volume(gap), Err(GeometryError::Gap { .. })));
        let dup = vec![slice("a", 0.0, 1), slice("b", 0.0, 2)];
        assert!(matches!(
            assemble_volume(dup),
            Err(GeometryError::DuplicatePosition { .. })
        ));
        let copy = vec![slice("a", 0.0, 1), slice("a", 0.0, 1), slice("b", 1.0, 2)];
        assert_eq!(assemble_volume(copy).unwrap().duplicate_copies, 1);
    }

    #[test]
    fn a_single_slice_without_orientation_is_a_2d_item() {
        let mut one = slice("a", 0.0, 1);
        one.header.image_orientation = None;
        let items = assemble(vec![one]).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].kind, ItemKind::Images);
        assert_eq!(items[0].positions, [0.0]);
        assert!(items[0].slice_spacing.is_nan());
        // Several slices without it still cannot be ordered.
        let mut three = vec![slice("a", 0.0, 1), slice("b", 1.0, 2), slice("c", 2.0, 3)];
        for f in &mut three {
            f.header.image_orientation = None;
        }
        assert_eq!(
            assemble(three).unwrap_err(),
            GeometryError::MissingGeometry("ImageOrientationPatient")
        );
        // A single slice with its geometry stays a (one-slice) volume.
        let items = assemble(vec![slice("a", 0.0, 1)]).unwrap();
        assert_eq!(items[0].kind, ItemKind::Volume);
    }

    #[test]
    fn inconsistent_size_is_reported() {
        let mut files = vec![slice("a", 0.0, 1), slice("b", 1.0, 2)];
        files[1].header.rows = 8;
        assert!(matches!(
            assemble_volume(files),
            Err(GeometryError::Inconsistent { .. })
        ));
    }
}
