"""Read and write the seed prototypes' file formats.

Seed 000 folder: `attention_array.npy` [layers, heads, seq, seq] (fp32, full square)
                 + `decoded_tokens.npy` [seq] str + `image.png`.
Seed 004 folder: `attentions_5/` (or `attentions/`, or any folder) of
                 `attention_fp16_rounded_layer_{i}.npz` (one array per layer, [heads, rows, seq])
                 + `decoded_tokens.npy` + the image.
Batch root:      one such folder per image (seed 004's extract_smolvlm_batch.py output).

`decoded_tokens.npy` may hold one token more than the attention has keys (the seeds never fed
the last generated token back): that token keeps its text and gets no attention row or column.

Import checks every header before anything is written (shapes, layer files, image), loads
arrays with `allow_pickle=False` only (the one exception: a token file saved as an object
array is read by a restricted unpickler that can build nothing but an array of strings), and
builds the store in a temporary folder that is renamed into place at the end, so a failed
import leaves nothing behind.

Public API (what the CLI, the scripts and the tests use):
    import_legacy(path, out, ...)   seed folders -> a new store            (`legacy.importer`)
    export_legacy(ds, image, out)   one image of a store -> seed files     (`legacy.export`)
    find_sources / inspect_folder   folders checked from headers -> `LegacySource`s (`legacy.discover`)
    is_legacy_folder(folder)        whether a folder is seed-shaped        (`legacy.discover`)
    read_tokens(path)               a `decoded_tokens.npy`, read safely    (`legacy.files`)
    parse_grid("3x4")               the `--grid` spelling -> (rows, cols)  (`legacy.layout`)
    LegacyFormatError               a seed file missing, pickled or misshapen (`legacy.formats`)

The modules, each importing only ones listed before it: `formats` (file names, bounds, the error),
`unpickle` (the one pickle read), `files` (npy/npz/token reading), `discover` (folders),
`layout` (token layout and geometry from the token text), `importer`, `export`.
"""

from attnstore.legacy.discover import find_sources, inspect_folder, is_legacy_folder
from attnstore.legacy.export import export_legacy
from attnstore.legacy.files import read_tokens
from attnstore.legacy.formats import LegacyFormatError
from attnstore.legacy.importer import import_legacy
from attnstore.legacy.layout import parse_grid

__all__ = [
    "LegacyFormatError",
    "export_legacy",
    "find_sources",
    "import_legacy",
    "inspect_folder",
    "is_legacy_folder",
    "parse_grid",
    "read_tokens",
]
