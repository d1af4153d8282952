"""llama.cpp, a real inference server we did not write, for the tests and the bench: its source as vendored in
llama-cpp-python's source distribution on PyPI (checked against PyPI's sha256), built once with cmake into a cache
folder (`llama-server` and the converters beside it). Standard library only, so that .ci/run can build it before
the test command:

    python3 tests/llama_server.py     # prints the path of llama-server, building it if it is not there yet

Why llama.cpp's own `llama-server` and not llama-cpp-python's server: it batches parallel requests over several
slots (continuous batching) and takes `n`, a per-request LoRA scale and top log-probabilities, as vLLM does;
llama-cpp-python's server answers one request after another.
"""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

RELEASE = ("llama-cpp-python", "0.3.36")
CACHE = Path(os.environ.get("STUDIO_LLAMA_CPP_CACHE", Path.home() / ".cache" / "align-studio" / "llama.cpp"))


def source(folder: Path = CACHE) -> Path | None:
    """llama.cpp's source tree from the sdist (downloaded once into `folder`); None when PyPI is out of reach."""
    name, version = RELEASE
    archive_name = f"{name.replace('-', '_')}-{version}.tar.gz"
    tree = folder / archive_name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
    if (tree / "CMakeLists.txt").is_file():
        return tree
    folder.mkdir(parents=True, exist_ok=True)
    index = urllib.request.Request(
        f"https://pypi.org/simple/{name}/",  # PyPI's simple API, as pip reads it
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    try:
        files = json.load(urllib.request.urlopen(index, timeout=20))["files"]
    except OSError:
        return None
    sdist = next(f for f in files if f["filename"] == archive_name)
    archive = folder / archive_name
    with urllib.request.urlopen(sdist["url"], timeout=300) as response, open(archive, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    if hashlib.sha256(archive.read_bytes()).hexdigest() != sdist["hashes"]["sha256"]:
        raise RuntimeError(f"{archive} does not match PyPI's sha256")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return tree


def server_binary(folder: Path = CACHE) -> Path | None:
    """llama-server, built from source() on first use (about 15 minutes on 2 cores); None when PyPI is out of reach."""
    tree = source(folder)
    if tree is None:
        return None
    binary = tree / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    log = folder / "build.log"
    with open(log, "w") as out:
        for command in (
            [
                "cmake", "-S", str(tree), "-B", str(tree / "build"), "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
                "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
            ],
            ["cmake", "--build", str(tree / "build"), "--target", "llama-server", f"-j{os.cpu_count() or 2}"],
        ):  # fmt: skip
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"building llama-server failed: {log}")
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(binary: Path, gguf: Path, *extra: str, slots: int = 4, context: int = 8192, log: Path | None = None):
    """llama-server serving `gguf` on a free port, `slots` requests decoded together; yields its base URL (…/v1)
    once /health says it is ready, and stops it afterwards."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
         "-c", str(context), "--no-webui", *extra],
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {process.returncode}" + (f": see {log}" if log else ""))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server did not become ready in 120 s")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if log:
            out.close()


if __name__ == "__main__":
    built = server_binary()
    if built is None:
        sys.exit("PyPI is out of reach: llama.cpp's source cannot be fetched")
    print(built)
