"""Dress rehearsal: a visitor's first minutes on a CPU-basic Space, at the Space's default size.

Publishes GGUFs with SmolLM2-1.7B-Instruct's exact shape (``rehearsal_costs.prepare``: random
weights, real vocabulary; F16, Q8_0, Q4_K_M and Q4_0 from llama.cpp's quantizer) and the real
SmolLM2-135M files through the local Hub server (tests/hub_server.py) under the repo and file
names the catalog expects, paced like a real connection (--rate-mb). Then:

1. resume: the server drops the 3.4 GB F16's download at 60%; it must go on from the bytes it
   had (a Range request) and end with the same bytes;
2. the README's demo command, ``python app.py``, with HF_ENDPOINT pointing at that server and
   empty caches (HF cache, calibration, NLTK data), driven by Chromium as a visitor would: the
   seconds to the first HTTP 200, the download progress on the page (screenshot), the other tabs
   answering while it loads, a comparison clicked while loading (128 new tokens, the page's
   default), the seconds until the model is ready with each phase, the peak resident memory of
   the app's process (a CPU-basic Space has 16 GB), the first comparison's wall time.

    python benchmarks/rehearsal.py [--rate-mb 100] [--out bench-results/rehearsal.json]

Needs 7.4 GB for the published files (made once, ~10 min the first time) and 11 GB of scratch
space (deleted at the end). Screenshots go to artifacts/rehearsal-*.png.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import ROOT, free_port, write_result  # noqa: E402 - also puts the project on sys.path
from rehearsal_costs import NAME, prepare  # noqa: E402

REPO = "bartowski/SmolLM2-1.7B-Instruct-GGUF"
SIBLING_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
SPELLING = {"F16": "f16", "Q8_0": "Q8_0", "Q4_K_M": "Q4_K_M", "Q4_0": "Q4_0"}  # bartowski's file names
SPACE_MEMORY = 16 * 10**9  # a CPU-basic Space
PROMPT = "What is the capital of France?"
ARTIFACTS = ROOT / "artifacts"


def publish(root: Path, files: dict) -> dict[str, list[str]]:
    """Links the files into ROOT/<org>/<repo>/ under the Hub's names; returns repo -> files."""
    out = {}
    for repo, name, prefix in ((REPO, NAME, ""), (SIBLING_REPO, "SmolLM2-135M-Instruct", "sibling ")):
        d = root / repo
        d.mkdir(parents=True, exist_ok=True)
        for q, spelled in SPELLING.items():
            (d / f"{name}-{spelled}.gguf").symlink_to(files[prefix + q])
        (d / "README.md").write_text(f"rehearsal copy of {repo}\n")
        out[repo] = sorted(p.name for p in d.iterdir())
    return out


