"""Every table and figure a run writes, declared once: its name, the notebook that writes it and a one-line meaning.

Writers and readers name an artifact by its declaration (``TABLES.attack_metrics``, ``FIGURES.attack_location``),
never by a string: ``tests/test_house.py`` fails when an artifact's name is spelled as a literal anywhere else in
``ama/`` or the notebooks, and ``tests/test_reproduce.py`` when a FAST run writes an undeclared artifact or misses a
declared one. A declaration is a ``str`` (the file's stem), so it is also the key of a run's ``tables`` dict.
Imports nothing else from ``ama``; the studies of notebook 05 declare theirs with themselves (:mod:`ama.studies.study`).
"""
from __future__ import annotations


class Artifact(str):
    """A table's or figure's file stem, with ``kind`` (``"table"``/``"figure"``), ``notebook`` (the one writing it,
    ``"04"`` the report) and ``meaning``; ``fast`` False when a FAST run does not write it."""

    kind: str
    notebook: str
    meaning: str
    fast: bool

    def __new__(cls, name: str, kind: str, notebook: str, meaning: str, fast: bool = True):
        self = super().__new__(cls, name)
        self.kind, self.notebook, self.meaning, self.fast = kind, notebook, meaning, fast
        return self

    def __reduce__(self):  # pickled (e.g. to another process) as the plain name
        return str, (str(self),)


class _Declared:
    """A namespace of artifacts of one kind: ``TABLES.<name>`` is the artifact named ``<name>``. The claims' notebooks
    (01-04) declare theirs below; each study of notebook 05 declares its own where it is defined
    (:func:`ama.studies.study.register`), so iterating over all of them needs :func:`ama.studies.registry.studies` called first."""

    def __init__(self, kind: str, entries):
        self._kind, self._all = kind, {}
        for notebook, name, meaning, *fast in entries:
            self.declare(Artifact(name, kind, notebook, meaning, *fast))

    def declare(self, artifact: Artifact) -> Artifact:
        """Add ``artifact`` (an :class:`Artifact` of this namespace's kind, a name not yet declared)."""
        if artifact.kind != self._kind or str(artifact) in self._all:
            raise ValueError(f"{artifact.kind} {str(artifact)!r} is declared twice or in the wrong namespace")
        setattr(self, str(artifact), artifact)
        self._all[str(artifact)] = artifact
        return artifact

    def withdraw(self, name: str) -> None:
        """Remove the artifact ``name`` (a study taken back, :func:`ama.studies.study.unregister`)."""
        self._all.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str):  # only for names not declared (declared ones are attributes)
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"no {self._kind} {name!r} is declared: a study's artifacts exist once its module is "
                             "imported (ama.studies.registry.studies())")

    def __iter__(self):
        return iter(self._all.values())


