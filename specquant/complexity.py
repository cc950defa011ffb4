"""Prompt analysis: length, syntactic and semantic complexity -> score -> tier (the seed's rule).

- length = number of words (tokens with a letter or digit); low <= 7, medium 8-15, high > 15
- syntactic = number of CC, IN and TO part-of-speech tags, + 1 when the average sentence is
  longer than 12 words; low <= 1, medium 2, high >= 3
- semantic = number of named entities; low <= 1, medium 2, high >= 3
- level scores: low 0, medium 2, high 4; total = 1 x length + 2 x semantic + 3 x syntactic
- tier: low when total <= 3, medium 4-8, high >= 9

Two analyzers compute the three numbers. ``nltk`` uses NLTK's punkt sentence splitter,
perceptron tagger and maxent named-entity chunker; their data (punkt_tab,
averaged_perceptron_tagger_eng, maxent_ne_chunker_tab, words) is downloaded once into the
app's data directory when the network allows. When it can't be had, ``fallback`` runs:
regex words and sentences, a list of English conjunctions / prepositions / "to" standing in
for the CC / IN / TO tags, and runs of capitalised words (not sentence-initial, or known
to be names) standing in for named entities. Every result says which analyzer ran.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LEVEL_SCORE = {"low": 0, "medium": 2, "high": 4}
WEIGHTS = {"length": 1, "semantic": 2, "syntactic": 3}
MAX_CHARS = 20_000  # longer prompts are analysed on their first MAX_CHARS characters
NLTK_PACKAGES = {
    "punkt_tab": "tokenizers/punkt_tab/english/",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/",
    "maxent_ne_chunker_tab": "chunkers/maxent_ne_chunker_tab/english_ace_multiclass/",
    "words": "corpora/words",
}
RETRY_DOWNLOAD_S = 24 * 3600


def length_level(words: int) -> str:
    return "low" if words <= 7 else "medium" if words <= 15 else "high"


def count_level(n: int) -> str:
    return "low" if n <= 1 else "medium" if n == 2 else "high"


def tier_of(score: int) -> str:
    return "low" if score <= 3 else "medium" if score <= 8 else "high"


@dataclass
class Analysis:
    words: int
    syntactic: int
    semantic: int
    length_level: str
    syntactic_level: str
    semantic_level: str
    score: int
    tier: str
    reason: str
    analyzer: str  # "nltk" or "fallback"
    entities: list[str]
    long_sentences: bool
    seconds: float = 0.0
    truncated: bool = False  # only the first MAX_CHARS characters were analysed

    def to_dict(self) -> dict:
        return asdict(self)


def score_parts(words: int, syntactic: int, semantic: int) -> tuple[dict, int, str]:
    levels = {"length": length_level(words), "syntactic": count_level(syntactic), "semantic": count_level(semantic)}
    score = sum(WEIGHTS[k] * LEVEL_SCORE[v] for k, v in levels.items())
    return levels, score, tier_of(score)


def _finish(words, syn_tags, long_sent, entities, analyzer, t0, truncated=False) -> Analysis:
    syntactic = syn_tags + int(long_sent)
    semantic = len(entities)
    levels, score, tier = score_parts(words, syntactic, semantic)
    reason = (
        f"{tier} tier (score {score} = 1x{LEVEL_SCORE[levels['length']]} length + "
        f"2x{LEVEL_SCORE[levels['semantic']]} entities + 3x{LEVEL_SCORE[levels['syntactic']]} syntax): "
        f"{words} words, {syntactic} conjunction/preposition marks"
        f"{' incl. long sentences' if long_sent else ''}, {semantic} named entities"
    )
    return Analysis(words, syntactic, semantic, levels["length"], levels["syntactic"], levels["semantic"],
                    score, tier, reason, analyzer, entities, long_sent, time.perf_counter() - t0, truncated)


def _check_text(prompt) -> str:
    if isinstance(prompt, bytes):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the prompt is not text (it is not valid UTF-8)") from None
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, not {type(prompt).__name__}")
    if "\x00" in prompt:
        raise ValueError("the prompt is not text (it contains NUL bytes)")
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    return prompt


# --- fallback analyzer ------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*|[^\w\s]", re.UNICODE)
_SENT = re.compile(r"(?<=[.!?])\s+|\n{2,}")
CC_WORDS = {"and", "but", "or", "nor", "yet", "so", "for", "plus", "either", "neither", "both", "versus"}
IN_WORDS = {
    "about", "above", "across", "after", "against", "along", "among", "around", "as", "at", "because",
    "before", "behind", "below", "beneath", "beside", "besides", "between", "beyond", "by", "despite",
    "down", "during", "except", "from", "if", "in", "inside", "into", "like", "near", "of", "off", "on",
    "onto", "out", "outside", "over", "per", "since", "than", "that", "though", "through", "throughout",
    "till", "toward", "towards", "under", "underneath", "unless", "unlike", "until", "upon", "via",
    "whereas", "whether", "while", "with", "within", "without", "although",
}  # "for" is CC here; NLTK tags it IN more often, but it counts once either way
TO_WORDS = {"to"}
_NOT_ENTITY = {
    "i", "i'm", "i've", "i'd", "i'll", "the", "a", "an", "this", "that", "these", "those", "what", "which",
    "who", "whom", "whose", "when", "where", "why", "how", "is", "are", "was", "were", "do", "does", "did",
    "can", "could", "would", "should", "will", "please", "write", "give", "list", "explain", "summarise",
    "summarize", "rewrite", "translate", "tell", "describe", "compare", "make", "add", "it", "if", "in", "on",
    "and", "but", "or", "for", "to", "of", "my", "your", "our", "we", "you", "he", "she", "they", "there",
    "here", "yes", "no", "ok", "dear", "hi", "hello", "thanks", "thank", "monday", "tuesday", "wednesday",
    "thursday", "friday", "saturday", "sunday",
}


def _sentences(text: str) -> list[str]:
    return [s for s in _SENT.split(text.strip()) if s.strip()]


def _is_word(tok: str) -> bool:
    return any(ch.isalnum() for ch in tok)


def _capitalised_runs(tokens: list[str]) -> list[str]:
    """Runs of capitalised words, one entity each. A sentence-initial capital is grammar
    unless it is an acronym or the run goes on ("New York is ...")."""
    def cap(tok):
        return _is_word(tok) and tok[:1].isupper() and tok.lower() not in _NOT_ENTITY

    ents, run = [], []
    for i, tok in enumerate(tokens):
        c = cap(tok)
        if c and i == 0 and not (tok.isupper() and len(tok) > 1):
            c = len(tokens) > 1 and cap(tokens[1])
        if c:
            run.append(tok)
        elif run:
            ents.append(" ".join(run))
            run = []
    if run:
        ents.append(" ".join(run))
    return ents


def analyze_fallback(prompt: str) -> Analysis:
    t0 = time.perf_counter()
    text = _check_text(prompt)[:MAX_CHARS]
    sents = [[t for t in _WORD.findall(s)] for s in _sentences(text)]
    words = [t for s in sents for t in s if _is_word(t)]
    syn = sum(1 for w in words if w.lower() in CC_WORDS or w.lower() in IN_WORDS or w.lower() in TO_WORDS)
    long_sent = bool(sents) and len(words) / len(sents) > 12
    entities = [e for s in sents for e in _capitalised_runs(s)]
    return _finish(len(words), syn, long_sent, entities, "fallback", t0, len(prompt) > MAX_CHARS)


# --- NLTK analyzer -----------------------------------------------------------------------------

def nltk_data_dir() -> Path:
    from .paths import data_dir

    return data_dir() / "nltk_data"


class _NLTK:
    """NLTK's models, loaded once per process (plain ``pos_tag`` / ``ne_chunk`` reload per call)."""

    def __init__(self):
        import nltk
        from nltk.chunk.named_entity import Maxent_NE_Chunker
        from nltk.tag.perceptron import PerceptronTagger
        from nltk.tokenize.punkt import PunktTokenizer

        self.nltk = nltk
        self.punkt = PunktTokenizer("english")
        self.tagger = PerceptronTagger()
        self.chunker = Maxent_NE_Chunker()
        from nltk.tokenize import NLTKWordTokenizer

        self.words = NLTKWordTokenizer()
        # The chunker's word-list feature: read it now from our data path (NLTK would read it
        # on the first prompt through a process-wide corpus loader).
        with nltk.data.find("corpora/words/en-basic").open() as f:
            self.chunker._tagger._en_wordlist = {w.strip() for w in f.read().decode("utf-8").split("\n") if w.strip()}

    def analyze(self, text: str) -> Analysis:
        t0 = time.perf_counter()
        from nltk.tree import Tree

        sents = self.punkt.tokenize(text[:MAX_CHARS])
        n_words = syn = 0
        entities: list[str] = []
        for s in sents:
            toks = self.words.tokenize(s)
            tagged = self.tagger.tag(toks)
            n_words += sum(1 for t in toks if _is_word(t))
            syn += sum(1 for _, tag in tagged if tag in ("CC", "IN", "TO"))
            for node in self.chunker.parse(tagged):
                if isinstance(node, Tree):
                    entities.append(" ".join(w for w, _ in node.leaves()))
        long_sent = bool(sents) and n_words / len(sents) > 12
        return _finish(n_words, syn, long_sent, entities, "nltk", t0, len(text) > MAX_CHARS)


