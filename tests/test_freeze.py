"""freeze(model, k) on tiny random models of every supported family, checked by parameter names."""

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig, BertForMaskedLM, BertModel, GemmaConfig, GemmaModel, GPT2Config, GPT2Model, LlamaConfig,
    LlamaForCausalLM, MistralConfig, MistralModel, MPNetConfig, MPNetModel, Qwen2Config, Qwen2Model, RobertaConfig,
    RobertaModel, Starcoder2Config, Starcoder2Model, T5Config, T5EncoderModel, T5Model,
)

from telly import UserError, find_backbone, freeze, param_report

LAYERS = 3


def tiny_models():
    bert = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=32)
    roberta = RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=32)
    t5 = T5Config(vocab_size=100, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=LAYERS, num_decoder_layers=2)
    gpt2 = GPT2Config(vocab_size=100, n_embd=16, n_layer=LAYERS, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    mpnet = MPNetConfig(vocab_size=100, hidden_size=16, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=32)
    decoder = dict(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
                   num_key_value_heads=1, tie_word_embeddings=False)
    # (model, name prefixes of the embeddings, prefix of block i)
    return {
        "bert": (BertModel(bert), ["embeddings."], "encoder.layer.{}."),
        "bert-mlm": (BertForMaskedLM(bert), ["bert.embeddings."], "bert.encoder.layer.{}."),
        "roberta": (RobertaModel(roberta), ["embeddings."], "encoder.layer.{}."),
        "t5-encoder": (T5EncoderModel(t5), ["shared.", "encoder.embed_tokens."], "encoder.block.{}."),
        "t5": (T5Model(t5), ["shared.", "encoder.embed_tokens.", "decoder.embed_tokens."], "encoder.block.{}."),
        "gpt2": (GPT2Model(gpt2), ["wte.", "wpe."], "h.{}."),
        # The relative position bias table the frozen blocks read freezes with the embeddings.
        "mpnet": (MPNetModel(mpnet), ["embeddings.", "encoder.relative_attention_bias."], "encoder.layer.{}."),
        "llama-lm": (LlamaForCausalLM(LlamaConfig(**decoder)), ["model.embed_tokens."], "model.layers.{}."),
        "qwen2": (Qwen2Model(Qwen2Config(**decoder)), ["embed_tokens."], "layers.{}."),
        "mistral": (MistralModel(MistralConfig(**decoder)), ["embed_tokens."], "layers.{}."),
        "starcoder2": (Starcoder2Model(Starcoder2Config(**decoder)), ["embed_tokens."], "layers.{}."),
        "gemma": (GemmaModel(GemmaConfig(**decoder, head_dim=8)), ["embed_tokens."], "layers.{}."),
    }


def expected_trainable(model: nn.Module, embedding_prefixes, block_prefix: str, k: int) -> int:
    """Independent count: walk parameter names (tied weights once) and drop the frozen prefixes."""
    frozen_prefixes = [] if k < 0 else [*embedding_prefixes, *(block_prefix.format(i) for i in range(k))]
    seen, count = set(), 0
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if not any(name.startswith(prefix) for prefix in frozen_prefixes):
            count += parameter.numel()
    return count


@pytest.mark.parametrize("family", list(tiny_models()))
@pytest.mark.parametrize("k", [-1, 0, 1, LAYERS - 1])
def test_trainable_count_matches_an_independent_count(family, k):
    torch.manual_seed(0)
    model, embedding_prefixes, block_prefix = tiny_models()[family]
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    report = freeze(model, k)
    expected = expected_trainable(model, embedding_prefixes, block_prefix, k)
    assert report.trainable == expected
    assert report.total == total
    assert report.frozen == total - expected
    assert report.percent_trainable == pytest.approx(100 * expected / total)
    assert param_report(model) == report


def test_k_minus_one_trains_everything_and_refreezing_is_not_cumulative():
    model, *_ = tiny_models()["bert"]
    freeze(model, LAYERS - 1)
    assert freeze(model, -1).frozen == 0
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_blocks_are_the_bottom_ones():
    model, *_ = tiny_models()["roberta"]
    freeze(model, 2)
    blocks = find_backbone(model).blocks
    assert [all(not p.requires_grad for p in b.parameters()) for b in blocks] == [True, True, False]
    assert all(p.requires_grad for p in model.pooler.parameters())


@pytest.mark.parametrize("k", [-2, LAYERS, 12])
def test_k_out_of_range_names_the_valid_range(k):
    model, *_ = tiny_models()["bert"]
    with pytest.raises(UserError, match=rf"K={k} is out of range .* -1 .* up to {LAYERS - 1}"):
        freeze(model, k)


def test_unknown_architecture_is_a_clear_error():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    with pytest.raises(UserError, match="unsupported architecture Sequential"):
        freeze(model, 0)


def test_report_text():
    model, *_ = tiny_models()["gpt2"]
    report = freeze(model, 0)
    assert str(report).startswith(f"parameters: {report.total:,} total, {report.trainable:,} trainable")


def test_frozen_modules_stay_in_eval_mode_through_train_and_thaw_when_unfrozen(tiny_bert_dir):
    """Frozen = no gradients and inference mode: the frozen part's dropout is off while the rest trains."""
    model = BertModel.from_pretrained(tiny_bert_dir)
    backbone = find_backbone(model)
    freeze(model, 2)
    model.train()
    assert not backbone.embeddings[0].training and not backbone.embeddings[0].dropout.training
    assert [block.training for block in backbone.blocks] == [False, False, True, True]
    assert model.training and backbone.blocks[2].attention.self.dropout.training
    frozen_input = torch.tensor([[101, 2023, 2003, 102]])
    first = backbone.blocks[0](backbone.embeddings[0](frozen_input))[0]
    again = backbone.blocks[0](backbone.embeddings[0](frozen_input))[0]
    assert torch.equal(first, again)  # no dropout: the same output twice, as its cache would store
    freeze(model, -1)
    model.train()
    assert all(module.training for module in model.modules())


@pytest.mark.parametrize("family", list(tiny_models()))
def test_every_family_has_its_lora_targets(family):
    model, *_ = tiny_models()[family]
    targets = find_backbone(model).layout.lora_targets
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert targets and set(targets) <= names


def test_an_encoder_with_embed_tokens_and_layers_is_not_taken_for_a_llama_decoder():
    """BART's encoder has `embed_tokens` and `layers` too, but no rotary embedding."""
    from transformers import BartConfig, BartModel

    bart = BartModel(BartConfig(vocab_size=100, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                                decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32))
    with pytest.raises(UserError, match="unsupported architecture BartModel"):
        find_backbone(bart)