class Hub:
    def __init__(self, root: Path):
        from tests.hub_server import spawn

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.proc, self.url = spawn(root)

    def head(self, repo: str, fname: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/{repo}/resolve/main/{fname}", method="HEAD")).close()

    def log(self) -> list[str]:
        f = self.root / ".log"
        return f.read_text().splitlines() if f.exists() else []

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def check_resume(hub: Hub, work: Path, source: Path) -> dict:
    """The F16's download loses its connection at 60%: it must go on from the bytes it has."""
    from specquant import hub as sq_hub

    fname = f"{NAME}-f16.gguf"
    size = source.stat().st_size
    os.environ.update(HF_HUB_CACHE=str(work / "hf-resume"), HF_ENDPOINT=hub.url)
    (hub.root / ".drop").write_text(f"{REPO}/{fname} {int(size * 0.6)} once\n")
    n_log = len(hub.log())
    t0 = time.perf_counter()
    [path] = sq_hub.download(REPO, [fname])
    took = time.perf_counter() - t0
    gets = [line for line in hub.log()[n_log:] if line.startswith("GET") and fname in line]
    resumed_from = int(gets[-1].rsplit("bytes=", 1)[1].rstrip("-")) if "bytes=" in gets[-1] else 0
    same = path.stat().st_size == size and sha256(path) == sha256(source)
    shutil.rmtree(work / "hf-resume")
    for k in ("HF_HUB_CACHE", "HF_ENDPOINT"):
        del os.environ[k]
    return {"file": fname, "bytes": size, "dropped_at": int(size * 0.6), "requests": gets,
            "resumed_from": resumed_from, "bytes_fetched_twice": int(size * 0.6) - resumed_from,
            "seconds": round(took, 1), "identical_bytes": same}


class Memory(threading.Thread):
    """Resident memory of a process, sampled twice a second; the kernel's own peak at the end."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.peak = pid, [], 0
        self.t0 = time.perf_counter()
        self.running = True

    def _status(self) -> dict:
        with open(f"/proc/{self.pid}/status") as f:
            return {k: int(v.split()[0]) * 1024 for k, v in (ln.split(":", 1) for ln in f) if v.strip().endswith("kB")}

    def run(self):
        while self.running:
            try:
                st = self._status()
            except OSError:
                return
            self.samples.append((round(time.perf_counter() - self.t0, 1), st["VmRSS"]))
            self.peak = max(self.peak, st["VmHWM"])
            time.sleep(0.5)


def visit(hub: Hub, work: Path, timeout_s: float) -> dict:
    """``python app.py`` against the local Hub with empty caches, seen through Chromium."""
    from tests.browser import launch

    port = free_port()
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(work / "hf"), "HF_HOME": str(work / "hf-home"),
           "SPECQUANT_HOME": str(work / "specquant"), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SPECQUANT_MODEL", None)
    from specquant import hardware

    default = hardware.default_family(hardware.detect())
    if default != "smollm2-1.7b":  # rehearse the Space's default even where this machine would pick another
        env["SPECQUANT_MODEL"] = "smollm2-1.7b"
    url = f"http://127.0.0.1:{port}/"
    log = open(work / "app.log", "w")
    t0 = time.perf_counter()
    app = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    mem = Memory(app.pid)
    mem.start()
    res: dict = {"machine_default_family": default, "model": env.get("SPECQUANT_MODEL", "(default)")}
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if app.poll() is not None:
                raise RuntimeError(f"the app exited: {(work / 'app.log').read_text()[-2000:]}")
            time.sleep(0.1)
        res["first_http_200_s"] = round(time.perf_counter() - t0, 2)
        pw, browser = launch()
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url)
            res["page_shown_s"] = round(time.perf_counter() - t0, 2)
            hw = page.locator("#hardware")
            page.wait_for_function("/left\\)/.test((document.querySelector('#model-status') || {innerText: ''}).innerText)",
                                   timeout=120_000)  # the landing tab: what loads, how far, the time left
            res["progress_text"] = page.locator("#model-status").inner_text().strip()
            res["progress_seen_s"] = round(time.perf_counter() - t0, 2)
            page.screenshot(path=str(ARTIFACTS / "rehearsal-download.png"))
            # The other tabs answer while the model loads.
            t1 = time.perf_counter()
            page.get_by_role("tab", name="Benchmark").click()
            page.get_by_role("button", name="Run benchmark").wait_for(timeout=10_000)
            res["benchmark_tab_answers_s"] = round(time.perf_counter() - t1, 2)
            page.get_by_role("tab", name="Compare").click()
            page.get_by_label("Prompt", exact=True).fill(PROMPT)
            page.locator("#compare-btn").click()
            t_click = time.perf_counter()
            page.wait_for_function("document.querySelector('#status').innerText.includes('Loading the model')",
                                   timeout=15_000)
            res["compare_while_loading_shows"] = page.locator("#status").inner_text().strip()
            page.screenshot(path=str(ARTIFACTS / "rehearsal-compare-while-loading.png"))
            page.get_by_role("tab", name="Hardware & models").click()
            before = hw.inner_text()
            page.wait_for_function(f"document.querySelector('#hardware').innerText !== {before!r}", timeout=30_000)
            res["hardware_tab_updates_during_queued_compare"] = True
            messages = []
            while time.perf_counter() - t0 < timeout_s:
                text = hw.inner_text().strip()
                if not messages or messages[-1][1] != text.split("\n")[0][:90]:
                    messages.append((round(time.perf_counter() - t0, 1), text.split("\n")[0][:90]))
                if "Backend:" in text or "failed" in text:
                    break
                time.sleep(0.5)
            t_ready = time.perf_counter()
            res["ready_s"] = round(t_ready - t0, 1)
            res["loading_messages"] = messages
            res["hardware_tab"] = hw.inner_text().strip()
            if m := re.search(r"Ready .*", res["hardware_tab"]):
                res["phases_on_page"] = m.group(0)
            page.screenshot(path=str(ARTIFACTS / "rehearsal-ready.png"))
            page.get_by_role("tab", name="Compare").click()
            page.wait_for_function("document.querySelector('#summary').innerText.includes('Speed-up')",
                                   timeout=int(timeout_s * 1000))
            t_done = time.perf_counter()
            res["first_compare_wall_s"] = round(t_done - max(t_click, t_ready), 1)
            res["first_compare_clicked_at_s"] = round(t_click - t0, 1)
            res["first_compare_summary"] = page.locator("#summary").inner_text().strip()
            res["first_compare_tokens"] = {side: len(page.locator(f"#{side}-pane").inner_text())
                                           for side in ("plain", "spec")}
            time.sleep(1.0)
            page.screenshot(path=str(ARTIFACTS / "rehearsal-first-compare.png"), full_page=True)
        finally:
            browser.close()
            pw.stop()
        # On a Space the visitor's browser runs elsewhere; here it shared the 2 cores with the
        # models. The same comparison again through the API, with no browser on this machine:
        from gradio_client import Client

        t1 = time.perf_counter()
        final = Client(url, verbose=False).predict(PROMPT, "auto", "auto", "from analysis", 0, 0, 128, "default",
                                                   api_name="/compare")
        res["api_compare_wall_s"] = round(time.perf_counter() - t1, 1)
        res["api_compare_summary"] = final[4]
    finally:
        mem.running = False
        mem.join()
        app.terminate()
        app.wait(timeout=30)
        log.close()
    res["peak_rss_bytes"] = mem.peak
    res["peak_rss_gib"] = round(mem.peak / 2**30, 2)
    res["under_space_memory"] = mem.peak < SPACE_MEMORY * 0.8
    res["rss_timeline"] = mem.samples[:: max(1, len(mem.samples) // 60)]
    res["app_log_tail"] = (work / "app.log").read_text()[-3000:]
    res["downloaded_bytes"] = sum(p.stat().st_size for p in (work / "hf").rglob("*") if p.is_file() and not p.is_symlink())
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate-mb", type=float, default=100.0, help="the connection's pace, MB/s (0: as fast as it goes)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds the visit may take in all")
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument("--out", default="bench-results/rehearsal.json")
    args = ap.parse_args()
    files = prepare()
    work = Path(tempfile.mkdtemp(prefix="specquant-rehearsal-"))
    hub = Hub(work / "hub")
    try:
        published = publish(hub.root, files)
        t0 = time.perf_counter()  # the server hashes each file once for its ETag, as the Hub has it stored
        for repo, names in published.items():
            for n in names:
                hub.head(repo, n)
        res = {"published": published, "server_etag_warmup_s": round(time.perf_counter() - t0, 1),
               "rate_mb_s": args.rate_mb}
        if args.rate_mb:
            (hub.root / ".rate").write_text(str(args.rate_mb * 1e6))
        if not args.skip_resume:
            res["resume"] = check_resume(hub, work, files["F16"])
            print("resume:", res["resume"], flush=True)
        res["visit"] = visit(hub, work, args.timeout)
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    v = res["visit"]
    for k in ("first_http_200_s", "progress_seen_s", "benchmark_tab_answers_s", "ready_s", "phases_on_page",
              "peak_rss_gib", "first_compare_wall_s", "first_compare_summary", "api_compare_wall_s",
              "api_compare_summary"):
        print(f"{k}: {v.get(k)}")
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
