"""Tiny models and tokenizers built locally, for tests, benchmarks and the demo.

Nothing here touches a hub: tokenizers are trained on the given text, models are
random-init from a config (the demo then trains one).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

SAMPLE_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is 2 plus 3? Answer: 5",
    "A transformer is a stack of layers that each paint on a shared canvas.",
    "Which option is correct? A, B, C or D.",
    "the cat sat on the mat and the dog sat on the log",
]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (deterministic for the same texts)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


# Small configs per architecture; `hidden` and `layers` are overridable.
def tiny_config(arch: str, vocab_size: int, hidden: int = 32, layers: int = 4, heads: int = 4):
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads)
    if arch == "llama":
        return transformers.LlamaConfig(
            **common, intermediate_size=2 * hidden, num_key_value_heads=heads // 2 or 1,
            max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    if arch == "mistral":
        return transformers.MistralConfig(
            **common, intermediate_size=2 * hidden, num_key_value_heads=heads // 2 or 1,
            max_position_embeddings=512, sliding_window=None, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    if arch == "qwen2":
        return transformers.Qwen2Config(
            **common, intermediate_size=2 * hidden, num_key_value_heads=heads // 2 or 1,
            max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(
            **common, intermediate_size=2 * hidden, max_position_embeddings=512,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    if arch == "bert":
        return transformers.BertConfig(
            **common, intermediate_size=2 * hidden, max_position_embeddings=512, pad_token_id=0,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; valid: llama, mistral, qwen2, gpt_neox, bert")


CAUSAL_ARCHS = ("llama", "mistral", "qwen2", "gpt_neox")


def tiny_model(arch: str, vocab_size: int = 512, seed: int = 0, **sizes) -> torch.nn.Module:
    """A random-init model of `arch` in float32 and eval mode (BERT: BertModel).

    `arch` beyond the ones above: any causal-LM family (model type) of transformers, from
    painters.families' tiny config with this vocabulary.
    """
    if arch in (*CAUSAL_ARCHS, "bert"):
        config = tiny_config(arch, vocab_size, **sizes)
    else:
        from painters import families

        config = families.tiny_config(arch, layers=sizes.get("layers", 4))
        config.get_text_config().vocab_size = vocab_size
    torch.manual_seed(seed)
    cls = transformers.BertModel if arch == "bert" else transformers.AutoModelForCausalLM
    model = cls(config) if arch == "bert" else cls.from_config(config)
    return model.float().eval()


def save_tiny_causal_lm(
    out_dir: str | Path, arch: str = "llama", seed: int = 0, texts: Iterable[str] = SAMPLE_TEXT, **sizes
) -> Path:
    """Save a random-init causal LM and a tokenizer trained on `texts` to `out_dir` (loadable offline)."""
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts)
    model = tiny_model(arch, vocab_size=len(tokenizer), seed=seed, **sizes)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
