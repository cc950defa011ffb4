"""The draft sources SpecQuant knows, in one table. Everything that lists, parses, labels or
weighs a source reads it: the engine (which source a spec means, what to load), the router
(labels, priors, what policy auto weighs), the CLI and the page (choices).

A source is a quantized copy of the target (``qtype``), prompt lookup (``free``: it proposes
without a model pass; suffix matching over the conversation and the engine's earlier answers,
``specquant.suffix``), or the family's small sibling model. Its ``prior`` is the per-position
acceptance believed for a tier-"medium" prompt before any is observed on this machine, with
where that number comes from.
"""
from __future__ import annotations

from dataclasses import dataclass

# Greedy agreement of each draft's token with F16's along F16's own output, SmolLM2-135M over
# the bundled prompts (Q8_0 98.4%, Q4_K_M 91.7%, Q4_0 82.6%), shaded down: agreement along the
# target's path is an upper bound of acceptance.
_AGREEMENT = "greedy agreement with F16 along F16's output on SmolLM2-135M ({}), shaded down"


@dataclass(frozen=True)
class Source:
    name: str  # canonical spec
    label: str
    aliases: tuple[str, ...] = ()
    qtype: str | None = None  # a quantized copy of the target, in this llama.cpp type
    free: bool = False  # proposes without a model pass (prompt lookup)
    prior: float = 0.75
    prior_from: str = ""
    auto_on: tuple[str, ...] = ()  # backends on which policy auto weighs it

    @property
    def model(self) -> bool:
        """Drafting costs a model pass per token."""
        return not self.free and self.name != "none"


SOURCES: tuple[Source, ...] = (
    Source("none", "no draft", ("plain", "")),
    Source("q8", "Q8_0", ("q8_0",), qtype="Q8_0", prior=0.95, prior_from=_AGREEMENT.format("98.4%"),
           auto_on=("llama.cpp", "mlx")),
    Source("q4", "Q4_K_M", ("q4_k_m",), qtype="Q4_K_M", prior=0.88, prior_from=_AGREEMENT.format("91.7%"),
           auto_on=("mlx",)),  # on llama.cpp, Q4_0 is the 4-bit draft that decodes faster (README)
    Source("q4_0", "Q4_0", (), qtype="Q4_0", prior=0.80, prior_from=_AGREEMENT.format("82.6%"),
           auto_on=("llama.cpp",)),
    Source("lookup", "prompt lookup", ("prompt lookup", "pld", "suffix", "suffixdecoding"), free=True, prior=0.15,
           prior_from="prompt lookup kept 15% per position on the bundled ungrounded prompts; grounded "
                      "prompts: routing.GROUNDED_LOOKUP", auto_on=("llama.cpp", "mlx")),
    Source("sibling", "small sibling model", (), prior=0.75,
           prior_from="assumed for a same-family model a tenth the target's size; learned per machine"),
)
_BY_NAME = {a: s for s in SOURCES for a in (s.name, *s.aliases)}
# Other llama.cpp quantizations a user may ask for as a draft of the target.
OTHER_QTYPES = ("Q5_K_M", "Q6_K", "Q4_1")


def find(spec: str | None) -> Source | None:
    """The source a spec names ("q8", "Q8_0", "lookup", "q6_k", ...), or None (a model path)."""
    key = (spec or "none").strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    if key.upper() in OTHER_QTYPES:
        return Source(key, key.upper(), qtype=key.upper(), prior_from="no measurement: the sibling default")
    return None


def label(name: str) -> str:
    s = find(name)
    return s.label if s else name


def prior(name: str) -> float:
    s = find(name)
    return s.prior if s else _BY_NAME["sibling"].prior


def auto_sources(backend: str, sibling: bool = False) -> list[str]:
    """What policy auto weighs on this backend (the sibling when the family has one)."""
    return [s.name for s in SOURCES if backend in s.auto_on or (sibling and s.name == "sibling")]


def names() -> str:
    return ", ".join(s.name for s in SOURCES)


def same_work(draft: str, drafted: int) -> str:
    """Why a comparison's speculative run did plain decoding's work, or "": no draft was chosen, or
    a free source proposed nothing (prompt lookup found nothing to copy; its matching costs
    microseconds a step). A model draft that drafted nothing still prefilled the prompt."""
    s = find(draft)
    if s is not None and s.name == "none":
        return "no draft was chosen"
    if s is not None and s.free and drafted == 0:
        return f"{s.label} found nothing to copy in this answer"
    return ""
