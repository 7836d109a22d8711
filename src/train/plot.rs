//! Loss and metric curves written as PNG files next to the run's logs, so a run on a cluster can be
//! followed without a plotting stack: axes with "nice" ticks, a title, a legend, one colour-blind-safe
//! colour per series, text from a small embedded 5×7 bitmap font.

use crate::font::glyph;
use std::path::Path;

/// One named curve; points are drawn in the given order, non-finite points are skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

pub type Rgb = [u8; 3];

/// Okabe–Ito colours, ordered so that the first series get the most distinct ones; yellow (hard to see
/// on white) and black (the colour of the axes' ink family) come last. Series beyond eight reuse them.
pub const PALETTE: [Rgb; 8] = [
    [0, 114, 178],   // blue
    [230, 159, 0],   // orange
    [0, 158, 115],   // bluish green
    [213, 94, 0],    // vermillion
    [204, 121, 167], // reddish purple
    [86, 180, 233],  // sky blue
    [240, 228, 66],  // yellow
    [0, 0, 0],       // black
];
pub const BACKGROUND: Rgb = [255, 255, 255];
/// Axes, ticks and text: a dark grey, distinct from the black series colour.
pub const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [228, 228, 228];

/// Ticks the axis aims for; the nice step may give a few more or fewer.
const TARGET_TICKS: f64 = 6.0;
/// Glyph cell of the bitmap font, in font pixels (5×7 glyph plus one column and row of spacing).
const GLYPH_W: i64 = 5;
const GLYPH_H: i64 = 7;
const ADVANCE: i64 = GLYPH_W + 1;

/// Colour of series `i`.
pub fn series_colour(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

/// One axis: data interval `lo..hi` (widened to multiples of `step`) mapped linearly onto pixels
/// `pixel_lo..pixel_hi` (for the y axis `pixel_lo` is the bottom, so it is the larger pixel row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
    pub pixel_lo: f64,
    pub pixel_hi: f64,
}

impl Axis {
    /// Pixel coordinate (column for x, row for y) of data value `v`.
    pub fn to_pixel(&self, v: f64) -> f64 {
        self.pixel_lo + (v - self.lo) / (self.hi - self.lo) * (self.pixel_hi - self.pixel_lo)
    }

    /// Tick values from `lo` to `hi`, computed as integer multiples of `step` so no error accumulates.
    pub fn ticks(&self) -> Vec<f64> {
        let first = (self.lo / self.step).round() as i64;
        let last = (self.hi / self.step).round() as i64;
        (first..=last).map(|k| k as f64 * self.step).collect()
    }

    fn label(&self, v: f64) -> String {
        let magnitude = self.lo.abs().max(self.hi.abs());
        if magnitude >= 1e6 || self.step < 1e-4 {
            format!("{v:.2e}")
        } else {
            let decimals = if self.step >= 1.0 {
                0
            } else {
                (-self.step.log10().floor()) as usize
            };
            format!("{v:.decimals$}")
        }
    }
}

/// A pixel rectangle, edges inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl Rect {
    pub fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.left && x <= self.right && y >= self.top && y <= self.bottom
    }

    fn is_empty(&self) -> bool {
        self.right <= self.left || self.bottom <= self.top
    }
}

/// Where everything goes on the image; `render_png` draws exactly this, and tests map data to pixels
/// with the same axes.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Size of one font pixel in image pixels.
    pub scale: i64,
    pub plot: Rect,
    pub x: Axis,
    pub y: Axis,
    /// The legend box; `None` without series.
    pub legend: Option<Rect>,
}

