"""The canonical LL-Bench schema (docs/data_contract.md): table files, their columns and value vocabularies.

The real release's column names are not published, so readers map these canonical names onto whatever a
release uses (`configs/data/*.yaml`); writers such as the LL-Bench-mini generator write them as they are.
"""

IMAGES = "metadata/images.csv"
PAIRS = "human_preference/pairwise_quality_preferences.csv"
SCORES = "human_preference/bradley_terry_quality_scores.csv"
HALLUCINATION = "human_preference/hallucination_labels.csv"
RANKINGS = "human_preference/trial_quality_rankings.csv"
GROUND_TRUTH = "ground_truth.csv"

COLUMNS = {
    IMAGES: ("image_id", "path", "kind", "source_id", "task", "model", "model_family", "scene"),
    PAIRS: ("source_id", "image_a", "image_b", "preference", "annotator_id", "trial_id"),
    SCORES: ("image_id", "score", "std", "n_comparisons"),
    HALLUCINATION: ("image_id", "hallucination", "n_votes"),
    RANKINGS: ("trial_id", "source_id", "annotator_id", "ranking"),
}
OPTIONAL_COLUMNS = {IMAGES: ("scene",), SCORES: ("std", "n_comparisons"), HALLUCINATION: ("n_votes",)}
GROUND_TRUTH_COLUMNS = ("image_id", "utility", "hallucinated", "clean_fidelity")
"""LL-Bench-mini only: the annotator pool's expected perceived utility, whether the restoration hallucinated,
and its fidelity to the clean scene (which no annotator sees)."""

KINDS = ("degraded", "restored", "reference")
FAMILIES = ("lgm", "conventional")
PREFERENCES = ("a", "b", "tie")
RANKING_SEPARATOR = ">"
