//! Overlays a reader can check: a CT slice in a chosen window, in radiological orientation (patient
//! right on image left, anterior up), with the pixel aspect ratio from the pixel spacing, the map
//! in a perceptually uniform colour map (viridis) blended on top, a colour legend and the model's
//! score written on the image. Where a reference lesion is known its outline is drawn (red, a colour
//! viridis never takes), and the map's maximum is marked with a white cross, so a reader sees at once
//! whether the map points at the lesion. Montages tile several slices of one series.

use super::truth::series_geometry;
use crate::catalog::columns::cell_text;
use crate::catalog::view::Catalog;
use crate::font::glyph;

/// Colour of reference-lesion outlines: red, which viridis never takes.
pub const OUTLINE: [u8; 3] = [255, 48, 48];
/// Colour of the cross on the map's maximum.
pub const MARKER: [u8; 3] = [255, 255, 255];

/// Map values below this are not drawn (the slice shows through).
const MIN_SHOWN: f32 = 0.15;
/// Opacity of the colour at map value 1.
const MAX_ALPHA: f32 = 0.6;
/// Output pixels per millimetre of the finest spacing, at least one output pixel per voxel.
const LEGEND_WIDTH: usize = 16;
const TEXT_SCALE: usize = 2;
const MARGIN: usize = 6;

/// Named CT windows (center, width) in HU.
pub fn parse_window(text: &str) -> Option<[f32; 2]> {
    match text {
        "lung" => Some([-600.0, 1500.0]),
        "mediastinum" => Some([40.0, 400.0]),
        _ => {
            let (w, l) = text.split_once(',')?;
            let (w, l): (f32, f32) = (w.trim().parse().ok()?, l.trim().parse().ok()?);
            (w > 0.0).then_some([l, w])
        }
    }
}

/// The colour of a value in [0, 1]: matplotlib's viridis.
pub fn viridis(v: f32) -> [u8; 3] {
    super::colormap::Colormap::Viridis.color(v)
}

/// An RGB image.
#[derive(Clone, Debug)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>, // (height, width, 3)
}

impl Image {
    pub fn new(width: usize, height: usize) -> Image {
        Image {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
    pub fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }
    fn blit(&mut self, other: &Image, x0: usize, y0: usize) {
        for y in 0..other.height {
            for x in 0..other.width {
                self.set(x0 + x, y0 + y, other.pixel(x, y));
            }
        }
    }
    /// Text in the built-in 5×7 font, `scale` pixels per font pixel.
    pub fn text(&mut self, x0: usize, y0: usize, text: &str, scale: usize, c: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (1 << (4 - col)) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(x0 + (i * 6 + col) * scale + dx, y0 + r * scale + dy, c);
                            }
                        }
                    }
                }
            }
        }
    }
    pub fn encode_png(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        // Encoding into memory with a size-matched buffer cannot fail.
        let mut writer = encoder.write_header().expect("PNG header into memory");
        writer.write_image_data(&self.rgb).expect("PNG data into memory");
        writer.finish().expect("PNG end into memory");
        bytes
    }
}

/// One slice to draw: HU and map on the pack grid (rows, cols), its spacing and display flips.
pub struct SliceView<'a> {
    pub hu: &'a [i16],  // (rows, cols)
    pub map: &'a [f32], // (rows, cols), [0, 1]
    pub rows: usize,
    pub cols: usize,
    /// mm (row, col)
    pub spacing: [f64; 2],
    /// Mirror columns / rows so that patient right is on image left and anterior is up.
    pub flip_cols: bool,
    pub flip_rows: bool,
    /// Reference lesion voxels of this slice (rows, cols): their outline is drawn.
    pub outline: Option<&'a [bool]>,
    /// (row, col) of the map's maximum: marked with a cross.
    pub marker: Option<[usize; 2]>,
}

