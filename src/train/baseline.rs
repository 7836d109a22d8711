//! The trivial baseline reported beside a nodule model: each CT series scored by its brightest lung
//! voxel. Lungs are found from the HU values alone, slice by slice: air-like voxels not connected to the
//! image border (so not the air around the body), plus the holes they enclose (vessels and nodules are
//! holes in the air mask). A model that cannot beat this has learned nothing beyond "dense spot in lung".

/// The reader of catalog shard `shard`, opened on first use and kept in `readers` (by catalog shard
/// id: a split may use only some of the catalog's shards).
pub(crate) fn shard_reader<'a>(
    readers: &'a mut std::collections::BTreeMap<u32, crate::pack::reader::ShardReader>,
    ds: &crate::data::Dataset,
    shard: u32,
    row: usize,
) -> Result<&'a crate::pack::reader::ShardReader, String> {
    use std::collections::btree_map::Entry;
    match readers.entry(shard) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(e) => {
            let path = ds
                .shard_path(shard)
                .ok_or_else(|| format!("series row {row}: shard {shard} is not used by this split"))?;
            let reader = crate::pack::reader::ShardReader::open(&path).map_err(|e| e.to_string())?;
            Ok(e.insert(reader))
        }
    }
}

/// What the baselines read of one series: its brightest lung voxel when the stored volume is i16
/// (CT), and for a series not in HU the dense fraction of its first sample (the share of pixels above
/// the image's mean after the training intensity pipeline).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeriesBaseline {
    pub hu: bool,
    pub ct: Option<f64>,
    pub image: Option<f64>,
}

/// The baselines' reads of a whole split, shared out as the predictions are: the rank whose share
/// ([`crate::data::eval_share`]) holds a series' first sample reads that series, then every rank gets every
/// series' values. A rank so reads only the shards of its own share, which is what staging puts on
/// its node. `image` is read only when `dense_fraction` is asked (risk tasks).
pub fn series_baselines(
    world: &crate::dist::World,
    ds: &crate::data::Dataset,
    dense_fraction: bool,
) -> Result<std::collections::HashMap<u32, SeriesBaseline>, String> {
    use crate::catalog::columns::{cell_text, Level};
    let share = crate::data::eval_share(world.rank(), world.size(), ds.len());
    let cat = ds.catalog();
    let col = |name| cat.col_u32(Level::Series, name).map_err(|e| e.to_string());
    let (shard, shard_row, rows, cols) = (col("shard")?, col("shard_row")?, col("rows")?, col("cols")?);
    let transform = cat.tables.codes("series/transform").map_err(|e| e.to_string())?;
    let mut readers = std::collections::BTreeMap::new();
    let mut buf = vec![0f32; ds.sample_len()];
    let mut bytes = Vec::new();
    let mut previous = if share.start == 0 {
        None
    } else {
        Some(ds.series_row_of(share.start - 1))
    };
    for k in share {
        let r = ds.series_row_of(k);
        if previous == Some(r) {
            continue;
        }
        previous = Some(r);
        let row = r as usize;
        let hu = cell_text(&transform[row]).starts_with("hu");
        let reader = shard_reader(&mut readers, ds, shard[row], row)?;
        let ct = reader
            .volume_i16(shard_row[row] as usize)
            .ok()
            .and_then(|v| brightest_lung_voxel(v, rows[row] as usize, cols[row] as usize))
            .map(f64::from);
        let image = if dense_fraction && !hu {
            ds.load(k, None, &mut buf).map_err(|e| e.to_string())?;
            let plane = ds.sample_len() / ds.channels().max(1) as usize;
            let image = &buf[..plane];
            let mean = image.iter().map(|&v| f64::from(v)).sum::<f64>() / plane.max(1) as f64;
            Some(image.iter().filter(|&&v| f64::from(v) > mean).count() as f64 / plane.max(1) as f64)
        } else {
            None
        };
        bytes.extend_from_slice(&r.to_le_bytes());
        bytes.push(u8::from(hu));
        for v in [ct, image] {
            bytes.extend_from_slice(&v.unwrap_or(f64::NAN).to_le_bytes());
        }
    }
    let mut all = std::collections::HashMap::new();
    for part in world.allgather_bytes(&bytes) {
        for rec in part.chunks_exact(21) {
            let value = |at: usize| {
                let v = f64::from_le_bytes(rec[at..at + 8].try_into().expect("8 bytes"));
                (!v.is_nan()).then_some(v)
            };
            let row = u32::from_le_bytes(rec[..4].try_into().expect("4 bytes"));
            all.insert(
                row,
                SeriesBaseline {
                    hu: rec[4] != 0,
                    ct: value(5),
                    image: value(13),
                },
            );
        }
    }
    Ok(all)
}

