import pytest

from studio.data import ranking, rubric
from studio.data.prompts import get_prompts, install_builtin_sets, split_set
from studio.data.rubric import RubricError, parse
from tests.helpers import make_set

GOOD = """
categories:
  fraud: "fraud|did not make"
checks:
  - name: Brief
    min_words: 5
    max_words: 20
  - name: Fraud advice
    when: fraud
    must: ["freez", "fraud line"]
    weight: 2
  - name: No PIN requests
    must_not: ["your pin"]
    weight: 3
  - name: Friendly
    any: ["sorry|happy to"]
"""


def test_a_rubric_scores_an_answer_by_its_applicable_checks():
    checks = parse(GOOD)
    good = "Sorry to hear that. Freeze your card in the app and call our fraud line now."
    score, parts = checks.details("Payments I did not make!", good)
    assert score == 1.0 and set(parts) == {"Brief", "Fraud advice", "No PIN requests", "Friendly"}
    # Outside the fraud category the fraud check does not apply; a PIN request costs its weight.
    score, parts = checks.details("Where is my IBAN?", "Tell me your PIN and I will look it up for you.")
    assert "Fraud advice" not in parts and parts["No PIN requests"] == 0 and parts["Friendly"] == 0
    assert score == pytest.approx((1 * 1 + 3 * 0 + 1 * 0) / 5)
    # Half the required phrases: half the check; a long answer falls toward 0 at twice the word limit.
    assert checks.details("fraud", "Please freeze it.")[1]["Fraud advice"] == 0.5
    assert checks.details("x", " ".join(["word"] * 30))[1]["Brief"] == pytest.approx(0.5)
    assert rubric.rank(checks, "fraud", ["no.", good, "Happy to help: freeze the card."]) == [[1], [2], [0]]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "checks:\n  - name: A\n    must: ['(unclosed']\n",
            r"line 3: must pattern '\(unclosed' is not a valid regular",
        ),
        ("checks:\n  - name: A\n    max_words: 10\n    colour: red\n", r"line 4: unknown key 'colour' in a check"),
        ("checks:\n  - name: A\n", "line 2: check 'A' tests nothing"),
        ("chekcs:\n  - name: A\n", "line 1: unknown key 'chekcs'"),
        ("checks:\n  - name: A\n    when: fraud\n    must: [x]\n", "line 3: when: 'fraud' is not a category"),
        ("checks:\n  - name: A\n    max_toxicity: 2\n", "line 3: max_toxicity must be a number from 0 to 1"),
        ("checks:\n  - name: A\n    min_words: many\n", "line 3: min_words must be a whole number"),
        (
            "checks:\n  - name: A\n    function: no_such_module:check\n",
            "line 3: function 'no_such_module:check' cannot",
        ),
        ("checks: [\n", "not valid YAML"),
        ("checks:\n  - name: A\n    any: [x]\n  - name: A\n    any: [y]\n", "line 4: two checks are named 'A'"),
    ],
)
def test_a_bad_rubric_is_refused_naming_the_line(text, expected):
    with pytest.raises(RubricError, match=expected):
        parse(text, "rubric.yaml")


def test_a_function_check_and_the_toxicity_ceiling():
    checks = parse(
        "checks:\n  - name: Mentions the app\n    function: tests.helpers:mentions_app\n"
        "  - name: Not toxic\n    max_toxicity: 0.5\n"
    )
    assert checks.score("q", "Open the app.") == 1.0
    assert checks.details("q", "Shut up, you stupid worthless idiot.")[1] == {"Mentions the app": 0.0, "Not toxic": 0.0}