_lock = threading.Lock()
_nltk: _NLTK | None = None
_nltk_error: str | None = None


def _download_allowed(marker: Path) -> bool:
    if os.environ.get("SPECQUANT_NLTK_DOWNLOAD", "1") in ("0", "false", "no") or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        return time.time() - marker.stat().st_mtime > RETRY_DOWNLOAD_S
    except OSError:
        return True


def ensure_nltk_data(download: bool | None = None) -> str | None:
    """Make NLTK's data findable (the app's data dir first); download what is missing when
    allowed. Returns None when everything is there, else a sentence saying what is missing."""
    import nltk

    d = nltk_data_dir()
    if str(d) not in nltk.data.path:
        nltk.data.path.insert(0, str(d))

    def missing():
        out = []
        for pkg, res in NLTK_PACKAGES.items():
            try:
                nltk.data.find(res)
            except LookupError:
                out.append(pkg)
        return out

    need = missing()
    marker = d / ".download-failed"
    if need and (download if download is not None else _download_allowed(marker)):
        import contextlib
        import io

        d.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for pkg in need:
                nltk.download(pkg, download_dir=str(d), quiet=True, raise_on_error=False)
        need = missing()
        if need:
            marker.touch()
    if need:
        return f"NLTK data missing ({', '.join(need)}); could not be downloaded into {d}"
    return None


