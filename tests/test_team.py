"""A team on one prompt set: overlap targets, agreement (Krippendorff's alpha), gold and quality, roles."""

import pytest

from studio.core import access, jobs
from studio.data import judges, ranking, rubric, team
from studio.data.preferences import preference_rows
from studio.data.ranking import load_task, next_task, progress, queue, submit
from studio.data.team import TeamError
from studio.evaluation import active
from studio.inference import chat, models
from studio.training import launch
from tests.helpers import make_set, random_lora


def test_an_overlap_target_serves_prompts_that_still_need_votes_first(store):
    made = make_set(store, prompts=6)
    ids = [p for p, _ in made]
    assert queue(store, "s", "carol") == ids  # no target: the set's order
    team.set_target(store, "s", 2)
    for who in ("anna", "bob"):  # the first three prompts reach the target
        for prompt, responses in made[:3]:
            submit(store, who, prompt, [[responses[0]], responses[1:]])
    submit(store, "dan", made[3][0], [[made[3][1][0]], made[3][1][1:]])  # one vote on the fourth
    carol = queue(store, "s", "carol")
    assert set(carol[:2]) == {ids[4], ids[5]} and carol[2] == ids[3] and set(carol[3:]) == set(ids[:3])
    assert progress(store, "s", "carol")["reached_target"] == 3
    # Two annotators starting together on prompts that need votes equally do not all get the same one first.
    firsts = {queue(store, "s", f"new{i}")[0] for i in range(8)}
    assert firsts == {ids[4], ids[5]}
    with pytest.raises(TeamError, match="from 1 to 50"):
        team.set_target(store, "s", 99)
    team.set_target(store, "s", 0)
    assert team.get_target(store, "s") is None and queue(store, "s", "carol") == ids  # the set's order again


def test_krippendorffs_alpha_on_a_hand_worked_example(store):
    # One prompt, three candidates; anna: x > y > z, bob: y > x > z. Values (tier index) x: 0,1; y: 1,0; z: 2,2.
    # Coincidences: o(0,1) = o(1,0) = 2, o(2,2) = 2; n = 6, n_0 = n_1 = n_2 = 2. Ordinal distances:
    # d(0,1) = d(1,2) = (4 - 2)^2 = 4, d(0,2) = (6 - 2)^2 = 16. D_o = (2*4 + 2*4) / 6 = 8/3;
    # D_e = 2 (4*4 + 4*16 + 4*4) / (6*5) = 6.4; alpha = 1 - (8/3) / 6.4 = 7/12.
    ((prompt, (x, y, z)),) = make_set(store, prompts=1)
    submit(store, "anna", prompt, [[x], [y], [z]])
    submit(store, "bob", prompt, [[y], [x], [z]])
    assert team.alpha(team.human_rankings(store, "s")) == pytest.approx(7 / 12)
    submit(store, "bob", prompt, [[x], [y], [z]])
    assert team.alpha(team.human_rankings(store, "s")) == pytest.approx(1.0)
    report = team.report(store, "s")
    assert report["alpha"] == pytest.approx(1.0) and [p["annotator"] for p in report["people"]] == ["anna", "bob"]
    assert report["people"][0]["with_majority"] == 1.0


def test_gold_prompts_and_quality_weights_change_the_pair_majority(store):
    made = make_set(store, prompts=7, candidates=2)
    (open_prompt, (a, b)), golds = made[0], made[1:]
    for prompt, (good, bad) in golds:
        team.mark_gold(store, prompt, good)
        submit(store, "careful", prompt, [[good], [bad]])
        for careless in ("quick1", "quick2"):
            submit(store, careless, prompt, [[bad], [good]])
    # On the prompt nobody knows the answer to, the careful annotator disagrees with the two careless ones.
    submit(store, "careful", open_prompt, [[a], [b]])
    for careless in ("quick1", "quick2"):
        submit(store, careless, open_prompt, [[b], [a]])
    plain = {p.prompt_id: p.chosen_id for p in preference_rows(store, "s")[1].pairs}
    weighted = {p.prompt_id: p.chosen_id for p in preference_rows(store, "s", weighted=True)[1].pairs}
    assert plain[open_prompt] == b and weighted[open_prompt] == a
    quality = team.quality(store, "s")
    assert quality["careful"]["gold"] == (6, 6) and quality["quick1"]["gold"] == (0, 6)
    assert quality["careful"]["weight"] > 0.7 and quality["quick1"]["weight"] < 0.1
    assert quality["quick1"]["flagged"] and not quality["careful"]["flagged"]
    team.mark_gold(store, golds[0][0], None)
    assert len(team.gold(store, "s")) == 5
    with pytest.raises(TeamError, match="not a candidate"):
        team.mark_gold(store, golds[0][0], a)


