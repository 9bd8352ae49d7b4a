"""What XLA's compiler is asked for when it compiles this project's networks: which library
computes the CPU's convolutions (`model.cpu_conv_impl`).

JAX 0.10's XLA:CPU hands every convolution to YNNPACK (a `__ynn_fusion` a convolution; its
default `xla_cpu_experimental_ynn_fusion_type` list also holds matrix products and reductions).
On the AVX2 host of docs/performance.md YNNPACK's convolutions were slower than XLA:CPU's own
(Eigen's spatial convolution), most of all in the kernel gradients, convolutions with a window
the size of the image (forward + backward, batch 128: conv1 1,396 ms against 669, conv2 with
XLA's kernel gradient 5,849 against 829), and the whole training step ran 1.06-1.29x faster
with Eigen's, 1.10-1.20x PyTorch's (process medians). `eigen`, what `auto` takes on the CPU,
compiles the network's programs with that list less its convolutions; `ynnpack` leaves XLA's
default. Both compute the same convolution to float32 rounding (tests/test_model.py). GPUs and
TPUs are not touched: XLA has one convolution path there (cuDNN's on GPUs), and no option is
passed.

The option is given to each `jax.jit` that runs the network (`compiler_options`: the training
and evaluation steps, the eager forward pass), not through `XLA_FLAGS`, which XLA reads once,
when the backend starts: so it holds wherever the network is compiled, whatever ran before. A
function the user jits around the network is compiled with the user's own options.
"""

from __future__ import annotations

CPU_CONV_IMPLS = ("eigen", "ynnpack")
# what model.cpu_conv_impl resolves to where there is no CPU choice to make (GPUs, TPUs)
NOT_ON_CPU = "none"
YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# JAX 0.10.2's default list less its convolutions: matrix products and reductions stay YNNPACK's
YNN_FUSIONS_WITHOUT_CONVOLUTIONS = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                                    "LIBRARY_FUSION_TYPE_REDUCE")


def compiler_options(cpu_conv_impl: str, platform: str) -> dict[str, str] | None:
    """The `compiler_options` of a `jax.jit` that runs the network on `platform` with the CPU
    convolutions of `cpu_conv_impl` (a resolved choice, not `auto`); None: XLA's defaults."""
    if platform != "cpu" or cpu_conv_impl in ("ynnpack", NOT_ON_CPU):
        return None
    if cpu_conv_impl == "eigen":
        return {YNN_FUSION_OPTION: YNN_FUSIONS_WITHOUT_CONVOLUTIONS}
    raise ValueError(f"cpu_conv_impl must be one of {CPU_CONV_IMPLS}, got {cpu_conv_impl!r}")
