"""Beam search on hand-made next-token tables whose best sequences are known; the new decoder's
incremental steps against its full forward."""

import torch

from telly.tasks.decoding import beam_search

END = 0


def table_step(table):
    """A step function from {prefix tuple (after start): {token: probability}} (missing → END). It
    keeps the prefixes itself, reordered by `beams` as a decoder's keys and values are."""
    vocab = 1 + max(token for row in table.values() for token in row)
    prefix = None

    def step(tokens, beams):
        nonlocal prefix
        prefix = tokens if beams is None else torch.cat([prefix[beams], tokens], dim=1)
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


def test_the_new_decoders_incremental_steps_give_its_full_forward_and_the_same_beams():
    """Keys and values kept between steps (reordered with the beams) give what running the whole prefix
    through nn.TransformerDecoder gives, and beam search finds the same sequences both ways."""
    from transformers import BertConfig, BertModel

    from telly.tasks.seq2seq import EncoderWithNewDecoder, IncrementalDecoding

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=64))
    model = EncoderWithNewDecoder(encoder, num_layers=2, start_id=1, end_id=2).eval()
    source_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    k = 3
    with torch.no_grad():
        memory = model.encode(torch.randint(3, 50, (2, 7)), source_mask).repeat_interleave(k, dim=0)
        memory_mask = source_mask.repeat_interleave(k, dim=0)

        def full_forward_step():
            prefix = None

            def step(tokens, beams):
                nonlocal prefix
                prefix = tokens if beams is None else torch.cat([prefix[beams], tokens], dim=1)
                return model.logits(memory, memory_mask, prefix)[:, -1].log_softmax(-1)

            return step

        full, incremental = full_forward_step(), IncrementalDecoding(model, memory, memory_mask)
        tokens, beams = torch.full((2 * k, 1), 1), None
        for _ in range(5):
            assert torch.allclose(incremental(tokens, beams), full(tokens, beams), atol=1e-5)
            beams = torch.cat([torch.randint(0, k, (k,)), torch.randint(k, 2 * k, (k,))])  # within each source
            tokens = torch.randint(3, 50, (2 * k, 1))
        start = torch.full((2, 1), 1)
        assert beam_search(IncrementalDecoding(model, memory, memory_mask), start, {2}, k, 10) == \
            beam_search(full_forward_step(), start, {2}, k, 10)
