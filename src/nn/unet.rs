//! U-Net (2D or 3D) for segmentation: an encoder of double convolutions (3×3 conv, batch norm, ReLU,
//! twice) with a 2× max pool between levels; a decoder that up-samples 2× (nearest neighbour), then a
//! 3×3 conv-bn-relu to the level's width, concatenates the encoder's skip (skip channels first) and
//! applies a double convolution; a 1×1 convolution with bias gives one logit map per output channel.
//! Up-sampling rather than transposed convolution (which avoids its checkerboard artefacts) is the
//! one decoder offered for now. Parameter names follow the layout (`enc0.conv1.weight`,
//! `up1.conv.weight`, `dec0.conv2.weight`, `head.weight`, ...).

use serde::{Deserialize, Serialize};

use super::graph::{Graph, Op, TensorId};
use super::resnet::ModelSpec;
use super::table::NamedTable;
use crate::backend::{BatchNormParams, ConvParams, Dims3, PoolParams};

/// Marks a model config as a U-Net (`architecture = "unet"`).
pub const UNET: &str = "unet";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Always "unet".
    pub architecture: String,
    /// 2 (NCHW) or 3 (NCDHW).
    pub spatial_dims: u32,
    pub in_channels: u32,
    /// Logit maps out (1: one foreground logit per voxel, trained with sigmoid losses).
    pub num_outputs: u32,
    /// Channels of each level, top first; the input is halved `widths.len() − 1` times.
    pub widths: Vec<u32>,
}

impl UNetConfig {
    pub fn new(spatial_dims: u32, in_channels: u32, num_outputs: u32, widths: Vec<u32>) -> Self {
        UNetConfig {
            architecture: UNET.into(),
            spatial_dims,
            in_channels,
            num_outputs,
            widths,
        }
    }

    /// Why the model cannot take inputs of extent `dims` (depth 1 for 2D), if it cannot.
    pub fn check(&self, dims: Dims3) -> Result<(), String> {
        if self.architecture != UNET {
            return Err(format!("architecture is {:?}, not {UNET:?}", self.architecture));
        }
        if !(2..=3).contains(&self.spatial_dims) || self.widths.is_empty() || self.widths.contains(&0) {
            return Err("a U-Net needs spatial_dims 2 or 3 and at least one non-zero width".into());
        }
        let factor = 1u32 << (self.widths.len() - 1);
        let axes = &dims[(3 - self.spatial_dims as usize)..];
        if axes.iter().any(|&d| d == 0 || d % factor != 0) {
            return Err(format!(
                "a U-Net of {} levels halves its input {} times: every extent must be a multiple of \
                 {factor}, the patch is {axes:?}",
                self.widths.len(),
                self.widths.len() - 1
            ));
        }
        Ok(())
    }
}

struct Builder<'a> {
    cfg: &'a UNetConfig,
    n: u32,
    spec: ModelSpec,
}

impl Builder<'_> {
    fn conv(
        &mut self,
        name: &str,
        x: TensorId,
        c_in: u32,
        c_out: u32,
        dims: Dims3,
        k: u32,
        bias: bool,
    ) -> TensorId {
        let pad = k / 2;
        let p = if self.cfg.spatial_dims == 2 {
            ConvParams::conv2d(self.n, c_in, c_out, [dims[1], dims[2]], k, 1, pad)
        } else {
            ConvParams::conv3d(self.n, c_in, c_out, dims, k, 1, pad)
        };
        let mut shape = vec![c_out as usize, c_in as usize];
        shape.extend(std::iter::repeat_n(k as usize, self.cfg.spatial_dims as usize));
        let weight = self.spec.params.push(format!("{name}.weight"), &shape);
        let bias = bias.then(|| self.spec.params.push(format!("{name}.bias"), &[c_out as usize]));
        self.spec
            .graph
            .push(Op::Conv { p, weight, bias }, &[x], p.output_len())
    }

    fn conv_bn_relu(
        &mut self,
        name: &str,
        bn: &str,
        x: TensorId,
        c_in: u32,
        c_out: u32,
        dims: Dims3,
    ) -> TensorId {
        let y = self.conv(name, x, c_in, c_out, dims, 3, false);
        let spatial = dims.iter().product::<u32>();
        let p = BatchNormParams::new(self.n, c_out, spatial);
        let gamma = self.spec.params.push(format!("{bn}.weight"), &[c_out as usize]);
        self.spec.params.push(format!("{bn}.bias"), &[c_out as usize]);
        let stats = self
            .spec
            .buffers
            .push(format!("{bn}.running_mean"), &[c_out as usize]);
        self.spec
            .buffers
            .push(format!("{bn}.running_var"), &[c_out as usize]);
        let y = self
            .spec
            .graph
            .push(Op::BatchNorm { p, gamma, stats }, &[y], p.len());
        let len = self.spec.graph.tensor_len[y];
        self.spec.graph.push(Op::Relu, &[y], len)
    }

    fn double(&mut self, name: &str, x: TensorId, c_in: u32, c_out: u32, dims: Dims3) -> TensorId {
        let y = self.conv_bn_relu(
            &format!("{name}.conv1"),
            &format!("{name}.bn1"),
            x,
            c_in,
            c_out,
            dims,
        );
        self.conv_bn_relu(
            &format!("{name}.conv2"),
            &format!("{name}.bn2"),
            y,
            c_out,
            c_out,
            dims,
        )
    }

    /// The 2× pool of a tensor of extent `dims`, or (as an up-sampling) back to `dims`.
    fn pool(&self, c: u32, dims: Dims3) -> PoolParams {
        if self.cfg.spatial_dims == 2 {
            PoolParams::pool2d(self.n, c, [dims[1], dims[2]], 2, 2, 0)
        } else {
            PoolParams::pool3d(self.n, c, dims, 2, 2, 0)
        }
    }
}

