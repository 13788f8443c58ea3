"""Shell arithmetic compiled once per expression (arith._compiled) against
the evaluator that walks its tokens (arith._Evaluator): for every
expression, the same value or error, and the same reads and writes of the
variables in the same order (bash's side effects: `i++` in a skipped side
of && || ?: does not happen, a subscript is evaluated before the value
assigned to it)."""
import random

import pytest

from klpemu.scenario import arith

BINARY = ["+", "-", "*", "/", "%", "**", "<<", ">>", "<", "<=", ">", ">=", "==", "!=", "&", "|", "^", "&&", "||"]
ASSIGN = ["=", "+=", "-=", "*=", "/=", "%=", "<<=", ">>=", "&=", "^=", "|=", "**="]
NAMES = ["x", "y", "z", "i", "w", "a[i]", "a[1]", "a[i++]"]
CONSTANTS = ["0", "1", "2", "7", "-1", "0x1f", "2#101", "010", "63", "64"]
START = {("x", None): "3", ("y", None): "x+1", ("z", None): "", ("i", None): "2", ("a", 1): "5", ("a", 2): "0",
         ("w", None): "abc"}


class Recorder:
    """Variables that log each get and set."""

    def __init__(self) -> None:
        self.values = dict(START)
        self.log: list[tuple] = []

    def get(self, name: str, index: int | None) -> str:
        self.log.append(("get", name, index))
        return self.values.get((name, index), "")

    def set(self, name: str, index: int | None, value: int) -> None:
        self.log.append(("set", name, index, value))
        self.values[(name, index)] = str(value)


def expression(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth > 3 or r < 0.25:
        return rng.choice(CONSTANTS + NAMES)
    sub = lambda: expression(rng, depth + 1)  # noqa: E731
    if r < 0.55:
        return f"{sub()} {rng.choice(BINARY)} {sub()}"
    if r < 0.65:
        return f"{sub()} ? {sub()} : {sub()}"
    if r < 0.75:
        return f"{rng.choice(NAMES)} {rng.choice(ASSIGN)} {sub()}"
    if r < 0.8:
        return f"({sub()})"
    if r < 0.85:
        return f"{rng.choice('-!~+')}{sub()}"
    if r < 0.9:
        return f"{rng.choice(['++', '--'])}{rng.choice(NAMES)}"
    if r < 0.95:
        return f"{rng.choice(NAMES)}{rng.choice(['++', '--'])}"
    return f"{sub()}, {sub()}"


def outcome(run, text: str) -> tuple:
    variables = Recorder()
    try:
        result: tuple = ("value", run(text, variables))
    except arith.ArithError as exc:
        result = ("error", str(exc), exc.expression)
    return result, variables.log


TEXTS = ["", " ", "x", "1 +", "x = 1 2", "a[i] 3", "a[i]", "08 + x", "(1", "1 ? 2", "--3", "x++ ++",
         "1 / 0", "x /= 0", "2 ** -1", "0 && 1 / 0", "1 || x++", "y * 2", "w + 1"]


def evaluator_only(text: str, variables, depth: int) -> int:
    return arith._Evaluator(text, variables, depth).run()


@pytest.mark.parametrize("seed", range(4))
def test_compiled_expressions_do_what_the_evaluator_does(seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    texts = TEXTS + [expression(rng) for _ in range(1500)]
    compiled = 0
    for text in texts:
        compiled += arith._compiled(text) is not None
        got = outcome(lambda t, v: arith._evaluate(t, v, 0), text)
        with monkeypatch.context() as patch:            # a variable's value (y = "x+1") walked too
            patch.setattr(arith, "_evaluate", evaluator_only)
            reference = outcome(lambda t, v: evaluator_only(t, v, 0), text)
        assert got == reference, text
    assert compiled > len(texts) // 3          # (the grammar makes mostly valid expressions)
