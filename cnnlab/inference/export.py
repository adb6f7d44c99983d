"""`cnnlab export`: a trained network as a file that runs without cnnlab, checked against PyTorch before use.

Every format takes the normalised float32 NCHW batch the network was trained on, with a dynamic batch
dimension. The written file is loaded back from disk and run on random inputs at batch sizes other than
the export example's, on the CPU, and its logits are compared with PyTorch's: a file that does not
reproduce the network is reported, not silently shipped.
"""

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich import get_console
from rich.table import Table
from torch import nn

from cnnlab.atomic import atomic_bytes_write, atomic_json_dump
from cnnlab.device import resolve_device
from cnnlab.errors import UserError
from cnnlab.inference.trained import TrainedModel, load_trained

log = logging.getLogger("cnnlab")

EXPORT_DIR = "export"
MODEL_CARD = "model.json"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
INPUT_DESCRIPTION = "float32 NCHW, (pixel / 255 - mean) / std"
OUTPUT_DESCRIPTION = "float32 (batch, classes): logits in the order of classes; softmax gives probabilities"
# torch.export fixes a dimension whose example size is 0 or 1, so the example batch holds 2 inputs; the check
# then runs a batch of 1 and one of check_inputs, which proves the batch dimension stayed dynamic.
EXAMPLE_BATCH = 2

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Format:
    """How a format is written (to bytes, plus facts for model.json) and how its file is run back on the CPU."""

    file: str
    serialize: Callable[[nn.Module, torch.Tensor, DictConfig], tuple[bytes, dict[str, Any]]]
    load: Callable[[Path], tuple[Runner, str]]  # the file as a function of a batch, and the runtime's name


@dataclass(frozen=True)
class Check:
    """The written file against PyTorch: passed when every |file - PyTorch| <= atol + rtol * |PyTorch|."""

    batch_sizes: list[int]
    max_abs_diff: float
    atol: float
    rtol: float
    passed: bool
    runtime: str


def batch_dim() -> torch.export.Dim:
    """The batch dimension, named so: an exported program or ONNX graph otherwise fixes it to the example's size."""
    return torch.export.Dim("batch")


def onnx_bytes(model: nn.Module, example: torch.Tensor, cfg: DictConfig) -> tuple[bytes, dict[str, Any]]:
    """ONNX through torch.export (dynamo=True, which needs onnxscript): torch 2.9+ makes it the default and
    maintained exporter, while the TorchScript-based one (dynamo=False) is deprecated and due for removal."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if cfg.opset is not None and cfg.opset > newest:
        raise UserError(
            f"opset={cfg.opset} is newer than the installed onnx knows (at most {newest}); use opset={newest}"
        )
    for name in ("onnxscript", "onnx_ir"):  # their graph optimisation logs every pass at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch_dim()},),
        opset_version=cfg.opset,
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    opset = next(entry.version for entry in proto.opset_import if entry.domain == "")
    return proto.SerializeToString(), {"opset": opset}


@contextlib.contextmanager
def jit_quietly() -> Iterator[None]:
    """PyTorch deprecates TorchScript in favour of torch.export (format=exported); asked for by name, it still
    works, so its deprecation warnings are not repeated on every export."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


def torchscript_bytes(model: nn.Module, example: torch.Tensor, cfg: DictConfig) -> tuple[bytes, dict[str, Any]]:
    """torch.jit.trace rather than script: the forward passes have no data-dependent branches, and tracing takes
    any module while scripting refuses Python it cannot compile."""
    buffer = io.BytesIO()
    with jit_quietly(), torch.no_grad():
        torch.jit.save(torch.jit.trace(model, (example,)), buffer)
    return buffer.getvalue(), {}


def exported_bytes(model: nn.Module, example: torch.Tensor, cfg: DictConfig) -> tuple[bytes, dict[str, Any]]:
    """A torch.export program (.pt2): the graph and weights, loadable with torch.export.load, no model code needed."""
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch_dim()},)), buffer)
    return buffer.getvalue(), {}


def run_onnx(path: Path) -> tuple[Runner, str]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # share the cores like PyTorch does
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: batch.contiguous().numpy()})[0])

    return run, f"onnxruntime {onnxruntime.__version__}"


def run_torchscript(path: Path) -> tuple[Runner, str]:
    with jit_quietly():
        return torch.jit.load(str(path), map_location="cpu"), f"torch.jit {torch.__version__}"


def run_exported(path: Path) -> tuple[Runner, str]:
    from torch.export.passes import move_to_device_pass

    program = move_to_device_pass(torch.export.load(str(path)), "cpu")  # the weights stay where they were traced
    return program.module(), f"torch.export {torch.__version__}"


FORMATS = {
    "onnx": Format("model.onnx", onnx_bytes, run_onnx),
    "torchscript": Format("model.torchscript.pt", torchscript_bytes, run_torchscript),
    "exported": Format("model.pt2", exported_bytes, run_exported),
}