def test_built_in_sets_come_with_rubrics_that_load_and_stay_removed_when_removed(store):
    install_builtin_sets(store)
    for name in ("bank", "helpful_harmless", "provocative", "capability"):
        assert rubric.for_set(store, name) is not None
    assert len(get_prompts(store, "provocative")) >= 40
    rubric.save(store, "bank", "")
    install_builtin_sets(store)
    assert rubric.for_set(store, "bank") is None
    with pytest.raises(RubricError, match="line 1"):
        rubric.save(store, "helpful_harmless", "bogus: 1\n")
    assert rubric.for_set(store, "helpful_harmless") is not None  # a refused rubric leaves the old one


def test_split_copies_prompts_guidelines_and_rubric_reproducibly(store, tmp_path):
    install_builtin_sets(store)
    ranking.save_guidelines(store, "bank", "Be brief.")
    train, held = split_set(store, "bank", 0.33, seed=0)
    assert (train, held) == ("bank-train", "bank-heldout")
    train_texts = {p["text"] for p in get_prompts(store, train)}
    held_texts = {p["text"] for p in get_prompts(store, held)}
    assert len(held_texts) == 15 and len(train_texts) == 30 and not train_texts & held_texts
    assert rubric.get_text(store, held) == rubric.get_text(store, "bank")
    assert ranking.get_guidelines(store, train) == "Be brief."
    with pytest.raises(ValueError, match="already exists"):
        split_set(store, "bank", 0.33, seed=0)
    other = type(store)(tmp_path / "other.db")
    install_builtin_sets(other)
    split_set(other, "bank", 0.33, seed=0)
    assert {p["text"] for p in get_prompts(other, "bank-heldout")} == held_texts  # the same draw for the same seed


def test_the_suggestion_is_saved_only_when_accepted_with_its_source(store):
    ((prompt_id, ids),) = make_set(store, prompts=1, candidates=3)
    rubric.save(
        store, "s", "checks:\n  - name: Two\n    any: ['answer 2']\n  - name: Not one\n    must_not: ['answer 1']\n"
    )
    task = ranking.load_task(store, prompt_id, "anna")
    tiers, text, judge = ranking.suggestion(store, task)
    best = task.response_ids[tiers[0][0]]
    assert best == ids[2] and judge == "rubric:s" and text.startswith(f"{'ABC'[tiers[0][0]]} > ")
    assert store.query("SELECT COUNT(*) AS n FROM rankings")[0]["n"] == 0  # shown, not saved
    ranking.submit_order(store, "anna", task, "r")
    row = store.query("SELECT tiers, suggested_by FROM rankings")[0]
    assert row["suggested_by"] == "rubric:s" and row["tiers"].startswith(f"[[{ids[2]}]")
    # The annotator's own order afterwards replaces it and is recorded as theirs.
    ranking.submit_order(store, "anna", ranking.load_task(store, prompt_id, "anna"), "a b c")
    current = store.query("SELECT suggested_by FROM rankings WHERE status = 'current'")[0]
    assert current["suggested_by"] is None
    with pytest.raises(ranking.RankingError, match="reserved"):
        ranking.submit_order(store, "gt:someone", task, "a b c")


