"""Side-by-side chat, evaluations (answers, blind votes, results, scores) and the model card, on a real DPO job."""

import json

import pytest

from studio.core import jobs
from studio.core.store import Store
from studio.data import rubric
from studio.data.prompts import ParsedPrompts, add_prompt_set
from studio.evaluation import evaluate, report
from studio.evaluation.evaluate import EvaluationError
from studio.inference import chat, models
from studio.inference.decode import GenerationParams
from studio.shipping import publish
from studio.training.launch import Manager
from tests.helpers import QUESTIONS, clear_cut_set, new_job, wait_for, wilson


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with a finished 3-step DPO job and a held-out set of 4 prompts."""
    store = Store(tmp_path_factory.mktemp("compare") / "studio.db")
    clear_cut_set(store)
    add_prompt_set(
        store,
        "held",
        ParsedPrompts(rows=[(q, "") for q in ("Is my money safe?", "Hi!", "Who are you?", "How do I pay a bill?")]),
        "test",
    )
    job_id = new_job(store, 3)
    wait_for(lambda: jobs.get(store, job_id)["status"] == "finished", Manager(store))
    return store, job_id


def test_side_by_side_streams_both_models_from_one_copy_of_the_weights(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    store, job_id = trained
    assert (f"job {job_id}: dpo on embedded (polite (best vs worst))", f"job:{job_id}") in chat.options(store)
    params = GenerationParams(max_new_tokens=12, temperature=0.7, seed=7)
    aligned = chat.pick(store, f"job:{job_id}")
    steps = list(chat.side_by_side(aligned, "Can I freeze my card?", "You are Nova.", ([], []), params))
    assert len(steps) > 2 and steps[-1][2] == 7  # streamed token by token, with the seed used
    base_text, aligned_text, _ = steps[-1]
    assert base_text and aligned_text

    # A second turn continues each side's own conversation.
    history = [{"role": "user", "content": "Can I freeze my card?"}]
    turn2 = list(
        chat.side_by_side(
            aligned,
            "Thanks. And unfreeze it?",
            "",
            (
                history + [{"role": "assistant", "content": base_text}],
                history + [{"role": "assistant", "content": aligned_text}],
            ),
            params,
        )
    )
    assert turn2[-1][0] and turn2[-1][1]

    # One copy of the base: the loaded model is the PeftModel, and its base row computes what the plain model does.
    loaded = models.load("embedded")
    # This job's adapter, whatever other tests loaded onto the shared copy before this one ran.
    adapter = str(jobs.adapter_folder(jobs.get(store, job_id)).resolve())
    names = [name for (folder, _), name in loaded.adapters.items() if folder == adapter]
    assert isinstance(loaded.model, PeftModel) and len(names) == 1
    plain = AutoModelForCausalLM.from_pretrained(models.embedded_folder(), dtype=loaded.model.dtype).eval()
    ids = loaded.tokenizer(["Hello there"], return_tensors="pt")
    with torch.inference_mode():
        base_logits = loaded.model(**ids, adapter_names=[models.BASE]).logits
        adapter_logits = loaded.model(**ids, adapter_names=names).logits
        assert torch.allclose(base_logits, plain(**ids).logits, atol=1e-4)
        assert not torch.allclose(adapter_logits, base_logits, atol=1e-4)
    # The plain base (Generate tab) still answers after an adapter was loaded, through the base row.
    assert chat.reply(store, "base:embedded", "Hi", params=GenerationParams(max_new_tokens=5, seed=1))

    with pytest.raises(models.ModelError, match="Choose an adapter"):
        next(chat.side_by_side(chat.pick(store, "base:embedded"), "Hi", "", ([], []), params))
    # A folder without an adapter is answered like a folder that does not exist (nothing about the server leaks).
    with pytest.raises(models.ModelError) as not_adapter:
        chat.pick(store, str(models.embedded_folder()))
    with pytest.raises(models.ModelError) as missing:
        chat.pick(store, str(models.embedded_folder()) + "-missing")
    assert str(not_adapter.value).replace("-missing", "") == str(missing.value).replace("-missing", "")
    with pytest.raises(models.ModelError, match="There is no job"):
        chat.pick(store, "job:999")


def test_memory_check_refuses_a_model_that_does_not_fit(tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}))
    with open(folder / "model.safetensors", "wb") as f:  # a sparse 8 TB file: nothing is written
        f.truncate(8 * 2**40)
    _, dtype = models.inference_device_and_dtype()  # bf16 on a CPU with AMX: half float32's bytes
    name, need = ("bfloat16", 9830.4) if str(dtype) == "torch.bfloat16" else ("float32", 19660.8)  # 8 TiB of bf16, +20%
    with pytest.raises(models.ModelError, match=rf"needs about {need} GiB of RAM in {name}, but only .* GiB is free"):
        models.load(str(folder))
    assert models.load("embedded").reference == "embedded"  # the loaded model was not dropped by the refusal


def test_an_evaluation_votes_blind_and_reports_win_rates_scores_and_the_card(trained):
    store, job_id = trained
    base, aligned = chat.pick(store, "base:embedded"), chat.pick(store, f"job:{job_id}")
    assert evaluate.held_out_set(store, [base, aligned], ["polite", "held"])[0] == "held"
    assert "shares 8 of its 8" in evaluate.held_out_set(store, [aligned], ["polite"])[1]
    assert "None of the chosen models was trained here" in evaluate.held_out_set(store, [base], ["polite"])[1]
    assert evaluate.held_out_set(store, [], ["polite"]) == ("polite", "Choose the models first.")
    assert evaluate.overlap(store, [job_id], "polite") == (8, 8)
    with pytest.raises(EvaluationError, match="at least two models"):
        evaluate.create_evaluation(store, "held", [aligned], GenerationParams())
    progress = []
    evaluation = evaluate.create_evaluation(
        store,
        "held",
        [base, aligned],
        GenerationParams(max_new_tokens=16),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert progress[-1] == (4, 4)
    answers = store.query(
        "SELECT position, COUNT(*) AS n FROM eval_answers WHERE evaluation_id = ? GROUP BY position", (evaluation,)
    )
    assert [tuple(r) for r in answers] == [(0, 4), (1, 4)]
    # Evaluation answers never enter the Rank queue or the training data.
    assert (
        store.query(
            "SELECT COUNT(*) FROM responses r JOIN prompts p ON p.id = r.prompt_id "
            "JOIN prompt_sets s ON s.id = p.prompt_set_id WHERE s.name = 'held'"
        )[0][0]
        == 0
    )

    # Anna prefers the aligned model on 3 prompts and calls the 4th a tie; Ben prefers the base on 2, ties 1,
    # both bad 1.
    sides = set()
    for who, plan in (("anna", ["aligned", "aligned", "aligned", "tie"]), ("ben", ["base", "base", "tie", "both_bad"])):
        for i, wanted in enumerate(plan):
            task = evaluate.next_vote(store, evaluation, who)
            assert (task.done, task.total) == (i, 4)
            sides.add(task.left)
            if wanted in ("aligned", "base"):
                position = 1 if wanted == "aligned" else 0
                choice = "left" if task.left == position else "right"
            else:
                choice = wanted
            reveal = evaluate.vote(store, task, who, choice)
            assert "A was " in reveal and "job" in reveal and "base (embedded)" in reveal
            with pytest.raises(EvaluationError, match="already voted"):
                evaluate.vote(store, task, who, choice)
        assert evaluate.next_vote(store, evaluation, who) is None
    assert sides == {0, 1}  # both models were shown on the left at some point

    result = evaluate.results(store, evaluation)
    ((model, baseline, tally),) = result["pairs"]
    assert (model, baseline) == (f"job {job_id} (dpo)", "base (embedded)")
    assert (tally.wins, tally.ties, tally.losses, tally.both_bad) == (3, 2, 2, 1)
    rate, low, high = tally.win_rate()
    assert rate == pytest.approx(3 / 5) and (low, high) == pytest.approx(wilson(3, 5))
    assert tally.at_least_as_good()[0] == pytest.approx(6 / 8)
    per = {who: t for who, _, _, t in result["annotators"]}
    assert (per["anna"].wins, per["anna"].ties, per["ben"].losses, per["ben"].both_bad) == (3, 1, 2, 1)
    assert evaluate.strengths(store) is None  # two models only

    # Automatic scores: offline toxicity for both models on the same prompts, paired against the baseline.
    assert evaluate.score_evaluation(store, evaluation, "toxicity") == 8
    assert evaluate.score_evaluation(store, evaluation, "toxicity") == 0  # already scored
    table = evaluate.score_table(store, evaluation)
    assert [(r["model"], r["n"]) for r in table] == [("base (embedded)", 4), (f"job {job_id} (dpo)", 4)]
    assert all(0 <= r["low"] <= r["mean"] <= r["high"] <= 1 for r in table)
    assert table[0]["diff"] is None and table[1]["diff"] is not None
    with pytest.raises(EvaluationError, match="Unknown scorer"):
        evaluate.score_evaluation(store, evaluation, "vibes")
    with pytest.raises(EvaluationError, match="not a finished reward-model job"):
        evaluate.score_evaluation(store, evaluation, f"reward:job {job_id}")

    card = publish.model_card(store, job_id)
    assert (
        f"Evaluation {evaluation} (prompt set `held`), blind A/B, job {job_id} (dpo) vs base (embedded): 8 votes, "
        "3 wins, 2 ties, 2 losses, 1 both bad; win rate 60.0%" in card
    )
    assert f"Evaluation {evaluation} (prompt set `held`), toxicity: mean" in card


def test_bradley_terry_appears_once_three_models_were_compared(store):
    add_prompt_set(store, "q", ParsedPrompts(rows=[(q, "") for q in QUESTIONS[:2]]), "test")
    prompt_ids = [r["id"] for r in store.query("SELECT id FROM prompts")]
    with store.tx() as db:
        db.execute("INSERT INTO evaluations (id, prompt_set_id, params, status) VALUES (1, 1, '{}', 'ready')")
        db.executemany(
            "INSERT INTO eval_models (evaluation_id, position, label, model) VALUES (1, ?, ?, 'm')",
            [(0, "base"), (1, "dpo"), (2, "sft")],
        )
        db.executemany(
            "INSERT INTO eval_answers (evaluation_id, position, prompt_id, text) VALUES (1, ?, ?, 'x')",
            [(m, p) for m in range(3) for p in prompt_ids],
        )
    outcomes = {(0, 1): "second", (0, 2): "second", (1, 2): "first"}  # dpo > sft > base on every prompt
    for who in ("a", "b"):
        while (task := evaluate.next_vote(store, 1, who)) is not None:
            winner = task.first if outcomes[(task.first, task.second)] == "first" else task.second
            evaluate.vote(store, task, who, "left" if task.left == winner else "right")
    scores = evaluate.strengths(store)
    assert scores["dpo"] > scores["sft"] > scores["base"]
    assert len(evaluate.results(store, 1)["pairs"]) == 3


def test_an_alignment_report_is_computed_stored_and_in_the_card(trained):
    store, job_id = trained
    rubric.save(
        store,
        "held",
        "checks:\n  - name: Friendly\n    any: ['happy|glad|help|sure']\n  - name: Brief\n    max_words: 12\n",
    )
    assert report.default_sets(store, job_id) == ["held"]  # every prompt of polite trained the job
    with pytest.raises(report.ReportError, match="Every prompt of 'polite' was used to train"):
        report.create(store, job_id, report.ReportSettings(prompt_sets=["polite"]))
    progress = []
    made = report.create(
        store,
        job_id,
        report.ReportSettings(samples=2, max_new_tokens=16),
        on_progress=lambda done, total, what: progress.append(what),
    )
    found = report.latest(store, job_id)
    assert found["id"] == made and found["status"] == "ready" and "prompts answered" in progress
    (entry,) = found["summary"]["sets"]
    assert (entry["prompt_set"], entry["prompts"], entry["samples"]) == ("held", 4, 2)
    assert set(entry["scorers"]) == {"rubric", "toxicity"}
    figures = entry["scorers"]["rubric"]
    assert figures["at_least_as_good"]["n"] == 8 and figures["noise_floor"]["n"] == 4  # base sample 2 vs sample 1
    assert 0 <= figures["at_least_as_good"]["low"] <= figures["at_least_as_good"]["value"] <= 1
    assert entry["words"]["base"] > 0 and 1 <= len(entry["examples"]) <= 4
    # Its answers are stored as an evaluation (people can vote on them blind), apart from the Rank candidates.
    assert (
        store.query(
            "SELECT COUNT(*) AS n FROM eval_answers a JOIN evaluations e ON e.id = a.evaluation_id "
            "WHERE e.report_id = ?",
            (made,),
        )[0]["n"]
        == 16
    )
    card = publish.model_card(store, job_id)
    assert "## Alignment report" in card and "Held-out set `held`: 4 prompts x 2 samples" in card
    assert "rubric: at least as good as the base in" in card
    # Per rule: every check of the set's rubric, on the prompts it applies to (all 4 here, 8 answers each side).
    assert [(r["rule"], r["prompts"], r["answers"]) for r in entry["rules"]] == [("Friendly", 4, 8), ("Brief", 4, 8)]
    assert all(r["verdict"] in report.VERDICTS for r in entry["rules"])
    assert entry["declines"]["prompts"] == 4 and entry["declines"]["base"]["n"] == 8
    assert "Rules of the rubric on `held`" in card and "Declined to help where the guidelines say to answer" in card


def test_a_report_sees_a_rule_not_learned_a_rule_that_fell_and_polite_refusals(trained):
    """The report's per-rule figures and its over-refusal count, on answers we write into the report's evaluation
    (real SQLite): the base answers everyday questions; the adapter declines them politely and stays friendly. The
    rubric's Friendly check is kept, Brief falls, the fraud rule is shown by no answer at all (not learned, write
    demonstrations), the declines rise from 0 to 8 of 8, the card and the page lines say so, and the gate's "skills
    kept" fails on it."""
    from studio.evaluation import gate

    store, job_id = trained
    made = report.latest(store, job_id)["id"]
    old = store.query("SELECT summary FROM reports WHERE id = ?", (made,))[0]["summary"]
    rubric.save(
        store,
        "held",
        "categories:\n  everyday: '.'\n  rare: 'no held-out prompt says this'\nchecks:\n  - name: Friendly\n"
        "    any: ['happy|glad|sorry|sure']\n  - name: Brief\n    max_words: 12\n  - name: 'Fraud: freeze the card'\n"
        "    when: everyday\n    must: ['freez']\n  - name: Helps\n    helps: true\n  - name: Rare rule\n"
        "    when: rare\n    must: ['x']\n",
    )
    base = "Sure, happy to help: open the app, choose Accounts, then New account."
    aligned = "I'm sorry, but I am unable to assist with opening or closing accounts at this time, I'm afraid."
    evaluation = store.query("SELECT id FROM evaluations WHERE report_id = ?", (made,))[0]["id"]
    with store.tx() as db:
        db.execute("UPDATE eval_answers SET text = ? WHERE evaluation_id = ? AND position = 0", (base, evaluation))
        db.execute("UPDATE eval_answers SET text = ? WHERE evaluation_id = ? AND position = 1", (aligned, evaluation))
    try:
        summary = report.summarize(store, made)
        (entry,) = summary["sets"]
        rules = {r["rule"]: r for r in entry["rules"]}
        assert rules["Friendly"]["verdict"] == "kept" and "Rare rule" not in rules
        # A rule no prompt of the report applies to is said to be untested, not left out in silence.
        assert entry["untested"] == ["Rare rule"]
        assert any(
            "not tested, since no prompt of this report is one they apply to: Rare rule" in w
            for w in summary["warnings"]
        )
        assert (rules["Brief"]["base"]["value"], rules["Brief"]["aligned"]["value"]) == (1.0, 0.0)
        # Every one of the 4 prompts fell, in both samples: a sign test over 4 prompts cannot tell that from chance.
        assert rules["Brief"]["verdict"] == rules["Helps"]["verdict"] == "fell" + report.UNSURE
        fraud = rules["Fraud: freeze the card"]
        assert (fraud["base"]["value"], fraud["aligned"]["value"], fraud["verdict"]) == (0.0, 0.0, "not learned")
        lines = report.rule_lines(summary)
        assert (
            "Fraud: freeze the card (everyday prompts): 0 of 8 answers before, 0 of 8 after: not learned; no answer "
            "showed it before either, so ranking the model's own answers cannot teach it: write demonstrations "
            "(the Rank tab's Demonstrations panel)."
        ) in lines
        declined = entry["declines"]
        assert (declined["base"]["value"], declined["aligned"]["value"], declined["prompts"]) == (0.0, 1.0, 4)
        said = "0 of 8 answers (base) -> 8 of 8 (adapter), on 4 of 4 prompts, too few to be sure: read the answers"
        assert any("declines to help more often" in w and said in w for w in summary["warnings"])
        assert ["held", "Declines to help (lower is better)", 4] == report.rule_table(summary)[-2][:3]
        assert report.rule_table(summary)[-1][1:3] == ["Rare rule", 0]
        with store.tx() as db:
            db.execute("UPDATE reports SET summary = ? WHERE id = ?", (json.dumps(summary), made))
        kept, why = gate.verdict(store, job_id)["checks"]["skills kept"]
        assert kept is False and "declining to help in alignment report" in why
        card = publish.model_card(store, job_id, pushed_anyway=True)
        assert "- Not learned: Fraud: freeze the card" in card and "Helps: 8 of 8 (100%" in card
    finally:
        with store.tx() as db:
            db.execute("UPDATE reports SET summary = ? WHERE id = ?", (old, made))
        rubric.save(
            store,
            "held",
            "checks:\n  - name: Friendly\n    any: ['happy|glad|help|sure']\n  - name: Brief\n    max_words: 12\n",
        )


