"""Beam search on hand-made next-token tables whose best sequences are known."""

import torch

from telly.tasks.decoding import beam_search

END = 0


def table_step(table):
    """A step function from {prefix tuple (after start): {token: probability}} (missing → END)."""
    vocab = 1 + max(token for row in table.values() for token in row)

    def step(prefix):
        rows = []
        for sequence in prefix.tolist():
            probabilities = table.get(tuple(sequence[1:]), {END: 1.0})
            row = torch.full((vocab,), 1e-9)
            for token, probability in probabilities.items():
                row[token] = probability
            rows.append(row.log())
        return torch.stack(rows)

    return step


# Greedy takes 1 (0.6) then 1→END at 0.3 → 0.18 overall; beam finds 2 (0.4) then 2→END (0.9) → 0.36.
TABLE = {
    (): {1: 0.6, 2: 0.4},
    (1,): {END: 0.3, 3: 0.35, 4: 0.35},
    (2,): {END: 0.9, 3: 0.1},
}


def test_greedy_is_beam_one_and_misses_the_better_sequence():
    start = torch.full((1, 1), 9)
    greedy = beam_search(table_step(TABLE), start, {END}, beam_size=1, max_new_tokens=5, length_penalty=0.0)
    # Greedy: 1 (0.6), then the best next token is 3 or 4 (0.35 > 0.3), then END.
    assert greedy[0][:1] == [1] and greedy[0][-1] == END


def test_beam_finds_the_most_probable_sequence():
    start = torch.full((2, 1), 9)  # two sources decoded together
    best = beam_search(table_step(TABLE), start, {END}, beam_size=3, max_new_tokens=5, length_penalty=0.0)
    # Candidates: [2, END] 0.36; [1, 3, END] 0.21; [1, 4, END] 0.21; [1, END] 0.18.
    assert best == [[2, END], [2, END]]


def test_length_penalty_one_ranks_by_mean_log_probability():
    table = {(): {1: 0.5, 2: 0.5}, (1,): {END: 1.0}, (2,): {5: 1.0}, (2, 5): {END: 1.0}}
    start = torch.full((1, 1), 9)
    # Sum log-prob: [1, END] = [2, 5, END] = log 0.5; per token: log(0.5)/2 > log(0.5)/3.
    assert beam_search(table_step(table), start, {END}, 2, 5, length_penalty=1.0) == [[2, 5, END]]


def test_generation_is_cut_at_the_limit_when_no_end_comes():
    table = {(): {1: 1.0}, (1,): {1: 1.0}, (1, 1): {1: 1.0}, (1, 1, 1): {1: 1.0}}
    start = torch.full((1, 1), 9)
    assert beam_search(table_step(table), start, {END}, 2, max_new_tokens=3) == [[1, 1, 1]]
