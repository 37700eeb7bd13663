"""edgeml's benchmarks, each against its peer in the same run: ``python -m bench.NAME``.

``python -m bench`` (``make bench``) runs them all and rewrites ``bench/RESULTS.md``;
``python -m bench --smoke`` (``make bench-smoke``) runs each one at tiny sizes, as the tests do.
"""

BENCHMARKS = (
    "ingest_csv",
    "mqtt_lander",
    "tune_search",
    "export",
    "agent_serving",
    "serve",
    "bundle_delta",
    "central_ingest",
    "central_drift",
    "drift_agreement",
    "pipeline_memory",
)
