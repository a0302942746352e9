"""Decision rules: calibration at the data prior, balanced probabilities, fitted thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from ecgdx.decision import DecisionRule, fit_class_log_weights, log_softmax_rows, macro_f1_and_recalls
from ecgdx.errors import ModelError
from ecgdx.labels import CLASS_KEYS

MI = CLASS_KEYS.index("mi")
NORMAL = CLASS_KEYS.index("normal")
DATA_PRIOR = [0.6, 0.04, 0.26, 0.10]
UNIFORM = [0.25] * 4


def test_balanced_rule_undoes_a_balanced_sampler_only_for_the_data_prior_probabilities():
    rule = DecisionRule(name="balanced_prior", temperature=2.0, data_prior=DATA_PRIOR, sampler_prior=UNIFORM)
    z = np.array([[1.0, 0.8, 0.0, 0.0]])
    q = rule.balanced_probabilities(z)
    p = rule.data_prior_probabilities(z)
    assert np.allclose(q, np.exp(log_softmax_rows(z / 2.0)))  # a balanced sampler: q is the plain softmax
    # Bayes: p is proportional to q times the data prior.
    expected = q * np.array(DATA_PRIOR)
    assert np.allclose(p, expected / expected.sum())
    assert rule.decide(z)[0] == NORMAL
    # MI is rarer in the data, so at the data prior its probability falls below its balanced one.
    assert p[0, MI] < q[0, MI]


def test_class_log_weights_move_the_decision():
    z = np.array([[1.0, 0.8, 0.0, 0.0]])
    rule = DecisionRule(name="fitted_thresholds", class_log_weights=[0.0, 0.5, 0.0, 0.0])
    assert rule.decide(z)[0] == MI


def test_argmax_rule_is_the_old_behaviour():
    rule = DecisionRule(name="argmax", temperature=1.5)
    z = np.random.default_rng(0).normal(size=(20, 4))
    assert np.array_equal(rule.decide(z), z.argmax(axis=1))
    assert np.allclose(rule.data_prior_probabilities(z), np.exp(log_softmax_rows(z / 1.5)))


def test_round_trip_and_validation():
    rule = DecisionRule(name="fitted_thresholds", temperature=1.3, data_prior=DATA_PRIOR,
                        class_log_weights=[0.0, 0.4, -0.1, 0.2], reason="test")
    assert DecisionRule.from_json(rule.to_json()) == rule
    with pytest.raises(ModelError, match="unknown decision rule"):
        DecisionRule(name="vote")
    with pytest.raises(ModelError, match="temperature"):
        DecisionRule(temperature=0.0)
    with pytest.raises(ModelError, match="sum to 1"):
        DecisionRule(data_prior=[0.5, 0.5, 0.5, 0.5])
    with pytest.raises(ModelError, match="unknown field"):
        DecisionRule.from_dict({"name": "argmax", "bias": 1})
    with pytest.raises(ModelError, match="not valid JSON"):
        DecisionRule.from_json("{")


def test_macro_f1_and_recalls_by_hand():
    y = np.array([0, 0, 1, 2, 3, 3])
    pred = np.array([0, 1, 1, 2, 3, 0])
    f1, recalls = macro_f1_and_recalls(y, pred)
    # F1 per class: normal 2*1/(2+1+1)=0.5, mi 2/(2+1)=0.667, abnormal 1, history 2/(2+1)=0.667
    assert f1 == pytest.approx(np.mean([0.5, 2 / 3, 1.0, 2 / 3]))
    assert recalls.tolist() == pytest.approx([0.5, 1.0, 1.0, 0.5])


def test_fitted_weights_reach_the_mi_floor_on_a_model_that_underrates_mi():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), [300, 30, 120, 50])
    scores = rng.normal(0, 1, size=(len(y), 4))
    scores[np.arange(len(y)), y] += 2.0
    scores[y == MI, MI] -= 1.5  # the model is shy of MI: at zero weights many MIs are missed
    balanced = log_softmax_rows(scores)
    _, recalls_before = macro_f1_and_recalls(y, balanced.argmax(axis=1))
    weights = fit_class_log_weights(balanced, y, mi_floor=0.85)
    _, recalls_after = macro_f1_and_recalls(y, np.argmax(balanced + weights, axis=1))
    assert recalls_before[MI] < 0.85 <= recalls_after[MI]
    assert weights[NORMAL] == 0.0 and weights[MI] > 0


def test_fitted_weights_stay_zero_without_a_gain():
    y = np.repeat(np.arange(4), 25)
    perfect = log_softmax_rows(np.eye(4)[y] * 10)
    assert np.array_equal(fit_class_log_weights(perfect, y), np.zeros(4))


def test_decision_consistent_probabilities_argmax_is_the_decision():
    rule = DecisionRule(name="fitted_thresholds", class_log_weights=[0.0, 0.6, 0.0, 0.3])
    z = np.random.default_rng(1).normal(size=(50, 4))
    p = rule.decision_consistent_probabilities(z)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert np.array_equal(p.argmax(axis=1), rule.decide(z))
    assert not np.array_equal(rule.decide(z), z.argmax(axis=1))  # the weights really moved some decisions


RATES = [0.16, 0.87, 0.21, 0.13]  # P(ST-elevation criteria met | class), as counted on the development pages


def test_st_elevation_finding_is_bayes_rule_on_both_priors():
    from ecgdx.decision import fit_st_elevation_rates  # noqa: F401 - the module's public helper

    rule = DecisionRule(name="balanced_prior", temperature=1.5, data_prior=DATA_PRIOR, sampler_prior=UNIFORM,
                        st_elevation_rates=RATES)
    z = np.array([[1.2, 0.6, 0.1, -0.3]])
    alone_q, alone_p = rule.balanced_probabilities(z), rule.data_prior_probabilities(z)
    for met, likelihood in ((True, np.array(RATES)), (False, 1.0 - np.array(RATES))):
        for with_finding, alone in ((rule.balanced_probabilities(z, met), alone_q),
                                    (rule.data_prior_probabilities(z, met), alone_p)):
            expected = alone * likelihood  # posterior = prior-side probability x likelihood, renormalised
            assert np.allclose(with_finding, expected / expected.sum())
    assert rule.decide(z)[0] == NORMAL and rule.decide(z, True)[0] == MI and rule.decide(z, False)[0] == NORMAL
    # Not checked (None) is the picture alone; per-row findings are taken row by row.
    assert np.allclose(rule.balanced_probabilities(z, None), alone_q)
    rows = np.repeat(z, 3, axis=0)
    assert rule.decide(rows, [True, None, False]).tolist() == [MI, NORMAL, NORMAL]
    with pytest.raises(ValueError, match="3 rows"):
        rule.decide(rows, [True, False])
    # The consistent probabilities' argmax is the decision with the finding.
    assert rule.decision_consistent_probabilities(z, True).argmax(axis=1)[0] == MI


def test_a_rule_without_rates_ignores_the_finding_and_argmax_rules_never_use_it():
    z = np.array([[1.2, 0.6, 0.1, -0.3]])
    plain = DecisionRule(name="balanced_prior", temperature=1.5)
    assert not plain.uses_measurements
    assert np.array_equal(plain.balanced_probabilities(z, True), plain.balanced_probabilities(z))
    old = DecisionRule(name="argmax", st_elevation_rates=RATES)
    assert not old.uses_measurements and old.decide(z, True)[0] == NORMAL


def test_st_elevation_rates_are_counted_with_laplace_and_skip_unchecked_pages():
    from ecgdx.decision import fit_st_elevation_rates

    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    found = np.array([0.0, 1.0, np.nan, 1.0, 1.0, 0.0, 0.0, np.nan])
    # normal: 1 of 2 checked; mi: 2 of 2; abnormal: 0 of 1; history: 0 of 1 -> (k + 1) / (n + 2)
    assert fit_st_elevation_rates(found, labels) == pytest.approx([2 / 4, 3 / 4, 1 / 3, 1 / 3])


def test_st_elevation_rates_round_trip_and_are_validated():
    rule = DecisionRule(name="balanced_prior").with_st_elevation_rates(RATES)
    again = DecisionRule.from_json(rule.to_json())
    assert again == rule and again.uses_measurements
    assert "87 %" in again.describe_measurements() and "Bayes" in again.describe_measurements()
    assert DecisionRule(name="balanced_prior").describe_measurements() == ""
    for bad in ([0.1, 0.2, 0.3], [0.0, 0.5, 0.5, 0.5], [0.2, 1.0, 0.2, 0.2]):
        with pytest.raises(ModelError, match="st_elevation_rates"):
            DecisionRule(name="balanced_prior", st_elevation_rates=bad)
    # A model file from before the field reads as before.
    assert DecisionRule.from_dict({"name": "balanced_prior"}).st_elevation_rates is None
