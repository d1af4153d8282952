import math

import pytest

from studio.data import scorers
from studio.data.scorers import toxicity
from studio.evaluation import evaluate
from studio.evaluation.evaluate import EvaluationError, WinRate, bradley_terry
from studio.inference import chat
from tests.helpers import wilson


def test_win_rates_and_intervals_match_hand_computed_values():
    votes = WinRate(wins=70, ties=10, losses=16, both_bad=4)
    rate, low, high = votes.at_least_as_good()  # 84 of 100 not worse: the figure RLHF papers report
    assert rate == 0.84
    assert (low, high) == pytest.approx((0.7558, 0.8990), abs=1e-4)
    assert (low, high) == pytest.approx(wilson(84, 100))
    rate, low, high = votes.win_rate()  # 70 wins of 86 decided votes
    assert rate == pytest.approx(70 / 86)
    assert (low, high) == pytest.approx(wilson(70, 86))
    assert WinRate(0, 0, 0, 0).win_rate() is None


def test_bradley_terry_recovers_the_odds():
    # a beats b 3 times in 4, b beats c 3 times in 4: a-b and b-c differ by log(3) in log-odds, ~191 Elo points.
    results = [("a", "b", 1)] * 3 + [("a", "b", 0)] + [("b", "c", 1)] * 3 + [("b", "c", 0)]
    scores = bradley_terry(results)
    assert scores["a"] - scores["b"] == pytest.approx(400 * math.log10(3), rel=0.01)
    assert scores["b"] - scores["c"] == pytest.approx(400 * math.log10(3), rel=0.01)
    assert sum(scores.values()) == pytest.approx(0, abs=1e-6)
    assert bradley_terry([("x", "y", 0.5)] * 4) == pytest.approx({"x": 0, "y": 0}, abs=1e-6)


def test_offline_toxicity_ranks_an_abusive_answer_above_a_polite_one():
    abusive, polite = toxicity(
        ["Shut up, you stupid worthless idiot.", "Thanks for asking! You can freeze your card in the app under Cards."]
    )
    assert 0 <= polite < 0.2 < 0.8 < abusive <= 1
    assert toxicity([]) == []


def test_shares_are_bootstrapped_over_prompts_and_the_noise_floor_counts_ties_once():
    from studio.evaluation.evaluate import effect, share_interval

    # 10 prompts, 3 samples each: the adapter at least as good in every sample of 8 prompts, in none of 2.
    groups = [[1.0, 1.0, 1.0]] * 8 + [[0.0, 0.0, 0.0]] * 2
    found = share_interval(groups)
    assert found["value"] == pytest.approx(0.8) and found["n"] == 30 and found["prompts"] == 10
    # Resampling prompts, not answers: the interval is that of 8 in 10, wider than 24 in 30 would give.
    assert found["low"] < 0.6 and found["high"] == 1.0
    assert share_interval([[1.0], [1.0]]) == {"value": 1.0, "low": 1.0, "high": 1.0, "n": 2, "prompts": 2}
    assert share_interval([]) is None

    # Base answers all score 0.5 (ties), the adapter 1.0 on prompt 1 and 0.0 on prompt 2, both samples.
    answers = {}
    for prompt, adapter_score in ((1, 1.0), (2, 0.0)):
        for sample in (0, 1):
            answers[prompt, sample, 0] = {"text": "b", "words": 10, "rubric": 0.5}
            answers[prompt, sample, 1] = {"text": "a", "words": 10 if prompt == 1 else 50, "rubric": adapter_score}
    result = effect(answers, "rubric", 1)
    assert result["at_least_as_good"]["value"] == 0.5 and result["win_rate"]["value"] == 0.5
    assert result["length_matched"]["n"] == 2 and result["length_matched"]["value"] == 1.0  # prompt 1 only
    # The floor compares base sample 1 with sample 0 once per prompt: equal scores, so 'at least as good' both times.
    assert result["noise_floor"]["n"] == 2 and result["noise_floor"]["value"] == 1.0