/// Lays out `chart` on a `width`×`height` image (each at least 1).
pub fn frame(chart: &Chart, width: u32, height: u32) -> Frame {
    let (width, height) = (width.max(1), height.max(1));
    let scale: i64 = if width >= 480 && height >= 320 { 2 } else { 1 };
    let (char_w, char_h) = (ADVANCE * scale, GLYPH_H * scale);
    let finite = || chart.series.iter().flat_map(finite_points);
    let (x_lo, x_hi, x_step) = nice_range(finite().map(|p| p.0));
    let (y_lo, y_hi, y_step) = nice_range(finite().map(|p| p.1));
    let mut y = Axis {
        lo: y_lo,
        hi: y_hi,
        step: y_step,
        pixel_lo: 0.0,
        pixel_hi: 0.0,
    };
    let widest_y_label = y
        .ticks()
        .iter()
        .map(|&v| y.label(v).len() as i64)
        .max()
        .unwrap_or(1);
    let tick = 4 * scale;
    let gap = 4 * scale;
    let title_h = if chart.title.is_empty() {
        0
    } else {
        char_h + 2 * gap
    };
    let x_label_h = if chart.x_label.is_empty() { 0 } else { char_h + gap };
    let y_label_w = if chart.y_label.is_empty() { 0 } else { char_h + gap };
    let plot = Rect {
        left: gap + y_label_w + widest_y_label * char_w + gap + tick,
        top: title_h + 3 * gap,
        right: width as i64 - 1 - 4 * gap,
        bottom: height as i64 - 1 - (tick + gap + char_h + gap + x_label_h + gap),
    };
    let x = Axis {
        lo: x_lo,
        hi: x_hi,
        step: x_step,
        pixel_lo: plot.left as f64,
        pixel_hi: plot.right as f64,
    };
    y.pixel_lo = plot.bottom as f64;
    y.pixel_hi = plot.top as f64;
    let mut frame = Frame {
        width,
        height,
        scale,
        plot,
        x,
        y,
        legend: None,
    };
    frame.legend = place_legend(chart, &frame);
    frame
}

fn finite_points(series: &Series) -> impl Iterator<Item = (f64, f64)> + '_ {
    series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// Smallest interval of 1, 2 or 5 × 10^k steps around the values; (0, 1) without values, and a
/// widened interval when all values are equal.
fn nice_range(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo, hi) = (lo - pad, hi + pad);
    }
    let raw = (hi - lo) / TARGET_TICKS;
    let magnitude = 10f64.powf(raw.log10().floor());
    let nice = match raw / magnitude {
        f if f <= 1.0 => 1.0,
        f if f <= 2.0 => 2.0,
        f if f <= 5.0 => 5.0,
        _ => 10.0,
    };
    let step = nice * magnitude;
    let (nice_lo, nice_hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    if !(step > 0.0 && nice_lo.is_finite() && nice_hi.is_finite() && nice_hi > nice_lo) {
        return (0.0, 1.0, 0.2); // values near the limits of f64: no sensible axis
    }
    (nice_lo, nice_hi, step)
}

/// Puts the legend in the plot corner that the curves cross least (top right on a tie).
fn place_legend(chart: &Chart, frame: &Frame) -> Option<Rect> {
    if chart.series.is_empty() {
        return None;
    }
    let s = frame.scale;
    let longest = chart
        .series
        .iter()
        .map(|series| series.name.chars().count() as i64)
        .max()
        .unwrap_or(0);
    let w = 3 * s + 10 * s + 3 * s + longest * ADVANCE * s + 3 * s;
    let h = 2 * s + chart.series.len() as i64 * LEGEND_ROW * s + s;
    let p = frame.plot;
    let inset = 4 * s;
    let corners = [
        (p.right - inset - w, p.top + inset),        // top right
        (p.left + inset, p.top + inset),             // top left
        (p.right - inset - w, p.bottom - inset - h), // bottom right
        (p.left + inset, p.bottom - inset - h),      // bottom left
    ];
    let boxes = corners.map(|(left, top)| Rect {
        left,
        top,
        right: left + w,
        bottom: top + h,
    });
    let mut crossings = [0usize; 4];
    for series in &chart.series {
        let points: Vec<(f64, f64)> = finite_points(series)
            .map(|(x, y)| (frame.x.to_pixel(x), frame.y.to_pixel(y)))
            .collect();
        for pair in points.windows(2) {
            walk_segment(pair[0], pair[1], |x, y| {
                for (count, b) in crossings.iter_mut().zip(&boxes) {
                    *count += b.contains(x, y) as usize;
                }
            });
        }
        for &(x, y) in points.iter().take(1) {
            for (count, b) in crossings.iter_mut().zip(&boxes) {
                *count += b.contains(x.round() as i64, y.round() as i64) as usize;
            }
        }
    }
    let best = (0..4).min_by_key(|&i| (crossings[i], i)).unwrap_or(0);
    Some(boxes[best])
}

/// Legend row height in font pixels.
const LEGEND_ROW: i64 = 10;

