//! ResNet models from config: the 2D family with torchvision's parameter names and layouts (so
//! pretrained weights load), and a 3D ResNet-style CNN for CT volumes or crops. Both are BasicBlock
//! networks; 3D uses the same names with 3D kernels.

use serde::{Deserialize, Serialize};

use super::graph::{Graph, Op, TensorId};
use super::table::NamedTable;
use crate::backend::{BatchNormParams, ConvParams, Dims3, LinearParams, PoolParams};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// 2 (NCHW) or 3 (NCDHW).
    pub spatial_dims: u32,
    /// Input channels, e.g. 1 for CT, 3 for 2.5D (adjacent slices as channels).
    pub in_channels: u32,
    pub num_outputs: u32,
    /// Channels of each stage; stage i > 0 halves the resolution.
    pub widths: Vec<u32>,
    /// BasicBlocks per stage.
    pub blocks: Vec<u32>,
    pub stem_kernel: u32,
    pub stem_stride: u32,
    /// torchvision's 3×3 stride-2 max pool after the stem.
    pub stem_pool: bool,
    /// Tabular inputs fused late (0: none): the head is `fc(pooled) + fc_tabular(tabular)`, which is
    /// one linear layer over the concatenation [pooled, tabular] with its weight split in two.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tabular: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl ResNetConfig {
    /// torchvision's resnet18 topology with configurable width and input channels.
    pub fn resnet18(in_channels: u32, num_outputs: u32, base_width: u32) -> Self {
        Self::resnet2d(in_channels, num_outputs, base_width, vec![2, 2, 2, 2])
    }
    pub fn resnet34(in_channels: u32, num_outputs: u32, base_width: u32) -> Self {
        Self::resnet2d(in_channels, num_outputs, base_width, vec![3, 4, 6, 3])
    }
    fn resnet2d(in_channels: u32, num_outputs: u32, w: u32, blocks: Vec<u32>) -> Self {
        Self {
            spatial_dims: 2,
            in_channels,
            num_outputs,
            widths: vec![w, 2 * w, 4 * w, 8 * w],
            blocks,
            stem_kernel: 7,
            stem_stride: 2,
            stem_pool: true,
            tabular: 0,
        }
    }
    /// 3D ResNet-style CNN: three stages of two BasicBlocks (widths w, 2w, 4w), stride-2 stem.
    pub fn resnet3d(in_channels: u32, num_outputs: u32, base_width: u32) -> Self {
        Self {
            spatial_dims: 3,
            in_channels,
            num_outputs,
            widths: vec![base_width, 2 * base_width, 4 * base_width],
            blocks: vec![2, 2, 2],
            stem_kernel: 7,
            stem_stride: 2,
            stem_pool: true,
            tabular: 0,
        }
    }
}

/// A model's configuration: a ResNet classifier/regressor or a U-Net segmenter. Stored as the
/// config's own JSON (a U-Net's says `"architecture": "unet"`), so checkpoints of ResNets read as
/// before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelConfig {
    ResNet(ResNetConfig),
    UNet(super::unet::UNetConfig),
}

impl From<ResNetConfig> for ModelConfig {
    fn from(c: ResNetConfig) -> Self {
        ModelConfig::ResNet(c)
    }
}

impl From<super::unet::UNetConfig> for ModelConfig {
    fn from(c: super::unet::UNetConfig) -> Self {
        ModelConfig::UNet(c)
    }
}

impl ModelConfig {
    /// Tabular values per sample fused late (U-Nets take none).
    pub fn tabular(&self) -> u32 {
        match self {
            ModelConfig::ResNet(c) => c.tabular,
            ModelConfig::UNet(_) => 0,
        }
    }
    /// Outputs per sample (ResNet) or logit maps (U-Net).
    pub fn num_outputs(&self) -> u32 {
        match self {
            ModelConfig::ResNet(c) => c.num_outputs,
            ModelConfig::UNet(c) => c.num_outputs,
        }
    }
    pub fn spatial_dims(&self) -> u32 {
        match self {
            ModelConfig::ResNet(c) => c.spatial_dims,
            ModelConfig::UNet(c) => c.spatial_dims,
        }
    }
}

