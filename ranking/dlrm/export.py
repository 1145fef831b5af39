"""The DLRM's inference forms (seed 000's improvements): INT8 dynamic quantization, formula (4)
Q(x) = round(x / Δ) Δ (`DLRMRanker.quantized`); TorchScript's static graph G(θ) with BatchNorm
folded into the preceding Linear ("слияние слоев", `DLRMRanker.scripted`); and the model
compiled ahead of time to native code for serving (torch.export + AOTInductor,
`DLRMRanker.compiled`).

TorchScript still runs the graph op by op: about 30 ops, each with a fixed cost that
outweighs its arithmetic at serving batch sizes (100 rows), more so when the caches have
gone cold between requests. AOTInductor fuses the element-wise work (log1p, NaN flags,
standardising, ReLUs) into C++ loops around the matrix products and runs the whole graph
from one call. Measured on MovieLens, 100 rows, one thread: 0.17 vs 0.40 ms hot; in the
serving pipeline with 10 ms between requests, 1.09-1.14 vs 1.43-1.50 ms for the DLRM
stage and 0.5-0.8 ms less CPU per request.

Compiling needs a C++ compiler and takes 15-40 s, so the package is cached between
processes (ranking.native_cache) under a key of the weights, this code, the torch version
and the host CPU. It runs in a child process at low CPU priority: a serving worker that
loads a new bundle keeps its GIL and its share of the CPU for the calls it is answering,
and a compiler crash cannot take it down.
"""

from __future__ import annotations

import copy
import inspect
import multiprocessing
import os
import sys
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval
from torch.utils import _pytree as pytree

from ranking.dlrm.model import DLRM, StackedSparseArch
from ranking.native_cache import cache_key, cached_build, host_cpu

# How far exported models may drift from float32 eager, in probabilities (tests hold them).
# Dynamic int8 quantizes each Linear's input per batch with one scale; the top MLP's input
# mixes bottom outputs (~0.1) with dot products (~10), so a few rows move by a few hundredths
# while the mean drift and the ranking barely change (measured: max 0.06, mean 0.005).
INT8_MAX_DRIFT = 0.1
INT8_MEAN_DRIFT = 0.01
SCRIPT_MAX_DRIFT = 1e-5  # folding BatchNorm into the Linear reorders float32 sums

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MAX_DRIFT = 1e-4  # logits, compiled vs eager: fused loops may reorder float32 sums
BUILD_NICENESS = 10  # below the serving processes' priority
# compiles running in children, with the thread that asked; threads told to stop
_BUILDS: dict[ProcessPoolExecutor, threading.Thread] = {}
_STOPPED: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_BUILDS_LOCK = threading.Lock()


# --------------------------------------------------------------------- export helpers


def _folded(sequential: nn.Sequential) -> nn.Sequential:
    """Inference copy: BatchNorm folded into the Linear before it (W' = W γ/√(σ²+ε),
    b' = (b - μ) γ/√(σ²+ε) + β, the running statistics of formula (2)), Dropout dropped."""
    layers: list[nn.Module] = []
    for layer in sequential:
        if isinstance(layer, nn.BatchNorm1d):
            layers[-1] = fuse_linear_bn_eval(layers[-1], layer)
        elif not isinstance(layer, nn.Dropout):
            layers.append(layer)
    return nn.Sequential(*layers)


def inference_copy(model: DLRM) -> DLRM:
    """A CPU eval-mode copy with BatchNorm folded ("слияние слоев") and the embedding
    tables stacked (StackedSparseArch)."""
    copied = copy.deepcopy(model).cpu().eval()
    copied.dense_arch.mlp = _folded(copied.dense_arch.mlp)
    copied.over_arch.mlp = _folded(copied.over_arch.mlp)
    copied.sparse_arch = StackedSparseArch(copied.sparse_arch)
    return copied


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    # torch 2.13 marks torch.ao.quantization and torch.jit as deprecated in favour of torchao
    # and torch.export; both still work and are what the seed names, so say it once here.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning
        )
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*quantize.*deprecated", UserWarning)
        warnings.filterwarnings("ignore", r".*treespec.*deprecated", FutureWarning)  # export
        yield


# ------------------------------------------------------------- compiled ahead of time


