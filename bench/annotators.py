"""A team ranking at once: the real app, N annotators over HTTP as the Rank tab's page does it (the page's load
through Gradio, one session each; opening the queue and every submission posted to the studio's rank route, carrying
what is on screen), and what reached the database.

    python bench/annotators.py --annotators 20 50 --per 20 --think 0 2 --prompts 500

Prints, per team size and pace: submissions sent / stored / lost / duplicated and the latency from submit to the next
prompt on screen (p50, p95, max), with the ratio of p95 to one annotator alone measured first in the same run, and
the CPU time the app spends per submission (the server is one Python process: its ceiling is about 1 / that).
"""

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradio_client import Client  # noqa: E402  (only to find the Rank tab's events)

from pages.rank import RANK_ROUTE  # noqa: E402
from studio.core.store import Store  # noqa: E402
from studio.data.prompts import ParsedPrompts, add_prompt_set, get_prompts  # noqa: E402
from studio.inference.models import embedded_folder  # noqa: E402

SET = "team"
CANDIDATES = 4


def prepare(home: Path, prompts: int) -> None:
    store = Store(home / "studio.db")
    add_prompt_set(
        store, SET, ParsedPrompts(rows=[(f"Question {i}: how do I do thing {i}?", "") for i in range(prompts)]), "bench"
    )
    with store.tx() as db:
        for prompt in get_prompts(store, SET):
            for j in range(CANDIDATES):
                db.execute(
                    "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'bench', ?, '{}')",
                    (prompt["id"], f"Answer {j} to {prompt['text']} " + "words " * (20 + 7 * j)),
                )


