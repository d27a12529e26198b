"""Files: atomic writes, the sparse weights format, the manifest, and pruned-model directories."""

from secateurs.storage.directory import (
    Manifest,
    ModelDirectoryError,
    OutputExistsError,
    SavedModel,
    WriteError,
    atomic_directory,
    atomic_file,
    cache_dir,
    check_output_dir,
    encoded_size,
    is_model_directory,
    load_into,
    read_manifest,
    read_weights,
    save_pruned,
    write_weights,
)

__all__ = [
    "Manifest",
    "ModelDirectoryError",
    "OutputExistsError",
    "SavedModel",
    "WriteError",
    "atomic_directory",
    "atomic_file",
    "cache_dir",
    "check_output_dir",
    "encoded_size",
    "is_model_directory",
    "load_into",
    "read_manifest",
    "read_weights",
    "save_pruned",
    "write_weights",
]
