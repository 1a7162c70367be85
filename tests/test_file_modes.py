"""Files written through the atomic temp-file + rename helper get ``0666 & ~umask``, not mkstemp's 0600.

Each case runs in a fresh interpreter started under the umask (the helper reads it once, at import), and
writes what the pipeline and the explorer write: raw bytes (results.json, predictions.csv, sweeps, the
session's JSON and TOML), an npz (models, session runs) and a file written by name (np.save, memmaps).
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_WRITER = r"""
import sys
from pathlib import Path
import numpy as np
from fvstudio.engine.serialization import atomic_path, atomic_save_npz, atomic_write_bytes
from fvstudio.pipeline import PipelineConfig
from fvstudio.gui.session import save_session
out = Path(sys.argv[1])
atomic_write_bytes(out / "results.json", b"{}")
atomic_save_npz(out / "model.npz", {"a": np.zeros(3)})
with atomic_path(out / "fvs.npy") as tmp:
    np.save(tmp, np.ones(4))
save_session(out / "ws", PipelineConfig(), [])
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask022", "umask077", "umask002"])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path)], check=True, env=env, cwd=REPO,
                   preexec_fn=lambda: os.umask(umask), timeout=120)
    files = [tmp_path / n for n in ("results.json", "model.npz", "fvs.npy")]
    files += [tmp_path / "ws" / "session" / n for n in ("config.toml", "session.json")]
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {p.name: oct(mode) for p in files}
