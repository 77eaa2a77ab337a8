// upfirdn2d as a gather: every output sample walks over the few input samples its
// FIR taps touch, so neither the zero-stuffed nor the padded signal is materialised.
//
// Index algebra (one axis; the other is identical). With w = flip(kernel) the op is
//   y[o] = sum_t  u[o * down + t] * w[t],   t = 0 .. k-1,
// where u is the upsampled signal shifted by the leading pad: x[i] sits at
// position i * up + pad0 of u and everything else is zero. For an output o the taps
// that meet a real sample are therefore t = t0, t0 + up, t0 + 2 up, ... with
// t0 = (pad0 - o * down) mod up, and tap t reads input i = (o * down + t - pad0) / up.

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

struct ResampleGeometry {
  int planes;
  int in_h, in_w;
  int out_h, out_w;
  int up_x, up_y;
  int down_x, down_y;
  int pad_x0, pad_y0;
  int taps_h, taps_w;
};

__device__ __forceinline__ int positive_mod(int a, int m) {
  const int r = a % m;
  return r < 0 ? r + m : r;
}

// Template arguments fix the common StyleGAN2 geometries at compile time so the tap
// loops unroll; 0 means "read it from the geometry at run time".
template <typename scalar_t, int UP_X, int UP_Y, int DOWN_X, int DOWN_Y, int TAPS_H, int TAPS_W>
__global__ void upfirdn2d_gather(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ flipped,
                                 scalar_t* __restrict__ y, const ResampleGeometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  acc_t* w = reinterpret_cast<acc_t*>(shared_bytes);

  const int up_x = UP_X > 0 ? UP_X : g.up_x;
  const int up_y = UP_Y > 0 ? UP_Y : g.up_y;
  const int down_x = DOWN_X > 0 ? DOWN_X : g.down_x;
  const int down_y = DOWN_Y > 0 ? DOWN_Y : g.down_y;
  const int taps_h = TAPS_H > 0 ? TAPS_H : g.taps_h;
  const int taps_w = TAPS_W > 0 ? TAPS_W : g.taps_w;

  // Stage the (already flipped) kernel in shared memory once per block.
  const int lane = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int block_threads = blockDim.x * blockDim.y * blockDim.z;
  for (int i = lane; i < taps_h * taps_w; i += block_threads) w[i] = flipped[i];
  __syncthreads();

  const int ox = blockIdx.x * blockDim.x + threadIdx.x;
  const int oy = blockIdx.y * blockDim.y + threadIdx.y;
  if (ox >= g.out_w || oy >= g.out_h) return;

  // Which taps land on real input samples: identical for every plane.
  const int start_y = oy * down_y - g.pad_y0;
  const int ty0 = positive_mod(-start_y, up_y);
  const int iy0 = (start_y + ty0) / up_y;  // exact division
  const int start_x = ox * down_x - g.pad_x0;
  const int tx0 = positive_mod(-start_x, up_x);
  const int ix0 = (start_x + tx0) / up_x;

  const int rows = (taps_h + up_y - 1) / up_y;  // upper bound on live taps per axis
  const int cols = (taps_w + up_x - 1) / up_x;
  const int64_t in_plane = static_cast<int64_t>(g.in_h) * g.in_w;
  const int64_t out_plane = static_cast<int64_t>(g.out_h) * g.out_w;

  for (int n = blockIdx.z * blockDim.z + threadIdx.z; n < g.planes; n += gridDim.z * blockDim.z) {
    const scalar_t* plane = x + n * in_plane;
    acc_t sum = acc_t(0);
#pragma unroll
    for (int r = 0; r < rows; ++r) {
      const int ty = ty0 + r * up_y;
      const int iy = iy0 + r;
      if (ty >= taps_h || iy < 0 || iy >= g.in_h) continue;
      const scalar_t* line = plane + static_cast<int64_t>(iy) * g.in_w;
      const acc_t* w_row = w + ty * taps_w;
#pragma unroll
      for (int c = 0; c < cols; ++c) {
        const int tx = tx0 + c * up_x;
        const int ix = ix0 + c;
        if (tx >= taps_w || ix < 0 || ix >= g.in_w) continue;
        sum += static_cast<acc_t>(line[ix]) * w_row[tx];
      }
    }
    y[n * out_plane + static_cast<int64_t>(oy) * g.out_w + ox] = static_cast<scalar_t>(sum);
  }
}

int next_pow2_capped(int v, int cap) {
  int p = 1;
  while (p < v && p < cap) p <<= 1;
  return p;
}

