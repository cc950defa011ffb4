"""A small HTTP server that speaks the parts of the Hugging Face Hub protocol huggingface_hub uses
to list and download model files. Run it in its own process (so a test can stop it to fake an
outage):  python tests/hub_server.py ROOT PORT_FILE

ROOT/<org>/<name>/<files...> are the repos. Every request is appended to ROOT/.log as
"METHOD PATH [Range]". A line "org/name/file BYTES" in ROOT/.drop makes every GET of that file
stop at byte BYTES and drop the connection (an outage); "org/name/file BYTES once" does that to
the next GET only (a connection lost once). A number in ROOT/.rate limits each file transfer to
that many bytes per second (a real connection's pace, for rehearsals).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
_etags: dict[tuple, str] = {}


def commit_of(repo: str) -> str:
    return hashlib.sha1(repo.encode()).hexdigest()


def etag_of(p: Path) -> str:
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _etags:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _etags[key] = h.hexdigest()
    return _etags[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _log(self):
        with open(ROOT / ".log", "a") as f:
            rng = self.headers.get("Range")
            f.write(f"{self.command} {urlparse(self.path).path}{' ' + rng if rng else ''}\n")

    def _json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status, code, msg):
        body = json.dumps({"error": msg}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", msg)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _repo(self, org, name):
        d = ROOT / org / name
        return d if d.is_dir() else None

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._log()
        parts = [unquote(x) for x in urlparse(self.path).path.strip("/").split("/")]
        if len(parts) >= 5 and parts[0] == "api" and parts[1] == "models":
            org, name, what = parts[2], parts[3], parts[4]
            d = self._repo(org, name)
            if d is None:
                return self._error(404, "RepoNotFound", f"Repository {org}/{name} not found")
            files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
            sha = commit_of(f"{org}/{name}")
            if what == "revision":
                return self._json({"id": f"{org}/{name}", "sha": sha, "siblings": [{"rfilename": f} for f in files]})
            if what == "tree":
                return self._json([{"type": "file", "oid": etag_of(d / f)[:40], "size": (d / f).stat().st_size,
                                    "path": f} for f in files])
            return self._error(404, "EntryNotFound", "unknown api")
        if len(parts) >= 5 and parts[2] == "resolve":
            org, name, fname = parts[0], parts[1], "/".join(parts[4:])  # any revision: one snapshot per repo
            d = self._repo(org, name)
            if d is None:
                return self._error(404, "RepoNotFound", f"Repository {org}/{name} not found")
            p = d / fname
            if not p.is_file():
                return self._error(404, "EntryNotFound", f"{fname} does not exist in {org}/{name}")
            return self._file(f"{org}/{name}", p, fname)
        return self._error(404, "RepoNotFound", "not found")

    def _file(self, repo, p, fname):
        size = p.stat().st_size
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        drop = None
        dfile = ROOT / ".drop"
        if self.command == "GET" and dfile.exists():
            lines = dfile.read_text().splitlines()
            for line in lines:
                key, n, *once = line.split(" ")
                if key == f"{repo}/{fname}":
                    drop = int(n)
                    if once:
                        dfile.write_text("".join(x + "\n" for x in lines if x != line))
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit_of(repo))
        self.send_header("ETag", f'"{etag_of(p)}"')
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        rate = float((ROOT / ".rate").read_text()) if (ROOT / ".rate").exists() else 0
        t0 = time.perf_counter()
        with open(p, "rb") as f:
            f.seek(start)
            while chunk := f.read(1 << 16):
                if drop is not None and start + sent + len(chunk) > drop:
                    self.wfile.write(chunk[: max(0, drop - start - sent)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                if rate and (ahead := sent / rate - (time.perf_counter() - t0)) > 0:
                    time.sleep(ahead)


def spawn(root: Path):
    """Start this server over ``root`` in its own process: (the process, its URL)."""
    import subprocess

    port = root / ".port"
    proc = subprocess.Popen([sys.executable, __file__, str(root), str(port)])
    for _ in range(200):
        if port.exists() and port.read_text():
            break
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port.read_text()}"


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Path(sys.argv[2]).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
