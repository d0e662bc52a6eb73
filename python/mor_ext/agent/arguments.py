"""Constrained decoding of a whole executor turn to the tools' JSON schemas (``docs/spec.md`` §7).

:class:`CallGrammar` keeps an executor's turn inside the calls the agent's decoding writes — one
call ``{"name": "<tool>", "arguments": {...}}`` or a list of them ``[{...}, {...}]``, with
``json.dumps``'s separators, as the training data renders them — where every name is a tool offered
and its arguments form an object that the tool's parameter schema accepts: only the schema's
property names as keys, each at most once (in any order; in the schema's order for objects of more
than ``Bounds.any_order`` properties), every required key before the object closes, values of the right JSON type (string, number, integer, boolean, null, array,
object, enum and const members, ``anyOf`` alternatives, nested objects and arrays alike).

The schema is translated here into a Lark grammar (:func:`call_grammar`); the token-level work —
which vocabulary tokens may come next from any state of the grammar, for a byte-level tokenizer —
is llguidance's (the ``llguidance`` package: a Rust Earley parser over the tokenizer's token trie,
what vLLM and SGLang use for structured output; a few µs per token on SmolLM2's vocabulary). Schema
parts that the translation does not spell out itself (``pattern``, ``format``, ranges such as
``minimum``, ``allOf``, ``$ref``) go to llguidance's own JSON-schema compiler (``%json``).

The grammar is finite (:class:`Bounds`: string lengths, array lengths, digits, calls per list, and
a token cap on each part llguidance compiles), so every turn decoded under it ends, after at most a
bounded number of tokens, in calls that parse and, but for a value cut at that cap, validate: the
episode does not cut such a turn at ``max_turn_tokens`` before its calls are complete.

``distinct=True`` also keeps a list of calls free of repeats: no token may complete (itself or with
the text that the grammar then forces) a call whose text equals an earlier call of the turn. That
rule is not context-free, so it filters the grammar's mask rather than living in the grammar; where
it would leave no token (a tool without arguments called again, say) the repeat is let through.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..tools import Tool
from .selection import completing_tokens, token_strings

__all__ = ["Bounds", "CallGrammar", "call_grammar"]

_SEPARATORS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}
# llguidance's JSON compiler takes these; everything else the translation below handles itself.
_DELEGATED = ("pattern", "format", "minLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
              "multipleOf", "allOf", "$ref", "not", "if", "patternProperties", "propertyNames", "dependentRequired")
_TYPE_ALIASES = {"dict": "object", "float": "number", "double": "number", "int": "integer", "long": "integer",
                 "list": "array", "tuple": "array", "bool": "boolean", "str": "string", "any": None}
_JSON_CHAR = (r'(?:[^"\\\x00-\x1f\x7f]|\\["\\\/bfnrt]|\\u(?:[0-9a-ce-fA-CE-F][0-9a-fA-F]{3}'
              r'|[dD][0-7][0-9a-fA-F]{2}))')  # one character of a JSON string (no lone surrogates; "/" escaped for Lark)
_CACHE_ATTR = "_mor_ext_llguidance"


@dataclass(frozen=True)
class Bounds:
    """What keeps the grammar finite where a schema sets no limit: characters of a string, items of
    an array (and keys of a free-form object), digits of an integer (and of a number's fraction),
    calls in a list, nesting of values without a schema. ``any_order``: the grammar of an object that
    takes its ``k`` properties in any order has ``2**k`` rules, so larger objects keep the schema's order."""

    string_chars: int = 256
    array_items: int = 32
    digits: int = 16
    calls: int = 8
    depth: int = 3
    any_order: int = 6  # objects of up to this many properties take them in any order (else the schema's)

    def delegated_tokens(self, schema: Mapping[str, Any]) -> int:
        """The most tokens a schema part compiled by llguidance (``%json``) may take: a number's or an
        integer's longest text under ``digits`` (sign, point, exponent), a string's under its
        ``maxLength`` (at least a byte a token, escapes aside), else what ``string_chars`` and
        ``array_items`` allow."""
        kind = schema.get("type")
        if kind in ("number", "integer", "float", "int", "double", "long"):
            return 2 * self.digits + 6
        if kind in ("string", "str"):
            return 2 * int(schema.get("maxLength", self.string_chars)) + 2
        return (self.string_chars + 2) * self.array_items


def _literal(text: str) -> str:
    """A Lark string literal that matches ``text`` exactly."""
    return json.dumps(text)


class _Grammar:
    """Collects the rules of one turn's grammar."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.rules: list[str] = []
        self.terminals: dict[str, str] = {}
        self.warnings: list[str] = []

    def rule(self, body: str, prefix: str = "v") -> str:
        name = f"{prefix}{len(self.rules)}"
        self.rules.append(f"{name}: {body}")
        return name

    def terminal(self, name: str, regex: str) -> str:
        self.terminals.setdefault(name, f"{name}: /{regex}/")
        return name

    def text(self, start: str) -> str:
        return "\n".join([f"start: {start}", *self.rules, *self.terminals.values()]) + "\n"

    # ------------------------------------------------------------------------------------- values
    def value(self, schema: Any, root: Mapping[str, Any], depth: int = 0) -> str:
        """A Lark expression for the JSON text of a value that ``schema`` accepts."""
        if schema is True or schema == {} or not isinstance(schema, Mapping):
            return self.any_value(depth)
        if "const" in schema:
            return _literal(json.dumps(schema["const"], ensure_ascii=False))
        if "enum" in schema:
            members = [_literal(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]]
            if not members:
                raise ValueError("an empty enum accepts no value")
            return "(" + " | ".join(members) + ")"
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return "(" + " | ".join(self.value(s, root, depth) for s in schema[key]) + ")"
        if any(k in schema for k in _DELEGATED):
            return self.delegate(schema, root)
        kind = schema.get("type")
        if isinstance(kind, list):
            return "(" + " | ".join(self.value({**schema, "type": k}, root, depth) for k in kind) + ")"
        if isinstance(kind, str) and kind in _TYPE_ALIASES:
            kind = _TYPE_ALIASES[kind]
        if kind is None and "properties" in schema:
            kind = "object"
        if kind == "string":
            chars = min(int(schema.get("maxLength", self.bounds.string_chars)), self.bounds.string_chars)
            return self.terminal(f"STRING{chars}", f'"{_JSON_CHAR}{{0,{chars}}}"')
        if kind == "integer":
            return self.integer()
        if kind == "number":
            d = self.bounds.digits
            return self.terminal("NUMBER", rf"-?(?:0|[1-9][0-9]{{0,{d - 1}}})(?:\.[0-9]{{1,{d}}})?(?:[eE][+-]?[0-9]{{1,2}})?")
        if kind == "boolean":
            return '("true" | "false")'
        if kind == "null":
            return '"null"'
        if kind == "array":
            return self.array(schema, root, depth)
        if kind == "object":
            return self.object(schema, root, depth)
        if kind is not None:
            self.warnings.append(f"unknown JSON type {kind!r}: any value allowed")
        return self.any_value(depth)

    def integer(self) -> str:
        return self.terminal("INTEGER", rf"-?(?:0|[1-9][0-9]{{0,{self.bounds.digits - 1}}})")

    def delegate(self, schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
        """llguidance's JSON compiler for a schema part (with the root's definitions, for ``$ref``),
        capped at :meth:`Bounds.delegated_tokens` tokens."""
        part = dict(schema)
        for key in ("$defs", "definitions"):
            if key in root and key not in part:
                part[key] = root[key]
        if part.get("type") == "string" and "maxLength" not in part and "enum" not in part:
            part["maxLength"] = self.bounds.string_chars
        part["x-guidance"] = _SEPARATORS
        # llguidance's numbers have no digit limit: under {"exclusiveMinimum": 0} "0.000..." stays a
        # valid prefix forever, and a model that writes zeros never ends its turn. The token cap
        # (llguidance's max_tokens rule attribute) ends such a value there, in range or not.
        name = f"v{len(self.rules)}"
        self.rules.append(f"{name}[max_tokens={self.bounds.delegated_tokens(part)}]: %json {json.dumps(part)}")
        return name

    def repeated(self, item: str, low: int, high: int, open_: str, close: str) -> str:
        """``open_ item, item, ... close`` with ``low`` to ``high`` items."""
        high = max(high, low)
        options = []
        if low == 0:
            options.append(f"{_literal(open_ + close)}")
        if high >= 1:
            more = f' (", " {item}){{{max(low - 1, 0)},{high - 1}}}' if high > 1 else ""
            options.append(f"{_literal(open_)} {item}{more} {_literal(close)}")
        return self.rule(" | ".join(options))

    def array(self, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> str:
        items = schema.get("prefixItems", schema.get("items"))
        if isinstance(items, list):  # a tuple: exactly these items
            if not items:
                return _literal("[]")
            parts = ' ", " '.join(self.value(s, root, depth + 1) for s in items)
            return self.rule(f'"[" {parts} "]"')
        item = self.value(items if items is not None else True, root, depth + 1)
        low = int(schema.get("minItems", 0))
        high = min(int(schema.get("maxItems", self.bounds.array_items)), max(self.bounds.array_items, low))
        return self.repeated(item, low, high, "[", "]")

    def object(self, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> str:
        properties = dict(schema.get("properties") or {})
        required = [k for k in schema.get("required", []) if isinstance(k, str)]
        for key in required:  # a required key the schema does not describe: any value
            properties.setdefault(key, True)
        extra = schema.get("additionalProperties")
        if not properties:
            if extra is True or isinstance(extra, Mapping):  # a free-form map
                pair = self.rule(f'{self.terminal("KEY", chr(34) + _JSON_CHAR + "{0,64}" + chr(34))} ": " '
                                 f'{self.value(extra, root, depth + 1)}')
                return self.repeated(pair, 0, self.bounds.array_items, "{", "}")
            return _literal("{}")
        keys = list(properties)
        pairs = [self.rule(f"{_literal(json.dumps(k, ensure_ascii=False) + ': ')} {self.value(properties[k], root, depth + 1)}",
                           "p") for k in keys]
        need = [k in required for k in keys]
        if len(keys) <= self.bounds.any_order:
            return self.any_order(pairs, need)
        # tails[i]: what may follow once the keys before i are settled: ", " and one of the keys
        # j >= i (no required key skipped), or nothing once no required key remains.
        tails: list[str | None] = [None] * (len(keys) + 1)
        for i in range(len(keys) - 1, -1, -1):
            options = []
            for j in range(i, len(keys)):
                options.append(f'", " {pairs[j]}' + (f" {tails[j + 1]}" if tails[j + 1] else ""))
                if need[j]:
                    break
            body = " | ".join(options)
            tails[i] = self.rule(f"({body})" + ("" if any(need[i:]) else "?"), "t")
        firsts = []
        for j in range(len(keys)):
            firsts.append(pairs[j] + (f" {tails[j + 1]}" if tails[j + 1] else ""))
            if need[j]:
                break
        body = " | ".join(firsts)
        return self.rule(f'"{{" ({body})' + ("" if any(need) else "?") + ' "}"', "o")

    def any_order(self, pairs: list[str], need: list[bool]) -> str:
        """An object of ``pairs`` in any order, each at most once, the ``need``-ed ones all present:
        one rule per set of keys written so far (a bit mask), saying what may follow it."""
        full = (1 << len(pairs)) - 1
        required = sum(1 << j for j, n in enumerate(need) if n)
        after: dict[int, str] = {}
        for written in range(full - 1, 0, -1):  # supersets first: each rule names its successors
            options = []
            for j in range(len(pairs)):
                if not written >> j & 1:
                    nxt = written | 1 << j
                    options.append(f'", " {pairs[j]}' + (f" {after[nxt]}" if nxt in after else ""))
            body = " | ".join(options)
            after[written] = self.rule(f"({body})" + ("?" if required & ~written == 0 else ""), "s")
        firsts = " | ".join(pairs[j] + (f" {after[1 << j]}" if 1 << j in after else "") for j in range(len(pairs)))
        return self.rule(f'"{{" ({firsts})' + ("" if required else "?") + ' "}"', "o")

    def any_value(self, depth: int) -> str:
        """Any JSON value, nested at most ``bounds.depth`` levels below ``depth``."""
        scalars = [self.value({"type": t}, {}, depth) for t in ("string", "number", "boolean", "null")]
        if depth >= self.bounds.depth:
            return "(" + " | ".join(scalars) + ")"
        inner = self.any_value(depth + 1)
        array = self.repeated(inner, 0, self.bounds.array_items, "[", "]")
        key = self.terminal("KEY", '"' + _JSON_CHAR + '{0,64}"')
        pair = self.rule(f'{key} ": " {inner}')
        obj = self.repeated(pair, 0, self.bounds.array_items, "{", "}")
        return "(" + " | ".join(scalars + [array, obj]) + ")"


def call_grammar(tools: Mapping[str, Tool] | Sequence[Tool], bounds: Bounds = Bounds(),
                 calls: int | None = None) -> tuple[str, list[str]]:
    """The Lark grammar of an executor turn that calls ``tools`` (see the module docstring), and
    warnings about schema parts it could not express (those accept any value). ``calls``: exactly
    that many calls (one: a call or a list of one; more: a list of them), else 1 to ``bounds.calls``."""
    items = list(tools.values()) if isinstance(tools, Mapping) else list(tools)
    if not items:
        raise ValueError("a call grammar needs at least one tool")
    if calls is not None and calls < 1:
        raise ValueError(f"an executor turn makes at least one call, got calls={calls}")
    grammar = _Grammar(bounds)
    alternatives = []
    for tool in items:
        schema = dict(tool.parameters or {})
        schema.setdefault("type", "object")
        head = _literal('{"name": ' + json.dumps(tool.name, ensure_ascii=False) + ', "arguments": ')
        alternatives.append(grammar.rule(f'{head} {grammar.object(schema, schema, 0)} "}}"', "c"))
    call = grammar.rule(" | ".join(alternatives), "call")
    low, high = (0, bounds.calls - 1) if calls is None else (calls - 1, calls - 1)
    more = f' (", " {call}){{{low},{high}}}' if high > 0 else ""
    single = f"{call} | " if low == 0 else ""
    return grammar.text(f'{single}"[" {call}{more} "]"'), grammar.warnings


def _ll_tokenizer(tokenizer, end_id: int):
    """llguidance's view of ``tokenizer`` (built once per tokenizer and end-of-turn token: ~1 s on a
    49k vocabulary), with ``end_id`` as the token that ends the grammar."""
    cached = getattr(tokenizer, _CACHE_ATTR, None)
    if cached is None or cached[0] != (end_id, len(tokenizer)):
        try:
            import llguidance.hf
        except ImportError as exc:  # an optional dependency: pip install mor_ext[agent]
            raise ImportError("constrained arguments need the llguidance package (pip install llguidance)") from exc
        cached = ((end_id, len(tokenizer)), llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer),
                                                                         eos_token=end_id))
        setattr(tokenizer, _CACHE_ATTR, cached)
    return cached[1]


class CallGrammar:
    """The tokens an executor may write next so that its turn stays a prefix of calls of ``tools``
    whose arguments their schemas accept (see the module docstring).

    Stateless to the caller: :meth:`allowed` takes the turn's tokens so far (the majority vote's
    samples each ask for their own); the parser states of recent prefixes are kept, so a turn that
    grows one token at a time costs one parser step per token.
    """

    def __init__(self, tokenizer, tools: Mapping[str, Tool] | Sequence[Tool], end_id: int, *,
                 bounds: Bounds = Bounds(), calls: int | None = None, distinct: bool = False,
                 keep_states: int = 64) -> None:
        from llguidance import LLMatcher

        self.end_id = end_id
        self.distinct = distinct
        self.lark, self.warnings = call_grammar(tools, bounds, calls)
        self._vocab, self._tokenizer = len(tokenizer), tokenizer
        self._matcher = LLMatcher(_ll_tokenizer(tokenizer, end_id), LLMatcher.grammar_from_lark(self.lark), log_level=0)
        if self._matcher.is_error():
            raise ValueError(f"the tools' schemas give no usable grammar: {self._matcher.get_error()}")
        self._states: OrderedDict[tuple[int, ...], Any] = OrderedDict({(): self._matcher})
        self._keep = keep_states

    @classmethod
    def for_tools(cls, tokenizer, tools: Mapping[str, Tool], end_id: int, bounds: Bounds | None = None,
                  calls: int | None = None, distinct: bool = False) -> "CallGrammar":
        """A grammar for ``tools`` (``calls``: exactly that many, see :func:`call_grammar`; ``distinct``:
        no call repeated); where some schema cannot be compiled, the schemas are retried as plain
        objects of their properties (noted in ``warnings``) rather than failing the episode."""
        bounds = bounds or Bounds()
        try:
            return cls(tokenizer, tools, end_id, bounds=bounds, calls=calls, distinct=distinct)
        except ValueError as exc:
            plain = {n: Tool(t.name, t.description, _plain(t.parameters)) for n, t in tools.items()}
            grammar = cls(tokenizer, plain, end_id, bounds=bounds, calls=calls, distinct=distinct)
            grammar.warnings.append(f"argument schemas simplified for constrained decoding: {exc}")
            return grammar

    def _state(self, turn_ids: Sequence[int]):
        key = tuple(turn_ids)
        state = self._states.get(key)
        if state is None:
            if key[:-1] in self._states:
                state = self._states[key[:-1]].deep_copy()
                state.consume_token(key[-1])
            else:
                state = self._matcher.deep_copy()
                state.consume_tokens(list(key))
            self._states[key] = state
            if len(self._states) > self._keep:
                self._states.popitem(last=False)
                self._states[()] = self._matcher  # the start state stays
        self._states.move_to_end(key)
        return state

    def allowed(self, turn_ids: Sequence[int]) -> torch.Tensor:
        """A bool mask over the vocabulary of the tokens allowed after ``turn_ids``: never empty
        (after tokens the grammar rejects, e.g. a scripted turn, only the end of the turn)."""
        state = self._state(turn_ids)
        if state.is_error():
            mask = torch.zeros(self._vocab, dtype=torch.bool)
            mask[self.end_id] = True
            return mask
        bits = torch.frombuffer(bytearray(state.compute_bitmask()), dtype=torch.uint8)
        mask = (bits.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1  # bit j of byte i: token 8i + j
        mask = mask.flatten()[:self._vocab].bool()
        # Where the grammar forces text, llguidance offers only its canonical tokenization; any token
        # that spells a prefix of the forced text is as valid (a model may split a key differently).
        forced = state.compute_ff_bytes().decode("utf-8", errors="ignore")
        if forced:
            by_text = token_strings(self._tokenizer)[1]
            for m in range(1, len(forced) + 1):
                for i in by_text.get(forced[:m], ()):
                    if i < self._vocab:
                        mask[i] = True
        if self.distinct:
            self._drop_repeats(turn_ids, state, mask)
        if not mask.any():  # cannot happen for a grammar llguidance accepted; guard against a dead end
            mask[self.end_id] = True
        return mask

    def _drop_repeats(self, turn_ids: Sequence[int], state, mask: torch.Tensor) -> None:
        """Clear in ``mask`` the tokens that would complete a repeat of an earlier call of the turn
        (see the module docstring): only tokens that spell a prefix of what is left of such a call,
        or all of it and more, can, so only those are looked at."""
        done, tail = split_calls(self._tokenizer.decode(list(turn_ids)))
        targets = [", " + call for call in done]  # what the turn would go on with to repeat each
        rests = [t[len(tail):] for t in targets if t.startswith(tail)]
        if not rests:  # the call being written already differs from every earlier one
            return
        index = token_strings(self._tokenizer)
        texts = index[0]
        blocked = []
        for i in set().union(*(completing_tokens(index, rest) for rest in rests)):
            if i >= self._vocab or not mask[i]:
                continue
            text = tail + texts[i]
            if any(text.startswith(t) for t in targets):
                blocked.append(i)
            elif any(t.startswith(text) for t in targets):  # would the grammar then force the rest?
                after = state.deep_copy()
                after.consume_token(i)
                forced = "" if after.is_error() else after.compute_ff_bytes().decode("utf-8", errors="ignore")
                if any((text + forced).startswith(t) for t in targets):
                    blocked.append(i)
        if blocked:
            kept = mask.clone()
            mask[blocked] = False
            if not mask.any():  # nothing but the repeat fits: let it through rather than end the turn
                mask.copy_(kept)

    def accepts(self, turn_ids: Sequence[int]) -> bool:
        """Whether ``turn_ids`` already form complete calls (or left the grammar: nothing to protect)."""
        state = self._state(turn_ids)
        return state.is_error() or state.is_accepting()


def split_calls(text: str) -> tuple[list[str], str]:
    """The texts of the complete calls of a turn that opens a list (``[{...}, {...}, ...``) and what
    follows the last of them (the separator and the call being written); for a turn that is not a
    list (a single call), no complete calls and the whole text."""
    if not text.startswith("["):
        return [], text
    decoder = json.JSONDecoder()
    done: list[str] = []
    start, last = 1, None
    while True:
        try:
            _, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            break
        done.append(text[start:end])
        last = end
        if not text.startswith(", ", end):
            break
        start = end + 2
    return done, text[1:] if last is None else text[last:]


def _plain(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """``schema`` reduced to an object of its property names with any values (the fallback)."""
    schema = schema or {}
    properties = {k: True for k in (schema.get("properties") or {})}
    required = [k for k in schema.get("required", []) if k in properties]
    return {"type": "object", "properties": properties, "required": required}
