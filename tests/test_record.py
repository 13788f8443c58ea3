"""The syntax tree's frozen records behave as the frozen dataclasses they replace."""
import pickle

import pytest

from klpemu.scenario.nodes import Lit, Param, Quoted, Redir
from klpemu.scenario.record import Record


def test_fields_defaults_and_keywords():
    p = Param("x", op=":-", arg=(Lit("d"),))
    assert (p.name, p.index, p.op, p.arg, p.arg2, p.text) == ("x", None, ":-", (Lit("d"),), None, "")
    assert Redir(1, ">", (Lit("f"),), 3) == Redir(fd=1, op=">", target=(Lit("f"),), line=3)


def test_equality_is_within_one_class_and_hash_follows_it():
    assert Lit("a") == Lit("a") and Lit("a") != Lit("b")
    assert Lit("a") != Quoted("a")
    assert hash(Lit("a")) == hash(Lit("a"))
    assert {Lit("a"): 1}[Lit("a")] == 1


def test_frozen():
    lit = Lit("a")
    with pytest.raises(AttributeError, match="frozen"):
        lit.text = "b"
    with pytest.raises(AttributeError, match="frozen"):
        del lit.text
    with pytest.raises(AttributeError):
        lit.other = 1                                  # slots: no other attribute either


def test_repr_and_pickle():
    p = Param("x", text="$x")
    assert repr(p) == "Param(name='x', index=None, op='', arg=None, arg2=None, text='$x')"
    assert pickle.loads(pickle.dumps(p)) == p


def test_bad_construction_names_the_field():
    with pytest.raises(TypeError, match="missing its field 'op'"):
        Redir(1)
    with pytest.raises(TypeError, match="has no field 'colour'"):
        Lit("a", colour="red")
    with pytest.raises(TypeError, match="takes 1 arguments, 2 given"):
        Lit("a", "b")


def test_a_required_field_after_a_default_is_refused():
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(Record):
            a: int = 0
            b: int
