"""The Generate tab's inference servers, in a real browser against llama.cpp's llama-server (tests/conftest.py's
llama_url, behind an API key): a lead adds the server by URL and the name of the key's variable, picks the served
model, and its candidates land in the table and the database; the Rank tab's judge list, built before, names it."""

import json
import sqlite3

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import run_app
from tests.browser.helpers import set_number, start_generation
from tests.conftest import KEY, KEY_ENV, MODEL

pytestmark = pytest.mark.browser


@pytest.fixture
def app(tmp_path):
    yield from run_app(tmp_path, env_extra={KEY_ENV: KEY})  # the key in the app's environment, nowhere else


def test_candidates_from_a_server_added_on_the_page(app, llama_url, page):
    page.goto(app["url"])
    page.get_by_text("Inference servers: vLLM").click()
    page.locator("#gen-server-name textarea").fill("llama")
    page.locator("#gen-server-urls textarea").fill("http://127.0.0.1:1/v1")  # nothing listens there
    page.locator("#gen-server-key-env textarea").fill(KEY_ENV)
    page.locator("#gen-server-add").click()
    expect(page.locator("#gen-server-status")).to_contain_text("http://127.0.0.1:1/v1 could not be reached")
    page.locator("#gen-server-urls textarea").fill(llama_url)
    page.locator("#gen-server-add").click()
    expect(page.locator("#gen-server-status")).to_contain_text(f"llama answers and serves {MODEL}", timeout=30_000)
    expect(page.locator("#gen-servers")).to_contain_text(KEY_ENV)
    served = f"server:llama/{MODEL}"
    model = page.locator("#gen-model input")
    model.fill(served)
    model.press("Enter")
    start_generation(page, limit=2, k=2, max_new_tokens=16)
    expect(page.locator("#gen-status")).to_contain_text("Saved 4 candidates for 2 of 2 prompts", timeout=120_000)
    expect(page.locator("#gen-table")).to_contain_text(served)
    page.screenshot(path=str(app["home"] / "servers.png"), full_page=True)
    with sqlite3.connect(app["home"] / "studio.db") as db:
        rows = db.execute("SELECT model, params FROM responses").fetchall()
        stored = json.dumps(db.execute("SELECT * FROM servers").fetchall())
    assert len(rows) == 4 and {r[0] for r in rows} == {served}
    assert {json.loads(r[1])["served_by"] for r in rows} == {llama_url}
    assert KEY not in stored and KEY_ENV in stored
    # The Rank tab was built before the server was added: its judge list names the served model once opened.
    page.get_by_role("tab", name="Rank").click()
    page.get_by_text("Team: target, gold, agreement, quality").click()
    judge = page.locator("#rank-judge-model input")
    judge.click()
    # Text typed at once, while the list is being refreshed, is kept.
    page.keyboard.press("Control+a")
    page.keyboard.type("HuggingFaceTB/SmolLM2-360M-Instruct")
    page.wait_for_timeout(1_000)
    expect(judge).to_have_value("HuggingFaceTB/SmolLM2-360M-Instruct")
    page.keyboard.press("Control+a")
    page.keyboard.type("server:")
    expect(page.get_by_role("option", name=served)).to_be_visible(timeout=30_000)


def test_while_a_job_holds_the_gpu_a_served_generate_is_not_queued_behind_a_local_one(
    store, llama_url, browser, monkeypatch
):
    """The app in this process (so that its GPU can be handed to a 'job' here, as the job manager does on a GPU): one
    visitor's Generate on this machine's model waits for the GPU, and another's on a served model goes through
    meanwhile, not held in the queue behind it, as does an evaluation of two served models; the first starts by
    itself once the GPU is back."""
    from pages import build_demo
    from studio.data.prompts import install_builtin_sets
    from studio.inference import models, servers
    from studio.training.launch import Manager
    from tests.browser.conftest import _free_port

    monkeypatch.setenv(KEY_ENV, KEY)
    install_builtin_sets(store)
    servers.add(store, "llama", llama_url, KEY_ENV)
    servers.add(store, "llama2", llama_url, KEY_ENV)  # the same server under a second name: two served models
    demo = build_demo(store, Manager(store))
    port = _free_port()
    demo.queue().launch(server_port=port, prevent_thread_lock=True, inbrowser=False)
    url = f"http://127.0.0.1:{port}"
    pages = [browser.new_page(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    models.hand_over("job 7 is training on it")
    try:
        local, served = pages
        for page in pages:
            page.goto(url)
        start_generation(local, limit=1, k=2, max_new_tokens=8)  # the embedded model: waits for the GPU
        expect(local.locator("#gen-status")).to_contain_text("Waiting for the GPU: job 7 is training on it")
        model = served.locator("#gen-model input")
        model.fill(f"server:llama/{MODEL}")
        model.press("Enter")
        start_generation(served, limit=2, k=2, max_new_tokens=8)
        expect(served.locator("#gen-status")).to_contain_text("Saved 4 candidates for 2 of 2 prompts", timeout=120_000)
        expect(local.locator("#gen-status")).to_contain_text("Waiting for the GPU")  # still: the job holds it
        assert {r["model"] for r in store.query("SELECT model FROM responses")} == {f"server:llama/{MODEL}"}
        # Evaluate alike: one with this machine's model waits for the GPU; one of two served models goes through.
        llama, llama2 = (f"served: server:{name}/{MODEL}" for name in ("llama", "llama2"))
        for page, chosen in ((local, ("base: embedded", llama)), (served, (llama, llama2))):
            page.get_by_role("tab", name="Evaluate").click()
            page.locator("#ev-models input").click()
            for name in chosen:
                page.get_by_role("option", name=name, exact=True).click()
            page.keyboard.press("Escape")
            set_number(page, "ev-limit", 1)
            set_number(page, "ev-max-tokens", 8)
            page.locator("#ev-create").click()
        expect(local.locator("#ev-create-status")).to_contain_text("Waiting for the GPU: job 7 is training on it")
        expect(served.locator("#ev-create-status")).to_contain_text(
            "Evaluation 1: 1 prompts answered by every model", timeout=120_000
        )
        expect(local.locator("#ev-create-status")).to_contain_text("Waiting for the GPU")
        models.take_back()  # the job ended
        expect(local.locator("#gen-status")).to_contain_text("Saved 2 candidates for 1 of 1 prompts", timeout=180_000)
        expect(local.locator("#ev-create-status")).to_contain_text(
            "Evaluation 2: 1 prompts answered by every model", timeout=180_000
        )
    finally:
        models.take_back()
        for page in pages:
            page.close()
        demo.close()
