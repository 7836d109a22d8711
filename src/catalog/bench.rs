//! `catalog bench`: the planning queries of the benchmark, timed in process on an open catalog
//! (warm cache), validated by their results before timing. `benches/catalog_peers.py` runs the
//! same queries on DuckDB and SQLite over the same rows.

use super::columns::Level;
use super::query::{run, Request};
use super::split::{plan, SplitSpec};
use super::view::Catalog;
use std::time::Instant;

#[derive(Debug, serde::Serialize)]
pub struct Timing {
    pub name: String,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub result: serde_json::Value,
}

fn time<F: FnMut() -> serde_json::Value>(name: &str, repeat: usize, mut f: F) -> Timing {
    let result = f();
    let mut ms: Vec<f64> = (0..repeat)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Timing {
        name: name.into(),
        p50_ms: ms[ms.len() / 2],
        p95_ms: ms[(ms.len() * 95 / 100).min(ms.len() - 1)],
        result,
    }
}

/// Runs the benchmark queries; `label` is the slice-level boolean label (e.g. `inst.nodule`).
pub fn run_bench(
    cat: &Catalog,
    label: &str,
    repeat: usize,
) -> Result<Vec<Timing>, super::query::QueryFailure> {
    let one_series = {
        let keys = cat.col_keys(Level::Series, "series_key")?;
        super::columns::cell_text(&keys[keys.len() / 2]).to_string()
    };
    let req = |filter: String, level: Level| Request::count(&filter, level);
    let q_count = req(
        format!("slice_thickness <= 1.25 and {label} = true"),
        Level::Slice,
    );
    let q_group = Request {
        group_by: vec!["modality".into(), "convolution_kernel".into()],
        mean: vec!["slice_thickness".into()],
        ..req("slice_thickness <= 2.5".into(), Level::Slice)
    };
    let q_top = Request {
        group_by: vec!["series_key".into()],
        top: Some(10),
        ..req(format!("{label} = true"), Level::Slice)
    };
    let q_series = Request {
        list: Some(
            ["slice_index", "instance_number", "position", "thickness"]
                .map(String::from)
                .to_vec(),
        ),
        ..req(format!("series_key = '{one_series}'"), Level::Slice)
    };
    let q_patients = req(format!("{label} = true"), Level::Patient);
    let split = SplitSpec {
        filter: "slice_thickness <= 2.5".into(),
        level: Level::Slice,
        splits: vec![("train".into(), 0.8), ("val".into(), 0.1), ("test".into(), 0.1)],
        stratify: Some(label.into()),
        seed: 1,
    };
    // Each closure runs the query and returns what validates it.
    let json = |r: Result<super::query::Answer, _>| -> serde_json::Value {
        match r {
            Ok(a) => serde_json::to_value(a).expect("json"),
            Err(e) => serde_json::json!({ "error": format!("{e}") }),
        }
    };
    Ok(vec![
        time("filtered_count", repeat, || {
            json(run(cat, &q_count).map(|mut a| {
                a.filter.clear();
                a
            }))
        }),
        time("group_count_mean", repeat, || json(run(cat, &q_group))),
        time("top10_series_by_labelled_slices", repeat, || {
            json(run(cat, &q_top))
        }),
        time("slices_of_one_series", repeat, || {
            let a = run(cat, &q_series);
            serde_json::json!({"series_key": one_series, "rows": a.map(|a| a.count).ok()})
        }),
        time("distinct_patients_with_label", repeat, || {
            json(run(cat, &q_patients))
        }),
        time("stratified_split", repeat.min(10), || match plan(cat, &split) {
            Ok(m) => serde_json::json!(m
                .splits
                .iter()
                .map(|s| (s.name.clone(), s.patients.len(), s.samples()))
                .collect::<Vec<_>>()),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        }),
    ])
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
