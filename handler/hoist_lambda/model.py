"""Load a model folder and check it against the model itself, at init.

The folder comes from EFS (HOIST_MODEL_DIR) or S3 (HOIST_MODEL_S3,
s3://bucket/prefix/, downloaded once per environment to /tmp). ``load``
checks the contract (``contract.check``), loads the TorchScript module and
runs it on a dummy input of preprocess.json's shape: an output size that
differs from labels.json fails init, naming labels.json, before any request.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from . import aws
from .contract import REQUIRED, ModelFolder, ModelFolderError, Problem, check, output_problem

MB_PER_VCPU = 1769  # 1,769 MB buys one vCPU; 10,240 MB buys six (lambda-facts.md)


@dataclass(frozen=True)
class Model:
    net: Any  # torch.jit.ScriptModule
    folder: ModelFolder
    threads: int

    @property
    def labels(self) -> tuple[str, ...]:
        return self.folder.labels


def gist(exc: BaseException) -> str:
    """One line of an error: TorchScript's own first line only says that "the following operation
    failed in the TorchScript interpreter"; the cause (a shape mismatch, say) is its last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if lines[0].startswith("The following operation failed") else lines[0]


def vcpus() -> int:
    return max(1, min(6, round(int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MB_PER_VCPU)) / MB_PER_VCPU)))


def local_folder(source: str) -> str:
    """The model folder on this machine: ``source`` itself, or its S3 copy in /tmp."""
    if not source.startswith("s3://"):
        return source
    bucket, _, prefix = source[5:].partition("/")
    folder = os.path.join("/tmp", "hoist-model", hashlib.sha256(source.encode()).hexdigest()[:16])
    if not os.path.exists(os.path.join(folder, ".complete")):  # once per environment, reused afterwards
        from botocore.exceptions import ClientError

        os.makedirs(folder, exist_ok=True)
        for name in (*REQUIRED, "metrics.json"):  # not sample.json: its image stays with the pipeline
            try:
                aws.s3().download_file(bucket, prefix.rstrip("/") + "/" + name, os.path.join(folder, name))
            except ClientError:
                if name in REQUIRED:
                    raise
        open(os.path.join(folder, ".complete"), "w").close()
    return folder


def check_outputs(net: Any, folder: ModelFolder) -> None:
    """Run the model on zeros of the input shape; its output size must match labels.json."""
    import torch

    shape = folder.pre.input_shape()
    try:
        with torch.inference_mode():
            out = net(torch.zeros(shape))
    except Exception as exc:
        raise ModelFolderError(folder.folder, [Problem("model.pt", None, f"fails on a dummy input of shape {list(shape)} from preprocess.json: {gist(exc)}",
                                                       "make preprocess.json's mode (channels) and size/center_crop match the input the model was trained on")]) from None
    if not isinstance(out, torch.Tensor) or out.dim() not in (1, 2) or (out.dim() == 2 and out.shape[0] != 1):
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelFolderError(folder.folder, [Problem("model.pt", None, f"returns {found} for one image; a classifier returns scores of shape [1, K]",
                                                       "return one score per class (logits or probabilities) from forward()")])
    if problem := output_problem(int(out.shape[-1]), len(folder.labels)):
        raise ModelFolderError(folder.folder, [problem])


def load(source: str) -> Model:
    """The checked model of the folder at ``source`` (a path or s3://...)."""
    import torch

    folder = check(local_folder(source))
    try:
        net = torch.jit.load(os.path.join(folder.folder, "model.pt"), map_location="cpu").eval()
    except RuntimeError as exc:
        raise ModelFolderError(folder.folder, [Problem("model.pt", None, f"does not load as TorchScript: {gist(exc)}",
                                                       "export it with torch.jit.script(model).save('model.pt') with a torch no newer than the tree's")]) from None
    threads = vcpus()
    torch.set_num_threads(threads)
    check_outputs(net, folder)
    return Model(net=net, folder=folder, threads=threads)
