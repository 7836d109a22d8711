//! The evaluation's survival figure against an independent numpy implementation
//! (tests/reference/km_logrank.py): Kaplan–Meier curves per risk tertile and the log-rank test on a
//! constructed cohort with censoring and tied times.

use crate::common::{reference_script, s, tempdir};
use medtrain::train::figures::{kaplan_meier, log_rank, tertiles};

#[test]
fn kaplan_meier_and_log_rank_match_numpy_on_a_censored_cohort() {
    // 60 patients: risk rises with the index; higher risk, earlier events; every third censored;
    // times rounded to 10 days so several patients share a time.
    let n = 60;
    let risk: Vec<f64> = (0..n).map(|i| i as f64 + 0.5 * ((i * 7) % 5) as f64).collect();
    let time: Vec<f64> = (0..n)
        .map(|i| (((2000 - 25 * i + (i * 37) % 400) / 10) * 10) as f64)
        .collect();
    let event: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
    let group = tertiles(&risk);
    let dir = tempdir();
    let file = dir.path().join("cohort.json");
    let cohort = serde_json::json!({"time": time, "event": event, "group": group});
    std::fs::write(&file, cohort.to_string()).unwrap();
    let out = reference_script("km_logrank.py", &[s(&file)]);
    let want: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for g in 0..3 {
        let idx: Vec<usize> = (0..n).filter(|&i| group[i] == g).collect();
        assert_eq!(idx.len(), 20, "tertiles of 60");
        let t: Vec<f64> = idx.iter().map(|&i| time[i]).collect();
        let e: Vec<bool> = idx.iter().map(|&i| event[i]).collect();
        let got = kaplan_meier(&t, &e);
        let reference = want["km"][g.to_string()].as_array().unwrap();
        assert_eq!(got.len(), reference.len(), "group {g}: event times");
        for ((gt, gs), r) in got.iter().zip(reference) {
            assert_eq!(*gt, r[0].as_f64().unwrap());
            assert!(
                (gs - r[1].as_f64().unwrap()).abs() < 1e-12,
                "group {g} at {gt}: {gs} vs {r}"
            );
        }
    }
    let (chi2, df, p) = log_rank(&time, &event, &group).unwrap();
    let (wc, wp) = (want["chi2"].as_f64().unwrap(), want["p"].as_f64().unwrap());
    eprintln!("log-rank: chi2 {chi2} (numpy {wc}), p {p:e} (numpy {wp:e})");
    assert_eq!(df, 2);
    assert!((chi2 - wc).abs() < 1e-9 * wc.max(1.0), "chi2 {chi2} vs {wc}");
    assert!((p - wp).abs() < 1e-12 + 1e-9 * wp, "p {p} vs {wp}");
    assert!(p < 0.01, "the constructed risk separates the groups: p {p}");
    // Groups that take turns along the risk order (each block of three patients, one censored, goes
    // to one group) give a large p.
    let shuffled: Vec<usize> = (0..n).map(|i| (i / 3) % 3).collect();
    let (_, _, p_null) = log_rank(&time, &event, &shuffled).unwrap();
    assert!(p_null > 0.05, "{p_null}");
}
