//! NIfTI bytes → `nifti::parse`, then, when it parses, alignment to a fixed oblique series grid and
//! reordering into it (the mask import's path after the file is read).
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::catalog::labels::grid::{align, reorder, SeriesGrid};

fuzz_target!(|data: &[u8]| {
    let Ok(n) = medtrain::nifti::parse(data) else { return };
    let _ = n.affine_lps();
    for dims in [[n.dim[2], n.dim[1], n.dim[0]], [2, 3, 4]] {
        let grid = SeriesGrid {
            dims,
            spacing: [0.8, 0.7],
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            positions: (0..dims[0]).map(|k| [-10.0, 20.0, 30.0 + 2.5 * k as f64]).collect(),
        };
        if let Ok(map) = align(&grid, n.dim, &n.affine_lps()) {
            let _ = reorder(&map, &grid, n.dim, &n.values);
        }
    }
});
