"""llama.cpp through llama-cpp-python's low-level API.

Why low level: the speculative loop needs the logits of every position of one batched
decode and KV-cache rollback; llama-cpp-python's high-level ``Llama`` hides both.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from .base import VERIFY_CHECKED, BackendError, Model
from .cpus import physical_cores

_GGUF_MAGIC = b"GGUF"
_lock = threading.Lock()
_initialized = False
_log_callback = None  # keep a reference: ctypes would free the callback otherwise
_weights: dict[tuple, "_Weights"] = {}


def _llama():
    try:
        import llama_cpp
    except ImportError as e:  # pragma: no cover - exercised only without the package
        raise BackendError(
            "llama-cpp-python is not installed: pip install llama-cpp-python "
            "(add CMAKE_ARGS=\"-DGGML_CUDA=on\" for an NVIDIA GPU)"
        ) from e
    return llama_cpp


def init() -> None:
    """Start llama.cpp once per process, its log quiet unless SPECQUANT_LLAMA_LOG is set."""
    global _initialized, _log_callback
    if _initialized:
        return
    lc = _llama()
    quiet = os.environ.get("SPECQUANT_LLAMA_LOG", "") == ""

    @lc.llama_log_callback
    def _log(level, text, user_data):  # noqa: ARG001 - signature fixed by llama.cpp
        if not quiet:
            print(text.decode("utf-8", "replace"), end="", flush=True)

    _log_callback = _log
    lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
    lc.llama_backend_init()
    _initialized = True


@functools.lru_cache(maxsize=1)  # a process loads one build
def build_id() -> str:
    """Which llama.cpp build is loaded (version and library files): measured costs belong to it."""
    lc = _llama()
    lib = Path(getattr(lc.llama_cpp._lib, "_name", "") or "")
    parts = [getattr(lc, "__version__", "?")]
    if lib.parent.is_dir():
        for f in sorted(lib.parent.glob("lib*.so*")) + sorted(lib.parent.glob("*.dylib")) + sorted(lib.parent.glob("*.dll")):
            if not f.is_symlink():
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


TREE_PATHS = 8  # root-to-leaf paths a tree verified in one pass may have (sequences of the cache)


def tree_paths(parents: list[int]) -> tuple[list[int], list[list[int]]]:
    """Each node's depth, and the tree's root-to-leaf paths (node indices, root first), the path through
    each node's first child first: it is the cache's own sequence, which ``keep_path`` keeps."""
    n = len(parents)
    depth = [0] * n
    leaf = [True] * n
    for i in range(1, n):
        depth[i] = depth[parents[i]] + 1
        leaf[parents[i]] = False
    first = 0  # the path of first children (the tree's first tokens when they form a chain) comes first
    while not leaf[first]:
        first = parents.index(first)
    paths = []
    for i in [first] + [i for i in range(n) if leaf[i] and i != first]:
        path = [i]
        while path[-1]:
            path.append(parents[path[-1]])
        paths.append(path[::-1])
    return depth, paths


def patched_build() -> bool:
    """llama-cpp-python built by scripts/build_llama_cpp.py (batch-invariant CPU kernels)."""
    return "+specquant" in getattr(_llama(), "__version__", "")


AMX_FIXED_AT = 5  # scripts/build_llama_cpp.py's patch level that keeps the AMX tile configuration intact


@functools.lru_cache(maxsize=1)
def amx_unsafe() -> bool:
    """Whether this build's AMX kernels may crash the process. llama.cpp 0.3.36 built by GCC 12 (Debian
    12's, as on Hugging Face Spaces) raised SIGILL on any batch of 2+ tokens of a quantized model on
    CPUs with AMX (Intel Sapphire Rapids and newer): the compiler dropped the stores that fill the tile
    configuration. Our build fixes it (scripts/build_llama_cpp.py); any other build that reports AMX
    loads models without llama.cpp's extra CPU weight layouts (AMX, repacked Q4_0): slower quantized
    drafts, never a crash."""
    lc = _llama()
    if "AMX_INT8 = 1" not in lc.llama_print_system_info().decode("utf-8", "replace"):
        return False
    version = getattr(lc, "__version__", "")
    level = version.rpartition("+specquant.")[2] if "+specquant." in version else ""
    return not (level.isdigit() and int(level) >= AMX_FIXED_AT)


def gpu_offload() -> bool:
    return bool(_llama().llama_supports_gpu_offload())


def gpu_layers_default() -> int:
    """Every layer on the GPU when the build can offload, none otherwise; ``SPECQUANT_GPU_LAYERS``
    overrides (0: on the CPU, whose patched kernels are exact where llama.cpp's CUDA ones are not)."""
    env = os.environ.get("SPECQUANT_GPU_LAYERS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise BackendError(f"SPECQUANT_GPU_LAYERS must be a whole number of layers (0 = CPU only), not {env!r}")
        return n
    return 999 if gpu_offload() else 0


def check_gguf(path: str | os.PathLike) -> Path:
    """Refuse a missing file or one that is not a GGUF, before llama.cpp prints its own noise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BackendError(f"model file not found: {p}")
    if not p.is_file():
        raise BackendError(f"model path is not a file: {p}")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise BackendError(f"not a GGUF file (llama.cpp models are .gguf): {p}")
    # Absolute, but through its links: in the HF cache a file is a link to blobs/<hash>, and
    # llama.cpp finds a sharded model's other files (-00002-of-00004.gguf) next to the first.
    return Path(os.path.abspath(p))


class _Weights:
    """A model file loaded once per process, shared by every context opened on it."""

    def __init__(self, path: Path, n_gpu_layers: int):
        lc = _llama()
        params = lc.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = not amx_unsafe()
        ptr = lc.llama_model_load_from_file(str(path).encode(), params)
        if not ptr:
            raise BackendError(f"llama.cpp could not load {path} (unsupported architecture or damaged file)")
        self.ptr = ptr
        self.path = path
        self.n_gpu_layers = n_gpu_layers
        self.vocab = lc.llama_model_get_vocab(ptr)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(ptr))
        self.eos_ids = frozenset(t for t in range(self.n_vocab) if lc.llama_vocab_is_eog(self.vocab, t))
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        self.size_bytes = int(lc.llama_model_size(ptr))
        self.n_params = int(lc.llama_model_n_params(ptr))
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._buf = ctypes.create_string_buffer(256)
        self._fingerprint = None
        self.exactness: dict[int, bool] = {}  # see Model.batch_invariant

    def piece(self, token: int, special: bool) -> bytes:
        key = (token, special)
        got = self._pieces.get(key)
        if got is None:
            lc = _llama()
            n = lc.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
                got = buf.raw[:n]
            else:
                got = self._buf.raw[:n]
            self._pieces[key] = got
        return got

    def meta(self, key: str) -> str | None:
        lc = _llama()
        buf = ctypes.create_string_buffer(1 << 16)
        n = lc.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            lc.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")


def _load_weights(path: Path, n_gpu_layers: int) -> _Weights:
    key = (os.path.realpath(path), os.stat(path).st_mtime_ns, n_gpu_layers)  # one file, however reached
    with _lock:
        w = _weights.get(key)
        if w is None:
            w = _weights[key] = _Weights(path, n_gpu_layers)
        return w


class LlamaCppModel(Model):
    backend = "llama.cpp"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_ctx: int = 4096,
        n_batch: int = 512,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
    ):
        super().__init__()
        init()
        lc = _llama()
        self.path = check_gguf(path)
        if n_gpu_layers is None:
            n_gpu_layers = gpu_layers_default()
        self._w = _load_weights(self.path, n_gpu_layers)
        n_ctx = min(n_ctx, self._w.n_ctx_train) if self._w.n_ctx_train > 0 else n_ctx
        self.n_threads = n_threads or physical_cores()
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        # A tree of drafts is verified in one pass with each root-to-leaf path a sequence of one unified
        # cache (``eval_tree``). Exact only where attention walks the cells a token sees in cache order
        # and skips the others: our build's CPU flash attention does (tests/test_tree.py compares every
        # row with one-token passes); any other build, or a GPU, verifies chains alone.
        self.trees = patched_build() and n_gpu_layers == 0
        cp.n_seq_max = TREE_PATHS if self.trees else 1
        cp.kv_unified = self.trees  # (one cache for every path; a split one would give each a share)
        cp.n_threads = self.n_threads
        cp.n_threads_batch = self.n_threads
        cp.no_perf = True
        # llama.cpp's CPU flash attention splits one token's attention over the cache across
        # threads (from 512 cached tokens), a batch's not: a verify pass and one-token steps
        # would disagree. Our build (scripts/build_llama_cpp.py) drops that split; any other
        # build, or a GPU, gets flash attention off.
        cp.flash_attn_type = -1 if patched_build() and n_gpu_layers == 0 else 0
        if n_gpu_layers == 0:  # on the CPU (by request, on a CUDA build): no KV cache, and no batch of 32+
            cp.offload_kqv = False  # tokens (llama.cpp's op offload), goes to the GPU, whose kernels aren't exact
            cp.op_offload = False
        ctx = lc.llama_init_from_model(self._w.ptr, cp)
        if not ctx:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens for {self.path}")
        self._ctx = ctx
        self._mem = lc.llama_get_memory(ctx)
        self.n_ctx = int(lc.llama_n_ctx(ctx))
        # llama.cpp caps a batch at the context's size (a 64-token context takes 64 at a time); what it
        # granted, not what was asked, bounds each llama_decode call (it aborts the process beyond it)
        self.n_batch = min(int(lc.llama_n_batch(ctx)), int(lc.llama_n_ubatch(ctx)))
        self.n_vocab = self._w.n_vocab
        self.eos_ids = self._w.eos_ids
        self._batch = lc.llama_batch_init(self.n_batch, 0, cp.n_seq_max)
        self._lc = lc
        self._view: tuple[int, np.ndarray] = (0, np.empty((0, self.n_vocab), np.float32))  # see _logits
        self._tree: tuple[int, int] | None = None  # (first position, paths) of a tree not yet settled

    # --- facts ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def size_bytes(self) -> int:
        return self._w.size_bytes

    @property
    def on_gpu(self) -> bool:
        return self._w.n_gpu_layers > 0 and gpu_offload()

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            name=self.name,
            file_bytes=self.path.stat().st_size,
            n_params=self._w.n_params,
            gpu_layers=self._w.n_gpu_layers if self.on_gpu else 0,
            threads=self.n_threads,
            file_type=self._w.meta("general.file_type"),
            batch_invariant=self._w.exactness.get(VERIFY_CHECKED),
            build=build_id(),
            llama_cpp=getattr(_llama(), "__version__", "?"),
            amx_disabled=amx_unsafe(),
        )
        return d

    def exactness(self) -> dict[int, bool]:
        return self._w.exactness  # for every context on these weights

    def vocab_fingerprint(self):
        if self._w._fingerprint is None:
            self._w._fingerprint = super().vocab_fingerprint()
        return self._w._fingerprint

    # --- text ----------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (self._lc.llama_token * n_max)()
        n = self._lc.llama_tokenize(self._w.vocab, data, len(data), buf, n_max, add_special, True)
        if n < 0:
            n_max = -n
            buf = (self._lc.llama_token * n_max)()
            n = self._lc.llama_tokenize(self._w.vocab, data, len(data), buf, n_max, add_special, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        return self._w.piece(token, False)

    def piece_special(self, token: int) -> bytes:
        return self._w.piece(token, True)

    def chat_template(self) -> str | None:
        return self._w.meta("tokenizer.chat_template")

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        lc = self._lc
        tmpl = lc.llama_model_chat_template(self._w.ptr, None)
        if tmpl:
            arr = (lc.llama_chat_message * len(messages))()
            keep = []
            for i, m in enumerate(messages):
                role, content = m["role"].encode(), m["content"].encode()
                keep += [role, content]
                arr[i].role, arr[i].content = role, content
            size = 4096 + 2 * sum(len(k) for k in keep)
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_chat_apply_template(tmpl, arr, len(messages), add_generation_prompt, buf, size)
            if n > size:
                buf = ctypes.create_string_buffer(n)
                n = lc.llama_chat_apply_template(tmpl, arr, len(messages), add_generation_prompt, buf, n)
            if n >= 0:
                return buf.raw[:n].decode("utf-8")
            src = self.chat_template()
            if src:  # a template llama.cpp does not recognise: render the Jinja source itself
                return _render_jinja(src, messages, add_generation_prompt, self)
        return self.plain_chat(messages, add_generation_prompt)

    # --- evaluation ----------------------------------------------------------------------
    def _decode(self, tokens: list[int], want_all: bool) -> None:
        lc, b = self._lc, self._batch
        pos0 = len(self.tokens)
        self.check_room(len(tokens))
        n = len(tokens)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = want_all or i == n - 1
        rc = lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise BackendError(f"llama_decode failed with code {rc} at position {pos0} ({n} tokens)")
        self.tokens.extend(tokens)

    def eval_tree(self, tokens: list[int], parents: list[int]) -> np.ndarray:
        """Append a tree of tokens in one pass: ``tokens[0]`` follows the cache, each later one follows
        ``tokens[parents[i]]`` (``parents[i] < i``; ``parents[0]`` is -1). Row i of the logits is the
        model's view after the path from the root to token i, bit-identical to one-token passes along
        that path. Until ``keep_path``, the cache holds the tree; nothing else may be evaluated."""
        n = len(tokens)
        if not self.trees:
            raise BackendError(f"{self.name}: this build or device verifies chains only")
        if not n or parents[0] != -1 or any(not 0 <= parents[i] < i for i in range(1, n)):
            raise ValueError(f"not a tree with its root first: parents {parents}")
        depth, paths = tree_paths(parents)
        if len(paths) > TREE_PATHS or n > self.n_batch:
            raise ValueError(f"a tree of {len(paths)} paths and {n} tokens exceeds {TREE_PATHS} paths or a "
                             f"{self.n_batch}-token batch")
        self.check_room(max(depth) + 1)
        lc, b, pos0 = self._lc, self._batch, len(self.tokens)
        for s in range(1, len(paths)):  # every path sees the cache so far
            lc.llama_memory_seq_cp(self._mem, 0, s, -1, -1)
        seqs: list[list[int]] = [[] for _ in range(n)]
        for s, path in enumerate(paths):
            for i in path:
                seqs[i].append(s)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + depth[i]
            b.n_seq_id[i] = len(seqs[i])
            for j, s in enumerate(seqs[i]):
                b.seq_id[i][j] = s
            b.logits[i] = True
        rc = lc.llama_decode(self._ctx, b)
        if rc != 0:
            for s in range(1, len(paths)):
                lc.llama_memory_seq_rm(self._mem, s, -1, -1)
            lc.llama_memory_seq_rm(self._mem, 0, pos0, -1)
            raise BackendError(f"llama_decode failed with code {rc} at position {pos0} (a tree of {n} tokens)")
        self._tree = (pos0, len(paths))
        return self._logits(lc.llama_get_logits(self._ctx), n).copy()

    def keep_path(self, tokens: list[int], path: list[int]) -> int:
        """After ``eval_tree(tokens, ...)``: keep the root-first ``path`` (indices into ``tokens``, from
        0) as far as it lies in the cache as a chain (``path[j] == j``: the tree's first tokens), drop
        the rest of the tree, and return how many of ``path`` were kept. The caller evaluates the others
        again with its next pass: a cell's place in the cache is its place in attention's order, and
        exactness needs that order to be the positions' (a later token must not fill a freed cell before
        them)."""
        pos0, n_paths = self._tree
        kept = 0
        while kept < len(path) and path[kept] == kept:
            kept += 1
        for s in range(1, n_paths):
            self._lc.llama_memory_seq_rm(self._mem, s, -1, -1)
        self._lc.llama_memory_seq_rm(self._mem, 0, pos0 + kept, -1)
        self.tokens.extend(tokens[:kept])
        self._tree = None
        return kept

    def _parts(self, tokens: list[int]) -> list[list[int]]:
        """``tokens`` in passes that fit the batch llama.cpp granted (n_batch)."""
        return [tokens[i : i + self.n_batch] for i in range(0, len(tokens), self.n_batch)]

    def eval(self, tokens: list[int]) -> np.ndarray:
        n = len(tokens)
        if n == 0:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        if n > self.n_batch:  # a context smaller than a verify pass (--ctx 16, k 32): in parts, same logits
            return np.concatenate([self.eval(part) for part in self._parts(tokens)])
        self._decode(tokens, True)
        return self._logits(self._lc.llama_get_logits(self._ctx), n).copy()

    def prefill(self, tokens: list[int]) -> np.ndarray | None:
        if not tokens:
            return None
        for part in self._parts(tokens):
            self._decode(part, False)
        return self._logits(self._lc.llama_get_logits_ith(self._ctx, -1), 1)[0].copy()

    def _logits(self, ptr, rows: int) -> np.ndarray:
        """A numpy view of ``rows`` rows of logits at ``ptr`` (llama.cpp's output buffer). The view is kept
        while the buffer stays where it is: building one costs ~60 us after each pass (np.ctypeslib), half a
        per cent of a one-token step of the demo model, where plain decoding is held to llama-bench's speed."""
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        if self._view[0] != addr or self._view[1].shape[0] < rows:
            self._view = (addr, np.ctypeslib.as_array(ptr, shape=(max(rows, self.n_batch), self.n_vocab)))
        return self._view[1][:rows]

    def rollback(self, n_keep: int) -> None:
        if self._tree is not None:  # a tree left unsettled (a run stopped mid-pass): none of it stays
            self.keep_path([], [])
        if not self.check_rollback(n_keep):
            return
        if n_keep == 0:
            self._lc.llama_memory_clear(self._mem, True)
        elif not self._lc.llama_memory_seq_rm(self._mem, 0, n_keep, -1):
            raise BackendError(f"{self.name}: this model's cache cannot be rolled back (llama_memory_seq_rm refused)")
        del self.tokens[n_keep:]

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lc.llama_batch_free(self._batch)
            self._lc.llama_free(self._ctx)
            self._ctx = None

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


def _render_jinja(src: str, messages, add_generation_prompt: bool, model: LlamaCppModel) -> str:
    try:
        import jinja2
    except ImportError as e:  # pragma: no cover
        raise BackendError("this model's chat template needs jinja2: pip install jinja2") from e
    env = jinja2.Environment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(BackendError(msg))
    eos = next(iter(sorted(model.eos_ids)), None)
    return env.from_string(src).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token="",
        eos_token=model.piece_special(eos).decode("utf-8", "replace") if eos is not None else "",
    )


def load(path, **kw) -> LlamaCppModel:
    return LlamaCppModel(path, **kw)
