//! Charts for reports, drawn with `plotters`: PNG for the report, SVG beside it, and the plotted data
//! as JSON beside both, so what a figure shows can be checked against the numbers it came from.
//! Text is set in DejaVu Sans, embedded in the binary (no fontconfig or freetype on the nodes).
//! Series are told apart by colour (Okabe–Ito, colour-blind safe) and by line style, so lines that lie
//! on top of each other stay visible.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    #[default]
    Solid,
    Dashed,
    Dotted,
    /// A thin, light line (raw values under a smoothed one).
    Faint,
    /// Markers only, no line.
    Points,
    /// Markers joined by a line.
    LinePoints,
}

/// One named curve, drawn in the given order; non-finite points are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    /// Legend text; an empty name gives no legend entry.
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// Index into the palette.
    pub colour: usize,
}

/// A filled interval around a curve: `lower` and `upper` at the same x values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Band {
    pub name: String,
    pub lower: Vec<(f64, f64)>,
    pub upper: Vec<(f64, f64)>,
    pub colour: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Fixed axis ranges; otherwise the data's range with a margin.
    pub x_range: Option<[f64; 2]>,
    pub y_range: Option<[f64; 2]>,
    pub bands: Vec<Band>,
    pub series: Vec<Series>,
    /// A line of text in the plot's corner (a test statistic, say).
    pub note: Option<String>,
}

/// Okabe–Ito colours, the most distinct first; yellow (faint on white) and black come last.
pub const PALETTE: [(u8, u8, u8); 8] = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (213, 94, 0),
    (204, 121, 167),
    (86, 180, 233),
    (240, 228, 66),
    (0, 0, 0),
];

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Registers the embedded font under the family plotters asks for (once per process).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is a fixed, valid TTF; registration can only fail on a corrupt one.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// The range of `values` widened by 5 % on each side (1 around a single value).
fn span(values: impl Iterator<Item = f64>) -> [f64; 2] {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return [0.0, 1.0];
    }
    if hi - lo < 1e-12 {
        return [lo - 0.5, hi + 0.5];
    }
    let pad = 0.05 * (hi - lo);
    [lo - pad, hi + pad]
}

impl Chart {
    fn ranges(&self) -> ([f64; 2], [f64; 2]) {
        let all = || {
            self.series.iter().flat_map(|s| finite(&s.points)).chain(
                self.bands
                    .iter()
                    .flat_map(|b| finite(&b.lower).chain(finite(&b.upper))),
            )
        };
        (
            self.x_range.unwrap_or_else(|| span(all().map(|p| p.0))),
            self.y_range.unwrap_or_else(|| span(all().map(|p| p.1))),
        )
    }

    /// PNG bytes of the chart, `width`×`height` pixels.
    pub fn png(&self, width: u32, height: u32) -> Result<Vec<u8>, String> {
        register_font();
        let mut rgb = vec![0u8; (width * height * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(|e| format!("{e:?}"))?;
        }
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// SVG text of the chart.
    pub fn svg(&self, width: u32, height: u32) -> Result<String, String> {
        register_font();
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(|e| format!("{e:?}"))?;
        }
        Ok(text)
    }

    /// `<stem>.png`, `<stem>.svg` and `<stem>.json` (this chart's data) under `dir`, each written
    /// atomically.
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<()> {
        let bad = |e: String| std::io::Error::other(format!("{stem}: {e}"));
        let png = self.png(WIDTH, HEIGHT).map_err(bad)?;
        let svg = self.svg(WIDTH, HEIGHT).map_err(bad)?;
        let json = serde_json::to_string_pretty(self).map_err(|e| bad(e.to_string()))?;
        crate::fsx::write_atomic(&dir.join(format!("{stem}.png")), &png)?;
        crate::fsx::write_atomic(&dir.join(format!("{stem}.svg")), svg.as_bytes())?;
        crate::fsx::write_atomic(&dir.join(format!("{stem}.json")), format!("{json}\n").as_bytes())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
        root.fill(&WHITE).map_err(err)?;
        let ([x0, x1], [y0, y1]) = self.ranges();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(err)?;
        for band in &self.bands {
            let mut outline: Vec<(f64, f64)> = finite(&band.lower).collect();
            outline.extend(finite(&band.upper).collect::<Vec<_>>().into_iter().rev());
            if outline.len() < 3 {
                continue;
            }
            let fill = colour(band.colour).mix(0.18).filled();
            let drawn = chart
                .draw_series(std::iter::once(Polygon::new(outline, fill)))
                .map_err(err)?;
            if !band.name.is_empty() {
                drawn
                    .label(band.name.as_str())
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], fill));
            }
        }
        let mut legend = false;
        for s in &self.series {
            let c = colour(s.colour);
            let points: Vec<(f64, f64)> = finite(&s.points).collect();
            let line = match s.style {
                Style::Faint => c.mix(0.3).stroke_width(1),
                _ => c.stroke_width(2),
            };
            let drawn = match s.style {
                Style::Solid | Style::Faint => {
                    chart.draw_series(LineSeries::new(points, line)).map_err(err)?
                }
                Style::Dashed => chart
                    .draw_series(DashedLineSeries::new(points, 10, 6, line))
                    .map_err(err)?,
                Style::Dotted => chart
                    .draw_series(DashedLineSeries::new(points, 3, 4, line))
                    .map_err(err)?,
                Style::Points => chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                    .map_err(err)?,
                Style::LinePoints => chart
                    .draw_series(LineSeries::new(points, line).point_size(4))
                    .map_err(err)?,
            };
            if !s.name.is_empty() {
                legend = true;
                let style = s.style;
                let (radius, path) = match style {
                    Style::Points => (4, c.mix(0.0).stroke_width(0)),
                    Style::LinePoints => (4, c.stroke_width(2)),
                    Style::Faint => (0, c.mix(0.3).stroke_width(1)),
                    _ => (0, c.stroke_width(2)),
                };
                drawn.label(s.name.as_str()).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (20, 0)], path)
                        + Circle::new((10, 0), radius, c.filled())
                });
            }
        }
        if legend || self.bands.iter().any(|b| !b.name.is_empty()) {
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }
        if let Some(note) = &self.note {
            let (w, h) = root.dim_in_pixel();
            root.draw(&Text::new(
                note.as_str(),
                (w as i32 - 12 - 8 * note.chars().count() as i32, h as i32 - 20),
                ("sans-serif", 14).into_font().color(&BLACK),
            ))
            .map_err(err)?;
        }
        Ok(())
    }
}

