"""The words a derivation step may use, and their values: a step's text is what the grader computes.

A step such as ``= E_q[log p(x|z)] - KL(q || p(z))`` is read with a small vocabulary over the
terms of a ``SmallModel`` (a 1-D latent, so every expectation is exact by quadrature):

    p(x)  p(x|z)  p(z)  p(x, z)  p(z|x)  q(z|x) (or q)     densities (p_theta, q_phi, p_prior also read)
    log A   log(...)   exp(...)   + - * /   numbers          log takes the next term or bracket
    E_q[...]  E_{q(z|x)}[...]   int ... dz                 an expectation under q, an integral over z
    KL(A || B)  D_KL(A || B)   ELBO                          for densities A, B over z

``log p(z|x) q(z|x)`` is (log p(z|x)) times q(z|x), as in ``int log p(z|x) q(z|x) dz``; ``log p / q``
can be read two ways and is refused: write ``log(p / q)`` or ``log p - log q``. Densities are
carried as their logs, so ``log q(z|x)`` never underflows to log 0 in the tails. ``value(text, m)``
returns a float, or raises ``StepError`` with words that say what in the text it cannot read.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .model import SmallModel

KNOWN = ("p(x), p(x|z), p(z), p(x, z), p(z|x), q(z|x) or q, log, exp, E_q[...], int ... dz, "
         "KL(A || B), ELBO, numbers and + - * /")


class StepError(ValueError):
    """A step's text is not an expression in the vocabulary."""


class Log:
    """A positive quantity held as its log (a density, or a product of them)."""
    __slots__ = ("log",)

    def __init__(self, log):
        self.log = log


def _plain(v):
    return np.exp(v.log) if isinstance(v, Log) else v


_TOKEN = re.compile(r"\s*(\|\||[()\[\]{},|+\-*/=]|\d+(?:\.\d+)?(?:e[+-]?\d+)?|[A-Za-z_][A-Za-z_0-9]*|\S)")
_EXPECT = re.compile(r"E_\{?\s*(?:q(?:_phi)?\s*(?:\(\s*z\s*(?:\|\s*x\s*)?\))?|z\s*~\s*q(?:\(\s*z\s*\|\s*x\s*\))?)\s*\}?")
_SYNONYMS = {"p_theta": "p", "q_phi": "q", "p_prior": "p", "d_kl": "KL", "dkl": "KL", "kl": "KL",
             "elbo": "ELBO"}


def tokens(text: str) -> list[str]:
    t = str(text).replace("∫", " int ").replace("‖", "||").replace("−", "-").replace("·", "*")
    t = t.replace("×", "*").replace("\\|", "||").replace("\\mid", "|").replace("\\log", "log")
    t = _EXPECT.sub(" E_q ", t)
    out, i = [], 0
    while i < len(t):
        m = _TOKEN.match(t, i)
        if not m or not m.group(1):
            break
        out.append(m.group(1))
        i = m.end()
    return out


