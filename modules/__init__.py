"""Easel's modules. The names at this level follow AUTOMATIC1111's so its extensions import them."""

import os

# Nothing may wait on a model hub: every model and config is loaded from local files. These must be
# set before huggingface_hub, transformers or diffusers are first imported, which is why they live here.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
