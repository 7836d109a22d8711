//! Which nodes of a model Grad-CAM can read, their names and activation shapes, and the driver that
//! runs one batch: inference forward, backward from one output down to the chosen node only, then
//! the four map steps of [`GradCamOps`].

use super::cam::{CamShape, GradCamOps, Method};
use crate::backend::{BackendError, Dims3, Result};
use crate::nn::graph::Op;
use crate::nn::{ModelSpec, Net};

/// A node Grad-CAM can be taken at: convolution, batch norm or ReLU with a spatial output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CamLayer {
    pub node: usize,
    /// `layer4.1.conv2` for convolutions and batch norms (the torchvision parameter prefix),
    /// `relu<node>` for activations.
    pub name: String,
    /// (C, D, H, W) of one sample.
    pub channels: usize,
    pub dims: Dims3,
}

/// (channels, dims) of every tensor with a spatial layout; None after global pooling.
fn tensor_shapes(spec: &ModelSpec) -> Vec<Option<(usize, Dims3)>> {
    let g = &spec.graph;
    let mut shapes: Vec<Option<(usize, Dims3)>> = vec![None; g.tensor_len.len()];
    for node in &g.nodes {
        let input = shapes[node.inputs[0]];
        shapes[node.output] = match &node.op {
            Op::Conv { p, .. } => {
                if node.inputs[0] == 0 {
                    shapes[0] = Some((p.c_in as usize, p.in_dims));
                }
                Some((p.c_out as usize, p.out_dims()))
            }
            Op::MaxPool(p) => Some((p.c as usize, p.out_dims())),
            Op::BatchNorm { .. } | Op::Relu | Op::Add | Op::Dropout { .. } => input,
            Op::GlobalAvgPool { .. } | Op::Linear { .. } => None,
        };
    }
    shapes
}

/// Every node Grad-CAM can be taken at, in graph order.
pub fn cam_layers(spec: &ModelSpec) -> Vec<CamLayer> {
    let shapes = tensor_shapes(spec);
    let params = spec.params.entries();
    spec.graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| {
            let (channels, dims) = shapes[node.output]?;
            let name = match &node.op {
                Op::Conv { weight, .. } => params[*weight].name.trim_end_matches(".weight").to_string(),
                Op::BatchNorm { gamma, .. } => params[*gamma].name.trim_end_matches(".weight").to_string(),
                Op::Relu => format!("relu{i}"),
                _ => return None,
            };
            Some(CamLayer {
                node: i,
                name,
                channels,
                dims,
            })
        })
        .collect()
}

/// The default layer: the last one with a spatial output (the deepest features, as in the paper).
pub fn default_layer(spec: &ModelSpec) -> Option<CamLayer> {
    cam_layers(spec).pop()
}

/// Resolves `--layer` values: names, node indices, `all`, or `last` (the default layer).
pub fn select_layers(spec: &ModelSpec, wanted: &[String]) -> std::result::Result<Vec<CamLayer>, String> {
    let layers = cam_layers(spec);
    if layers.is_empty() {
        return Err("the model has no convolutional layer".into());
    }
    if wanted.is_empty() {
        return Ok(vec![layers[layers.len() - 1].clone()]);
    }
    let mut out: Vec<CamLayer> = Vec::new();
    for w in wanted.iter().flat_map(|w| w.split(',')).map(str::trim) {
        let found: Vec<CamLayer> = match w {
            "all" => layers.clone(),
            "last" => vec![layers[layers.len() - 1].clone()],
            _ => {
                let by_index = w.parse::<usize>().ok();
                let hit = layers
                    .iter()
                    .find(|l| l.name == w || Some(l.node) == by_index)
                    .cloned()
                    .ok_or_else(|| {
                        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
                        format!(
                            "--layer {w:?}: no such convolution, batch-norm or ReLU node (have: {})",
                            names.join(", ")
                        )
                    })?;
                vec![hit]
            }
        };
        for l in found {
            if !out.iter().any(|o| o.node == l.node) {
                out.push(l);
            }
        }
    }
    Ok(out)
}

