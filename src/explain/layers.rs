//! Which nodes of a model Grad-CAM can read, their names and activation shapes, and the driver that
//! runs one batch: inference forward, backward from one output down to the chosen node only (the
//! earliest of several), then the four map steps of [`GradCamOps`] at each chosen node. Each layer
//! also knows where its cells sit on the input grid (receptive-field centres), so its maps can be
//! up-sampled onto the features they came from.

use super::cam::{interpolate_axes, CamShape, GradCamOps, Method, Upsample};
use crate::backend::params::AxisMap;
use crate::backend::{BackendError, Dims3, Result};
use crate::nn::graph::Op;
use crate::nn::{ModelSpec, Net};

/// A node Grad-CAM can be taken at: convolution, batch norm or ReLU with a spatial output.
#[derive(Clone, Debug, PartialEq)]
pub struct CamLayer {
    pub node: usize,
    /// `layer4.1.conv2` for convolutions and batch norms (the torchvision parameter prefix),
    /// `relu<node>` for activations.
    pub name: String,
    /// (C, D, H, W) of one sample.
    pub channels: usize,
    pub dims: Dims3,
    /// Per axis (z, y, x): cell i of this layer is centred on input coordinate
    /// `centres[a][0] + centres[a][1] · i` (the centre of its receptive field).
    pub centres: [[f64; 2]; 3],
}

impl CamLayer {
    /// How the up-sampling to the `input` grid reads this layer's grid.
    pub fn axes(&self, input: Dims3, mode: Upsample) -> [AxisMap; 3] {
        match mode {
            Upsample::Interpolate => interpolate_axes(self.dims, input),
            Upsample::Centred => self
                .centres
                .map(|[offset, stride]| AxisMap::centred(offset, stride)),
        }
    }
}

/// A tensor with a spatial layout: channels, extents, and per axis the input coordinate of cell 0
/// and the step between cells (see [`CamLayer::centres`]).
#[derive(Clone, Copy, Debug)]
struct Spatial {
    channels: usize,
    dims: Dims3,
    centres: [[f64; 2]; 3],
}

/// Cell centres after a window of `kernel` (dilated by `dilation`), `stride` and `pad` per axis:
/// output cell i reads input cells i·s − p … i·s − p + d·(k − 1), centred on i·s − p + d·(k − 1)/2.
fn window_centres(
    input: [[f64; 2]; 3],
    kernel: Dims3,
    stride: Dims3,
    pad: Dims3,
    dilation: Dims3,
) -> [[f64; 2]; 3] {
    std::array::from_fn(|a| {
        let [offset, step] = input[a];
        let centre = dilation[a] as f64 * (kernel[a] as f64 - 1.0) / 2.0 - pad[a] as f64;
        [offset + step * centre, step * stride[a] as f64]
    })
}

/// Every tensor with a spatial layout; None after global pooling.
fn tensor_shapes(spec: &ModelSpec) -> Vec<Option<Spatial>> {
    let g = &spec.graph;
    let mut shapes: Vec<Option<Spatial>> = vec![None; g.tensor_len.len()];
    let identity = [[0.0, 1.0]; 3];
    for node in &g.nodes {
        let input = shapes[node.inputs[0]];
        shapes[node.output] = match &node.op {
            Op::Conv { p, .. } => {
                if node.inputs[0] == 0 {
                    shapes[0] = Some(Spatial {
                        channels: p.c_in as usize,
                        dims: p.in_dims,
                        centres: identity,
                    });
                }
                let from = shapes[node.inputs[0]].map_or(identity, |s| s.centres);
                Some(Spatial {
                    channels: p.c_out as usize,
                    dims: p.out_dims(),
                    centres: window_centres(from, p.kernel, p.stride, p.pad, p.dilation),
                })
            }
            Op::MaxPool(p) => input.map(|s| Spatial {
                channels: p.c as usize,
                dims: p.out_dims(),
                centres: window_centres(s.centres, p.kernel, p.stride, p.pad, [1; 3]),
            }),
            Op::BatchNorm { .. } | Op::Relu | Op::Add | Op::Dropout { .. } => input,
            // Grad-CAM is taken in encoders: a decoder's layers have no place in this map.
            Op::GlobalAvgPool { .. } | Op::Linear { .. } | Op::Upsample { .. } | Op::Concat { .. } => None,
        };
    }
    shapes
}

