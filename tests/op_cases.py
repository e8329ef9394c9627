"""The kernel cases shared by the tests that run the C++ kernels outside the default build:
tests/test_kernels_scalar.py (the scalar fallbacks, in ExecuTorch) and
tests/test_kernels_arm64.py (the aarch64 build, replayed under qemu). Each op's spec makes the
inputs (`sample_inputs`), at shapes with a tail past every SIMD width next to the real ones."""

from __future__ import annotations

TOL = 1e-5
# Outputs that are pure data movement or one IEEE add in both the kernel and the reference:
# bit-exact. (op, output index): add_rms_norm's h = x + r, the convolution windows shifted on.
EXACT = {("add_rms_norm", 0), ("causal_conv1d", 1), ("causal_conv1d_silu", 1), ("rglru_step", 1)}


def cases():
    """(op, label, args, in_place) for every registered op, made by its spec's
    `sample_inputs` at shapes with a tail past every multiple of 8 (and of 4) next to the real
    model sizes: T = 1 (decode) and T > 1, and each stateful op's in-place form."""
    from edgekit.ops import REGISTRY

    out = []

    def add(op, T, in_place=False, scale_a=None, **shape):
        args = list(REGISTRY[op].sample_inputs(T, seed=1234 + len(out), **shape))
        if scale_a is not None:                  # large |pre-activations|: the saturated branches
            args[0] = args[0] * scale_a
        label = "_".join([f"T{T}", *(f"{k}{v}" for k, v in shape.items())] + (["inplace"] if in_place else []))
        out.append((op, label, args, in_place))

    # dense: (N, K) with N % 4 and K % 8 tails; (258, 203) is split over the kernel pool
    for N, K in ((23, 37), (8, 16), (258, 203)):
        for T in (1, 5):
            add("dense", T, N=N, K=K)
    # qlinear: 2, 4, 8 bits; G 16 to 128, K with an odd number of blocks (2-bit zero points end mid-byte)
    for bits, K, G in ((2, 208, 16), (4, 96, 32), (8, 384, 128), (2, 512, 128)):
        for T in (1, 3):
            add("qlinear", T, bits=bits, K=K, G=G, N=37)
    # mamba_step: N = 16 (Mamba's), 19 (8 + 8 + 3), 5; odd D
    for T, D, N in ((1, 13, 16), (7, 13, 19), (5, 3, 5)):
        add("mamba_step", T, D=D, N=N)
    # ssd_step: (H, G, P, N), P and N with tails
    for T, H, G, P, N in ((1, 4, 2, 9, 19), (7, 4, 2, 9, 19), (5, 3, 1, 8, 16)):
        add("ssd_step", T, H=H, G=G, P=P, N=N)
    # rwkv7_wkv: N = 64 (its specialized kernel) and N = 37 (generic, N % 4 = 1), N = 6
    for T, H, N in ((1, 2, 64), (6, 2, 64), (1, 3, 37), (6, 3, 37), (4, 1, 6)):
        add("rwkv7_wkv", T, H=H, N=N)
    # causal_conv1d(_silu): K = 4 (Mamba's), 3, 2 (specialized), 5 (generic); C = 37
    for op in ("causal_conv1d", "causal_conv1d_silu"):
        for T, C, K in ((1, 37, 4), (7, 37, 4), (7, 37, 3), (5, 37, 2), (7, 11, 5)):
            add(op, T, C=C, K=K)
    # rglru_step: D = H * W with W = 9 and 10 (not multiples of 8), conv width K = 4 (Griffin's), 3
    for T, D, H, K in ((1, 36, 4, 4), (7, 36, 4, 4), (5, 30, 3, 3), (6, 32, 4, 4)):
        add("rglru_step", T, D=D, H=H, K=K)
    # cfc_step: the three modes; U = 19 / 37 and Z = 131 / 200 have 8- and 64-column tails, and
    # (I, U, Z) = (7, 37, 200) is large enough for its affine maps to go over the pool. Weights
    # scaled 1/sqrt(width) as an init does: at 0.25 and Z = 131 the float32 reference itself is
    # 3e-5 off float64 (the cell amplifies rounding).
    for T, mode, n_bb, I, U, Z in ((1, "default", 1, 5, 8, 12), (6, "default", 1, 5, 19, 131),
                                   (5, "no_gate", 2, 7, 19, 131), (1, "default", 2, 7, 37, 200),
                                   (6, "pure", 0, 5, 13, 12), (4, "pure", 1, 3, 21, 67)):
        add("cfc_step", T, mode=mode, n_bb=n_bb, I=I, U=U, Z=Z, scale=min(0.25, 1 / max(Z, I + U) ** 0.5))
    # ltc_step: U = 7 and 19, in ncps' init ranges after its folding
    for T, I, U in ((1, 4, 7), (6, 4, 7), (5, 3, 19)):
        add("ltc_step", T, I=I, U=U)
    # the glue ops: widths 37 / 35 / 19 (tails) and 768 (GPT-class)
    for T, D in ((1, 37), (5, 37), (1, 768), (3, 1)):
        add("add_rms_norm", T, D=D)
    for op in ("silu_mul", "gelu_tanh_mul"):
        for T, D in ((1, 35), (5, 35), (2, 768), (3, 7)):
            add(op, T, D=D)
        add(op, 2, D=37, scale_a=30.0)           # the saturated sigmoid / e^-s branches
    for T, G, S in ((1, 2, 37), (5, 2, 37), (4, 1, 19), (1, 3, 64)):
        add("gated_rms_norm", T, G=G, S=S)
    for T, C in ((1, 37), (5, 37), (2, 768), (3, 5)):
        add("softplus_bias", T, C=C)
    add("softplus_bias", 2, C=37, scale_a=8.0)   # |v| ~ 60: e^-|v| underflows, and v below -87
    # every stateful op's in-place form, state in mutable buffers
    for name, info in sorted(REGISTRY.items()):
        if info.state_args:
            add(name, 6, in_place=True)
    return out


