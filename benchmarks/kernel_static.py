"""Static efficiency of the project's Triton kernels, compiled for sm_90 (H100/H200) on a machine without a GPU.

    python benchmarks/kernel_static.py [--only NAME_SUBSTRING] [--out report.json] [--sass DIR]

Each kernel is compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``, integer
arguments specialised as the JIT would (``native_specialize_impl``, honouring ``do_not_specialize``); the cubin is
read with ``cuobjdump -res-usage`` and disassembled with ``nvdisasm`` (both ship in the Triton wheel's
``backends/nvidia/bin``). Printed as JSON, one record per kernel:

- ``registers``, ``spill_bytes`` (LOCAL + STACK; 0 means no spills), ``shared_bytes`` (Triton's dynamic plus any
  static shared memory);
- ``sass_total``; ``loops``: every innermost loop of the SASS (a backward branch whose body holds no other), with
  its length and SHFL/BAR/MUFU/HMMA counts; whole-kernel ``shfl``, ``bar``, ``mufu``, ``mma`` (HMMA and HGMMA);
- ``hot_loop_instr`` (the loops named hot) and ``instr_per_element = hot_loop_instr * threads / elements``: the
  instructions the GPU issues per element handled by one iteration of the hot loops.

Counting is static: a loop body is counted once per iteration, exact for the steady state of a loop that runs the
same path each time, as the scan kernels do (their branches are on compile-time flags). Adding a kernel is one
:class:`KernelSpec` in :func:`specs`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

SM90 = ("cuda", 90, 32)
# Run as a script, Python puts benchmarks/ first on the path; the kernels analysed must be this checkout's, not
# an installed copy's.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class KernelSpec:
    """One kernel compiled at one configuration.

    ``kernel`` is ``"module:attribute"`` inside lrnn_lm.kernels; ``args`` names every kernel argument: a torch
    dtype for a pointer, None for an absent pointer, an int for an int scalar (16-divisible ints and 1 are
    specialised as at a real launch), any value for a constexpr. ``elements``: what the hot loops handle per
    iteration, ``element`` says what one is; ``hot_loops``: None for every innermost loop, or their 0-based
    indices in address order."""

    name: str
    kernel: str
    args: dict[str, object]
    num_warps: int = 4
    num_stages: int = 3
    elements: int = 1
    element: str = "element"
    hot_loops: list[int] | None = None
    note: str = ""
    options: dict[str, object] = field(default_factory=dict)


def tool_dir() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def tools_available() -> bool:
    return all((tool_dir() / t).exists() for t in ("cuobjdump", "nvdisasm"))


def _load_kernel(target: str):
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(f"lrnn_lm.kernels.{module}"), name)
    if not hasattr(fn, "arg_names") or type(fn).__name__ != "JITFunction":
        raise RuntimeError(f"{target} is not a compilable JITFunction (is TRITON_INTERPRET=1 set?)")
    return fn


def _signature(fn, args: dict[str, object]):
    """The (signature, constexprs, attrs) a launch with ``args`` would compile with."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl, type_canonicalisation_dict

    missing = [n for n in fn.arg_names if n not in args]
    extra = [n for n in args if n not in fn.arg_names]
    if missing or extra:
        raise ValueError(f"{fn.__name__}: arguments missing {missing}, unknown {extra}")
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        value = args[p.name]
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constexprs[p.name] = value
        elif isinstance(value, torch.dtype):
            signature[p.name] = "*" + type_canonicalisation_dict[str(value).removeprefix("torch.")]
            attrs[(i,)] = [["tt.divisibility", 16]]  # a CUDA allocation is 256-byte aligned
        elif value is None:
            signature[p.name] = "constexpr"
            constexprs[p.name] = None
        elif isinstance(value, bool | int | float):
            kind, spec = native_specialize_impl(BaseBackend, value, False, not p.do_not_specialize, True)
            signature[p.name] = kind
            if kind == "constexpr":
                constexprs[p.name] = value
            elif spec:
                attrs[(i,)] = BaseBackend.parse_attr(spec)
        else:
            raise TypeError(f"{fn.__name__}.{p.name}: unsupported spec value {value!r}")
    return signature, constexprs, attrs


