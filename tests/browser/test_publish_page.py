import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from studio.core import jobs
from studio.core.store import Store
from studio.shipping import openai_api
from tests.helpers import clear_cut_set, new_job

pytestmark = pytest.mark.browser


def test_publish_tab_shows_the_card_refuses_a_push_without_token_and_merges(app_server, page):
    store = Store(app_server["home"] / "studio.db")
    clear_cut_set(store)
    job_id = new_job(store, 2)  # the app's job watcher starts it
    deadline = time.monotonic() + 180
    while jobs.get(store, job_id)["status"] != "finished":
        assert time.monotonic() < deadline and jobs.get(store, job_id)["status"] in ("queued", "running"), jobs.get(
            store, job_id
        )
        time.sleep(1)
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Publish").click()
    # The newest finished job is chosen when the tab opens.
    expect(page.locator("#pub-job input")).to_have_value("1: dpo on polite (best vs worst)")
    card = page.locator("#pub-card textarea")
    # The card reads the recipe, which imports TRL into the app process: seconds on a cold, busy machine.
    expect(card).to_have_value(re.compile("LoRA adapter: DPO on embedded"), timeout=60_000)
    expect(card).to_have_value(re.compile(re.escape("8 preference pairs (best worst) from 8 rankings of 8 prompts")))
    page.locator("#pub-repo textarea, #pub-repo input").first.fill("me/bank-dpo")
    page.locator("#pub-push").click()
    expect(page.locator("#pub-status")).to_contain_text("No Hugging Face token: set HF_TOKEN")
    page.wait_for_timeout(7_000)  # the merge state is polled every 3 s: the refusal must outlive two polls
    expect(page.locator("#pub-status")).to_contain_text("No Hugging Face token: set HF_TOKEN")
    page.locator("#pub-gguf input").click()  # the merge also writes GGUF for llama.cpp and Ollama
    page.get_by_role("option", name="+ GGUF q8_0 (llama.cpp, Ollama)").click()
    page.locator("#pub-merge").click()
    expect(page.locator("#pub-merge-status")).to_contain_text("Merged model:", timeout=120_000)
    expect(page.locator("#pub-merge-status")).to_contain_text("-q8_0.gguf")
    expect(page.locator("#pub-merge-status")).to_contain_text("ollama create <name> -f")
    expect(page.locator("#pub-status")).to_contain_text("No Hugging Face token: set HF_TOKEN")
    folder = Path(jobs.get(store, job_id)["folder"])
    assert (folder / "merged" / "config.json").is_file() and (folder / "gguf" / "Modelfile").is_file()

    # An API key for the /v1 endpoint, made here and shown once; only its hash is in the database.
    page.get_by_text("Serve it: the OpenAI-compatible endpoint (/v1)").click()
    page.locator("#pub-key-name textarea").fill("support-bot")
    page.locator("#pub-key-create").click()
    shown = page.locator("#pub-key-shown textarea")
    expect(shown).to_have_value(re.compile(r"^sk-studio-[\w-]{40,}$"))
    expect(page.locator("#pub-key-status")).to_contain_text("Keys: support-bot (last used never)")
    assert openai_api.check_key(store, shown.input_value())
    assert shown.input_value() not in str([dict(r) for r in store.query("SELECT * FROM api_keys")])
    page.locator("#pub-key-create").click()
    expect(page.locator("#pub-key-status")).to_contain_text("There is already a key named 'support-bot'")