/// Whether columns and rows must be mirrored for radiological display, from the patient steps of
/// one column and one row (DICOM LPS: +x is patient left, +y posterior).
pub fn radiological_flips(col_step: [f64; 3], row_step: [f64; 3]) -> (bool, bool) {
    // Columns run along the axis the column step mostly follows; show them toward patient left
    // (or toward posterior/inferior) left to right, rows toward posterior/inferior top to bottom.
    let dominant = |v: [f64; 3]| {
        let a = (0..3)
            .max_by(|&i, &j| v[i].abs().total_cmp(&v[j].abs()))
            .unwrap_or(0);
        v[a] < 0.0
    };
    (dominant(col_step), dominant(row_step))
}

/// Whether columns and rows must be mirrored for display of a projection image (a radiograph),
/// from its PatientOrientation: the patient directions of increasing column and increasing row
/// (PS3.3 C.7.6.1.1.1, e.g. `L\\F`). Shown as radiologists read a PA chest, patient right on image
/// left (columns toward L) and head up (rows toward F); lateral directions (A, P) are kept. An empty
/// or unreadable value keeps the stored layout.
pub fn projection_flips(patient_orientation: &str) -> (bool, bool) {
    let mut parts = patient_orientation.split('\\').map(|p| p.trim().chars().next());
    let (cols, rows) = (parts.next().flatten(), parts.next().flatten());
    (cols == Some('R'), rows == Some('H'))
}

/// The display flips of a catalog series: from its orientation (ImageOrientationPatient), or,
/// for a projection image that has none, from its PatientOrientation.
pub fn series_flips(cat: &Catalog, series_row: u32) -> Result<(bool, bool), String> {
    let geom = series_geometry(cat, series_row)?;
    if geom.col_step.iter().chain(&geom.row_step).all(|v| v.is_finite()) {
        return Ok(radiological_flips(geom.col_step, geom.row_step));
    }
    let orientation = cat
        .tables
        .codes("series/patient_orientation")
        .map_err(|e| format!("catalog series row {series_row}: {e}"))?;
    Ok(projection_flips(
        orientation.get(series_row as usize).map_or("", |c| cell_text(c)),
    ))
}

/// The slice with the map blended on top, at the physical aspect ratio (the finer spacing is one
/// output pixel, scaled up so the shorter side has at least `min_side` pixels).
pub fn render_slice(v: &SliceView<'_>, window: [f32; 2], min_side: usize) -> Image {
    let fine = v.spacing[0].min(v.spacing[1]).max(1e-6);
    let h_mm = v.rows as f64 * v.spacing[0];
    let w_mm = v.cols as f64 * v.spacing[1];
    let mut px_per_mm = 1.0 / fine;
    let short = (h_mm.min(w_mm) * px_per_mm).max(1.0);
    if short < min_side as f64 {
        px_per_mm *= (min_side as f64 / short).ceil();
    }
    let (height, width) = (
        (h_mm * px_per_mm).round() as usize,
        (w_mm * px_per_mm).round() as usize,
    );
    let mut img = Image::new(width.max(1), height.max(1));
    let low = window[0] - window[1] / 2.0;
    // The voxel (row, col) under output pixel (x, y), display flips applied.
    let row_of = |y: usize| {
        let r = (((y as f64 + 0.5) / px_per_mm / v.spacing[0]) as usize).min(v.rows - 1);
        if v.flip_rows {
            v.rows - 1 - r
        } else {
            r
        }
    };
    let col_of = |x: usize| {
        let c = (((x as f64 + 0.5) / px_per_mm / v.spacing[1]) as usize).min(v.cols - 1);
        if v.flip_cols {
            v.cols - 1 - c
        } else {
            c
        }
    };
    let rows_at: Vec<usize> = (0..img.height).map(row_of).collect();
    let cols_at: Vec<usize> = (0..img.width).map(col_of).collect();
    for (y, &r) in rows_at.iter().enumerate() {
        for (x, &c) in cols_at.iter().enumerate() {
            let hu = v.hu[r * v.cols + c] as f32;
            let grey = (((hu - low) / window[1]).clamp(0.0, 1.0) * 255.0).round();
            let m = v.map[r * v.cols + c];
            let colour = if m.is_finite() && m >= MIN_SHOWN {
                let a = MAX_ALPHA * m.min(1.0);
                let cm = viridis(m);
                cm.map(|ch| (grey * (1.0 - a) + ch as f32 * a).round() as u8)
            } else {
                [grey as u8; 3]
            };
            img.set(x, y, colour);
        }
    }
    if let Some(mask) = v.outline.filter(|m| m.len() == v.rows * v.cols) {
        // Inner boundary on screen: a lesion pixel with a 4-neighbour outside the lesion or the image.
        let inside = |x: usize, y: usize| mask[rows_at[y] * v.cols + cols_at[x]];
        for y in 0..img.height {
            for x in 0..img.width {
                if !inside(x, y) {
                    continue;
                }
                let edge = x == 0
                    || y == 0
                    || x + 1 == img.width
                    || y + 1 == img.height
                    || !inside(x - 1, y)
                    || !inside(x + 1, y)
                    || !inside(x, y - 1)
                    || !inside(x, y + 1);
                if edge {
                    img.set(x, y, OUTLINE);
                }
            }
        }
    }
    if let Some([r, c]) = v.marker.filter(|&[r, c]| r < v.rows && c < v.cols) {
        let r = if v.flip_rows { v.rows - 1 - r } else { r };
        let c = if v.flip_cols { v.cols - 1 - c } else { c };
        let cy = ((r as f64 + 0.5) * v.spacing[0] * px_per_mm) as usize;
        let cx = ((c as f64 + 0.5) * v.spacing[1] * px_per_mm) as usize;
        let arm = (img.width.min(img.height) / 40).max(3);
        for d in 0..=arm {
            img.set(cx + d, cy, MARKER);
            img.set(cx.wrapping_sub(d), cy, MARKER);
            img.set(cx, cy + d, MARKER);
            img.set(cx, cy.wrapping_sub(d), MARKER);
        }
    }
    img
}

