"""Run a command as an AVX2-only x86-64 CPU would (an AMD EPYC of Zen 2/3, say), on this machine.

    python benchmarks/as_avx2.py -m pytest -q        # `make test-avx2`
    python benchmarks/as_avx2.py -m murakit synth DATA

Every library with runtime CPU dispatch is told to stop at AVX2: numpy (its X86_V4 / AVX-512
targets off), OpenCV (AVX-512 and AVX-VNNI kernels off), OpenBLAS (Haswell kernels), glibc's
libm (AVX-512 variants off) and oneDNN in TensorFlow (ONEDNN_MAX_CPU_ISA=AVX2). onnxruntime's
MLAS has no such switch, so its kernels stay those of this CPU: this is the closest a machine
with AVX-512 gets to an AVX2 one, not the same thing (docs/compatibility.md, "Across CPUs").
Prints the settings on stderr, then replaces itself with ``python ARGS`` (exit code passes through).
"""

import os
import sys


def avx2_env(env: dict) -> dict:
    """``env`` with every dispatched instruction set above AVX2 switched off."""
    import cv2
    from numpy._core._multiarray_umath import __cpu_dispatch__

    env = dict(env)
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(f for f in __cpu_dispatch__ if f.startswith(("X86_V4", "AVX512")))
    above = ("AVX512", "AVX_VNNI")
    env["OPENCV_CPU_DISABLE"] = ",".join(t[1:].rstrip("?") for t in cv2.getCPUFeaturesLine().split()
                                         if t.startswith("*") and t[1:].startswith(above))
    env["OPENBLAS_CORETYPE"] = "Haswell"
    env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    tunable = "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD"
    env["GLIBC_TUNABLES"] = f"{env['GLIBC_TUNABLES']}:{tunable}" if env.get("GLIBC_TUNABLES") else tunable
    return env


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python benchmarks/as_avx2.py PYTHON-ARGS...", file=sys.stderr)
        return 2
    env = avx2_env(os.environ)
    for k in ("NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE", "OPENBLAS_CORETYPE", "ONEDNN_MAX_CPU_ISA",
              "GLIBC_TUNABLES"):
        print(f"as_avx2: {k}={env[k]}", file=sys.stderr)
    os.execve(sys.executable, [sys.executable, *sys.argv[1:]], env)


if __name__ == "__main__":
    sys.exit(main())
