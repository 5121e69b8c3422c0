"""Which engine and precision run a model here, and a runner for an ONNX file.

``resolve(runtime, kind)`` turns a ``RuntimeConfig`` (``runtime`` auto|onnxruntime|openvino,
``precision`` auto|fp32|bf16) into the concrete ``Choice`` for one kind of model, with
the reason. The rule for ``auto`` follows the measurements of bench/model_speed.py
and bench/embed_speed.py (README, "Speed"):

* bf16 only where the CPU computes it natively (AMX or AVX512_BF16), read from
  OpenVINO's ``OPTIMIZATION_CAPABILITIES`` or, without OpenVINO, the CPU flags
  ``amx_bf16`` / ``avx512_bf16``; fp32 elsewhere. bf16 needs OpenVINO.
* removers: on a native-bf16 CPU, the removers with a mixed-precision recipe
  (``AUTO_BF16``) run on OpenVINO in bf16: u2netp with the few nodes that move
  the mask kept in fp32 (removers/ov_ir.py), at about 2.5x onnxruntime's speed;
  isnet-imgly in plain bf16, at about 2x. Both pass the accuracy guard. Elsewhere,
  and for the other removers, fp32 on onnxruntime (rembg's own engine). Plain bf16
  for another remover is opt-in.
* a remover on ``device="cuda"`` always runs on onnxruntime (its CUDA provider) in
  fp32, whatever ``runtime``/``precision`` say: OpenVINO and bf16 are CPU paths here.
* the embedder: OpenVINO f32 whenever it is installed (faster than torch eager);
  its reference engine is torch. bf16 is opt-in here too (``AUTO_BF16``).

``runtime="onnxruntime"`` names each model's reference engine: onnxruntime for the
ONNX removers, torch for the torch embedder.

These choices were measured again with OpenVINO unpinned (issue 23; docs/speed.md,
"Every core busy", AMD EPYC avx512_bf16): at fp32 OpenVINO stays no faster than
onnxruntime where the workers run (u2netp 0.99x the CPU per photo in the 2-worker
pool, u2net 1.04x the photos/s at 2 processes x 1 thread, IS-Net 0.98x the time),
bf16 stays well ahead (IS-Net 0.475x the time, u2netp mixed 0.62x the CPU per photo)
and the embedder on OpenVINO does 3.42x torch eager's images/s; so none changed.

``plan(threads, concurrent)`` is the one decision of a process's threading (threads,
OpenVINO streams, pinning: see "threading of one process" below); every runner is
built with it.

``build_runner(path, choice, runtime, model)`` gives an object with
onnxruntime's calling convention (``get_inputs()``, ``get_outputs()``,
``run(output_names, feed)``) whichever engine runs, so the removers' pre- and
post-processing (rembg's, or removers.segment's) stays the same code.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import RuntimeConfig
from .models import ModelError

ONNXRUNTIME, OPENVINO, TORCH = "onnxruntime", "openvino", "torch"
FP32, BF16 = "fp32", "bf16"
KINDS = ("remover", "embedder", "detector")
_OV_PRECISION = {FP32: "f32", BF16: "bf16"}
# Which models "auto" runs in bf16 (where the CPU has it): only those whose bf16 path
# passes the accuracy guard of tests/test_runtime_accuracy.py. u2netp in plain bf16
# (OpenVINO 2026.4, AVX512_BF16) gave mask IoU 0.973-1.000 vs fp32 on the sample
# photos, below the 0.99 bound on 4 of 12; with removers/ov_ir.py's mixed recipe
# (4 nodes in fp32) 0.998-1.000. IS-Net (isnet-imgly, at its 640 px side) in plain
# bf16: IoU 0.993-1.000 vs fp32 on 86 clothing and GrabCut photos, the same gate
# verdict on all 86, 0.47x the time. EfficientNet-Lite0 in bf16 gave cosine 0.998
# (bound 0.999), so the embedder stays fp32 unless bf16 is asked for. The full u2net in
# plain bf16: grocery mask IoU down to 0.451 (13 of 50 below 0.98); its error is spread over
# the stages (en1, en2, en3 or de1 alone in bf16 each take a grocery mask to 0.97 or below), and even
# en1+en2+de1+de2 kept in fp32 leave a grocery photo at 0.939 (bench/model_speed.py --model u2net):
# no cheap mixed recipe, so u2net stays fp32.
AUTO_BF16 = {"remover": frozenset({"u2netp", "isnet-imgly"}), "embedder": frozenset()}
DEFAULT_MODEL = {"remover": "u2netp", "embedder": "efficientnet_lite0"}


class RuntimeUnavailable(ModelError):
    """The requested engine is not installed (one-line message naming the fix)."""


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers: OpenVINO's version (None = not installed) and native bf16."""

    openvino: str | None
    native_bf16: bool
    bf16_source: str  # where native_bf16 was read from


