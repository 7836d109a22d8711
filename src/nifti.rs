//! NIfTI-1 and NIfTI-2 volumes (`.nii`, `.nii.gz`): the header fields a label map needs (grid, data
//! type, scaling, sform/qform), the voxels, and a writer of label maps (the phantom's masks).
//!
//! Written here rather than taken from the `nifti` crate: that crate's qform path panics on a
//! negative pixdim or a bad qfac (user input must give an error, not a panic), its writer needs
//! `ndarray`, and its affines need `nalgebra`; the header is a fixed layout of 348 (or 540) bytes.
//!
//! World coordinates are NIfTI's RAS+ (x to the left-to-Right, y Posterior-to-Anterior, z up);
//! `affine_lps` gives DICOM's LPS+ (x and y negated), the frame the pack's geometry is in.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Largest decompressed file read (a label map of 2 GiB is far beyond any CT series).
pub const MAX_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Where a volume's voxel centres lie: voxel (i, j, k) is at `affine · (i, j, k, 1)` in RAS+ mm.
#[derive(Clone, Debug, PartialEq)]
pub struct Nifti {
    /// Voxels along i, j, k (the fourth and later dimensions must be 1).
    pub dim: [usize; 3],
    /// Rows of the 3×4 voxel-to-RAS matrix.
    pub affine: [[f64; 4]; 3],
    /// Which transform gave `affine`: "sform" or "qform".
    pub transform: &'static str,
    /// Voxel values after the header's scaling (scl_slope, scl_inter), i fastest, then j, then k.
    pub values: Vec<f64>,
    /// NIfTI datatype code of the stored values.
    pub datatype: i16,
}

impl Nifti {
    /// The voxel-to-LPS matrix (DICOM's patient frame): RAS with x and y negated.
    pub fn affine_lps(&self) -> [[f64; 4]; 3] {
        let mut a = self.affine;
        for row in a.iter_mut().take(2) {
            for v in row.iter_mut() {
                *v = -*v;
            }
        }
        a
    }
}

/// Reads a `.nii` or `.nii.gz` file (gzip recognised by its magic bytes, not the name).
pub fn read(path: &Path) -> Result<Nifti, NiftiError> {
    let shown = path.display().to_string();
    let io = |source| NiftiError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut raw = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut raw).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    if bytes.len() as u64 > MAX_BYTES {
        return Err(NiftiError::Invalid {
            path: shown,
            reason: format!("larger than {MAX_BYTES} bytes"),
        });
    }
    parse(&bytes).map_err(|reason| NiftiError::Invalid { path: shown, reason })
}

/// A little- or big-endian field reader over the header bytes.
struct Fields<'a> {
    b: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn get<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a: [u8; N] = self.b[at..at + N].try_into().expect("in header");
        if self.big {
            a.reverse();
        }
        a
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.get(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.get(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.get(at))
    }
    fn f32(&self, at: usize) -> f64 {
        f32::from_le_bytes(self.get(at)) as f64
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.get(at))
    }
}

/// The header fields used, whichever version held them.
struct Header {
    dim: [i64; 8],
    datatype: i16,
    pixdim: [f64; 8],
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
}

fn header(b: &[u8]) -> Result<Header, String> {
    if b.len() < 348 {
        return Err(format!("{} bytes: too short for a NIfTI header", b.len()));
    }
    let size_le = i32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
    let size_be = i32::from_be_bytes(b[0..4].try_into().expect("4 bytes"));
    let (version, big) = match (size_le, size_be) {
        (348, _) => (1, false),
        (_, 348) => (1, true),
        (540, _) => (2, false),
        (_, 540) => (2, true),
        _ => {
            return Err(format!(
                "sizeof_hdr is {size_le}: not a NIfTI-1 (348) or NIfTI-2 (540) header"
            ))
        }
    };
    let f = Fields { b, big };
    if version == 1 {
        if &b[344..348] != b"n+1\0" {
            return Err(format!(
                "magic {:?}: not a single-file NIfTI-1 (.nii); a .hdr/.img pair is not read",
                String::from_utf8_lossy(&b[344..348])
            ));
        }
        Ok(Header {
            dim: std::array::from_fn(|i| f.i16(40 + 2 * i) as i64),
            datatype: f.i16(70),
            pixdim: std::array::from_fn(|i| f.f32(76 + 4 * i)),
            vox_offset: f.f32(108),
            scl_slope: f.f32(112),
            scl_inter: f.f32(116),
            qform_code: f.i16(252) as i32,
            sform_code: f.i16(254) as i32,
            quatern: std::array::from_fn(|i| f.f32(256 + 4 * i)),
            qoffset: std::array::from_fn(|i| f.f32(268 + 4 * i)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f32(280 + 16 * r + 4 * c))),
        })
    } else {
        if b.len() < 540 {
            return Err(format!("{} bytes: too short for a NIfTI-2 header", b.len()));
        }
        if &b[4..8] != b"n+2\0" {
            return Err("magic is not n+2: not a single-file NIfTI-2 (.nii)".into());
        }
        Ok(Header {
            dim: std::array::from_fn(|i| f.i64(16 + 8 * i)),
            datatype: f.i16(12),
            pixdim: std::array::from_fn(|i| f.f64(104 + 8 * i)),
            vox_offset: f.i64(168) as f64,
            scl_slope: f.f64(176),
            scl_inter: f.f64(184),
            qform_code: f.i32(344),
            sform_code: f.i32(348),
            quatern: std::array::from_fn(|i| f.f64(352 + 8 * i)),
            qoffset: std::array::from_fn(|i| f.f64(376 + 8 * i)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f64(400 + 32 * r + 8 * c))),
        })
    }
}

