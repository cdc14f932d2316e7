"""Task pieces that the end-to-end runs cannot pin down: line ends, targets, freezing reports."""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from telly import FinetuneConfig, UserError, freeze, param_report
from telly.config import MIN_SEQUENCE_LEN
from telly.tasks.causal import left_padded
from telly.tasks.complete import CodeCompletionTask, CompletionExample, context_from_input
from telly.tasks.seq2seq import EncoderWithNewDecoder, IGNORE_INDEX, Seq2SeqExample
from telly.tasks.summarize import CodeSummarizationTask, first_sentence


def make_task(task_class, tokenizer, **options):
    config = FinetuneConfig(task=task_class.name, data="unused", out="unused", **options)
    task = task_class(config)
    task.tokenizer = tokenizer
    return task


class ScriptedLM:
    """Stands in for a CausalLanguageModel: whatever the prompt, it writes `script` until a token of
    `end_ids` (kept), as `generate` stops."""

    def __init__(self, script):
        self.script = script

    def generate(self, prompts, end_ids, beam_size, max_new_tokens, stop):
        self.stop, prompt = stop, prompts["input_ids"]
        written = []
        for token in self.script[:max_new_tokens]:
            written.append(token)
            if token in end_ids or stop(torch.cat([prompt, prompt.new_tensor([written])], dim=1), None).all():
                break
        return [written for _ in prompt]


def completion_task(tokenizer, start_id):
    task = make_task(CodeCompletionTask, tokenizer, max_nl_len=20)
    task.start_ids = [start_id]
    task.line_end = task._line_end()
    task.end_ids = {tokenizer.eos_token_id, tokenizer.sep_token_id} - {None}
    return task


def test_completion_stops_at_the_end_of_the_line_with_a_newline_tokenizer(byte_level_tokenizer):
    """The newline and indentation that start the line are written first; the next newline ends it."""
    task = completion_task(byte_level_tokenizer, byte_level_tokenizer.bos_token_id)
    first_line, rest = "\n    total = 1\n", "never = 2\n"
    script = byte_level_tokenizer(first_line + rest, add_special_tokens=False)["input_ids"]
    line_tokens = len(byte_level_tokenizer(first_line, add_special_tokens=False)["input_ids"])
    assert script[:line_tokens] == byte_level_tokenizer(first_line, add_special_tokens=False)["input_ids"]
    model = ScriptedLM(script)
    prompts = left_padded(task._context_ids(["def f(items):\n"]))
    assert task.complete(model, prompts) == ["total = 1"]
    prompt = prompts["input_ids"][0].tolist()
    ended = [bool(model.stop(torch.tensor([prompt + script[:written]]), None)) for written in range(1, len(script) + 1)]
    assert ended == [written >= line_tokens for written in range(1, len(script) + 1)]  # at the line's end, not before
    assert task.line_end == byte_level_tokenizer("\n", add_special_tokens=False)["input_ids"]


def test_a_completion_prompt_ends_where_the_code_ends_and_the_target_starts_the_next_line(byte_level_tokenizer):
    """A byte-level BPE merges a newline with the next line's indentation: the model writes both."""
    task = completion_task(byte_level_tokenizer, byte_level_tokenizer.bos_token_id)
    from telly.tasks.complete import CompletionExample

    batch = task.collate([CompletionExample("def f(items):\n", "return items")])
    ids = batch["input_ids"][0].tolist()
    prompt = [byte_level_tokenizer.bos_token_id] + byte_level_tokenizer("def f(items):")["input_ids"]
    target = byte_level_tokenizer("\nreturn items")["input_ids"] + byte_level_tokenizer("\n")["input_ids"]
    assert ids == prompt + target
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * len(prompt) + target