@dataclass(frozen=True)
class Choice:
    engine: str  # onnxruntime | openvino | torch
    precision: str  # fp32 | bf16
    reason: str

    def fields(self) -> dict:
        """The part of the choice that can change results (recorded in fingerprints)."""
        return {"runtime": self.engine, "precision": self.precision}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def detect() -> Capabilities:
    """This machine's capabilities (cached; importing OpenVINO is the slow part)."""
    try:
        import openvino as ov
    except ImportError:
        flags = _cpu_flags()
        native = bool(flags & {"amx_bf16", "avx512_bf16"})
        return Capabilities(None, native, "/proc/cpuinfo flags amx_bf16/avx512_bf16")
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    version = ov.get_version().split("-")[0]
    return Capabilities(version, "BF16" in caps, "OpenVINO OPTIMIZATION_CAPABILITIES")


def resolve(runtime: RuntimeConfig, kind: str, caps: Capabilities | None = None,
            model: str | None = None) -> Choice:
    """The concrete engine and precision for a ``kind`` of model ("remover" | "embedder" | "detector").

    ``model`` names the model (default: the kind's default model); ``auto`` picks bf16
    only for the models in ``AUTO_BF16``. ``caps`` defaults to this machine's
    (``detect()``); pass one to decide for another.
    Raises RuntimeUnavailable when OpenVINO is asked for explicitly and is missing.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "detector":  # removers/text_det.py: one engine and precision until a guard measures others
        return Choice(ONNXRUNTIME, FP32, "the text detector runs on onnxruntime fp32 (no bf16 accuracy guard yet)")
    if kind == "remover" and runtime.device == "cuda":  # OpenVINO and bf16 are this module's CPU paths
        return Choice(ONNXRUNTIME, FP32, "device cuda: onnxruntime's CUDA provider, fp32")
    caps = caps or detect()
    model = model or DEFAULT_MODEL[kind]
    reference = ONNXRUNTIME if kind == "remover" else TORCH
    have_ov = caps.openvino is not None
    cpu = "native bf16" if caps.native_bf16 else "no native bf16"
    if runtime.runtime == OPENVINO and not have_ov:
        raise RuntimeUnavailable("runtime 'openvino' is not installed; run `pip install openvino`")

    # precision first: it decides the engine under "auto"
    if runtime.precision == BF16 and not caps.native_bf16:
        precision, why = FP32, f"bf16 asked, but this CPU has {cpu} ({caps.bf16_source}): fp32"
    elif runtime.precision == BF16 and (runtime.runtime == ONNXRUNTIME or not have_ov):
        precision, why = FP32, f"bf16 asked, but it needs OpenVINO and {reference} runs: fp32"
    elif runtime.precision == BF16:
        precision, why = BF16, f"bf16 asked; CPU has {cpu}"
    elif runtime.precision == FP32:
        precision, why = FP32, "fp32 asked"
    elif model not in AUTO_BF16[kind]:
        precision, why = FP32, f"auto: {model} has no bf16 path that passes the accuracy guard (fp32 kept)"
    elif caps.native_bf16 and have_ov and runtime.runtime != ONNXRUNTIME:
        precision, why = BF16, f"auto: CPU has {cpu} ({caps.bf16_source})"
    else:
        precision = FP32
        why = (f"auto: CPU has {cpu}" if not caps.native_bf16 else
               "auto: bf16 needs OpenVINO" + ("" if have_ov else " (not installed)"))

    if runtime.runtime == ONNXRUNTIME:
        engine, how = reference, f"{reference} asked"
    elif runtime.runtime == OPENVINO:
        engine, how = OPENVINO, "openvino asked"
    elif not have_ov:
        engine, how = reference, "auto: OpenVINO not installed"
    elif precision == BF16:
        mixed = " (mixed: the mask-moving nodes in fp32)" if model in _recipes() else ""
        engine, how = OPENVINO, f"auto: OpenVINO {caps.openvino} for bf16{mixed}"
    elif kind == "embedder":
        engine, how = OPENVINO, f"auto: OpenVINO {caps.openvino} f32 beats torch eager"
    else:
        engine, how = reference, "auto: at fp32 OpenVINO is no faster than onnxruntime"
    return Choice(engine, precision, f"{how}; {why}")


def settings_fields(runtime: RuntimeConfig, kind: str = "remover", model: str | None = None) -> dict:
    """The fields of ``runtime`` that can change results, with ``auto`` resolved for ``model``
    (none of threads/spin/cache; device only when not cpu and the remover batch only when > 1,
    so the settings key of CPU runs stays what it was): ``CleanConfig.fingerprint``'s. The runtime
    and precision are what really runs (``resolve``)."""
    fields = {**resolve(runtime, kind, model=model).fields(), "isnet_side": runtime.isnet_side}
    if runtime.device != "cpu":
        fields["device"] = runtime.device
    if runtime.batch_size() > 1:  # batches run a batch-capable copy of the graph (segment_batch)
        fields["remover_batch"] = runtime.batch_size()
    return fields


def _recipes() -> dict:
    from .ov_ir import RECIPES

    return RECIPES


# --------------------------------------------------------------------------- runners


@dataclass(frozen=True)
class _Port:
    name: str
    shape: tuple


class OpenVinoRunner:
    """An OpenVINO compiled model with onnxruntime's ``run(output_names, feed)``.

    Thread-safe: each calling thread gets its own infer request.
    """

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self._inputs = [_Port(p.get_any_name(), tuple(p.get_partial_shape())) for p in compiled.inputs]
        self._outputs = [_Port(p.get_any_name() if p.get_names() else f"out{i}", tuple(p.get_partial_shape()))
                         for i, p in enumerate(compiled.outputs)]
        self._local = threading.local()

    def get_inputs(self) -> list[_Port]:
        return self._inputs

    def get_outputs(self) -> list[_Port]:
        return self._outputs

    def _request(self):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        req = self._request()
        result = req.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        names = [p.name for p in self._outputs]
        wanted = output_names or names
        return [np.array(result[self.compiled.outputs[names.index(n)]]) for n in wanted]


# --------------------------------------------------------------------------- threading of one process
#
# The one place that decides how a process's models use its cores: how many
# threads, how many OpenVINO streams, whether OpenVINO pins its threads to cores.
# Every engine's worker goes through here (the local pool's and Ray's via
# ``RuntimeConfig.threads``, the API through ``concurrent``, the embedder through
# ``create_embedder``), so no worker decides on its own.
#
# Pinning: OpenVINO's CPU plugin pins its inference threads to cores by default on
# Linux (ENABLE_CPU_PINNING), always starting from the first core of the process's
# CPU set. Two worker processes sharing the cores both pinned to the same first
# core, and a third of a 2-core machine sat idle (issue 23). So OpenVINO pins only
# in a process that owns its CPU set (``own_cpus``: a pool worker given cores no
# sibling shares) and only while ``PIN_OWNED_CPUS`` says that pays; a CPU set that
# a process merely inherited (taskset, a container's cpuset) is shared with its
# siblings and is never pinned to.
# Measured (bench/pinning.py; docs/speed.md, "Every core busy"): 2 pool workers x 1 thread, each
# given its own core and pinned: 0.69x and 0.98x the photos/s of unpinned workers sharing both
# cores in two runs; own core unpinned 0.94x and 1.03x (AMD EPYC avx512_bf16, shared machine).
# Pinning never paid, so it stays off even in an owned CPU set.
PIN_OWNED_CPUS = False
_owned_cpus: frozenset[int] | None = None


def given_cpus() -> frozenset[int]:
    """The CPUs this process may run on: its affinity (taskset, a cgroup cpuset, ``own_cpus``)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return frozenset(range(os.cpu_count() or 1))


