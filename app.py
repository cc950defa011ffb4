"""SpecQuant's web demo: `python app.py` (Hugging Face Spaces runs this file too).

Serves at once; the default model family for this hardware loads in the background (the
demo model when the Hub can't be reached). SPECQUANT_MODEL picks another family, a Hub repo
or a local GGUF; SPECQUANT_CONCURRENCY sets how many runs may go at once (default 1).
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import backends  # noqa: E402,F401 - llama.cpp before gradio loads numpy (see backends/__init__.py)
from ui import build_demo, launch  # noqa: E402

demo = build_demo()

if __name__ == "__main__":
    launch(demo, server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
