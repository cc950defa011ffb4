"""The llama-server a SpecQuant fleet runs: llama.cpp's own server, from the same vendored source
as the installed llama-cpp-python, linked against that package's libraries (the patched,
batch-invariant build of scripts/build_llama_cpp.py), so its verify passes are as exact as
SpecQuant's own. Prints the binary's path.

Its objects come from the stock build of benchmarks/build_native.sh (with the llama-server
target: ~12 min on 2 cores the first time, on top of that build's ~15; cached); then only the
link line changes: the static llama and ggml libraries become the installed shared ones. The
result is cached beside the stock binary and made again when the installed package changes.

Usage: python scripts/build_llama_server.py        (CMAKE_ARGS as for build_native.sh)
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def installed_lib() -> Path:
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    if not (lib / "libllama.so").exists():
        raise SystemExit(f"build_llama_server: the installed llama-cpp-python has no shared libraries in {lib}")
    return lib


def relink(tool_dir: Path, target: str, out: Path, lib: Path) -> None:
    """Run ``target``'s link line again with the installed shared libraries for llama and ggml."""
    cmd = (tool_dir / "CMakeFiles" / f"{target}.dir" / "link.txt").read_text().strip()
    swap = {r"-o \S+": f"-o {out}", r"\S*/src/libllama\.a": f"-L{lib} -Wl,--disable-new-dtags,-rpath,{lib} -lllama"}
    swap.update({rf"\S*/lib{name}\.a": f"-l{name}" for name in ("ggml", "ggml-cpu", "ggml-base")})
    for pat, rep in swap.items():
        cmd, n = re.subn(pat, lambda _m, rep=rep: rep, cmd)
        if n != 1:
            raise SystemExit(f"build_llama_server: {target}'s link line has changed ({pat!r} found {n} times)")
    done = subprocess.run(cmd, shell=True, cwd=tool_dir, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"build_llama_server: linking {target} against {lib} failed:\n{done.stderr[-1500:]}")


def main() -> int:
    lib = installed_lib()
    stamp = hashlib.sha1("|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                  for p in sorted(lib.glob("*.so"))).encode()).hexdigest()[:10]
    env = dict(os.environ, NATIVE_TARGETS="llama-server")
    bin_dir = Path(subprocess.run(["bash", str(ROOT / "benchmarks" / "build_native.sh")], check=True, env=env,
                                  stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1])
    out = bin_dir / f"llama-server-specquant-{stamp}"
    if not out.exists():
        print(f"linking llama-server against {lib}", file=sys.stderr, flush=True)
        relink(bin_dir.parent / "tools" / "server", "llama-server", out, lib)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
