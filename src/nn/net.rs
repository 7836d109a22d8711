//! Runs a `ModelSpec` on a backend: one flat parameter buffer, one flat gradient buffer (same layout),
//! one flat running-statistics buffer, and an activation buffer per tensor, allocated once.

use std::time::Instant;

use super::graph::{Node, Op};
use super::init::init_params;
use super::resnet::{ModelSpec, TABULAR_INPUT};
use crate::backend::{check_len, Backend, DropoutParams, Result};

/// Where the gradient of a node's second input is after its backward op.
enum Second {
    None,
    /// A residual join: the output's gradient itself.
    SameAsOutput,
    /// A concatenation: its part, in `scratch2`.
    InScratch,
}

pub struct Net<B: Backend> {
    pub spec: ModelSpec,
    /// All trainable parameters, laid out as `spec.params`.
    pub param: B::Buf,
    /// Gradients, same layout; backward accumulates into it (zero it per optimizer step).
    pub grad: B::Buf,
    /// Running statistics, laid out as `spec.buffers`.
    pub state: B::Buf,
    acts: Vec<B::Buf>,
    act_grads: Vec<B::Buf>,
    /// Whether an activation gradient has been written in the current backward pass.
    written: Vec<bool>,
    scratch: B::Buf,
    /// The second input's gradient of a channel concatenation (a single element when none).
    scratch2: B::Buf,
    /// (mean, invstd) saved by each batch-norm node in training mode; empty for other nodes.
    bn_saved: Vec<Option<(B::Buf, B::Buf)>>,
    /// Seed of the dropout masks of the next forward; advanced once per training forward.
    pub dropout_seed: u64,
    /// The seed the last forward used, which backward regenerates the masks from.
    last_dropout_seed: u64,
    training: bool,
    /// Whether the tabular input has been given (models with one refuse to run before it is).
    tabular_set: bool,
    /// Seconds spent per node (forward, backward), summed over passes, when profiling is on.
    pub profile: Option<Vec<(f64, f64)>>,
}

