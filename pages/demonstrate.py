"""The Rank tab's demonstrations panel: for a rule of the rubric that no candidate shows, write the answer it asks for
(or edit the best candidate into it), prompt by prompt. The rules live in studio/data/demonstrations.py."""

import gradio as gr

from pages import Ctx, message
from studio.data import demonstrations, ranking, rubric
from studio.data.demonstrations import DemonstrationError
from studio.data.ranking import RankingError

SAVED_HEADERS = ["Prompt", "Rule", "Demonstration", "By"]
LISTED = 50  # prompts listed per rule at a time


def _table(ctx: Ctx, set_name):
    """The demonstrations saved for a set, as the table shows them."""
    found = demonstrations.listed(ctx.store, set_name) if set_name else []
    return [[d["prompt"], d["rule"] or "", d["text"], d["annotator"]] for d in found]


def _next_prompt(ctx: Ctx, set_name, rule_name, skipped: list, said: str = ""):
    """The first prompt still to write for (not skipped), or a line saying there is none."""
    if not set_name or not rule_name:
        return message("Choose a prompt set and a rule.", error=True), "", "", None, said
    try:
        found = demonstrations.to_write(ctx.store, set_name, rule_name, limit=LISTED + len(skipped))
    except DemonstrationError as error:
        return message(str(error), error=True), "", "", None, said
    left = [p for p in found if p["id"] not in skipped]
    if not left:
        return (
            message(
                f"No prompt left where every candidate fails {rule_name!r}"
                + (" (skipped ones aside)." if skipped else ".")
            ),
            "",
            "",
            {"skipped": skipped},
            said,
        )
    first = left[0]
    best = first["best"]
    more = f"{len(left)}{'+' if len(found) > LISTED else ''}"
    about = message(
        f"{more} prompt(s) where all {len(first['candidates'])} candidate(s) fail {rule_name!r}"
        + (f". The answer below is the best candidate ({best['id']}): edit it." if best else ": write one.")
    )
    on_screen = {"prompt_id": first["id"], "edited_from": best["id"] if best else None, "skipped": skipped}
    return about, first["text"], best["text"] if best else "", on_screen, said


def demonstrations_panel(ctx: Ctx, prompt_set, annotator) -> None:
    with gr.Accordion("Demonstrations: teach a rule that no candidate shows", open=False, elem_id="demo-box"):
        gr.Markdown(
            "Ranking can only prefer what some candidate already does. Choose a rule of the rubric: the prompts it "
            "applies to where every candidate fails it come up one by one, with the best candidate to edit. Write "
            "the answer the guidelines ask for; the next training job of this set learns it (chosen over the "
            "candidates that fail the rule)."
        )
        with gr.Row():
            rule = gr.Dropdown([], label="Rule of the rubric", elem_id="demo-rule", scale=3)
            find = gr.Button("List the prompts that fail it", elem_id="demo-find", scale=1)
        about = gr.Markdown(elem_id="demo-about")
        prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, max_lines=12, elem_id="demo-prompt")
        answer = gr.Textbox(
            label="Your answer (it starts from the best candidate: edit it until it follows the rule)",
            lines=6,
            max_lines=30,
            elem_id="demo-answer",
        )
        with gr.Row():
            save = gr.Button("Save the demonstration", variant="primary", elem_id="demo-save")
            skip = gr.Button("Skip this prompt", elem_id="demo-skip")
        status = gr.Markdown(elem_id="demo-status")
        saved = gr.Dataframe(
            headers=SAVED_HEADERS,
            interactive=False,
            wrap=True,
            max_height=300,
            column_widths=["30%", "20%", "40%", "10%"],
            elem_id="demo-saved",
            label="Demonstrations of this prompt set",
        )
        # What is on screen: the prompt and candidate ids, and the prompts skipped in this visit (navigation only;
        # the demonstrations themselves are in the database).
        shown = gr.JSON(None, visible=False)

    def rules_of(set_name):
        checks = rubric.for_set(ctx.store, set_name) if set_name else None
        names = demonstrations.rules(checks) if checks else []
        said = "" if not set_name or checks else message("This prompt set has no rubric: write its rules first.")
        return gr.update(choices=names, value=None), said, "", "", None, _table(ctx, set_name)

    def start(set_name, rule_name):
        return _next_prompt(ctx, set_name, rule_name, [])

    def keep(set_name, rule_name, on_screen, text, typed, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not on_screen or not on_screen.get("prompt_id"):
            return *_next_prompt(
                ctx, set_name, rule_name, [], message("List the prompts first.", error=True)
            ), gr.skip()
        try:
            who, kind = ranking.identity(
                typed, getattr(request, "username", None), profile.username if profile else None
            )
            made = demonstrations.save(
                ctx.store,
                who,
                set_name,
                on_screen["prompt_id"],
                text,
                rule_name,
                on_screen.get("edited_from"),
                annotator_kind=kind,
            )
        except (DemonstrationError, RankingError) as error:
            return (
                gr.skip(),
                gr.skip(),
                gr.skip(),
                gr.skip(),
                message(f"{error} Nothing was saved.", error=True),
                gr.skip(),
            )
        said = f"Demonstration {made['id']} saved, by {who}" + (
            ": it passes the rule's check."
            if made["passes"]
            else ": note that it does not pass the rule's check (the check's patterns may be narrower than the "
            "guideline; read it again)."
        )
        return *_next_prompt(ctx, set_name, rule_name, on_screen.get("skipped", []), message(said)), _table(
            ctx, set_name
        )

    def pass_over(set_name, rule_name, on_screen):
        skipped = list((on_screen or {}).get("skipped", []))
        if on_screen and on_screen.get("prompt_id"):
            skipped.append(on_screen["prompt_id"])
        return _next_prompt(ctx, set_name, rule_name, skipped, message("Skipped."))

    shown_outputs = [about, prompt, answer, shown, status]
    prompt_set.change(rules_of, prompt_set, [rule, about, prompt, answer, shown, saved])
    find.click(start, [prompt_set, rule], shown_outputs)
    rule.input(start, [prompt_set, rule], shown_outputs)
    save.click(keep, [prompt_set, rule, shown, answer, annotator], [*shown_outputs, saved])
    skip.click(pass_over, [prompt_set, rule, shown], shown_outputs)