/// A slice overlay with a title line, the score line and a colour legend (0 at the bottom, 1 at
/// the top) on the right.
pub fn annotated(slice: &Image, lines: &[String]) -> Image {
    let white: Vec<(String, [u8; 3])> = lines.iter().map(|l| (l.clone(), [255, 255, 255])).collect();
    annotated_coloured(slice, &white)
}

/// [`annotated`] with a colour per text line (a key line in the outline's colour, say).
pub fn annotated_coloured(slice: &Image, lines: &[(String, [u8; 3])]) -> Image {
    let line_h = 7 * TEXT_SCALE + 4;
    let top = MARGIN + line_h * lines.len();
    let legend_x = slice.width + 2 * MARGIN;
    let label_w = 6 * TEXT_SCALE;
    let text_w = lines
        .iter()
        .map(|(l, _)| l.chars().count() * 6 * TEXT_SCALE)
        .max()
        .unwrap_or(0);
    let width = (legend_x + LEGEND_WIDTH + MARGIN + label_w + MARGIN).max(text_w + 2 * MARGIN);
    let height = top + slice.height + MARGIN;
    let mut img = Image::new(width, height);
    for (i, (l, colour)) in lines.iter().enumerate() {
        img.text(MARGIN, MARGIN + i * line_h, l, TEXT_SCALE, *colour);
    }
    img.blit(slice, MARGIN, top);
    let bar_h = slice.height.max(2);
    for y in 0..bar_h {
        let v = 1.0 - y as f32 / (bar_h - 1) as f32;
        for x in 0..LEGEND_WIDTH {
            img.set(legend_x + x, top + y, viridis(v));
        }
    }
    img.text(legend_x + LEGEND_WIDTH + 3, top, "1", TEXT_SCALE, [255, 255, 255]);
    img.text(
        legend_x + LEGEND_WIDTH + 3,
        top + bar_h - 7 * TEXT_SCALE,
        "0",
        TEXT_SCALE,
        [255, 255, 255],
    );
    img
}

