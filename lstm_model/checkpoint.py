"""Checkpoint files, each written to a temporary file and renamed, so that a kill at any moment
leaves the last good checkpoint readable.

A training folder holds a Hub-layout model (config.json, model.safetensors) and
`training_state.safetensors`: weights, optimizer, scheduler, step, RNG states, the carried LSTM
state and the data position, with its JSON metadata in the safetensors header. `--resume`
continues from it exactly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile

import torch

STATE_NAME = "training_state.safetensors"


class StateError(ValueError):
    """A training state that cannot be resumed from; one sentence naming the file and what to do."""


def damaged(path: str, why: str) -> StateError:
    return StateError(f"{path} cannot be resumed from ({why}); start the run again with --overwrite instead of "
                      "--resume, or --resume from another checkpoint (--out at its folder).")


def digest(tensors: dict) -> str:
    """SHA-256 of the tensors' names and bytes, saved in the file's metadata: safetensors checks its
    header but not the numbers, and a flipped bit there would resume from wrong weights unnoticed."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def atomic_path(final: str) -> str:
    """A temporary file beside `final`, with the permissions a new file gets (mkstemp's are 0600)."""
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(final) + ".", suffix=".tmp", dir=os.path.dirname(final) or ".")
    os.close(fd)
    normal_mode(tmp)
    return tmp


def normal_mode(path: str) -> None:
    """Give a file the permissions a new file gets under the umask (temporary files get 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def fsync_replace(tmp: str, final: str) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    normal_mode(tmp)
    os.replace(tmp, final)


def save_training_state(path: str, model, optimizer, scheduler, meta: dict, carry, rng_states=None,
                        average=None) -> None:
    """One safetensors file holding everything --resume needs; written to a temp file, then renamed.
    `average`: the weights' moving average (--ema), an AveragedModel, saved beside them."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if average is not None:
        tensors |= {f"average.{k}": v.detach().cpu().contiguous() for k, v in average.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if rng_states is not None:  # one CPU RNG state per rank of a torchrun job
        for rank in range(1, rng_states.shape[0]):
            tensors[f"rng.cpu.rank{rank}"] = rng_states[rank].contiguous()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    if carry is not None:
        tensors["carry.h"] = carry[0].detach().cpu().contiguous()
        tensors["carry.c"] = carry[1].detach().cpu().contiguous()
    meta = dict(meta, param_groups=opt["param_groups"], scheduler=scheduler.state_dict(), sha256=digest(tensors))
    tmp = atomic_path(path)
    try:
        save_file(tensors, tmp, metadata={"json": json.dumps(meta)})
        fsync_replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_state_metadata(path: str) -> dict:
    """The JSON metadata of a training state; StateError (one sentence) if the file is damaged."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {})["json"])
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise damaged(path, _reason(err)) from None
    if not (isinstance(meta, dict) and isinstance(meta.get("config"), dict)
            and all(isinstance(meta.get(k), int) for k in ("step", "epoch", "batch_index"))):
        raise damaged(path, "its metadata is not a training state's")
    return meta


def _reason(err: Exception) -> str:
    """An exception's first line, for a sentence."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def load_training_state(path: str, model, optimizer, scheduler, device, rank: int = 0, average=None):
    """Fill the model, optimiser, scheduler (and `average`, where the file holds one) from a
    checkpoint; (its metadata, the carried state or None). StateError (one sentence) if the file is
    damaged or does not fit the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_state_metadata(path)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:
        raise damaged(path, _reason(err)) from None
    if "sha256" in meta and digest(tensors) != meta["sha256"]:  # states saved before the digest have none
        raise damaged(path, "its numbers do not match the checksum saved with them")
    try:
        return _fill(tensors, meta, model, optimizer, scheduler, device, rank, average)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:  # a state of another model or run
        raise damaged(path, _reason(err)) from None


def _fill(tensors: dict, meta: dict, model, optimizer, scheduler, device, rank: int, average):
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    if average is not None and any(k.startswith("average.") for k in tensors):
        average.load_state_dict({k[8:]: v.to(device) for k, v in tensors.items() if k.startswith("average.")})
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if rank == 0:
        torch.set_rng_state(tensors["rng.cpu"])
    elif f"rng.cpu.rank{rank}" in tensors:
        torch.set_rng_state(tensors[f"rng.cpu.rank{rank}"])
    else:  # resumed with more processes than saved: a fresh, distinct stream for the new rank
        torch.manual_seed(meta["config"]["seed"] + 7919 * rank + meta["step"])
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    carry = None
    if "carry.h" in tensors:
        carry = (tensors["carry.h"].to(device), tensors["carry.c"].to(device))
    return meta, carry


def save_model_folder(out: str, model) -> None:
    """config.json + model.safetensors, each replaced atomically."""
    if model.head.weight.device.type != "cpu":
        # cuDNN flattens the LSTM weights into one buffer; safetensors refuses such shared storage.
        model = copy.deepcopy(model).to("cpu")
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp:
        model.save_pretrained(tmp)
        for name in ("config.json", "model.safetensors"):
            fsync_replace(os.path.join(tmp, name), os.path.join(out, name))



def write_json(path: str, data: dict) -> None:
    """A JSON file written to a temporary file and renamed (never half-written)."""
    tmp = atomic_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def remove_stale_temporaries(out: str) -> None:
    """Temporary files of a save that was killed midway (the real files are intact)."""
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if name.startswith(".") and name.endswith(".tmp") and os.path.isfile(path):
            os.remove(path)
        elif name.startswith(".save-") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
