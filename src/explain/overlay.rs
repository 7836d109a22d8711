//! Overlays a reader can check: a CT slice in a chosen window, in radiological orientation (patient
//! right on image left, anterior up), with the pixel aspect ratio from the pixel spacing, shown as
//! image | map | overlay. The map is drawn in a matplotlib colour map (viridis by default) over the
//! slice wherever it reaches a threshold of its maximum, with an opacity floor so faint heat shows;
//! a colour legend marks the threshold, and the model's score is written above. Where a reference
//! lesion is known its outline is drawn just outside it (red, a colour viridis never takes), and the
//! map's maximum is marked with an open white cross-hair, so a reader sees at once whether the map
//! points at the lesion. Montages tile several slices of one series.

use super::colormap::Colormap;
use super::truth::series_geometry;
use crate::catalog::columns::cell_text;
use crate::catalog::view::Catalog;

/// Colour of reference-lesion outlines: red, which viridis never takes.
pub const OUTLINE: [u8; 3] = [255, 48, 48];
/// Colour of the cross on the map's maximum.
pub const MARKER: [u8; 3] = [255, 255, 255];

/// Colour of contour lines.
pub const CONTOUR: [u8; 3] = [0, 0, 0];
/// Contour levels, as fractions of the series maximum.
pub const CONTOUR_LEVELS: [f32; 2] = [0.5, 0.8];
/// Default fraction of the maximum below which the map is not drawn over the slice.
pub const DEFAULT_THRESHOLD: f32 = 0.2;
/// Opacity of the colour at the threshold, and at the maximum.
const ALPHA_FLOOR: f32 = 0.5;
const MAX_ALPHA: f32 = 0.85;
const HEAT_GAMMA: f32 = 0.5;
/// Length of each arm of the maximum's cross, as a fraction of the image's short side.
const MARKER_ARM: f64 = 0.08;
/// Width of the colour legend, in pixels.
const LEGEND_WIDTH: usize = 16;
const TEXT_SCALE: usize = 2;
/// Space around the picture in [`annotated_coloured`], in pixels.
pub const MARGIN: usize = 6;

/// Row at which [`annotated_coloured`] places the picture under `lines` lines of text.
pub fn text_top(lines: usize) -> usize {
    MARGIN + (7 * TEXT_SCALE + 4) * lines
}

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
    Colormap::Viridis.color(v)
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
    /// [`Image::set`] for coordinates that may fall off the image (drawn nothing there).
    pub fn set_signed(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 {
            self.set(x as usize, y as usize, c);
        }
    }
    fn blit(&mut self, other: &Image, x0: usize, y0: usize) {
        for y in 0..other.height {
            for x in 0..other.width {
                self.set(x0 + x, y0 + y, other.pixel(x, y));
            }
        }
    }
    /// Text in the embedded DejaVu Sans, about as tall as `7 × scale` pixels of capitals, with its
    /// top-left corner at (`x0`, `y0`).
    pub fn text(&mut self, x0: usize, y0: usize, text: &str, scale: usize, c: [u8; 3]) {
        let (w, h) = (self.width as u32, self.height as u32);
        let at = (x0 as i32, y0 as i32);
        crate::chart::draw_text(&mut self.rgb, w, h, at, text, 9.5 * scale as f64, c);
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

/// How a map is drawn: its colour map, the fraction of the series maximum below which the slice
/// shows through in grey, and optional contour lines.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Style {
    pub colormap: Colormap,
    /// Map values below `threshold × map_max` are not drawn on the overlay.
    pub threshold: f32,
    /// The map value drawn at the top of the colour map (the series maximum).
    pub map_max: f32,
    /// Contour lines at 0.5 and 0.8 of `map_max`.
    pub contours: bool,
}

impl Default for Style {
    fn default() -> Style {
        Style {
            colormap: Colormap::Viridis,
            threshold: DEFAULT_THRESHOLD,
            map_max: 1.0,
            contours: false,
        }
    }
}

/// One slice drawn three ways on the same pixel grid: the slice alone, the map alone and the map
/// blended on the slice. Outline, marker and contours are on the map and the overlay; the image
/// stays clean so the lesion itself can be seen.
pub struct Layers {
    pub image: Image,
    pub map: Image,
    pub overlay: Image,
    /// Output pixels per millimetre.
    pub px_per_mm: f64,
}

/// Width in pixels of outlines, contours and the marker's arms: 2 % of the short side, at least 2.
pub fn stroke_width(img: &Image) -> usize {
    ((img.width.min(img.height) as f64 * 0.02).round() as usize).max(2)
}