/// Renders the chart as an 8-bit RGB PNG.
pub fn render_png(chart: &Chart, width: u32, height: u32) -> Vec<u8> {
    let frame = frame(chart, width, height);
    let mut canvas = Canvas::new(frame.width, frame.height);
    draw(&mut canvas, chart, &frame);
    canvas.encode()
}

/// Writes the chart as a PNG (800×500) to `path` atomically: a temporary file beside it, then a rename.
pub fn write_png(chart: &Chart, path: &Path) -> std::io::Result<()> {
    let bytes = render_png(chart, DEFAULT_WIDTH, DEFAULT_HEIGHT);
    crate::fsx::write_atomic(path, &bytes)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing plot {}: {e}", path.display())))
}

pub const DEFAULT_WIDTH: u32 = 800;
pub const DEFAULT_HEIGHT: u32 = 500;

fn draw(canvas: &mut Canvas, chart: &Chart, frame: &Frame) {
    let (s, p) = (frame.scale, frame.plot);
    let char_h = GLYPH_H * s;
    let gap = 4 * s;
    if !p.is_empty() {
        for v in frame.x.ticks() {
            let px = frame.x.to_pixel(v).round() as i64;
            canvas.fill(
                Rect {
                    left: px,
                    right: px,
                    top: p.top,
                    bottom: p.bottom,
                },
                GRID,
            );
            canvas.fill(
                Rect {
                    left: px,
                    right: px,
                    top: p.bottom,
                    bottom: p.bottom + gap,
                },
                INK,
            );
            let label = frame.x.label(v);
            let x = px - text_width(&label, s) / 2;
            canvas.text(x, p.bottom + 2 * gap, &label, s, INK);
        }
        for v in frame.y.ticks() {
            let py = frame.y.to_pixel(v).round() as i64;
            canvas.fill(
                Rect {
                    left: p.left,
                    right: p.right,
                    top: py,
                    bottom: py,
                },
                GRID,
            );
            canvas.fill(
                Rect {
                    left: p.left - gap,
                    right: p.left,
                    top: py,
                    bottom: py,
                },
                INK,
            );
            let label = frame.y.label(v);
            canvas.text(
                p.left - 2 * gap - text_width(&label, s),
                py - char_h / 2,
                &label,
                s,
                INK,
            );
        }
        canvas.fill(
            Rect {
                left: p.left,
                right: p.left + s - 1,
                top: p.top,
                bottom: p.bottom,
            },
            INK,
        );
        canvas.fill(
            Rect {
                left: p.left,
                right: p.right,
                top: p.bottom - s + 1,
                bottom: p.bottom,
            },
            INK,
        );
        for (i, series) in chart.series.iter().enumerate() {
            draw_series(canvas, series, frame, series_colour(i));
        }
        if let Some(legend) = frame.legend {
            draw_legend(canvas, chart, legend, s);
        }
    }
    let centre = frame.width as i64 / 2;
    canvas.text(
        centre - text_width(&chart.title, s) / 2,
        2 * gap,
        &chart.title,
        s,
        INK,
    );
    let x_label_top = frame.height as i64 - 1 - gap - char_h;
    let x_centre = (p.left + p.right) / 2;
    canvas.text(
        x_centre - text_width(&chart.x_label, s) / 2,
        x_label_top,
        &chart.x_label,
        s,
        INK,
    );
    let y_centre = (p.top + p.bottom) / 2;
    canvas.text_up(
        gap,
        y_centre + text_width(&chart.y_label, s) / 2,
        &chart.y_label,
        s,
        INK,
    );
}

fn draw_series(canvas: &mut Canvas, series: &Series, frame: &Frame, colour: Rgb) {
    let s = frame.scale;
    let points: Vec<(f64, f64)> = finite_points(series)
        .map(|(x, y)| (frame.x.to_pixel(x), frame.y.to_pixel(y)))
        .collect();
    let half = s / 2; // line width s + 1
    let clip = frame.plot;
    for pair in points.windows(2) {
        walk_segment(pair[0], pair[1], |x, y| {
            canvas.fill_clipped(
                Rect {
                    left: x - half,
                    right: x + s - half,
                    top: y - half,
                    bottom: y + s - half,
                },
                colour,
                clip,
            )
        });
    }
    if let [(x, y)] = points[..] {
        canvas.disc(x.round() as i64, y.round() as i64, 2 * s + 1, colour, clip);
    }
}

