"""Rank tab: an annotator orders the candidates of one prompt after another (ties, skip, undo, keyboard)."""

import json
import os
import threading

import gradio as gr
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from pages import Ctx, counting, gpu_turn, login, login_of, message, set_choices, waiting
from pages.demonstrate import demonstrations_panel
from studio.core import access, jobs
from studio.data import judges, ranking, rubric, scorers, team
from studio.data.ranking import LETTERS, MAX_SHOWN, RankingError
from studio.evaluation import active
from studio.inference import models

KEYS = """**Keyboard** (the order box keeps the focus):
- type the order best to worst, e.g. `b a=c d` (`=` ties), then **Enter** to submit
- two candidates: `a` or `b` (that one is better), `=` tie, `x` both bad, then **Enter**
- one candidate: `+` good or `-` bad, then **Enter** (a rating, which KTO learns from)
- `r` **Enter** accept the judge's suggested order (when a judge or the set's rubric has one)
- `s` **Enter** skip · `u` **Enter** undo your last submission · `p` **Enter** previous (change it)
"""
ORDER_LABEL = "Order, best to worst (e.g. B > A = C); Enter submits"
RATE_LABEL = "One answer: + if it is good, - if it is bad; Enter submits"
VIEW_OUTPUTS = 10 + MAX_SHOWN  # what the queue's page update sets (view_outputs in build_rank_tab)
FOCUS_ORDER = "() => { setTimeout(() => document.querySelector('#rank-order textarea')?.focus(), 50); }"


def identity(typed: str, request: gr.Request | None, profile: gr.OAuthProfile | None) -> tuple[str, str]:
    """(annotator name, kind) of whoever is at this page (ranking.identity holds the rule)."""
    return ranking.identity(typed, getattr(request, "username", None), profile.username if profile else None)


def _task_form() -> dict:
    """The prompt on screen, its candidates, the order box and the buttons (each types its key)."""
    progress = gr.Markdown(elem_id="rank-progress")
    system = gr.Textbox(label="System prompt", interactive=False, visible=False, elem_id="rank-system")
    prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, max_lines=12, elem_id="rank-prompt")
    candidates = [
        gr.Textbox(
            label=f"Candidate {letter}",
            interactive=False,
            lines=2,
            max_lines=30,
            visible=False,
            elem_id=f"rank-cand-{letter.lower()}",
        )
        for letter in LETTERS
    ]
    with gr.Row(visible=False) as pairwise:
        a_better = gr.Button("A better (a)")
        b_better = gr.Button("B better (b)")
        tie = gr.Button("Tie (=)")
        both_bad = gr.Button("Both bad (x)")
    with gr.Row(visible=False) as rating:
        good = gr.Button("Good (+)", elem_id="rank-good")
        bad = gr.Button("Bad (-)", elem_id="rank-bad")
    suggested = gr.Textbox(
        label="Suggested by a judge (press r then Enter, or the button, to accept it)",
        interactive=False,
        visible=False,
        elem_id="rank-suggestion",
    )
    order = gr.Textbox(label=ORDER_LABEL, autofocus=True, elem_id="rank-order")
    with gr.Row():
        submit = gr.Button("Submit", variant="primary", elem_id="rank-submit")
        accept = gr.Button("Accept suggestion (r)", elem_id="rank-accept")
        skip = gr.Button("Skip (s)")
        undo = gr.Button("Undo last (u)")
        previous = gr.Button("Previous (p)")
    status = gr.Markdown(elem_id="rank-status")
    # Each button types its key into the submission, as the order box would.
    keys = [(a_better, "a"), (b_better, "b"), (tie, "="), (both_bad, "x"), (good, "+"), (bad, "-")]
    keys += [(skip, "s"), (undo, "u"), (previous, "p"), (accept, "r")]
    return {
        "progress": progress,
        "system": system,
        "prompt": prompt,
        "candidates": candidates,
        "pairwise": pairwise,
        "rating": rating,
        "suggested": suggested,
        "order": order,
        "submit": submit,
        "status": status,
        "keys": keys,
    }


