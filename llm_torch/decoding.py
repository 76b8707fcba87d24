"""Constrained decoding with transformers: the grammar as a ``LogitsProcessor``, and exact scoring.

:class:`SymmetryLogitsProcessor` masks, at every generation step, all tokens whose text would
leave the output language of :class:`llm_torch.constraints.OutputGrammar` (infeasible space
groups, letters the group lacks or that cannot complete the counts, anything off-format), so
every finished sequence parses into a valid record. It works with greedy search, sampling and
beam search, and with any tokenizer whose tokens decode independently (byte-level BPE: the
trained tokenizer, GLM-4's).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from .constraints import OutputGrammar, TokenTrie

__all__ = ["SymmetryLogitsProcessor", "encode", "prefilled_cache", "sequence_logprobs"]


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without added special tokens (prompts and outputs are encoded apart)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class SymmetryLogitsProcessor(LogitsProcessor):
    """Grammar-constrained decoding.

    ``grammars``: one :class:`OutputGrammar` per batch item (rows of ``input_ids`` are batch
    items expanded by ``num_beams`` / ``num_return_sequences``, consecutively, as transformers
    does). ``prompt_length``: the length of ``input_ids`` handed to ``generate`` (tokens after it
    are the generated ones). ``prefixes``: output text already contained at the end of each
    item's input (e.g. the space-group and positions lines), fed to the grammar first.
    """

    def __init__(
        self,
        tokenizer,
        grammars: Sequence[OutputGrammar],
        prompt_length: int,
        prefixes: Sequence[str] | None = None,
        trie: TokenTrie | None = None,
    ):
        self.grammars = list(grammars)
        self.prompt_length = int(prompt_length)
        self.trie = trie or TokenTrie.from_tokenizer(tokenizer)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.starts = []
        for i, grammar in enumerate(self.grammars):
            prefix = prefixes[i] if prefixes else ""
            start = grammar.consume(prefix)
            if start is None:
                raise ValueError(f"output prefix is not in the grammar: {prefix!r}")
            self.starts.append(start)
        self._states: dict = {}
        self.dead_ends = 0  # rows where nothing was allowed (should stay 0)

    def _state(self, item: int, generated: tuple[int, ...]):
        key = (item, generated)
        if key in self._states:
            return self._states[key]
        if not generated:
            result = self.starts[item]
        else:
            parent = self._state(item, generated[:-1])
            text = self.trie.texts.get(generated[-1])
            result = None if parent is None or text is None else self.grammars[item].feed(*parent, text)
        self._states[key] = result
        return result

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = input_ids.shape[0]
        per_item = max(rows // len(self.grammars), 1)
        mask = torch.full_like(scores, float("-inf"))
        ids = input_ids[:, self.prompt_length :].tolist()
        new_states = {}
        for row in range(rows):
            item = min(row // per_item, len(self.grammars) - 1)
            generated = tuple(ids[row])
            if self.eos in generated:  # finished (sampling/greedy keep padding finished rows)
                mask[row, self.pad] = 0.0
                mask[row, self.eos] = 0.0
                continue
            state = self._state(item, generated)
            new_states[(item, generated)] = state
            allowed = [] if state is None else self.grammars[item].allowed_tokens(*state, self.trie)
            if not allowed:
                self.dead_ends += 1
                allowed = [self.eos]
            mask[row, allowed] = 0.0
        self._states = new_states  # keep only the current step (parents of the next one)
        return scores + mask


def _cache_keyword(model) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (older), as the model's forward names it."""

    forward = getattr(model, "get_base_model", lambda: model)().forward
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def prefilled_cache(model, input_ids: torch.LongTensor, attention_mask: torch.LongTensor, copies: int):
    """The key/value cache of all but the last token of each (left-padded) row, computed once per row and
    then repeated ``copies`` times (row-major, as ``generate`` expands items into beams or samples).

    ``generate(input_ids, attention_mask, **{keyword: cache})`` then runs only the last token: beam search
    with 4 beams no longer prefills four identical copies of every prompt. Positions follow the mask, as
    ``generate`` computes them. Returns ``(keyword, cache)``, or None where the model has no repeatable
    cache (``generate`` then prefills as usual).
    """
    if input_ids.shape[1] < 2:
        return None
    keyword = _cache_keyword(model)
    mask = attention_mask[:, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    try:
        out = model(input_ids=input_ids[:, :-1], attention_mask=mask, position_ids=positions, use_cache=True)
    except (TypeError, ValueError):  # pragma: no cover - models without these arguments
        return None
    cache = getattr(out, keyword, None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    if copies > 1:
        cache.batch_repeat_interleave(copies)
    return keyword, cache


@torch.no_grad()
def sequence_logprobs(
    model, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]], *, batch_size: int = 64
) -> list[float]:
    """``log p(continuation | prompt)`` summed over tokens, for each continuation.

    The prompt is run once; its key/value cache is repeated over each batch of continuations
    (right-padded). Falls back to full forward passes for models without a cache API.
    """
    device = next(model.parameters()).device
    out: list[float] = [0.0] * len(continuations)
    order = [i for i in range(len(continuations)) if len(continuations[i])]
    if not order:
        return out
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    pad = 0
    cache_kw = _cache_keyword(model)
    try:
        first = model(input_ids=prompt, use_cache=True)
        cache = (
            getattr(first, "cache", None) if cache_kw == "cache" else getattr(first, "past_key_values", None)
        )
        last_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        use_cache = cache is not None and hasattr(cache, "batch_repeat_interleave")
    except (TypeError, ValueError):  # pragma: no cover - exotic models
        use_cache = False
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        length = max(len(continuations[i]) for i in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long, device=device)
        valid = torch.zeros((len(chunk), length), dtype=torch.long, device=device)
        for j, i in enumerate(chunk):
            seq = torch.tensor(list(continuations[i]), dtype=torch.long, device=device)
            ids[j, : len(seq)] = seq
            valid[j, : len(seq)] = 1
        if use_cache:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(chunk))
            attention = torch.cat(
                [torch.ones((len(chunk), prompt.shape[1]), dtype=torch.long, device=device), valid], 1
            )
            logits = model(
                input_ids=ids, attention_mask=attention, use_cache=True, **{cache_kw: batch_cache}
            ).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            first_lp = last_logp[ids[:, 0]]
            rest = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] if length > 1 else ids[:, :0].float()
        else:
            full = torch.cat([prompt.expand(len(chunk), -1), ids], 1)
            attention = torch.cat([torch.ones_like(prompt).expand(len(chunk), -1), valid], 1)
            logits = model(input_ids=full, attention_mask=attention).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            p = prompt.shape[1]
            first_lp = logp[:, p - 1].gather(-1, ids[:, :1])[:, 0]
            rest = logp[:, p:-1].gather(-1, ids[:, 1:, None])[..., 0] if length > 1 else ids[:, :0].float()
        total = first_lp + (rest * valid[:, 1:]).sum(1)
        for j, i in enumerate(chunk):
            out[i] = float(total[j])
    return out
