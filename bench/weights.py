"""Published weights from the local torch hub cache, loaded without trusting the file.

torchvision names a weights file `<name>-<first hex digits of its sha256>.pth`. A file found in the
cache is used only if its digest starts with those digits, and it is read with `weights_only=True`
(tensors and plain containers, never arbitrary objects), so a planted or damaged file is refused
with one line before it is unpickled. Nothing is downloaded here.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from urllib.parse import urlparse

import torch

from .errors import UserError

_HASH = re.compile(r"-([a-f0-9]{6,})\.")


def hub_file(url: str) -> Path:
    """Where torch.hub keeps the file of `url` ($TORCH_HOME/hub/checkpoints/<name>)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def local_state_dict(url: str, what: str) -> dict:
    """The state dict published at `url`, from the local cache only, checked as described above."""
    path = hub_file(url)
    if not path.is_file():
        raise UserError(f"{what}: {path.name} is not in the local torch cache; put it into "
                        f"{path.parent} (it is published at {url})")
    expected = _HASH.search(path.name)
    if expected and not digest_matches(path, expected.group(1)):
        raise UserError(f"{what}: {path} is not the published file (its sha256 does not start "
                        f"{expected.group(1)}, as its name says); refused: delete it and fetch it "
                        f"again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise UserError(f"{what}: {path} is not a plain state dict ({type(err).__name__}); "
                        f"refused: delete it and fetch it again") from None
    if not isinstance(state, dict):
        raise UserError(f"{what}: {path} holds a {type(state).__name__}, not a state dict; "
                        f"delete it and fetch it again")
    return state


def digest_matches(path: Path, prefix: str) -> bool:
    """Whether the file's sha256 starts with `prefix` (read in chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(prefix)