/// Every node Grad-CAM can be taken at, in graph order.
pub fn cam_layers(spec: &ModelSpec) -> Vec<CamLayer> {
    let shapes = tensor_shapes(spec);
    let mut producer = vec![None; spec.graph.tensor_len.len()];
    for (i, node) in spec.graph.nodes.iter().enumerate() {
        producer[node.output] = Some(i);
    }
    let params = spec.params.entries();
    spec.graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| {
            let Spatial {
                channels,
                dims,
                centres,
            } = shapes[node.output]?;
            let name = match &node.op {
                Op::Conv { weight, .. } => params[*weight].name.trim_end_matches(".weight").to_string(),
                Op::BatchNorm { gamma, .. } => params[*gamma].name.trim_end_matches(".weight").to_string(),
                Op::Relu => relu_name(spec, &producer, i),
                _ => return None,
            };
            Some(CamLayer {
                node: i,
                name,
                channels,
                dims,
                centres,
            })
        })
        .collect()
}

/// A ReLU's name in the torchvision scheme: the output of residual block `layer3.0` (the ReLU after
/// its addition) is `layer3.0`, the ReLU after a block's first batch norm `layer3.0.relu`, the stem's
/// `relu`; any other ReLU `relu<node>` (which also names every ReLU, see [`select_layers`]).
fn relu_name(spec: &ModelSpec, producer: &[Option<usize>], node: usize) -> String {
    let params = spec.params.entries();
    let bn_prefix = |n: Option<usize>| -> Option<String> {
        match &spec.graph.nodes[n?].op {
            Op::BatchNorm { gamma, .. } => {
                let name = params[*gamma].name.trim_end_matches(".weight");
                Some(
                    name.rsplit_once('.')
                        .map_or(String::new(), |(prefix, _)| prefix.to_string()),
                )
            }
            _ => None,
        }
    };
    let input = producer[spec.graph.nodes[node].inputs[0]];
    let named = match input.map(|i| &spec.graph.nodes[i]) {
        Some(add) if matches!(add.op, Op::Add) => {
            bn_prefix(producer[add.inputs[0]]).filter(|p| !p.is_empty())
        }
        _ => bn_prefix(input).map(|p| {
            if p.is_empty() {
                "relu".into()
            } else {
                format!("{p}.relu")
            }
        }),
    };
    named.unwrap_or_else(|| format!("relu{node}"))
}

/// The default layer: the last one with a spatial output (the deepest features, as in the paper).
pub fn default_layer(spec: &ModelSpec) -> Option<CamLayer> {
    cam_layers(spec).pop()
}

/// Whether `node` is where a stage of the network hands on its features: the stem's ReLU (the first
/// ReLU of the graph) or a ReLU after a residual addition (a block output, torchvision `layer3.0`).
pub fn is_block_output(spec: &ModelSpec, node: usize) -> bool {
    let nodes = &spec.graph.nodes;
    if !matches!(nodes[node].op, Op::Relu) {
        return false;
    }
    let first_relu = nodes.iter().position(|n| matches!(n.op, Op::Relu));
    let input = nodes[node].inputs[0];
    first_relu == Some(node) || nodes.iter().any(|n| n.output == input && matches!(n.op, Op::Add))
}

