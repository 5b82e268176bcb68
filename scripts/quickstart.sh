#!/usr/bin/env bash
# The newcomer's first command: installs the Debian packages ft needs (only those missing), builds
# ./build, then runs the quickstart (README "Quickstart"): the shipped tiny base model learns to
# write SQL; it prints a sample before training, the progress, and a sample after training.
#   bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/ft train recipes/quickstart.yaml
