"""The training terms of both formulations (docs/training.md), as functions of what the model reads off."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_label_kl(level_logits: torch.Tensor, soft_target: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ model) over the level words; the target is the discretised Gaussian of the human score."""
    return F.kl_div(level_logits.log_softmax(dim=-1), soft_target, reduction="batchmean")


def thurstone_fidelity(p_model: torch.Tensor, p_human: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Fidelity loss 1 − √(p·q) − √((1−p)(1−q)) between the model's and the humans' P(A better than B)."""
    agree = (p_model * p_human + eps).sqrt() + ((1 - p_model) * (1 - p_human) + eps).sqrt()
    return (1 - agree).mean()


def hallucination_bce(yes_minus_no: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE on the Yes/No answer; `label` may be an annotator vote fraction."""
    return F.binary_cross_entropy_with_logits(yes_minus_no, label.to(yes_minus_no))


def level_token_ce(logits: torch.Tensor, level_ids: list[int], soft_target: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the full vocabulary on the most likely human level word, so that the
    level words also win against every other token (what a chat user of the model would see)."""
    target_ids = torch.tensor(level_ids, device=logits.device)[soft_target.argmax(dim=-1)]
    return F.cross_entropy(logits, target_ids)


def pair_ranking_bce(score_difference: torch.Tensor, p_human: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry: BCE of σ(s_A − s_B) against the humans' P(A better than B), a vote fraction, so a tie
    (0.5) is met by equal scores and a split vote asks for a small gap."""
    return F.binary_cross_entropy_with_logits(score_difference, p_human.to(score_difference))


def score_mse(
    score: torch.Tensor, human_score: torch.Tensor, score_range: tuple[float, float]
) -> torch.Tensor:
    """Squared error of the score against the human mean score, on the scale's unit range (an absolute anchor
    for the ranking term, which sees differences only)."""
    low, high = score_range
    return ((score - human_score.to(score)) / (high - low)).square().mean()
