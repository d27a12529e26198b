"""Files: atomic writes, the sparse weights format, the manifest, and pruned-model directories.

* :mod:`.atomic` - files and directories that are never half-written; :func:`cache_dir`;
* :mod:`.weights` - dense and sparse-bitmask safetensors weights files;
* :mod:`.manifest` - ``manifest.json``: what a model directory holds and the spec that rebuilds it;
* :mod:`.directory` - :func:`save_pruned` and :func:`load_into`, a whole model directory.
"""

from secateurs.storage.atomic import (
    OutputExistsError,
    WriteError,
    atomic_directory,
    atomic_file,
    cache_dir,
    check_output_dir,
)
from secateurs.storage.directory import SavedModel, estimated_bytes, load_into, save_pruned
from secateurs.storage.manifest import SOURCE_FOLDER, Manifest, ModelDirectoryError, is_model_directory, read_manifest
from secateurs.storage.weights import (
    decode_state_dict,
    encode_state_dict,
    encoded_size,
    read_weights,
    write_weights,
)

__all__ = [
    "SOURCE_FOLDER",
    "Manifest",
    "ModelDirectoryError",
    "OutputExistsError",
    "SavedModel",
    "WriteError",
    "atomic_directory",
    "atomic_file",
    "cache_dir",
    "check_output_dir",
    "decode_state_dict",
    "encode_state_dict",
    "encoded_size",
    "estimated_bytes",
    "is_model_directory",
    "load_into",
    "read_manifest",
    "read_weights",
    "save_pruned",
    "write_weights",
]