def random_inputs(trained: TrainedModel, count: int) -> torch.Tensor:
    """Random images through the model's own normalisation (on the CPU): inputs on the scale seen in training."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, *trained.input_shape), dtype=torch.uint8, generator=generator)
    return trained.normalize(images).contiguous()


def exportable(model: nn.Module) -> nn.Module:
    """A copy in the plain memory format: the file's input is plain NCHW, and torch.export.save cannot tell
    channels_last weights from slices of a larger tensor (it warns, and may mis-pack them off the CPU)."""
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()


def check_file(
    reference: nn.Module, run: Runner, runtime: str, inputs: torch.Tensor, atol: float, rtol: float
) -> Check:
    """The file and PyTorch on a batch of 1 and on all inputs, compared logit by logit."""
    batches = [inputs[:1], inputs] if len(inputs) > 1 else [inputs]
    differences, passed = [], True
    with torch.no_grad():
        for batch in batches:
            expected, got = reference(batch).float(), run(batch).float()
            if got.shape != expected.shape:
                raise UserError(
                    f"the exported file returned shape {tuple(got.shape)} for a batch of {len(batch)}, "
                    f"PyTorch {tuple(expected.shape)}; its batch dimension is not dynamic, try another format"
                )
            difference = (got - expected).abs()
            differences.append(difference.flatten())
            passed &= bool((difference <= atol + rtol * expected.abs()).all())
    largest = torch.cat(differences).max().item()  # NaN stays NaN (and fails the check above)
    return Check([len(b) for b in batches], largest, atol, rtol, passed, runtime)


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def write_card(path: Path, trained: TrainedModel, entry: dict[str, Any]) -> dict[str, Any]:
    """model.json: what every file in export/ expects and returns, with one entry per format. Another format's
    entry is kept while it describes the same checkpoint and epoch and its file is still there."""
    source = {"checkpoint": str(trained.path.resolve()), "epoch": trained.epoch}
    previous = read_card(path)
    kept = {}
    if all(previous.get(key) == value for key, value in source.items()):
        kept = {
            name: other
            for name, other in previous.get("formats", {}).items()
            if isinstance(other, dict) and (path.parent / str(other.get("file"))).is_file()
        }
    channels, height, width = trained.input_shape
    card = {
        **trained.card(),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", channels, height, width],
            "description": INPUT_DESCRIPTION,
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(trained.classes)], "description": OUTPUT_DESCRIPTION},
        **source,
        "formats": {**kept, entry["format"]: entry},
    }
    atomic_json_dump(card, path)
    return card


def print_summary(path: Path, entry: dict[str, Any]) -> None:
    check = entry["check"]
    table = Table(title="export", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    opset = f" (opset {entry['opset']})" if "opset" in entry else ""
    rows = [
        ("format", f"{entry['format']}{opset}"),
        ("file", str(path)),
        ("size", f"{entry['size_bytes'] / 1024:,.1f} KB"),
        ("largest difference", f"{check['max_abs_diff']:.3g} ({check['runtime']}, batches of {check['batch_sizes']})"),
        ("tolerance", f"atol {check['atol']:g} + rtol {check['rtol']:g} x |PyTorch|"),
        ("check", "passed" if check["passed"] else "FAILED"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    get_console().print(table)


def export_checkpoint(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Write the file and model.json to <run folder>/export/ and check the file; return model.json's content.

    A file that fails the check is kept (and recorded as failed) for inspection, and reported as a UserError.
    """
    trained = load_trained(cfg.ckpt, resolve_device(str(cfg.device)), bool(cfg.trust_code))
    fmt = FORMATS[str(cfg.format)]
    example = random_inputs(trained, EXAMPLE_BATCH).to(trained.device)
    data, facts = fmt.serialize(exportable(trained.model), example, cfg)
    path = run_dir / EXPORT_DIR / fmt.file
    atomic_bytes_write(data, path)
    log.info("%s written to %s (%.1f KB)", cfg.format, path, len(data) / 1024)
    run, runtime = fmt.load(path)
    inputs = random_inputs(trained, int(cfg.check_inputs))
    check = check_file(trained.model.cpu(), run, runtime, inputs, float(cfg.atol), float(cfg.rtol))
    log.info(
        "check: largest absolute difference %.3g from PyTorch on batches of %s (tolerance atol %g + rtol %g): %s",
        check.max_abs_diff,
        check.batch_sizes,
        check.atol,
        check.rtol,
        "passed" if check.passed else "FAILED",
    )
    entry = {"format": str(cfg.format), "file": fmt.file, "size_bytes": len(data), **facts, "check": asdict(check)}
    card = write_card(run_dir / EXPORT_DIR / MODEL_CARD, trained, entry)
    print_summary(path, entry)
    if not check.passed:
        raise UserError(
            f"the {cfg.format} file differs from PyTorch by up to {check.max_abs_diff:.3g}, over the tolerance "
            f"(atol={check.atol:g}, rtol={check.rtol:g}); kept at {path} for inspection: raise atol and rtol "
            "if that difference is acceptable, or try another format"
        )
    return card