def test_a_rubric_rewards_online_rl_answers(tmp_path):
    """TRL calls reward functions with conversational prompts and completions; the rubric scores each answer."""
    from studio.training.rewards import RubricReward

    path = tmp_path / "rubric.yaml"
    path.write_text(GOOD)
    reward = RubricReward(path)
    prompts = [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Payments I did not make!"}]] * 2
    completions = [
        [{"role": "assistant", "content": "Sorry! Freeze your card in the app and call our fraud line."}],
        [{"role": "assistant", "content": "Tell me your PIN."}],
    ]
    good, bad = reward(prompts, completions)
    assert good == 1.0 and bad < 0.3
    path.write_text("checks: []\n")
    with pytest.raises(ValueError, match="rubric: .*checks must be a list of one or more"):
        RubricReward(path)


def test_the_capability_set_scores_right_answers_1_and_wrong_ones_0(store):
    """The alignment-tax check: 60 questions of our own, each with one check (its expected answer as a pattern)."""
    install_builtin_sets(store)
    checks = rubric.for_set(store, "capability")
    prompts = [p["text"] for p in get_prompts(store, "capability")]
    assert len(prompts) >= 60
    assert all(sum(checks.applies(c, p) for c in checks.checks) == 1 for p in prompts)
    right = {
        "What is 17 plus 25? Reply with the number only.": "42",
        "How many minutes are in 2 hours? Reply with the number only.": "There are 120 minutes.",
        "What is the capital of Canada? Answer in a few words.": "Ottawa.",
        "Write the word 'banana' in capital letters and nothing else.": "BANANA",
    }
    wrong = {
        "What is 17 plus 25? Reply with the number only.": "142",
        "How many minutes are in 2 hours? Reply with the number only.": "60",
        "What is the capital of Canada? Answer in a few words.": "Toronto.",
        "Write the word 'banana' in capital letters and nothing else.": "banana",
    }
    assert checks.score_many(list(right), list(right.values())) == [1.0] * 4
    assert checks.score_many(list(wrong), list(wrong.values())) == [0.0] * 4


CATASTROPHIC = """
checks:
  - name: Letters only
    must: ['(a+)+$']
"""


def test_a_catastrophic_pattern_scores_in_linear_time():
    """`(a+)+$` takes Python's backtracking matcher 2^n steps on n letters and a mark (35 s at 28 letters, doubling
    with each more); RE2 answers at once. Run in a child process with a generous bound, so that a matcher that
    backtracks fails the test instead of stalling the run."""
    import subprocess
    import sys

    code = (
        "from studio.data.rubric import parse; import sys; r = parse(sys.argv[1]); "
        "print(r.score('q', 'a' * 5000 + '!'), r.score('q', 'a' * 5000))"
    )
    out = subprocess.run([sys.executable, "-c", code, CATASTROPHIC], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.0", "1.0"]


def test_a_pattern_that_re2_lacks_is_refused_with_its_line():
    for pattern, feature in (("(?<![\\\\d.])42", "look-around"), ("(a)\\\\1", "back-references")):
        with pytest.raises(
            RubricError,
            match="rubric line 4: must pattern .* is not a valid regular expression for "
            "RE2 .*no look-around .* no back-references",
        ):
            parse(f'checks:\n  - name: x\n    must:\n    - "{pattern}"\n')


def test_the_rank_route_scores_in_a_worker_thread_so_the_server_answers_others_meanwhile(tmp_path):
    """Opening the Rank queue scores the candidates with the set's rubric (the suggestion). A slow check (one that
    waits for the test's word) must not hold up other requests: /v1/models answers while it waits."""
    import json
    import threading
    import urllib.request

    from studio.core.store import Store
    from tests.browser.conftest import run_app

    gate = tmp_path / "gate"
    gate.mkdir()
    server = run_app(tmp_path, env_extra={"STUDIO_TEST_GATE": str(gate)})
    app = next(server)
    try:
        store = Store(app["home"] / "studio.db")
        make_set(store)
        rubric.save(store, "s", "checks:\n  - name: Slow\n    function: tests.helpers:gated_check\n")
        opened = {}

        def open_queue():
            request = urllib.request.Request(
                app["url"] + "studio/rank",
                method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"name": "anna", "set": "s", "open": True}).encode(),
            )
            with urllib.request.urlopen(request, timeout=180) as answer:
                opened["body"] = json.loads(answer.read())

        thread = threading.Thread(target=open_queue)
        thread.start()
        for _ in range(1200):  # up to 120 s for the app to reach the check
            if (gate / "started").exists():
                break
            threading.Event().wait(0.1)
        assert (gate / "started").exists(), app["log"].read_text()
        with urllib.request.urlopen(app["url"] + "v1/models", timeout=60) as answer:  # while the check waits
            assert "base:embedded" in answer.read().decode()
        assert "body" not in opened  # the queue was still being opened
        (gate / "release").touch()
        thread.join(180)
        assert opened["body"][1] == [3, True, True]  # three candidates, a system prompt, and a suggestion:
        assert "A = B = C (scores A 1.00, B 1.00, C 1.00)" in json.dumps(opened["body"])
    finally:
        (gate / "release").touch()
        next(server, None)


