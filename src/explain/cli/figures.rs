//! What `explain` writes per series: the overlay panel with its geometry, the montage, the map
//! dataset in `maps.h5`, and the head of the report.

use super::*;

/// The head of `report.md`: what the maps are and how the overlays are drawn.
pub(super) fn report_header(p: &Plan) -> String {
    format!(
        "# Explanations of {} on split {}\n\nMaps of `{}` (output {}), up-sampled with {} cells, min-max \
         normalised per series, mapped back into each series' pack grid. Overlays in radiological orientation \
         (patient right on image left) as image | map | overlay, CT window {:?} (center, width HU), {} colour \
         map over the slice where the map is at least {} of its series maximum, reference lesions outlined in \
         red where known, the map maximum marked +; montages show the {} slices with the strongest map. Raw \
         maps: `maps.h5` (group per method, then per layer, dataset per series key).\n\n",
        p.ck.dir.display(),
        p.split,
        p.target_name,
        p.output,
        p.upsample.name(),
        p.window,
        p.style.colormap.name(),
        p.style.threshold,
        MONTAGE_SLICES
    )
}

pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    crate::fsx::write_atomic(path, bytes).map_err(|e| job(format!("{}: {e}", path.display())))
}

/// One series' maps at one layer, with what is known of its lesions, for writing out.
#[derive(Clone, Copy)]
pub(super) struct Explained<'a> {
    pub(super) g: &'a SeriesSamples,
    pub(super) sm: &'a SeriesMaps,
    /// Which of `sm.layers`.
    pub(super) index: usize,
    pub(super) layer: &'a CamLayer,
    pub(super) method: Method,
    /// Reference lesion voxels on the pack grid.
    pub(super) mask: Option<&'a [bool]>,
    pub(super) quality: Option<&'a SeriesQuality>,
}

/// Overlays, montage and the map dataset of one series; returns the report lines.
pub(super) fn write_series(
    out: &Path,
    h5: &hdf5::File,
    ds: &Dataset,
    p: &Plan,
    e: &Explained<'_>,
) -> Result<String, Failure> {
    let Explained {
        g,
        sm,
        layer,
        method,
        mask,
        quality: quality_row,
        ..
    } = *e;
    let map = &sm.layers[e.index].map;
    let [slices, rows, cols] = sm.volume.shape;
    let (flip_cols, flip_rows) = overlay::series_flips(ds.catalog(), g.series_row).map_err(job)?;
    let window = sm.volume.display_window.unwrap_or(p.window);
    let plane = rows * cols;
    let slice_max: Vec<f32> = (0..slices)
        .map(|k| {
            map[k * plane..(k + 1) * plane]
                .iter()
                .copied()
                .fold(0.0, f32::max)
        })
        .collect();
    let peak = (0..slices)
        .max_by(|&a, &b| slice_max[a].total_cmp(&slice_max[b]))
        .unwrap_or(0);
    // The cross marks the map's maximum on the slice that holds it (the pointing game's voxel).
    let marker = quality::argmax(&map[peak * plane..(peak + 1) * plane]).map(|i| [i / cols, i % cols]);
    let view = |k: usize| SliceView {
        hu: &sm.volume.values[k * plane..(k + 1) * plane],
        map: &map[k * plane..(k + 1) * plane],
        rows,
        cols,
        spacing: [sm.volume.spacing[1], sm.volume.spacing[2]],
        flip_cols,
        flip_rows,
        outline: mask.map(|m| &m[k * plane..(k + 1) * plane]),
        marker: if k == peak { marker } else { None },
    };
    let score_line = if p.settings.train.task == Task::Binary {
        format!(
            "P({}) = {:.3}",
            p.target_name.rsplit('.').next().unwrap_or(""),
            sm.score()
        )
    } else {
        format!("{} = {:.3}", p.target_name, sm.score())
    };
    let short = &g.key[..g.key.len().min(12)];
    const WHITE: [u8; 3] = [255, 255, 255];
    let mut lines = vec![
        (format!("{short} slice {peak}"), WHITE),
        (score_line.clone(), WHITE),
        (format!("{} {}", method.name(), layer.name), WHITE),
    ];
    if mask.is_some() {
        lines.push(("red: reference lesion".into(), overlay::OUTLINE));
    }
    lines.push(("+: map maximum".into(), overlay::MARKER));
    let style = overlay::Style {
        map_max: slice_max.iter().copied().fold(0.0, f32::max),
        ..p.style
    };
    // The peak slice as image | map | overlay, with the panel geometry beside it as JSON.
    let layers = overlay::render_layers(&view(peak), window, 256, &style);
    let (panel, rects) = overlay::panel(&layers);
    let overlay_name = format!("{short}-{}-{}.png", layer.name, method.file_name());
    write(
        &out.join(&overlay_name),
        &overlay::annotated_coloured(&panel, &lines, &style).encode_png(),
    )?;
    let top = overlay::text_top(lines.len());
    let shift = |r: overlay::Rect| [r[0] + overlay::MARGIN, r[1] + top, r[2], r[3]];
    let geometry = serde_json::json!({
        "series": g.key,
        "slice": peak,
        "px_per_mm": layers.px_per_mm,
        "panels": {"image": shift(rects[0]), "map": shift(rects[1]), "overlay": shift(rects[2])},
        "threshold": style.threshold,
        "map_max": style.map_max,
        "colormap": style.colormap,
        "contours": style.contours,
        "outline_rgb": overlay::OUTLINE,
        "marker_rgb": overlay::MARKER,
        "contour_rgb": overlay::CONTOUR,
        "stroke_px": overlay::stroke_width(&layers.overlay),
    });
    write(
        &out.join(overlay_name.replace(".png", ".json")),
        format!("{geometry:#}\n").as_bytes(),
    )?;
    // Montage: the slices with the strongest map, in slice order.
    let mut order: Vec<usize> = (0..slices).collect();
    order.sort_by(|&a, &b| slice_max[b].total_cmp(&slice_max[a]));
    order.truncate(MONTAGE_SLICES);
    order.sort_unstable();
    let tiles: Vec<_> = order
        .iter()
        .map(|&k| {
            let tile = overlay::render_layers(&view(k), window, 128, &style).overlay;
            (tile, format!("{k}"))
        })
        .collect();
    let montage_name = format!("{short}-{}-{}-montage.png", layer.name, method.file_name());
    let mont = overlay::montage(&tiles, 4);
    write(
        &out.join(&montage_name),
        &overlay::annotated_coloured(&mont, &lines[1..], &style).encode_png(),
    )?;
    write_map_dataset(h5, g, sm, map, p, layer, method)
        .map_err(|e| job(format!("maps.h5 {}: {e}", g.key)))?;
    let q = quality_row.map_or(String::new(), |q| {
        format!(
            " | pointing {}{} | energy in lesion {} | deletion {:.3} | insertion {:.3}",
            q.hit.map_or("n/a", |h| if h { "hit" } else { "miss" }),
            q.peak
                .and_then(|p| p.distance_mm)
                .map_or(String::new(), |d| format!(" (maximum {d:.1} mm from the lesion)")),
            fmt_opt(q.energy_inside),
            q.deletion_auc,
            q.insertion_auc
        )
    });
    Ok(format!(
        "- `{}` ({score_line}{q}): [overlay]({overlay_name}) · [montage]({montage_name}) · maps.h5 `{}/{}/{}`\n",
        g.key,
        method.name(),
        layer.name,
        g.key
    ))
}