/// The slice with the map blended on top, at the physical aspect ratio (the finer spacing is one
/// output pixel, scaled up so the shorter side has at least `min_side` pixels).
pub fn render_slice(v: &SliceView<'_>, window: [f32; 2], min_side: usize) -> Image {
    render_layers(v, window, min_side, &Style::default()).overlay
}

/// [`render_slice`] in its three layers, drawn with `style`.
pub fn render_layers(v: &SliceView<'_>, window: [f32; 2], min_side: usize, style: &Style) -> Layers {
    let fine = v.spacing[0].min(v.spacing[1]).max(1e-6);
    let h_mm = v.rows as f64 * v.spacing[0];
    let w_mm = v.cols as f64 * v.spacing[1];
    let mut px_per_mm = 1.0 / fine;
    let short = (h_mm.min(w_mm) * px_per_mm).max(1.0);
    if short < min_side as f64 {
        px_per_mm *= (min_side as f64 / short).ceil();
    }
    let (height, width) = (
        ((h_mm * px_per_mm).round() as usize).max(1),
        ((w_mm * px_per_mm).round() as usize).max(1),
    );
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
    let rows_at: Vec<usize> = (0..height).map(row_of).collect();
    let cols_at: Vec<usize> = (0..width).map(col_of).collect();
    let at = |x: usize, y: usize| rows_at[y] * v.cols + cols_at[x];
    let max = if style.map_max.is_finite() && style.map_max > 0.0 {
        style.map_max
    } else {
        1.0
    };
    let threshold = style.threshold.clamp(0.0, 0.999);
    let mut image = Image::new(width, height);
    let mut map = Image::new(width, height);
    let mut overlay = Image::new(width, height);
    for y in 0..height {
        for x in 0..width {
            let i = at(x, y);
            let hu = v.hu[i] as f32;
            let grey = (((hu - low) / window[1]).clamp(0.0, 1.0) * 255.0).round();
            image.set(x, y, [grey as u8; 3]);
            let m = v.map[i] / max;
            let m = if m.is_finite() { m.clamp(0.0, 1.0) } else { 0.0 };
            let colour = style.colormap.color(m);
            map.set(x, y, colour);
            let shown = if m >= threshold && m > 0.0 {
                let a = heat_alpha(m, threshold);
                colour.map(|ch| (grey * (1.0 - a) + ch as f32 * a).round() as u8)
            } else {
                [grey as u8; 3]
            };
            overlay.set(x, y, shown);
        }
    }
    let stroke = stroke_width(&overlay);
    for img in [&mut map, &mut overlay] {
        if style.contours {
            for level in CONTOUR_LEVELS {
                let above = |x: usize, y: usize| v.map[at(x, y)] / max >= level;
                let edge = inner_edge(width, height, &above);
                paint_dilated(img, &edge, stroke / 2, CONTOUR, |_, _| false);
            }
        }
        if let Some([r, c]) = v.marker.filter(|&[r, c]| r < v.rows && c < v.cols) {
            let r = if v.flip_rows { v.rows - 1 - r } else { r };
            let c = if v.flip_cols { v.cols - 1 - c } else { c };
            let cy = ((r as f64 + 0.5) * v.spacing[0] * px_per_mm) as i64;
            let cx = ((c as f64 + 0.5) * v.spacing[1] * px_per_mm) as i64;
            // A cross-hair with an open centre, so the voxel it marks (and a lesion there) stays
            // visible.
            let arm = ((width.min(height) as f64 * MARKER_ARM).round() as i64).max(4);
            let gap = arm / 2;
            let half = (stroke / 2) as i64;
            for d in (-arm..=arm).filter(|d| d.abs() > gap) {
                for t in -half..=half {
                    img.set_signed(cx + d, cy + t, MARKER);
                    img.set_signed(cx + t, cy + d, MARKER);
                }
            }
        }
        if let Some(mask) = v.outline.filter(|m| m.len() == v.rows * v.cols) {
            // Drawn just outside the lesion, so the heat on the lesion itself stays visible, and
            // last, so the outline is never broken.
            let inside = |x: usize, y: usize| mask[at(x, y)];
            let edge = inner_edge(width, height, &inside);
            paint_dilated(img, &edge, stroke, OUTLINE, inside);
        }
    }
    Layers {
        image,
        map,
        overlay,
        px_per_mm,
    }
}

/// Opacity of the colour over the slice at relative map value `m` ≥ `threshold`: from a floor that
/// keeps faint heat visible up to `MAX_ALPHA`, rising with the square root (a gamma of 0.5) so
/// moderate values are not washed out.
fn heat_alpha(m: f32, threshold: f32) -> f32 {
    let t = ((m - threshold) / (1.0 - threshold)).clamp(0.0, 1.0);
    ALPHA_FLOOR + (MAX_ALPHA - ALPHA_FLOOR) * t.powf(HEAT_GAMMA)
}