/// The graph of either architecture for batches of `n` samples of extent `dims`.
pub fn build_model(cfg: &ModelConfig, n: u32, dims: Dims3) -> ModelSpec {
    match cfg {
        ModelConfig::ResNet(c) => build(c, n, dims),
        ModelConfig::UNet(c) => super::unet::build_unet(c, n, dims),
    }
}

/// A built model: its graph and the tables of the flat parameter and running-statistics buffers.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The configuration it was built from (checkpoints refuse weights of another one).
    pub config: ModelConfig,
    pub graph: Graph,
    pub params: NamedTable,
    pub buffers: NamedTable,
}

/// Builder state: the current tensor, its channels and spatial extents.
struct Builder<'a> {
    cfg: &'a ResNetConfig,
    n: u32,
    spec: ModelSpec,
    x: TensorId,
    c: u32,
    dims: Dims3,
}

impl Builder<'_> {
    fn spatial(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }

    fn conv(
        &mut self,
        name: &str,
        input: TensorId,
        c_out: u32,
        k: u32,
        stride: u32,
        pad: u32,
    ) -> (TensorId, Dims3) {
        let p = if self.cfg.spatial_dims == 2 {
            ConvParams::conv2d(
                self.n,
                self.c,
                c_out,
                [self.dims[1], self.dims[2]],
                k,
                stride,
                pad,
            )
        } else {
            ConvParams::conv3d(self.n, self.c, c_out, self.dims, k, stride, pad)
        };
        let kernel: Vec<usize> = p.kernel[(3 - self.cfg.spatial_dims as usize)..]
            .iter()
            .map(|&e| e as usize)
            .collect();
        let mut shape = vec![c_out as usize, self.c as usize];
        shape.extend(kernel);
        let weight = self.spec.params.push(format!("{name}.weight"), &shape);
        let out = self.spec.graph.push(
            Op::Conv {
                p,
                weight,
                bias: None,
            },
            &[input],
            p.output_len(),
        );
        (out, p.out_dims())
    }

    fn bn(&mut self, name: &str, input: TensorId, c: u32, dims: Dims3) -> TensorId {
        let spatial = dims.iter().product::<u32>();
        let p = BatchNormParams::new(self.n, c, spatial);
        let gamma = self.spec.params.push(format!("{name}.weight"), &[c as usize]);
        self.spec.params.push(format!("{name}.bias"), &[c as usize]);
        let stats = self
            .spec
            .buffers
            .push(format!("{name}.running_mean"), &[c as usize]);
        self.spec
            .buffers
            .push(format!("{name}.running_var"), &[c as usize]);
        self.spec
            .graph
            .push(Op::BatchNorm { p, gamma, stats }, &[input], p.len())
    }

    fn relu(&mut self, input: TensorId) -> TensorId {
        let len = self.spec.graph.tensor_len[input];
        self.spec.graph.push(Op::Relu, &[input], len)
    }

    fn stem(&mut self) {
        let (k, s) = (self.cfg.stem_kernel, self.cfg.stem_stride);
        let c0 = self.cfg.widths[0];
        let (y, dims) = self.conv("conv1", self.x, c0, k, s, k / 2);
        let y = self.bn("bn1", y, c0, dims);
        self.x = self.relu(y);
        self.c = c0;
        self.dims = dims;
        if self.cfg.stem_pool {
            let p = if self.cfg.spatial_dims == 2 {
                PoolParams::pool2d(self.n, c0, [dims[1], dims[2]], 3, 2, 1)
            } else {
                PoolParams::pool3d(self.n, c0, dims, 3, 2, 1)
            };
            self.x = self.spec.graph.push(Op::MaxPool(p), &[self.x], p.output_len());
            self.dims = p.out_dims();
        }
    }

    /// torchvision BasicBlock: conv3×3-bn-relu-conv3×3-bn (+ downsample 1×1-bn) + identity, relu.
    fn basic_block(&mut self, name: &str, c_out: u32, stride: u32) {
        let input = self.x;
        let (y, dims) = self.conv(&format!("{name}.conv1"), input, c_out, 3, stride, 1);
        let y = self.bn(&format!("{name}.bn1"), y, c_out, dims);
        let y = self.relu(y);
        let (c_in, in_dims) = (self.c, self.dims);
        self.c = c_out;
        self.dims = dims;
        let (y, _) = self.conv(&format!("{name}.conv2"), y, c_out, 3, 1, 1);
        let y = self.bn(&format!("{name}.bn2"), y, c_out, dims);
        let shortcut = if stride != 1 || c_in != c_out {
            self.c = c_in;
            self.dims = in_dims;
            let (s, _) = self.conv(&format!("{name}.downsample.0"), input, c_out, 1, stride, 0);
            self.c = c_out;
            self.dims = dims;
            self.bn(&format!("{name}.downsample.1"), s, c_out, dims)
        } else {
            input
        };
        let len = self.spec.graph.tensor_len[y];
        let sum = self.spec.graph.push(Op::Add, &[y, shortcut], len);
        self.x = self.relu(sum);
    }

    fn head(&mut self) {
        let spatial = self.spatial();
        let c = self.c;
        let pooled = self
            .spec
            .graph
            .push(Op::GlobalAvgPool { spatial }, &[self.x], (self.n * c) as usize);
        let p = LinearParams {
            n: self.n,
            in_features: c,
            out_features: self.cfg.num_outputs,
        };
        let weight = self
            .spec
            .params
            .push("fc.weight", &[p.out_features as usize, c as usize]);
        let bias = self.spec.params.push("fc.bias", &[p.out_features as usize]);
        let out_len = (self.n * p.out_features) as usize;
        let image = self.spec.graph.push(
            Op::Linear {
                p,
                weight,
                bias: Some(bias),
            },
            &[pooled],
            out_len,
        );
        if self.cfg.tabular > 0 {
            let p = LinearParams {
                in_features: self.cfg.tabular,
                ..p
            };
            let weight = self.spec.params.push(
                "fc_tabular.weight",
                &[p.out_features as usize, p.in_features as usize],
            );
            let tabular = self.spec.graph.push(
                Op::Linear {
                    p,
                    weight,
                    bias: None,
                },
                &[TABULAR_INPUT],
                out_len,
            );
            self.spec.graph.push(Op::Add, &[image, tabular], out_len);
        }
    }
}