def build_rank_tab(ctx: Ctx) -> dict:
    on_space = bool(os.environ.get("SPACE_ID"))
    # What is on screen lives in the page (hidden components, not gr.State): a submission goes from the page's
    # JavaScript to the studio's own route (RANK_ROUTE), which reads and returns them.
    current = gr.Number(None, precision=0, visible=False, elem_id="rank-current")  # the prompt id on screen
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                annotator = gr.Textbox(
                    label="Your name (annotator)",
                    placeholder="type it, then Enter",
                    elem_id="rank-annotator",
                    visible=not on_space,
                    scale=2,
                )
                if on_space:
                    gr.LoginButton()
                prompt_set = gr.Dropdown([], label="Prompt set", elem_id="rank-set", scale=2)
            form = _task_form()
            with gr.Accordion("Change an earlier ranking", open=False) as earlier_box:
                earlier = gr.Dropdown([], label="Prompts you ranked, newest first", elem_id="rank-earlier")
            demonstrations_panel(ctx, prompt_set, annotator)
        _guidelines_column(ctx, prompt_set, annotator, form["status"], current)
    (progress, system, prompt, candidates, pairwise, rating, suggested, order, status) = (
        form[k]
        for k in ("progress", "system", "prompt", "candidates", "pairwise", "rating", "suggested", "order", "status")
    )

    # What the page shows now: (candidates, system prompt shown, suggestion shown); None before the first task. When
    # the next task has the same layout, the update sends plain values: a Gradio update that changes a component's
    # properties (visible, label) costs the server a copy of that component per session, and that cost is most of a
    # submission's time when a team ranks at once (bench/annotators.py).
    layout = gr.JSON(None, visible=False, elem_id="rank-layout")
    view_outputs = [current, layout, system, prompt, *candidates, pairwise, rating, suggested, order, progress, status]
    assert len(view_outputs) == VIEW_OUTPUTS  # the route (rank_router) answers with this many updates

    def open_earlier(
        typed, set_name, shown_layout, prompt_id, request: gr.Request, profile: gr.OAuthProfile | None = None
    ):
        if prompt_id is None:
            return [gr.skip()] * len(view_outputs)
        try:
            who, _ = identity(typed, request, profile)
        except RankingError as error:
            return [gr.skip()] * (len(view_outputs) - 1) + [message(str(error), error=True)]
        return _view(
            ctx.store,
            ranking.load_task(ctx.store, prompt_id, who),
            who,
            set_name,
            message("Your earlier ranking: change it and press Enter."),
            shown_layout,
        )

    def list_earlier(typed, set_name, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The prompts this annotator ranked, newest first: listed when the panel opens or the list is clicked,
        not on every submission."""
        try:
            who, _ = identity(typed, request, profile)
        except RankingError:
            return gr.update(choices=[], value=None)
        history = ranking.history(ctx.store, set_name, who) if set_name else []
        return gr.update(choices=[(h["text"][:90], h["prompt_id"]) for h in history], value=None)

    # Wiring
    identity_inputs = [annotator, prompt_set]
    # Opening the queue and every submission (the order box, Submit and every key's button) go from the page's
    # JavaScript straight to the studio's route (rank_router), not through Gradio's event machinery, which costs the
    # server far more per submission, so that a team submitting at once does not wait on it (bench/annotators.py
    # measures both). The route returns the same update list that a Gradio event would, and the page applies
    # it to these outputs. always_last: a trigger that comes while the page is still waiting for an answer runs
    # next instead of being dropped, so the page load's start (the set list filled) and the typed name's come in
    # order. The earlier-rankings list reads SQLite only and runs outside Gradio's queue.
    team = {"queue": False}
    shown_for = gr.JSON(None, visible=False, elem_id="rank-shown-for")  # (annotator, set) the prompt was opened for
    gr.on(
        [annotator.submit, prompt_set.change],
        None,
        [*identity_inputs, current, layout, shown_for],
        [*view_outputs, shown_for],
        js=_submit_js(len(view_outputs) + 1, opening=True),
        trigger_mode="always_last",
    ).then(None, js=FOCUS_ORDER)
    act_inputs = [annotator, prompt_set, current, layout]
    gr.on(
        [order.submit, form["submit"].click],
        None,
        [*act_inputs, order],
        view_outputs,
        js=_submit_js(len(view_outputs)),
        trigger_mode="always_last",
    ).then(None, js=FOCUS_ORDER)
    for button, key in form["keys"]:
        button.click(
            None, act_inputs, view_outputs, js=_submit_js(len(view_outputs), key), trigger_mode="always_last"
        ).then(None, js=FOCUS_ORDER)
    earlier.input(open_earlier, [annotator, prompt_set, layout, earlier], view_outputs, **team).then(
        None, js=FOCUS_ORDER
    )
    gr.on([earlier_box.expand, earlier.focus], list_earlier, identity_inputs, earlier, **team)

    def on_load(request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Fill the prompt sets; with a login (--auth or the Space's), the annotator is that user."""
        who = identity("", request, profile)[0] if profile is not None or getattr(request, "username", None) else None
        return set_choices(ctx.store), gr.update(value=who, interactive=False) if who else gr.skip()

    return {
        "prompt_set": prompt_set,
        "load": on_load,
        "load_outputs": [prompt_set, annotator],
    }


def _start(
    store, typed, set_name, shown_prompt, shown_layout, shown_for, username: str | None, hub_user: str | None
) -> list:
    """Open the annotator's queue (the name's Enter, a set chosen, the page's load): the first prompt to rank.
    Called by the route that the page's JavaScript posts to (rank_router)."""
    if not (typed or "").strip() and not username and not hub_user:
        return [
            *_view(store, None, None, set_name, message("Type your name above and press Enter to start ranking.")),
            None,
        ]
    try:
        who, _ = ranking.identity(typed, username, hub_user)
    except RankingError as error:
        return [*_view(store, None, None, set_name, message(str(error), error=True)), None]
    if not set_name:
        return [*_view(store, None, who, None, message("Choose a prompt set.", error=True)), None]
    if shown_prompt is not None and shown_for is not None and tuple(shown_for) == (who, set_name):
        # Already ranking this set under this name (the page's load refilling the set list after the name was
        # typed, or Enter pressed again): nothing to change. Rendering the queue again here would race with a
        # submission made meanwhile (the submission runs outside the queue) and could put its prompt back on
        # screen with the order box cleared.
        return [gr.skip()] * (VIEW_OUTPUTS + 1)
    return [
        *_view(store, ranking.next_task(store, set_name, who), who, set_name, shown_layout=shown_layout),
        (who, set_name),
    ]


def _act(store, typed, set_name, prompt_id, shown_layout, text, username: str | None, hub_user: str | None) -> list:
    """Everything typed in the order box (and every button, which types its key): rank, skip, undo, previous.
    Called by the route that the page's JavaScript posts to (rank_router)."""
    try:
        who, kind = ranking.identity(typed, username, hub_user)
        task, note = ranking.act(store, who, kind, set_name, prompt_id, text, ranking.TEAM_MAX_AGE)
    except RankingError as error:
        return [gr.skip()] * (VIEW_OUTPUTS - 1) + [message(str(error), error=True)]
    return _view(store, task, who, set_name, message(note) if note else "", shown_layout)


def _view(
    store,
    task: ranking.Task | None,
    who: str | None,
    set_name: str | None,
    note: str = "",
    shown_layout: tuple | None = None,
) -> list:
    """Every output of the queue's page update (RANK_OUTPUTS) for `task` (None: the queue is empty)."""
    # While there is more to rank, the team's counts may lag by TEAM_MAX_AGE; the last screen reads them now.
    stats = (
        ranking.progress(store, set_name, who, ranking.TEAM_MAX_AGE if task is not None else 0) if set_name else None
    )
    progress_text = (
        f"Ranked by you: {stats['mine']} / {stats['total']} prompts · by anyone: "
        f"{stats['ranked_by_anyone']} / {stats['total']} ({stats['rankings']} rankings)"
        if stats
        else ""
    )
    if stats and stats["target"]:
        progress_text += f" · {stats['reached_target']} / {stats['total']} reached {stats['target']} annotators"
    if set_name:
        progress_text += " · " + active.describe(store, set_name)
    if task is None:
        done = ranking.empty_queue_note(store, set_name) if who and set_name else ""
        return [
            None,
            None,
            gr.update(visible=False),
            gr.update(value=done),
            *[gr.update(visible=False)] * MAX_SHOWN,
            gr.update(visible=False),
            gr.update(visible=False),
            gr.update(visible=False),
            "",
            message(progress_text),
            note,
        ]
    if task.total_responses > MAX_SHOWN:
        note = (note + " " if note else "") + (f"Showing the {MAX_SHOWN} newest of {task.total_responses} candidates.")
    hint = ranking.suggestion(store, task)
    count = len(task.responses)
    now = (count, bool(task.system), hint is not None)
    same = shown_layout is not None and tuple(shown_layout) == now
    if same:  # plain values: nothing but the text changes
        shown = [*task.responses, *[gr.skip()] * (MAX_SHOWN - count)]
        rows = [gr.skip(), gr.skip()]
    else:
        shown = [gr.update(value=text, visible=True) for text in task.responses]
        shown += [gr.update(value="", visible=False)] * (MAX_SHOWN - count)
        rows = [gr.update(visible=count == 2), gr.update(visible=count == 1)]
    system_update = task.system if same else gr.update(value=task.system, visible=bool(task.system))
    hint_text = hint[1] if hint else ""
    hint_update = hint_text if same else gr.update(value=hint_text, visible=hint is not None)
    order_update = (
        task.order_text()
        if same
        else gr.update(value=task.order_text(), label=RATE_LABEL if count == 1 else ORDER_LABEL)
    )
    return [
        task.prompt_id,
        now,
        system_update,
        task.text,
        *shown,
        *rows,
        hint_update,
        order_update,
        message(progress_text),
        note,
    ]


RANK_ROUTE = "studio/rank"  # relative to the page, so that it works under a proxy's path too


class Submission(BaseModel):
    name: str | None = None  # the typed name (ignored behind a login)
    set: str | None = None
    prompt_id: int | None = None  # on screen
    layout: list | None = None  # on screen
    text: str = ""  # the order box, or a button's key
    open: bool = False  # open the queue instead (the name's Enter, a set chosen)
    shown_for: list | None = None  # with open: the (annotator, set) the prompt on screen was opened for


def rank_router(store) -> APIRouter:
    """POST /studio/rank: opening the Rank tab's queue, or one submission, answered with the page's update list
    (Gradio's update format, which the page's JavaScript applies; VIEW_OUTPUTS long, one more for an opening). Behind
    --auth the annotator is the login (Gradio's own session cookie; none: 401, the list says to log in again, and
    nothing is saved); on a Space, the Hugging Face login."""
    router = APIRouter()

    @router.post("/" + RANK_ROUTE)
    async def submit(body: Submission, request: Request) -> JSONResponse:
        username, hub_user = login_of(request)
        if request.app.auth and username is None and hub_user is None:
            said = [gr.skip()] * (VIEW_OUTPUTS - 1) + [
                message(
                    "You are not logged in (the login may have expired): reload the page and log in; "
                    "nothing was saved.",
                    error=True,
                )
            ]
            return JSONResponse(said + [gr.skip()] if body.open else said, status_code=401)
        if body.open:
            call = (_start, store, body.name, body.set, body.prompt_id, body.layout, body.shown_for, username, hub_user)
        else:
            call = (_act, store, body.name, body.set, body.prompt_id, body.layout, body.text, username, hub_user)
        # In a worker thread, not on the event loop: opening the queue scores the candidates with the set's rubric
        # (the suggestion), and the database may be held by another writer of this process (an import, the job
        # watcher); either would hold up every other request of every user.
        return JSONResponse(await run_in_threadpool(*call))

    return router


def _submit_js(outputs: int, key: str | None = None, opening: bool = False) -> str:
    """The page's side of a submission (or, `opening`, of opening the queue): post what is on screen and the order
    (or `key`) to RANK_ROUTE, return its update list (`outputs` long); if the app does not answer, say so in the
    status line and change nothing else."""
    if opening:
        params = "name, set, prompt_id, layout, shown_for"
        fields = params + ", open: true"
    else:
        params = "name, set, prompt_id, layout" + ("" if key is not None else ", text")
        fields = f"name, set, prompt_id, layout, text: {json.dumps(key) if key is not None else 'text'}"
    status = outputs - 2 if opening else outputs - 1  # the status line's place in the outputs
    return f"""async ({params}) => {{
  const failed = (said) => {{
    const out = Array({outputs}).fill(undefined);
    out[{status}] = "**Error:** " + said;
    return out;
  }};
  try {{
    const answer = await fetch("{RANK_ROUTE}", {{method: "POST", headers: {{"Content-Type": "application/json"}},
      credentials: "same-origin", body: JSON.stringify({{{fields}}})}});
    const said = await answer.json().catch(() => null);
    return Array.isArray(said) ? said
      : failed("the app answered " + answer.status + "; nothing was saved. Press Enter again.");
  }} catch (error) {{
    return failed("the app did not answer; nothing was saved. Press Enter again when it is back.");
  }}
}}"""


def _guidelines_column(ctx: Ctx, prompt_set, annotator, status, current) -> None:
    """The prompt set's guidelines and rubric (edited here, with who edited them), the keys, the team panel."""
    with gr.Column(scale=2):
        guidelines = gr.Textbox(
            label="Guidelines for annotators (this prompt set)", lines=8, max_lines=30, elem_id="rank-guidelines"
        )
        save_guidelines = gr.Button("Save guidelines")
        with gr.Accordion("Rubric: the guidelines as checks (YAML)", open=False):
            rubric_text = gr.Code(
                language="yaml",
                lines=14,
                elem_id="rank-rubric",
                label="Scores answers on the Evaluate tab and in reports, suggests an order "
                "here, and can reward online RL. Empty: no rubric.",
            )
            save_rubric = gr.Button("Check and save the rubric", elem_id="rank-rubric-save")
            rubric_status = gr.Markdown(elem_id="rank-rubric-status")
        gr.Markdown(KEYS)
        _team_panel(ctx, prompt_set, annotator, current)

    def show_guidelines(set_name):
        if not set_name:
            return "", "", ""
        return ranking.get_guidelines(ctx.store, set_name), rubric.get_text(ctx.store, set_name), ""

    def editor(typed, request, profile) -> str | None:
        """Who edits the guidelines or the rubric (recorded with the text); None before a name is given."""
        try:
            return identity(typed, request, profile)[0]
        except RankingError:
            return None

    def store_rubric(set_name, text, typed, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not set_name:
            return message("Choose a prompt set.", error=True)
        try:
            checks = rubric.save(ctx.store, set_name, text, editor(typed, request, profile), by=login(request, profile))
        except (rubric.RubricError, access.TeamError) as error:
            return message(f"{error} Nothing was saved.", error=True)
        if checks is None:
            return message(f"The rubric of {set_name} is removed.")
        return message(f"Rubric saved for {set_name}: {len(checks.checks)} checks.")

    def store_guidelines(set_name, text, typed, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not set_name:
            return message("Choose a prompt set.", error=True)
        try:
            ranking.save_guidelines(
                ctx.store, set_name, text, editor(typed, request, profile), by=login(request, profile)
            )
        except (access.TeamError, RankingError) as error:
            return message(f"{error} Nothing was saved.", error=True)
        return message("Guidelines saved for this prompt set.")

    prompt_set.change(show_guidelines, prompt_set, [guidelines, rubric_text, rubric_status])
    save_guidelines.click(store_guidelines, [prompt_set, guidelines, annotator], status)
    save_rubric.click(store_rubric, [prompt_set, rubric_text, annotator], rubric_status)


TEAM_HEADERS = ["Annotator", "Ranked", "With majority", "Gold", "Quality (weight)", "Flag"]
TEAM_WIDTHS = ["21%", "14%", "20%", "11%", "21%", "13%"]


def _team_panel(ctx: Ctx, prompt_set, annotator, current) -> None:
    """For the lead: the overlap target, gold answers, the judge, the queue's order, agreement and each annotator's
    quality (computed when asked for, never on an annotator's submit)."""
    with gr.Accordion("Team: target, gold, agreement, quality", open=False, elem_id="rank-team"):
        team_status = gr.Markdown(elem_id="rank-team-status", render=False)  # shown under the buttons, all answer there
        target = _target_and_gold(ctx, prompt_set, annotator, current, team_status)
        judge_prompt = _judge_section(ctx, prompt_set, team_status)
        order_source = _queue_order_section(ctx, prompt_set, team_status)
        show = gr.Button("Show agreement and annotators", elem_id="rank-team-show")
        team_status.render()
        people = gr.Dataframe(
            headers=TEAM_HEADERS, interactive=False, wrap=True, column_widths=TEAM_WIDTHS, elem_id="rank-team-table"
        )

    def show_target(set_name):
        sources = (
            [("disagreement (people and judges)", active.DISAGREEMENT)]
            + [
                (f"job {j['id']} ({j['method']}): implicit reward margin", f"{jobs.JOB_KEY}{j['id']}")
                for j in jobs.finished(ctx.store, "chat")
            ]
            + [
                (f"job {j['id']} (reward model): reward margin", scorers.reward_key(j["id"]))
                for j in jobs.finished(ctx.store, "reward")
            ]
        )
        current = active.active_order(ctx.store, set_name) if set_name else None
        return (
            team.get_target(ctx.store, set_name) or 0 if set_name else 0,
            gr.update(choices=sources, value=current or active.DISAGREEMENT),
            judges.judge_prompt(ctx.store, set_name) if set_name else judges.LLM_PROMPT,
        )

    def show_team(set_name):
        if not set_name:
            return message("Choose a prompt set.", error=True), []
        found = team.report(ctx.store, set_name)
        lines = [f"{found['annotators']} annotators, {found['judgements']} pairwise judgements on prompts they share."]
        if found["pairwise"] is not None:
            alpha = "n/a" if found["alpha"] is None else f"{found['alpha']:.2f}"
            tau = "n/a" if found["kendall_tau"] is None else f"{found['kendall_tau']:.2f}"
            lines.append(
                f"Krippendorff's alpha (ordinal) {alpha} · pairwise agreement {found['pairwise']:.2f} · "
                f"Kendall's tau-b {tau}."
            )
        else:
            lines.append("No prompt has been ranked by two annotators yet.")
        if found["target"]:
            lines.append(f"Target {found['target']} annotators per prompt: {found['reached']} prompts reached it.")
        flagged = [p["annotator"] for p in found["people"] if p["flagged"]]
        if flagged:
            lines.append(
                f"Low quality (check their rankings, or weigh votes by quality when training): {', '.join(flagged)}."
            )
        for j in judges.agreement(ctx.store, set_name):
            if j["compared"]:
                lines.append(
                    f"{j['judge']}: people's rankings identical to it {j['identical']:.0%}, pairwise "
                    f"agreement {j['pairwise']:.0%} over {j['compared']} rankings; its suggestion accepted "
                    f"unchanged: {j['accepted']}."
                )
            else:
                lines.append(f"{j['judge']} ranked {j['prompts']} prompts; nobody has ranked them yet.")
        rows = [
            [
                p["annotator"],
                p["rankings"],
                "" if p["with_majority"] is None else f"{p['with_majority']:.0%} of {p['compared']}",
                f"{p['gold'][0]} / {p['gold'][1]}" if p["gold"][1] else "",
                "" if p["accuracy"] is None else f"{p['accuracy']:.2f} ({p['weight']:.2f})",
                "low" if p["flagged"] else "",
            ]
            for p in found["people"]
        ]
        return "\n".join(f"- {message(line)}" for line in lines), rows

    prompt_set.change(show_target, prompt_set, [target, order_source, judge_prompt])
    show.click(show_team, prompt_set, [team_status, people])


def _target_and_gold(ctx: Ctx, prompt_set, annotator, current, team_status):
    """The overlap target of the set, and the gold answer of the prompt on screen; returns the target box."""
    with gr.Row():
        target = gr.Number(
            0,
            precision=0,
            minimum=0,
            maximum=50,
            label="Annotators per prompt (0: no target)",
            elem_id="rank-target",
            scale=2,
        )
        save_target = gr.Button("Set the target", elem_id="rank-target-save", scale=1)
    with gr.Row():
        gold_letter = gr.Textbox(
            label="Gold: the known best candidate of the prompt on screen (letter; empty clears)",
            max_lines=1,
            elem_id="rank-gold",
            scale=2,
        )
        save_gold = gr.Button("Mark gold", elem_id="rank-gold-save", scale=1)

    def do_target(set_name, value, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not set_name:
            return message("Choose a prompt set.", error=True)
        try:
            team.set_target(ctx.store, set_name, int(value or 0), by=login(request, profile))
        except (access.TeamError, ValueError) as error:
            return message(str(error), error=True)
        return message(
            f"Each prompt of {set_name} now wants {int(value)} annotators: the queue serves prompts below that first."
            if value
            else f"{set_name} has no overlap target: the queue follows the set."
        )

    def do_gold(typed, set_name, prompt_id, letter, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if prompt_id is None:
            return message("Open a prompt to rank first (its candidates are lettered as you see them).", error=True)
        try:
            who, _ = identity(typed, request, profile)
            response = ranking.response_for_letter(ctx.store, prompt_id, who, letter)
            team.mark_gold(ctx.store, prompt_id, response, by=login(request, profile))
        except (access.TeamError, ranking.RankingError) as error:
            return message(str(error), error=True)
        return message(
            f"Candidate {letter.strip().upper()} is this prompt's gold answer."
            if response
            else "This prompt is no longer gold."
        )

    save_target.click(do_target, [prompt_set, target], team_status, queue=False)
    save_gold.click(do_gold, [annotator, prompt_set, current, gold_letter], team_status, queue=False)
    return target


def _judge_section(ctx: Ctx, prompt_set, team_status):
    """The judge that pre-ranks the candidates (the rubric or an LLM); returns its prompt box."""
    with gr.Row():
        judge_kind = gr.Radio(
            [("the set's rubric", "rubric"), ("an LLM judge", "llm")],
            value="rubric",
            label="Judge that pre-ranks the candidates (people see its order as a suggestion)",
            elem_id="rank-judge-kind",
            scale=2,
        )
        judge_model = gr.Dropdown(
            judges.judge_models(ctx.store),
            value="embedded",
            allow_custom_value=True,
            scale=1,
            label="LLM judge model (Hub id, folder or server:<name>/<model>)",
            elem_id="rank-judge-model",
        )
    # A server added on the Generate tab (by anyone) since the page loaded is listed when the list is opened.
    judge_model.focus(lambda: gr.update(choices=judges.judge_models(ctx.store)), None, judge_model, queue=False)
    with gr.Accordion("LLM judge prompt", open=False):
        judge_prompt = gr.Textbox(
            judges.LLM_PROMPT,
            lines=6,
            label="{question}, {answer_a} and {answer_b} are "
            "filled in; every pair is asked in both orders; kept for the set when the "
            "judge runs",
            elem_id="rank-judge-prompt",
        )
    with gr.Row():
        prerank = gr.Button("Pre-rank the set with the judge", elem_id="rank-judge-go")
        prerank_cancel = gr.Button("Cancel", variant="stop")

    def do_prerank(
        set_name,
        kind,
        model,
        prompt_text,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
        progress=gr.Progress(),
    ):
        if not set_name:
            return message("Choose a prompt set.", error=True)
        event = ctx.cancel_events[request.session_hash] = threading.Event()
        try:
            progress(0, desc="Loading the judge" if kind == "llm" else "Scoring with the rubric")
            name, done = judges.prerank(
                ctx.store,
                set_name,
                kind,
                (model or "embedded").strip(),
                prompt_text,
                cancel=event,
                on_progress=counting(progress, "prompts"),
                by=login(request, profile),
            )
        except (judges.JudgeError, access.TeamError, rubric.RubricError, ValueError, KeyError) as error:
            return message(str(error), error=True)
        finally:
            ctx.cancel_events.pop(request.session_hash, None)
        return message(
            f"{name} ranked {done} prompts of {set_name}: annotators see its order as a suggestion (r accepts it)."
        )

    prerank.click(
        lambda kind, model: waiting(model if kind == "llm" else None),
        [judge_kind, judge_model],
        team_status,
        queue=False,
    ).then(
        lambda kind, model: gpu_turn(model) if kind == "llm" else None,  # the rubric needs no model
        [judge_kind, judge_model],
        None,
        concurrency_limit=None,
    ).then(
        do_prerank,
        [prompt_set, judge_kind, judge_model, judge_prompt],
        team_status,
        concurrency_limit=1,
        concurrency_id="model",
    )
    prerank_cancel.click(ctx.canceller("Cancelling: judged prompts are kept…"), None, team_status)
    return judge_prompt


def _queue_order_section(ctx: Ctx, prompt_set, team_status):
    """The queue's order: most informative prompts first, by an adapter, a reward model or disagreement."""
    with gr.Row():
        order_source = gr.Dropdown(
            [],
            label="Queue order: most informative prompts first, by",
            scale=2,
            info="a finished job's adapter (smallest implicit-reward margin), a reward "
            "model (smallest margin), or disagreement",
            elem_id="rank-order-source",
        )
        order_go = gr.Button("Order the queue", elem_id="rank-order-go", scale=1)
        order_off = gr.Button("The set's own order", scale=1)

    def do_order(set_name, source, request: gr.Request, profile: gr.OAuthProfile | None = None, progress=gr.Progress()):
        if not set_name:
            return message("Choose a prompt set.", error=True)
        try:
            progress(0, desc=f"Scoring the candidates with {source}")
            count = active.set_active_order(
                ctx.store,
                set_name,
                source or None,
                by=login(request, profile),
                on_progress=counting(progress, "prompts"),
            )
        except (active.ActiveError, access.TeamError, scorers.ScorerError, models.ModelError) as error:
            return message(str(error), error=True)
        return message(
            f"{active.describe(ctx.store, set_name)} ({count} prompts scored; annotators get it with "
            "their next prompt)."
            if source
            else active.describe(ctx.store, set_name)
        )

    order_go.click(waiting, None, team_status, queue=False).then(
        do_order, [prompt_set, order_source], team_status, concurrency_limit=1, concurrency_id="model"
    )
    order_off.click(do_order, [prompt_set, gr.State(None)], team_status)
    return order_source
