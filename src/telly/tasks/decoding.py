"""Decoding: transformers' `generate` for pre-trained generative models, beam search for a new decoder.

Pre-trained models that generate (T5's decoder, GPT-2, the Llama family, an encoder run as a causal
LM) decode through `generate`, with their own key/value cache: `generation_config` says greedy or
beam search, how far, and which tokens end a sequence. A new Transformer decoder put on an encoder
(CodeXGLUE's code-to-text) is not a transformers model; `beam_search` decodes it over a step
function that keeps its own keys and values, so no step computes the prefix again.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterable

import torch
from transformers import GenerationConfig

#: `step(tokens, beams)`: `tokens` (rows, t) are the newest tokens of each row (the start tokens at the
#: first call, then one), `beams` (rows,) which row of the previous call each row continues (None at
#: the first call); returns next-token log-probabilities (rows, vocab).
Step = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def generation_config(beam_size: int, max_new_tokens: int, end_ids: Iterable[int], pad_id: int | None,
                      **settings) -> GenerationConfig:
    """Deterministic decoding: greedy at beam size 1, else beam search ranked by mean log-probability
    (length penalty 1) without early stopping; whatever the model's own generation config says."""
    return GenerationConfig(num_beams=beam_size, do_sample=False, max_new_tokens=max_new_tokens,
                            eos_token_id=sorted(end_ids), pad_token_id=pad_id, length_penalty=1.0,
                            early_stopping=False, num_return_sequences=1, **settings)


def up_to_end(rows: Iterable[Iterable[int]], end_ids: Collection[int]) -> list[list[int]]:
    """Each row cut after its first end token (kept: a line's end token may hold text of the line)."""
    cut = []
    for row in rows:
        tokens = []
        for token in row:
            tokens.append(token)
            if token in end_ids:
                break
        cut.append(tokens)
    return cut


def beam_search(
    step: Step,
    start: torch.Tensor,
    end_ids: Collection[int],
    beam_size: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """The best continuation of each row of `start`, ending with one of `end_ids` (kept) or cut at `max_new_tokens`.

    `step` is called once per generated token (see `Step`); the rows of source b are
    b*beam_size … b*beam_size+beam_size-1. Hypotheses are ranked by summed log-probability /
    length ** length_penalty, and a source is done once it has `beam_size` finished hypotheses that
    its best live beam no longer beats (as in Hugging Face's beam search without early stopping).
    """
    batch, k = start.size(0), beam_size
    generated = start.new_empty((batch * k, 0))
    # Only the first beam is alive at the start, so the first step does not pick k copies.
    beam_scores = torch.full((batch, k), -float("inf"), device=start.device)
    beam_scores[:, 0] = 0.0
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    end_ids = set(end_ids)

    log_probs = step(start.repeat_interleave(k, dim=0), None)
    for length in range(1, max_new_tokens + 1):
        log_probs = log_probs.float()
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
        newest = start.new_tensor(tokens).view(-1, 1)
        generated = torch.cat([generated[rows], newest], dim=1)
        beam_scores = beam_scores.new_tensor(scores).view(batch, k)
        if length == max_new_tokens or all(_done(finished[b], beam_scores[b], length, k, length_penalty)
                                           for b in range(batch)):
            break
        log_probs = step(newest, start.new_tensor(rows))

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