TABLES = _Declared("table", [
    ("01", "occlusion_keep_irf", "image x fill x cell: a cell's raw CAM change when everything outside its IRF is filled"),
    ("01", "occlusion_occlude_irf", "image x fill x cell: a cell's change when its IRF is filled"),
    ("01", "occlusion_margin", "image x e x fill: the CAM's change when the e-pixel margin is filled"),
    ("01", "occlusion_margin_cells", "image x e x fill x cell: each cell's change under margin occlusion"),
    ("01", "occlusion_margin_cell_means", "e x fill x cell: margin occlusion's change per cell, mean over images"),
    ("01", "occlusion_margin_summary", "e x fill x cell kind: margin occlusion's change, summarised"),
    ("01", "occlusion_sliding_patch", "image x patch position: the class score's drop under a sliding patch"),
    ("01", "occlusion_per_area", "cell kind: claim 2 per unit of area, the IRF's change per pixel over the rest's"),
    ("02", "misalignment", "image x cell: ERF mass outside the IRF, centroid distance, top-q IoU (claim 1)"),
    ("02", "misalignment_summary", "model x cell kind: the misalignment measures' mean and spread"),
    ("02", "misalignment_baselines", "model x measure: claim 1 beside a flat ERF and a centred Gaussian of its spread"),
    ("02", "misalignment_upsampling_cells", "image x upsampling x cell: the ERF mass outside each upsampling's IRF"),
    ("02", "misalignment_upsampling", "model x upsampling x cell kind: those means"),
    ("02", "misalignment_upsampling_verdicts", "model x upsampling: claim 1's verdict under each upsampling"),
    ("02", "frame_side_mass", "model x cell kind x side: the ERF's mass on each side of the frame over its share, paired"),
    ("02", "margin_mass_ratio", "cell kind x e: the ERF's mass on the e-pixel margin over the margin's area share"),
    ("02", "receptive_field_image_sizes", "image: theoretical RF, the centre cell's IRF width, the ERF's 90% side"),
    ("02", "receptive_field_sizes", "model: those sizes, mean over images"),
    ("03", "clean_accuracy", "model: top-1 and top-5 on the labelled images the selection checks"),
    ("03", "clean_predictions", "model x image: the clean prediction of each checked image"),
    ("03", "attack_metrics", "image x e x setting x quantisation: the attack's and the random frame's metrics"),
    ("03", "attack_summary", "e x n_iter x mode x setting: fooling rate and map similarity over images"),
    ("03", "attack_history", "image x e x setting x iteration: the objective, CAM cosine and class along the attack"),
    ("03", "attack_by_confidence", "e x tercile of clean confidence: the reference attack's fooling rate"),
    ("03", "attack_confidence", "e x tercile of the clean logit margin: the fitted fooling rate of a logistic regression"),
    ("03", "attack_seeds", "image x seed x e: the reference attack at further seeds", False),
    ("03", "attack_seed_spread", "optimiser x e: fooling rate and cosine across seeds", False),
    ("03", "cam_null", "model x pair of unrelated images: the cosine of their clean CAMs (claim 3's null)"),
    ("03", "attack_complete_change", "model x e x optimiser and the random frame: completely changed, fooled and both"),
    ("03", "attack_tau_curve", "model x e x optimiser x null quantile: fooled and completely changed at that tau"),
    ("03", "attack_restarts", "model: claim 3's joint share per start and best of the run's k starts (its seeds)"),
    ("03", "attack_targets", "image x glyph: the target's cosine to the clean CAM; attacked or skipped"),
    ("03", "attack_targeted", "target x e x optimiser and the random frame: the cosine to the target, reached"),
    ("03", "attack_targeted_summary", "e x glyph x optimiser: targets reached, paired against the random frame"),
    ("03", "attack_ablation", "image x optimiser x variant x e x budget: the optimisers at the same budget"),
    ("03", "attack_ablation_summary", "optimiser x variant x e: those rates and cosines with intervals"),
    ("03", "attack_ingredients", "image x variant x seed: the ingredient study"),
    ("03", "attack_ingredients_summary", "variant: its fooling rate and gain over the reference, held out"),
    ("04", "verdicts", "verdict: its family, value and interval, one-sided p-values, the outcome before and after Holm"),
])

FIGURES = _Declared("figure", [
    ("01", "cam_pipeline", "an image, its CAM cells and the upsampled saliency map"),
    ("01", "occlusion_keep_occlude_irf", "keep-IRF and occlude-IRF changes per cell kind (claim 2)"),
    ("01", "occlusion_margin_delta", "margin occlusion's change per e and fill"),
    ("01", "occlusion_margin_similarity", "the CAM's similarity to the clean one under margin occlusion"),
    ("01", "occlusion_sliding_patch", "the sliding-patch occlusion map of one image"),
    ("02", "erf_vs_irf", "a cell's ERF beside its IRF (claim 1)"),
    ("02", "misalignment_by_cell_kind", "the misalignment measures per cell kind"),
    ("02", "misalignment_baselines", "claim 1 beside its baselines, per upsampling"),
    ("02", "margin_mass_ratio", "the ERF's mass on the margin over the margin's share, per e"),
    ("02", "receptive_field_sizes", "theoretical RF, IRF and ERF sizes"),
    ("03", "attack_examples", "attacked images and their CAMs, fooled and not"),
    ("03", "attack_examples_by_e", "one image attacked at every e"),
    ("03", "attack_metrics_vs_e", "fooling rate and map similarity against e, attack vs random frame (claim 3)"),
    ("03", "attack_tau_curve", "claim 3's joint share against tau, the null's quantile, per optimiser"),
    ("03", "attack_random_baseline", "the attack beside the random frame"),
    ("03", "attack_history", "the CAM cosine and the class along the attack"),
    ("03", "attack_keep_example", "an attack that keeps the class and moves the CAM"),
    ("03", "attack_targeted_example", "a targeted attack's map against its target"),
    ("03", "attack_confidence", "the fooling rate against the clean logit margin, fitted and observed (10 images or more)",
     False),
    ("03", "attack_ablation", "the optimisers at the same budget"),
    ("03", "attack_ingredients", "the ingredient study's held-out gains (two reported images or more)", False),
    ("04", "attack_across_models", "fooling rate and CAM cosine against e, one line per model", False),
])
