"""Task pieces that the end-to-end runs cannot pin down: line ends, targets, freezing reports."""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from telly import FinetuneConfig, UserError, freeze, param_report
from telly.config import MIN_SEQUENCE_LEN
from telly.tasks.complete import CompletionExample, CodeCompletionTask, context_from_input
from telly.tasks.seq2seq import EncoderWithNewDecoder, IGNORE_INDEX, Seq2SeqExample
from telly.tasks.summarize import CodeSummarizationTask, first_sentence


def make_task(task_class, tokenizer, **options):
    config = FinetuneConfig(task=task_class.name, data="unused", out="unused", **options)
    task = task_class(config)
    task.tokenizer = tokenizer
    return task


class ScriptedLM:
    """Stands in for a causal LM: whatever the prompt, it writes `script` token by token."""

    def __init__(self, script, vocab_size, prompt_width):
        self.script, self.vocab_size, self.prompt_width = script, vocab_size, prompt_width

    def __call__(self, input_ids, attention_mask):
        generated = input_ids.size(1) - self.prompt_width
        logits = torch.zeros(input_ids.size(0), input_ids.size(1), self.vocab_size)
        logits[:, -1, self.script[min(generated, len(self.script) - 1)]] = 10.0
        return logits


def test_completion_stops_at_the_end_of_the_line_with_a_newline_tokenizer(byte_level_tokenizer):
    task = make_task(CodeCompletionTask, byte_level_tokenizer, max_nl_len=20)
    task.start_ids = [byte_level_tokenizer.bos_token_id]
    task.line_end, task.end_ids = task._line_ends()
    script = byte_level_tokenizer("total = 1\nnever = 2\n", add_special_tokens=False)["input_ids"]
    contexts = ["def f(items):"]
    width = len(task._context_ids(contexts)[0])
    lm = ScriptedLM(script, len(byte_level_tokenizer), width)
    assert task.complete(lm, task.prompts(contexts)) == ["total = 1"]
    assert task.line_end == byte_level_tokenizer("\n", add_special_tokens=False)["input_ids"]


def test_completion_stops_at_sep_with_a_tokenizer_that_has_no_newline(tokenizer):
    task = make_task(CodeCompletionTask, tokenizer, max_nl_len=20)
    task.start_ids = [tokenizer.cls_token_id]
    task.line_end, task.end_ids = task._line_ends()
    assert task.line_end == [tokenizer.sep_token_id]
    script = tokenizer("return total", add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    script += tokenizer("junk after", add_special_tokens=False)["input_ids"]
    contexts = ["def f(items):"]
    lm = ScriptedLM(script, tokenizer.vocab_size, len(task._context_ids(contexts)[0]))
    assert task.complete(lm, task.prompts(contexts)) == ["return total"]


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

    from telly.tasks.complete import CausalLanguageModel

    config_class, model_class, pad = {"bert": (BertConfig, BertLMHeadModel, 0),
                                      "roberta": (RobertaConfig, RobertaForCausalLM, 1)}[family]
    torch.manual_seed(0)
    model = model_class(config_class(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=40, is_decoder=True,
                                     pad_token_id=pad)).eval()
    wrapper = CausalLanguageModel(model, has_new_parts=True)
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
    task.line_end, task.end_ids = task._line_ends()
    [row] = task.collate([CompletionExample("def f(items):\n    total = 0\n", "return total")])["labels"].tolist()
    # start, the context's last token, the line's first token, the line's end
    assert len(row) == MIN_SEQUENCE_LEN
    assert row[0] == task.start_ids[0] and row[-len(task.line_end):] == task.line_end


def test_a_target_at_the_shortest_length_keeps_text_between_start_and_end(tokenizer):
    task = make_task(CodeSummarizationTask, tokenizer, max_nl_len=MIN_SEQUENCE_LEN, decoder_layers=1)
    task.start_id, task.end_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    [row] = task._targets(["Return the total of the items."]).tolist()
    assert row == [tokenizer.cls_token_id, *tokenizer("return the", add_special_tokens=False)["input_ids"],
                   tokenizer.sep_token_id]
