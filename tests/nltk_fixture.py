"""Builds a small but real NLTK data tree (punkt_tab, tagger, NE chunker, words) in a folder:
the NLTK models trained here on a few sentences, in the formats NLTK loads."""
from __future__ import annotations

import json
from pathlib import Path

TAGGED = [
    [("John", "NNP"), ("lives", "VBZ"), ("in", "IN"), ("Paris", "NNP"), ("and", "CC"), ("works", "VBZ"),
     ("at", "IN"), ("Google", "NNP"), (".", ".")],
    [("Mary", "NNP"), ("went", "VBD"), ("to", "TO"), ("London", "NNP"), ("with", "IN"), ("Peter", "NNP"), (".", ".")],
    [("The", "DT"), ("cat", "NN"), ("sat", "VBD"), ("on", "IN"), ("the", "DT"), ("mat", "NN"), (".", ".")],
    [("What", "WP"), ("is", "VBZ"), ("the", "DT"), ("capital", "NN"), ("of", "IN"), ("France", "NNP"), ("?", ".")],
    [("I", "PRP"), ("want", "VBP"), ("to", "TO"), ("eat", "VB"), ("but", "CC"), ("I", "PRP"), ("am", "VBP"),
     ("tired", "JJ"), (".", ".")],
    [("Hello", "UH"), ("!", ".")],
]
ENTITIES = {"John": "PERSON", "Paris": "GPE", "Google": "ORGANIZATION", "Mary": "PERSON", "London": "GPE",
            "Peter": "PERSON", "France": "GPE"}


def build(root: Path) -> Path:
    import nltk
    from nltk.chunk.named_entity import NEChunkParser
    from nltk.classify.maxent import save_maxent_params
    from nltk.tag.perceptron import PerceptronTagger
    from nltk.tree import Tree

    root.mkdir(parents=True, exist_ok=True)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))  # save_maxent_params writes only inside a data root
    punkt = root / "tokenizers/punkt_tab/english"
    punkt.mkdir(parents=True, exist_ok=True)
    for f in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (punkt / f).write_text("")
    (punkt / "abbrev_types.txt").write_text("dr\nmr\nmrs\n")

    tagger = PerceptronTagger(load=False)
    tagger.train([list(s) for s in TAGGED], nr_iter=10)
    tdir = root / "taggers/averaged_perceptron_tagger_eng"
    tdir.mkdir(parents=True, exist_ok=True)
    for obj, name in zip(tagger.encode_json_obj(), tagger.param_files("eng")):
        (tdir / name).write_text(json.dumps(obj))

    words = root / "corpora/words"
    words.mkdir(parents=True, exist_ok=True)
    (words / "en-basic").write_text("the\ncat\nsat\nlives\nworks\nwent\nwith\nwant\neat\nhello\n")
    (words / "en").write_text("the\ncat\nsat\n")

    def tree(sent):
        return Tree("S", [Tree(ENTITIES[w], [(w, t)]) if w in ENTITIES else (w, t) for w, t in sent])

    chunker = NEChunkParser([tree(s) for s in TAGGED])
    cdir = root / "chunkers/maxent_ne_chunker_tab/english_ace_multiclass"
    cdir.mkdir(parents=True, exist_ok=True)
    clf = chunker._tagger._classifier
    enc = clf._encoding
    save_maxent_params(clf._weights, enc._mapping, enc._labels, enc._alwayson or {}, tab_dir=str(cdir))
    return root