/// HU below which a voxel counts as air-like (lung parenchyma is about −850, soft tissue 0 to 70).
const AIR_LIKE_HU: i16 = -400;

/// The brightest HU inside the lungs of a volume stored slice after slice (`rows` × `cols` each), or
/// None when no slice has lung.
pub fn brightest_lung_voxel(volume: &[i16], rows: usize, cols: usize) -> Option<i16> {
    let plane = rows * cols;
    if plane == 0 {
        return None;
    }
    let mut best: Option<i16> = None;
    let mut outside = vec![false; plane];
    let mut stack = Vec::new();
    for slice in volume.chunks_exact(plane) {
        // Air-like voxels reachable from the border: the air around the body.
        outside.fill(false);
        flood(slice, rows, cols, &mut outside, &mut stack, |v| v < AIR_LIKE_HU);
        // Everything reachable from the border through non-lung voxels (body, table, outside air): what
        // is left are the lungs and the holes inside them.
        let mut not_lung = vec![false; plane];
        let lung_free = |i: usize| slice[i] >= AIR_LIKE_HU || outside[i];
        flood_idx(rows, cols, &mut not_lung, &mut stack, lung_free);
        for (i, &v) in slice.iter().enumerate() {
            if !not_lung[i] && v >= AIR_LIKE_HU {
                best = Some(best.map_or(v, |b| b.max(v)));
            }
        }
        // A lung without any dense hole still counts: its brightest air-like voxel.
        for (i, &v) in slice.iter().enumerate() {
            if !not_lung[i] && !outside[i] && v < AIR_LIKE_HU {
                best = Some(best.map_or(v, |b| b.max(v)));
            }
        }
    }
    best
}

/// Marks every voxel reachable from the border through voxels whose value passes `pass`.
fn flood(
    slice: &[i16],
    rows: usize,
    cols: usize,
    mark: &mut [bool],
    stack: &mut Vec<usize>,
    pass: impl Fn(i16) -> bool,
) {
    flood_idx(rows, cols, mark, stack, |i| pass(slice[i]))
}

fn flood_idx(
    rows: usize,
    cols: usize,
    mark: &mut [bool],
    stack: &mut Vec<usize>,
    pass: impl Fn(usize) -> bool,
) {
    stack.clear();
    let seed = |i: usize, mark: &mut [bool], stack: &mut Vec<usize>| {
        if !mark[i] && pass(i) {
            mark[i] = true;
            stack.push(i);
        }
    };
    for c in 0..cols {
        seed(c, mark, stack);
        seed((rows - 1) * cols + c, mark, stack);
    }
    for r in 0..rows {
        seed(r * cols, mark, stack);
        seed(r * cols + cols - 1, mark, stack);
    }
    while let Some(i) = stack.pop() {
        let (r, c) = (i / cols, i % cols);
        if r > 0 {
            seed(i - cols, mark, stack);
        }
        if r + 1 < rows {
            seed(i + cols, mark, stack);
        }
        if c > 0 {
            seed(i - 1, mark, stack);
        }
        if c + 1 < cols {
            seed(i + 1, mark, stack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 12×12 slice: outside air, a body ring of soft tissue, a lung with one dense hole, and a dense
    /// spot in the body (brighter) that must not count.
    #[test]
    fn finds_the_dense_spot_inside_the_lung_not_in_the_body() {
        let (rows, cols) = (12, 12);
        let mut s = vec![-1000i16; rows * cols];
        for r in 1..11 {
            for c in 1..11 {
                s[r * cols + c] = 40; // body
            }
        }
        for r in 3..9 {
            for c in 3..9 {
                s[r * cols + c] = -850; // lung
            }
        }
        s[5 * cols + 5] = 55; // nodule inside the lung
        s[cols + 1] = 300; // dense spot in the body wall
        assert_eq!(brightest_lung_voxel(&s, rows, cols), Some(55));
        // Without the nodule the brightest lung voxel is parenchyma.
        s[5 * cols + 5] = -850;
        assert_eq!(brightest_lung_voxel(&s, rows, cols), Some(-850));
        // No lung at all.
        assert_eq!(brightest_lung_voxel(&[40i16; 16], 4, 4), None);
    }
}