/// Resolves `--layer` values: names, node indices, `all`, `blocks` (the stem and every residual
/// block output: low- to high-level features at each resolution) or `last` (the default layer).
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
            "blocks" => layers
                .iter()
                .filter(|l| is_block_output(spec, l.node))
                .cloned()
                .collect(),
            _ => {
                let by_index = w.parse::<usize>().ok();
                let hit = layers
                    .iter()
                    .find(|l| {
                        l.name == w
                            || Some(l.node) == by_index
                            || (matches!(spec.graph.nodes[l.node].op, Op::Relu)
                                && w == format!("relu{}", l.node))
                    })
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
    if out.is_empty() {
        return Err(format!(
            "--layer {}: selects no layer of this model",
            wanted.join(",")
        ));
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

/// What a Grad-CAM pass computes: the model output explained, how channel weights are made, how
/// maps are laid over the input grid, and whether each map is min-max normalised (false leaves raw
/// maps, for maps normalised later over a whole series).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CamRequest {
    pub output: usize,
    pub method: Method,
    pub upsample: Upsample,
    pub normalise: bool,
}

/// Runs Grad-CAM at `layer` on a full batch `input` (N, C, D, H, W) of the net's batch size:
/// inference forward, backward to the layer only, maps.
pub fn grad_cam<B: GradCamOps>(
    b: &B,
    net: &mut Net<B>,
    input: &[f32],
    layer: &CamLayer,
    req: &CamRequest,
) -> Result<CamBatch> {
    let mut maps = grad_cam_layers(b, net, input, std::slice::from_ref(layer), req)?;
    Ok(maps.remove(0))
}

/// Grad-CAM at several layers from one inference forward and one backward pass that stops at the
/// earliest of them (every later node's output gradient is final by then). One [`CamBatch`] per
/// layer, in the order given.
pub fn grad_cam_layers<B: GradCamOps>(
    b: &B,
    net: &mut Net<B>,
    input: &[f32],
    layers: &[CamLayer],
    req: &CamRequest,
) -> Result<Vec<CamBatch>> {
    let Some(lowest) = layers.iter().map(|l| l.node).min() else {
        return Ok(Vec::new());
    };
    net.forward(b, input, false)?;
    let out_len = net.spec.graph.tensor_len[net.spec.graph.output()];
    let outputs_per_sample = net.spec.config.num_outputs() as usize;
    if req.output >= outputs_per_sample {
        return Err(BackendError::Params {
            op: "grad_cam",
            reason: format!(
                "output {} is not below the model's {outputs_per_sample} outputs",
                req.output
            ),
        });
    }
    let n = out_len / outputs_per_sample;
    let mut seed = vec![0.0f32; out_len];
    for s in 0..n {
        seed[s * outputs_per_sample + req.output] = 1.0;
    }
    let d_output = b.upload(&seed)?;
    net.backward_to(b, &d_output, lowest)?;
    let outputs = b.download(b.view(net.output(), 0..out_len))?;
    let input_dims = input_dims(&net.spec);
    layers
        .iter()
        .map(|layer| {
            let mut batch = layer_maps(b, net, layer, n, input_dims, req)?;
            batch.outputs = outputs.clone();
            Ok(batch)
        })
        .collect()
}

/// The four map steps at one layer whose activations and output gradients are in `net`.
fn layer_maps<B: GradCamOps>(
    b: &B,
    net: &Net<B>,
    layer: &CamLayer,
    n: usize,
    input_dims: Dims3,
    req: &CamRequest,
) -> Result<CamBatch> {
    let shape = CamShape {
        n,
        c: layer.channels,
        dims: layer.dims,
    };
    let acts = net.node_output(layer.node);
    let grads = net.node_output_grad(layer.node);
    let sp = shape.spatial();
    let mut cam = b.zeros(n * sp)?;
    let mut weights = b.zeros(n * shape.c)?;
    match req.method {
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
        Method::LayerCam => b.cam_layer_sum(
            &shape,
            b.view(acts, 0..shape.len()),
            b.view(grads, 0..shape.len()),
            b.view_mut(&mut cam, 0..n * sp),
        )?,
    }
    if req.method != Method::LayerCam {
        b.cam_weighted_sum(
            &shape,
            b.view(acts, 0..shape.len()),
            b.view(&weights, 0..n * shape.c),
            b.view_mut(&mut cam, 0..n * sp),
        )?;
    }
    let in_sp: usize = input_dims.iter().map(|&d| d as usize).product();
    let mut up = b.zeros(n * in_sp)?;
    b.cam_upsample(
        n,
        layer.dims,
        input_dims,
        &layer.axes(input_dims, req.upsample),
        b.view(&cam, 0..n * sp),
        b.view_mut(&mut up, 0..n * in_sp),
    )?;
    if req.normalise {
        b.cam_normalise(n, in_sp, b.view_mut(&mut up, 0..n * in_sp))?;
    }
    Ok(CamBatch {
        maps: b.download(b.view(&up, 0..n * in_sp))?,
        raw: b.download(b.view(&cam, 0..n * sp))?,
        layer_dims: layer.dims,
        outputs: Vec::new(),
    })
}

/// (D, H, W) of the network input.
pub fn input_dims(spec: &ModelSpec) -> Dims3 {
    tensor_shapes(spec)[0].map_or([1, 1, 1], |s| s.dims)
}
