"""``metrics.match_summary`` and ``metrics.paired_comparison`` against closed forms and scipy."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from unimdm_jax.metrics import match_summary, paired_comparison


def test_match_summary_is_the_binomial_rate_and_the_mean_rms():
    rms = [0.1, None, 0.3, None, 0.2]
    summary = match_summary(rms)
    assert summary["match_rate"] == pytest.approx(0.6)
    assert summary["match_rate_se"] == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    assert summary["rmse"] == pytest.approx(0.2)
    assert summary["rmse_se"] == pytest.approx(0.1 / math.sqrt(3))


@pytest.mark.parametrize("only_a, only_b", [(12, 9), (3, 15), (0, 6), (7, 7), (0, 0)])
def test_paired_comparison_counts_discordant_crystals_and_is_scipys_exact_test(only_a, only_b):
    both, neither = 20, 5
    rms_a = [0.1] * only_a + [None] * only_b + [0.2] * both + [None] * neither
    rms_b = [None] * only_a + [0.3] * only_b + [0.4] * both + [None] * neither
    paired = paired_comparison(rms_a, rms_b)
    assert (paired["only_a"], paired["only_b"], paired["both"], paired["neither"]) == (
        only_a,
        only_b,
        both,
        neither,
    )
    expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert paired["mcnemar_exact_p"] == pytest.approx(expected)
    assert (paired["rmse_both_a"], paired["rmse_both_b"]) == pytest.approx((0.2, 0.4))


def test_paired_comparison_refuses_different_crystal_counts():
    with pytest.raises(ValueError, match="same crystals"):
        paired_comparison([0.1, None], [0.1])
