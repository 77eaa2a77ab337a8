// Python bindings of the stytr CUDA plugin. The autograd wiring lives in
// stytr/ops/cuda_impl.py; these functions are plain forward computations.

#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stytr: CUDA kernels for upfirdn2d and the fused bias + leaky ReLU of StyleGAN2";
  m.def("upfirdn2d", &stytr::upfirdn2d, "upsample, pad, FIR-filter and downsample every plane of (B, C, H, W)",
        py::arg("x"), py::arg("kernel"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"),
        py::arg("pad_x0"), py::arg("pad_x1"), py::arg("pad_y0"), py::arg("pad_y1"));
  m.def("bias_leaky_relu", &stytr::bias_leaky_relu, "scale * leaky_relu(x + bias[channel])", py::arg("x"),
        py::arg("bias"), py::arg("negative_slope"), py::arg("scale"));
  m.def("leaky_relu_grad", &stytr::leaky_relu_grad, "gradient of bias_leaky_relu given its output",
        py::arg("grad"), py::arg("out"), py::arg("negative_slope"), py::arg("scale"));
}