def test_vote_keys_default_models_and_scorer_choices_are_engine_rules(store):
    assert [evaluate.vote_for_key(k) for k in ("a", " B ", "=", "x")] == ["left", "right", "tie", "both_bad"]
    with pytest.raises(EvaluationError, match="'q' is not a vote key: use a, b, = or x."):
        evaluate.vote_for_key("q")
    options = [("base: embedded", "base:embedded"), ("job 3", "job:3"), ("job 2", "job:2")]
    assert chat.default_keys(options) == ["base:embedded", "job:3"]  # the base and the newest job
    assert chat.default_keys(options[:1]) == []  # nothing trained yet: nothing to compare
    assert chat.default_keys(options, ["job:2", "job:9", "me/adapter"]) == ["job:2", "me/adapter"]
    assert scorers.choices(store) == [scorers.RUBRIC, scorers.OFFLINE_TOXICITY]  # no reward model trained here


def test_bradley_terry_weighs_votes_by_the_voters_quality():
    games = [("x", "y", 1.0)] * 3 + [("y", "x", 1.0)] * 5 + [("x", "z", 0.5), ("y", "z", 0.5)]
    plain = bradley_terry(games)
    assert plain["y"] > plain["x"]
    careless = bradley_terry(games, [1.0] * 3 + [0.0] * 5 + [1.0, 1.0])  # the five y votes came from a careless voter
    assert careless["x"] > careless["y"]


def test_the_length_controlled_win_rate_sees_through_a_longer_answer():
    rng = __import__("random").Random(0)
    games = []
    for _ in range(200):  # the model's answer is longer 80% of the time, and the longer answer always wins
        longer = rng.random() < 0.8
        difference = rng.uniform(0.1, 0.5) * (1 if longer else -1)
        games.append((1.0 if longer else 0.0, difference))
    raw = sum(g[0] for g in games) / len(games)
    rate, low, high = evaluate.length_controlled(games)
    assert raw > 0.75 and abs(rate - 0.5) < 0.1 and low < 0.5 < high
    # Without a length effect it is the plain win rate.
    even = [(1.0 if i % 4 else 0.0, ((i * 7) % 11 - 5) / 10) for i in range(200)]
    assert evaluate.length_controlled(even)[0] == pytest.approx(0.75, abs=0.05)
    assert evaluate.length_controlled([]) is None


def test_a_rule_s_verdict_needs_enough_prompts_and_one_answer_per_prompt_still_warns():
    """A rule that applies to one held-out prompt, failed by the base and passed by the adapter in 3 of 3 samples,
    has a bootstrap interval as narrow as its data (+100% to +100%): "learned" needs the prompts to move one way more
    often than chance as well (a sign test), which takes 6 of 6. With one answer per prompt there is no noise floor,
    and an adapter that only ties the base still gets the warning."""
    from studio.evaluation import report

    def found(outcomes: dict) -> dict:  # prompt -> [(base passes, adapter passes) per sample]
        per = {
            (p, n, pos): {"ok": pair[pos]}
            for p, pairs in outcomes.items()
            for n, pair in enumerate(pairs)
            for pos in (0, 1)
        }
        keys = [(p, n) for p, pairs in outcomes.items() for n in range(len(pairs))]
        return report._paired(per, keys, {p: f"prompt {p}" for p in outcomes}, lambda _: True, lambda _, a: a["ok"])

    one = found({1: [(0.0, 1.0)] * 3})
    assert (one["change"]["low"], one["change"]["high"]) == (1.0, 1.0)
    assert report._verdict(one) == "learned" + report.UNSURE
    three = found({1: [(0.0, 1.0), (0.0, 1.0), (0.0, 0.0)], 2: [(0.0, 1.0)] * 3, 3: [(1.0, 1.0), (0.0, 1.0)] * 1})
    assert three["change"]["low"] > 0 and report._verdict(three) == "learned" + report.UNSURE
    six = found({p: [(1.0, 0.0), (1.0, 1.0)] for p in range(6)})
    assert (six["up"], six["down"]) == (0, 6) and report._verdict(six) == "fell"
    assert report._verdict(found({p: [(1.0, 1.0)] for p in range(6)})) == "kept"
    assert report.sure({"up": 0, "down": 7}, up=False) and not report.sure({"up": 0, "down": 7}, up=True)

    tied = {"at_least_as_good": {"value": 1.0, "low": 1.0, "high": 1.0, "n": 6}, "noise_floor": None, "win_rate": None}
    summary = {
        "prompt_set": "held",
        "words": {"base": 20, "aligned": 20},
        "scorers": {scorers.RUBRIC: tied},
        "repetitive": {"base": 0.0, "aligned": 0.0},
    }
    (warned,) = report._warnings(summary)
    assert "not clearly better than the base (no pair of answers differs; with one answer per prompt" in warned