impl<B: Backend> Net<B> {
    /// Allocates every buffer and initialises parameters (seeded He init) and running statistics.
    pub fn new(b: &B, spec: ModelSpec, seed: u64) -> Result<Self> {
        let mut host = vec![0.0f32; spec.params.len()];
        init_params(&spec.params, &mut host, seed);
        let mut stats = vec![0.0f32; spec.buffers.len()];
        for e in spec
            .buffers
            .entries()
            .iter()
            .filter(|e| e.name.ends_with("running_var"))
        {
            stats[e.range.clone()].fill(1.0);
        }
        let lens = &spec.graph.tensor_len;
        let max_len = lens.iter().copied().max().unwrap_or(0);
        let has_concat = spec.graph.nodes.iter().any(|n| matches!(n.op, Op::Concat { .. }));
        let bn_saved = spec
            .graph
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::BatchNorm { p, .. } => Ok(Some((b.zeros(p.c as usize)?, b.zeros(p.c as usize)?))),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            param: b.upload(&host)?,
            grad: b.zeros(spec.params.len())?,
            state: b.upload(&stats)?,
            acts: lens.iter().map(|&l| b.zeros(l)).collect::<Result<_>>()?,
            act_grads: lens.iter().map(|&l| b.zeros(l)).collect::<Result<_>>()?,
            written: vec![false; lens.len()],
            scratch: b.zeros(max_len)?,
            scratch2: b.zeros(if has_concat { max_len } else { 1 })?,
            bn_saved,
            dropout_seed: seed ^ 0xD50F_0057,
            last_dropout_seed: 0,
            training: true,
            tabular_set: false,
            profile: None,
            spec,
        })
    }

    /// Starts per-node timing (host wall time; on an asynchronous device it measures launches only).
    pub fn enable_profile(&mut self) {
        self.profile = Some(vec![(0.0, 0.0); self.spec.graph.nodes.len()]);
    }

    pub fn input_len(&self) -> usize {
        self.spec.graph.tensor_len[0]
    }

    /// Tabular values per batch row the model fuses late (0 when it takes none).
    pub fn tabular_len(&self) -> usize {
        match self.spec.graph.inputs {
            0 | 1 => 0,
            _ => self.spec.graph.tensor_len[TABULAR_INPUT],
        }
    }

    /// Sets the tabular input (batch × `tabular_len` values, row-major) that the following forward
    /// passes use, until it is set again.
    pub fn set_tabular(&mut self, b: &B, values: &[f32]) -> Result<()> {
        check_len("model forward", "tabular input", self.tabular_len(), values.len())?;
        if !values.is_empty() {
            b.upload_into(values, b.view_mut(&mut self.acts[TABULAR_INPUT], 0..values.len()))?;
        }
        self.tabular_set = true;
        Ok(())
    }

    /// The model output (logits or risk scores) of the last forward.
    pub fn output(&self) -> &B::Buf {
        &self.acts[self.spec.graph.output()]
    }

    /// Runs every node in order; `training` selects batch statistics and dropout.
    pub fn forward(&mut self, b: &B, input: &[f32], training: bool) -> Result<()> {
        self.training = training;
        check_len("model forward", "input", self.input_len(), input.len())?;
        if self.tabular_len() > 0 && !self.tabular_set {
            return Err(crate::backend::BackendError::Params {
                op: "model forward",
                reason: format!(
                    "the model fuses {} tabular values per sample and none were given",
                    self.spec.config.tabular()
                ),
            });
        }
        // Into the buffer allocated once: no device allocation per step.
        b.upload_into(input, b.view_mut(&mut self.acts[0], 0..input.len()))?;
        self.last_dropout_seed = self.dropout_seed;
        for i in 0..self.spec.graph.nodes.len() {
            let start = Instant::now();
            self.forward_node(b, i)?;
            if let Some(times) = self.profile.as_mut() {
                times[i].0 += start.elapsed().as_secs_f64();
            }
        }
        if training {
            self.dropout_seed = crate::backend::kernels::mix64(self.dropout_seed);
        }
        Ok(())
    }

    fn forward_node(&mut self, b: &B, index: usize) -> Result<()> {
        let node: &Node = &self.spec.graph.nodes[index];
        let (before, after) = self.acts.split_at_mut(node.output);
        let y = b.view_mut(&mut after[0], 0..self.spec.graph.tensor_len[node.output]);
        let x = b.view(
            &before[node.inputs[0]],
            0..self.spec.graph.tensor_len[node.inputs[0]],
        );
        let pv = |i: usize| b.view(&self.param, self.spec.params.range(i));
        match &node.op {
            Op::Conv { p, weight, bias } => b.conv_forward(p, x, pv(*weight), bias.map(pv), y),
            Op::BatchNorm { p, gamma, stats } => {
                let c = p.c as usize;
                let beta = pv(gamma + 1);
                let stats_range =
                    self.spec.buffers.range(*stats).start..self.spec.buffers.range(stats + 1).end;
                if self.training {
                    let (mean, invstd) = self.bn_saved[index]
                        .as_mut()
                        .expect("batch-norm node has saved stats");
                    let stats_view = b.view_mut(&mut self.state, stats_range);
                    let (rm, rv) = b.split_at_mut(stats_view, c);
                    let (mean, invstd) = (b.view_mut(mean, 0..c), b.view_mut(invstd, 0..c));
                    b.batchnorm_forward_train(p, x, pv(*gamma), beta, y, mean, invstd, rm, rv)
                } else {
                    let rm = b.view(&self.state, stats_range.start..stats_range.start + c);
                    let rv = b.view(&self.state, stats_range.start + c..stats_range.end);
                    b.batchnorm_forward_infer(p, x, pv(*gamma), beta, rm, rv, y)
                }
            }
            Op::Relu => b.leaky_relu_forward(0.0, x, y),
            Op::MaxPool(p) => b.max_pool_forward(p, x, y),
            Op::GlobalAvgPool { spatial } => b.global_avg_pool_forward(*spatial, x, y),
            Op::Linear { p, weight, bias } => b.linear_forward(p, x, pv(*weight), bias.map(pv), y),
            Op::Add => {
                let other = b.view(
                    &before[node.inputs[1]],
                    0..self.spec.graph.tensor_len[node.inputs[1]],
                );
                b.add(x, other, y)
            }
            Op::Dropout { prob } => {
                let p = DropoutParams {
                    prob: if self.training { *prob } else { 0.0 },
                    seed: self.last_dropout_seed ^ index as u64,
                };
                b.dropout_forward(&p, x, y)
            }
            Op::Upsample { p, factor } => {
                b.avg_pool_backward(p, x, y)?;
                let len = self.spec.graph.tensor_len[node.output];
                b.scale(*factor, b.view_mut(&mut after[0], 0..len))
            }
            Op::Concat { n, spatial, ca, cb } => {
                let other = b.view(
                    &before[node.inputs[1]],
                    0..self.spec.graph.tensor_len[node.inputs[1]],
                );
                b.concat_channels_forward(*n, *spatial, x, *ca, other, *cb, y)
            }
        }
    }

    /// Backpropagates `d_output` (gradient of the loss w.r.t. the output) and ACCUMULATES parameter
    /// gradients into `grad`.
    pub fn backward(&mut self, b: &B, d_output: &B::Buf) -> Result<()> {
        self.backward_with(b, d_output, &mut |_, _, _| Ok(()))
    }

    /// `backward`, calling `ready(b, grad, frontier)` after each node: every gradient at a flat offset
    /// `>= frontier` is final for this pass (parameters are laid out in node order, and backward visits
    /// nodes in reverse), so gradient buckets can be reduced while the rest of backward runs.
    pub fn backward_with(
        &mut self,
        b: &B,
        d_output: &B::Buf,
        ready: &mut dyn FnMut(&B, &B::Buf, usize) -> Result<()>,
    ) -> Result<()> {
        let out = self.spec.graph.output();
        let len = self.spec.graph.tensor_len[out];
        b.copy(
            b.view(d_output, 0..len),
            b.view_mut(&mut self.act_grads[out], 0..len),
        )?;
        self.written.fill(false);
        self.written[out] = true;
        let mut frontier = self.spec.params.len();
        for i in (0..self.spec.graph.nodes.len()).rev() {
            let start = Instant::now();
            self.backward_node(b, i)?;
            if let Some(times) = self.profile.as_mut() {
                times[i].1 += start.elapsed().as_secs_f64();
            }
            if let Some(first) = self.first_param_of(i) {
                frontier = frontier.min(self.spec.params.range(first).start);
                ready(b, &self.grad, frontier)?;
            }
        }
        ready(b, &self.grad, 0)
    }

    /// Backpropagates `d_output` only through the nodes after `node`, so that afterwards
    /// [`Net::node_output`] and [`Net::node_output_grad`] hold that node's forward output and the
    /// gradient of the output with respect to it (what Grad-CAM needs; nothing below is computed).
    /// Parameter gradients of the visited nodes accumulate into `grad` as in `backward`. After an
    /// inference forward, batch-norm nodes use the derivative of the inference transform,
    /// γ/√(running var + ε) per channel, rather than the batch-statistics one.
    pub fn backward_to(&mut self, b: &B, d_output: &B::Buf, node: usize) -> Result<()> {
        let nodes = self.spec.graph.nodes.len();
        if node >= nodes {
            return Err(crate::backend::BackendError::Params {
                op: "backward_to",
                reason: format!("node {node} does not exist (the model has {nodes})"),
            });
        }
        let out = self.spec.graph.output();
        let len = self.spec.graph.tensor_len[out];
        b.copy(
            b.view(d_output, 0..len),
            b.view_mut(&mut self.act_grads[out], 0..len),
        )?;
        self.written.fill(false);
        self.written[out] = true;
        for i in (node + 1..nodes).rev() {
            let is_bn = matches!(self.spec.graph.nodes[i].op, Op::BatchNorm { .. });
            if is_bn && !self.training {
                self.backward_bn_inference(b, i)?;
            } else {
                self.backward_node(b, i)?;
            }
        }
        if !self.written[self.spec.graph.nodes[node].output] {
            return Err(crate::backend::BackendError::Params {
                op: "backward_to",
                reason: format!("the output does not depend on node {node}"),
            });
        }
        Ok(())
    }

    /// The forward output of node `node` (after the last forward).
    pub fn node_output(&self, node: usize) -> &B::Buf {
        &self.acts[self.spec.graph.nodes[node].output]
    }

    /// The gradient with respect to node `node`'s output (after `backward_to(.., node)`).
    pub fn node_output_grad(&self, node: usize) -> &B::Buf {
        &self.act_grads[self.spec.graph.nodes[node].output]
    }

    /// Inference batch norm is y = s·x + t per channel, so dx = s·dy: run as the input gradient of a
    /// depthwise 1×1 convolution with weights s, which every backend already provides.
    fn backward_bn_inference(&mut self, b: &B, index: usize) -> Result<()> {
        let node = self.spec.graph.nodes[index].clone();
        let Op::BatchNorm { p, gamma, stats } = node.op else {
            return Ok(());
        };
        let c = p.c as usize;
        let gamma_host = b.download(b.view(&self.param, self.spec.params.range(gamma)))?;
        let var_host = b.download(b.view(&self.state, self.spec.buffers.range(stats + 1)))?;
        let scale: Vec<f32> = gamma_host
            .iter()
            .zip(&var_host)
            .map(|(g, v)| g / (v + p.eps).sqrt())
            .collect();
        let w = b.upload(&scale)?;
        let mut dw = b.zeros(c)?;
        let cp = crate::backend::ConvParams {
            n: p.n,
            c_in: p.c,
            c_out: p.c,
            groups: p.c,
            in_dims: [1, 1, p.spatial],
            kernel: [1; 3],
            stride: [1; 3],
            pad: [0; 3],
            dilation: [1; 3],
        };
        let x_id = node.inputs[0];
        if self.spec.graph.is_input(x_id) {
            return Ok(());
        }
        let fresh = !self.written[x_id];
        {
            let lens = &self.spec.graph.tensor_len;
            let (grads_before, grads_after) = self.act_grads.split_at_mut(node.output);
            let dy = b.view(&grads_after[0], 0..lens[node.output]);
            let x = b.view(&self.acts[x_id], 0..lens[x_id]);
            let target = if fresh {
                &mut grads_before[x_id]
            } else {
                &mut self.scratch
            };
            let dx = b.view_mut(target, 0..lens[x_id]);
            b.conv_backward(
                &cp,
                x,
                b.view(&w, 0..c),
                dy,
                Some(dx),
                b.view_mut(&mut dw, 0..c),
                None,
            )?;
        }
        self.route(b, index, x_id, fresh)
    }

    /// The first parameter tensor a node owns (weight or gamma), if any.
    fn first_param_of(&self, index: usize) -> Option<usize> {
        match &self.spec.graph.nodes[index].op {
            Op::Conv { weight, .. } | Op::Linear { weight, .. } => Some(*weight),
            Op::BatchNorm { gamma, .. } => Some(*gamma),
            _ => None,
        }
    }

    /// Start offsets of every parameter tensor in the flat buffer (bucket boundaries).
    pub fn param_boundaries(&self) -> Vec<usize> {
        (0..self.spec.params.entries().len())
            .map(|i| self.spec.params.range(i).start)
            .collect()
    }

    fn backward_node(&mut self, b: &B, index: usize) -> Result<()> {
        let node = self.spec.graph.nodes[index].clone();
        let x_id = node.inputs[0];
        // The inputs (image, tabular values) need no gradient.
        let wants_dx = !self.spec.graph.is_input(x_id);
        let fresh = !self.written[x_id];
        match self.backward_op(b, index, &node, fresh)? {
            Second::SameAsOutput => {
                self.route(b, index, x_id, fresh)?;
                return self.route_second_add_input(b, &node);
            }
            Second::InScratch => {
                self.route(b, index, x_id, fresh)?;
                return self.route_second_from_scratch(b, &node);
            }
            Second::None => {}
        }
        if wants_dx {
            self.route(b, index, x_id, fresh)?;
        }
        Ok(())
    }

    /// Runs the backward op of one node; its views end here, before the gradient routing borrows
    /// `self` again. Says where a two-input node's second gradient is.
    fn backward_op(&mut self, b: &B, index: usize, node: &Node, fresh: bool) -> Result<Second> {
        let lens = &self.spec.graph.tensor_len;
        let x_id = node.inputs[0];
        let wants_dx = !self.spec.graph.is_input(x_id);
        let (grads_before, grads_after) = self.act_grads.split_at_mut(node.output);
        let dy = b.view(&grads_after[0], 0..lens[node.output]);
        let x = b.view(&self.acts[x_id], 0..lens[x_id]);
        // Write straight into the input's gradient the first time, else into scratch and accumulate.
        let dx_target = if fresh {
            &mut grads_before[x_id]
        } else {
            &mut self.scratch
        };
        let dx = b.view_mut(dx_target, 0..lens[x_id]);
        let pv = |i: usize| b.view(&self.param, self.spec.params.range(i));
        let param_pair = |first: usize, second: Option<usize>| {
            let end = second.map_or(self.spec.params.range(first).end, |s| {
                self.spec.params.range(s).end
            });
            self.spec.params.range(first).start..end
        };
        match &node.op {
            Op::Conv { p, weight, bias } => {
                let gv = b.view_mut(&mut self.grad, param_pair(*weight, *bias));
                let (dw, db) = b.split_at_mut(gv, p.weight_len());
                let db = bias.map(|_| db);
                b.conv_backward(p, x, pv(*weight), dy, wants_dx.then_some(dx), dw, db)?;
            }
            Op::Linear { p, weight, bias } => {
                let gv = b.view_mut(&mut self.grad, param_pair(*weight, *bias));
                let (dw, db) = b.split_at_mut(gv, (p.in_features * p.out_features) as usize);
                let db = bias.map(|_| db);
                b.linear_backward(p, x, pv(*weight), dy, wants_dx.then_some(dx), dw, db)?;
            }
            Op::BatchNorm { p, gamma, .. } => {
                let c = p.c as usize;
                let gv = b.view_mut(&mut self.grad, param_pair(*gamma, Some(gamma + 1)));
                let (dg, dbeta) = b.split_at_mut(gv, c);
                let (mean, invstd) = self.bn_saved[index]
                    .as_ref()
                    .expect("batch-norm node has saved stats");
                b.batchnorm_backward(
                    p,
                    x,
                    pv(*gamma),
                    b.view(mean, 0..c),
                    b.view(invstd, 0..c),
                    dy,
                    dx,
                    dg,
                    dbeta,
                )?;
            }
            Op::Relu => b.leaky_relu_backward(0.0, x, dy, dx)?,
            Op::MaxPool(p) => b.max_pool_backward(p, x, dy, dx)?,
            Op::GlobalAvgPool { spatial } => b.global_avg_pool_backward(*spatial, dy, dx)?,
            Op::Add => {
                b.copy(dy, dx)?;
                return Ok(Second::SameAsOutput);
            }
            Op::Upsample { p, factor } => {
                b.avg_pool_forward(p, dy, dx)?;
                b.scale(*factor, b.view_mut(dx_target, 0..lens[x_id]))?;
            }
            Op::Concat { n, spatial, ca, cb } => {
                let db = b.view_mut(&mut self.scratch2, 0..lens[node.inputs[1]]);
                b.concat_channels_backward(*n, *spatial, dy, *ca, *cb, dx, db)?;
                return Ok(Second::InScratch);
            }
            Op::Dropout { prob } => {
                let p = DropoutParams {
                    prob: *prob,
                    seed: self.last_dropout_seed ^ index as u64,
                };
                b.dropout_backward(&p, dy, dx)?;
            }
        }
        Ok(Second::None)
    }

    /// After a gradient for `x_id` was written: mark it, or add the scratch copy into it.
    fn route(&mut self, b: &B, _index: usize, x_id: usize, fresh: bool) -> Result<()> {
        let len = self.spec.graph.tensor_len[x_id];
        if fresh {
            self.written[x_id] = true;
            Ok(())
        } else {
            b.accumulate(
                b.view(&self.scratch, 0..len),
                b.view_mut(&mut self.act_grads[x_id], 0..len),
            )
        }
    }

    /// The second input of a concatenation receives its part of the gradient, left in `scratch2`.
    fn route_second_from_scratch(&mut self, b: &B, node: &Node) -> Result<()> {
        let id = node.inputs[1];
        let len = self.spec.graph.tensor_len[id];
        let part = b.view(&self.scratch2, 0..len);
        if self.written[id] {
            b.accumulate(part, b.view_mut(&mut self.act_grads[id], 0..len))
        } else {
            self.written[id] = true;
            b.copy(part, b.view_mut(&mut self.act_grads[id], 0..len))
        }
    }

    /// The second input of a residual join receives the same gradient as the first.
    fn route_second_add_input(&mut self, b: &B, node: &Node) -> Result<()> {
        let id = node.inputs[1];
        let len = self.spec.graph.tensor_len[id];
        let (before, after) = self.act_grads.split_at_mut(node.output);
        let dy = b.view(&after[0], 0..len);
        if self.written[id] {
            b.accumulate(dy, b.view_mut(&mut before[id], 0..len))
        } else {
            self.written[id] = true;
            b.copy(dy, b.view_mut(&mut before[id], 0..len))
        }
    }
}