/// Bytes per value of the data types read (complex and RGB types are not label maps).
fn type_size(datatype: i16) -> Option<usize> {
    Some(match datatype {
        2 | 256 => 1,
        4 | 512 => 2,
        8 | 16 | 768 => 4,
        64 | 1024 | 1280 => 8,
        _ => return None,
    })
}

fn decode(datatype: i16, bytes: &[u8], big: bool) -> Vec<f64> {
    let size = type_size(datatype).expect("checked");
    bytes
        .chunks_exact(size)
        .map(|c| {
            let mut a = [0u8; 8];
            a[..size].copy_from_slice(c);
            if big {
                a[..size].reverse();
            }
            match datatype {
                2 => a[0] as f64,
                256 => a[0] as i8 as f64,
                4 => i16::from_le_bytes([a[0], a[1]]) as f64,
                512 => u16::from_le_bytes([a[0], a[1]]) as f64,
                8 => i32::from_le_bytes(a[..4].try_into().expect("4")) as f64,
                768 => u32::from_le_bytes(a[..4].try_into().expect("4")) as f64,
                16 => f32::from_le_bytes(a[..4].try_into().expect("4")) as f64,
                64 => f64::from_le_bytes(a),
                1024 => i64::from_le_bytes(a) as f64,
                _ => u64::from_le_bytes(a) as f64,
            }
        })
        .collect()
}

/// The qform matrix (NIfTI-1 standard, method 2): rotation from the quaternion (b, c, d), scaled
/// by pixdim, the k axis flipped when qfac (pixdim[0]) is −1.
fn qform(h: &Header) -> Result<[[f64; 4]; 3], String> {
    let [b, c, d] = h.quatern;
    let a2 = 1.0 - (b * b + c * c + d * d);
    let a = if a2 < 1e-7 {
        // A 180° rotation; the standard renormalises (b, c, d).
        let n = (b * b + c * c + d * d).sqrt();
        if n == 0.0 {
            return Err("qform quaternion is zero".into());
        }
        return qform_of(0.0, b / n, c / n, d / n, h);
    } else {
        a2.sqrt()
    };
    qform_of(a, b, c, d, h)
}

fn qform_of(a: f64, b: f64, c: f64, d: f64, h: &Header) -> Result<[[f64; 4]; 3], String> {
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let (dx, dy, dz) = (h.pixdim[1], h.pixdim[2], h.pixdim[3] * qfac);
    if !(dx > 0.0 && dy > 0.0 && h.pixdim[3] > 0.0) {
        return Err(format!(
            "qform needs positive voxel sizes, pixdim[1..4] is {:?}",
            &h.pixdim[1..4]
        ));
    }
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    Ok(std::array::from_fn(|i| {
        [r[i][0] * dx, r[i][1] * dy, r[i][2] * dz, h.qoffset[i]]
    }))
}

