"""Loading a finished run and predicting with every method it holds."""

from sitefusion.inference.loaded_run import LoadedRun, RunPredictions, softmax

__all__ = ["LoadedRun", "RunPredictions", "softmax"]