/// Grad-CAM maps of one batch at one layer, on the input grid and normalised per sample.
pub struct CamBatch {
    /// (N, D, H, W) on the network input grid, each map in [0, 1] when normalised.
    pub maps: Vec<f32>,
    /// (N, D', H', W') at the layer's own resolution, before normalisation.
    pub raw: Vec<f32>,
    /// The layer's grid.
    pub layer_dims: Dims3,
    /// Model outputs of the batch (N, outputs).
    pub outputs: Vec<f32>,
}

/// Runs Grad-CAM for `output` (an index into the model outputs) at `layer` on a full batch `input`
/// (N, C, D, H, W) of the net's batch size: inference forward, backward to the layer only, maps.
/// `normalise` false skips the per-map min-max step (for maps normalised later over a whole series).
pub fn grad_cam<B: GradCamOps>(
    b: &B,
    net: &mut Net<B>,
    input: &[f32],
    layer: &CamLayer,
    output: usize,
    method: Method,
    normalise: bool,
) -> Result<CamBatch> {
    net.forward(b, input, false)?;
    let out_len = net.spec.graph.tensor_len[net.spec.graph.output()];
    let outputs_per_sample = net.spec.config.num_outputs as usize;
    if output >= outputs_per_sample {
        return Err(BackendError::Params {
            op: "grad_cam",
            reason: format!("output {output} is not below the model's {outputs_per_sample} outputs"),
        });
    }
    let n = out_len / outputs_per_sample;
    let mut seed = vec![0.0f32; out_len];
    for s in 0..n {
        seed[s * outputs_per_sample + output] = 1.0;
    }
    let d_output = b.upload(&seed)?;
    net.backward_to(b, &d_output, layer.node)?;
    let shape = CamShape {
        n,
        c: layer.channels,
        dims: layer.dims,
    };
    let input_dims = input_dims(&net.spec);
    let acts = net.node_output(layer.node);
    let grads = net.node_output_grad(layer.node);
    let mut weights = b.zeros(n * shape.c)?;
    match method {
        Method::GradCam => b.cam_pool_weights(
            &shape,
            b.view(grads, 0..shape.len()),
            b.view_mut(&mut weights, 0..n * shape.c),
        )?,
        Method::GradCamPlusPlus => b.cam_pp_weights(
            &shape,
            b.view(acts, 0..shape.len()),
            b.view(grads, 0..shape.len()),
            b.view_mut(&mut weights, 0..n * shape.c),
        )?,
    }
    let sp = shape.spatial();
    let mut cam = b.zeros(n * sp)?;
    b.cam_weighted_sum(
        &shape,
        b.view(acts, 0..shape.len()),
        b.view(&weights, 0..n * shape.c),
        b.view_mut(&mut cam, 0..n * sp),
    )?;
    let in_sp: usize = input_dims.iter().map(|&d| d as usize).product();
    let mut up = b.zeros(n * in_sp)?;
    b.cam_upsample(
        n,
        layer.dims,
        input_dims,
        b.view(&cam, 0..n * sp),
        b.view_mut(&mut up, 0..n * in_sp),
    )?;
    if normalise {
        b.cam_normalise(n, in_sp, b.view_mut(&mut up, 0..n * in_sp))?;
    }
    Ok(CamBatch {
        maps: b.download(b.view(&up, 0..n * in_sp))?,
        raw: b.download(b.view(&cam, 0..n * sp))?,
        layer_dims: layer.dims,
        outputs: b.download(b.view(net.output(), 0..out_len))?,
    })
}

/// (D, H, W) of the network input.
pub fn input_dims(spec: &ModelSpec) -> Dims3 {
    tensor_shapes(spec)[0].map_or([1, 1, 1], |(_, d)| d)
}
