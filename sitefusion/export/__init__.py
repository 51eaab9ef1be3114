"""Export a finished run for use without sitefusion: one ONNX graph of the fused system, a
versioned pre-processing JSON and a runner script that needs only numpy and onnxruntime.

``export_run(run_dir, out_dir)`` is the entry point (``sitefusion export``).
"""

from sitefusion.export.onnx_export import (
    EXPORT_FORMATS,
    PREPROCESSING_FORMAT,
    PREPROCESSING_VERSION,
    ExportResult,
    ProbabilityGraph,
    export_run,
    preprocessing_document,
)

__all__ = [
    "EXPORT_FORMATS",
    "PREPROCESSING_FORMAT",
    "PREPROCESSING_VERSION",
    "ExportResult",
    "ProbabilityGraph",
    "export_run",
    "preprocessing_document",
]
