#!/usr/bin/env python3
"""Layers include downward only: autograd -> data -> models -> lora -> optim -> include/ft -> cli.

Scans every C++ source and header of the library folders and the CLI for `#include "..."` lines and
fails, naming the file, the line and the header, when a file includes a header of a higher layer (or
a header that does not exist in the tree). tests/, bench/ and the fuzzers may include anything.

    python3 tests/layers_test.py [repo root]
"""
import os
import re
import sys

LAYERS = ["autograd", "data", "models", "lora", "optim", "include", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE_EXT = (".h", ".hpp", ".cpp", ".cc", ".inc")


def layer_of_header(root, header):
    """The layer a quoted include resolves to ('include' for the public ft/ headers), or None."""
    if header.startswith("ft/") and os.path.isfile(os.path.join(root, "include", header)):
        return "include"
    top = header.split("/", 1)[0]
    if top in RANK and os.path.isfile(os.path.join(root, header)):
        return top
    return None


def violations(root):
    found = []
    for layer in LAYERS:
        base = os.path.join(root, layer)
        for dirpath, _, files in os.walk(base):
            for f in sorted(files):
                if not f.endswith(SOURCE_EXT):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        header = m.group(1)
                        if os.path.isfile(os.path.join(dirpath, header)) and "/" not in header:
                            continue  # a sibling file (e.g. tokenizer_nfc_data.inc): same layer
                        target = layer_of_header(root, header)
                        if target is None:
                            found.append(f"{rel}:{lineno}: includes \"{header}\", which is not a header of any layer")
                        elif RANK[target] > RANK[layer]:
                            found.append(f"{rel}:{lineno}: layer '{layer}' includes \"{header}\" from the higher layer "
                                         f"'{target}' (order: {' -> '.join(LAYERS)}); move the code it needs down")
    return found


def self_check():
    """The checker must report an upward include, naming the file and the header (and only that)."""
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        for d in ("autograd", "models", "cli"):
            os.makedirs(os.path.join(t, d))
        open(os.path.join(t, "cli", "main.cpp"), "w").write('#include "models/m.h"\n')
        open(os.path.join(t, "models", "m.h"), "w").write('#include "autograd/a.h"\n')
        open(os.path.join(t, "autograd", "a.h"), "w").write('#pragma once\n#include "models/m.h"\n')
        got = violations(t)
        assert len(got) == 1 and got[0].startswith("autograd/a.h:2:") and '"models/m.h"' in got[0], got


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    self_check()
    bad = violations(root)
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} include(s) point up the layers")
        return 1
    n = sum(len(fs) for l in LAYERS for _, _, fs in os.walk(os.path.join(root, l)))
    print(f"layers ok: {n} files in {', '.join(LAYERS)} include only their own or lower layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