/// Pixels of the region `inside` with a 4-neighbour outside it (the image border is not an edge,
/// so a map that runs off the image draws no contour along the border).
fn inner_edge(width: usize, height: usize, inside: &dyn Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    let mut edge = vec![];
    for y in 0..height {
        for x in 0..width {
            if inside(x, y)
                && ((x > 0 && !inside(x - 1, y))
                    || (x + 1 < width && !inside(x + 1, y))
                    || (y > 0 && !inside(x, y - 1))
                    || (y + 1 < height && !inside(x, y + 1)))
            {
                edge.push((x, y));
            }
        }
    }
    edge
}

/// Paints the square of `radius` around each edge pixel, except where `skip` holds.
fn paint_dilated(
    img: &mut Image,
    edge: &[(usize, usize)],
    radius: usize,
    colour: [u8; 3],
    skip: impl Fn(usize, usize) -> bool,
) {
    let r = radius as i64;
    for &(x, y) in edge {
        for dy in -r..=r {
            for dx in -r..=r {
                let (px, py) = (x as i64 + dx, y as i64 + dy);
                if px >= 0
                    && py >= 0
                    && (px as usize) < img.width
                    && (py as usize) < img.height
                    && !skip(px as usize, py as usize)
                {
                    img.set(px as usize, py as usize, colour);
                }
            }
        }
    }
}

/// Where each panel of [`panel`] lies: x, y, width, height in pixels.
pub type Rect = [usize; 4];

/// The three layers side by side (image | map | overlay) with a caption under each; returns the
/// picture and where each layer lies in it.
pub fn panel(layers: &Layers) -> (Image, [Rect; 3]) {
    let tiles = [
        (&layers.image, "image"),
        (&layers.map, "map"),
        (&layers.overlay, "overlay"),
    ];
    let (w, h) = (layers.image.width, layers.image.height);
    let caption = 7 * TEXT_SCALE + 4;
    let mut img = Image::new(3 * w + 2 * MARGIN, h + caption);
    let mut rects = [[0; 4]; 3];
    for (i, (tile, name)) in tiles.iter().enumerate() {
        let x = i * (w + MARGIN);
        img.blit(tile, x, 0);
        img.text(x, h + 3, name, TEXT_SCALE, [255, 255, 255]);
        rects[i] = [x, 0, w, h];
    }
    (img, rects)
}

/// A slice overlay with a title line, the score line and a colour legend (0 at the bottom, 1 at
/// the top) on the right.
pub fn annotated(slice: &Image, lines: &[String]) -> Image {
    let white: Vec<(String, [u8; 3])> = lines.iter().map(|l| (l.clone(), [255, 255, 255])).collect();
    annotated_coloured(slice, &white, &Style::default())
}