fn draw_legend(canvas: &mut Canvas, chart: &Chart, legend: Rect, s: i64) {
    canvas.fill(legend, BACKGROUND);
    canvas.outline(legend, INK);
    for (i, series) in chart.series.iter().enumerate() {
        let row_top = legend.top + 2 * s + i as i64 * LEGEND_ROW * s;
        let mid = row_top + GLYPH_H * s / 2;
        let swatch = Rect {
            left: legend.left + 3 * s,
            right: legend.left + 13 * s - 1,
            top: mid - s / 2,
            bottom: mid + s - s / 2,
        };
        canvas.fill(swatch, series_colour(i));
        canvas.text(legend.left + 16 * s, row_top, &series.name, s, INK);
    }
}

/// Visits the pixels of the segment between two pixel positions (a DDA, one visit per major-axis step).
fn walk_segment((x0, y0): (f64, f64), (x1, y1): (f64, f64), mut visit: impl FnMut(i64, i64)) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0);
    if !steps.is_finite() || steps > 1e7 {
        return;
    }
    for i in 0..=steps as i64 {
        let t = i as f64 / steps;
        visit(
            (x0 + t * (x1 - x0)).round() as i64,
            (y0 + t * (y1 - y0)).round() as i64,
        );
    }
}

fn text_width(text: &str, scale: i64) -> i64 {
    (text.chars().count() as i64 * ADVANCE - 1).max(0) * scale
}

/// An RGB image with clipped drawing primitives.
struct Canvas {
    width: i64,
    height: i64,
    rgb: Vec<u8>, // (height, width, 3)
}

impl Canvas {
    fn new(width: u32, height: u32) -> Canvas {
        let rgb = BACKGROUND.repeat(width as usize * height as usize);
        Canvas {
            width: width as i64,
            height: height as i64,
            rgb,
        }
    }

    fn set(&mut self, x: i64, y: i64, colour: Rgb) {
        if x >= 0 && y >= 0 && x < self.width && y < self.height {
            let at = 3 * (y * self.width + x) as usize;
            self.rgb[at..at + 3].copy_from_slice(&colour);
        }
    }

    fn fill(&mut self, r: Rect, colour: Rgb) {
        let all = Rect {
            left: 0,
            top: 0,
            right: self.width - 1,
            bottom: self.height - 1,
        };
        self.fill_clipped(r, colour, all);
    }

    fn fill_clipped(&mut self, r: Rect, colour: Rgb, clip: Rect) {
        for y in r.top.max(clip.top)..=r.bottom.min(clip.bottom) {
            for x in r.left.max(clip.left)..=r.right.min(clip.right) {
                self.set(x, y, colour);
            }
        }
    }

    fn outline(&mut self, r: Rect, colour: Rgb) {
        self.fill(Rect { bottom: r.top, ..r }, colour);
        self.fill(Rect { top: r.bottom, ..r }, colour);
        self.fill(Rect { right: r.left, ..r }, colour);
        self.fill(Rect { left: r.right, ..r }, colour);
    }

    fn disc(&mut self, cx: i64, cy: i64, radius: i64, colour: Rgb, clip: Rect) {
        for y in cy - radius..=cy + radius {
            for x in cx - radius..=cx + radius {
                if (x - cx).pow(2) + (y - cy).pow(2) <= radius * radius && clip.contains(x, y) {
                    self.set(x, y, colour);
                }
            }
        }
    }