/// The tensor of a model's tabular input (`n × tabular` values), when it has one.
pub const TABULAR_INPUT: TensorId = 1;

/// Builds the model for a batch of `n` inputs of extent `dims` (depth 1 for 2D).
pub fn build(cfg: &ResNetConfig, n: u32, dims: Dims3) -> ModelSpec {
    let input_len = (n * cfg.in_channels) as usize * dims.iter().map(|&d| d as usize).product::<usize>();
    let mut graph = Graph::with_input(input_len);
    if cfg.tabular > 0 {
        let id = graph.add_input((n * cfg.tabular) as usize);
        debug_assert_eq!(id, TABULAR_INPUT);
    }
    let spec = ModelSpec {
        config: cfg.clone().into(),
        graph,
        params: NamedTable::default(),
        buffers: NamedTable::default(),
    };
    let mut b = Builder {
        cfg,
        n,
        spec,
        x: 0,
        c: cfg.in_channels,
        dims,
    };
    b.stem();
    for (stage, (&width, &blocks)) in cfg.widths.iter().zip(&cfg.blocks).enumerate() {
        for block in 0..blocks {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            b.basic_block(&format!("layer{}.{block}", stage + 1), width, stride);
        }
    }
    b.head();
    b.spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet18_has_torchvision_parameter_count_and_names() {
        // torchvision.models.resnet18(): 11,689,512 parameters.
        let spec = build(&ResNetConfig::resnet18(3, 1000, 64), 1, [1, 224, 224]);
        assert_eq!(spec.params.len(), 11_689_512);
        let names: Vec<&str> = spec.params.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&names[..3], ["conv1.weight", "bn1.weight", "bn1.bias"]);
        assert!(names.contains(&"layer2.0.downsample.0.weight"));
        assert_eq!(
            spec.params.find("layer4.1.conv2.weight").unwrap().shape,
            vec![512, 512, 3, 3]
        );
        assert_eq!(names.last(), Some(&"fc.bias"));
    }

    #[test]
    fn resnet34_parameter_count() {
        // torchvision.models.resnet34(): 21,797,672 parameters.
        assert_eq!(
            build(&ResNetConfig::resnet34(3, 1000, 64), 1, [1, 224, 224])
                .params
                .len(),
            21_797_672
        );
    }
}
