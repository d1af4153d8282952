"""Evaluate tab: models answer a held-out prompt set; blind A/B votes; win rates, Bradley-Terry; automatic scores."""

import threading

import gradio as gr
import pandas as pd

from pages import Ctx, cancel_button, cancellable, keep_choice, message, set_choices, waiting
from pages.rank import identity
from studio.data import scorers
from studio.data.prompts import PromptError, list_prompt_sets
from studio.data.ranking import RankingError
from studio.evaluation import evaluate
from studio.evaluation.evaluate import EvaluationError
from studio.inference import chat, models
from studio.inference.decode import GenerationParams

KEYS = "**Keyboard:** in the vote box type `a` (A better), `b` (B better), `=` (tie) or `x` (both bad), then Enter."
RESULT_HEADERS = [
    "Model",
    "vs",
    "Votes",
    "Wins",
    "Ties",
    "Losses",
    "Both bad",
    "Win rate (95% CI)",
    "At least as good (95% CI)",
]
SCORE_HEADERS = [
    "Scorer",
    "Model",
    "n",
    "Mean (95% CI)",
    "Difference vs baseline (95% CI)",
    "p (paired t)",
    "At least as good as the baseline (95% CI)",
    "Noise floor: baseline vs itself",
]
# Column widths that keep every header's words whole at 1280 pixels (the names and intervals get the room).
RESULT_WIDTHS = ["15%", "9%", "6%", "5%", "5%", "6%", "5%", "12%", "13%"]
LENGTH_WIDTHS = ["14%", "10%"]
ANNOTATOR_WIDTHS = ["10%", "13%", "9%", "7%", "6%", "6%", "7%", "6%", "17%", "19%"]
SCORE_WIDTHS = ["9%", "13%", "4%", "12%", "16%", "10%", "18%", "18%"]


def score_chart(table: list[dict]):
    """Bars of each model's mean score with its 95% interval as an error bar, one panel per scorer (their scales
    differ). Scores in 0..1 (rubric, toxicity) are drawn on the whole 0..1 axis, so that 0.01 against 0.02 does not
    look like a chasm."""
    if not table:
        return None
    import altair as alt

    panels = []
    for scorer in dict.fromkeys(r["scorer"] for r in table):
        rows = pd.DataFrame(
            [{k: r[k] for k in ("model", "mean", "low", "high")} for r in table if r["scorer"] == scorer]
        )
        scale = alt.Scale(domain=[0, 1]) if evaluate.bounded(scorer) else alt.Scale(zero=False)
        base = alt.Chart(rows).encode(x=alt.X("model:N", title=None, axis=alt.Axis(labelAngle=0)))
        panels.append(
            alt.layer(
                base.mark_bar(opacity=0.7).encode(
                    y=alt.Y("mean:Q", title=scorer, scale=scale), tooltip=["model", "mean", "low", "high"]
                ),
                base.mark_errorbar(ticks=True).encode(y=alt.Y("low:Q", title=scorer, scale=scale), y2="high:Q"),
            ).properties(width=220, height=200, title=scorer)
        )
    return alt.hconcat(*panels)


LENGTH_HEADERS = ["Win rate at equal length (95% CI)", "Mean words: model / vs"]


def _length_cells(entry: dict | None) -> list[str]:
    if not entry:
        return ["", ""]
    return [_ci(entry["lc"]), f"{entry['words'][0]:.0f} / {entry['words'][1]:.0f}"]


def _ci(value) -> str:
    return "n/a" if value is None else f"{value[0]:.1%} ({value[1]:.1%} to {value[2]:.1%})"


def _new_evaluation_form() -> dict:
    """The models, the prompt set and the settings of a new evaluation."""
    defaults = GenerationParams()
    gr.Markdown("### New evaluation\nEvery chosen model answers every prompt; the first model is the baseline.")
    chosen = gr.Dropdown(
        [],
        multiselect=True,
        allow_custom_value=True,
        elem_id="ev-models",
        label="Models (first = baseline)",
        info="base, jobs, or type an adapter folder/Hub id",
    )
    prompt_set = gr.Dropdown([], label="Prompt set (a held-out one by default)", elem_id="ev-set")
    set_note = gr.Markdown(elem_id="ev-set-note")
    limit = gr.Number(0, precision=0, minimum=0, label="Prompts: the first N (0 = all)", elem_id="ev-limit")
    max_new_tokens = gr.Slider(
        8, 1024, value=defaults.max_new_tokens, step=8, label="Max new tokens", elem_id="ev-max-tokens"
    )
    with gr.Row():
        samples = gr.Number(
            3,
            precision=0,
            minimum=1,
            maximum=8,
            label="Answers per prompt (seeds)",
            info="2 or more give the noise floor",
            elem_id="ev-samples",
        )
        seed = gr.Number(-1, precision=0, minimum=-1, label="Seed (-1: new)")
    with gr.Row():
        create = gr.Button("Generate answers", variant="primary", elem_id="ev-create")
        cancel = cancel_button(elem_id="ev-cancel")
    create_status = gr.Markdown(elem_id="ev-create-status")
    return {
        "chosen": chosen,
        "prompt_set": prompt_set,
        "set_note": set_note,
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "samples": samples,
        "seed": seed,
        "create": create,
        "cancel": cancel,
        "create_status": create_status,
    }


