//! TensorBoard event files against TensorBoard's own reader (`EventAccumulator`, in
//! tests/reference/read_tensorboard.py): scalars, images and text come back with their steps, and a
//! resumed run's SessionLog START drops what the killed run logged past its checkpoint.

use crate::common::{reference_script, s, tempdir};
use medtrain::train::tensorboard::EventWriter;

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&vec![200u8; (width * height * 3) as usize])
        .unwrap();
    w.finish().unwrap();
    out
}

#[test]
fn event_files_read_back_in_tensorboard_and_a_resume_purges_the_lost_steps() {
    let dir = tempdir();
    let tb = dir.path().join("tb");
    let image = png(4, 3);
    {
        let mut w = EventWriter::create(&tb).unwrap();
        w.text(0, "settings", "lr = 0.1").unwrap();
        for step in 1..=10u64 {
            w.scalars(step, &[("train/loss", 1.0 / step as f64), ("train/lr", 0.1)])
                .unwrap();
        }
        w.image(10, "gradcam/series0", image.clone(), 4, 3).unwrap();
    }
    // The run was killed after step 10 and resumes from its checkpoint of step 5, in a new file.
    let mut w = EventWriter::create(&tb).unwrap();
    w.session_start(6).unwrap();
    for step in 6..=8u64 {
        w.scalars(step, &[("train/loss", 100.0 + step as f64)]).unwrap();
    }
    drop(w);
    let out = reference_script("read_tensorboard.py", &[s(&tb)]);
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let loss: Vec<(u64, f64)> = j["scalars"]["train/loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    let mut want: Vec<(u64, f64)> = (1..=5).map(|k| (k, 1.0 / k as f64)).collect();
    want.extend((6..=8).map(|k| (k, 100.0 + k as f64)));
    assert_eq!(loss.len(), want.len(), "{loss:?}");
    for ((s1, v1), (s2, v2)) in loss.iter().zip(&want) {
        assert_eq!(s1, s2);
        assert!((v1 - v2).abs() <= 1e-6 * v2.abs(), "step {s1}: {v1} vs {v2}");
    }
    // The learning rate was logged only before the kill: steps 6..10 of it are purged too.
    let lr: Vec<u64> = j["scalars"]["train/lr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(lr, vec![1, 2, 3, 4, 5]);
    assert_eq!(j["text"]["settings"], serde_json::json!([[0, "lr = 0.1"]]));
    // The image was logged at step 10, past the resume point: purged as well.
    let images = j["images"]["gradcam/series0"].as_array().map_or(0, Vec::len);
    assert_eq!(images, 0, "{j}");
}

#[test]
fn images_read_back_with_their_size() {
    let dir = tempdir();
    let mut w = EventWriter::create(dir.path()).unwrap();
    let image = png(5, 2);
    w.image(3, "roc", image.clone(), 5, 2).unwrap();
    drop(w);
    let out = reference_script("read_tensorboard.py", &[s(dir.path())]);
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(j["images"]["roc"], serde_json::json!([[3, 5, 2, image.len()]]));
}
