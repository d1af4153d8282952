import threading

import pytest

from studio.data import ranking
from studio.data.ranking import (
    RankingError,
    agreement,
    current_rankings,
    history,
    load_task,
    next_task,
    pairs_from_rankings,
    parse_order,
    progress,
    queue,
    skip,
    submit,
    undo_last,
)
from tests.helpers import make_set


def test_parse_order_forms_and_errors():
    assert parse_order("ba=cd", 4) == parse_order("B > A = C > D", 4) == [[1], [0, 2], [3]]
    assert parse_order("a=b", 2) == [[0, 1]]
    for bad, message in [
        ("ab", "C is missing"),
        ("aab", "A appears twice"),
        ("az", "'Z' is not a candidate"),
        ("=a", "start with a letter"),
        ("a=", "ends with '='"),
        ("  ", "Type the order"),
    ]:
        with pytest.raises(RankingError, match=message):
            parse_order(bad, 3)


def test_queue_skip_submit_change_and_undo(store):
    (p1, r1), (p2, r2), (p3, r3) = make_set(store, prompts=3)
    assert queue(store, "s", "anna") == [p1, p2, p3]
    skip(store, "anna", p1)
    assert queue(store, "s", "anna") == [p2, p3, p1]  # skipped goes last, and stays so after a reload
    task = next_task(store, "s", "anna")
    assert task.prompt_id == p2 and sorted(task.response_ids) == r2 and task.system == "Be kind."
    assert load_task(store, p2, "anna").response_ids == task.response_ids  # a stable order per annotator
    submit(store, "anna", p2, [[r2[0]], [r2[1], r2[2]]])
    submit(store, "anna", p1, [[r1[2]], [r1[0]], [r1[1]]])
    assert queue(store, "s", "anna") == [p3]
    assert queue(store, "s", "bob") == [p1, p2, p3]
    assert [h["prompt_id"] for h in history(store, "s", "anna")] == [p1, p2]
    assert progress(store, "s", "anna") == {
        "total": 3,
        "mine": 2,
        "ranked_by_anyone": 2,
        "rankings": 2,
        "target": None,
        "reached_target": None,
    }

    # Going back and changing an earlier ranking replaces it and keeps the old one as history.
    submit(store, "anna", p2, [[r2[2]], [r2[1]], [r2[0]]])
    statuses = [r["status"] for r in store.query("SELECT status FROM rankings WHERE prompt_id = ? ORDER BY id", (p2,))]
    assert statuses == ["replaced", "current"]
    assert load_task(store, p2, "anna").current == [[r2[2]], [r2[1]], [r2[0]]]

    # Undo withdraws the newest submission and brings back what it replaced.
    assert undo_last(store, "anna") == p2
    assert load_task(store, p2, "anna").current == [[r2[0]], [r2[1], r2[2]]]
    assert undo_last(store, "anna") == p1  # then the submissions before it, newest first
    assert undo_last(store, "anna") == p2
    assert queue(store, "s", "anna") == [p1, p2, p3]
    assert undo_last(store, "anna") is None
    assert undo_last(store, "nobody") is None


def test_bad_rankings_are_refused(store):
    (p1, r1), (p2, r2) = make_set(store)
    with pytest.raises(RankingError, match="Enter your annotator name"):
        submit(store, " ", p1, [[r1[0]], [r1[1]]])
    with pytest.raises(RankingError, match="not candidates of prompt"):
        submit(store, "anna", p1, [[r1[0]], [r2[0]]])
    with pytest.raises(RankingError, match="two or more different"):
        submit(store, "anna", p1, [[r1[0]], [r1[0]]])
    assert store.query("SELECT COUNT(*) AS n FROM rankings")[0]["n"] == 0


