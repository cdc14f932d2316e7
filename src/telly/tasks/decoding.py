"""Beam search over any next-token function; beam size 1 is greedy decoding.

Every generating task (summarization, generation, line completion) decodes through this one
function: it only needs `step(prefix) -> log-probabilities of the next token`, so it works the same
for a T5 decoder, a new Transformer decoder on an encoder, or a causal language model.
"""

from __future__ import annotations

from typing import Callable, Collection

import torch

Step = Callable[[torch.Tensor], torch.Tensor]


def beam_search(
    step: Step,
    start: torch.Tensor,
    end_ids: Collection[int],
    beam_size: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """The best continuation of each row of `start`, ending with one of `end_ids` (kept) or cut at `max_new_tokens`.

    `step(prefix)` gets `prefix` of shape (batch * beam_size, t) — the rows of source b are
    b*beam_size … b*beam_size+beam_size-1, each the start tokens followed by what was generated
    so far — and returns next-token log-probabilities of shape (batch * beam_size, vocab).
    Hypotheses are ranked by summed log-probability / length ** length_penalty, and a source is
    done once it has `beam_size` finished hypotheses that its best live beam no longer beats (as
    in Hugging Face's beam search without early stopping).
    """
    batch, k = start.size(0), beam_size
    start = start.repeat_interleave(k, dim=0)
    generated = start.new_empty((batch * k, 0))
    # Only the first beam is alive at the start, so the first step does not pick k copies.
    beam_scores = torch.full((batch, k), -float("inf"), device=start.device)
    beam_scores[:, 0] = 0.0
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    end_ids = set(end_ids)

    for length in range(1, max_new_tokens + 1):
        log_probs = step(torch.cat([start, generated], dim=1)).float()
        vocab = log_probs.size(-1)
        totals = (beam_scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        # 2k candidates: even if k of them end here, k can go on.
        top_scores, top_indices = totals.topk(min(2 * k, k * vocab), dim=1)
        rows, tokens, scores = [], [], []
        for b in range(batch):
            kept = []
            for score, index in zip(top_scores[b].tolist(), top_indices[b].tolist()):
                row, token = b * k + index // vocab, index % vocab
                if token in end_ids:
                    if score > -float("inf"):
                        hypothesis = (score / length**length_penalty, generated[row].tolist() + [token])
                        finished[b] = sorted([*finished[b], hypothesis], key=lambda h: -h[0])[:k]
                elif len(kept) < k:
                    kept.append((row, token, score))
            dead = kept[-1][:2] if kept else (b * k, index % vocab)
            kept += [(*dead, -float("inf"))] * (k - len(kept))  # pad with dead beams
            for row, token, score in kept:
                rows.append(row), tokens.append(token), scores.append(score)
        generated = torch.cat([generated[rows], start.new_tensor(tokens).view(-1, 1)], dim=1)
        beam_scores = beam_scores.new_tensor(scores).view(batch, k)
        if all(_done(finished[b], beam_scores[b], length, k, length_penalty) for b in range(batch)):
            break

    best = []
    for b in range(batch):
        # A source without k finished hypotheses also competes with its beams cut at the limit.
        cut = [
            (beam_scores[b, i].item() / generated.size(1) ** length_penalty, generated[b * k + i].tolist())
            for i in range(k)
            if not _done(finished[b], beam_scores[b], generated.size(1), k, length_penalty)
            and beam_scores[b, i] > -float("inf")
        ]
        best.append(max(finished[b] + cut, key=lambda hypothesis: hypothesis[0])[1])
    return best


def _done(finished: list, beam_scores: torch.Tensor, length: int, k: int, length_penalty: float) -> bool:
    return len(finished) >= k and beam_scores.max().item() / length**length_penalty <= finished[-1][0]
