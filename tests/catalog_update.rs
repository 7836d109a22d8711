//! Incremental builds and atomic updates: adding shards keeps rows and labels, equals a full
//! build, and a reader polling during an update only ever sees a whole old or new catalog.

use crate::catalog_common::{cohort, write_csvs, write_pack, KEY_BYTES};
use crate::catalog_engine::import_fixture_labels;
use medtrain::catalog::build::build;
use medtrain::catalog::columns::Level;
use medtrain::catalog::query::{run, Request};
use medtrain::catalog::view::Catalog;
use medtrain::deid::SiteKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn count(cat: &Catalog, filter: &str, level: Level) -> u64 {
    run(cat, &Request::count(filter, level)).unwrap().count
}

#[test]
fn adding_shards_is_incremental_and_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SiteKey::from_bytes(KEY_BYTES);
    let all = cohort(24);
    let (first, second) = all.split_at(all.len() / 2);
    let pack = tmp.path().join("pack");
    write_pack(&pack, &key, first, 2, 0);
    write_csvs(tmp.path(), first);
    let catalog = tmp.path().join("catalog");
    build(&[pack.clone()], &catalog).unwrap();
    import_fixture_labels(&catalog, tmp.path(), &key);
    let old = Catalog::open(&catalog).unwrap();
    let old_slices = count(&old, "", Level::Slice);
    let old_nodules = count(&old, "sop.nodule", Level::Slice);
    assert!(old_nodules > 0);

    // A reader polls while shards are added; it must see the old or the new catalog, whole.
    write_pack(&pack, &key, second, 2, 2);
    let new_total: u64 = all.iter().map(|s| s.instances.len() as u64).sum();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (catalog, stop) = (catalog.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let cat = Catalog::open(&catalog).expect("a reader never sees a half-written catalog");
                let n = count(&cat, "", Level::Slice);
                let by_series: u64 = cat
                    .col_u32(Level::Series, "n_slices")
                    .unwrap()
                    .iter()
                    .map(|&x| x as u64)
                    .sum();
                assert_eq!(n, by_series, "tables of one generation");
                seen.push(n);
            }
            seen
        })
    };
    let report = build(&[pack.clone()], &catalog).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.iter().all(|&n| n == old_slices || n == new_total),
        "{seen:?}"
    );
    assert_eq!((report.shards_added, report.shards_already_catalogued), (2, 2));

    // The open snapshot still answers as before; the new catalog keeps rows and labels.
    assert_eq!(count(&old, "", Level::Slice), old_slices);
    let new = Catalog::open(&catalog).unwrap();
    assert_eq!(count(&new, "", Level::Slice), new_total);
    assert_eq!(count(&new, "sop.nodule", Level::Slice), old_nodules);
    assert_eq!(new.state.label_sets.len(), 4);
    // Absent: the fixture's one unlabelled patient plus every patient new with the added shards.
    let known: std::collections::HashSet<&String> = first.iter().map(|s| &s.patient).collect();
    let added: std::collections::HashSet<&String> = second
        .iter()
        .map(|s| &s.patient)
        .filter(|p| !known.contains(p))
        .collect();
    assert_eq!(
        count(&new, "pt.death is absent", Level::Patient) as usize,
        1 + added.len()
    );

    // Same answers as a catalog built from scratch over all shards.
    let fresh_dir = tmp.path().join("fresh");
    build(&[pack], &fresh_dir).unwrap();
    let fresh = Catalog::open(&fresh_dir).unwrap();
    for (filter, level) in [
        ("", Level::Patient),
        ("modality = 'CT'", Level::Series),
        ("slice_thickness > 1", Level::Slice),
        ("instance_number in 2..5", Level::Slice),
    ] {
        assert_eq!(
            count(&fresh, filter, level),
            count(&new, filter, level),
            "{filter}"
        );
    }
    for column in ["series_key", "patient_row", "slice_start"] {
        let a = run(
            &new,
            &Request {
                list: Some(vec![column.into()]),
                ..Request::count("", Level::Series)
            },
        )
        .unwrap()
        .rows;
        let b = run(
            &fresh,
            &Request {
                list: Some(vec![column.into()]),
                ..Request::count("", Level::Series)
            },
        )
        .unwrap()
        .rows;
        assert_eq!(a, b, "{column}");
    }
    // Key lookups (binary search in the stored key order) after an incremental build.
    let keys = new.col_keys(Level::Series, "series_key").unwrap();
    let n_slices = new.col_u32(Level::Series, "n_slices").unwrap();
    for s in [0, keys.len() / 2, keys.len() - 1] {
        let k = medtrain::catalog::columns::cell_text(&keys[s]);
        assert_eq!(
            count(&new, &format!("series_key = '{k}'"), Level::Slice),
            n_slices[s] as u64
        );
        assert_eq!(
            count(&new, &format!("not series_key = '{k}'"), Level::Series),
            keys.len() as u64 - 1
        );
    }
    assert_eq!(count(&new, "series_key = 'nope'", Level::Slice), 0);
    let patient =
        medtrain::catalog::columns::cell_text(&new.col_keys(Level::Patient, "patient_key").unwrap()[3])
            .to_string();
    assert_eq!(
        count(&new, &format!("patient_key = '{patient}'"), Level::Patient),
        1
    );
    // Re-running with nothing new changes nothing.
    let again = build(&[tmp.path().join("pack")], &catalog).unwrap();
    assert_eq!((again.shards_added, again.generation), (0, report.generation));
}
