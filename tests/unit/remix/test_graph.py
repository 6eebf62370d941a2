"""Build-time validation: data flow, producers, names, switch domains."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from remix.compose import Fallback, Parallel, Sequence, Switch
from remix.graph import WorkflowBuildError, validate
from remix.keys import Key
from remix.policy import Policy
from remix.selectors import ContextSelector, SlotSelector
from remix.step import Step
from remix.testing import RecordingStep, key
from remix.wrappers import guard

A, B, C = key("a"), key("b"), key("c")


def step(
    name: str,
    *,
    reads: tuple[Key[Any], ...] = (),
    optional: tuple[Key[Any], ...] = (),
    writes: tuple[Key[Any], ...] = (),
) -> RecordingStep:
    return RecordingStep(name, reads=reads, optional_reads=optional, writes={k: None for k in writes})


def fail_open(s: Step) -> Step:
    return guard(s, Policy(fail_open=True))


def build_error(root: Step) -> WorkflowBuildError:
    with pytest.raises(WorkflowBuildError) as caught:
        validate(root)
    return caught.value


def test_a_well_formed_workflow_passes() -> None:
    validate(
        Sequence(
            "feed",
            [
                step("rewrite", writes=(A,)),
                Parallel("sources", [fail_open(step("network", reads=(A,), writes=(B,))), step("jobs", reads=(A,))]),
                step("merge", reads=(A,), optional=(B,), writes=(C,)),
            ],
        )
    )


def test_missing_producer_names_the_step_and_key() -> None:
    error = build_error(Sequence("feed", [step("rewrite"), step("rank", reads=(A,))]))
    assert (error.step, error.key) == ("rank", "a")
    assert "step 'rank' reads 'a', but no earlier step writes it" in str(error)


def test_producer_must_run_earlier_not_later() -> None:
    error = build_error(Sequence("feed", [step("rank", reads=(A,)), step("rewrite", writes=(A,))]))
    assert error.step == "rank"


def test_optional_read_without_any_producer_is_rejected() -> None:
    # A merge naming a source no step writes is a typo: caught at build, not by failing every request.
    error = build_error(Sequence("feed", [step("merge", optional=(A,))]))
    assert error.step == "merge"
    assert "optionally reads" in str(error)
    assert "no earlier step writes it" in str(error)


def test_optional_read_of_a_fail_open_producer_is_allowed() -> None:
    validate(Sequence("feed", [fail_open(step("source", writes=(A,))), step("merge", optional=(A,))]))


def test_duplicate_step_names_are_rejected() -> None:
    error = build_error(Sequence("feed", [step("blend"), Parallel("p", [step("x"), step("blend")])]))
    assert error.step == "blend"
    assert "two steps are named 'blend'" in str(error)


def test_composite_names_count_too() -> None:
    assert build_error(Sequence("feed", [Sequence("feed", [step("x")])])).step == "feed"


def test_a_step_and_its_fallback_need_distinct_names() -> None:
    assert build_error(Fallback(step("rank", writes=(A,)), step("rank", writes=(A,)))).step == "rank"


def test_branch_cannot_read_what_a_sibling_writes() -> None:
    error = build_error(
        Parallel("sources", [step("network", writes=(A,)), Sequence("tail", [step("rerank", reads=(A,))])])
    )
    assert (error.step, error.key) == ("rerank", "a")
    assert "'network' writes in a parallel branch" in str(error)


def test_branch_cannot_even_optionally_read_a_sibling_write() -> None:
    error = build_error(Parallel("sources", [step("network", writes=(A,)), step("peek", optional=(A,))]))
    assert (error.step, error.key) == ("peek", "a")


def test_required_read_of_a_fail_open_producer_is_rejected() -> None:
    error = build_error(
        Sequence("feed", [Parallel("sources", [fail_open(step("jobs", writes=(A,)))]), step("merge", reads=(A,))])
    )
    assert (error.step, error.key) == ("merge", "a")
    assert "'jobs' may leave it unwritten" in str(error)
    assert "optional_reads" in str(error)


def test_fail_open_composite_makes_everything_it_writes_optional() -> None:
    group = guard(Sequence("group", [step("x", writes=(A,)), step("y", writes=(B,))]), Policy(fail_open=True))
    assert build_error(Sequence("feed", [group, step("use", reads=(B,))])).key == "b"
    validate(Sequence("feed", [group, step("use", optional=(A, B))]))


def test_two_producers_of_one_key_are_rejected() -> None:
    error = build_error(Sequence("feed", [step("first", writes=(A,)), step("second", writes=(A,))]))
    assert error.key == "a"
    assert "written by both 'first' and 'second'" in str(error)


def test_parallel_branches_cannot_both_write_a_key() -> None:
    assert build_error(Parallel("p", [step("x", writes=(A,)), step("y", writes=(A,))])).key == "a"


def test_alternatives_may_write_the_same_keys() -> None:
    switch = Switch(
        "blend_by_bucket",
        ContextSelector("bucket"),
        {"a": step("blend", writes=(C,)), "b": step("blend", writes=(C,))},  # arms may share a name too
        step("blend", writes=(C,)),
    )
    ranked = Fallback(step("rank", writes=(A,)), step("first_pass_order", writes=(A,)))
    validate(Sequence("feed", [ranked, switch, step("answer", reads=(A, C))]))


def test_key_written_by_only_some_arms_is_not_certain() -> None:
    switch = Switch("s", ContextSelector("bucket"), {"a": step("x", writes=(A,)), "b": step("y")})
    error = build_error(Sequence("feed", [switch, step("use", reads=(A,))]))
    assert (error.step, error.key) == ("use", "a")


def test_fallback_writing_less_than_its_primary_leaves_keys_uncertain() -> None:
    ranked = Fallback(step("rank", writes=(A, B)), step("cheap", writes=(A,)))
    assert build_error(Sequence("feed", [ranked, step("use", reads=(B,))])).key == "b"
    validate(Sequence("feed", [ranked, step("use", reads=(A,), optional=(B,))]))


def test_fail_open_step_with_a_fallback_still_writes_uncertainly() -> None:
    ranked = guard(step("rank", writes=(A,)), Policy(fail_open=True, fallback=step("cheap", writes=(A,))))
    assert build_error(Sequence("feed", [ranked, step("use", reads=(A,))])).key == "a"


def test_alternatives_writing_a_key_already_produced_are_rejected() -> None:
    switch = Switch("s", ContextSelector("bucket"), {"a": step("x", writes=(A,))}, step("y", writes=(A,)))
    assert build_error(Sequence("feed", [step("first", writes=(A,)), switch])).key == "a"


def test_switch_selector_slot_needs_a_producer() -> None:
    bucket: Key[str] = Key("bucket", str)
    switch = Switch("s", SlotSelector(bucket), {"a": step("x")})
    assert build_error(Sequence("feed", [switch])).key == "bucket"
    validate(Sequence("feed", [step("rewrite", writes=(bucket,)), switch]))


class Tier(enum.Enum):
    FREE = "free"
    PREMIUM = "premium"


TIER: Key[Tier] = Key("tier", Tier)


def test_switch_on_a_known_domain_needs_every_case_or_a_default() -> None:
    switch = Switch("by_tier", SlotSelector(TIER), {"free": step("f")})
    error = build_error(Sequence("feed", [step("rewrite", writes=(TIER,)), switch]))
    assert error.step == "by_tier"
    assert "no case for slot.tier = 'premium'" in str(error)
    with_default = Switch("by_tier", SlotSelector(TIER), {"free": step("f")}, step("other"))
    validate(Sequence("feed", [step("rewrite", writes=(TIER,)), with_default]))


def test_switch_case_outside_the_domain_can_never_match() -> None:
    switch = Switch("by_tier", SlotSelector(TIER), {"free": step("f"), "premium": step("p"), "gold": step("g")})
    error = build_error(Sequence("feed", [step("rewrite", writes=(TIER,)), switch]))
    assert "case 'gold' can never match" in str(error)


def test_key_type_mismatch_between_producer_and_reader() -> None:
    as_int: Key[int] = Key("a", int)
    as_str: Key[str] = Key("a", str)
    error = build_error(Sequence("feed", [step("p", writes=(as_int,)), step("r", reads=(as_str,))]))
    assert (error.step, error.key) == ("r", "a")
    assert "as str" in str(error)
