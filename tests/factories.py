"""Test model factories: a tiny random Llama that vLLM and transformers load.

Knows how to build and cache a small, deterministic Hugging Face model folder
(tokenizer with a chat template, config, fp32 weights); knows nothing of what
the tests do with it. Its output is gibberish by design: tests check mechanics.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

#: Bump when the build below changes in a way the hashed inputs do not show.
FACTORY_VERSION = 1

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA_PARAMS = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}

_PARAGRAPHS = [
    "Retrieval augmented generation answers a question in two steps. First it "
    "finds the passages of a document collection that are closest to the "
    "question, then it asks a language model to answer from those passages.",
    "An embedding model turns each sentence into a vector. Sentences with a "
    "similar meaning end up close to each other, so a nearest neighbour search "
    "over the vectors finds related text quickly.",
    "A reranker reads the question together with each candidate passage and "
    "scores how well the passage answers it. It is slower than the first "
    "search, so it only looks at the top few dozen candidates.",
    "The serving graph streams tokens to the client as soon as they are "
    "produced. The time to the first token matters most for a chat interface, "
    "while throughput matters most for batch jobs.",
    "Continuous batching lets the engine add new requests to a running batch "
    "at every step instead of waiting for the whole batch to finish. The key "
    "value cache holds the attention state of every running sequence.",
    "Operators read traces to learn where a request waited: in the router "
    "queue, in a batch window, or in the engine scheduler. Each hop opens a "
    "child span under the trace of the incoming request.",
    "The weather was mild that spring, and the river ran high with melted "
    "snow. Farmers walked their fields in the early morning, counting the rows "
    "of young wheat and listening to the birds in the hedges.",
    "She opened the old notebook and found a list of cities written in faded "
    "ink: Lisbon, Vienna, Kyoto, Montreal, Nairobi. Next to each name was a "
    "date and a short note about the people she had met there.",
    "A good recipe for bread needs only flour, water, salt and yeast. The "
    "dough rests for several hours, is folded a few times, and bakes in a very "
    "hot oven until the crust turns deep brown.",
    "Mathematics describes patterns: numbers, shapes, change and chance. A "
    "proof shows that a statement follows from simpler ones, step by step, "
    "without any gap in the argument.",
]


def _corpus() -> list[str]:
    """English training text: fixed paragraphs plus standard-library docstrings.

    The docstrings widen the vocabulary towards 4k merges; they are part of
    the content hash, so a different Python version builds its own folder.
    """
    import argparse
    import asyncio
    import collections
    import functools
    import itertools
    import json as json_module
    import logging
    import pathlib
    import subprocess
    import textwrap
    import threading
    import unittest

    texts = list(_PARAGRAPHS)
    for module in (
        argparse,
        asyncio,
        collections,
        functools,
        itertools,
        json_module,
        logging,
        pathlib,
        subprocess,
        textwrap,
        threading,
        unittest,
    ):
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            doc = inspect.getdoc(getattr(module, name, None))
            if doc:
                texts.append(doc)
    return texts


def _content_hash(corpus: list[str], vocab_size: int, seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "version": FACTORY_VERSION,
                "llama": LLAMA_PARAMS,
                "special": SPECIAL_TOKENS,
                "template": CHAT_TEMPLATE,
                "vocab_size": vocab_size,
                "seed": seed,
            },
            sort_keys=True,
        ).encode()
    )
    for text in corpus:
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def build_tiny_llama(out_dir: Path, vocab_size: int = 4096, seed: int = 0) -> Path:
    """Build (or reuse) a tiny random-weight Llama chat model folder.

    The folder is named by a hash of everything that goes into it, so a cached
    copy is reused only when it would be rebuilt identically. The build writes
    into a temporary sibling and renames it, so an interrupted build leaves no
    half-written folder behind.

    Args:
        out_dir: cache directory; the model lands in a subfolder of it.
        vocab_size: target size of the byte-level BPE vocabulary.
        seed: seed for the weight initialisation.

    Returns:
        The model folder: fp32 safetensors weights, `config.json`, a fast
        tokenizer with bos/eos/pad tokens and a ChatML-like chat template.
    """
    corpus = _corpus()
    target = Path(out_dir) / f"tiny-llama-{_content_hash(corpus, vocab_size, seed)}"
    if (target / "config.json").is_file():
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)
        _build_into(tmp, corpus, vocab_size, seed)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent winner
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_into(folder: Path, corpus: list[str], vocab_size: int, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **LLAMA_PARAMS,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(folder)