def test_only_leads_lead_once_leads_are_named(store, monkeypatch):
    made = make_set(store, prompts=1)
    team.set_target(store, "s", 3, by="anyone")  # no leads named: no roles
    monkeypatch.setenv(access.LEADS_ENV, "anna, hf-lead")
    assert access.is_lead("anna") and access.is_lead("hf:hf-lead") and not access.is_lead("bob")
    with pytest.raises(TeamError, match="Only a lead may launch training; bob ranks and votes"):
        launch.launch(store, "dpo", {}, prompt_set="s", by="bob")
    with pytest.raises(TeamError, match="Log in to set the overlap target"):
        team.set_target(store, "s", 2)
    with pytest.raises(TeamError, match="Only a lead may mark gold"):
        team.mark_gold(store, made[0][0], made[0][1][0], by="bob")
    team.set_target(store, "s", 2, by="anna")
    assert team.get_target(store, "s") == 2
    # Annotators still rank.
    task = next_task(store, "s", "bob")
    ranking.submit_order(store, "bob", task, "a b c")
    assert load_task(store, task.prompt_id, "bob").current


def test_imports_exports_and_job_controls_are_a_leads_in_the_engine(store, tmp_path, monkeypatch):
    """With leads named, an annotator cannot add rankings under other names (preference files, the Hub, Ground
    Truth output), export or start a labeling job, stop and resume jobs, edit the guidelines or the rubric, run a
    judge, push, merge or hand out API keys: the engine refuses, whoever calls it, and nothing changes."""
    import json

    from studio.data import groundtruth, preferences
    from studio.shipping import openai_api, publish
    from studio.training import sagemaker
    from tests.conftest import table_counts
    from tests.helpers import clear_cut_rows

    make_set(store, prompts=2)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(row) for row in clear_cut_rows(2)) + "\n")
    job_id = launch.create(store, "dpo", {"max_steps": 1}, data_label="pairs", data_rows=clear_cut_rows(2))
    with store.tx() as db:
        db.execute("UPDATE jobs SET status = 'stopped' WHERE id = ?", (job_id,))
    monkeypatch.setenv(access.LEADS_ENV, "anna")
    manager = launch.Manager(store)
    before = table_counts(store)
    refused = [
        ("import preference data", lambda by: preferences.import_file(store, pairs, by=by)),
        ("import preference data", lambda by: preferences.import_hub(store, "Anthropic/hh-rlhf", by=by)),
        ("import Ground Truth results", lambda by: groundtruth.import_results(store, tmp_path, by=by)),
        ("import Ground Truth results", lambda by: groundtruth.fetch_and_import(store, tmp_path, by=by)),
        ("export a labeling job", lambda by: groundtruth.export_job(store, "s", tmp_path / "gt", by=by)),
        (
            "start a labeling job",
            lambda by: groundtruth.launch_job(
                tmp_path / "gt", role_arn="", pre_lambda_arn="", post_lambda_arn="", by=by
            ),
        ),
        ("stop a job", lambda by: manager.stop(job_id, by=by)),
        ("resume a job", lambda by: manager.resume(job_id, by=by)),
        ("stop a job", lambda by: sagemaker.stop(store, job_id, by=by)),
        ("edit the rubric", lambda by: rubric.save(store, "s", "checks:\n  - name: x\n    any: [a]\n", by, by=by)),
        ("edit the guidelines", lambda by: ranking.save_guidelines(store, "s", "Be nice.", by, by=by)),
        ("run a judge", lambda by: judges.prerank(store, "s", "rubric", by=by)),
        ("push to the Hub", lambda by: preferences.push_preferences(store, "s", "me/prefs", by=by)),
        ("push to the Hub", lambda by: publish.push_adapter(store, job_id, "me/adapter", by=by)),
        ("merge a model", lambda by: publish.start_merge(store, job_id, by=by)),
        ("create API keys", lambda by: openai_api.create_key(store, "bot", by)),
        ("revoke API keys", lambda by: openai_api.revoke_key(store, "bot", by)),
    ]
    for action, call in refused:
        with pytest.raises(TeamError, match=f"Only a lead may {action}; bob ranks and votes"):
            call("bob")
        with pytest.raises(TeamError, match=f"Log in to {action}"):
            call(None)
    assert table_counts(store) == before and not (tmp_path / "gt").exists()
    assert jobs.get(store, job_id)["status"] == "stopped"
    # A lead gets past the check to the action itself.
    assert preferences.import_file(store, pairs, by="anna")["pairs"] == 2
    assert openai_api.create_key(store, "bot", access.TERMINAL)  # a command at this machine's terminal
    assert openai_api.list_keys(store)[0]["created_by"] == "terminal"
    assert groundtruth.export_job(store, "s", tmp_path / "gt", by="anna")["prompts"] == 2
    with pytest.raises(jobs.JobError, match="no checkpoint to resume from"):
        manager.resume(job_id, by="anna")