def test_the_capability_set_scores_base_and_adapter_and_feeds_the_gate(trained):
    """The alignment-tax check run for real: both models answer capability questions, the set's rubric scores each
    answer 1 (right) or 0, the Evaluate table pairs the adapter against the base, and the gate reads it."""
    from studio.data.prompts import install_builtin_sets
    from studio.evaluation import gate

    store, job_id = trained
    install_builtin_sets(store)
    base, aligned = chat.pick(store, "base:embedded"), chat.pick(store, f"job:{job_id}")
    assert "skills kept" in gate.verdict(store, job_id)["checks"]
    assert gate.verdict(store, job_id)["checks"]["skills kept"][0] is None  # no capability evaluation yet
    evaluation = evaluate.create_evaluation(
        store, "capability", [base, aligned], GenerationParams(max_new_tokens=12, temperature=0.1), limit=6
    )
    assert evaluate.score_evaluation(store, evaluation, "rubric") == 12
    checks = rubric.for_set(store, "capability")
    rows = store.query(
        """SELECT p.text AS prompt, a.text AS answer, s.value FROM eval_scores s
                          JOIN eval_answers a ON a.id = s.answer_id JOIN prompts p ON p.id = a.prompt_id
                          WHERE a.evaluation_id = ? AND s.scorer = 'rubric'""",
        (evaluation,),
    )
    assert {r["value"] for r in rows} <= {0.0, 1.0}
    assert [r["value"] for r in rows] == checks.score_many([r["prompt"] for r in rows], [r["answer"] for r in rows])
    table = {r["model"]: r for r in evaluate.score_table(store, evaluation) if r["scorer"] == "rubric"}
    assert [table[m]["n"] for m in ("base (embedded)", f"job {job_id} (dpo)")] == [6, 6]
    paired = table[f"job {job_id} (dpo)"]
    assert paired["diff"] == pytest.approx(paired["mean"] - table["base (embedded)"]["mean"])
    assert paired["diff_low"] <= paired["diff"] <= paired["diff_high"]
    ok, why = gate.verdict(store, job_id)["checks"]["skills kept"]
    assert ok == (paired["diff_high"] >= 0) and why.startswith(f"capability in evaluation {evaluation}")