def _load_nltk() -> _NLTK | None:
    global _nltk, _nltk_error
    with _lock:
        if _nltk is None and _nltk_error is None:
            try:
                problem = ensure_nltk_data()
                if problem:
                    _nltk_error = problem
                else:
                    _nltk = _NLTK()
            except Exception as e:  # a damaged data file must not take the analysis down
                _nltk_error = f"NLTK could not load: {e}"
        return _nltk


def reset() -> None:
    """Forget the loaded analyzer (tests, or after data was installed)."""
    global _nltk, _nltk_error
    with _lock:
        _nltk = None
        _nltk_error = None


def nltk_status() -> str:
    _load_nltk()
    return "ready" if _nltk is not None else (_nltk_error or "not loaded")


def analyze(prompt, analyzer: str = "auto") -> Analysis:
    """Analyse a prompt. analyzer: "auto" (NLTK when its data is there, else fallback),
    "nltk" (error if unavailable) or "fallback"."""
    text = _check_text(prompt)
    if analyzer == "fallback":
        return analyze_fallback(text)
    if analyzer not in ("auto", "nltk"):
        raise ValueError(f"unknown analyzer {analyzer!r}: use auto, nltk or fallback")
    nl = _load_nltk()
    if nl is None:
        if analyzer == "nltk":
            raise RuntimeError(_nltk_error or "NLTK is not available")
        return analyze_fallback(text)
    return nl.analyze(text)