/// [`annotated`] with a colour per text line (a key line in the outline's colour, say), the legend
/// in the style's colour map with the threshold marked on it.
pub fn annotated_coloured(slice: &Image, lines: &[(String, [u8; 3])], style: &Style) -> Image {
    let line_h = 7 * TEXT_SCALE + 4;
    let top = text_top(lines.len());
    let legend_x = slice.width + 2 * MARGIN;
    let label_w = 4 * 6 * TEXT_SCALE;
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
    let threshold_row = ((1.0 - style.threshold.clamp(0.0, 1.0)) * (bar_h - 1) as f32).round() as usize;
    for y in 0..bar_h {
        let v = 1.0 - y as f32 / (bar_h - 1) as f32;
        for x in 0..LEGEND_WIDTH {
            let c = if y == threshold_row {
                MARKER
            } else {
                style.colormap.color(v)
            };
            img.set(legend_x + x, top + y, c);
        }
    }
    let label_x = legend_x + LEGEND_WIDTH + 3;
    img.text(label_x, top, "1", TEXT_SCALE, [255, 255, 255]);
    let th = format!("{:.2}", style.threshold);
    let th_y = (top + threshold_row).saturating_sub(7 * TEXT_SCALE / 2);
    if th_y + 7 * TEXT_SCALE < top + bar_h - 7 * TEXT_SCALE && th_y > top + 7 * TEXT_SCALE {
        img.text(label_x, th_y, &th, TEXT_SCALE, [255, 255, 255]);
    }
    img.text(
        label_x,
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
            marker: None,
        };
        let img = render_slice(&v, [0.0, 2000.0], 100); // 9 output pixels per voxel (108 px)
        assert_eq!(img.width, 108);
        let stroke = stroke_width(&img);
        assert_eq!(stroke, 2);
        let red: Vec<(usize, usize)> = (0..img.height)
            .flat_map(|y| (0..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y) == OUTLINE)
            .collect();
        assert!(!red.is_empty());
        // Columns 1..4 shown mirrored: screen columns 8..11 → pixels 72..99; rows 4..7 → 36..63.
        // The outline is the ring of `stroke` pixels just outside them.
        let (x0, x1, y0, y1) = (72 - stroke, 99 + stroke, 36 - stroke, 63 + stroke);
        assert!(
            red.iter()
                .all(|&(x, y)| (x0..x1).contains(&x) && (y0..y1).contains(&y)),
            "{red:?}"
        );
        assert!(red
            .iter()
            .all(|&(x, y)| !((72..99).contains(&x) && (36..63).contains(&y))));
        assert!(red.iter().any(|&(x, _)| x == x0) && red.iter().any(|&(x, _)| x == x1 - 1));
        // Marker: voxel (5, 2) → screen column 9, centre pixel (85, 49); arms 8 % of the short side
        // (9 px), open for their first half so the marked voxel shows.
        let v = SliceView {
            marker: Some([5, 2]),
            outline: None,
            ..v
        };
        let img = render_slice(&v, [0.0, 2000.0], 100);
        assert_ne!(img.pixel(85, 49), MARKER);
        assert_ne!(img.pixel(85 + 4, 49), MARKER);
        assert_eq!(img.pixel(85 + 5, 49), MARKER);
        assert_eq!(img.pixel(85 + 9, 49), MARKER);
        assert_ne!(img.pixel(85 + 10, 49), MARKER);
        assert_eq!(img.pixel(85, 49 - 5), MARKER);
        assert_eq!(img.pixel(86, 49 - 5), MARKER, "arms are {stroke} pixels wide");
    }

    #[test]
    fn text_is_set_in_the_embedded_font_where_asked() {
        let mut img = Image::new(200, 60);
        img.text(10, 20, "P(nodule) = 0.9", 2, [255, 255, 255]);
        let lit: Vec<(usize, usize)> = (0..img.height)
            .flat_map(|y| (0..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y)[0] > 0)
            .collect();
        assert!(lit.len() > 100, "{} pixels", lit.len());
        // Near the corner given (brackets rise a few pixels above it), about 19 px tall, anti-aliased.
        assert!(
            lit.iter().all(|&(x, y)| x >= 10 && (14..40).contains(&y)),
            "{lit:?}"
        );
        assert!(lit.iter().any(|&(x, y)| img.pixel(x, y)[0] < 255));
    }

    #[test]
    fn heat_shows_above_the_threshold_and_contours_follow_the_levels() {
        // A left-to-right ramp from 0 to 1: grey below the threshold, coloured from it on.
        let (rows, cols) = (4usize, 100usize);
        let hu = vec![0i16; rows * cols];
        let map: Vec<f32> = (0..rows * cols).map(|i| (i % cols) as f32 / 99.0).collect();
        let v = SliceView {
            hu: &hu,
            map: &map,
            rows,
            cols,
            spacing: [1.0, 1.0],
            flip_cols: false,
            flip_rows: false,
            outline: None,
            marker: None,
        };
        let style = Style {
            threshold: 0.3,
            contours: true,
            ..Style::default()
        };
        let layers = render_layers(&v, [0.0, 2000.0], 4, &style);
        let grey = |c: [u8; 3]| c[0] == c[1] && c[1] == c[2];
        let img = &layers.overlay;
        for x in 0..cols {
            let c = img.pixel(x, 0);
            let m = x as f32 / 99.0;
            if m < 0.3 {
                assert!(grey(c), "x {x}: {c:?}");
            } else if c != CONTOUR {
                assert!(!grey(c), "x {x}: {c:?}");
                // At least half the colour at the threshold already.
                let want = style.colormap.color(m);
                let a = (c[0] as f32 - 128.0) / (want[0] as f32 - 128.0);
                assert!(
                    (0.49..=0.86).contains(&a) || want[0].abs_diff(128) < 20,
                    "x {x}: {a}"
                );
            }
        }
        // Contours at 0.5 and 0.8 of the maximum: columns 50 and 80 (and their stroke), nowhere else.
        let black: Vec<usize> = (0..cols).filter(|&x| img.pixel(x, 2) == CONTOUR).collect();
        assert!(black.contains(&50) && black.contains(&80), "{black:?}");
        assert!(
            black
                .iter()
                .all(|&x| (49..=51).contains(&x) || (79..=81).contains(&x)),
            "{black:?}"
        );
        // The map layer shows every value; the image layer none.
        assert!(!grey(layers.map.pixel(10, 0)));
        assert!((0..cols).all(|x| grey(layers.image.pixel(x, 0))));
    }
}