def _vote_form() -> dict:
    """The blind A/B vote: who votes, on which evaluation, the two answers and the vote buttons."""
    gr.Markdown("### Blind A/B vote\nWhich model wrote which answer is shown only after your vote.")
    with gr.Row():
        annotator = gr.Textbox(label="Your name (annotator)", placeholder="type it, then Enter", elem_id="ev-annotator")
        evaluation = gr.Dropdown([], label="Evaluation", elem_id="ev-pick")
    progress = gr.Markdown(elem_id="ev-progress")
    prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, elem_id="ev-prompt")
    with gr.Row():
        left = gr.Textbox(label="Answer A", interactive=False, lines=6, max_lines=30, elem_id="ev-a")
        right = gr.Textbox(label="Answer B", interactive=False, lines=6, max_lines=30, elem_id="ev-b")
    with gr.Row():
        buttons = {
            choice: gr.Button(label)
            for choice, label in (
                ("left", "A better (a)"),
                ("right", "B better (b)"),
                ("tie", "Tie (=)"),
                ("both_bad", "Both bad (x)"),
            )
        }
    key = gr.Textbox(label="Vote key, then Enter", elem_id="ev-key", max_lines=1)
    gr.Markdown(KEYS)
    reveal = gr.Markdown(elem_id="ev-reveal")
    return {
        "annotator": annotator,
        "evaluation": evaluation,
        "progress": progress,
        "prompt": prompt,
        "left": left,
        "right": right,
        "buttons": buttons,
        "key": key,
        "reveal": reveal,
    }


def _show(task, note=""):
    """A comparison on screen (or the line saying none is left)."""
    if task is None:
        return (None, "", "", "", message("No comparison left for you in this evaluation."), note)
    return (
        task,
        task.prompt["text"],
        task.left_text,
        task.right_text,
        f"Comparison {task.done + 1} of {task.total}.",
        note,
    )


def build_evaluate_tab(ctx: Ctx) -> dict:
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            new = _new_evaluation_form()
        with gr.Column(scale=2):
            vote = _vote_form()
    chosen, prompt_set, evaluation = new["chosen"], new["prompt_set"], vote["evaluation"]
    tables, table_outputs, scorer = _results_section(ctx, evaluation)

    def evaluation_choices(selected=None):
        rows = evaluate.list_evaluations(ctx.store)
        return keep_choice(
            [
                (
                    f"{r['id']}: {r['models']} on {r['prompt_set']} ({r['prompts']} prompts, "
                    f"{r['votes']} votes, {r['status']})",
                    r["id"],
                )
                for r in rows
            ],
            selected,
        )

    def pick_set(keys):
        try:
            picked = [chat.pick(ctx.store, k) for k in keys or []]
        except ValueError:  # models.ModelError, servers.ServerError
            picked = []
        name, note = evaluate.held_out_set(ctx.store, picked, [s["name"] for s in list_prompt_sets(ctx.store)])
        return set_choices(ctx.store, name), message(note)

    def select(current_models, current_eval, current_scorer):
        options = chat.options(ctx.store)
        kept = chat.default_keys(options, current_models)
        choices = scorers.choices(ctx.store)
        return (
            gr.update(choices=options, value=kept),
            *pick_set(kept),
            evaluation_choices(current_eval),
            gr.update(choices=choices, value=current_scorer or choices[0]),
        )

    def run(keys, set_name, first_n, max_new, seed_, samples_, request: gr.Request, progress_=gr.Progress()):
        try:
            picked = [chat.pick(ctx.store, k) for k in keys or []]
            params = GenerationParams(k=1, max_new_tokens=int(max_new), seed=int(seed_ if seed_ is not None else -1))
            if not set_name:
                raise EvaluationError("Choose a prompt set.")
            event = ctx.cancel_events[request.session_hash] = threading.Event()
            progress_(0, desc="Loading the models")
            trained = [c.job_id for c in picked if c.job_id is not None]
            shared, total = evaluate.overlap(ctx.store, trained, set_name)
            made = evaluate.create_evaluation(
                ctx.store,
                set_name,
                picked,
                params,
                int(first_n or 0),
                cancel=event,
                on_progress=lambda done, total: progress_((done, total), desc="prompts", unit="prompts"),
                samples=int(samples_ or 1),
                exclude_jobs=trained,
            )
        except (models.ModelError, EvaluationError, PromptError, ValueError) as error:
            return message(str(error), error=True), gr.skip()
        finally:
            ctx.cancel_events.pop(request.session_hash, None)
        status = evaluate.list_evaluations(ctx.store)[0]
        left_out = (
            f" {shared} of the set's {total} prompts were left out: the chosen jobs trained on them." if shared else ""
        )
        return (
            message(
                f"Evaluation {made}: {status['prompts']} prompts answered by every model ({status['status']})."
                f"{left_out} Vote on the right."
            ),
            evaluation_choices(made),
        )

    # Wiring
    chosen.change(pick_set, chosen, [prompt_set, new["set_note"]])

    def used(keys) -> list[str]:
        return [chat.keyed_model(key) for key in keys or []]

    cancellable(
        new["create"].click(lambda keys: waiting(*used(keys)), chosen, new["create_status"], queue=False),
        new["cancel"],
        run,
        [chosen, prompt_set, *(new[k] for k in ("limit", "max_new_tokens", "seed", "samples"))],
        [new["create_status"], evaluation],
        gpu=(used, [chosen]),
        concurrency_limit=1,
        concurrency_id="model",
    )
    new["cancel"].click(ctx.canceller("Cancelling: answered prompts are kept…"), None, new["create_status"])
    _wire_votes(ctx, vote, tables, table_outputs)
    return {
        "select": select,
        "select_inputs": [chosen, evaluation, scorer],
        "select_outputs": [chosen, prompt_set, new["set_note"], evaluation, scorer],
    }


