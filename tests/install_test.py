#!/usr/bin/env python3
"""Install test: `cmake --install` ft into a temporary prefix, build tests/install/example.cpp against it
with find_package(ft) (CMake) and with pkg-config, run both on recipes/tiny-base, and check that the
streamed completion equals `ft generate`'s and that a batched greedy completion equals the single one.

    python3 tests/install_test.py BUILD_DIR SOURCE_DIR
"""
import os, subprocess, sys, tempfile

PROMPT, TOKENS = "ROMEO:", "12"


def run(cmd, **kw):
    print("----", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def main():
    build, src = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    model = os.path.join(src, "recipes", "tiny-base")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "prefix")
        run(["cmake", "--install", build, "--prefix", prefix], stdout=subprocess.DEVNULL)
        for f in ("include/ft/ft.h", "bin/ft"):
            assert os.path.exists(os.path.join(prefix, f)), f"install is missing {f}"
        assert not os.path.exists(os.path.join(prefix, "include/ft/detail")), "internal headers were installed"
        ex = os.path.join(tmp, "example")
        gen = ["-G", "Ninja"] if subprocess.run(["which", "ninja"], capture_output=True).returncode == 0 else []
        run(["cmake", "-S", os.path.join(src, "tests", "install"), "-B", ex, *gen, f"-DCMAKE_PREFIX_PATH={prefix}",
             "-DCMAKE_BUILD_TYPE=Release"], stdout=subprocess.DEVNULL)
        run(["cmake", "--build", ex], stdout=subprocess.DEVNULL)
        out = run([os.path.join(ex, "ft_example"), model, PROMPT, TOKENS], capture_output=True, text=True).stdout
        lines = out.split("\x1e")
        assert len(lines) == 4 and lines[3] == "", f"expected 3 completions, got {out!r}"
        # ft generate prints the completion then a newline; the example prints the same text.
        cli = run([os.path.join(prefix, "bin", "ft"), "generate", "--model", model, "--prompt", PROMPT, "--max-tokens", TOKENS],
                  capture_output=True, text=True).stdout
        assert cli == lines[0] + "\n", f"API {lines[0]!r} != CLI {cli!r}"
        assert lines[1] == lines[0], f"batched {lines[1]!r} != single {lines[0]!r}"
        assert lines[0].strip(), "empty completion"
        # pkg-config: the same program with a plain compiler command.
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig") + os.pathsep +
                   os.path.join(prefix, "lib", "x86_64-linux-gnu", "pkgconfig"))
        flags = run(["pkg-config", "--cflags", "--libs", "ft"], capture_output=True, text=True, env=env).stdout.split()
        exe = os.path.join(tmp, "ft_example_pc")
        libdir = [f[2:] for f in flags if f.startswith("-L")][0]
        run(["c++", os.path.join(src, "tests", "install", "example.cpp"), "-o", exe, *flags, f"-Wl,-rpath,{libdir}"])
        out2 = run([exe, model, PROMPT, TOKENS], capture_output=True, text=True).stdout
        assert out2 == out, f"pkg-config build printed {out2!r}, CMake build {out!r}"
    print("install test: find_package(ft) and pkg-config builds run and agree with ft generate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
