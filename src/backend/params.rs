//! Layer parameter structs and output-shape arithmetic, written once for every backend.
//!
//! The structs are `#[repr(C)]` so the CUDA kernels can take them by value, mirrored field for field.
//! 2D layers are the 3D layers with depth 1 (kernel 1, stride 1, padding 0 along depth), so one
//! implementation per layer serves NCHW and NCDHW.

/// Spatial extents ordered (depth, height, width); 2D data has depth 1.
pub type Dims3 = [u32; 3];

/// Output extent of one spatial axis of a convolution or pooling window (PyTorch's floor rule).
pub fn out_extent(input: u32, kernel: u32, stride: u32, pad: u32, dilation: u32) -> u32 {
    let span = dilation * (kernel - 1) + 1;
    (input + 2 * pad - span) / stride + 1
}

fn product(d: Dims3) -> usize {
    d.iter().map(|&e| e as usize).product()
}

/// Convolution over (N, C_in, D, H, W) → (N, C_out, D', H', W'); weights (C_out, C_in/groups, kD, kH, kW).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    pub n: u32,
    pub c_in: u32,
    pub c_out: u32,
    pub groups: u32,
    pub in_dims: Dims3,
    pub kernel: Dims3,
    pub stride: Dims3,
    pub pad: Dims3,
    pub dilation: Dims3,
}

impl ConvParams {
    /// A 2D convolution with a square kernel and the same stride/padding on both axes.
    pub fn conv2d(n: u32, c_in: u32, c_out: u32, hw: [u32; 2], k: u32, stride: u32, pad: u32) -> Self {
        Self {
            n,
            c_in,
            c_out,
            groups: 1,
            in_dims: [1, hw[0], hw[1]],
            kernel: [1, k, k],
            stride: [1, stride, stride],
            pad: [0, pad, pad],
            dilation: [1, 1, 1],
        }
    }

    /// A 3D convolution with a cubic kernel and the same stride/padding on all axes.
    pub fn conv3d(n: u32, c_in: u32, c_out: u32, dhw: Dims3, k: u32, stride: u32, pad: u32) -> Self {
        Self {
            n,
            c_in,
            c_out,
            groups: 1,
            in_dims: dhw,
            kernel: [k; 3],
            stride: [stride; 3],
            pad: [pad; 3],
            dilation: [1; 3],
        }
    }

    pub fn out_dims(&self) -> Dims3 {
        std::array::from_fn(|a| {
            out_extent(
                self.in_dims[a],
                self.kernel[a],
                self.stride[a],
                self.pad[a],
                self.dilation[a],
            )
        })
    }

    pub fn in_spatial(&self) -> usize {
        product(self.in_dims)
    }
    pub fn out_spatial(&self) -> usize {
        product(self.out_dims())
    }
    pub fn kernel_volume(&self) -> usize {
        product(self.kernel)
    }
    /// Input channels seen by one group.
    pub fn c_in_per_group(&self) -> usize {
        (self.c_in / self.groups) as usize
    }
    pub fn c_out_per_group(&self) -> usize {
        (self.c_out / self.groups) as usize
    }
    pub fn input_len(&self) -> usize {
        self.n as usize * self.c_in as usize * self.in_spatial()
    }
    pub fn output_len(&self) -> usize {
        self.n as usize * self.c_out as usize * self.out_spatial()
    }
    pub fn weight_len(&self) -> usize {
        self.c_out as usize * self.c_in_per_group() * self.kernel_volume()
    }
    /// Multiply-adds of the forward pass ×2 (FLOPs); backward costs twice this.
    pub fn forward_flops(&self) -> f64 {
        2.0 * self.output_len() as f64 * (self.c_in_per_group() * self.kernel_volume()) as f64
    }
}

/// Max or average pooling window over (N, C, D, H, W). Average pooling counts padding (PyTorch default).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    pub n: u32,
    pub c: u32,
    pub in_dims: Dims3,
    pub kernel: Dims3,
    pub stride: Dims3,
    pub pad: Dims3,
}