def metric(a, ref) -> float:
    """max|a - ref| / std(ref) (std floored at 1e-6); inf when the shapes differ or a is
    non-finite where ref is finite."""
    import numpy as np
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        return float("inf")
    if not np.array_equal(np.isfinite(a), np.isfinite(ref)):
        return float("inf")
    fin = np.isfinite(ref)
    if not fin.any():
        return 0.0
    return float(np.abs(a[fin] - ref[fin]).max() / max(float(ref[fin].std()), 1e-6))


def qlinear_exact_case(bits: int, G: int, *, K: int = 256, N: int = 403, lead=(2, 5), seed: int = 0,
                q_max: int = 31, exps=(0, 1, 2), codes=None, zps=None):
    """Inputs whose every intermediate is exact in float32. x = q * 2^-e per block, q integers
    in [-q_max, q_max] with one element per block at +-127 (so the kernel's and torch's
    quantization both give back q exactly and sx = 2^-e); scales +-2^-k; b = 0. Returns the
    args and the exact float64 answer."""
    import numpy as np
    import torch

    from edgekit.quant.schemes import pack_bits
    g = torch.Generator().manual_seed(seed)
    KB = K // G
    M = int(np.prod(lead))
    q = torch.randint(-q_max, q_max + 1, (M, KB, G), generator=g)
    pos = torch.randint(0, G, (M, KB, 1), generator=g)
    q.scatter_(-1, pos, torch.where(torch.rand(M, KB, 1, generator=g) < 0.5, -127, 127))
    e = torch.tensor(exps)[torch.randint(0, len(exps), (M, KB, 1), generator=g)]
    x = (q.double() * torch.pow(2.0, -e.double())).float().reshape(*lead, K)
    hi = 3 if bits == 2 else (1 << bits) - 1
    c = codes if codes is not None else torch.randint(0, hi + 1, (N, KB, G), generator=g)
    z = zps if zps is not None else torch.randint(0, hi + 1, (N, KB), generator=g)
    k = torch.tensor(exps)[torch.randint(0, len(exps), (N, KB), generator=g)]
    scales = (torch.pow(2.0, -k.double()) * torch.where(torch.rand(N, KB, generator=g) < 0.3, -1.0, 1.0)).float()
    args = (x, pack_bits(c, bits).reshape(N, KB, G * bits // 8), scales, pack_bits(z, bits), torch.zeros(N))
    # exact answer, and the bound that makes every float32 partial sum exact (any order)
    xs = q.double() * torch.pow(2.0, -e.double())                                  # (M, KB, G)
    wd = (c.double() - z.double()[..., None]) * scales.double()[..., None]         # (N, KB, G)
    exact = torch.einsum("mbg,nbg->mn", xs, wd).reshape(*lead, N)
    grid = 2.0 ** -(2 * max(exps))
    bound = torch.einsum("mbg,nbg->mn", xs.abs(), wd.abs()).max().item()
    assert bound / grid < 2 ** 24, "the case is not exact in float32: lower q_max or K"
    return args, exact.numpy()


def qlinear_8bit_extremes(G: int):
    """qlinear args at the uint8 x int8 extremes: codes 0 and 255, zero points 0 and 255,
    activations at +-127 (the first rows all of them), where a maddubs on the raw codes would
    saturate at 32767 per pair; every intermediate exact in float32. N = 256 output rows:
    enough for the pool to split them."""
    import torch
    K, N = 256, 256
    KB = K // G
    g = torch.Generator().manual_seed(G)
    codes = torch.where(torch.rand(N, KB, G, generator=g) < 0.5, 0, 255)
    codes[: N // 4] = 255                                  # whole rows at the top code
    zps = torch.where(torch.rand(N, KB, generator=g) < 0.5, 0, 255)
    args, _ = qlinear_exact_case(8, G, K=K, N=N, lead=(1, 9), q_max=127, exps=(0,), codes=codes, zps=zps, seed=G)
    # full-scale activations in the first rows: every element +-127
    x = args[0].clone()
    x[0, :3] = torch.where(torch.rand(3, K, generator=g) < 0.5, -127.0, 127.0)
    return (x, *args[1:])
