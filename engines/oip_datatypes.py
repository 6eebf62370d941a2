"""Open Inference Protocol (v2) tensor datatypes <-> numpy, as the Triton engine and the gateway's OIP
endpoint both send and read raw contents. BYTES (strings) and BF16 have no raw numpy form here."""

from __future__ import annotations

from typing import Any

import numpy as np

# Raw contents are little endian whatever the host.
LITTLE_ENDIAN: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("<?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
NATIVE: dict[str, np.dtype[Any]] = {datatype: dtype.newbyteorder("=") for datatype, dtype in LITTLE_ENDIAN.items()}
# Keyed by native dtype objects rather than names: numpy computes `dtype.name` in Python, per call.
DATATYPE_OF: dict[np.dtype[Any], str] = {dtype: datatype for datatype, dtype in NATIVE.items()}
DATATYPE_OF_NAME: dict[str, str] = {dtype.name: datatype for datatype, dtype in NATIVE.items()}
