"""Prompt analysis: both analyzers against vectors computed by hand from the seed's formula."""
import time

import pytest

from specquant import complexity as cx
from tests.nltk_fixture import build


@pytest.fixture(autouse=True)
def isolated_nltk_path():
    import nltk

    saved = list(nltk.data.path)
    yield
    nltk.data.path[:] = saved
    cx.reset()


@pytest.fixture
def no_nltk(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECQUANT_HOME", str(tmp_path))
    monkeypatch.setenv("SPECQUANT_NLTK_DOWNLOAD", "0")
    cx.reset()
    yield
    cx.reset()


@pytest.fixture(scope="session")
def nltk_home(tmp_path_factory):
    import nltk

    home = tmp_path_factory.mktemp("home")
    saved = list(nltk.data.path)
    build(home / "data" / "nltk_data")  # the app's own NLTK data dir under $SPECQUANT_HOME
    nltk.data.path[:] = saved  # only the app itself puts it on the path
    return home


@pytest.fixture
def with_nltk(nltk_home, monkeypatch):
    monkeypatch.setenv("SPECQUANT_HOME", str(nltk_home))
    monkeypatch.setenv("SPECQUANT_NLTK_DOWNLOAD", "0")
    cx.reset()
    yield
    cx.reset()


def vec(a):
    return (a.words, a.syntactic, a.semantic, a.length_level, a.syntactic_level, a.semantic_level, a.score, a.tier)


# (prompt, words, syntactic, semantic, levels..., score, tier) -- worked out by hand:
#   score = 1*L(length) + 2*L(semantic) + 3*L(syntactic), L: low 0, medium 2, high 4
FALLBACK = [
    # 6 words; "of" -> 1; France -> 1: 0 + 0 + 0
    ("What is the capital of France?", 6, 1, 1, "low", "low", "low", 0, "low"),
    # 11 words; and, from, to, to -> 4; sentence-initial John is not counted (next word isn't
    # capitalised) -> Mary, Paris, London, Google = 4: 2 + 2*4 + 3*4 = 22
    ("John and Mary flew from Paris to London to visit Google.", 11, 4, 4, "medium", "high", "high", 22, "high"),
    # 17 words; on, and, by, while = 4, +1 for a 17-word sentence: 4 + 0 + 12 = 16
    ("the cat sat on the mat and the dog lay by the door while the bird sang", 17, 5, 0, "high", "high", "low", 16, "high"),
    # 9 words; that, or -> 2; none: 2 + 0 + 6 = 8
    ("Please list five fruits that are red or yellow.", 9, 2, 0, "medium", "medium", "low", 8, "medium"),
    # 9 words; about, and -> 2; "New York", "NASA" -> 2: 2 + 4 + 6 = 12
    ("Tell me about New York and the NASA budget.", 9, 2, 2, "medium", "medium", "medium", 12, "high"),
    # 3 words, nothing else: 0
    ("Write a haiku.", 3, 0, 0, "low", "low", "low", 0, "low"),
    # two sentences of 8 and 4 words = 12 words (medium, 2); "in" -> 1: avg 6 -> 2 + 0 + 0
    ("Describe the weather in spring for farmers. Keep it short.", 10, 2, 0, "medium", "medium", "low", 8, "medium"),
]


@pytest.mark.parametrize("case", FALLBACK, ids=[c[0][:24] for c in FALLBACK])
def test_fallback_vectors(no_nltk, case):
    a = cx.analyze(case[0])
    assert a.analyzer == "fallback"
    assert vec(a) == case[1:]
    assert a.tier in a.reason and str(a.score) in a.reason


def test_auto_falls_back_without_data_and_says_so(no_nltk):
    a = cx.analyze("What is the capital of France?")
    assert a.analyzer == "fallback"
    assert "NLTK data missing" in cx.nltk_status()
    with pytest.raises(RuntimeError, match="NLTK data missing"):
        cx.analyze("hello", analyzer="nltk")


NLTK_CASES = [
    # 8 words; tags IN, CC, IN -> 3; chunker: John, Paris, Google -> 3: 2 + 2*4 + 3*4 = 22
    ("John lives in Paris and works at Google.", 8, 3, 3, "medium", "high", "high", 22, "high"),
    # 6 words; TO, IN -> 2; Mary, London, Peter -> 3: 0 + 8 + 6 = 14
    ("Mary went to London with Peter.", 6, 2, 3, "low", "medium", "high", 14, "high"),
    # 6 words; IN -> 1; no entity: 0
    ("The cat sat on the mat.", 6, 1, 0, "low", "low", "low", 0, "low"),
    # two sentences of 6 + 8 = 14 words (medium 2), average 7; of, to, but -> 3 (high 4);
    # France -> 1: 2 + 0 + 12 = 14
    ("What is the capital of France? I want to eat but I am tired.", 14, 3, 1, "medium", "high", "low", 14, "high"),
]


@pytest.mark.parametrize("case", NLTK_CASES, ids=[c[0][:24] for c in NLTK_CASES])
def test_nltk_vectors(with_nltk, case):
    a = cx.analyze(case[0])
    assert a.analyzer == "nltk", cx.nltk_status()
    assert vec(a) == case[1:]


def test_nltk_models_load_once_and_are_fast(with_nltk):
    cx.analyze("John lives in Paris and works at Google.")
    loaded = cx._nltk
    prompt = " ".join(["Mary went to London with Peter and the cat sat on the mat."] * 4)  # ~50 words
    t0 = time.perf_counter()
    for _ in range(20):
        cx.analyze(prompt)
    per = (time.perf_counter() - t0) / 20
    assert cx._nltk is loaded
    assert per < 0.02, f"{per * 1000:.1f} ms per prompt"


@pytest.mark.parametrize("bad,msg", [("", "empty"), ("   \n", "empty"), (b"\xff\xfe\x00", "not text"),
                                     ("abc\x00def", "not text"), (12, "must be text")])
def test_bad_input(no_nltk, bad, msg):
    with pytest.raises(ValueError, match=msg):
        cx.analyze(bad)


def test_huge_prompt_is_analysed_quickly(no_nltk):
    t0 = time.perf_counter()
    a = cx.analyze("word " * 100_000)
    assert time.perf_counter() - t0 < 1.0
    # the first 20,000 characters: 4,000 words in one long sentence -> 1x4 + 3x0 = 4, medium
    assert a.truncated and (a.words, a.syntactic, a.score, a.tier) == (4000, 1, 4, "medium")


def test_unknown_analyzer(no_nltk):
    with pytest.raises(ValueError, match="unknown analyzer"):
        cx.analyze("hi", analyzer="spacy")
