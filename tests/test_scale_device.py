"""--device: the CPU path is unchanged, cuda without a GPU is one line, and (on a GPU) cuda masks match cpu's."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from scale_helpers import run

from hygiene.config import CleanConfig
from removers.config import RuntimeConfig


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _nvidia_gpu() -> bool:
    """An NVIDIA GPU this machine's driver lists (what `make` checks to install the [gpu] extra)."""
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _no_ort_cuda_reason() -> str:
    """Exactly what is missing for the onnxruntime GPU tests."""
    if not _nvidia_gpu():
        return "no NVIDIA GPU here (`nvidia-smi -L` lists none)"
    import onnxruntime as ort

    return (f"a GPU is here, but onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(providers: {', '.join(ort.get_available_providers())}): install the [gpu] extra, "
            "onnxruntime-gpu, alone (`make test` does when `nvidia-smi -L` lists a GPU)")


NO_ORT_CUDA = "" if _ort_cuda() else _no_ort_cuda_reason()


def test_cpu_device_keeps_the_settings_key_and_cuda_is_keyed():
    cpu = CleanConfig()
    assert '"device"' not in cpu.fingerprint()  # CPU runs are keyed as before devices existed
    cuda = CleanConfig(runtime=RuntimeConfig(device="cuda"))
    assert cuda.fingerprint() != cpu.fingerprint() and '"device": "cuda"' in cuda.fingerprint()
    with pytest.raises(ValueError, match="device must be cpu or cuda"):
        RuntimeConfig(device="tpu")


@pytest.mark.skipif(_ort_cuda(), reason="a CUDA provider is present: the no-GPU message cannot be shown")
def test_cuda_without_a_gpu_is_one_line_before_any_photo(tmp_path, sample_paths):
    out = tmp_path / "out"
    proc = run([sys.executable, "-m", "cli", "clean", str(sample_paths[0].parent), str(out), "--device", "cuda"])
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "Error: --device cuda: this onnxruntime has no CUDA provider; "
        "pip install shelfready[gpu] on a machine with an NVIDIA GPU"]


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_ORT_CUDA), reason=NO_ORT_CUDA)
def test_cuda_masks_match_cpu(sample_paths):
    from photos.io import load_image
    from removers.segment import predict_alpha

    for path in sample_paths[:3]:
        image = load_image(path)
        a = predict_alpha(image, "u2netp", RuntimeConfig()) >= 128
        b = predict_alpha(image, "u2netp", RuntimeConfig(device="cuda", remover_batch=1)) >= 128
        assert (a & b).sum() / max((a | b).sum(), 1) >= 0.99, path.name


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_ORT_CUDA), reason=NO_ORT_CUDA)
def test_cuda_batched_masks_match_cpu_in_one_call(sample_paths, tmp_path):
    """The default cuda path: the batch-capable graph, batch_size() photos per call (CPU twin:
    tests/test_segment_batch.py)."""
    from photos.io import load_image
    from removers.segment import predict_alpha
    from removers.segment_batch import get_batch_session, predict_alphas

    cuda = RuntimeConfig(device="cuda", cache_dir=str(tmp_path))
    images = [load_image(p) for p in sample_paths[:cuda.batch_size()]]
    session = get_batch_session("u2netp", cuda)
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    calls, run = [], session.run
    session.run = lambda names, feed: calls.append(len(next(iter(feed.values())))) or run(names, feed)
    masks = predict_alphas(images, "u2netp", cuda)
    assert calls == [len(images)]
    for path, image, mask in zip(sample_paths, images, masks):
        a, b = predict_alpha(image, "u2netp", RuntimeConfig()) >= 128, mask >= 128
        assert (a & b).sum() / max((a | b).sum(), 1) >= 0.99, path.name


@pytest.mark.slow
def test_cuda_embedder_matches_cpu(sample_paths):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no NVIDIA GPU here (`nvidia-smi -L` lists none)" if not _nvidia_gpu() else
                    f"a GPU is here, but torch {torch.__version__} cannot use it (torch.cuda.is_available() "
                    f"is False; CUDA build: {torch.version.cuda or 'none, a CPU-only torch'})")
    from photos.io import load_image
    from search import create_embedder

    images = [load_image(p) for p in sample_paths[:4]]
    cpu = create_embedder(device="cpu").embed(images)
    gpu = create_embedder(device="cuda").embed(images)
    assert np.allclose(cpu, gpu, atol=1e-3)


@pytest.mark.slow
def test_batched_embedding_is_one_model_call_and_equals_one_by_one(sample_paths):
    """The batched path a GPU actor runs (several photos per forward pass), checked on the CPU."""
    from photos.io import load_image
    from search import create_embedder

    images = [load_image(p) for p in sample_paths[:5]]
    emb = create_embedder(device="cpu", batch_size=5)
    calls = []
    forward = emb._forward_images
    emb._forward_images = lambda batch: calls.append(len(batch)) or forward(batch)
    batched = emb.embed(images)
    views = 2 if emb.flip else 1  # the default "+flip" embedder runs each photo's mirror image in the same call
    assert calls == [5 * views]  # five photos, one model call
    single = np.concatenate([emb.embed([im]) for im in images])
    assert calls == [5 * views] + [views] * 5
    assert np.allclose(batched, single, atol=1e-5), np.abs(batched - single).max()


@pytest.mark.skipif(_ort_cuda(), reason="a CUDA provider is present: the no-GPU message cannot be shown")
def test_evaluate_cuda_without_a_gpu_is_one_line_before_any_photo(tmp_path, sample_paths):
    proc = run([sys.executable, "-m", "cli", "evaluate", "--catalog", str(tmp_path), "--queries",
                str(sample_paths[0].parent), "--out", str(tmp_path / "report"), "--device", "cuda"])
    assert proc.returncode == 1 and not (tmp_path / "report").exists()
    assert proc.stderr.strip().splitlines() == [
        "Error: --device cuda: this onnxruntime has no CUDA provider; "
        "pip install shelfready[gpu] on a machine with an NVIDIA GPU"]