def start_app(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (home / "models").mkdir(exist_ok=True)
    shared = embedded_folder()
    if not (home / "models" / shared.name).exists():
        (home / "models" / shared.name).symlink_to(shared)
    env = {**os.environ, "STUDIO_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--no-browser"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the app did not start")
            time.sleep(0.3)


async def call(http, base: str, session: str, fn: dict, data: list) -> list:
    """One event as the page sends it: a direct POST for an event outside the queue, else through Gradio's queue
    (join, then read the session's event stream until the event completes)."""
    if not fn["queue"]:
        answer = await http.post(
            f"{base}gradio_api/run/{fn['api_name']}",
            json={
                "data": data,
                "fn_index": fn["fn_index"],
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            },
        )
        answer.raise_for_status()
        return answer.json()["data"]
    fn_index = fn["fn_index"]
    joined = await http.post(
        f"{base}gradio_api/queue/join",
        json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None},
    )
    joined.raise_for_status()
    event_id = joined.json()["event_id"]
    async with http.stream("GET", f"{base}gradio_api/queue/data", params={"session_hash": session}) as stream:
        buffer = ""
        async for chunk in stream.aiter_text():
            buffer += chunk
            while "\n\n" in buffer:
                line, buffer = buffer.split("\n\n", 1)
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    if not message.get("success", True):
                        raise RuntimeError(str(message.get("output")))
                    return message["output"]["data"]
    raise RuntimeError("the event stream ended before the event completed")


class Connection:
    """One annotator's keep-alive HTTP/1.1 connection for submissions: a bare client on asyncio streams, because
    httpx spends 2-4 ms of CPU per request, and the bench shares this machine's two cores with the app (with httpx,
    50 annotators measured the client more than the app)."""

    def __init__(self, base: str):
        self.host, self.port = urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port
        self.path = urllib.parse.urlsplit(base).path
        self.streams = None

    async def post(self, route: str, body: dict):
        data = json.dumps(body).encode()
        request = (
            f"POST {self.path}{route} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        for attempt in range(2):
            reused = self.streams is not None
            if not reused:
                self.streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.streams
            try:
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closes a connection left idle (uvicorn: after 5 s); before answering anything on it,
                # so the request was not read: a new connection and the same request, as a browser does.
                self.close()
                if not reused or attempt:
                    raise
        status = int(head[0].split()[1])
        length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:"))
        answer = json.loads(await reader.readexactly(length))
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer}")
        return answer

    def close(self):
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def shown(update, before):
    """What an output shows after a page update: a plain value, an update's value, or (a skip) what it showed."""
    if isinstance(update, dict) and update.get("__type__") == "update":
        return update.get("value", before)
    return update


async def annotate(
    http,
    base: str,
    fns: dict,
    name: str,
    per: int,
    latencies: list,
    errors: list,
    ready: asyncio.Barrier,
    think: float,
    marks: dict,
    cpu_now,
) -> None:
    rng = random.Random(name)
    session = uuid.uuid4().hex[:11]
    prompt_id = layout = None  # on screen
    connection = Connection(base)
    try:
        await call(http, base, session, fns["/on_load"], [])  # as a page load does: the session's set choices
        opened = await connection.post(RANK_ROUTE, {"name": name, "set": SET, "open": True})
        prompt_id, layout = opened[0], opened[1]
    except Exception as error:  # counted, not raised: the bench reports what was lost
        errors.append(f"{name}: start: {error}")
    if await ready.wait() == 0:  # everyone submits from the same moment on; the clocks start here
        marks["submitting"] = (time.perf_counter(), *cpu_now())
    for _ in range(per):
        if think:  # reading the candidates: exponential with mean `think` seconds
            await asyncio.sleep(rng.expovariate(1 / think))
        order = " ".join(rng.sample("abcd", CANDIDATES))
        started = time.perf_counter()
        try:
            result = await connection.post(
                RANK_ROUTE, {"name": name, "set": SET, "prompt_id": prompt_id, "layout": layout, "text": order}
            )
        except Exception as error:
            errors.append(f"{name}: {error}")
            continue
        latencies.append(time.perf_counter() - started)
        prompt_id, layout = shown(result[0], prompt_id), shown(result[1], layout)
        if "Saved" not in str(result[-1]):
            errors.append(f"{name}: {result[-1]}")
    connection.close()


async def team(
    base: str, fns: dict, names: list[str], per: int, latencies: list, errors: list, think: float, marks: dict, cpu_now
) -> None:
    ready = asyncio.Barrier(len(names))
    limits = httpx.Limits(max_connections=4 * len(names) + 10, max_keepalive_connections=4 * len(names) + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        tasks = [
            asyncio.create_task(annotate(http, base, fns, n, per, latencies, errors, ready, think, marks, cpu_now))
            for n in names
        ]
        await asyncio.gather(*tasks)


def run_team(
    url: str, fns: dict, home: Path, size: int, per: int, tag: str, server: subprocess.Popen, think: float = 0.0
) -> dict:
    me, app = psutil.Process(), psutil.Process(server.pid)

    def cpu_now():
        return sum(me.cpu_times()[:2]), sum(app.cpu_times()[:2])

    latencies, errors, marks = [], [], {}
    names = [f"{tag}-{i:02d}" for i in range(size)]
    asyncio.run(team(url, fns, names, per, latencies, errors, think, marks, cpu_now))
    # From the moment everyone was on their first prompt (opening the queue, once a session, is not counted).
    started, *cpu = marks["submitting"]
    wall = time.perf_counter() - started
    store = Store(home / "studio.db")
    marks = ",".join("?" * len(names))
    stored = store.query(
        f"SELECT COUNT(*) AS n FROM rankings r JOIN annotators a ON a.id = r.annotator_id "
        f"WHERE a.name IN ({marks}) AND r.status = 'current'",
        names,
    )[0]["n"]
    duplicated = store.query(
        f"SELECT COUNT(*) AS n FROM (SELECT r.prompt_id, a.name FROM rankings r JOIN annotators a ON "
        f"a.id = r.annotator_id WHERE a.name IN ({marks}) AND r.status = 'current' GROUP BY r.prompt_id, a.name "
        f"HAVING COUNT(*) > 1)",
        names,
    )[0]["n"]
    sent = size * per
    ordered = sorted(latencies) or [float("nan")]
    return {
        "size": size,
        "sent": sent,
        "stored": stored,
        "lost": sent - stored,
        "duplicated": duplicated,
        "errors": errors[:3],
        "p50": statistics.median(ordered),
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
        "max": ordered[-1],
        "wall": wall,
        "cpu_bench": sum(me.cpu_times()[:2]) - cpu[0],
        "cpu_app": sum(app.cpu_times()[:2]) - cpu[1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--per", type=int, default=20, help="submissions per annotator")
    parser.add_argument("--prompts", type=int, default=500, help="prompts in the set (4 candidates each)")
    parser.add_argument(
        "--think",
        type=float,
        nargs="+",
        default=[0.0, 2.0],
        help="seconds each annotator reads before a submission (mean of an exponential); 0: "
        "everyone submits again the moment the next prompt is on screen",
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-annotators-"))
    prepare(home, prompts=args.prompts)  # every team ranks the same set, from its start: overlap, as with targets
    process, url = start_app(home)
    if os.environ.get("BENCH_PROFILE"):
        subprocess.Popen(
            [
                "py-spy",
                "record",
                "-d",
                "25",
                "-p",
                str(process.pid),
                "-o",
                os.environ["BENCH_PROFILE"],
                "-f",
                "raw",
                "-r",
                "200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
    config = Client(url, verbose=False).config
    fns = {
        f"/{d['api_name']}": {"fn_index": i, "api_name": d["api_name"], "queue": d.get("queue", True) is not False}
        for i, d in enumerate(config["dependencies"])
        if d.get("api_name")
    }
    try:
        alone = run_team(url, fns, home, 1, args.per, "alone", process)
        print(f"baseline, 1 annotator alone: p50 {alone['p50'] * 1000:.0f} ms, p95 {alone['p95'] * 1000:.0f} ms")
        for size, think in [(size, think) for think in args.think for size in args.annotators]:
            r = run_team(url, fns, home, size, args.per, f"team{size}-{think:g}", process, think)
            pace = f"reading {think:g} s on average" if think else "back to back"
            print(
                f"{size} annotators x {args.per}, {pace}: sent {r['sent']}, stored {r['stored']}, lost {r['lost']}, "
                f"duplicated {r['duplicated']}; latency p50 {r['p50'] * 1000:.0f} ms, p95 {r['p95'] * 1000:.0f} ms, "
                f"max {r['max'] * 1000:.0f} ms ({r['p95'] / alone['p95']:.1f}x the p95 alone); "
                f"{r['sent'] / r['wall']:.0f} submissions/s; "
                f"CPU: app {r['cpu_app'] / r['sent'] * 1000:.0f} ms, bench "
                f"{r['cpu_bench'] / r['sent'] * 1000:.0f} ms per submission"
                + (f"; errors: {r['errors']}" if r["errors"] else "")
            )
    finally:
        process.terminate()
        process.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
