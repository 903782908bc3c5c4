"""pcpd's package: what importing it sets up for every process."""

import os
import subprocess
import sys

THREADS = "import os, pcpd, numpy; print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))"


def _run(env: dict[str, str]) -> list[str]:
    return subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_numpy_under_pcpd_starts_no_blas_threads():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _run(env) == ["1", "1"]                 # the process's one thread


def test_a_users_blas_threads_stand():
    assert _run({**os.environ, "OPENBLAS_NUM_THREADS": "3"})[0] == "3"