/// Parses a whole (decompressed) `.nii` file.
pub fn parse(b: &[u8]) -> Result<Nifti, String> {
    let h = header(b)?;
    let big = i32::from_le_bytes(b[0..4].try_into().expect("4")) != 348
        && i32::from_le_bytes(b[0..4].try_into().expect("4")) != 540;
    let rank = h.dim[0];
    if !(1..=7).contains(&rank) {
        return Err(format!("dim[0] is {rank}: not 1 to 7"));
    }
    let mut dim = [1usize; 3];
    for i in 1..=rank as usize {
        let n = h.dim[i];
        if n < 1 {
            return Err(format!("dim[{i}] is {n}"));
        }
        if i <= 3 {
            dim[i - 1] = n as usize;
        } else if n != 1 {
            return Err(format!(
                "dim[{i}] is {n}: a label map has three dimensions (a 4D or vector image is not one)"
            ));
        }
    }
    let size = type_size(h.datatype).ok_or_else(|| {
        format!(
            "datatype {} is not an integer or real type (complex and RGB images are not label maps)",
            h.datatype
        )
    })?;
    let voxels = dim.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
    let start = h.vox_offset;
    if !(start.is_finite() && start >= 348.0 && start.fract() == 0.0) {
        return Err(format!("vox_offset is {start}"));
    }
    let start = start as usize;
    let need = voxels
        .and_then(|v| v.checked_mul(size))
        .and_then(|n| n.checked_add(start))
        .ok_or("dimensions overflow")?;
    if b.len() < need {
        return Err(format!(
            "{} bytes, but {}×{}×{} voxels of {size} bytes from offset {start} need {need}: truncated",
            b.len(),
            dim[0],
            dim[1],
            dim[2]
        ));
    }
    let (affine, transform) = if h.sform_code > 0 {
        (h.srow, "sform")
    } else if h.qform_code > 0 {
        (qform(&h)?, "qform")
    } else {
        return Err(
            "neither sform_code nor qform_code is set: the file does not say where its voxels are, \
             so it cannot be aligned by geometry"
                .into(),
        );
    };
    if affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err(format!("the {transform} matrix is not finite"));
    }
    let mut values = decode(h.datatype, &b[start..need], big);
    if h.scl_slope != 0.0 && h.scl_slope.is_finite() && h.scl_inter.is_finite() {
        if (h.scl_slope, h.scl_inter) != (1.0, 0.0) {
            for v in &mut values {
                *v = *v * h.scl_slope + h.scl_inter;
            }
        }
    }
    Ok(Nifti {
        dim,
        affine,
        transform,
        values,
        datatype: h.datatype,
    })
}

/// Writes a NIfTI-1 label map (uint8, gzip-compressed when `path` ends in `.gz`) whose sform and
/// qform both hold `affine` (RAS+; its 3×3 part must be a rotation times positive voxel sizes,
/// possibly with a reflection, which the qform stores as qfac = −1).
pub fn write_u8(path: &Path, dim: [usize; 3], affine: [[f64; 4]; 3], values: &[u8]) -> std::io::Result<()> {
    assert_eq!(values.len(), dim.iter().product::<usize>(), "voxels match dim");
    let mut h = vec![0u8; 352];
    let put = |h: &mut Vec<u8>, at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut h, 0, &348i32.to_le_bytes());
    put(&mut h, 40, &3i16.to_le_bytes());
    for (i, n) in dim.iter().enumerate() {
        put(&mut h, 42 + 2 * i, &(*n as i16).to_le_bytes());
    }
    for i in 3..7 {
        put(&mut h, 42 + 2 * i, &1i16.to_le_bytes());
    }
    put(&mut h, 70, &2i16.to_le_bytes()); // uint8
    put(&mut h, 72, &8i16.to_le_bytes());
    // Columns of the 3×3 part: voxel sizes are their lengths; qform = rotation · diag(sizes, qfac).
    let col = |c: usize| [affine[0][c], affine[1][c], affine[2][c]];
    let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let sizes = [norm(col(0)), norm(col(1)), norm(col(2))];
    let mut r: [[f64; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| affine[i][j] / sizes[j]));
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0f32 } else { 1.0 };
    if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let pixdim = [
        qfac,
        sizes[0] as f32,
        sizes[1] as f32,
        sizes[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(&mut h, 76 + 4 * i, &p.to_le_bytes());
    }
    put(&mut h, 108, &352f32.to_le_bytes());
    put(&mut h, 112, &1f32.to_le_bytes());
    put(&mut h, 123, &[2u8]); // mm
    put(&mut h, 148, b"medtrain label map");
    put(&mut h, 252, &1i16.to_le_bytes()); // qform: scanner anatomical
    put(&mut h, 254, &1i16.to_le_bytes()); // sform: scanner anatomical
    let (b, c, d) = quaternion(&r);
    for (i, v) in [b, c, d].iter().enumerate() {
        put(&mut h, 256 + 4 * i, &(*v as f32).to_le_bytes());
    }
    for i in 0..3 {
        put(&mut h, 268 + 4 * i, &(affine[i][3] as f32).to_le_bytes());
        for j in 0..4 {
            put(&mut h, 280 + 16 * i + 4 * j, &(affine[i][j] as f32).to_le_bytes());
        }
    }
    put(&mut h, 344, b"n+1\0");
    let mut bytes = h;
    bytes.extend_from_slice(values);
    let gz = path.extension().is_some_and(|e| e == "gz");
    let data = if gz {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes)?;
        e.finish()?
    } else {
        bytes
    };
    crate::fsx::write_atomic(path, &data)
}

