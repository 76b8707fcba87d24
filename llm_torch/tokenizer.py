r"""Byte-level BPE tokenizer for the from-scratch model, trained on the instruction corpus.

Trained with the ``tokenizers`` library. Pre-tokenisation splits the text into newlines and
space-prefixed words (``\n``, `` ?\S+``, runs of other white space), then maps bytes to the byte-level
alphabet; merges happen only inside a word. Every line boundary of the output format is thus a
token boundary, and the output compresses well: with 3,072 tokens an MP-20 answer is ~42
tokens and a prompt ~125 (GPT-2's letter/digit/punctuation split gives ~151 and ~172, its
merges saturating below 2,048 tokens). Saved as ``tokenizer.json`` (+ the transformers config
files) and loaded as a ``PreTrainedTokenizerFast``. Special tokens: ``<|pad|>`` (id 0)
and ``<|endoftext|>`` (id 1, end of an answer).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .prompts import prompt_text

__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "corpus_texts",
    "load_tokenizer",
    "train_tokenizer",
]

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 3072
#: Pre-tokens: a newline, a word with its leading space, or a run of spaces.
PRE_TOKEN_PATTERN = r"\n| ?[^\s]+|[^\S\n]+"


def corpus_texts(examples: Iterable[dict]) -> Iterable[str]:
    """The texts a tokenizer is trained on: each example's prompt (plain template) and output."""

    for example in examples:
        yield prompt_text(example, style="plain")
        yield example["output"]


def _wrap(tok, model_max_length: int = 4096):
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    min_frequency: int = 2,
    out_dir: str | Path | None = None,
):
    """Train a byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast`` (saved to ``out_dir``)."""

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = _wrap(tok)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        wrapped.save_pretrained(str(out_dir))
    return wrapped


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """Load a tokenizer: a ``tokenizer.json`` file, a folder saved by :func:`train_tokenizer` or
    ``save_pretrained``, or a hub id (``AutoTokenizer``)."""
    path_obj = Path(path)
    if path_obj.is_file() and path_obj.suffix == ".json":
        return _wrap(Tokenizer.from_file(str(path_obj)))

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
