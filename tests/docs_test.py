#!/usr/bin/env python3
"""Docs test: runs every command the README shows, so it cannot rot.

Every ```bash block of README.md is run, in order, in one bash session (set -e) from the repository
root, with the freshly built `ft` first on PATH and in place of `./build/ft`. The set-up, quickstart
and test commands (scripts/setup.sh, scripts/quickstart.sh, scripts/test.sh) are skipped: they are what CI itself runs around this test. Outputs go to runs/
(git-ignored), which is cleared first. Then every recipe for a real model family is run for two
steps on the matching test fixture model (the recipes' keys must stay valid).
"""
import os, re, shlex, shutil, subprocess, sys, tempfile

def main():
    ft_bin, root = sys.argv[1], sys.argv[2]
    os.chdir(root)
    readme = open("README.md", encoding="utf-8").read()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert blocks, "README.md has no bash blocks"
    lines = []
    for b in blocks:
        for line in b.splitlines():
            if any(f"scripts/{s}.sh" in line for s in ("setup", "test", "quickstart")):
                continue
            lines.append(re.sub(r"(^|[\s;|&(])\./build/ft ", lambda m: m.group(1) + shlex.quote(os.path.abspath(ft_bin)) + " ", line))
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    shutil.rmtree("runs", ignore_errors=True)
    env = dict(os.environ, PATH=os.path.dirname(os.path.abspath(ft_bin)) + os.pathsep + os.environ["PATH"])
    print("---- README commands ----\n" + script, flush=True)
    r = subprocess.run(["bash", "-c", script], env=env)
    if r.returncode != 0:
        print(f"README commands failed with exit code {r.returncode}")
        return 1
    # Real-family recipes on the fixture of the same family.
    fixtures = {"llama-3.2-1b": "llama", "qwen3-0.6b": "qwen3", "gemma-3-1b": "gemma3_text", "smollm2-135m": "llama"}
    for recipe, fam in fixtures.items():
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [ft_bin, "train", f"recipes/{recipe}.yaml", f"model=tests/fixtures/models/{fam}",
                   "data=recipes/data/wikisql", "iters=2", "steps_per_eval=0", "save_every=0",
                   f"adapter_path={tmp}/a", f"metrics_file={tmp}/m.jsonl", "progress=false", "max_seq_length=128"]
            print("----", " ".join(cmd), flush=True)
            r = subprocess.run(cmd, env=env)
            if r.returncode != 0 or not os.path.exists(f"{tmp}/a/adapter_model.safetensors"):
                print(f"recipe {recipe} failed")
                return 1
    print("docs test: all README commands and recipes ran")
    return 0

if __name__ == "__main__":
    sys.exit(main())