/// (b, c, d) of the unit quaternion of a proper rotation matrix (a ≥ 0), as the NIfTI-1 standard.
fn quaternion(r: &[[f64; 3]; 3]) -> (f64, f64, f64) {
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (a, b, c, d);
    if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        a = 0.25 * s;
        b = (r[2][1] - r[1][2]) / s;
        c = (r[0][2] - r[2][0]) / s;
        d = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        a = (r[2][1] - r[1][2]) / s;
        b = 0.25 * s;
        c = (r[0][1] + r[1][0]) / s;
        d = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        a = (r[0][2] - r[2][0]) / s;
        b = (r[0][1] + r[1][0]) / s;
        c = 0.25 * s;
        d = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        a = (r[1][0] - r[0][1]) / s;
        b = (r[0][2] + r[2][0]) / s;
        c = (r[1][2] + r[2][1]) / s;
        d = 0.25 * s;
    }
    if a < 0.0 {
        (-b, -c, -d)
    } else {
        (b, c, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_label_map_reads_back_through_sform_and_qform() {
        let dir = std::env::temp_dir().join(format!("nifti-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // An oblique grid with a reflection (the i axis runs right to left).
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        let affine = [
            [-0.7 * c, 0.8 * s, 0.0, 10.0],
            [-0.7 * s, -0.8 * c, 0.0, -20.0],
            [0.0, 0.0, 2.5, 30.0],
        ];
        let values: Vec<u8> = (0..24).map(|v| (v % 3) as u8).collect();
        let path = dir.join("m.nii.gz");
        write_u8(&path, [2, 3, 4], affine, &values).unwrap();
        let n = read(&path).unwrap();
        assert_eq!(n.dim, [2, 3, 4]);
        assert_eq!(n.values, values.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let mut bytes = Vec::new();
        GzDecoder::new(&std::fs::read(&path).unwrap()[..])
            .read_to_end(&mut bytes)
            .unwrap();
        bytes[254] = 0; // sform_code 0: the qform alone
        let q = parse(&bytes).unwrap();
        assert_eq!(q.transform, "qform");
        for (row, want) in q.affine.iter().zip(&affine) {
            for (x, y) in row.iter().zip(want) {
                assert!((x - y).abs() < 1e-5, "{:?} vs {affine:?}", q.affine);
            }
        }
        bytes[252] = 0;
        assert!(parse(&bytes).unwrap_err().contains("cannot be aligned"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_headers_are_errors_not_panics() {
        assert!(parse(&[0u8; 10]).is_err());
        let mut b = vec![0u8; 400];
        b[0..4].copy_from_slice(&348i32.to_le_bytes());
        assert!(parse(&b).unwrap_err().contains("magic"));
        b[344..348].copy_from_slice(b"n+1\0");
        b[40..42].copy_from_slice(&3i16.to_le_bytes());
        for i in 0..3 {
            b[42 + 2 * i..44 + 2 * i].copy_from_slice(&1000i16.to_le_bytes());
        }
        b[70..72].copy_from_slice(&2i16.to_le_bytes());
        b[108..112].copy_from_slice(&352f32.to_le_bytes());
        assert!(parse(&b).unwrap_err().contains("truncated"));
        b[76..80].copy_from_slice(&(-1f32).to_le_bytes());
        b[80..84].copy_from_slice(&(-2f32).to_le_bytes());
        for i in 0..3 {
            b[42 + 2 * i..44 + 2 * i].copy_from_slice(&1i16.to_le_bytes());
        }
        b[252..254].copy_from_slice(&1i16.to_le_bytes());
        assert!(parse(&b).unwrap_err().contains("positive voxel sizes"));
    }
}