def test_a_judges_ranking_is_its_own_and_people_accept_it_as_theirs(store):
    (prompt_id, ids), (other, _) = make_set(store, prompts=2, candidates=3)
    rubric.save(
        store, "s", "checks:\n  - name: Two\n    any: ['answer 2']\n  - name: Not one\n    must_not: ['answer 1']\n"
    )
    name, done = judges.prerank(store, "s", "rubric")
    assert (name, done) == ("judge:rubric:s", 2)
    judged = store.query(
        "SELECT a.kind, r.tiers, r.source FROM rankings r JOIN annotators a ON "
        "a.id = r.annotator_id WHERE r.prompt_id = ?",
        (prompt_id,),
    )
    assert [tuple(r) for r in judged] == [("judge", f"[[{ids[2]}], [{ids[0]}], [{ids[1]}]]", "judge")]
    assert ranking.current_rankings(store, "s") == []  # not a person's vote
    assert progress(store, "s", "anna")["rankings"] == 0 and queue(store, "s", "anna")  # people still rank it
    task = load_task(store, prompt_id, "anna")
    tiers, text, judge = ranking.suggestion(store, task)
    assert judge == "judge:rubric:s" and task.response_ids[tiers[0][0]] == ids[2] and "(by rubric:s)" in text
    ranking.submit_order(store, "anna", task, "r")  # accepted: saved as anna's, naming the judge
    ranking.submit_order(store, "bob", load_task(store, prompt_id, "bob"), "c b a")  # bob's own order
    rows = {r["annotator"]: r for r in ranking.current_rankings(store, "s")}
    assert set(rows) == {"anna", "bob"} and rows["anna"]["tiers"] == [[ids[2]], [ids[0]], [ids[1]]]
    assert (
        store.query(
            "SELECT suggested_by FROM rankings r JOIN annotators a ON a.id = r.annotator_id WHERE a.name = 'anna'"
        )[0]["suggested_by"]
        == "judge:rubric:s"
    )
    (found,) = judges.agreement(store, "s")
    assert found["judge"] == "judge:rubric:s" and found["compared"] == 2 and found["accepted"] == 1
    assert found["identical"] == (1.0 if rows["bob"]["tiers"] == rows["anna"]["tiers"] else 0.5)
    # Training pairs leave the judge out unless asked.
    assert {p.prompt_id for p in preference_rows(store, "s")[1].pairs} == {prompt_id}
    assert {p.prompt_id for p in preference_rows(store, "s", judges=True)[1].pairs} == {prompt_id, other}
    with pytest.raises(ranking.RankingError, match="reserved"):
        ranking.check_annotator("judge:me")


def test_the_llm_judge_asks_both_orders_on_the_embedded_model(store):
    loaded = models.load(models.EMBEDDED)
    answers = [
        "You can freeze your card in the app under Cards, then Freeze.",
        "No idea, go away.",
        "Call us and we will help you freeze it.",
    ]
    scores = judges.llm_preferences(loaded, "How do I freeze my card?", answers)
    assert sum(scores) == pytest.approx(3.0)  # each of the 3 pairs shares one unit between its two answers
    # Both orders are asked, so where an answer stands in the list does not change its score.
    moved = judges.llm_preferences(loaded, "How do I freeze my card?", [answers[2], answers[0], answers[1]])
    assert [moved[1], moved[2], moved[0]] == pytest.approx(scores, abs=1e-3)
    ((prompt_id, ids),) = make_set(store, prompts=1, candidates=2)
    assert judges.judge_prompt(store, "s") == judges.LLM_PROMPT  # none run yet: the default
    edited = judges.LLM_PROMPT.replace("You judge answers", "You judge a bank assistant's answers")
    assert judges.prerank(store, "s", "llm", template=edited, by="anna") == ("judge:llm:embedded", 1)
    assert ranking.suggestion(store, load_task(store, prompt_id, "anna"))[2] == "judge:llm:embedded"
    assert judges.judge_prompt(store, "s") == edited  # kept for the set, shown again next time
    with pytest.raises(judges.JudgeError, match="needs {question}"):
        judges.llm_preferences(loaded, "q", answers, "Which is better?")


