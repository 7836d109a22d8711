//! The analytic chest: an elliptic body with a fat layer, two tapering lungs, heart, spine, and in
//! the lungs soft-tissue tubes (vessels, mostly along z) and spheres (nodules) of the same density.
//! Everything is in patient coordinates (LPS, mm), so the CT and the radiograph sample one object.

use super::seed::stream_rng;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

pub(crate) const AIR_HU: f32 = -1000.0;
const FAT_HU: f32 = -100.0;
const SOFT_TISSUE_HU: f32 = 40.0;
const LUNG_HU: Range<f32> = -870.0..-820.0;
const BONE_HU: Range<f32> = 350.0..600.0;
/// Vessels and nodules share one density range, so the brightest lung voxel cannot tell them apart.
const SOLID_HU: Range<f32> = 10.0..70.0;

/// Body half-width (left-right) and half-depth (anterior-posterior) of an adult chest, mm.
const BODY_HALF_WIDTH_MM: Range<f64> = 150.0..175.0;
const BODY_HALF_DEPTH_MM: Range<f64> = 100.0..125.0;
const FAT_LAYER_MM: Range<f64> = 8.0..20.0;
/// Fraction of the field of view that the body's width fills.
const BODY_FILLS_FOV: Range<f64> = 0.78..0.86;
/// The body centre sits this far (fraction of the FOV) from the isocentre at most.
const BODY_OFFSET_FOV: f64 = 0.03;
/// Table positions of the first slice (patient z, mm) as scanners report them.
const FIRST_SLICE_Z_MM: Range<f64> = -400.0..-150.0;
/// Lungs run this far (mm) from their mid-plane towards apex and base.
const LUNG_HALF_LENGTH_MM: Range<f64> = 120.0..145.0;
const LUNG_MID_JITTER_MM: f64 = 15.0;

const VESSELS_PER_LUNG: Range<u32> = 5..10;
const VESSEL_RADIUS_MM: Range<f64> = 1.5..4.5;
/// Vessels drift sideways by at most this many mm per mm along z (mostly along z, some oblique).
const VESSEL_SLOPE: f64 = 0.3;
const VESSEL_WAVELENGTH_MM: Range<f64> = 80.0..240.0;
/// Nodule radii, mm (diameters 7-22 mm: the sizes a screening report acts on).
const NODULE_RADIUS_MM: Range<f64> = 3.5..11.0;
/// Nodules keep this distance (mm) from the lung wall and the heart.
const NODULE_WALL_MARGIN_MM: f64 = 3.0;
const NODULE_PLACEMENT_TRIES: u32 = 1000;
/// Heart radius as a multiple of the standard 0.33 body half-depths: below 1 a small heart, above
/// about 1.15 an enlarged one (the hazard's reference, see `truth`). Drawn from its own stream, so
/// every other draw of a patient is the same with or without it.
const HEART_SCALE: Range<f64> = 0.85..1.3;
/// Emphysema lowers the lung parenchyma's density by up to this many HU (severity 1): from about
/// −845 HU in healthy lungs towards −935 HU. Drawn from its own stream, like the heart.
const EMPHYSEMA_HU: f32 = 90.0;

/// Grid of one CT series; voxel (k, i, j) has its centre at origin + (j·Δx, i·Δy, k·Δz).
#[derive(Clone, Debug)]
pub(crate) struct ScanGeometry {
    pub rows: usize,
    pub cols: usize,
    pub slices: usize,
    pub pixel_spacing: f64, // mm, rows and columns alike
    pub slice_spacing: f64, // mm, equal to SliceThickness (contiguous slices)
    pub origin: [f64; 3],   // centre of voxel (0, 0, 0): the lowest slice
}