def _wire_votes(ctx: Ctx, vote: dict, tables, table_outputs) -> None:
    """Votes: the next comparison for whoever votes, a vote by button or key; the tables follow."""
    annotator, evaluation, key = vote["annotator"], vote["evaluation"], vote["key"]
    task_state = gr.State()  # the comparison on screen: ids only; votes are saved in the database at once

    def load_task(typed, selected, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if selected is None:
            return (None, "", "", "", message("No evaluation yet: generate one on the left, then vote here."), "")
        if not (typed or "").strip() and not (profile or getattr(request, "username", None)):
            # Nobody has said who they are yet: what to do next, not an error.
            return (None, "", "", "", message("Enter your name above (press Enter) to start voting."), "")
        try:
            who, _ = identity(typed, request, profile)
            return _show(evaluate.next_vote(ctx.store, int(selected), who))
        except (RankingError, EvaluationError) as error:
            return (None, "", "", "", message(str(error), error=True), "")

    def cast(choice, typed, selected, task, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if task is None or selected is None or task.evaluation != int(selected):
            return (*load_task(typed, selected, request, profile), gr.skip())
        try:
            who, kind = identity(typed, request, profile)
            note = evaluate.vote(ctx.store, task, who, choice, kind)
            return (*_show(evaluate.next_vote(ctx.store, task.evaluation, who), message(note)), "")
        except (RankingError, EvaluationError) as error:
            return (*_show(task, message(str(error), error=True)), gr.skip())

    def by_key(text, typed, selected, task, request: gr.Request, profile: gr.OAuthProfile | None = None):
        try:
            choice = evaluate.vote_for_key(text)
        except EvaluationError as error:
            return (*_show(task, message(str(error), error=True)), "")
        return cast(choice, typed, selected, task, request, profile)

    vote_outputs = [task_state, *(vote[k] for k in ("prompt", "left", "right", "progress", "reveal"))]
    gr.on([evaluation.change, annotator.submit], load_task, [annotator, evaluation], vote_outputs)
    # A vote only writes SQLite: outside Gradio's queue, as the Rank tab's submissions (a team votes at once); the
    # tables follow in the queue.
    for choice, button in vote["buttons"].items():
        button.click(
            cast, [gr.State(choice), annotator, evaluation, task_state], vote_outputs + [key], queue=False
        ).then(tables, evaluation, table_outputs)
    key.submit(by_key, [key, annotator, evaluation, task_state], vote_outputs + [key], queue=False).then(
        tables, evaluation, table_outputs
    )


def _results_section(ctx: Ctx, evaluation):
    """Win rates, per annotator, Bradley-Terry and the automatic scores of the chosen evaluation; returns the
    function that refreshes them, its outputs, and the scorer dropdown."""
    gr.Markdown(
        '### Results\n"At least as good" counts ties, so a model against itself scores well above 50% '
        "(about 55-65%): read each share against the noise floor in the scores table below, not against "
        '50%. "Win rate at equal length" is what the votes say once the length difference is accounted '
        "for (a logistic regression on it, as arena leaderboards do): a model that wins by writing more "
        "drops towards 50% there."
    )
    results = gr.Dataframe(
        headers=RESULT_HEADERS + LENGTH_HEADERS,
        interactive=False,
        wrap=True,
        column_widths=RESULT_WIDTHS + LENGTH_WIDTHS,
        elem_id="ev-results",
        label="Blind A/B: each model against each earlier one",
    )
    with gr.Accordion("Per annotator, and Bradley-Terry over all evaluations", open=False):
        per_annotator = gr.Dataframe(
            headers=["Annotator"] + RESULT_HEADERS,
            interactive=False,
            wrap=True,
            column_widths=ANNOTATOR_WIDTHS,
            elem_id="ev-annotators",
        )
        strengths = gr.Dataframe(
            headers=["Model", "Bradley-Terry (Elo-like points)", "Weighted by voters' quality (Rank tab, Team)"],
            interactive=False,
            elem_id="ev-bt",
            label="Shown when more than two models have been compared",
        )
    with gr.Row():
        scorer = gr.Dropdown(
            [],
            allow_custom_value=True,
            label="Automatic score",
            elem_id="ev-scorer",
            scale=3,
            info="rubric (the prompt set's), toxicity (offline), reward:job N, or toxicity:<Hub classifier id>",
        )
        score = gr.Button("Score answers", elem_id="ev-score", scale=1)
    score_status = gr.Markdown(elem_id="ev-score-status")
    scores = gr.Dataframe(
        headers=SCORE_HEADERS, interactive=False, wrap=True, column_widths=SCORE_WIDTHS, elem_id="ev-scores"
    )
    score_plot = gr.Plot(label="Mean score per model, with its 95% interval", elem_id="ev-plot")

    def tables(selected):
        if selected is None:
            return [], [], [], [], None
        found = evaluate.results(ctx.store, int(selected))

        def row(m, b, t):
            return [m, b, t.votes, t.wins, t.ties, t.losses, t.both_bad, _ci(t.win_rate()), _ci(t.at_least_as_good())]

        lengths = evaluate.length_table(ctx.store, int(selected))
        pairs = [row(m, b, t) + _length_cells(lengths.get((m, b))) for m, b, t in found["pairs"]]
        annotators = [[who, *row(m, b, t)] for who, m, b, t in found["annotators"]]
        bt = evaluate.strengths(ctx.store) or {}
        weighted = evaluate.strengths(ctx.store, weighted=True) or {} if bt else {}
        table = evaluate.score_table(ctx.store, int(selected))

        def share(entry):
            return "" if not entry else f"{entry['value']:.0%} ({entry['low']:.0%} to {entry['high']:.0%})"

        score_rows = [
            [
                r["scorer"],
                r["model"],
                r["n"],
                f"{r['mean']:.3f} ({r['low']:.3f} to {r['high']:.3f})",
                "" if r["diff"] is None else f"{r['diff']:+.3f} ({r['diff_low']:+.3f} to {r['diff_high']:+.3f})",
                "" if r["p"] is None else f"{r['p']:.3g}",
                share(r["effect"] and r["effect"]["at_least_as_good"]),
                share(r["effect"] and r["effect"]["noise_floor"]),
            ]
            for r in table
        ]
        plot = score_chart(table)
        points = sorted([[m, round(v), round(weighted[m])] for m, v in bt.items()], key=lambda r: -r[1])
        return pairs, annotators, points, score_rows, plot

    def run_score(selected, name, progress_=gr.Progress()):
        if selected is None:
            return message("Choose an evaluation first.", error=True)
        try:
            progress_(0, desc=f"Scoring with {name}")
            count = evaluate.score_evaluation(
                ctx.store,
                int(selected),
                (name or "").strip(),
                on_progress=lambda d, t: progress_((d, t), unit="answers"),
            )
        except (EvaluationError, models.ModelError) as error:
            return message(str(error), error=True)
        return message(f"Scored {count} answers with {name}." if count else f"Every answer already has {name}.")

    table_outputs = [results, per_annotator, strengths, scores, score_plot]
    evaluation.change(tables, evaluation, table_outputs)
    score.click(waiting, None, score_status, queue=False).then(
        run_score, [evaluation, scorer], score_status, concurrency_limit=1, concurrency_id="model"
    ).then(tables, evaluation, table_outputs)
    return tables, table_outputs, scorer
