"""pcpd's package: what importing it sets up for every process."""

import os
import subprocess
import sys

import pytest

# the thread settings OpenBLAS reads, any of which would hide what pcpd sets
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
THREADS = "import os, numpy; print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))"


def _run(code: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in BLAS_THREADS}


def test_numpy_under_pcpd_starts_no_blas_threads():
    env = _clean_env()
    if _run(THREADS, env)[1] == "1":
        pytest.skip("numpy starts no threads of its own here (one CPU, or no OpenBLAS)")
    assert _run("import pcpd; " + THREADS, env) == ["1", "1"]      # the process's one thread


def test_a_users_blas_threads_stand():
    assert _run("import pcpd; " + THREADS, {**_clean_env(), "OPENBLAS_NUM_THREADS": "3"})[0] == "3"