def test_active_order_puts_the_least_certain_prompt_first(store, tmp_path):
    made = make_set(store, prompts=3, candidates=2)
    ids = [p for p, _ in made]
    # Disagreement: people agree on the first two prompts and split on the third.
    for who, flip in (("anna", False), ("bob", False), ("carol", True)):
        for prompt, (x, y) in made:
            submit(store, who, prompt, [[y], [x]] if flip and prompt == ids[2] else [[x], [y]])
    assert active.set_active_order(store, "s", active.DISAGREEMENT) == 3
    assert queue(store, "s", "dan") == [ids[2], ids[0], ids[1]]
    assert active.describe(store, "s").startswith("Queue order: where annotators and judges disagree most")

    # An aligned model's implicit reward: a prompt whose two best candidates are the same text has margin 0, so it
    # comes first. The adapter is a random LoRA (PEFT, not zero-initialised) on the embedded model.
    folder = random_lora(tmp_path / "job" / "adapter")
    with store.tx() as db:
        job = db.execute(
            "INSERT INTO jobs (method, status, folder, base_model, data) VALUES "
            "('dpo', 'finished', ?, 'embedded', 'test')",
            (str(folder.parent),),
        ).lastrowid
        same = made[1][1]
        db.execute("UPDATE responses SET text = 'The same answer.' WHERE id IN (?, ?)", same)
    loaded, (name,) = chat.load_together([chat.pick(store, f"job:{job}")])
    rewards = active.implicit_rewards(
        loaded, name, {"text": "Hi", "system": "", "context": ""}, ["Hello! How can I help?", "Go away."]
    )
    assert len(rewards) == 2 and rewards[0] != rewards[1]
    assert active.set_active_order(store, "s", f"job:{job}") == 3
    assert queue(store, "s", "dan")[0] == ids[1]
    priorities = {r["prompt_id"]: r["score"] for r in store.query("SELECT * FROM priorities")}
    assert priorities[ids[1]] == pytest.approx(0, abs=1e-6) and min(priorities[i] for i in (ids[0], ids[2])) > 0
    active.set_active_order(store, "s", None)
    assert queue(store, "s", "dan") == ids and active.describe(store, "s") == "Queue order: the set's own order."


def test_the_next_prompt_is_the_queues_first_and_team_counts_may_lag_by_max_age(store):
    """next_task finds the queue's first prompt without ordering the whole set; under a team's load the Rank tab
    reuses a read of the set for up to TEAM_MAX_AGE seconds: the team's counts may lag, the annotator's own never."""
    made = make_set(store, prompts=12)
    ids = [p for p, _ in made]

    def first_is_queue_head(who):
        queued = queue(store, "s", who)
        task = next_task(store, "s", who)
        assert (task.prompt_id if task else None) == (queued[0] if queued else None), who

    for i, (prompt, responses) in enumerate(made[:7]):  # uneven votes: 3, 2, 1, 3, 2, 1, 3 on the first seven
        for who in ("anna", "bob", "dan")[: 3 - i % 3]:
            submit(store, who, prompt, [[responses[0]], responses[1:]])
    ranking.skip(store, "carol", ids[8])
    ranking.skip(store, "carol", ids[0])  # the set's first: without the skip, carol's next
    for target in (None, 2, 3):  # the set's order; the fewest votes first in each annotator's own order
        team.set_target(store, "s", target or 0)
        for who in ("anna", "bob", "carol", "erin", "new1", "new2"):
            first_is_queue_head(who)
    with store.tx() as db:  # an active order: the smallest score first
        for position, prompt in enumerate(reversed(ids)):
            db.execute("INSERT INTO priorities (prompt_id, score) VALUES (?, ?)", (prompt, position))
        db.execute("UPDATE prompt_sets SET queue_order = 'test' WHERE name = 's'")
    for who in ("anna", "carol", "erin"):
        first_is_queue_head(who)
    assert next_task(store, "s", "erin").prompt_id == ids[-1]
    for prompt in ids:  # carol ranks everything she has not skipped: the skipped ones come back, oldest skip first
        if prompt not in (ids[0], ids[8]):
            submit(store, "carol", prompt, [[made[ids.index(prompt)][1][0]], made[ids.index(prompt)][1][1:]])
    assert queue(store, "s", "carol") == [ids[8], ids[0]] and next_task(store, "s", "carol").prompt_id == ids[8]

    # A read of the set reused within max_age: erin's own progress and queue move at once, the team's counts wait.
    before = progress(store, "s", "erin", max_age=60)
    (prompt, responses) = made[11]
    task, note = ranking.act(
        store, "erin", "local", "s", next_task(store, "s", "erin", 60).prompt_id, "a b c", max_age=60
    )
    assert note == "Saved."
    lagging = progress(store, "s", "erin", max_age=60)
    assert lagging["mine"] == before["mine"] + 1 and lagging["rankings"] == before["rankings"]
    assert task.prompt_id != ids[-1]  # not the prompt erin just ranked
    assert progress(store, "s", "erin")["rankings"] == before["rankings"] + 1  # max_age 0: read now