def given_cores() -> int:
    """How many cores this process is given (its CPU set, not the machine's count): the
    default number of workers, and of threads shared among them."""
    return max(1, len(given_cpus()))


def own_cpus(cpus) -> None:
    """Make ``cpus`` this process's own CPU set: it runs only there, and no sibling worker shares
    them, so its models may pin their threads to them (``plan``). For a pool that gives each
    worker a disjoint share of the cores."""
    global _owned_cpus
    os.sched_setaffinity(0, cpus)
    _owned_cpus = frozenset(cpus)


@dataclass(frozen=True)
class Threading:
    """How one model uses this process's cores."""

    threads: int  # intra-op threads per call (OpenVINO: per stream)
    streams: int  # calls one OpenVINO compiled model runs at once
    pin: bool  # OpenVINO pins its threads to cores

    @property
    def total_threads(self) -> int:
        return self.threads * self.streams


def plan(threads: int = 0, concurrent: int = 1) -> Threading:
    """The threading of a model in this process.

    ``threads``: intra-op threads per call (``RuntimeConfig.threads``; 0 = every core this
    process is given). ``concurrent``: calls this process makes at once on one model (the
    API's inference threads); OpenVINO then runs that many streams, sharing the threads, so
    the calls run side by side instead of queueing for one stream. Pinning: see above."""
    cores = len(given_cpus())
    concurrent = max(1, concurrent)
    if concurrent == 1:
        per_call, streams = threads or cores, 1
    else:
        streams = min(concurrent, cores)
        per_call = max(1, (threads or cores) // streams)
    owned = _owned_cpus is not None and _owned_cpus == given_cpus()
    return Threading(threads=per_call, streams=streams, pin=owned and PIN_OWNED_CPUS)


def runtime_plan(runtime: RuntimeConfig) -> Threading:
    """``plan`` for a model run with ``runtime``: its threads per call and calls at once (streams)."""
    return plan(runtime.threads, runtime.streams or 1)


def limit_threads(threads: int) -> None:
    """Cap this process's native thread pools at ``threads`` (>= 1): OpenCV's, and the
    BLAS/OpenMP pools of the libraries loaded so far (numpy's and OpenCV's OpenBLAS,
    libgomp when loaded) through threadpoolctl. For worker processes that share the
    cores (2 workers x 2 threads each on 2 cores would oversubscribe). The models' own
    threads are ``RuntimeConfig.threads``, given to onnxruntime / OpenVINO through ``plan``."""
    import cv2
    import numpy  # noqa: F401 - loaded first so that its BLAS is among the pools capped
    from threadpoolctl import threadpool_limits

    n = max(1, threads)
    cv2.setNumThreads(n)
    threadpool_limits(limits=n)


def default_cache_dir() -> Path:
    """Per-user cache of OpenVINO's compiled models and converted IR files."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("shelfready")) / "openvino"


def ov_config(precision: str, threading_: Threading, cache_dir: Path | None) -> dict:
    """OpenVINO CPU properties for one compiled model: ``threading_`` (``plan``) says the threads,
    streams and pinning. One stream: latency hint; several: their threads split between them."""
    cfg = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
           "PERFORMANCE_HINT": "LATENCY" if threading_.streams == 1 else "THROUGHPUT",
           "NUM_STREAMS": threading_.streams, "INFERENCE_NUM_THREADS": threading_.total_threads,
           "ENABLE_CPU_PINNING": threading_.pin}
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cfg["CACHE_DIR"] = str(cache_dir)
    return cfg


def compile_openvino(model, precision: str, threading_: Threading, cache_dir: Path | None = None):
    """Compile an ONNX path or an ``ov.Model`` for the CPU with ``threading_`` (``plan``)."""
    import openvino as ov

    return ov.Core().compile_model(model if not isinstance(model, Path) else str(model), "CPU",
                                   ov_config(precision, threading_, cache_dir))


def torch_to_ir(module, image_size: int, target: Path) -> Path:
    """A torch image model (input N x 3 x ``image_size`` x ``image_size``) as OpenVINO IR at
    ``target`` (.xml, .bin beside it), converted on first use and reused after; weights kept in
    fp32 (the precision hint applies at compile time). Written to a temp name and renamed, so a
    crash never leaves half an IR."""
    if target.is_file() and target.with_suffix(".bin").is_file():
        return target
    import warnings

    import openvino as ov
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, image_size, image_size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace deprecation notes from the converter
        converted = ov.convert_model(module.eval(), example_input=example,
                                     input=[ov.PartialShape([-1, 3, image_size, image_size])])
    tmp = target.parent / f".{target.stem}.{os.getpid()}.xml"
    ov.save_model(converted, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(tmp, target)
    return target


def ort_options(threads: int, spin: bool):
    """onnxruntime options: ``threads`` (0 = every core given, ``plan``) and intra-op spin-waiting.
    onnxruntime does not pin its threads unless asked to."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = plan(threads).threads
    opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def build_runner(path: Path, choice: Choice, runtime: RuntimeConfig = RuntimeConfig(), model: str | None = None):
    """A runner for the ONNX file at ``path`` on ``choice``'s engine and precision.

    On OpenVINO, a ``model`` with a recipe in removers/ov_ir.py runs from its prepared
    IR (static input; under bf16 the recipe's nodes stay fp32)."""
    if choice.engine == OPENVINO:
        cache = Path(runtime.cache_dir) if runtime.cache_dir else default_cache_dir()
        source = Path(path)
        if model in _recipes():
            from .ov_ir import prepared_ir

            source = prepared_ir(model, source, cache)
        return OpenVinoRunner(compile_openvino(source, choice.precision, runtime_plan(runtime), cache))
    if choice.engine != ONNXRUNTIME:
        raise ValueError(f"an ONNX file runs on onnxruntime or openvino, not {choice.engine!r}")
    import onnxruntime as ort

    return ort.InferenceSession(str(path), ort_options(runtime.threads, runtime.spin),
                                providers=["CPUExecutionProvider"])