def compile_spec(spec: KernelSpec):
    """Compile ``spec`` for sm_90; returns Triton's compiled kernel (``.asm["cubin"]``, ``.metadata``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _load_kernel(spec.kernel)
    signature, constexprs, attrs = _signature(fn, spec.args)
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": spec.num_warps, "num_stages": spec.num_stages, **spec.options}
    return triton.compile(src, target=GPUTarget(*SM90), options=options)


_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
# One SASS instruction line of `nvdisasm -c`: "        /*0420*/  @!P0 BRA `(.L_x_3) ;"
_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", re.IGNORECASE)
_LABEL = re.compile(r"^\s*\.?(L_x_\d+|\.L_x_\d+):")
_BRANCH_TARGET = re.compile(r"BRA\s+(?:\w+\s+)*`?\(?\.?(\.?L_x_\d+)\)?")


def _tool(name: str, flag: str, cubin: bytes) -> str:
    """The output of the CUDA tool ``name`` run with ``flag`` on ``cubin``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        return subprocess.run(
            [str(tool_dir() / name), flag, str(path)], capture_output=True, text=True, check=True
        ).stdout


def resource_usage(cubin: bytes) -> dict[str, int]:
    out = _tool("cuobjdump", "-res-usage", cubin)
    m = _RES.search(out)
    if m is None:
        raise RuntimeError(f"cuobjdump -res-usage gave no resource line:\n{out}")
    reg, stack, shared, local = (int(g) for g in m.groups())
    return {"registers": reg, "stack_bytes": stack, "static_shared_bytes": shared, "local_bytes": local}


def parse_sass(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Instructions (opcode text with predicate) in order, and the backward branches as (target, branch) indices."""
    instrs: list[str] = []
    labels: dict[str, int] = {}
    branches: list[tuple[int, str]] = []
    for line in text.splitlines():
        lm = _LABEL.match(line)
        if lm:
            labels[lm.group(1).lstrip(".")] = len(instrs)
            continue
        im = _INSTR.match(line)
        if not im:
            continue
        body = im.group(2).strip()
        bm = _BRANCH_TARGET.search(body)
        if bm and re.search(r"\bBRA\b", body):
            branches.append((len(instrs), bm.group(1).lstrip(".")))
        instrs.append(body)
    back = [(labels[t], i) for i, t in branches if t in labels and labels[t] <= i]
    return instrs, back


def _opcode(instr: str) -> str:
    return next((part for part in instr.split() if not part.startswith("@")), "")  # past a predicate "@!P0"


def _counts(instrs: list[str]) -> dict[str, int]:
    ops = [_opcode(i) for i in instrs if _opcode(i) != "NOP"]
    return {
        "instr": len(ops),
        "shfl": sum(o.startswith("SHFL") for o in ops),
        "bar": sum(o.startswith("BAR") for o in ops),
        "mufu": sum(o.startswith("MUFU") for o in ops),
        "mma": sum(o.startswith(("HMMA", "HGMMA")) for o in ops),
        "global_ld": sum(o.startswith(("LDG", "LDGSTS")) for o in ops),
        "global_st": sum(o.startswith(("STG", "RED", "ATOM")) for o in ops),
        "shared_ld_st": sum(o.startswith(("LDS", "STS", "LDSM")) for o in ops),
    }


def innermost_loops(back: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Backward-branch regions ``[start, end]`` that contain no other backward-branch region.

    A branch to itself (``BRA`` after ``EXIT``, which ends every kernel and never runs) is not a loop.
    """
    regions = sorted({(s, e) for s, e in back if e > s})
    return [(s, e) for s, e in regions if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in regions)]


def _source(kernel: str) -> str:
    """The kernel's file, relative to this checkout when it lies inside it (reports name no machine's paths)."""
    path = Path(importlib.import_module(f"lrnn_lm.kernels.{kernel.partition(':')[0]}").__file__)
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def analyse(spec: KernelSpec, sass_dir: Path | None = None) -> dict[str, object]:
    compiled = compile_spec(spec)
    cubin = compiled.asm["cubin"]
    res = resource_usage(cubin)
    sass = _tool("nvdisasm", "-c", cubin)
    if sass_dir is not None:
        sass_dir.mkdir(parents=True, exist_ok=True)
        (sass_dir / f"{spec.name}.sass").write_text(sass)
    instrs, back = parse_sass(sass)
    loops = innermost_loops(back)
    hot = list(range(len(loops))) if spec.hot_loops is None else spec.hot_loops
    if any(i >= len(loops) for i in hot):
        raise RuntimeError(f"{spec.name}: hot_loops {hot} but the SASS has {len(loops)} innermost loops")
    loop_counts = [_counts(instrs[s : e + 1]) for s, e in loops]
    hot_counts = {k: sum(loop_counts[i][k] for i in hot) for k in _counts([])}
    threads = 32 * spec.num_warps
    total = _counts(instrs)
    return {
        "name": spec.name,
        "kernel": spec.kernel,
        "source": _source(spec.kernel),
        "num_warps": spec.num_warps,
        "registers": res["registers"],
        "spill_bytes": res["local_bytes"] + res["stack_bytes"],
        "shared_bytes": int(compiled.metadata.shared) + res["static_shared_bytes"],
        "sass_total": total["instr"],
        **{k: total[k] for k in ("shfl", "bar", "mufu", "mma")},
        "loops": [{"start": s, "end": e, **c} for (s, e), c in zip(loops, loop_counts)],
        "hot_loops": hot,
        "hot_loop_instr": hot_counts["instr"],
        "hot_loop_counts": hot_counts,
        "elements_per_iteration": spec.elements,
        "element": spec.element,
        "instr_per_element": round(hot_counts["instr"] * threads / spec.elements, 3),
        "note": spec.note,
    }


