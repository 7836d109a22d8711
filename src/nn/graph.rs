//! A model as a list of nodes over numbered tensors (tensor 0 is the image input; tensor 1, when the
//! model has one, its tabular input). Each node's output is a new tensor, so the list is already in
//! topological order and backward is the list reversed.

use crate::backend::{BatchNormParams, ConvParams, LinearParams, PoolParams};

pub type TensorId = usize;

#[derive(Clone, Debug)]
pub enum Op {
    /// `weight` and `bias` index the parameter table; a bias directly follows its weight.
    Conv {
        p: ConvParams,
        weight: usize,
        bias: Option<usize>,
    },
    /// `gamma` then `beta` in the parameter table; `stats` indexes running_mean (running_var follows)
    /// in the buffer table.
    BatchNorm {
        p: BatchNormParams,
        gamma: usize,
        stats: usize,
    },
    Relu,
    MaxPool(PoolParams),
    GlobalAvgPool {
        spatial: usize,
    },
    Linear {
        p: LinearParams,
        weight: usize,
        bias: Option<usize>,
    },
    /// Residual join of two tensors.
    Add,
    Dropout {
        prob: f32,
    },
    /// Nearest-neighbour up-sampling by the pool's stride: the transpose of an average pool (`p`
    /// pools the output back to the input) times `factor` (the window's size), so each input value is
    /// copied to its window and the backward pass sums each window.
    Upsample {
        p: PoolParams,
        factor: f32,
    },
    /// Channel concatenation of two tensors: (N, ca, S) ⧺ (N, cb, S) → (N, ca + cb, S).
    Concat {
        n: usize,
        spatial: usize,
        ca: usize,
        cb: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Element count of each tensor.
    pub tensor_len: Vec<usize>,
    /// Tensors `0..inputs` are fed by the caller (no node produces them, none needs a gradient).
    pub inputs: usize,
}

impl Graph {
    pub fn with_input(len: usize) -> Self {
        Self {
            nodes: Vec::new(),
            tensor_len: vec![len],
            inputs: 1,
        }
    }
    /// Adds another input tensor of `len` elements (before any node); returns it.
    pub fn add_input(&mut self, len: usize) -> TensorId {
        assert!(self.nodes.is_empty(), "inputs come before the first node");
        self.tensor_len.push(len);
        self.inputs += 1;
        self.tensor_len.len() - 1
    }
    /// Whether `id` is fed by the caller rather than computed.
    pub fn is_input(&self, id: TensorId) -> bool {
        id < self.inputs
    }
    /// Appends a node producing a new tensor of `len` elements; returns that tensor.
    pub fn push(&mut self, op: Op, inputs: &[TensorId], len: usize) -> TensorId {
        let output = self.tensor_len.len();
        self.tensor_len.push(len);
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            output,
        });
        output
    }
    pub fn output(&self) -> TensorId {
        self.tensor_len.len() - 1
    }
    /// Forward FLOPs of the convolutions and linear layers.
    pub fn forward_flops(&self) -> f64 {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv { p, .. } => p.forward_flops(),
                Op::Linear { p, .. } => 2.0 * (p.n * p.in_features * p.out_features) as f64,
                _ => 0.0,
            })
            .sum()
    }
}
