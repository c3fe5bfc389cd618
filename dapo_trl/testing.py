"""Tiny, fully offline model kit for tests, demos and notebooks.

Everything here is built locally from scratch (no Hugging Face Hub access): a character-level tokenizer with a minimal
chat template, and a randomly initialised, very small [`~transformers.Qwen2ForCausalLM`]. The saved folder can be
passed as a model id to TRL trainers, exactly like a Hub checkpoint.

Example:

```python
>>> from dapo_trl.testing import save_tiny_model
>>> model_id = save_tiny_model("tiny-qwen2")  # then e.g. GRPOTrainer(model=model_id, ...)
>>> from transformers import AutoModelForCausalLM
>>> AutoModelForCausalLM.from_pretrained(model_id).config.model_type
'qwen2'

```
"""

import os
import string

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode


__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_CHARS",
    "build_char_tokenizer",
    "build_tiny_model",
    "build_tiny_moe_model",
    "save_tiny_model",
]

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"

DEFAULT_CHARS = string.digits + "+-*/=#() .,:?\n" + string.ascii_lowercase + string.ascii_uppercase + "$"

# One line per message: "<first letter of role>:<content>", terminated by the EOS token for assistant turns and by a
# newline otherwise. The generation prompt is "a:" (assistant).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'][0] }}:{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'a:' }}{% endif %}"
)


def build_char_tokenizer(chars: str = DEFAULT_CHARS) -> PreTrainedTokenizerFast:
    """
    Build a character-level tokenizer: every (ASCII) character is one token, unknown characters map to `<unk>`.

    Special tokens are `<pad>` (id 0), `<eos>` (id 1, also closes assistant turns) and `<unk>` (id 2). No BOS/EOS is
    added automatically, padding is on the left (as TRL expects for prompts) and decoding round-trips text exactly.

    Tokens are stored in GPT-2 byte-level form (a space is `"Ġ"`, a newline `"Ċ"`) with a byte-level pre-tokenizer
    and decoder. This is what `transformers` rebuilds when `AutoTokenizer` reloads a folder whose `config.json` is a
    Qwen2 model (it always uses `Qwen2Tokenizer` there), so the saved tokenizer encodes and decodes identically. One
    difference remains: `Qwen2Tokenizer` has no BPE unk token, so the reloaded tokenizer drops unknown characters.

    Args:
        chars (`str`, *optional*, defaults to `DEFAULT_CHARS`):
            Characters of the vocabulary (digits, `+-*/=#() .,:?`, newline, ASCII letters and `$` by default).
            Non-ASCII characters are added as one token per UTF-8 byte.

    Example:

    ```python
    >>> tokenizer = build_char_tokenizer()
    >>> tokenizer("12+3")["input_ids"]
    [4, 5, 13, 6]
    >>> tokenizer.apply_chat_template([{"role": "user", "content": "1+1="}], add_generation_prompt=True, tokenize=False)
    'u:1+1=\\na:'

    ```
    """
    byte_to_char = bytes_to_unicode()
    vocab = {PAD_TOKEN: 0, EOS_TOKEN: 1, UNK_TOKEN: 2}
    for byte in chars.encode("utf-8"):
        vocab.setdefault(byte_to_char[byte], len(vocab))
    # Without merges, BPE yields exactly one token per byte-level character.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 256,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Qwen2ForCausalLM:
    """
    Build a randomly initialised, tiny [`~transformers.Qwen2ForCausalLM`] matching `tokenizer`.

    Weights are deterministic given `seed`; the global torch RNG state is left untouched. The generation config uses
    the tokenizer's pad/EOS ids, so `generate` stops at `<eos>`.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerFast`]):
            Tokenizer whose vocabulary size and special token ids define the model.
        hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings (`int`):
            Architecture sizes. `hidden_size` must be divisible by `num_heads`.
        seed (`int`, *optional*, defaults to `0`):
            Seed for the weight initialisation.
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`):
            Dtype of the parameters.

    Example:

    ```python
    >>> model = build_tiny_model(build_char_tokenizer())
    >>> sum(p.numel() for p in model.parameters())  # ~0.2M parameters
    170304

    ```
    """
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        **special_token_ids(tokenizer),
    )
    return instantiate(Qwen2ForCausalLM, config, tokenizer, seed, dtype)


def build_tiny_moe_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_experts: int = 4,
    num_experts_per_tok: int = 2,
    moe_intermediate_size: int = 32,
    router_aux_loss_coef: float = 0.01,
    max_position_embeddings: int = 256,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Qwen3MoeForCausalLM:
    """
    Build a randomly initialised, tiny Mixture-of-Experts [`~transformers.Qwen3MoeForCausalLM`] matching `tokenizer`,
    for the router (load-balancing) loss path of the trainers. Every layer is sparse; `router_aux_loss_coef` is the
    architecture's coefficient TRL reads (its `output_router_logits` stays off: the trainer asks for router logits).

    Example:

    ```python
    >>> model = build_tiny_moe_model(build_char_tokenizer())
    >>> model.config.num_experts, model.config.router_aux_loss_coef
    (4, 0.01)

    ```
    """
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=moe_intermediate_size,
        moe_intermediate_size=moe_intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        num_experts=num_experts,
        num_experts_per_tok=num_experts_per_tok,
        router_aux_loss_coef=router_aux_loss_coef,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        **special_token_ids(tokenizer),
    )
    return instantiate(Qwen3MoeForCausalLM, config, tokenizer, seed, dtype)


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The tokenizer's pad/EOS/BOS ids, as model and generation configs take them."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }


def instantiate(model_class, config, tokenizer: PreTrainedTokenizerFast, seed: int = 0, dtype=torch.float32):
    """
    `model_class(config)` with weights drawn from `seed` (the global torch RNG state is left untouched) and a
    generation config that stops at the tokenizer's EOS: how every tiny model here is made, any architecture.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).to(dtype)
    model.generation_config = GenerationConfig(**special_token_ids(tokenizer))
    return model


def save_tiny_model(output_dir: str | os.PathLike, moe: bool = False, **kwargs) -> str:
    """
    Build the char tokenizer and a tiny model, and save both to `output_dir` so they load offline with
    `AutoModelForCausalLM.from_pretrained(output_dir)` / `AutoTokenizer.from_pretrained(output_dir)`.

    Args:
        output_dir (`str` or `os.PathLike`):
            Destination folder (created if needed).
        moe (`bool`, *optional*, defaults to `False`):
            Build a Mixture-of-Experts model ([`build_tiny_moe_model`]) instead of the dense Qwen2.
        **kwargs:
            Forwarded to [`build_tiny_model`] or [`build_tiny_moe_model`] (e.g. `hidden_size`, `seed`). A `chars` key
            is forwarded to [`build_char_tokenizer`] instead.

    Returns:
        `str`: The path of the saved folder, usable as a model id.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> model_id = save_tiny_model("tiny")
    >>> model = AutoModelForCausalLM.from_pretrained(model_id)
    >>> model.config.vocab_size == len(AutoTokenizer.from_pretrained(model_id))
    True

    ```
    """
    chars = kwargs.pop("chars", DEFAULT_CHARS)
    tokenizer = build_char_tokenizer(chars)
    model = (build_tiny_moe_model if moe else build_tiny_model)(tokenizer, **kwargs)
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
