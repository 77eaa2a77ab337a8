// Bias + leaky ReLU + gain in one pass, and its gradient. Both are element-wise
// grid-stride loops; the arithmetic runs in fp32 (fp64 for double tensors).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>

#include "ops.h"

namespace stytr {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, typename index_t, bool HAS_BIAS>
__global__ void bias_leaky_relu_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias,
                                       scalar_t* __restrict__ y, index_t numel, index_t inner, index_t channels,
                                       at::opmath_type<scalar_t> positive_gain,
                                       at::opmath_type<scalar_t> negative_gain) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    acc_t v = static_cast<acc_t>(x[i]);
    if (HAS_BIAS) v += static_cast<acc_t>(bias[(i / inner) % channels]);
    y[i] = static_cast<scalar_t>(v * (v > acc_t(0) ? positive_gain : negative_gain));
  }
}

template <typename scalar_t, typename index_t>
__global__ void leaky_relu_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ out,
                                       scalar_t* __restrict__ result, index_t numel,
                                       at::opmath_type<scalar_t> positive_gain,
                                       at::opmath_type<scalar_t> negative_gain) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const acc_t gain = static_cast<acc_t>(out[i]) > acc_t(0) ? positive_gain : negative_gain;
    result[i] = static_cast<scalar_t>(static_cast<acc_t>(grad[i]) * gain);
  }
}

unsigned int grid_for(int64_t numel, int device) {
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const int64_t blocks = (numel + kThreads - 1) / kThreads;
  const int64_t resident = static_cast<int64_t>(sm_count) * 16;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(blocks, resident)));
}

bool fits_int32(int64_t numel) { return numel < static_cast<int64_t>(std::numeric_limits<int>::max()) / 2; }

}  // namespace

at::Tensor bias_leaky_relu(const at::Tensor& x, const at::Tensor& bias, double negative_slope, double scale) {
  TORCH_CHECK(x.is_cuda(), "fused_leaky_relu: input must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor input = x.contiguous();
  const bool has_bias = bias.defined() && bias.numel() > 0;
  const int64_t channels = input.dim() >= 2 ? input.size(1) : 1;
  at::Tensor b;
  if (has_bias) {
    TORCH_CHECK(input.dim() >= 2, "fused_leaky_relu: a bias needs an input with a channel dimension");
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == channels, "fused_leaky_relu: bias of shape ", bias.sizes(),
                " does not match ", channels, " channels");
    b = bias.to(input.device(), input.scalar_type()).contiguous();
  }
  int64_t inner = 1;
  for (int64_t d = 2; d < input.dim(); ++d) inner *= input.size(d);

  at::Tensor y = at::empty_like(input);
  const int64_t numel = input.numel();
  if (numel == 0) return y;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned int blocks = grid_for(numel, input.get_device());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "stytr_bias_leaky_relu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t pos = static_cast<acc_t>(scale);
    const acc_t neg = static_cast<acc_t>(scale * negative_slope);
    const scalar_t* xp = input.data_ptr<scalar_t>();
    const scalar_t* bp = has_bias ? b.data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    if (fits_int32(numel)) {
      if (has_bias)
        bias_leaky_relu_kernel<scalar_t, int, true><<<blocks, kThreads, 0, stream>>>(
            xp, bp, yp, static_cast<int>(numel), static_cast<int>(inner), static_cast<int>(channels), pos, neg);
      else
        bias_leaky_relu_kernel<scalar_t, int, false><<<blocks, kThreads, 0, stream>>>(
            xp, bp, yp, static_cast<int>(numel), 1, 1, pos, neg);
    } else {
      if (has_bias)
        bias_leaky_relu_kernel<scalar_t, int64_t, true><<<blocks, kThreads, 0, stream>>>(xp, bp, yp, numel, inner,
                                                                                         channels, pos, neg);
      else
        bias_leaky_relu_kernel<scalar_t, int64_t, false><<<blocks, kThreads, 0, stream>>>(xp, bp, yp, numel, 1, 1,
                                                                                          pos, neg);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor leaky_relu_grad(const at::Tensor& grad, const at::Tensor& out, double negative_slope, double scale) {
  TORCH_CHECK(grad.is_cuda() && out.is_cuda(), "fused_leaky_relu backward: tensors must be on a CUDA device");
  TORCH_CHECK(grad.sizes() == out.sizes(), "fused_leaky_relu backward: gradient of shape ", grad.sizes(),
              " does not match the output's ", out.sizes());
  TORCH_CHECK(grad.scalar_type() == out.scalar_type(), "fused_leaky_relu backward: dtype mismatch");
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor g = grad.contiguous();
  const at::Tensor o = out.contiguous();
  at::Tensor result = at::empty_like(g);
  const int64_t numel = g.numel();
  if (numel == 0) return result;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned int blocks = grid_for(numel, g.get_device());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "stytr_leaky_relu_grad", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t pos = static_cast<acc_t>(scale);
    const acc_t neg = static_cast<acc_t>(scale * negative_slope);
    if (fits_int32(numel))
      leaky_relu_grad_kernel<scalar_t, int><<<blocks, kThreads, 0, stream>>>(
          g.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), result.data_ptr<scalar_t>(), static_cast<int>(numel), pos,
          neg);
    else
      leaky_relu_grad_kernel<scalar_t, int64_t><<<blocks, kThreads, 0, stream>>>(
          g.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), result.data_ptr<scalar_t>(), numel, pos, neg);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}

}  // namespace stytr
