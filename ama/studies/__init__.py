"""The science: the notebooks' experiments per image with their summaries, the paper's three claims, the controls and
the studies beyond the paper."""
__all__ = ["study", "explanations", "attack_summaries", "confidence", "complete_change", "ablation", "targeted_shapes",
           "attack_experiments", "attack_examples", "transfer", "faithfulness", "controls", "border_defence", "sides",
           "location", "padding_study", "padding_leverage", "claims", "captions", "erf_definitions", "registry", "beyond", "experiments"]


def __getattr__(name):
    """A module of the package on first use (``ama.studies.study`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