template <typename scalar_t, int UP_X, int UP_Y, int DOWN_X, int DOWN_Y, int TAPS_H, int TAPS_W>
void launch(const at::Tensor& x, const at::Tensor& flipped, at::Tensor& y, const ResampleGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  // Block: up to 32 columns x rows x planes, 256 threads, shaped to the output so small
  // planes (4x4, 8x8) still fill the block with several planes.
  const int bx = next_pow2_capped(g.out_w, 32);
  const int by = next_pow2_capped(g.out_h, 256 / bx);
  const int bz = std::min(64, 256 / (bx * by));
  const dim3 block(bx, by, bz);
  const int64_t plane_blocks = (static_cast<int64_t>(g.planes) + bz - 1) / bz;
  const dim3 grid((g.out_w + bx - 1) / bx, (g.out_h + by - 1) / by,
                  static_cast<unsigned int>(std::min<int64_t>(plane_blocks, 65535)));
  TORCH_CHECK(grid.y <= 65535, "upfirdn2d: output height ", g.out_h, " is too large");
  const size_t shared = sizeof(acc_t) * g.taps_h * g.taps_w;
  auto stream = c10::cuda::getCurrentCUDAStream();
  upfirdn2d_gather<scalar_t, UP_X, UP_Y, DOWN_X, DOWN_Y, TAPS_H, TAPS_W><<<grid, block, shared, stream>>>(
      x.data_ptr<scalar_t>(), flipped.data_ptr<acc_t>(), y.data_ptr<scalar_t>(), g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void dispatch_geometry(const at::Tensor& x, const at::Tensor& flipped, at::Tensor& y, const ResampleGeometry& g) {
  const bool k4 = g.taps_h == 4 && g.taps_w == 4;
  const bool up1 = g.up_x == 1 && g.up_y == 1, up2 = g.up_x == 2 && g.up_y == 2;
  const bool down1 = g.down_x == 1 && g.down_y == 1, down2 = g.down_x == 2 && g.down_y == 2;
  if (k4 && up1 && down1) {
    launch<scalar_t, 1, 1, 1, 1, 4, 4>(x, flipped, y, g);  // Blur
  } else if (k4 && up2 && down1) {
    launch<scalar_t, 2, 2, 1, 1, 4, 4>(x, flipped, y, g);  // Upsample (and Downsample's gradient)
  } else if (k4 && up1 && down2) {
    launch<scalar_t, 1, 1, 2, 2, 4, 4>(x, flipped, y, g);  // Downsample (and Upsample's gradient)
  } else {
    launch<scalar_t, 0, 0, 0, 0, 0, 0>(x, flipped, y, g);
  }
}

int checked_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max(), "upfirdn2d: ", what,
              " = ", v, " does not fit in 32 bits");
  return static_cast<int>(v);
}

}  // namespace

at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& kernel, int64_t up_x, int64_t up_y, int64_t down_x,
                     int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d: input must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: input must be (B, C, H, W), got ", x.dim(), " dimensions");
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d: kernel must be 2-D, got ", kernel.dim(), " dimensions");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");
  TORCH_CHECK(kernel.size(0) >= 1 && kernel.size(1) >= 1, "upfirdn2d: kernel must not be empty");
  const c10::cuda::CUDAGuard guard(x.device());

  const at::Tensor input = x.contiguous();
  const at::ScalarType acc_type = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor flipped = kernel.to(input.device(), acc_type).flip({0, 1}).contiguous();

  const int64_t taps_h = kernel.size(0), taps_w = kernel.size(1);
  const int64_t span_y = input.size(2) * up_y + pad_y0 + pad_y1 - taps_h;
  const int64_t span_x = input.size(3) * up_x + pad_x0 + pad_x1 - taps_w;
  TORCH_CHECK(span_y >= 0 && span_x >= 0, "upfirdn2d: the padded signal is smaller than the kernel");
  const int64_t out_h = span_y / down_y + 1, out_w = span_x / down_x + 1;

  const size_t shared = (acc_type == at::kDouble ? sizeof(double) : sizeof(float)) * taps_h * taps_w;
  TORCH_CHECK(shared <= 48 * 1024, "upfirdn2d: a ", taps_h, "x", taps_w, " kernel does not fit in shared memory");

  at::Tensor y = at::empty({input.size(0), input.size(1), out_h, out_w}, input.options());
  if (y.numel() == 0) return y;

  ResampleGeometry g;
  g.planes = checked_int(input.size(0) * input.size(1), "batch * channels");
  g.in_h = checked_int(input.size(2), "height");
  g.in_w = checked_int(input.size(3), "width");
  g.out_h = checked_int(out_h, "output height");
  g.out_w = checked_int(out_w, "output width");
  g.up_x = checked_int(up_x, "up_x");
  g.up_y = checked_int(up_y, "up_y");
  g.down_x = checked_int(down_x, "down_x");
  g.down_y = checked_int(down_y, "down_y");
  g.pad_x0 = checked_int(pad_x0, "pad_x0");
  g.pad_y0 = checked_int(pad_y0, "pad_y0");
  g.taps_h = checked_int(taps_h, "kernel height");
  g.taps_w = checked_int(taps_w, "kernel width");
  checked_int(static_cast<int64_t>(g.out_h) * down_y + taps_h, "output extent");
  checked_int(static_cast<int64_t>(g.out_w) * down_x + taps_w, "output extent");

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "stytr_upfirdn2d",
                                  [&] { dispatch_geometry<scalar_t>(input, flipped, y, g); });
  return y;
}

}  // namespace stytr