def test_pairs_ties_conflicts_and_majority():
    def r(prompt, tiers, who="x"):
        return {"prompt_id": prompt, "tiers": tiers, "annotator": who}

    # One annotator, A > B = C > D: all pairs skip the tie B-C.
    one = [r(1, [[1], [2, 3], [4]])]
    assert [(p.chosen_id, p.rejected_id) for p in pairs_from_rankings(one, "all").pairs] == [
        (1, 2),
        (1, 3),
        (1, 4),
        (2, 4),
        (3, 4),
    ]
    assert [(p.chosen_id, p.rejected_id) for p in pairs_from_rankings(one, "best_worst").pairs] == [(1, 4)]
    assert pairs_from_rankings([r(1, [[1, 2]])], "all").pairs == []  # a full tie gives nothing

    # Three annotators on a 2-candidate prompt: 2 say 5 > 6, one says 6 > 5 -> 5 wins 2-1, one conflict.
    votes = [r(2, [[5], [6]], "a"), r(2, [[5], [6]], "b"), r(2, [[6], [5]], "c")]
    result = pairs_from_rankings(votes, "all")
    assert [(p.chosen_id, p.rejected_id, p.votes_for, p.votes_against) for p in result.pairs] == [(5, 6, 2, 1)]
    assert (result.conflicts, result.unresolved) == (1, 0)
    # 1-1: a conflict without a majority is dropped.
    result = pairs_from_rankings(votes[1:], "all")
    assert (result.pairs, result.conflicts, result.unresolved) == ([], 1, 1)


def test_agreement_matches_hand_computed_values(store):
    (p1, (a, b, c)), (p2, (d, e, f)) = make_set(store)
    submit(store, "x", p1, [[a], [b], [c]])
    submit(store, "y", p1, [[a], [c], [b]])
    # Pairs AB, AC agree, BC disagrees: 2/3. Kendall: 2 concordant, 1 discordant: tau = 1/3.
    result = agreement(store, "s")
    assert result["pairwise"] == pytest.approx(2 / 3)
    assert result["kendall_tau"] == pytest.approx(1 / 3)
    assert (result["annotators"], result["judgements"]) == (2, 3)
    # A second prompt where both agree fully (with a tie): 3 more judgements, all the same; tau-b = 1.
    submit(store, "x", p2, [[d, e], [f]])
    submit(store, "y", p2, [[d, e], [f]])
    result = agreement(store, "s")
    assert result["pairwise"] == pytest.approx(5 / 6)
    assert result["kendall_tau"] == pytest.approx((1 / 3 + 1) / 2)


def test_twenty_threads_submitting_at_once_lose_nothing(store):
    made = make_set(store, prompts=20, candidates=2)
    errors = []

    def work(i):
        try:
            for prompt_id, ids in made:
                submit(store, f"annotator-{i}", prompt_id, [[ids[i % 2]], [ids[1 - i % 2]]])
        except Exception as error:  # noqa: BLE001 - collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(current_rankings(store, "s")) == 400
    assert store.query("SELECT COUNT(*) AS n FROM annotators")[0]["n"] == 20
    assert progress(store, "s", "annotator-3")["mine"] == 20


def test_guidelines_are_stored_per_set(store):
    make_set(store, "s1")
    make_set(store, "s2")
    ranking.save_guidelines(store, "s1", "Prefer short answers.", "anna")
    ranking.save_guidelines(store, "s1", "Prefer short, polite answers.", "bob")
    assert ranking.get_guidelines(store, "s1") == "Prefer short, polite answers."
    assert ranking.get_guidelines(store, "s2") == ""


def test_the_order_box_commands_are_engine_rules(store):
    """What the Rank tab's order box does (ranking.act), callable without a page."""
    (p1, r1), (p2, r2) = make_set(store, prompts=2)
    with pytest.raises(RankingError, match="Choose a prompt set"):
        ranking.act(store, "anna", "local", None, None, "a b c")
    task, note = ranking.act(store, "anna", "local", "s", None, "")  # nothing on screen: the first task
    assert task.prompt_id == p1 and note == ""
    assert ranking.act(store, "anna", "local", "s", p1, "u") == (load_task(store, p1, "anna"), "Nothing to undo.")
    assert ranking.act(store, "anna", "local", "s", p1, "p")[1] == "No earlier ranking."
    task, note = ranking.act(store, "anna", "local", "s", p1, "s")
    assert (task.prompt_id, note) == (p2, "Skipped.")
    task, note = ranking.act(store, "anna", "local", "s", p2, "c b a")
    assert (task.prompt_id, note) == (p1, "Saved.")  # the skipped one comes back last
    shown = load_task(store, p2, "anna")
    assert shown.current == [[shown.response_ids[2]], [shown.response_ids[1]], [shown.response_ids[0]]]
    task, note = ranking.act(store, "anna", "local", "s", p1, "p")  # back to the ranking just made
    assert task.prompt_id == p2 and note.startswith("Your earlier ranking")
    task, note = ranking.act(store, "anna", "local", "s", p2, "u")
    assert (task.prompt_id, note) == (p2, "Undone: rank it again, or skip it.")
    with pytest.raises(RankingError, match="C is missing"):
        ranking.act(store, "anna", "local", "s", p2, "a b")
    assert ranking.empty_queue_note(store, "s") == "Nothing left to rank in this set for you."
    make_set(store, name="empty", prompts=1, candidates=0)
    assert ranking.empty_queue_note(store, "empty").startswith("Generate candidates for this set first")