/// Builds the U-Net for a batch of `n` inputs of extent `dims` (depth 1 for 2D).
///
/// # Panics
/// If `cfg.check(dims)` fails.
pub fn build_unet(cfg: &UNetConfig, n: u32, dims: Dims3) -> ModelSpec {
    if let Err(e) = cfg.check(dims) {
        panic!("U-Net config: {e}");
    }
    let input_len = (n * cfg.in_channels) as usize * dims.iter().map(|&d| d as usize).product::<usize>();
    let mut b = Builder {
        cfg,
        n,
        spec: ModelSpec {
            config: cfg.clone().into(),
            graph: Graph::with_input(input_len),
            params: NamedTable::default(),
            buffers: NamedTable::default(),
        },
    };
    let levels = cfg.widths.len();
    let mut skips: Vec<(TensorId, Dims3)> = Vec::new();
    let (mut x, mut c, mut d) = (0, cfg.in_channels, dims);
    for (l, &w) in cfg.widths.iter().enumerate() {
        if l > 0 {
            let p = b.pool(c, d);
            x = b.spec.graph.push(Op::MaxPool(p), &[x], p.output_len());
            d = p.out_dims();
        }
        x = b.double(&format!("enc{l}"), x, c, w, d);
        c = w;
        skips.push((x, d));
    }
    skips.pop();
    for l in (0..levels - 1).rev() {
        let (skip, up_dims) = skips[l];
        let w = cfg.widths[l];
        let p = b.pool(c, up_dims);
        let factor = (1u32 << cfg.spatial_dims) as f32;
        x = b.spec.graph.push(
            Op::Upsample { p, factor },
            &[x],
            p.in_spatial() * (n * c) as usize,
        );
        x = b.conv_bn_relu(&format!("up{l}.conv"), &format!("up{l}.bn"), x, c, w, up_dims);
        let spatial = up_dims.iter().map(|&v| v as usize).product::<usize>();
        x = b.spec.graph.push(
            Op::Concat {
                n: n as usize,
                spatial,
                ca: w as usize,
                cb: w as usize,
            },
            &[skip, x],
            2 * spatial * (n * w) as usize,
        );
        x = b.double(&format!("dec{l}"), x, 2 * w, w, up_dims);
        c = w;
    }
    b.conv("head", x, c, cfg.num_outputs, dims, 1, true);
    b.spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_is_the_closed_form_and_odd_patches_are_refused() {
        // Per double conv: 9·(ci·co) + 9·co² weights and 4 batch-norm parameter vectors of co.
        let cfg = UNetConfig::new(2, 1, 1, vec![4, 8]);
        let spec = build_unet(&cfg, 2, [1, 8, 8]);
        let double = |ci: usize, co: usize| 9 * ci * co + 9 * co * co + 4 * co;
        let up = 9 * 8 * 4 + 2 * 4;
        let want = double(1, 4) + double(4, 8) + up + double(8, 4) + (4 + 1);
        assert_eq!(spec.params.len(), want);
        assert_eq!(spec.graph.tensor_len[spec.graph.output()], 2 * 8 * 8);
        assert!(cfg.check([1, 8, 7]).unwrap_err().contains("multiple of 2"));
        assert!(UNetConfig::new(3, 1, 1, vec![4, 8, 16])
            .check([8, 10, 16])
            .unwrap_err()
            .contains("multiple of 4"));
    }
}