impl PoolParams {
    pub fn pool2d(n: u32, c: u32, hw: [u32; 2], k: u32, stride: u32, pad: u32) -> Self {
        Self {
            n,
            c,
            in_dims: [1, hw[0], hw[1]],
            kernel: [1, k, k],
            stride: [1, stride, stride],
            pad: [0, pad, pad],
        }
    }
    pub fn pool3d(n: u32, c: u32, dhw: Dims3, k: u32, stride: u32, pad: u32) -> Self {
        Self {
            n,
            c,
            in_dims: dhw,
            kernel: [k; 3],
            stride: [stride; 3],
            pad: [pad; 3],
        }
    }
    pub fn out_dims(&self) -> Dims3 {
        std::array::from_fn(|a| out_extent(self.in_dims[a], self.kernel[a], self.stride[a], self.pad[a], 1))
    }
    pub fn in_spatial(&self) -> usize {
        product(self.in_dims)
    }
    pub fn out_spatial(&self) -> usize {
        product(self.out_dims())
    }
    pub fn input_len(&self) -> usize {
        self.n as usize * self.c as usize * self.in_spatial()
    }
    pub fn output_len(&self) -> usize {
        self.n as usize * self.c as usize * self.out_spatial()
    }
}

/// Batch normalisation over (N, C, S) where S is the flattened spatial extent (1 for features).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormParams {
    pub n: u32,
    pub c: u32,
    pub spatial: u32,
    pub eps: f32,
    /// Weight of the new batch statistic in the running average (PyTorch's `momentum`).
    pub momentum: f32,
}

/// PyTorch's defaults, so loaded torchvision weights behave identically.
pub const BN_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

impl BatchNormParams {
    pub fn new(n: u32, c: u32, spatial: u32) -> Self {
        Self {
            n,
            c,
            spatial,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
        }
    }
    pub fn len(&self) -> usize {
        self.n as usize * self.c as usize * self.spatial as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fully connected layer: x (N, in) · Wᵀ (in, out) + b → y (N, out); W is (out, in) as in PyTorch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearParams {
    pub n: u32,
    pub in_features: u32,
    pub out_features: u32,
}

/// Where one output axis reads the layer's grid: source coordinate src = scale · (dst + before) + after,
/// clamped to the grid [0, len − 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxisMap {
    pub scale: f32,
    pub before: f32,
    pub after: f32,
}

impl AxisMap {
    /// PyTorch's `align_corners = False`: src = (in / out) · (dst + ½) − ½.
    pub fn interpolate(in_len: usize, out_len: usize) -> AxisMap {
        AxisMap {
            scale: in_len as f32 / out_len as f32,
            before: 0.5,
            after: -0.5,
        }
    }
    /// Cell i centred at input coordinate `offset + stride · i`: src = (dst − offset) / stride.
    pub fn centred(offset: f64, stride: f64) -> AxisMap {
        AxisMap {
            scale: (1.0 / stride) as f32,
            before: -offset as f32,
            after: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_stem_shapes_match_pytorch() {
        // torchvision resnet18 on 224²: conv1 → 112², maxpool(3, 2, 1) → 56².
        let conv = ConvParams::conv2d(1, 3, 64, [224, 224], 7, 2, 3);
        assert_eq!(conv.out_dims(), [1, 112, 112]);
        let pool = PoolParams::pool2d(1, 64, [112, 112], 3, 2, 1);
        assert_eq!(pool.out_dims(), [1, 56, 56]);
        assert_eq!(conv.weight_len(), 64 * 3 * 49);
    }

    #[test]
    fn dilation_widens_the_window() {
        assert_eq!(out_extent(10, 3, 1, 0, 2), 6);
        assert_eq!(out_extent(7, 3, 2, 1, 1), 4);
    }
}
