"""A small causal language model for the SparseGPT recipe, built offline: a random-init LLaMA with a
character-level tokenizer (any text, no download). Replace it with ``hf:PATH`` for a real model.

Used as ``model: python:examples/tiny_lm.py:build`` (paths are relative to the working directory).
"""

import string

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEQ_LEN = 128


def character_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable character, unknown ones as <unk>."""
    vocab = {"<unk>": 0, **{ch: i + 1 for i, ch in enumerate(string.printable)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", model_max_length=SEQ_LEN)


def build() -> LlamaForCausalLM:
    tokenizer = character_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=SEQ_LEN,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.tokenizer = tokenizer
    return model


build.example_inputs = {"input_ids": torch.randint(1, 100, (1, 64))}