def test_completion_stops_at_sep_with_a_tokenizer_that_has_no_newline(tokenizer):
    task = completion_task(tokenizer, tokenizer.cls_token_id)
    assert task.line_end == [tokenizer.sep_token_id]
    script = tokenizer("return total", add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    script += tokenizer("junk after", add_special_tokens=False)["input_ids"]
    prompts = left_padded(task._context_ids(["def f(items):"]))
    assert task.complete(ScriptedLM(script), prompts) == ["return total"]


def test_codexglue_input_becomes_code():
    assert context_from_input("<s> def f(x): <EOL>     y = x <EOL>") == "def f(x):\n    y = x\n"


def test_summary_target_is_the_first_sentence():
    assert first_sentence(["Return", "x", ".", "More", "."]) == ["Return", "x", "."]
    assert first_sentence(["no", "stop"]) == ["no", "stop"]


def tiny_bert(tokenizer, layers=2):
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    return BertModel(config)


def test_targets_are_framed_and_padding_is_not_scored(tokenizer):
    task = make_task(CodeSummarizationTask, tokenizer, max_nl_len=6, decoder_layers=1)
    model = task.build_model(tiny_bert(tokenizer))
    batch = task.collate([Seq2SeqExample("def f(): pass", "get the value"), Seq2SeqExample("x", "a b c d e f g h")])
    words = tokenizer("get the value", add_special_tokens=False)["input_ids"]
    assert batch["target_ids"][0].tolist() == [tokenizer.cls_token_id, *words, tokenizer.sep_token_id, IGNORE_INDEX]
    assert batch["target_ids"].size(1) == 6  # the long target is cut to max_nl_len, end token kept
    assert batch["target_ids"][1, -1] == tokenizer.sep_token_id

    # The loss equals a cross-entropy over real target positions only, computed by hand.
    model.eval()
    loss = task.loss(model, batch)
    memory = model.encode(batch["source_ids"], batch["source_mask"])
    logits = model.logits(memory, batch["source_mask"], batch["target_ids"][:, :-1].clamp(min=0))
    real = batch["target_ids"][:, 1:] != IGNORE_INDEX
    expected = F.cross_entropy(logits[real], batch["target_ids"][:, 1:][real])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_new_decoder_report_and_tied_head_freeze_with_the_embeddings(tokenizer):
    encoder = tiny_bert(tokenizer)
    model = EncoderWithNewDecoder(encoder, num_layers=2, start_id=101, end_id=102)
    freeze(model, 1)
    report = param_report(model, model.components())
    decoder_params = sum(p.numel() for p in model.decoder.parameters())
    encoder_params = sum(p.numel() for p in encoder.parameters())
    dense_params = sum(p.numel() for p in model.dense.parameters())
    assert report.components["decoder"] == (decoder_params, decoder_params)
    assert report.components["encoder"][0] == encoder_params
    assert report.components["head"] == (dense_params, dense_params)  # lm_head is the embedding matrix
    assert report.total == encoder_params + decoder_params + dense_params
    assert model.lm_head.weight is encoder.embeddings.word_embeddings.weight
    assert not model.lm_head.weight.requires_grad


def test_freeze_decoder_on_t5_and_refusal_on_a_new_decoder(tokenizer):
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=200, d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                             num_layers=3, num_decoder_layers=2))
    freeze(t5, -1, freeze_decoder=True)
    assert not any(p.requires_grad for p in t5.decoder.parameters())
    assert all(p.requires_grad for p in t5.encoder.block.parameters())
    with pytest.raises(UserError, match="no pre-trained decoder"):
        freeze(EncoderWithNewDecoder(tiny_bert(tokenizer), 1, 101, 102), 0, freeze_decoder=True)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_encoder_as_causal_lm_keeps_its_positions_and_ignores_left_padding(family):
    from transformers import BertLMHeadModel, RobertaConfig, RobertaForCausalLM

    from telly.tasks.causal import CausalLanguageModel

    config_class, model_class, pad = {"bert": (BertConfig, BertLMHeadModel, 0),
                                      "roberta": (RobertaConfig, RobertaForCausalLM, 1)}[family]
    torch.manual_seed(0)
    model = model_class(config_class(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=40, is_decoder=True,
                                     pad_token_id=pad)).eval()
    wrapper = CausalLanguageModel(model)
    assert wrapper.has_new_parts  # an encoder's LM head is not in a sentence-embedding checkpoint
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        ours = wrapper(ids, torch.ones_like(ids))
        # The model's own position numbering (RoBERTa starts after its padding index).
        assert torch.allclose(model(input_ids=ids).logits, ours, atol=1e-5)
        padded = torch.tensor([[pad, pad, 5, 6, 7, 8]])
        assert torch.allclose(wrapper(padded, torch.tensor([[0, 0, 1, 1, 1, 1]]))[:, 2:], ours, atol=1e-5)
        # Causal: a later token does not change earlier predictions.
        changed = wrapper(torch.tensor([[5, 6, 7, 9]]), torch.ones_like(ids))
        assert torch.allclose(changed[:, :3], ours[:, :3], atol=1e-6)
        assert not torch.allclose(changed[:, 3], ours[:, 3])


