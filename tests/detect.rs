//! Detection from segmentation: FROC sensitivities and CPM against a numpy reference
//! (tests/reference/froc.py) on constructed candidate lists: none, all false positives, ties in
//! score, duplicate hits, a candidate inside two nodules, and seeded random scans.

use crate::common::{reference_script, s, tempdir};
use medtrain::train::detect::{cpm, froc, froc_curve, sensitivity_at, Region, Scan, FP_RATES};

fn region(x: f64, y: f64, z: f64, diameter: f64, score: f64) -> Region {
    Region {
        centre_mm: [x, y, z],
        diameter_mm: diameter,
        score,
        voxels: 1,
    }
}

fn nodule(x: f64, d: f64) -> Region {
    region(x, 0.0, 0.0, d, 1.0)
}

fn cand(x: f64, score: f64) -> Region {
    region(x, 0.0, 0.0, 1.0, score)
}

/// A small deterministic generator (no crate's RNG, so the cases are fixed by this file).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn random_case(seed: u64) -> Vec<Scan> {
    let mut r = Lcg(seed);
    (0..1 + (r.next() * 6.0) as usize)
        .map(|_| {
            let nodules: Vec<Region> = (0..(r.next() * 4.0) as usize)
                .map(|_| {
                    region(
                        r.next() * 100.0,
                        r.next() * 100.0,
                        r.next() * 50.0,
                        3.0 + r.next() * 20.0,
                        1.0,
                    )
                })
                .collect();
            let mut candidates = Vec::new();
            for n in &nodules {
                // Near a nodule: inside or just outside its radius, sometimes twice.
                for _ in 0..(r.next() * 3.0) as usize {
                    let off = n.diameter_mm * (r.next() * 0.8);
                    let score = (r.next() * 10.0).round() / 10.0; // ties on a 0.1 grid
                    candidates.push(region(
                        n.centre_mm[0] + off,
                        n.centre_mm[1],
                        n.centre_mm[2],
                        5.0,
                        score,
                    ));
                }
            }
            for _ in 0..(r.next() * 12.0) as usize {
                let score = (r.next() * 10.0).round() / 10.0;
                candidates.push(region(
                    r.next() * 100.0,
                    r.next() * 100.0,
                    r.next() * 50.0,
                    5.0,
                    score,
                ));
            }
            Scan { nodules, candidates }
        })
        .collect()
}

fn to_json(scans: &[Scan]) -> serde_json::Value {
    serde_json::Value::Array(
        scans
            .iter()
            .map(|sc| {
                let n: Vec<[f64; 4]> = sc
                    .nodules
                    .iter()
                    .map(|n| [n.centre_mm[0], n.centre_mm[1], n.centre_mm[2], n.diameter_mm])
                    .collect();
                let c: Vec<[f64; 4]> = sc
                    .candidates
                    .iter()
                    .map(|c| [c.centre_mm[0], c.centre_mm[1], c.centre_mm[2], c.score])
                    .collect();
                serde_json::json!({"nodules": n, "candidates": c})
            })
            .collect(),
    )
}

#[test]
fn froc_and_cpm_match_the_numpy_reference() {
    let mut cases: Vec<Vec<Scan>> = vec![
        // No candidates at all.
        vec![Scan {
            nodules: vec![nodule(0.0, 10.0)],
            candidates: vec![],
        }],
        // All false positives.
        vec![
            Scan {
                nodules: vec![nodule(0.0, 10.0)],
                candidates: vec![cand(40.0, 0.9), cand(80.0, 0.4)],
            },
            Scan {
                nodules: vec![],
                candidates: vec![cand(0.0, 0.7)],
            },
        ],
        // A hit and a false positive tied in score, and a lower hit duplicated.
        vec![
            Scan {
                nodules: vec![nodule(0.0, 10.0), nodule(100.0, 6.0)],
                candidates: vec![cand(1.0, 0.8), cand(50.0, 0.8), cand(101.0, 0.3), cand(99.5, 0.2)],
            },
            Scan {
                nodules: vec![nodule(0.0, 10.0)],
                candidates: vec![cand(30.0, 0.3), cand(4.0, 0.5)],
            },
        ],
        // One candidate inside two overlapping nodules hits both; one on a radius hits neither.
        vec![Scan {
            nodules: vec![nodule(0.0, 10.0), nodule(6.0, 10.0), nodule(20.0, 4.0)],
            candidates: vec![cand(3.0, 0.6), cand(22.0, 0.9)],
        }],
        // No nodule anywhere: undefined.
        vec![Scan {
            nodules: vec![],
            candidates: vec![cand(0.0, 0.5)],
        }],
    ];
    cases.extend((1..=40).map(random_case));
    let dir = tempdir();
    let path = dir.path().join("froc.json");
    let json = serde_json::Value::Array(cases.iter().map(|c| to_json(c)).collect());
    std::fs::write(&path, json.to_string()).unwrap();
    let want: Vec<serde_json::Value> =
        serde_json::from_str(&reference_script("froc.py", &[s(&path)])).unwrap();
    assert_eq!(want.len(), cases.len());
    let mut defined = 0;
    for (i, (scans, w)) in cases.iter().zip(&want).enumerate() {
        let refs: Vec<&Scan> = scans.iter().collect();
        let got = cpm(&refs);
        if w.is_null() {
            assert_eq!(got, None, "case {i}");
            continue;
        }
        defined += 1;
        let curve = froc_curve(&refs).unwrap();
        for (k, &rate) in FP_RATES.iter().enumerate() {
            let (g, r) = (
                sensitivity_at(&curve, rate),
                w["sensitivity"][k].as_f64().unwrap(),
            );
            assert!(
                (g - r).abs() < 1e-12,
                "case {i} at {rate} FP/scan: {g} vs numpy {r}"
            );
        }
        let (g, r) = (got.unwrap(), w["cpm"].as_f64().unwrap());
        assert!((g - r).abs() < 1e-12, "case {i} CPM: {g} vs numpy {r}");
    }
    assert!(defined > 30, "most random cases have nodules");
    // The constructed cases' values, by hand: nothing found, nothing found, then the tie.
    assert_eq!(want[0]["cpm"].as_f64(), Some(0.0));
    assert_eq!(want[1]["cpm"].as_f64(), Some(0.0));
    assert_eq!(want[3]["sensitivity"][6].as_f64(), Some(2.0 / 3.0));
}

#[test]
fn the_cpm_interval_is_over_scans_and_holds_its_estimate() {
    let scans = (7..)
        .map(random_case)
        .find(|c| c.len() > 2 && c.iter().any(|s| !s.nodules.is_empty()))
        .unwrap();
    let f = froc(&scans, 300, 0.95, 11).expect("the case has nodules");
    assert!(
        f.cpm.low <= f.cpm.estimate && f.cpm.estimate <= f.cpm.high,
        "{:?}",
        f.cpm
    );
    assert_eq!(f.sensitivity.len(), 7);
    // Identical scans: every resample has the same CPM.
    let same = vec![scans[0].clone(); 5];
    if let Some(f) = froc(&same, 100, 0.95, 3) {
        assert_eq!((f.cpm.low, f.cpm.high), (f.cpm.estimate, f.cpm.estimate));
    }
}
