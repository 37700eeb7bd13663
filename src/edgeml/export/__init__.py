"""Export: trained pipelines to ONNX (and OpenVINO IR) per firmware profile.

``converters`` (skl2onnx converters for edgeml's own parts), ``trees`` (tree ensembles and
isolation forests as standard tensor operations), ``quantize`` (fp16, int8) and ``run``
(``edgeml export``: convert, run on the profile's runtime, parity, latency, report). What each
runtime can run is :mod:`edgeml.support`.
"""