impl ScanGeometry {
    pub fn x(&self, col: usize) -> f64 {
        self.origin[0] + col as f64 * self.pixel_spacing
    }
    pub fn y(&self, row: usize) -> f64 {
        self.origin[1] + row as f64 * self.pixel_spacing
    }
    pub fn z(&self, slice: usize) -> f64 {
        self.origin[2] + slice as f64 * self.slice_spacing
    }
    pub fn fov_mm(&self) -> f64 {
        self.cols as f64 * self.pixel_spacing
    }
    /// Centre of the reconstruction circle (the isocentre in x and y).
    pub fn fov_centre(&self) -> [f64; 2] {
        let half = |n: usize| (n as f64 - 1.0) / 2.0 * self.pixel_spacing;
        [self.origin[0] + half(self.cols), self.origin[1] + half(self.rows)]
    }
    fn mid_z(&self) -> f64 {
        self.z(0) + (self.slices as f64 - 1.0) / 2.0 * self.slice_spacing
    }
}

#[derive(Clone, Copy, Debug)]
struct Ellipse {
    centre: [f64; 2],
    half_axes: [f64; 2],
}

impl Ellipse {
    /// Squared normalised radius: < 1 inside.
    fn rho2(&self, x: f64, y: f64, scale: f64) -> f64 {
        let u = (x - self.centre[0]) / (self.half_axes[0] * scale);
        let v = (y - self.centre[1]) / (self.half_axes[1] * scale);
        u * u + v * v
    }
}

#[derive(Clone, Copy, Debug)]
struct Disk {
    centre: [f64; 2],
    radius: f64,
}

impl Disk {
    fn contains(&self, x: f64, y: f64, margin: f64) -> bool {
        let (dx, dy) = (x - self.centre[0], y - self.centre[1]);
        dx * dx + dy * dy < (self.radius + margin).powi(2)
    }
}

/// A soft-tissue tube that runs mostly along z: centre(z) = base + slope·(z − z_mid) + wobble.
#[derive(Clone, Debug)]
pub(crate) struct Vessel {
    base: [f64; 2],
    slope: [f64; 2],
    wobble_amplitude: [f64; 2],
    wavelength: f64,
    phase: [f64; 2],
    z_mid: f64,
    pub radius: f64,
    pub hu: f32,
}

impl Vessel {
    pub fn centre_at(&self, z: f64) -> [f64; 2] {
        let t = z - self.z_mid;
        let angle = std::f64::consts::TAU * t / self.wavelength;
        [0, 1].map(|a| {
            self.base[a] + self.slope[a] * t + self.wobble_amplitude[a] * (angle + self.phase[a]).sin()
        })
    }
}

/// A solid spherical nodule.
#[derive(Clone, Debug)]
pub(crate) struct Nodule {
    pub centre: [f64; 3], // patient coordinates, mm
    pub radius: f64,      // mm
    pub hu: f32,
}

/// A structure drawn over the lung: a disk in-plane, at height `dz` from its centre along z
/// (0 for vessels, whose cross-section is the disk itself).
pub(crate) struct Blob {
    pub centre: [f64; 2],
    pub dz: f64,
    pub radius: f64,
    pub hu: f32,
}

/// Tissue classes of the background (everything but vessels and nodules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tissue {
    Air,
    Fat,
    Soft,
    Bone,
    Lung,
}