def test_a_single_answer_is_rated_up_or_down_and_becomes_a_kto_row(store):
    """A prompt with one candidate (k=1) has nothing to order: the Rank tab rates it good (+) or bad (-), stored as
    feedback on that response, which KTO learns from."""
    from studio.data import feedback

    (p1, (r1,)), (p2, (r2,)) = make_set(store, prompts=2, candidates=1)
    with store.tx() as db:
        db.execute("UPDATE responses SET adapter = '/jobs/3/adapter' WHERE id = ?", (r2,))
    assert queue(store, "s", "anna") == [p1, p2]
    assert progress(store, "s", "anna")["total"] == 2
    task = next_task(store, "s", "anna")
    assert ranking.suggestion(store, task) is None  # nothing to order
    with pytest.raises(RankingError, match=r"one answer here: type \+ if it is good, - if it is bad"):
        ranking.act(store, "anna", "local", "s", p1, "a")
    task, note = ranking.act(store, "anna", "local", "s", p1, "+")
    assert (task.prompt_id, note) == (p2, "Saved.")
    task, note = ranking.act(store, "anna", "local", "s", p2, " - ")
    assert task is None and note == "Saved."
    assert progress(store, "s", "anna")["mine"] == 2 and queue(store, "s", "bob") == [p1, p2]
    assert [h["prompt_id"] for h in history(store, "s", "anna")] == [p2, p1]
    assert load_task(store, p2, "anna").order_text() == "-"

    up, down = feedback.listed(store)
    assert (up["kind"], up["annotator"], up["response_id"], up["model"], up["adapter"]) == ("up", "anna", r1, "m", None)
    assert (down["kind"], down["adapter"], down["answer"]) == ("down", "/jobs/3/adapter", "question 1 answer 0")
    assert up["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "question 0"}]
    assert [row["label"] for row in feedback.kto_rows(store)] == [True, False]

    # Changing one's mind replaces the rating; undo withdraws the newest one and the prompt is back in the queue.
    ranking.act(store, "anna", "local", "s", p1, "-")
    assert [f["kind"] for f in feedback.listed(store)] == ["down", "down"]
    assert ranking.act(store, "anna", "local", "s", None, "u")[0].prompt_id == p1
    assert [f["response_id"] for f in feedback.listed(store)] == [r2] and queue(store, "s", "anna") == [p1]
    # A second candidate arriving later makes it a prompt to rank again.
    with store.tx() as db:
        db.execute(
            "INSERT INTO responses (prompt_id, model, text, params, created_at) "
            "VALUES (?, 'm', 'later', '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 second'))",
            (p2,),
        )
    assert queue(store, "s", "anna") == [p1, p2] and len(load_task(store, p2, "anna").response_ids) == 2


def test_who_ranks_is_decided_by_the_engine(store):
    assert ranking.identity(" anna ") == ("anna", "local")
    assert ranking.identity("anna", username="bob") == ("bob", "auth")
    assert ranking.identity("anna", username="bob", hub_user="carol") == ("hf:carol", "hf")
    for reserved in ("gt:worker", "import:x", "hf:carol"):
        with pytest.raises(RankingError, match="reserved"):
            ranking.identity(reserved)
        ((prompt, ids),) = make_set(store, name=f"r{len(reserved)}{reserved[:2]}", prompts=1)
        with pytest.raises(RankingError, match="reserved"):  # nor can a script or the API save under such a name
            submit(store, reserved, prompt, [[ids[0]], [ids[1]]])
