"""The front door: the README is short, gives both commands CI and users run, and every relative link in
it and in docs/ resolves."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _docs():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_resolves():
    broken = []
    for doc in _docs():
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_is_one_short_page_with_both_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "bash scripts/setup.sh demo && python app.py" in text
    assert "bash scripts/setup.sh test && python -m pytest" in text  # what .ci/run runs
    first_screen = text.split("## Read more")[0]
    assert "What to expect" in first_screen and "docs/measurements.md" in text


def test_code_blocks_are_closed():
    for doc in _docs():
        fences = [line for line in doc.read_text().splitlines() if line.lstrip().startswith("```")]
        assert len(fences) % 2 == 0, f"{doc.name}: a code block is never closed"