#[derive(Clone, Debug)]
pub(crate) struct Anatomy {
    body: Ellipse,
    inner_body: Ellipse, // inside the fat layer
    lungs: [Ellipse; 2],
    lung_mid_z: f64,
    lung_half_length: f64,
    heart: Disk,
    /// The heart's size relative to the standard one (see `HEART_SCALE`).
    pub heart_scale: f64,
    spine: Disk,
    pub lung_hu: f32,
    /// Emphysema severity, 0 (none) to 1.
    pub emphysema: f64,
    bone_hu: f32,
    pub vessels: Vec<Vessel>,
    pub nodules: Vec<Nodule>,
    /// Width of the partial-volume edge of vessels and nodules: one pixel.
    pub edge_mm: f64,
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Draws the body size, then the CT grid around it (the FOV follows the body, as a technologist
/// sets it), then the organs, vessels and `nodule_count` nodules.
pub(crate) fn sample(
    seed: u64,
    patient: u32,
    size: u32,
    slices: u32,
    slice_spacing: f64,
    nodule_count: u32,
) -> (ScanGeometry, Anatomy) {
    let mut rng = stream_rng(seed, "anatomy", patient);
    let half_width = rng.gen_range(BODY_HALF_WIDTH_MM);
    let half_depth = rng.gen_range(BODY_HALF_DEPTH_MM);
    let fov = 2.0 * half_width / rng.gen_range(BODY_FILLS_FOV);
    // DS values are written with 4 (spacing) or 2 (positions) decimals; use exactly those values.
    let pixel_spacing = round_to(fov / f64::from(size), 4);
    let first_pixel = -(f64::from(size) - 1.0) / 2.0 * pixel_spacing;
    let geometry = ScanGeometry {
        rows: size as usize,
        cols: size as usize,
        slices: slices as usize,
        pixel_spacing,
        slice_spacing,
        origin: [
            round_to(first_pixel, 2),
            round_to(first_pixel, 2),
            round_to(rng.gen_range(FIRST_SLICE_Z_MM), 2),
        ],
    };
    let offset = BODY_OFFSET_FOV * fov;
    let centre = [rng.gen_range(-offset..offset), rng.gen_range(-offset..offset)];
    let fat = rng.gen_range(FAT_LAYER_MM);
    let body = Ellipse {
        centre,
        half_axes: [half_width, half_depth],
    };
    let inner_body = Ellipse {
        centre,
        half_axes: [half_width - fat, half_depth - fat],
    };
    let lung_half_axes = [0.34 * half_width * rng.gen_range(0.95..1.05), 0.66 * half_depth];
    // Patient left is +x in LPS; the heart sits anterior (−y) and to the left.
    let lungs = [-1.0, 1.0].map(|side| Ellipse {
        centre: [
            centre[0] + side * 0.47 * half_width,
            centre[1] + 0.02 * half_depth,
        ],
        half_axes: lung_half_axes,
    });
    let heart_scale = stream_rng(seed, "heart", patient).gen_range(HEART_SCALE);
    let emphysema: f64 = stream_rng(seed, "emphysema", patient).gen_range(0.0..1.0);
    let heart = Disk {
        centre: [centre[0] + 0.12 * half_width, centre[1] - 0.25 * half_depth],
        radius: 0.33 * half_depth * heart_scale,
    };
    let spine = Disk {
        centre: [centre[0], centre[1] + 0.68 * half_depth],
        radius: 0.13 * half_depth,
    };
    let mut anatomy = Anatomy {
        body,
        inner_body,
        lungs,
        lung_mid_z: geometry.mid_z() + rng.gen_range(-LUNG_MID_JITTER_MM..LUNG_MID_JITTER_MM),
        lung_half_length: rng.gen_range(LUNG_HALF_LENGTH_MM),
        heart,
        heart_scale,
        spine,
        lung_hu: rng.gen_range(LUNG_HU) - EMPHYSEMA_HU * emphysema as f32,
        emphysema,
        bone_hu: rng.gen_range(BONE_HU),
        vessels: Vec::new(),
        nodules: Vec::new(),
        edge_mm: pixel_spacing,
    };
    anatomy.vessels = sample_vessels(&mut rng, &anatomy, &geometry);
    anatomy.nodules = (0..nodule_count)
        .map(|_| sample_nodule(&mut rng, &anatomy, &geometry))
        .collect();
    (geometry, anatomy)
}

/// Radius range scaled so that a structure always spans at least one pixel: at coarse test
/// resolutions the smallest real sizes would vanish into partial volume.
fn radius_range(mm: Range<f64>, pixel_spacing: f64, min_pixels: f64, max_pixels: f64) -> Range<f64> {
    mm.start.max(min_pixels * pixel_spacing)..mm.end.max(max_pixels * pixel_spacing)
}

fn sample_vessels(rng: &mut ChaCha8Rng, anatomy: &Anatomy, geometry: &ScanGeometry) -> Vec<Vessel> {
    let radii = radius_range(VESSEL_RADIUS_MM, geometry.pixel_spacing, 0.5, 1.5);
    let z_mid = geometry.mid_z();
    let mut vessels = Vec::new();
    for lung in &anatomy.lungs {
        for _ in 0..rng.gen_range(VESSELS_PER_LUNG) {
            let base = point_in_ellipse(rng, lung, 0.8);
            let max_wobble = 0.12 * lung.half_axes[0];
            vessels.push(Vessel {
                base,
                slope: [0, 1].map(|_| rng.gen_range(-VESSEL_SLOPE..VESSEL_SLOPE)),
                wobble_amplitude: [0, 1].map(|_| rng.gen_range(0.0..max_wobble)),
                wavelength: rng.gen_range(VESSEL_WAVELENGTH_MM),
                phase: [0, 1].map(|_| rng.gen_range(0.0..std::f64::consts::TAU)),
                z_mid,
                radius: rng.gen_range(radii.clone()),
                hu: rng.gen_range(SOLID_HU),
            });
        }
    }
    vessels
}

fn point_in_ellipse(rng: &mut ChaCha8Rng, ellipse: &Ellipse, scale: f64) -> [f64; 2] {
    loop {
        let p = [0, 1].map(|a| ellipse.centre[a] + rng.gen_range(-1.0..1.0) * ellipse.half_axes[a] * scale);
        if ellipse.rho2(p[0], p[1], scale) < 1.0 {
            return p;
        }
    }
}

/// A nodule wholly inside one lung (clear of wall and heart by a margin) and, when the scan is
/// long enough, wholly inside the scanned slab.
fn sample_nodule(rng: &mut ChaCha8Rng, anatomy: &Anatomy, geometry: &ScanGeometry) -> Nodule {
    let radius = rng.gen_range(radius_range(NODULE_RADIUS_MM, geometry.pixel_spacing, 1.0, 2.5));
    let hu = rng.gen_range(SOLID_HU);
    let lung = anatomy.lungs[rng.gen_range(0..2)];
    let (z_lo, z_hi) = (geometry.z(0), geometry.z(geometry.slices - 1));
    let z_margin = radius.min((z_hi - z_lo) / 2.0);
    let margin = radius + NODULE_WALL_MARGIN_MM;
    let mut centre = [lung.centre[0], lung.centre[1], (z_lo + z_hi) / 2.0];
    for _ in 0..NODULE_PLACEMENT_TRIES {
        let z = rng.gen_range(z_lo + z_margin..=z_hi - z_margin);
        let scale = anatomy.lung_scale(z);
        let shrunk = Ellipse {
            centre: lung.centre,
            half_axes: lung.half_axes.map(|h| h * scale - margin),
        };
        if shrunk.half_axes.iter().any(|&h| h <= 0.0) {
            continue;
        }
        let [x, y] = point_in_ellipse(rng, &shrunk, 1.0);
        if !anatomy.heart.contains(x, y, margin) {
            centre = [x, y, z];
            break;
        }
    }
    Nodule { centre, radius, hu }
}

impl Anatomy {
    /// Lung cross-sections shrink towards apex and base: scale 1 at mid-plane, 0 at the ends.
    pub fn lung_scale(&self, z: f64) -> f64 {
        let u = (z - self.lung_mid_z) / self.lung_half_length;
        (1.0 - u * u).max(0.0).sqrt()
    }

    pub fn tissue(&self, x: f64, y: f64, lung_scale: f64) -> Tissue {
        if self.body.rho2(x, y, 1.0) >= 1.0 {
            Tissue::Air
        } else if self.spine.contains(x, y, 0.0) {
            Tissue::Bone
        } else if self.inner_body.rho2(x, y, 1.0) >= 1.0 {
            Tissue::Fat
        } else if lung_scale > 0.0
            && self.lungs.iter().any(|l| l.rho2(x, y, lung_scale) < 1.0)
            && !self.heart.contains(x, y, 0.0)
        {
            Tissue::Lung
        } else {
            Tissue::Soft
        }
    }

    pub fn tissue_hu(&self, tissue: Tissue) -> f32 {
        match tissue {
            Tissue::Air => AIR_HU,
            Tissue::Fat => FAT_HU,
            Tissue::Soft => SOFT_TISSUE_HU,
            Tissue::Bone => self.bone_hu,
            Tissue::Lung => self.lung_hu,
        }
    }

    /// Vessel and nodule cross-sections that may touch the plane at height `z`.
    pub fn blobs_at(&self, z: f64) -> Vec<Blob> {
        let vessels = self.vessels.iter().map(|v| Blob {
            centre: v.centre_at(z),
            dz: 0.0,
            radius: v.radius,
            hu: v.hu,
        });
        let nodules = self
            .nodules
            .iter()
            .filter(|n| (z - n.centre[2]).abs() < n.radius + self.edge_mm)
            .map(|n| Blob {
                centre: [n.centre[0], n.centre[1]],
                dz: z - n.centre[2],
                radius: n.radius,
                hu: n.hu,
            });
        vessels.chain(nodules).collect()
    }

    /// Fraction of a voxel at distance `distance` from a structure's axis or centre that the
    /// structure fills: a linear ramp one edge width wide, half at the surface.
    pub fn coverage(&self, distance: f64, radius: f64) -> f32 {
        ((radius - distance) / self.edge_mm + 0.5).clamp(0.0, 1.0) as f32
    }

    /// Noise-free HU of one axial plane at slice height `z`, row-major (rows, cols).
    pub fn render_plane(&self, geometry: &ScanGeometry, z: f64) -> Vec<f32> {
        let scale = self.lung_scale(z);
        let (rows, cols) = (geometry.rows, geometry.cols);
        let mut lung = vec![false; rows * cols]; // (rows, cols)
        let mut hu = vec![0f32; rows * cols]; // (rows, cols)
        for i in 0..rows {
            for j in 0..cols {
                let tissue = self.tissue(geometry.x(j), geometry.y(i), scale);
                lung[i * cols + j] = tissue == Tissue::Lung;
                hu[i * cols + j] = self.tissue_hu(tissue);
            }
        }
        for blob in self.blobs_at(z) {
            self.draw_blob(geometry, &blob, &lung, &mut hu);
        }
        hu
    }

    /// Blends one structure into lung voxels; where structures overlap the denser one wins.
    fn draw_blob(&self, geometry: &ScanGeometry, blob: &Blob, lung: &[bool], hu: &mut [f32]) {
        let reach = blob.radius + self.edge_mm;
        let index_range = |centre: f64, origin: f64, n: usize| {
            let lo = ((centre - reach - origin) / geometry.pixel_spacing)
                .floor()
                .max(0.0) as usize;
            let hi = ((centre + reach - origin) / geometry.pixel_spacing)
                .ceil()
                .max(-1.0) as isize;
            lo..(hi + 1).clamp(0, n as isize) as usize
        };
        for i in index_range(blob.centre[1], geometry.origin[1], geometry.rows) {
            for j in index_range(blob.centre[0], geometry.origin[0], geometry.cols) {
                let p = i * geometry.cols + j;
                if !lung[p] {
                    continue;
                }
                let (dx, dy) = (geometry.x(j) - blob.centre[0], geometry.y(i) - blob.centre[1]);
                let distance = (dx * dx + dy * dy + blob.dz * blob.dz).sqrt();
                let value = self.lung_hu + (blob.hu - self.lung_hu) * self.coverage(distance, blob.radius);
                hu[p] = hu[p].max(value);
            }
        }
    }

    /// Whether the plane at height `z` cuts nodule `n` in a disk at least half a pixel in radius:
    /// the slice-level truth (a thinner cap is invisible at this resolution).
    pub fn nodule_visible_at(&self, n: &Nodule, z: f64, pixel_spacing: f64) -> bool {
        let dz = z - n.centre[2];
        n.radius * n.radius - dz * dz >= (pixel_spacing / 2.0).powi(2)
    }

    /// Centre and half-axes of the body ellipse (for framing the radiograph).
    pub fn body_box(&self) -> ([f64; 2], [f64; 2]) {
        (self.body.centre, self.body.half_axes)
    }

    /// Cardiothoracic ratio as read on a PA radiograph: the heart's widest extent over the widest
    /// internal width of the thorax.
    pub fn cardiothoracic_ratio(&self) -> f64 {
        self.heart.radius / self.inner_body.half_axes[0]
    }

    pub fn lung_z_range(&self) -> (f64, f64) {
        (
            self.lung_mid_z - self.lung_half_length,
            self.lung_mid_z + self.lung_half_length,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phantom(nodules: u32) -> (ScanGeometry, Anatomy) {
        sample(11, 0, 96, 48, 2.5, nodules)
    }

    #[test]
    fn nodules_lie_inside_lung_and_scan() {
        for patient in 0..20 {
            let (geometry, anatomy) = sample(5, patient, 96, 48, 2.5, 3);
            for n in &anatomy.nodules {
                let [x, y, z] = n.centre;
                // Six points on the sphere's surface must all be lung.
                for (dx, dy) in [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)] {
                    let scale = anatomy.lung_scale(z);
                    let t = anatomy.tissue(x + dx * n.radius, y + dy * n.radius, scale);
                    assert_eq!(t, Tissue::Lung, "patient {patient} nodule {n:?}");
                }
                assert!(z - n.radius >= geometry.z(0) - 1e-9 && z + n.radius <= geometry.z(47) + 1e-9);
            }
        }
    }

    #[test]
    fn plane_has_realistic_tissue_values() {
        let (geometry, anatomy) = phantom(0);
        let plane = anatomy.render_plane(&geometry, geometry.z(24));
        let corner = plane[0];
        assert_eq!(corner, AIR_HU, "the FOV corner is outside the body");
        let lung_voxels = plane.iter().filter(|&&v| v == anatomy.lung_hu).count();
        // Two lungs fill a good part of a mid-chest slice.
        assert!(
            lung_voxels > plane.len() / 10,
            "{lung_voxels} lung voxels of {}",
            plane.len()
        );
        assert!(plane.contains(&SOFT_TISSUE_HU) && plane.contains(&FAT_HU));
        assert!(plane.iter().any(|&v| v >= BONE_HU.start));
    }

    #[test]
    fn nodule_centre_reaches_its_density() {
        let (geometry, anatomy) = phantom(1);
        let n = &anatomy.nodules[0];
        // Sample exactly at the centre by shifting a one-voxel grid onto it.
        let probe = ScanGeometry {
            rows: 1,
            cols: 1,
            slices: 1,
            origin: n.centre,
            ..geometry
        };
        let plane = anatomy.render_plane(&probe, n.centre[2]);
        assert!(
            (plane[0] - n.hu).abs() < 1e-3 || plane[0] > n.hu,
            "{} vs {}",
            plane[0],
            n.hu
        );
    }

    #[test]
    fn vessels_run_mostly_along_z() {
        let (_, anatomy) = phantom(0);
        for v in &anatomy.vessels {
            let (a, b) = (v.centre_at(0.0), v.centre_at(10.0));
            let drift = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
            assert!(drift < 10.0, "a vessel moves {drift} mm sideways over 10 mm of z");
        }
    }
}