class _Reader:
    def __init__(self, text: str, m: SmallModel):
        self.toks, self.i, self.m = tokens(text), 0, m
        self.z = m.z

    # --- tokens ---
    def peek(self, k: int = 0):
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None:
            raise StepError("the text ends too early" + (f": expected {want!r}" if want else ""))
        if want is not None and tok != want:
            raise StepError(f"expected {want!r} where the text has {tok!r}")
        self.i += 1
        return tok

    # --- grammar ---
    def expression(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            value = _plain(value) + _plain(right) if op == "+" else _plain(value) - _plain(right)
        return value

    def term(self):
        value = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "/"):
                self.take()
                value = _times(value, self.unary(), tok == "/")
            elif tok is not None and self.starts_atom(tok):  # p(x|z) p(z): a product
                value = _times(value, self.unary(), False)
            else:
                return value

    def unary(self):
        if self.peek() == "-":
            self.take()
            return -_plain(self.unary())
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.factor()

    def starts_atom(self, tok) -> bool:
        return tok in ("(", "[", "{") or bool(re.match(r"\d", tok)) or (
            re.match(r"[A-Za-z_]", tok) is not None and tok.lower() != "dz")

    def factor(self):
        tok = self.peek()
        if tok in ("log", "ln"):
            self.take()
            bracketed = self.peek() in ("(", "[", "{")
            inner = self.group() if bracketed else self.atom()
            if not bracketed and self.peek() == "/" and _SYNONYMS.get((self.peek(1) or "").lower(),
                                                                       self.peek(1)) in ("p", "q"):
                raise StepError("'log A / B' can be read as log(A / B) or as (log A) / B: write log(A / B), "
                                "or log A - log B")
            return Log_of(inner)
        if tok == "exp":
            self.take()
            return Log(_plain(self.group()))
        return self.atom()

    def group(self):
        close = {"(": ")", "[": "]", "{": "}"}
        tok = self.take()
        if tok not in close:
            raise StepError(f"expected a bracket where the text has {tok!r}")
        value = self.expression()
        self.take(close[tok])
        return value

    def atom(self):
        tok = self.peek()
        if tok is None:
            raise StepError("the text ends where a term should follow")
        if tok in ("(", "[", "{"):
            return self.group()
        if re.match(r"\d", tok):
            self.take()
            return float(tok)
        word = _SYNONYMS.get(tok.lower(), tok) if tok.lower() in _SYNONYMS else tok
        if word == "E_q":
            self.take()
            return self.expectation()
        if word == "int":
            self.take()
            inner = self.expression()
            if (self.peek() or "").lower() != "dz":
                raise StepError("an integral 'int ...' must end with 'dz'")
            self.take()
            return self.m.integral(_plain(inner) * np.ones_like(self.z))
        if word == "KL":
            self.take()
            return self.kl()
        if word == "ELBO":
            self.take()
            m = self.m
            return m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))
        if word in ("p", "q"):
            self.take()
            return self.density(word)
        raise StepError(f"unknown word {tok!r}: the vocabulary is {KNOWN}")

    def expectation(self):
        inner = self.group()
        if isinstance(inner, Log):
            return self.m.integral(np.exp(self.m.log_q(self.z) + inner.log * np.ones_like(self.z)))
        return self.m.integral(self.m.q(self.z) * (inner * np.ones_like(self.z)))

    def density(self, name: str) -> Log:
        """p(...) or q(...) as its log; ``q`` alone is q(z|x)."""
        args = ""
        if self.peek() == "(":
            self.take()
            parts = []
            while self.peek() not in (")", None):
                parts.append(self.take())
            self.take(")")
            args = "".join(parts).replace(" ", "")
        m, z = self.m, self.z
        table = {("p", "x"): lambda: m.log_px(), ("p", "x|z"): lambda: m.log_px_given_z(z),
                 ("p", "z"): lambda: m.log_prior(z), ("p", "x,z"): lambda: m.log_px_given_z(z) + m.log_prior(z),
                 ("p", "z,x"): lambda: m.log_px_given_z(z) + m.log_prior(z), ("p", "z|x"): lambda: m.log_post(z),
                 ("q", ""): lambda: m.log_q(z), ("q", "z|x"): lambda: m.log_q(z), ("q", "z"): lambda: m.log_q(z)}
        if (name, args) == ("q", "x|z"):
            raise StepError("q(x|z) has its arguments swapped: q is a distribution over z given x, q(z|x)")
        if (name, args) not in table:
            raise StepError(f"{name}({args}) is not a density of this model: it has "
                            f"p(x), p(x|z), p(z), p(x, z), p(z|x) and q(z|x)")
        return Log(table[(name, args)]())

    def kl(self) -> float:
        close = {"(": ")", "[": "]"}
        opening = self.take()
        if opening not in close:
            raise StepError("KL must be written KL(A || B)")
        a = self.kl_side()
        self.take("||")
        b = self.kl_side()
        self.take(close[opening])
        return self.m.integral(np.exp(a) * (a - b))

    def kl_side(self):
        word = _SYNONYMS.get((self.peek() or "").lower(), self.peek())
        if word not in ("p", "q"):
            raise StepError("each side of KL(A || B) must be a density over z: q(z|x), p(z) or p(z|x)")
        self.take()
        d = self.density(word)
        if np.ndim(d.log) == 0:
            raise StepError("each side of KL(A || B) must be a density over z: q(z|x), p(z) or p(z|x)")
        return d.log


def Log_of(v):  # noqa: N802 - reads as the math: log of a value
    return v.log if isinstance(v, Log) else np.log(v)


def _times(a, b, divide: bool):
    if isinstance(a, Log) and isinstance(b, Log):
        return Log(a.log - b.log if divide else a.log + b.log)
    return _plain(a) / _plain(b) if divide else _plain(a) * _plain(b)


def values(text: str, m: SmallModel) -> list[float]:
    """The value of each side of ``text`` (``A = B = C`` has three); a leading "=" is dropped."""
    parts = [p for p in str(text).split("=")]
    if parts and not parts[0].strip():
        parts = parts[1:]
    if not parts or not all(p.strip() for p in parts):
        raise StepError("an empty side of '='")
    out = []
    for part in parts:
        r = _Reader(part, m)
        if not r.toks:
            raise StepError("an empty expression")
        with np.errstate(all="ignore"):
            v = _plain(r.expression())
        if r.peek() is not None:
            raise StepError(f"cannot read the text from {' '.join(r.toks[r.i:r.i + 3])!r} on")
        if np.ndim(v) != 0:
            raise StepError("it depends on z outside an expectation or an integral: a step is a number, "
                            "so put the function of z inside E_q[...] or int ... dz")
        out.append(float(v))
    return out
