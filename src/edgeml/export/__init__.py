"""Export: trained pipelines to ONNX (and OpenVINO) per firmware profile.

Built so far: the skl2onnx converters for edgeml's own pipeline parts
(:mod:`edgeml.export.converters`). The ``edgeml export`` command, parity reports,
latency measurement, OpenVINO and INT8/FP16 come next (issue #5).
"""
