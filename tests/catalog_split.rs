//! Split invariants: disjoint patients, every sample of a patient in one split, per-stratum
//! patient counts within one of the ratios, determinism by seed, manifest round trip.

use crate::catalog_common::{cohort, write_csvs, write_pack, KEY_BYTES};
use crate::catalog_engine::import_fixture_labels;
use medtrain::catalog::build::build;
use medtrain::catalog::columns::Level;
use medtrain::catalog::query::{run, select, Request};
use medtrain::catalog::split::{plan, Manifest, SplitSpec};
use medtrain::catalog::view::Catalog;
use medtrain::deid::SiteKey;
use std::collections::{HashMap, HashSet};

#[test]
fn patient_level_stratified_deterministic_split() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SiteKey::from_bytes(KEY_BYTES);
    let series = cohort(40);
    let pack = write_pack(&tmp.path().join("pack"), &key, &series, 2, 0);
    write_csvs(tmp.path(), &series);
    let catalog = tmp.path().join("catalog");
    build(&[pack], &catalog).unwrap();
    import_fixture_labels(&catalog, tmp.path(), &key);
    let cat = Catalog::open(&catalog).unwrap();
    let ratios = [0.6, 0.2, 0.2];
    let spec = SplitSpec {
        filter: "slice_thickness <= 2.5".into(),
        level: Level::Slice,
        splits: ["train", "val", "test"]
            .iter()
            .zip(ratios)
            .map(|(n, r)| (n.to_string(), r))
            .collect(),
        stratify: Some("sop.nodule".into()),
        seed: 7,
    };
    let m = plan(&cat, &spec).unwrap();

    // Samples: exactly the query's slices, each once.
    let total: u64 = m.splits.iter().map(|s| s.samples()).sum();
    assert_eq!(
        total,
        run(&cat, &Request::count(&spec.filter, Level::Slice))
            .unwrap()
            .count
    );
    let series_of_slice = cat.col_u32(Level::Slice, "series_row").unwrap();
    let patient_of_series = cat.col_u32(Level::Series, "patient_row").unwrap();
    let mut owner: HashMap<u32, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for (i, part) in m.splits.iter().enumerate() {
        let listed: HashSet<u32> = part.patients.iter().copied().collect();
        for row in part.rows() {
            assert!(seen.insert(row), "slice {row} in two places");
            let p = patient_of_series[series_of_slice[row as usize] as usize];
            assert!(listed.contains(&p), "slice of patient {p} outside its split");
            assert_eq!(*owner.entry(p).or_insert(i), i, "patient {p} in two splits");
        }
    }
    // Strata: patients with a nodule slice vs the rest, each within one patient of the ratios.
    let with_nodule = select(&cat, "sop.nodule", Level::Patient).unwrap().rows.unwrap();
    for stratum in [true, false] {
        let counts: Vec<usize> = m
            .splits
            .iter()
            .map(|s| {
                s.patients
                    .iter()
                    .filter(|&&p| with_nodule[p as usize] == stratum)
                    .count()
            })
            .collect();
        let n: usize = counts.iter().sum();
        assert!(n > 3, "stratum {stratum} too small to test");
        for (c, r) in counts.iter().zip(ratios) {
            assert!(
                (*c as f64 - n as f64 * r).abs() < 1.0 + 1e-9,
                "stratum {stratum}: {counts:?} of {n}"
            );
        }
    }
    // Deterministic by seed; written and read back unchanged.
    assert_eq!(plan(&cat, &spec).unwrap(), m);
    let other = plan(
        &cat,
        &SplitSpec {
            seed: 8,
            ..spec.clone()
        },
    )
    .unwrap();
    assert_ne!(other.splits, m.splits);
    let path = tmp.path().join("manifest.h5");
    m.write(&path).unwrap();
    let back = Manifest::load(&path).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.meta.catalog_hash, cat.state.content_hash());
    assert_eq!(back.meta.query, spec.filter);

    // Stratified on a patient-level label value; series as samples.
    let by_death = plan(
        &cat,
        &SplitSpec {
            stratify: Some("pt.death".into()),
            level: Level::Series,
            ..spec
        },
    )
    .unwrap();
    assert!(
        by_death.meta.strata.keys().any(|k| k == "unknown"),
        "patients without a label row form a stratum"
    );
    let series_total: u64 = by_death.splits.iter().map(|s| s.samples()).sum();
    assert_eq!(
        series_total,
        run(&cat, &Request::count("slice_thickness <= 2.5", Level::Series))
            .unwrap()
            .count
    );
}