/// Writes `text` in DejaVu Sans, `size` pixels high, with its top-left corner at (`x`, `y`), into an
/// RGB buffer of `width`×`height` pixels (row-major, 3 bytes a pixel), anti-aliased over what is there.
pub fn draw_text(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    (x, y): (i32, i32),
    text: &str,
    size: f64,
    c: [u8; 3],
) {
    register_font();
    if rgb.len() != (width * height * 3) as usize {
        return;
    }
    let root = BitMapBackend::with_buffer(rgb, (width, height)).into_drawing_area();
    let style = ("sans-serif", size)
        .into_font()
        .color(&RGBColor(c[0], c[1], c[2]));
    // Drawing text into a buffer of the right size cannot fail; a glyph the font lacks is skipped.
    let _ = root.draw(&Text::new(text.to_string(), (x, y), style));
    let _ = root.present();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "a title".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            bands: vec![Band {
                name: "95% band".into(),
                lower: vec![(0.0, 0.0), (1.0, 0.5)],
                upper: vec![(0.0, 0.5), (1.0, 1.0)],
                colour: 0,
            }],
            series: vec![
                Series {
                    name: "one".into(),
                    points: vec![(0.0, 0.25), (1.0, 0.75), (2.0, f64::NAN)],
                    style: Style::Solid,
                    colour: 0,
                },
                Series {
                    name: "two".into(),
                    points: vec![(0.0, 0.25), (1.0, 0.75)],
                    style: Style::Dashed,
                    colour: 1,
                },
            ],
            note: Some("p = 0.01".into()),
            ..Chart::default()
        }
    }

    #[test]
    fn a_chart_draws_as_png_svg_and_json() {
        let c = chart();
        let png = c.png(WIDTH, HEIGHT).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        // Both series' colours are drawn, and text is rendered (dark pixels besides the lines).
        let has = |rgb: (u8, u8, u8)| buf.chunks(3).any(|p| (p[0], p[1], p[2]) == rgb);
        assert!(has(PALETTE[0]) && has(PALETTE[1]));
        let svg = c.svg(WIDTH, HEIGHT).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("a title") && svg.contains("p = 0.01"));
        let dir = std::env::temp_dir().join(format!("medtrain-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        c.write(&dir, "c").unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("c.json")).unwrap()).unwrap();
        assert_eq!(json["series"][1]["style"], "dashed");
        assert_eq!(json["series"][0]["points"][1][1], 0.75);
        assert!(dir.join("c.png").is_file() && dir.join("c.svg").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ranges_cover_the_data_and_bands() {
        let ([x0, x1], [y0, y1]) = chart().ranges();
        assert!(
            x0 < 0.0 && x1 > 1.0 && y0 < 0.0 && y1 > 1.0,
            "{x0} {x1} {y0} {y1}"
        );
        assert_eq!(span(std::iter::empty()), [0.0, 1.0]);
        assert_eq!(span([2.0].into_iter()), [1.5, 2.5]);
    }
}
