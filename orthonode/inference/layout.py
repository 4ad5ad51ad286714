"""The layout of a models directory, without loading anything (no torch: the serving process and the
console read it too).

``models_dir/encoder/encoder.json`` + ``encoder.safetensors`` (an ``ssl_train`` export, or a fine-tuned
encoder), ``models_dir/heads/<task>-<version>/head.json`` + weights (``orthonode.tasks.bundle``), and an
optional ``models_dir/MODEL_CARD.md``. Without ``models_dir`` the node uses the model shipped inside the
package.
"""

from __future__ import annotations

from pathlib import Path

from orthonode.settings import Settings

ENCODER_SUBDIR = "encoder"
HEADS_SUBDIR = "heads"
ENCODER_CARD_FILE = "encoder.json"
HEAD_CARD_FILE = "head.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
#: The model shipped inside the package (written by the ``heads`` default-model run), if any.
PACKAGED_MODELS = Path(__file__).resolve().parent.parent / "models" / "default"


def models_root(settings: Settings) -> Path:
    return settings.models_dir if settings.models_dir is not None else PACKAGED_MODELS
