"""Risk scoring: each signal, each threshold, policy validation, and scoring properties."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.risk import (
    BUILT_IN_SIGNALS,
    DEFAULT_LEVEL_POLICIES,
    DEFAULT_WEIGHTS,
    LOWERING_SIGNALS,
    RAISING_SIGNALS,
    InvalidValueError,
    LevelPolicy,
    default_risk_policy,
    draft_level_policy,
    draft_risk_policy,
)
from domain.risk_scoring import COUNT_CAP, RiskSignals, assess_risk, caller_signals, score_risk

NEUTRAL = RiskSignals()
BASE = default_risk_policy().base_score


def delta_of(signals: RiskSignals, signal: str, policy: Any = None) -> int:
    _, reasons = score_risk(signals, policy or draft_risk_policy(base_score=50))
    return sum(r.delta for r in reasons if r.signal == signal)


@pytest.mark.parametrize(
    ("signals", "signal", "expected"),
    [
        (RiskSignals(allowlisted_network=True), "allowlisted_network", -30),
        (RiskSignals(trusted_device=True), "trusted_device", -25),
        (RiskSignals(known_device=True), "known_device", -10),
        (RiskSignals(known_device=False), "new_device", 20),
        (RiskSignals(recent_failures=1), "recent_failures", 6),
        (RiskSignals(recent_failures=3), "recent_failures", 18),
        (RiskSignals(recent_failures=COUNT_CAP + 50), "recent_failures", 6 * COUNT_CAP),
        (RiskSignals(lockouts=2), "lockouts", 30),
        (RiskSignals(locked=True), "locked", 20),
        (RiskSignals(fraud_reports=1), "fraud_reports", 35),
        (RiskSignals(user_agent_changed=True), "user_agent_changed", 10),
    ],
)
def test_each_built_in_signal_moves_the_score_by_its_default_weight(
    signals: RiskSignals, signal: str, expected: int
) -> None:
    assert delta_of(signals, signal) == expected


def test_without_signals_the_score_is_the_baseline_and_the_reason_says_so() -> None:
    score, reasons = score_risk(NEUTRAL, default_risk_policy())
    assert score == BASE
    assert [(r.signal, r.delta) for r in reasons] == [("base_score", BASE)]


def test_an_unknown_caller_signal_is_listed_with_delta_zero_and_ignored() -> None:
    score, reasons = score_risk(RiskSignals(extra={"tor_exit_node": 1.0}), default_risk_policy())
    assert score == BASE
    assert ("tor_exit_node", 0) in [(r.signal, r.delta) for r in reasons]


def test_a_caller_signal_with_a_weight_counts_weight_times_value() -> None:
    policy = draft_risk_policy(base_score=0, weights={"impossible_travel": 40, "vpn": -10})
    score, reasons = score_risk(RiskSignals(extra={"impossible_travel": 1.0, "vpn": 0.5}), policy)
    assert {r.signal: r.delta for r in reasons} == {"impossible_travel": 40, "vpn": -5}
    assert score == 35


def test_a_weight_needs_a_whole_signal_name() -> None:
    for name in ("vpn\n", "Vpn", "1vpn", "v" * 65, ""):
        with pytest.raises(InvalidValueError) as refused:
            draft_risk_policy(weights={name: 5})
        assert refused.value.field == "weights", name


def test_a_weight_of_zero_switches_a_signal_off() -> None:
    policy = draft_risk_policy(weights={"new_device": 0})
    score, reasons = score_risk(RiskSignals(known_device=False), policy)
    assert score == BASE
    assert "new_device" not in [r.signal for r in reasons]


@pytest.mark.parametrize(
    ("signals", "score"),
    [
        (RiskSignals(allowlisted_network=True, trusted_device=True), 0),
        (RiskSignals(fraud_reports=5, locked=True, lockouts=5), 100),
    ],
)
def test_the_score_is_kept_within_0_and_100_and_the_reasons_still_add_up(
    signals: RiskSignals, score: int
) -> None:
    result, reasons = score_risk(signals, default_risk_policy())
    assert result == score
    assert reasons[-1].signal == "score_bounds"
    assert sum(r.delta for r in reasons) == score


@pytest.mark.parametrize(
    ("score_wanted", "level", "action"),
    [
        (0, "low", "allow"),
        (29, "low", "allow"),
        (30, "medium", "require_mfa"),
        (59, "medium", "require_mfa"),
        (60, "high", "require_mfa"),
        (84, "high", "require_mfa"),
        (85, "critical", "require_phishing_resistant"),
        (100, "critical", "require_phishing_resistant"),
    ],
)
def test_each_default_threshold_picks_its_level_and_that_levels_policy(
    score_wanted: int, level: str, action: str
) -> None:
    policy = draft_risk_policy(base_score=score_wanted)
    result = assess_risk(NEUTRAL, policy, DEFAULT_LEVEL_POLICIES)
    assert (result.score, result.level, result.action) == (score_wanted, level, action)
    assert result.allowed_methods == DEFAULT_LEVEL_POLICIES[level].allowed_methods


def test_custom_thresholds_and_level_policies_are_used() -> None:
    policy = draft_risk_policy(base_score=20, thresholds={"medium": 10, "high": 20, "critical": 90})
    levels = {**DEFAULT_LEVEL_POLICIES, "high": LevelPolicy("deny", (), 0)}
    result = assess_risk(NEUTRAL, policy, levels)
    assert (result.level, result.action, result.allowed_methods) == ("high", "deny", ())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_score": 101}, "base_score"),
        ({"base_score": -1}, "base_score"),
        ({"thresholds": {"medium": 50, "high": 40, "critical": 90}}, "thresholds.high"),
        ({"thresholds": {"medium": 0, "high": 40, "critical": 90}}, "thresholds.medium"),
        ({"thresholds": {"medium": 10, "high": 40, "critical": 101}}, "thresholds.critical"),
        ({"thresholds": {"medium": 10, "high": 40}}, "thresholds.critical"),
        ({"thresholds": {"medium": 10, "high": 40, "critical": 90, "x": 1}}, "thresholds.x"),
        ({"weights": {"allowlisted_network": 5}}, "weights.allowlisted_network"),
        ({"weights": {"fraud_reports": -5}}, "weights.fraud_reports"),
        ({"weights": {"impossible_travel": 101}}, "weights.impossible_travel"),
        ({"weights": {"Bad-Name": 1}}, "weights"),
        ({"weights": {"base_score": 1}}, "weights"),
        ({"weights": {f"s{i}": 1 for i in range(70)}}, "weights"),
    ],
)
def test_an_invalid_global_policy_is_refused_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidValueError) as refused:
        draft_risk_policy(**kwargs)
    assert refused.value.field == field
    assert refused.value.code == "validation_error"


def test_a_draft_policy_lays_given_weights_over_the_defaults() -> None:
    policy = draft_risk_policy(weights={"new_device": 40, "impossible_travel": 50})
    assert policy.weights == {**DEFAULT_WEIGHTS, "new_device": 40, "impossible_travel": 50}
    assert draft_risk_policy() == default_risk_policy()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("severe", "allow", []), "level"),
        (("low", "shrug", []), "action"),
        (("low", "allow", ["carrier_pigeon"]), "allowed_methods"),
        (("high", "deny", ["totp"]), "allowed_methods"),
        (("high", "require_mfa", []), "allowed_methods"),
        (("high", "require_phishing_resistant", ["totp"]), "allowed_methods"),
        (("high", "require_mfa", ["totp"], -1), "step_up_max_age_s"),
        (("high", "require_mfa", ["totp"], 10**9), "step_up_max_age_s"),
    ],
)
def test_an_invalid_level_policy_is_refused_naming_the_field(
    args: tuple[Any, ...], field: str
) -> None:
    with pytest.raises(InvalidValueError) as refused:
        draft_level_policy(*args)
    assert refused.value.field == field


def test_a_level_policy_keeps_methods_in_canonical_order_without_repeats_and_default_age() -> None:
    policy = draft_level_policy("medium", "require_mfa", ["push", "totp", "push"])
    assert policy == LevelPolicy("require_mfa", ("totp", "push"), 900)


@pytest.mark.parametrize(
    ("given_signals", "field"),
    [
        ({"allowlisted_network": True}, "signals.allowlisted_network"),
        ({"trusted_device": True}, "signals.trusted_device"),
        ({"recent_failures": 0}, "signals.recent_failures"),
        ({"new_device": True}, "signals.new_device"),
        ({"known_device": 1}, "signals.known_device"),
        ({"fraud_reports": 1.5}, "signals.fraud_reports"),
        ({"fraud_reports": True}, "signals.fraud_reports"),
        ({"user_agent_changed": 3}, "signals.user_agent_changed"),
        ({"geo_velocity": 5000}, "signals.geo_velocity"),
        ({"Geo": 1}, "signals"),
        ({"vpn\n": 1}, "signals"),  # `$` also matches before a final newline
        ({"score_bounds": 1}, "signals"),
    ],
)
def test_caller_signals_cannot_assert_what_the_service_derives_or_have_the_wrong_type(
    given_signals: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidValueError) as refused:
        caller_signals(given_signals)
    assert refused.value.field == field


def test_caller_signals_are_split_into_built_ins_and_extras() -> None:
    said = caller_signals(
        {"known_device": False, "fraud_reports": 2, "user_agent_changed": True, "vpn": True}
    )
    assert (said.known_device, said.fraud_reports, said.user_agent_changed) == (False, 2, True)
    assert said.extra == {"vpn": 1.0}


# ---------------------------------------------------------------- properties

counts = st.integers(min_value=0, max_value=40)
signals_strategy = st.builds(
    RiskSignals,
    allowlisted_network=st.booleans(),
    trusted_device=st.booleans(),
    known_device=st.sampled_from([True, None, False]),
    recent_failures=counts,
    lockouts=counts,
    locked=st.booleans(),
    fraud_reports=counts,
    user_agent_changed=st.booleans(),
    extra=st.dictionaries(
        st.sampled_from(["impossible_travel", "vpn", "unweighted"]),
        st.floats(min_value=0, max_value=1000, allow_nan=False),
        max_size=3,
    ),
)
policies = st.builds(
    lambda base, medium, gap1, gap2, raising, lowering, travel, vpn: draft_risk_policy(
        base_score=base,
        thresholds={"medium": medium, "high": medium + gap1, "critical": medium + gap1 + gap2},
        weights={
            **dict(zip(RAISING_SIGNALS, raising, strict=True)),
            **dict(zip(LOWERING_SIGNALS, lowering, strict=True)),
            "impossible_travel": travel,
            "vpn": vpn,
        },
    ),
    st.integers(0, 100),
    st.integers(1, 33),
    st.integers(1, 33),
    st.integers(1, 33),
    st.lists(st.integers(0, 100), min_size=len(RAISING_SIGNALS), max_size=len(RAISING_SIGNALS)),
    st.lists(st.integers(-100, 0), min_size=len(LOWERING_SIGNALS), max_size=len(LOWERING_SIGNALS)),
    st.integers(0, 100),
    st.integers(-100, 0),
)


def _raised(signals: RiskSignals, signal: str) -> RiskSignals:
    """The same attempt with one risk-raising signal stronger."""
    if signal == "new_device":
        return replace(signals, known_device=False)
    if signal in ("locked", "user_agent_changed"):
        return replace(signals, **{signal: True})
    if signal == "impossible_travel":
        extra = dict(signals.extra)
        extra[signal] = extra.get(signal, 0.0) + 1.5
        return replace(signals, extra=extra)
    return replace(signals, **{signal: getattr(signals, signal) + 1})


def _lowered(signals: RiskSignals, signal: str) -> RiskSignals:
    """The same attempt with one risk-lowering signal stronger."""
    if signal == "known_device":
        return replace(signals, known_device=True)
    if signal == "vpn":
        extra = dict(signals.extra)
        extra[signal] = extra.get(signal, 0.0) + 1.5
        return replace(signals, extra=extra)
    return replace(signals, **{signal: True})


@given(signals_strategy, policies, st.sampled_from([*RAISING_SIGNALS, "impossible_travel"]))
def test_the_score_never_falls_when_a_risk_raising_signal_grows(
    signals: RiskSignals, policy: Any, signal: str
) -> None:
    before, _ = score_risk(signals, policy)
    after, _ = score_risk(_raised(signals, signal), policy)
    assert after >= before


@given(signals_strategy, policies, st.sampled_from([*LOWERING_SIGNALS, "vpn"]))
def test_the_score_never_rises_when_a_risk_lowering_signal_grows(
    signals: RiskSignals, policy: Any, signal: str
) -> None:
    before, _ = score_risk(signals, policy)
    after, _ = score_risk(_lowered(signals, signal), policy)
    assert after <= before


@given(signals_strategy, policies)
def test_the_score_is_within_0_and_100_deterministic_and_its_reasons_add_up(
    signals: RiskSignals, policy: Any
) -> None:
    score, reasons = score_risk(signals, policy)
    assert 0 <= score <= 100
    assert score_risk(signals, policy) == (score, reasons)
    assert sum(r.delta for r in reasons) == score
    assessment = assess_risk(signals, policy, DEFAULT_LEVEL_POLICIES)
    assert assessment.level == policy.level_for(score)


def test_every_built_in_signal_is_either_raising_or_lowering() -> None:
    assert sorted(BUILT_IN_SIGNALS) == sorted(set(RAISING_SIGNALS) | set(LOWERING_SIGNALS))
    assert all(DEFAULT_WEIGHTS[s] <= 0 for s in LOWERING_SIGNALS)
    assert all(DEFAULT_WEIGHTS[s] >= 0 for s in RAISING_SIGNALS)
