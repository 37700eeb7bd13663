"""Firmware profiles: what a class of device can run, and the limits a bundle must fit.

Shipped profiles live in the package (``firmware-profiles/`` in the repository); an
operator adds or overrides profiles in ``$EDGEML_HOME/firmware-profiles/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, model_validator

from edgeml.errors import UserError
from edgeml.spec.types import Slug

__all__ = ["FirmwareProfile", "Parity", "get_profile", "load_profiles"]

#: execution providers (ONNX Runtime) or devices (OpenVINO) each runtime accepts
PROVIDERS = {
    "onnxruntime": ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"),
    "openvino": ("CPU", "GPU", "NPU", "AUTO"),
}
#: highest ONNX opset each runtime version we ship against can load
MAX_OPSET = {"onnxruntime": 23, "openvino": 22}
MIN_OPSET = 13  # edgeml's converters need opset 13 (Split/Squeeze with inputs, Gather semantics)
# int8 moves single probabilities by several points (0.06 seen on the example MLP with the hidden
# layers int8); labels and the accuracy gate on the holdout metric are what hold it to the model.
_DEFAULT_PARITY = {"fp32": (1e-4, 0.999), "fp16": (1e-2, 0.99), "int8": (1e-1, 0.98)}


class Parity(BaseModel):
    """How close an export must stay to the native model on holdout rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_abs_diff: float = Field(gt=0, description="largest allowed difference of probabilities / outputs")
    label_agreement: float = Field(gt=0, le=1, description="share of rows whose label must agree")


class FirmwareProfile(BaseModel):
    """One device class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug = Field(description="profile name, as specs and bundles refer to it")
    device_class: str = Field(description="the devices this profile is for")
    arch: Literal["x86_64", "aarch64", "armv7l"] = Field(description="CPU architecture")
    accelerator: Literal["none", "nvidia-gpu", "intel-gpu", "intel-npu"] = Field(
        "none", description="accelerator the runtime uses"
    )
    runtime: Literal["onnxruntime", "openvino"] = Field(description="inference runtime on the device")
    execution_provider: str = Field(description="ONNX Runtime execution provider or OpenVINO device")
    precision: Literal["fp32", "fp16", "int8"] = Field(description="numeric precision of the exported model")
    opset: int = Field(description="ONNX opset of the exported graph")
    threads: int = Field(ge=1, le=256, description="intra-op threads the runtime may use")
    max_bundle_size: ByteSize = Field(description="largest bundle the device accepts, e.g. 64MB")
    memory_limit: ByteSize = Field(description="memory the model may use on the device, e.g. 1GB")
    parity: Parity | None = Field(None, description="parity tolerances; defaults follow the precision")
    verified: bool = Field(True, description="false: exported and checked here, not run on the real device")
    notes: str = Field("", description="anything an operator should know")

    @model_validator(mode="after")
    def _consistent(self) -> FirmwareProfile:
        providers = PROVIDERS[self.runtime]
        if self.execution_provider not in providers:
            raise ValueError(
                f"execution_provider {self.execution_provider!r} is not one {self.runtime} "
                f"offers; choose from {', '.join(providers)}"
            )
        if not MIN_OPSET <= self.opset <= MAX_OPSET[self.runtime]:
            raise ValueError(
                f"opset {self.opset} is outside what edgeml and {self.runtime} support "
                f"({MIN_OPSET}..{MAX_OPSET[self.runtime]})"
            )
        return self

    @property
    def tolerance(self) -> Parity:
        if self.parity is not None:
            return self.parity
        diff, agreement = _DEFAULT_PARITY[self.precision]
        return Parity(max_abs_diff=diff, label_agreement=agreement)


def _read(path: Path) -> FirmwareProfile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        profile = FirmwareProfile.model_validate(data)
    except yaml.YAMLError as exc:
        raise UserError(f"firmware profile {path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise UserError(f"firmware profile {path} is invalid: {problems}") from exc
    if profile.name != path.stem:
        raise UserError(
            f"firmware profile {path} names itself {profile.name!r}; name the file {profile.name}.yaml"
        )
    return profile


def load_profiles(home: Path | None = None) -> dict[str, FirmwareProfile]:
    """Shipped profiles, then the operator's in ``home/firmware-profiles`` (which win)."""
    shipped = resources.files("edgeml") / "firmware_profiles"
    paths = [Path(str(p)) for p in shipped.iterdir() if p.name.endswith(".yaml")]
    if home is not None and (home / "firmware-profiles").is_dir():
        paths += sorted((home / "firmware-profiles").glob("*.yaml"))
    profiles: dict[str, FirmwareProfile] = {}
    for path in paths:  # shipped first: an operator's file of the same name replaces it
        profile = _read(path)
        profiles[profile.name] = profile
    return dict(sorted(profiles.items()))


def get_profile(name: str, home: Path | None = None) -> FirmwareProfile:
    profiles = load_profiles(home)
    if name not in profiles:
        raise UserError(
            f"unknown firmware profile {name!r}; known: {', '.join(profiles)}",
            hint="`edgeml profiles list` shows them; add your own under $EDGEML_HOME/firmware-profiles/",
        )
    return profiles[name]