@pytest.mark.parametrize("which", ["word_piece", "byte_level"])
def test_completion_at_the_shortest_length_keeps_context_and_line(which, tokenizer, byte_level_tokenizer):
    chosen = {"word_piece": tokenizer, "byte_level": byte_level_tokenizer}[which]
    task = make_task(CodeCompletionTask, chosen, max_code_len=MIN_SEQUENCE_LEN, max_nl_len=MIN_SEQUENCE_LEN)
    task.start_ids = [chosen.bos_token_id if chosen.bos_token_id is not None else chosen.cls_token_id]
    task.line_end = task._line_end()
    batch = task.collate([CompletionExample("def f(items):\n    total = 0\n", "return total")])
    [row] = batch["input_ids"].tolist()
    context = chosen("def f(items):\n    total = 0", add_special_tokens=False)["input_ids"]
    line = chosen("\nreturn total", add_special_tokens=False)["input_ids"]
    # start, the context's last token, the line's first token, the line's end
    assert row == [task.start_ids[0], context[-1], line[0], *task.line_end]
    assert batch["labels"][0].tolist()[-2:] == [line[0], *task.line_end]


def test_a_target_at_the_shortest_length_keeps_text_between_start_and_end(tokenizer):
    task = make_task(CodeSummarizationTask, tokenizer, max_nl_len=MIN_SEQUENCE_LEN, decoder_layers=1)
    task.prompted, task.start_id, task.end_id = False, tokenizer.cls_token_id, tokenizer.sep_token_id
    [row] = task.collate([Seq2SeqExample("def total(items): pass", "Return the total of the items.")])["target_ids"].tolist()
    assert row == [tokenizer.cls_token_id, *tokenizer("return the", add_special_tokens=False)["input_ids"],
                   tokenizer.sep_token_id]


@pytest.mark.parametrize("family", ["gpt2", "llama", "roberta"])
def test_generate_from_left_padded_prompts_is_greedy_decoding_of_each_prompt_alone(family):
    """transformers' generate with its key/value cache, a batch of left-padded prompts and positions
    that count real tokens only (RoBERTa's from its padding index) gives, prompt by prompt, what
    arg-maxing the full forward of the unpadded prompt token by token gives."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, RobertaConfig, RobertaForCausalLM

    from telly.tasks.causal import CausalLanguageModel

    torch.manual_seed(0)
    model = {
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=60, n_embd=16, n_layer=2, n_head=2, n_positions=64)),
        "llama": lambda: LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=16, intermediate_size=32,
                                                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                                      max_position_embeddings=64, pad_token_id=0)),
        "roberta": lambda: RobertaForCausalLM(RobertaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2,
                                                            num_attention_heads=2, intermediate_size=32,
                                                            max_position_embeddings=64, is_decoder=True, pad_token_id=1)),
    }[family]().eval()
    lm, end, prompts = CausalLanguageModel(model), 59, [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    with torch.no_grad():
        generated = lm.generate(left_padded(prompts), {end}, beam_size=1, max_new_tokens=6)
        for prompt, row in zip(prompts, generated):
            ids, expected = torch.tensor([prompt]), []
            while len(expected) < 6 and end not in expected:
                expected.append(int(lm(ids, torch.ones_like(ids))[0, -1].argmax()))
                ids = torch.cat([ids, torch.tensor([expected[-1:]])], dim=1)
            assert row == expected


def test_decoder_summarization_scores_the_summary_only_and_ends_with_eos(byte_level_tokenizer):
    """A decoder-only model reads code + separator and writes the summary + EOS; only those are labelled."""
    from transformers import LlamaConfig, LlamaForCausalLM

    task = make_task(CodeSummarizationTask, byte_level_tokenizer, max_code_len=32, max_nl_len=8)
    torch.manual_seed(0)
    model = task.build_model(LlamaForCausalLM(LlamaConfig(
        vocab_size=len(byte_level_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)))
    batch = task.collate([Seq2SeqExample("def f(): return 1", "Return one."), Seq2SeqExample("x = 2", "Set x.")])
    code = byte_level_tokenizer("def f(): return 1", add_special_tokens=False)["input_ids"]
    separator = byte_level_tokenizer("\nSummary:\n", add_special_tokens=False)["input_ids"]
    summary = byte_level_tokenizer("Return one.", add_special_tokens=False)["input_ids"]
    eos = byte_level_tokenizer.eos_token_id
    assert batch["input_ids"][0, : len(code) + len(separator) + len(summary) + 1].tolist() == code + separator + summary + [eos]
    labelled = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert labelled == summary + [eos]
    model.eval()
    logits = model(batch["input_ids"], batch["attention_mask"])
    real = batch["labels"][:, 1:] != IGNORE_INDEX
    expected = F.cross_entropy(logits[:, :-1][real], batch["labels"][:, 1:][real])
    assert task.loss(model, batch).item() == pytest.approx(expected.item(), rel=1e-6)
