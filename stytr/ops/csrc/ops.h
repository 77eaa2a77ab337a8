// Host-side entry points of the stytr CUDA plugin; bound to Python in ops.cpp.
#pragma once

#include <ATen/ATen.h>

namespace stytr {

// Upsample `x` (B, C, H, W) by zero insertion, pad (negative pads crop), convolve
// every plane with the FIR `kernel` (kh, kw) -- a true convolution -- and keep every
// down-th sample. Accumulates in fp32 (fp64 for double inputs).
at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& kernel, int64_t up_x, int64_t up_y,
                     int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                     int64_t pad_y1);

// scale * leaky_relu(x + bias), bias broadcast along dimension 1 (an empty bias means none).
at::Tensor bias_leaky_relu(const at::Tensor& x, const at::Tensor& bias, double negative_slope, double scale);

// The gradient of bias_leaky_relu: grad * scale where `out` > 0, grad * scale * negative_slope
// elsewhere. `out` is the forward output (its sign equals the sign of x + bias).
at::Tensor leaky_relu_grad(const at::Tensor& grad, const at::Tensor& out, double negative_slope, double scale);

}  // namespace stytr