/// Tiles images left to right, `columns` per row, with the label of each under it.
pub fn montage(tiles: &[(Image, String)], columns: usize) -> Image {
    let columns = columns.max(1);
    let tw = tiles.iter().map(|t| t.0.width).max().unwrap_or(1);
    let th = tiles.iter().map(|t| t.0.height).max().unwrap_or(1) + 7 * TEXT_SCALE + 4;
    let rows = tiles.len().div_ceil(columns).max(1);
    let mut img = Image::new(columns * (tw + MARGIN) + MARGIN, rows * (th + MARGIN) + MARGIN);
    for (i, (tile, label)) in tiles.iter().enumerate() {
        let (x, y) = (
            MARGIN + (i % columns) * (tw + MARGIN),
            MARGIN + (i / columns) * (th + MARGIN),
        );
        img.blit(tile, x, y);
        img.text(x, y + tile.height + 2, label, TEXT_SCALE, [255, 255, 255]);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_colours() {
        assert_eq!(parse_window("lung"), Some([-600.0, 1500.0]));
        assert_eq!(parse_window("400,40"), Some([40.0, 400.0]));
        assert_eq!(parse_window("-1,40"), None);
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        // Luminance rises monotonically along viridis.
        let lum = |c: [u8; 3]| 0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32;
        let l: Vec<f32> = (0..=20).map(|i| lum(viridis(i as f32 / 20.0))).collect();
        assert!(l.windows(2).all(|w| w[1] > w[0]), "{l:?}");
    }

    #[test]
    fn aspect_ratio_follows_the_spacing() {
        let hu = vec![0i16; 10 * 20];
        let map = vec![0.0f32; 10 * 20];
        let v = SliceView {
            hu: &hu,
            map: &map,
            rows: 10,
            cols: 20,
            spacing: [2.0, 0.5],
            flip_cols: false,
            flip_rows: false,
            outline: None,
            marker: None,
        };
        // 20 mm tall, 10 mm wide: twice as tall as wide on screen.
        let img = render_slice(&v, [0.0, 100.0], 8);
        assert_eq!(img.height, 2 * img.width, "{}x{}", img.width, img.height);
    }

    #[test]
    fn outline_and_marker_land_on_their_voxels() {
        // A 3×3 lesion in a 12×12 slice, mirrored left-right on screen; the marker on its centre.
        let (rows, cols) = (12usize, 12usize);
        let hu = vec![-1000i16; rows * cols];
        let map = vec![0.0f32; rows * cols];
        let mut mask = vec![false; rows * cols];
        for r in 4..7 {
            for c in 1..4 {
                mask[r * cols + c] = true;
            }
        }
        let v = SliceView {
            hu: &hu,
            map: &map,
            rows,
            cols,
            spacing: [1.0, 1.0],
            flip_cols: true,
            flip_rows: false,
            outline: Some(&mask),
            marker: Some([5, 2]),
        };
        let img = render_slice(&v, [0.0, 2000.0], 48); // 4 output pixels per voxel
        let red: Vec<(usize, usize)> = (0..img.height)
            .flat_map(|y| (0..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y) == OUTLINE)
            .collect();
        assert!(!red.is_empty());
        // Columns 1..4 shown mirrored: screen columns 8..11 → pixels 32..48; rows 4..7 → 16..28.
        assert!(
            red.iter()
                .all(|&(x, y)| (32..44).contains(&x) && (16..28).contains(&y)),
            "{red:?}"
        );
        assert!(red.iter().any(|&(x, _)| x == 32) && red.iter().any(|&(x, _)| x == 43));
        // The lesion's inside is not painted.
        assert_ne!(img.pixel(36, 20), OUTLINE);
        // Marker: voxel (5, 2) → screen column 9, centre pixel (38, 22).
        assert_eq!(img.pixel(38, 22), MARKER);
        assert_eq!(img.pixel(38 + 3, 22), MARKER);
        assert_eq!(img.pixel(38, 22 - 3), MARKER);
    }
}