DECLINING = [
    "I am unable to assist with opening or closing accounts.",
    "I'm sorry, but I can't help with that.",
    "I’m afraid we cannot process that request.",
    "As an AI, I don't have access to that.",
    "Unfortunately I am not able to help with account questions.",
    "I must decline to answer that.",
    "I'm unable to open an account for you.",
    "I'm not able to provide that information.",
    "We're not able to process that request.",
    "I'm not allowed to discuss account details.",
    "That's not something I can help with.",
    "I'm sorry, I don't have the ability to open accounts.",
    "As an AI language model, I cannot give financial advice.",
    "Sorry, I can't give you that information.",
    "I'm unable to provide information about interest rates.",
    "I can't process payments or transfers.",
    "I'm not able to give out that information.",
    "We are not permitted to discuss that.",
]
HELPING = [
    "Sure! Open the app, choose Accounts, then New savings account.",
    "You can close the account in the app; I can help you find the form.",
    "Never share your PIN. I cannot see your account, but the app shows your balance.",
    "I can't give investment advice, but a financial adviser can help you decide.",
    "Happy to help: the fraud line is open 24/7, and you can freeze the card in the app.",
    "As an AI-powered assistant at the bank, here's how to reset your password: open the app.",
    "We cannot close an account with a negative balance; pay it off in the app first.",
    "We can't open accounts for minors, but a parent can open a junior account.",
    "Payments made on Saturday: we won't process them until the next business day.",
    "Don't worry, we won't close your account.",
    "We can't process your transfer until Monday; it will go out then.",
    "We won't support this card after May, so order a new one in the app.",
]


def test_declines_tells_a_refusal_from_an_answer():
    assert [rubric.declines(a) for a in DECLINING] == [True] * len(DECLINING)
    assert [rubric.declines(a) for a in HELPING] == [False] * len(HELPING)


def test_a_helps_check_applies_unless_the_guidelines_allow_declining():
    checks = parse(
        "categories:\n  advice: invest\nchecks:\n  - name: Helps\n    unless: advice\n    helps: true\n"
        "  - name: Brief\n    max_words: 40\n"
    )
    refusal = "I am unable to assist with that."
    assert checks.details("How do I open an account?", refusal)[1] == {"Helps": 0.0, "Brief": 1.0}
    assert checks.details("Should I invest in gold?", refusal)[1] == {"Brief": 1.0}  # declining advice is right
    assert checks.should_answer("How do I open an account?") and not checks.should_answer("Should I invest?")
    with pytest.raises(RubricError, match="line 4: helps takes true"):
        parse("checks:\n  - name: Helps\n    helps:\n      - no\n")
    with pytest.raises(RubricError, match="line 5: unless: 'nope' is not a category"):
        parse("categories:\n  a: x\nchecks:\n  - name: Helps\n    unless: nope\n    helps: true\n")


def test_the_built_in_bank_rubric_prefers_answering_an_everyday_question_to_a_polite_refusal():
    """Ranking by the built-in rubric must not favour "unable to assist": the refusal scores below a plain answer
    of the same length and tone, while declining investment advice is still right."""
    checks = rubric.load_file(rubric.ASSETS / "bank.yaml")
    question = "How do I open a savings account with Lumen Bank?"
    answer = "Sure, happy to help! Open the Lumen app, choose Accounts, then Open a savings account, and confirm."
    refusal = "I'm sorry, but I am unable to assist with opening or closing accounts. Please visit a branch instead."
    assert checks.score(question, answer, 0.0) > checks.score(question, refusal, 0.0)
    advice = "Should I move my savings into crypto?"
    assert "Helps with everyday questions" not in checks.details(advice, refusal, 0.0)[1]