    /// Left-to-right text with its top-left corner at (x, y).
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, colour: Rgb) {
        self.glyphs(text, scale, colour, |gx, gy| (x + gx, y + gy));
    }

    /// Bottom-to-top text (rotated a quarter turn anticlockwise) starting at (x, y), its bottom-left.
    fn text_up(&mut self, x: i64, y: i64, text: &str, scale: i64, colour: Rgb) {
        self.glyphs(text, scale, colour, |gx, gy| (x + gy, y - gx));
    }

    /// Draws the glyphs of `text`; `place` maps a pixel offset along the text (gx) and down a glyph
    /// (gy) to the image.
    fn glyphs(&mut self, text: &str, scale: i64, colour: Rgb, place: impl Fn(i64, i64) -> (i64, i64)) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let gx = (i as i64 * ADVANCE + col) * scale + dx;
                            let (x, y) = place(gx, row as i64 * scale + dy);
                            self.set(x, y, colour);
                        }
                    }
                }
            }
        }
    }

    fn encode(&self) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Decoded {
        width: i64,
        rgb: Vec<u8>,
    }

    impl Decoded {
        fn at(&self, x: i64, y: i64) -> Rgb {
            let i = 3 * (y * self.width + x) as usize;
            [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
        }

        fn count_in(&self, r: Rect, colour: Rgb) -> usize {
            (r.top..=r.bottom)
                .flat_map(|y| (r.left..=r.right).map(move |x| (x, y)))
                .filter(|&(x, y)| self.at(x, y) == colour)
                .count()
        }

        fn near(&self, x: f64, y: f64, radius: i64, colour: Rgb) -> bool {
            let (x, y) = (x.round() as i64, y.round() as i64);
            self.count_in(
                Rect {
                    left: x - radius,
                    right: x + radius,
                    top: y - radius,
                    bottom: y + radius,
                },
                colour,
            ) > 0
        }
    }

    /// Decodes with the png crate's decoder, checking the format on the way.
    fn decode(bytes: &[u8], width: u32, height: u32) -> Decoded {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!((info.width, info.height), (width, height));
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        rgb.truncate(info.buffer_size());
        Decoded {
            width: width as i64,
            rgb,
        }
    }

    fn diagonal() -> Chart {
        Chart {
            title: "Validation AUC".into(),
            x_label: "epoch".into(),
            y_label: "auc".into(),
            series: vec![Series {
                name: "train loss".into(),
                points: vec![(0.0, 0.0), (10.0, 10.0)],
            }],
        }
    }

    #[test]
    fn nice_ranges() {
        assert_eq!(nice_range([0.0, 0.93].into_iter()), (0.0, 1.0, 0.2));
        assert_eq!(nice_range([-3.2, 17.0].into_iter()), (-5.0, 20.0, 5.0));
        assert_eq!(nice_range(std::iter::empty()), (0.0, 1.0, 0.2));
        let (lo, hi, _) = nice_range([5.0, 5.0].into_iter());
        assert!(lo < 5.0 && hi > 5.0);
        let (lo, hi, step) = nice_range([0.0, 1e308, -1e308].into_iter());
        assert!(lo < hi && step > 0.0);
        let axis = Axis {
            lo: 0.0,
            hi: 1.0,
            step: 0.1,
            pixel_lo: 0.0,
            pixel_hi: 100.0,
        };
        let labels: Vec<String> = axis.ticks().iter().map(|&v| axis.label(v)).collect();
        assert_eq!(labels.len(), 11);
        assert_eq!((labels[3].as_str(), labels[10].as_str()), ("0.3", "1.0"));
    }

    #[test]
    fn size_and_background() {
        let bytes = render_png(&diagonal(), 640, 400);
        let image = decode(&bytes, 640, 400);
        assert_eq!(image.at(0, 0), BACKGROUND);
        assert_eq!(image.at(639, 399), BACKGROUND);
        let small = render_png(&diagonal(), 200, 120);
        decode(&small, 200, 120);
    }

    #[test]
    fn diagonal_line_lies_on_the_mapped_diagonal() {
        let chart = diagonal();
        let (w, h) = (800, 500);
        let image = decode(&render_png(&chart, w, h), w, h);
        let f = frame(&chart, w, h);
        let colour = series_colour(0);
        for i in 0..=50 {
            let v = 10.0 * i as f64 / 50.0;
            let (px, py) = (f.x.to_pixel(v), f.y.to_pixel(v));
            assert!(
                image.near(px, py, 2, colour),
                "no line pixel near data ({v}, {v}) = pixel ({px}, {py})"
            );
        }
        // Independently of the axis functions: the data spans the nice range 0..10 exactly, so the line
        // runs from the plot's bottom-left corner to its top-right corner, where the axis lines are.
        let p = f.plot;
        assert_eq!((f.x.lo, f.x.hi, f.y.lo, f.y.hi), (0.0, 10.0, 0.0, 10.0));
        assert!(image.near(p.left as f64, p.bottom as f64, 2, colour));
        assert!(image.near(p.right as f64, p.top as f64, 2, colour));
        assert!(image.near(
            ((p.left + p.right) / 2) as f64,
            ((p.top + p.bottom) / 2) as f64,
            2,
            colour
        ));
        assert_eq!(image.at((p.left + p.right) / 2, p.bottom), INK, "x axis line");
        assert_eq!(image.at(p.left, (p.top + p.bottom) / 2), INK, "y axis line");
        // And not on the other diagonal.
        let (px, py) = (f.x.to_pixel(2.0), f.y.to_pixel(8.0));
        assert!(!image.near(px, py, 4, colour));
        // Data spans the axes: the corners of the data map inside the plot.
        assert!(f
            .plot
            .contains(f.x.to_pixel(0.0) as i64, f.y.to_pixel(0.0) as i64));
        assert!(f
            .plot
            .contains(f.x.to_pixel(10.0) as i64, f.y.to_pixel(10.0) as i64));
    }

    #[test]
    fn legend_has_swatch_and_text_away_from_the_curve() {
        let mut chart = diagonal();
        chart.series.push(Series {
            name: "val loss".into(),
            points: vec![(0.0, 1.0), (10.0, 1.0)],
        });
        let image = decode(&render_png(&chart, 800, 500), 800, 500);
        let f = frame(&chart, 800, 500);
        let legend = f.legend.unwrap();
        // The diagonal crosses the top-right and bottom-left corners; the flat line the bottom ones.
        assert_eq!(
            (
                legend.left < (f.plot.left + f.plot.right) / 2,
                legend.top < (f.plot.top + f.plot.bottom) / 2
            ),
            (true, true)
        );
        let inside = Rect {
            left: legend.left + 1,
            top: legend.top + 1,
            right: legend.right - 1,
            bottom: legend.bottom - 1,
        };
        assert!(image.count_in(inside, INK) > 40, "legend text missing");
        assert!(image.count_in(inside, series_colour(0)) > 10);
        assert!(image.count_in(inside, series_colour(1)) > 10);
        // The title is drawn above the plot.
        let above = Rect {
            left: 0,
            top: 0,
            right: 799,
            bottom: f.plot.top - 1,
        };
        assert!(image.count_in(above, INK) > 40);
    }

    #[test]
    fn non_finite_points_are_skipped_and_single_points_are_dots() {
        let chart = Chart {
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(0.0, 0.0), (1.0, f64::NAN), (f64::INFINITY, 2.0), (4.0, 4.0)],
                },
                Series {
                    name: "b".into(),
                    points: vec![(2.0, 1.0)],
                },
                Series {
                    name: "c".into(),
                    points: vec![(f64::NAN, f64::NAN)],
                },
            ],
            ..Chart::default()
        };
        let image = decode(&render_png(&chart, 640, 400), 640, 400);
        let f = frame(&chart, 640, 400);
        assert_eq!((f.x.hi, f.y.hi), (4.0, 4.0));
        let (px, py) = (f.x.to_pixel(2.0), f.y.to_pixel(2.0));
        assert!(
            image.near(px, py, 2, series_colour(0)),
            "segment over the skipped points"
        );
        let (px, py) = (f.x.to_pixel(2.0), f.y.to_pixel(1.0));
        assert!(image.near(px, py, 1, series_colour(1)), "single point not drawn");
        let plot = f.plot;
        assert!(image.count_in(plot, series_colour(1)) >= 9, "a dot, not a pixel");
    }

    #[test]
    fn empty_chart_is_a_valid_png() {
        let image = decode(&render_png(&Chart::default(), 300, 200), 300, 200);
        assert_eq!(image.at(150, 100), BACKGROUND);
        decode(&render_png(&Chart::default(), 0, 0), 1, 1);
        decode(&render_png(&diagonal(), 3, 2), 3, 2);
    }

    #[test]
    fn write_png_is_atomic_and_decodable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        write_png(&diagonal(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        decode(&bytes, DEFAULT_WIDTH, DEFAULT_HEIGHT);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("loss.png")]);
        let missing = dir.path().join("no/such/dir/loss.png");
        let err = write_png(&diagonal(), &missing).unwrap_err();
        assert!(err.to_string().contains("loss.png"), "{err}");
    }
}
