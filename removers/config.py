"""Every default of the removers and their runtimes lives here and nowhere else."""
from __future__ import annotations

from dataclasses import dataclass

CASCADE = "cascade"  # `model="cascade"`: CASCADE_PAIR's fast remover first, its strong one behind the gate
CASCADE_PAIR = ("u2netp", "isnet-imgly")  # (fast, strong) of model="cascade" (CleanConfig.cascade)


@dataclass(frozen=True)
class RuntimeConfig:
    """How models run: engine, precision, threads, spin-waiting, compiled-model cache.

    Passed down explicitly (``CleanConfig.runtime``, ``create_embedder(runtime=...)``),
    never through environment variables. ``runtime`` and ``precision`` can change
    pixels, so they are in the settings fingerprint, resolved first (``auto`` is
    recorded as what really ran, see removers/runtime.py); ``threads``, ``streams``, ``spin``
    and ``cache_dir`` change speed only and stay out.
    """

    runtime: str = "auto"  # auto | onnxruntime | openvino (onnxruntime = the model's reference engine)
    precision: str = "auto"  # auto | fp32 | bf16 (bf16 only where the CPU has it natively)
    threads: int = 0  # intra-op threads per model; 0 = all cores
    # calls this process makes at once on one model (the API's inference threads): OpenVINO runs
    # that many streams sharing the threads (removers.runtime.plan); 0 = one at a time
    streams: int = 0
    spin: bool = True  # onnxruntime intra-op threads busy-wait between ops
    cache_dir: str | None = None  # OpenVINO compiled/converted models; None = the user cache dir
    device: str = "cpu"  # cpu | cuda (onnxruntime's CUDA provider); "auto" is resolved at the edge
    # input side of the isnet-imgly remover (square, px; its weights are exported for 1024).
    # 640: the smallest side within 0.01 of 1024's mean IoU on GrabCut and COCO_MVal in-box,
    # 2.6x faster (python -m bench.isnet_size --coco-every 6)
    isnet_side: int = 640
    # photos per remover call (batched onnxruntime runs, removers/segment_batch.py); 0 = the
    # device's: 1 on cpu (the weights as shipped), CUDA_REMOVER_BATCH on cuda
    remover_batch: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.remover_batch <= 256:
            raise ValueError(f"remover_batch must be between 0 and 256, got {self.remover_batch}")
        if self.threads < 0 or self.streams < 0:
            raise ValueError(f"threads and streams must be >= 0, got {self.threads}, {self.streams}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if not (256 <= self.isnet_side <= 2048 and self.isnet_side % 32 == 0):
            raise ValueError(f"isnet_side must be a multiple of 32 in 256..2048, got {self.isnet_side}")

    def batch_size(self) -> int:
        """Photos per remover call: ``remover_batch``, or the device's default when 0."""
        return self.remover_batch or (CUDA_REMOVER_BATCH if self.device == "cuda" else 1)


RUNTIMES = ("auto", "onnxruntime", "openvino")
# photos per remover call on cuda (RuntimeConfig.remover_batch 0); a batch's decoded photos are
# held in the worker's RAM together
CUDA_REMOVER_BATCH = 8
PRECISIONS = ("auto", "fp32", "bf16")
