"""Regular expressions' size for the cost model: RE2's program, matched and compiled.

``regex_size`` weighs what matching a text costs per character; ``regex_compile_size``
what compiling the pattern costs, which cel-expr-python pays on every call (it does not
precompile literal patterns), so a ``matches`` inside a macro pays it per item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REGEX_MAX_REPEAT = 1000  # RE2's largest counted repetition, x{1000}


# --- regular expressions --------------------------------------------------------------------
@dataclass(frozen=True)
class _RegexWeights:
    """What one atom weighs: in instructions run (matching) or work to compile them."""

    unicode_class: int  # \\pL, \\p{Greek}, [\\pL\\pN] (each property)
    wide_class: int  # a negated or non-ASCII class, on top of its ranges
    dot: int
    repeat_percent: int  # a counted repetition's copies, in percent of their size


# Matching: the program's size. Compiling: measured on cel-expr-python 0.1.3, an instruction
# copied by a counted repetition takes up to 560 ns to compile, others 150-250 ns; a Unicode
# general category such as \\pL or \\PL up to 2.6 ms (it becomes a large UTF-8 automaton); a
# case-folded non-ASCII range such as (?i)[\\x{100}-\\x{2000}] 44 us.
_MATCHING = _RegexWeights(unicode_class=128, wide_class=8, dot=8, repeat_percent=100)
_COMPILING = _RegexWeights(unicode_class=8000, wide_class=80, dot=8, repeat_percent=150)


def regex_size(pattern: str) -> int:
    """An upper bound on the number of RE2 instructions ``pattern`` compiles to.

    Matching is linear in the text times this size (RE2 falls back from its DFA to a
    simulation of this program). Counted repetitions copy their operand: ``(x|a){1,1000}``
    is a thousand copies. Character classes and ``.`` match UTF-8 and take several
    instructions; Unicode classes (``\\pL``) many. Case folding doubles everything. A
    pattern this parser does not understand is charged as if every character were repeated
    the maximum number of times (RE2 will most likely refuse it anyway).
    """
    return _regex_weight(pattern, _MATCHING)


def regex_compile_size(pattern: str) -> int:
    """The work of compiling ``pattern``, in instructions of ``REGEX_COMPILE_PER_INSTRUCTION``.

    ``regex_size`` with the weights compiling was measured to have: a Unicode class counts
    as thousands of instructions, a negated or non-ASCII class as dozens, and the copies
    made by a counted repetition half as much again.
    """
    return _regex_weight(pattern, _COMPILING)


def _regex_weight(pattern: str, weights: _RegexWeights) -> int:
    try:
        size, position = _regex_alternation(pattern, 0, weights)
    except (IndexError, ValueError):
        return max(1, len(pattern)) * REGEX_MAX_REPEAT
    if position != len(pattern):
        return max(1, len(pattern)) * REGEX_MAX_REPEAT
    if _CASE_FOLDING.search(pattern):
        size *= 2
    return size + 2


_CASE_FOLDING = re.compile(r"\(\?[a-zA-Z]*i")


def _regex_alternation(pattern: str, position: int, weights: _RegexWeights) -> tuple[int, int]:
    total, position = _regex_sequence(pattern, position, weights)
    while position < len(pattern) and pattern[position] == "|":
        size, position = _regex_sequence(pattern, position + 1, weights)
        total += size + 1
    return total, position


def _regex_sequence(pattern: str, position: int, weights: _RegexWeights) -> tuple[int, int]:
    total = 0
    while position < len(pattern) and pattern[position] not in "|)":
        size, position = _regex_atom(pattern, position, weights)
        size, position = _regex_quantifiers(pattern, position, size, weights)
        total += size
    return total, position


def _regex_atom(pattern: str, position: int, weights: _RegexWeights) -> tuple[int, int]:
    char = pattern[position]
    if char == "(":
        position += 1
        if pattern.startswith("?", position):
            if pattern.startswith(("?P<", "?<"), position):  # a named group
                position = pattern.index(">", position) + 1
            else:
                end = position + 1
                while pattern[end] not in ":)":
                    end += 1
                if pattern[end] == ")":  # a flag group such as (?i)
                    return 0, end + 1
                position = end + 1
        size, position = _regex_alternation(pattern, position, weights)
        if pattern[position] != ")":
            raise ValueError("unbalanced group")
        return size + 2, position + 1
    if char == "[":
        end = position + 1
        if pattern.startswith("^", end):
            end += 1
        if pattern.startswith("]", end):
            end += 1
        while pattern[end] != "]":
            if pattern[end] == "\\":
                end += 1
            elif pattern.startswith("[:", end):
                end = pattern.index(":]", end + 2) + 1
            end += 1
        text = pattern[position : end + 1]
        unicode = text.count("\\p") + text.count("\\P")
        # An ASCII class is about one instruction per range; a negated or non-ASCII one
        # matches multi-byte UTF-8 sequences.
        wide = text.startswith("[^") or not text.isascii() or "\\x" in text
        size = len(text) - 1 + weights.wide_class * wide + weights.unicode_class * unicode
        return size, end + 1
    if char == "\\":
        following = pattern[position + 1]
        if following in "pP":
            if pattern.startswith("{", position + 2):
                return weights.unicode_class, pattern.index("}", position) + 1
            return weights.unicode_class, position + 3
        if following == "Q":
            end = pattern.find("\\E", position + 2)
            end = len(pattern) if end < 0 else end
            size = end - position - 2
            return size, min(len(pattern), end + 2)
        if following == "x" and pattern.startswith("{", position + 2):
            return 4, pattern.index("}", position) + 1
        if following in "DWS":
            return 12, position + 2
        if following in "dws":
            return 4, position + 2
        return 1, position + 2
    if char == ".":
        return weights.dot, position + 1
    if char in "*+?":
        raise ValueError("quantifier without operand")
    return 1, position + 1


def _regex_quantifiers(
    pattern: str, position: int, size: int, weights: _RegexWeights
) -> tuple[int, int]:
    while position < len(pattern):
        char = pattern[position]
        if char in "*+?":
            size += 1
            position += 1
        elif char == "{":
            end = pattern.find("}", position)
            bounds = pattern[position + 1 : end].split(",") if end > 0 else []
            if not bounds or len(bounds) > 2 or not bounds[0].isdigit():
                return size, position  # a literal brace, as RE2 reads it
            if len(bounds) == 2 and bounds[1] and not bounds[1].isdigit():
                return size, position
            low = int(bounds[0])
            high = int(bounds[1]) if len(bounds) == 2 and bounds[1] else low
            copies = max(1, min(max(low, high) + (len(bounds) == 2 and not bounds[1]), 1001))
            if copies > 1:
                size = size * copies * weights.repeat_percent // 100
            size += 1
            position = end + 1
        else:
            break
        if position < len(pattern) and pattern[position] == "?":  # lazy
            position += 1
    return size, position