def specs() -> list[KernelSpec]:
    """Every Triton kernel of the project, at the configuration a model at d_inner 2048, N 16, bf16 launches."""
    return [*selective_scan_specs(), *ssd_specs()]


def selective_scan_specs(d_inner: int = 2048, n_state: int = 16) -> list[KernelSpec]:
    """Forward and backward with ``dt`` as given (``.fwd``, ``.bwd``) and with bias and softplus in the kernel."""
    return [s for sp in (False, True) for s in _selective_scan_pair(d_inner, n_state, sp)]


def _selective_scan_pair(d_inner: int, n_state: int, softplus: bool) -> list[KernelSpec]:
    from lrnn_lm.kernels.selective_scan import triton as scan

    cfg = scan._config(d_inner, n_state, torch.device("cuda"))
    bf16, f32 = torch.bfloat16, torch.float32
    # B and C as the wrapper passes them (fp32 copies); model activations in bf16; A, D, dt_bias fp32 parameters.
    seq = {"X": bf16, "DT": bf16, "A": f32, "Bm": f32, "Cm": f32, "Dv": f32, "Z": bf16}
    common = {"T": 2048, "DIM": d_inner, "NST": n_state, "NEGATIVE_EIGVALS": True, "HAS_D": True, "HAS_Z": True}
    common |= {"IS_VARLEN": False, "BLOCK_N": cfg["BLOCK_N"], "CU": None, "CHUNK_OFF": None}
    common |= {"EVEN_N": cfg["BLOCK_N"] == n_state}
    common |= {"DTB": f32 if softplus else None, "HAS_DT_BIAS": softplus, "DT_SOFTPLUS": softplus}
    suffix = ".dt_softplus" if softplus else ""
    fwd = KernelSpec(
        name="selective_scan.fwd" + suffix,
        kernel="selective_scan.triton:_selective_scan_fwd_kernel",
        args=seq
        | common
        | {"Y": bf16, "H0": None, "HT": None, "CKPT": f32, "HAS_H0": False, "STORE_HT": False}
        | {"STORE_CKPT": True, "BLOCK_D": cfg["BLOCK_D"], "BLOCK_T": cfg["BLOCK_T"]}
        | {"TILES_PER_CHUNK": scan.CHUNK // cfg["BLOCK_T"]},
        num_warps=cfg["num_warps"],
        elements=cfg["BLOCK_T"] * cfg["BLOCK_D"] * cfg["BLOCK_N"],
        element="(t, d, n)",
    )
    bwd = KernelSpec(
        name="selective_scan.bwd" + suffix,
        kernel="selective_scan.triton:_selective_scan_bwd_kernel",
        args=seq
        | common
        | {"DY": bf16, "DHT": None, "CKPT": f32, "SCRATCH": f32, "DX": bf16, "DDT": bf16, "DZ": bf16}
        | {"DB": f32, "DC": f32, "DA_PART": f32, "DD_PART": f32, "DDTB_PART": f32 if softplus else None, "DH0": None}
        | {"HAS_DHT": False, "STORE_DH0": False, "BLOCK_D": cfg["BLOCK_D_BWD"], "BLOCK_T": cfg["BLOCK_T_BWD"]}
        | {"TILES_PER_CHUNK": scan.CHUNK // cfg["BLOCK_T_BWD"], "RED_LANES": cfg["RED_LANES"]},
        num_warps=cfg["num_warps_bwd"],
        # Both loops (replay a chunk's tile-start states; the reverse pass) run about once per tile.
        elements=cfg["BLOCK_T_BWD"] * cfg["BLOCK_D_BWD"] * cfg["BLOCK_N"],
        element="(t, d, n)",
    )
    return [fwd, bwd]


def ssd_specs(heads: int = 32, head_dim: int = 64, n_state: int = 128) -> list[KernelSpec]:
    """The SSD (Mamba-2) kernels at mamba2_370m's shape (d_inner 2048 = 32 heads of 64, N 128, G 1), bf16, with
    the tiling the backend launches (``ssd.triton.TILING``). Elements are what one program handles: a chunk's
    ``(t, s, p)`` triples for the chunk kernels (their products are ``CHUNK x CHUNK x P`` and ``CHUNK x N x P``),
    the state's ``(p, n)`` entries per chunk for state passing."""
    from lrnn_lm.kernels.ssd import triton as ssd

    tiling = ssd.TILING
    bf16, f32, i64, i32 = torch.bfloat16, torch.float32, torch.int64, torch.int32
    chunk, block_p = tiling.chunk, min(tiling.block_p, head_dim)
    block_n = min(tiling.block_n, max(16, 1 << (n_state - 1).bit_length()))
    sizes = {"CHUNK": chunk, "BLOCK_P": block_p, "BLOCK_N": block_n, "FP32_PRECISION": "tf32", "WIDEN": False}
    dims = {"CHUNK_START": i64, "CHUNK_LEN": i32, "H": heads, "G_RATIO": heads, "P": head_dim, "N": n_state}
    gates = {"LA": f32, "W": f32, "SGN": f32}
    chunk_elems = chunk * chunk * head_dim
    block_s = min(tiling.block_state, head_dim * n_state)
    NESTED = (
        "instr_per_element counts the innermost loops only (the slices of N inside the loop over P), against a "
        "whole chunk's (t, s, p): a lower bound, not the kernel's cost; registers, spills, shared memory and mma "
        "are the figures to read"
    )

    def ptrs(bf16_names: str = "", f32_names: str = "", **other) -> dict:
        """Pointer arguments by dtype (space-separated names), then the other arguments as given."""
        return {n: bf16 for n in bf16_names.split()} | {n: f32 for n in f32_names.split()} | other

    def spec(name: str, kernel: str, args: dict, warps: int, elements: int, element: str, note: str = ""):
        kernel = f"ssd.triton_kernels:_{kernel}_kernel"
        return KernelSpec(f"ssd.{name}", kernel, args, warps, tiling.num_stages, elements, element, note=note)

    warps_f, warps_b, state_size = tiling.num_warps_fwd, tiling.num_warps_bwd, head_dim * n_state
    chunked = gates | dims | sizes
    with_d = {"D_STRIDE_H": 1, "D_STRIDE_P": 0, "HAS_D": True}
    passing = ptrs("", "DECAY", CHUNK_OFF=i32, H=heads, PN=state_size, BLOCK_S=block_s)
    # The chunk-state product (forward: each chunk's own state; backward: what each chunk reads): elements are one
    # slice of N per loop iteration.
    outer = dims | sizes | ptrs("V K", "LA SCALE OUT DECAY")
    outer_elems = chunk * block_p * block_n
    pass_fwd = passing | ptrs("STATES", "OWN H0 FINAL", HAS_H0=True)
    pass_bwd = passing | ptrs("DSTATES STATES", "READS DFINAL DH0 THROUGH", N_CHUNKS=4096, HAS_DFINAL=True)
    scan_fwd = chunked | with_d | ptrs("X Bm Cm STATES Y", "D")
    bwd_in = chunked | with_d | ptrs("X Bm Cm DY DSTATES DX", "D DB DW DD GATE_OUT", GATE_PRECISION="tf32")
    bwd_out = chunked | ptrs("X Bm Cm DY STATES", "THROUGH DC GATE_IN", GATE_PRECISION="tf32")
    return [
        spec("chunk_state", "chunk_outer", outer | {"FORWARD": True}, warps_f, outer_elems, "(t, p, n)"),
        spec("state_pass_fwd", "state_pass_fwd", pass_fwd, 4, block_s, "(chunk, p, n)"),
        spec("chunk_scan_fwd", "chunk_scan_fwd", scan_fwd, warps_f, chunk * chunk * block_p, "(t, s, p)", NESTED),
        spec("chunk_reads_bwd", "chunk_outer", outer | {"FORWARD": False}, warps_f, outer_elems, "(t, p, n)"),
        spec("state_pass_bwd", "state_pass_bwd", pass_bwd, 4, block_s, "(chunk, p, n)"),
        spec("chunk_bwd_inputs", "chunk_bwd_inputs", bwd_in, warps_b, chunk_elems, "(t, s, p)", NESTED),
        spec("chunk_bwd_outputs", "chunk_bwd_outputs", bwd_out, warps_b, chunk_elems, "(t, s, p)", NESTED),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="analyse only the kernels whose name contains this")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--sass", type=Path, help="write each kernel's SASS into this folder")
    args = p.parse_args(argv)
    # Triton 3.9 warns that its default will change; keep fusion on, as every Triton release a GPU run uses does.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("kernel_static compiles for a GPU target: unset TRITON_INTERPRET")
    if not tools_available():
        sys.exit(f"cuobjdump/nvdisasm not found in {tool_dir()}")
    import triton

    report = {
        "target": "sm_90",
        "triton": triton.__version__,
        "kernels": [analyse(s, args.sass) for s in specs() if args.only in s.name],
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
