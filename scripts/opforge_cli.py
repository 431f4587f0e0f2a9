"""Running the opforge program from the benchmark scripts (vs_peers.py, peers_ops.py).

Not a script of its own: the two import it from this folder.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_opforge():
    """bin/opforge in $OPFORGE_BUILD_DIR (relative to the working directory, as build.sh takes it), or in
    this checkout's build/, wherever the script is run from."""
    build = os.environ.get("OPFORGE_BUILD_DIR")
    return os.path.join(os.path.abspath(build) if build else os.path.join(ROOT, "build"), "bin", "opforge")


def json_rows(cmd, who):
    """The JSON rows `cmd` prints. On failure, what it wrote to stderr, then exit with its status."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        sys.exit(f"{who}: cannot run {cmd[0]}: {e.strerror} (build opforge first: ./build.sh build, or pass --opforge)")
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        print(f"{who}: {' '.join(cmd)} failed (exit status {done.returncode})", file=sys.stderr)
        sys.exit(done.returncode if done.returncode > 0 else 1)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")], done.stderr