def compile_dlrm(
    model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], cache_dir: Path | None
) -> Forward:
    """`model`'s forward (dense (n, F) float32, sparse (n, S) int64) -> logits (n,) as
    native code, for any n >= 1. Checked against `model` on `example` (a few rows, some
    NaN): a compiled model that scores differently is an error, never served."""
    model = model.eval()
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="recsys-dlrm-") as scratch:
            package = Path(scratch) / "dlrm.pt2"
            _build_in_child(model, example, package)
            forward = _direct_call(torch._inductor.aoti_load_package(str(package)))
    else:
        key = cache_key(
            _weights_bytes(model),
            inspect.getsource(sys.modules[type(model).__module__]),
            torch.__version__,
            host_cpu(),
        )
        package = cached_build(
            Path(cache_dir) / f"dlrm-{key}.pt2",
            lambda partial: _build_in_child(model, example, partial),
            "compiled DLRM",
        )
        forward = _direct_call(torch._inductor.aoti_load_package(str(package)))
    with torch.inference_mode():
        drift = (forward(*example) - model(*example)).abs().max().item()
    if not drift <= MAX_DRIFT:  # also catches NaN
        raise ValueError(f"compiled DLRM scores differ from the model's by {drift}")
    return forward


def _direct_call(compiled: Callable[..., torch.Tensor]) -> Forward:
    """The package's run function, called with the two tensors as they are. The package's
    own __call__ re-reads both call specs from JSON and flattens its arguments on every call
    (30 µs, a tenth of the model's own time at 100 rows); the specs of a (dense, sparse) ->
    logits model are fixed, so they are checked once here."""
    loader = getattr(compiled, "loader", None)
    if loader is None:  # not an AOTInductor package: call it as it is
        return compiled
    in_spec, out_spec = (pytree.treespec_loads(spec) for spec in loader.get_call_spec())
    two_tensors = pytree.tree_structure(((torch.empty(0), torch.empty(0)), {}))
    if in_spec != two_tensors or not out_spec.is_leaf():
        return compiled

    def forward(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return loader.boxed_run([dense, sparse])[0]

    return forward


def _build_in_child(
    model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], package: Path
) -> None:
    _run_in_child(_build, model, example, package)


def _run_in_child(function: Callable[..., None], *args: object) -> None:
    """`function(*args)` in a child process at low CPU priority, unless stop_builds() has
    been told about the calling thread."""
    # spawned, not forked: the parent may be a serving worker with gRPC threads; a child
    # that dies raises BrokenProcessPool here instead of hanging
    context = multiprocessing.get_context("spawn")
    caller = threading.current_thread()
    with ProcessPoolExecutor(1, context, initializer=os.nice, initargs=(BUILD_NICENESS,)) as pool:
        with _BUILDS_LOCK:
            if caller in _STOPPED:
                raise RuntimeError(f"not compiling: {caller.name} is stopping")
            _BUILDS[pool] = caller
        try:
            pool.submit(function, *args).result()
        finally:
            with _BUILDS_LOCK:
                del _BUILDS[pool]


def stop_builds(thread: threading.Thread) -> None:
    """End the compiles `thread` runs in children and refuse its next ones: a server
    shutting down must not wait for its bundle watcher's compile (up to 40 s; Python's exit
    joins process pools). The load that wanted it fails, which is logged, and cached_build
    keeps nothing half-built."""
    with _BUILDS_LOCK:
        _STOPPED.add(thread)
        pools = [pool for pool, caller in _BUILDS.items() if caller is thread]
    for pool in pools:
        # no public way to end a task already running: end its process
        for process in list((pool._processes or {}).values()):
            process.terminate()


def _build(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], package: Path) -> None:
    rows = torch.export.Dim("rows", min=1)
    exported = torch.export.export(model, example, dynamic_shapes=({0: rows}, {0: rows}))
    # no pool of compile workers: the graph is small, a pool saves little
    with torch._inductor.config.patch(compile_threads=1):
        torch._inductor.aoti_compile_and_package(exported, package_path=str(package))


def _weights_bytes(model: nn.Module) -> bytes:
    """Every parameter and buffer (the non-persistent ones too: the dense statistics)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return b"".join(
        name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes()
        for name, tensor in tensors
    )
