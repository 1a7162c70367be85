"""PipelineConfig.from_toml: every problem with the file itself names the file (issue #13)."""
import pytest

from fvstudio.pipeline.config import ConfigError, PipelineConfig

TEXT = '[gmm]\nn_components = 16\n\n[pca]\nn_components = 32\n'


def test_utf8_bom_is_accepted(tmp_path):
    plain = tmp_path / "plain.toml"
    plain.write_text(TEXT, encoding="utf-8")
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + TEXT.encode("utf-8"))  # Notepad & co. write this
    a, b = PipelineConfig.from_toml(plain), PipelineConfig.from_toml(bom)
    assert a == b and b.get("gmm.n_components") == 16


@pytest.mark.parametrize("case", ["latin1", "utf16", "directory", "missing", "not_toml"])
def test_bad_config_files_are_named(tmp_path, case):
    p = tmp_path / f"{case}.toml"
    if case == "latin1":
        p.write_bytes(b"# caf\xe9\n" + TEXT.encode())
        want = r"latin1\.toml:1: config file is not valid UTF-8"
    elif case == "utf16":
        p.write_bytes(TEXT.encode("utf-16"))
        want = r"utf16\.toml is UTF-16"
    elif case == "directory":
        p.mkdir()
        want = r"directory\.toml is a directory"
    elif case == "missing":
        want = r"missing\.toml does not exist"
    else:
        p.write_text("[gmm\nn_components = 16\n")
        want = r"not_toml\.toml: not valid TOML"
    with pytest.raises(ConfigError, match=want):
        PipelineConfig.from_toml(p)
