"""Ship a pruned model: files that load without secateurs, int8 after pruning, 2:4 kernels on GPU, and a
benchmark of them all.

``export(model, out, formats=[...])`` writes, atomically and each checked against the model:

=================  =======================================================================================
``hf``             a Hugging Face directory (``save_pretrained``), config updated (:mod:`.hf`)
``torch-export``   a ``torch.export`` program, ``model.pt2`` (:mod:`.program`)
``safetensors``    the state dict, masks folded in, ``model.safetensors`` (:mod:`.state_dict`)
``onnx``           one ONNX file checked by onnxruntime, ``model.onnx`` (:mod:`.onnx_format`)
``onnx-int8``      int8 weights by onnxruntime's dynamic quantization, ``model.int8.onnx`` (:mod:`.quantize`)
``int8``           int8 Linear layers by ``torch.ao`` dynamic quantization, TorchScript ``model.int8.pt``
``bsr``            the Linear layers faster here as BSR/CSR tensors: weights + conversion lines (:mod:`.bsr`)
=================  =======================================================================================

``export.json`` in the directory says how to load each file without secateurs. A format is one class
registered with :func:`register_format` (:mod:`.formats`). :func:`bench` compares a pruned model, its dense
original and its exports; :func:`to_semi_structured` runs 2:4-pruned Linear layers on GPU sparse kernels.
"""

# Importing the format modules registers them; the import order is the order an export writes them in.
# isort: off
from secateurs.export import hf, program, state_dict, onnx_format, quantize, bsr  # noqa: F401

# isort: on
from secateurs.export.api import ExportReport, FormatReport, export
from secateurs.export.bench import BenchReport, BenchRow, bench
from secateurs.export.bsr import BlockSparse, load_block_sparse
from secateurs.export.formats import (
    Check,
    ExportError,
    ExportFormat,
    UnsupportedFormatError,
    Written,
    available_formats,
    format_summaries,
    get_format,
    register_format,
)
from secateurs.export.hf import HuggingFace
from secateurs.export.manifest import ExportManifest, is_export_directory, read_export_manifest
from secateurs.export.onnx_format import Onnx, OrtModule
from secateurs.export.prepare import deployable_copy
from secateurs.export.program import TorchExport
from secateurs.export.quantize import OnnxInt8, TorchInt8
from secateurs.export.sparse import SparseLinear, SwapReport, to_block_sparse
from secateurs.export.semi_structured import SemiStructured, semi_structured_support, to_semi_structured
from secateurs.export.state_dict import Safetensors

__all__ = [
    "BenchReport",
    "BenchRow",
    "BlockSparse",
    "Check",
    "ExportError",
    "ExportFormat",
    "ExportManifest",
    "ExportReport",
    "FormatReport",
    "HuggingFace",
    "Onnx",
    "OnnxInt8",
    "OrtModule",
    "Safetensors",
    "SemiStructured",
    "SparseLinear",
    "SwapReport",
    "TorchExport",
    "TorchInt8",
    "UnsupportedFormatError",
    "Written",
    "available_formats",
    "bench",
    "deployable_copy",
    "export",
    "format_summaries",
    "get_format",
    "is_export_directory",
    "load_block_sparse",
    "read_export_manifest",
    "register_format",
    "semi_structured_support",
    "to_block_sparse",
    "to_semi_structured",
]
