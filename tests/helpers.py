"""Small builders shared by the tests: prompt sets with hand-written candidates, no model needed."""

from studio.prompts import ParsedPrompts, add_prompt_set, get_prompts


def make_set(store, name="s", prompts=2, candidates=3, system="Be kind."):
    """A prompt set whose prompts each have `candidates` responses 'p<i>-c<j>'; returns [(prompt_id, [ids])]."""
    add_prompt_set(store, name, ParsedPrompts(rows=[(f"question {i}", system) for i in range(prompts)]), "test")
    made = []
    with store.tx() as db:
        for prompt in get_prompts(store, name):
            ids = [db.execute("INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'm', ?, '{}')",
                              (prompt["id"], f"{prompt['text']} answer {j}")).lastrowid for j in range(candidates)]
            made.append((prompt["id"], ids))
    return made