fn write_map_dataset(
    h5: &hdf5::File,
    g: &SeriesSamples,
    sm: &SeriesMaps,
    map: &[f32],
    p: &Plan,
    layer: &CamLayer,
    method: Method,
) -> hdf5::Result<()> {
    use hdf5::types::VarLenUnicode;
    let child = |parent: &hdf5::Group, name: &str| -> hdf5::Result<hdf5::Group> {
        if parent.link_exists(name) {
            parent.group(name)
        } else {
            parent.create_group(name)
        }
    };
    let group = child(&child(h5, method.name())?, &layer.name)?;
    let d = group
        .new_dataset::<f32>()
        .shape(sm.volume.shape)
        .create(g.key.as_str())?;
    d.write_raw(map)?;
    let text = |name: &str, value: &str| -> hdf5::Result<()> {
        let v: VarLenUnicode = value.parse().map_err(|_| hdf5::Error::from("attribute text"))?;
        d.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)
    };
    text("layer", &layer.name)?;
    text("target", &p.target_name)?;
    text("method", method.name())?;
    text("series_key", &g.key)?;
    text(
        "normalisation",
        "min-max over the series; 0 where no sample covered the voxel; axes (slice, row, col) of the pack volume",
    )?;
    d.new_attr::<f64>().create("score")?.write_scalar(&sm.score())?;
    Ok(())
}

/// What `explain` prints on stdout: the quality table and the chosen pair, or with `--json` the
/// summary.
pub(super) fn print_outcome(
    args: &ExplainArgs,
    quality_json: Option<&(QualityJson, String)>,
    series: usize,
    cands: &[Candidate],
) {
    if args.json {
        let v = match quality_json {
            Some((s, _)) => serde_json::to_value(s).expect("serialisable"),
            None => {
                serde_json::json!({
                    "series": series,
                    "maps": cands.iter().map(|c| format!("{}/{}", c.method.name(), c.layer.name)).collect::<Vec<_>>(),
                })
            }
        };
        println!("{v}");
    } else {
        if let Some((s, table)) = quality_json {
            print!("{table}");
            println!(
                "explain: best {} at layer {} (chosen on {}); {} hit rate {} ; sanity check {}",
                s.method,
                s.best_layer,
                s.validation_split,
                s.split,
                fmt_opt(s.best.hit_rate),
                if s.sanity.passed { "passed" } else { "FAILED" }
            );
        }
        println!(
            "explain: {} series, report {}",
            series,
            args.out.join("report.md").display()
        );
    }
}
