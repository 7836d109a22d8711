//! `medtrain inspect`, and the pack report as `medtrain pack` prints it (the verb itself is in `cli`:
//! it also pulls from an archive, through `pacs`).

use super::run::PackReport;
use crate::exit::{usage, Failure, EXIT_FAILURES, EXIT_OK};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Pack directory.
    pub inputs: Vec<PathBuf>,
    /// Re-hash every shard and compare with the checksum recorded at pack time.
    #[arg(long)]
    pub verify: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn print_pack_summary(r: &PackReport, out: &std::path::Path) {
    println!(
        "packed {} items ({} slices) into {} new shard(s) in {}",
        r.items_packed,
        r.slices_packed,
        r.shards_written,
        out.display()
    );
    println!(
        "  files seen {}, images {}, not DICOM {}, non-image skipped {:?}",
        r.files_seen, r.image_files, r.not_dicom, r.non_image_skipped
    );
    println!(
        "  already packed {}, quarantined {} entries ({} files), clamped voxels {}, padding voxels {}",
        r.items_already_packed,
        r.quarantined_entries,
        r.quarantined_files,
        r.voxels_clamped,
        r.padding_voxels
    );
    println!(
        "  {:.1} MB of pixels in {:.2} s",
        r.pixel_bytes_written as f64 / 1e6,
        r.seconds
    );
}

pub fn inspect(args: InspectArgs) -> Result<i32, Failure> {
    if args.inputs.is_empty() {
        return Err(usage("inspect needs at least one pack directory"));
    }
    let mut code = EXIT_OK;
    for dir in &args.inputs {
        let summary = crate::pack::inspect::inspect(dir, args.verify)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).expect("serialisable")
            );
        } else {
            println!(
                "pack {}: {} shard(s), {:.1} MB, {} patients, key {}",
                dir.display(),
                summary.shards,
                summary.bytes as f64 / 1e6,
                summary.patients,
                summary.key_fingerprint
            );
            for (modality, m) in &summary.by_modality {
                println!(
                    "  {modality:<4} {:>6} items {:>8} slices {:>10.1} MB",
                    m.items,
                    m.slices,
                    m.pixel_bytes as f64 / 1e6
                );
            }
            if args.verify {
                println!(
                    "  checksums: {}",
                    if summary.corrupt_shards.is_empty() {
                        "all verified".to_string()
                    } else {
                        format!("CORRUPT {:?}", summary.corrupt_shards)
                    }
                );
            }
        }
        if !summary.corrupt_shards.is_empty() {
            code = EXIT_FAILURES;
        }
    }
    Ok(code)
}
