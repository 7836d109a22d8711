//! Ultrasound at pack time: the series' crop to the tissue region of the Sequence of Ultrasound
//! Regions, and the crop of decoded frames to it.

use crate::dicom::decode::{DecodedPixels, PixelBuffer};
use crate::dicom::header::UsRegion;
use crate::dicom::series::{PackItem, SourceFile};

/// The crop of an ultrasound series (its first object's tissue region, when it has one), or the file
/// and reason to quarantine the series for. Burned-in text is patient data in the pixels, which
/// de-identification of the header cannot remove: an object whose BurnedInAnnotation is YES refuses
/// its series before any pixel is read, unless it is ultrasound with a region to crop to, which leaves
/// out the border where scanners burn in text. One crop per series is recorded, so its objects must
/// agree on it.
pub(crate) fn ultrasound_crop(item: &PackItem) -> Result<Option<UsRegion>, (&SourceFile, String)> {
    let first = &item.files[0].header;
    let crop = (first.modality == "US").then_some(first.us_region).flatten();
    let burned_in = item
        .files
        .iter()
        .find(|f| f.header.burned_in_annotation == Some(true));
    if let (Some(file), None) = (burned_in, &crop) {
        let reason = "BurnedInAnnotation is YES: the pixels carry burned-in text (patient data that \
                      de-identification of the header cannot remove); not packed. Mask or crop the \
                      annotation and set BurnedInAnnotation to NO, or leave the series out";
        return Err((file, reason.to_string()));
    }
    if let Some(region) = &crop {
        if let Some(file) = item
            .files
            .iter()
            .find(|f| f.header.us_region.as_ref() != Some(region))
        {
            let reason = format!(
                "ultrasound regions differ across the series' objects ({:?} vs {:?}); one crop per series \
                 is recorded, so the series cannot be packed",
                file.header.us_region.map(|r| r.bounds),
                region.bounds
            );
            return Err((file, reason));
        }
    }
    Ok(crop)
}

/// Keeps columns x0..=x1 and rows y0..=y1 of every frame (all samples of a pixel).
pub(crate) fn crop_frames(mut decoded: DecodedPixels, [x0, y0, x1, y1]: [u32; 4]) -> DecodedPixels {
    let (rows, cols, spp) = (
        decoded.rows as usize,
        decoded.cols as usize,
        decoded.samples_per_pixel as usize,
    );
    let (x0, y0, x1, y1) = (x0 as usize, y0 as usize, x1 as usize, y1 as usize);
    fn keep<T: Copy>(v: &[T], frames: usize, rows: usize, cols: usize, spp: usize, b: [usize; 4]) -> Vec<T> {
        let [x0, y0, x1, y1] = b;
        let mut out = Vec::with_capacity(frames * (y1 - y0 + 1) * (x1 - x0 + 1) * spp);
        for f in 0..frames {
            for y in y0..=y1 {
                let row = (f * rows + y) * cols * spp;
                out.extend_from_slice(&v[row + x0 * spp..row + (x1 + 1) * spp]);
            }
        }
        out
    }
    let (frames, b) = (decoded.frames as usize, [x0, y0, x1, y1]);
    decoded.pixels = match decoded.pixels {
        PixelBuffer::U8(v) => PixelBuffer::U8(keep(&v, frames, rows, cols, spp, b)),
        PixelBuffer::I8(v) => PixelBuffer::I8(keep(&v, frames, rows, cols, spp, b)),
        PixelBuffer::U16(v) => PixelBuffer::U16(keep(&v, frames, rows, cols, spp, b)),
        PixelBuffer::I16(v) => PixelBuffer::I16(keep(&v, frames, rows, cols, spp, b)),
        PixelBuffer::U32(v) => PixelBuffer::U32(keep(&v, frames, rows, cols, spp, b)),
        PixelBuffer::I32(v) => PixelBuffer::I32(keep(&v, frames, rows, cols, spp, b)),
        PixelBuffer::F32(v) => PixelBuffer::F32(keep(&v, frames, rows, cols, spp, b)),
        PixelBuffer::F64(v) => PixelBuffer::F64(keep(&v, frames, rows, cols, spp, b)),
    };
    decoded.rows = (y1 - y0 + 1) as u32;
    decoded.cols = (x1 - x0 + 1) as u32;
    decoded
}
