"""Text utilities."""

from __future__ import annotations

import re
from collections import Counter

from ..tool import Tool
from .common import integer, string, one_of, define

__all__ = ["DOMAIN_TOOLS"]

def _word_count(text: str) -> int:
    return len(text.split())


def _reverse(text: str) -> str:
    return text[::-1]


def _is_palindrome(text: str) -> bool:
    letters = [c.lower() for c in text if c.isalnum()]
    if not letters:
        raise ValueError("text has no letters or digits")
    return letters == letters[::-1]


def _caesar(text: str, shift: int, direction: str = "encode") -> str:
    k = shift % 26 if direction == "encode" else -shift % 26
    out = []
    for c in text:
        if "a" <= c <= "z":
            out.append(chr((ord(c) - 97 + k) % 26 + 97))
        elif "A" <= c <= "Z":
            out.append(chr((ord(c) - 65 + k) % 26 + 65))
        else:
            out.append(c)
    return "".join(out)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug:
        raise ValueError("text has no letters or digits")
    return slug


def _count_char(text: str, character: str, case_sensitive: bool = False) -> int:
    if len(character) != 1:
        raise ValueError(f"character must be exactly one character, got {character!r}")
    return text.count(character) if case_sensitive else text.lower().count(character.lower())


def _count_vowels(text: str) -> int:
    return sum(c in "aeiou" for c in text.lower())


def _most_common_letter(text: str) -> str:
    counts = Counter(c for c in text.lower() if c.isalpha())
    if not counts:
        raise ValueError("text has no letters")
    top = max(counts.values())
    return min(c for c, k in counts.items() if k == top)  # ties: alphabetically first


def _acronym(phrase: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", phrase)
    if not words:
        raise ValueError("phrase has no words")
    return "".join(w[0].upper() for w in words)


DOMAIN_TOOLS: tuple[Tool, ...] = (
    define("text", "count_words_in_text", "Number of whitespace-separated words in a text.",
           {"text": string("The text.")}, _word_count, {"text": "the quick brown fox"}),
    define("text", "reverse_text_string", "The text with its characters in reverse order.",
           {"text": string("The text.")}, _reverse, {"text": "stressed"}),
    define("text", "palindrome_phrase_check", "Whether a phrase reads the same backwards, ignoring case, spaces and punctuation.",
           {"text": string("The phrase.")}, _is_palindrome, {"text": "Never odd or even"}),
    define("text", "caesar_shift_text", "Encode or decode text with a Caesar cipher (letters shifted through the alphabet).",
           {"text": string("The text."), "shift": integer("How many letters to shift.", minimum=0, maximum=25),
            "direction": one_of(["encode", "decode"], "Shift forward (encode) or back (decode); default encode.")},
           _caesar, {"text": "Hello", "shift": 3, "direction": "encode"}, optional=("direction",)),
    define("text", "make_url_slug", "A URL slug of a title: lower case, words joined by hyphens.",
           {"text": string("The title.")}, _slug, {"text": "Hello, World: A Tour!"}),
    define("text", "count_character_occurrences", "How many times a single character occurs in a text.",
           {"text": string("The text."), "character": string("The single character to count."),
            "case_sensitive": {"type": "boolean", "description": "Match case exactly; default false."}},
           _count_char, {"text": "Mississippi", "character": "s"}, optional=("case_sensitive",)),
    define("text", "count_vowels_in_text", "Number of vowels (a, e, i, o, u) in a text.",
           {"text": string("The text.")}, _count_vowels, {"text": "education"}),
    define("text", "most_common_letter", "The letter that occurs most often in a text, case-insensitive (ties: alphabetically first).",
           {"text": string("The text.")}, _most_common_letter, {"text": "banana bread"}),
    define("text", "acronym_from_phrase", "The acronym of a phrase: the first letter of each word, in capitals.",
           {"phrase": string("The phrase.")}, _acronym, {"phrase": "portable network graphics"}),
)
