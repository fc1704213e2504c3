"""Build models by name and load checkpoints into them, safely.

`load(dataset, model_name, model_file=None)` is the reference's entry point (notebooks call it):
it returns the model in eval mode. Checkpoints are read with `torch.load(weights_only=True)`, so a
file that holds anything but tensors and plain containers is refused without being executed.
"""
from __future__ import annotations

import pickle
import sys
import zipfile
from typing import Any, Optional

import torch
import torch.nn as nn

from landscape import user_code
from landscape.errors import UserError
from landscape.io import provenance
from landscape.zoo import models

PREFIXES = ("module.", "_orig_mod.")  # added by DataParallel / DistributedDataParallel and torch.compile


def model_names() -> list[str]:
    return sorted(models.ZOO)


def build(model_name: str) -> nn.Module:
    """A fresh model: a zoo name, or the user's `file.py:factory` / `module:factory`."""
    if user_code.is_user_spec(model_name):
        net = user_code.call_user(user_code.load_callable(model_name, "model"), f"model factory '{model_name}'")
        if not isinstance(net, nn.Module):
            raise UserError(f"model factory '{model_name}' returned {type(net).__name__}, not a torch.nn.Module")
        return net
    if model_name not in models.ZOO:
        raise UserError(f"unknown model '{model_name}'; choose one of {', '.join(model_names())}, "
                        "or give path/to/file.py:factory")
    return models.ZOO[model_name]()


def read_checkpoint(path: str) -> Any:
    """torch.load with weights_only=True, turning every failure into a one-line UserError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"model file '{path}' does not exist") from None
    except IsADirectoryError:
        raise UserError(f"model file '{path}' is a directory") from None
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower() or "unsupported global" in str(e).lower():
            raise UserError(f"refusing to load '{path}': it holds objects other than tensors and plain "
                            "containers, and unpickling them could run code") from None
        raise UserError(f"cannot read checkpoint '{path}': the file is corrupt ({_short(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read checkpoint '{path}': the file is truncated or corrupt ({_short(e)})") from None


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__


def extract_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint: `obj['state_dict']` or a bare state_dict, prefixes stripped."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"'{path}' is not a checkpoint: expected a state_dict or a dict with a 'state_dict' entry")
    return {strip_prefixes(k): v for k, v in obj.items()}


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its (prefix-stripped) state_dict of CPU tensors."""
    return extract_state_dict(read_checkpoint(path), path)


def add_batch_counts(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint of PyTorch before 0.4.1 (the reference's published ones) has no BatchNorm
    `num_batches_tracked`: take the model's own (0), as torch's BatchNorm does for such a state_dict.
    No eval-mode forward reads it."""
    own = net.state_dict()
    extra = {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state}
    return dict(state, **extra) if extra else state


def check_fits(net: nn.Module, state: dict[str, torch.Tensor], model_name: str, path: str) -> None:
    """Raise a one-line UserError naming the first missing/unexpected/mis-shaped keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if shape:
            parts.append(f"size mismatch {shape[:2]} (checkpoint vs model)")
        raise UserError(f"checkpoint '{path}' does not fit model '{model_name}': {'; '.join(parts)}")


def warn_nonfinite(state: dict[str, torch.Tensor], path: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        print(f"warning: checkpoint '{path}' has NaN/inf values in {len(bad)} tensors "
              f"(first: {bad[0]}); its losses will be NaN", file=sys.stderr)


def load(dataset: Optional[str], model_name: str, model_file: Optional[str] = None,
         data_parallel: bool = False) -> nn.Module:
    """Build `model_name`, load `model_file` into it if given, and return it in eval mode.

    `dataset` and `data_parallel` are kept for the reference's signature; 'module.' prefixes are
    stripped whatever `data_parallel` says.
    """
    net = build(model_name)
    if model_file:
        state = add_batch_counts(net, load_state_dict(model_file))
        check_fits(net, state, model_name, model_file)
        warn_nonfinite(state, model_file)
        net.load_state_dict(state)
    net.eval()
    return net


file_sha256 = provenance.file_sha256   # checkpoints' hashes for the files' records (model_loader.file_sha256)
