"""Final-answer extraction and equivalence for math-style prompts (``\\boxed{}``, ``#### n``, last number).

Equivalence: exact string after normalisation, then numeric, then symbolic with sympy. Untrusted text only
reaches sympy after a whitelist check (sympy's parser evaluates Python), and sympy runs under a time limit.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_SAFE = re.compile(r"^[0-9a-zA-Z+\-*/^().,\s]*$")
_FUNCS = {"sqrt", "pi", "log", "ln", "exp", "sin", "cos", "tan", "E", "I"}
MAX_EXPR_CHARS = 200


def boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def extract_answer(text: str) -> str | None:
    """``\\boxed{}`` first, then GSM8K's ``#### n``, then the last number in the text."""
    if not text:
        return None
    b = boxed(text)
    if b is not None:
        return b
    m = re.search(r"####\s*(.+?)\s*$", text.strip(), re.MULTILINE)
    if m:
        return m.group(1).strip()
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


def extract_reference(reference: str) -> str | None:
    """A reference answer: its ``\\boxed{}`` or ``#### n`` part if it has one, else the whole (stripped) text."""
    if not reference or not reference.strip():
        return None
    b = boxed(reference)
    if b is not None:
        return b
    m = re.search(r"####\s*(.+?)\s*$", reference.strip(), re.MULTILINE)
    return m.group(1).strip() if m else reference.strip()


def normalize(ans: str) -> str:
    """Strip LaTeX wrappers, units of form and spacing: ``$\\frac{1}{2}$`` -> ``(1)/(2)``."""
    s = ans.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:left|right|displaystyle|,|!|;)", "", s)
    for _ in range(5):  # nested fractions
        s = re.sub(r"\\d?t?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"sqrt(\1)", s)
    s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("{", "(").replace("}", ")")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    s = s.rstrip(".").replace("\\%", "").replace("%", "")
    return re.sub(r"\s+", "", s)


def _as_float(s: str) -> float | None:
    try:
        if re.fullmatch(r"-?\(?-?\d+(?:\.\d+)?\)?/\(?\d+(?:\.\d+)?\)?", s):
            num, den = s.replace("(", "").replace(")", "").split("/")
            return float(num) / float(den)
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


def with_timeout(fn: Callable[[], T], seconds: float, default: T) -> T:
    """Run ``fn`` with a wall-clock limit (SIGALRM in the main thread); ``default`` on timeout or error."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        try:
            return fn()
        except Exception:  # noqa: BLE001  (untrusted input: any failure means "not shown equal")
            return default

    def _raise(*_: object) -> None:
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    except Exception:  # noqa: BLE001  (timeouts, sympy parse errors: "not shown equal")
        return default
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _safe_for_sympy(s: str) -> bool:
    if len(s) > MAX_EXPR_CHARS or not _SAFE.match(s) or "__" in s:
        return False
    names = re.findall(r"[A-Za-z_]+", s)
    return all(len(n) == 1 or n in _FUNCS for n in names)


def _symbolic_equal(a: str, b: str) -> bool:
    from sympy import simplify
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    tr = standard_transformations + (implicit_multiplication_application, convert_xor)
    ea, eb = parse_expr(a, transformations=tr, evaluate=True), parse_expr(b, transformations=tr, evaluate=True)
    return bool(simplify(ea - eb) == 0)


def equivalent(a: str | None, b: str | None, timeout_s: float = 2.0) -> bool:
    """True when the answers are equal as strings, numbers (rel. 1e-6) or sympy expressions."""
    if a is None or b is None:
        return False
    na, nb = normalize(a), normalize(b)
    if not na or not nb:
        return False
    if na == nb or na.lower() == nb.lower():
        return True
    fa, fb = _as_float(na), _as_float(nb)
    if fa is not None and fb is not None:
        return abs(fa - fb) <= 1e-6 * max(1.0, abs(fa), abs(fb))
    if not (_safe_for_sympy(na) and _safe_for_sympy(nb)):
        return False
    import sympy  # noqa: F401  (import outside the time limit: the first import alone takes seconds)

    return with_timeout(lambda: _symbolic_equal(na, nb), timeout_s, False)
