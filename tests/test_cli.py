"""The jax-gmm command line on the bundled image: outputs, metrics and one-line errors."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jax_gmm import cli


def _psnr(stdout: str) -> float:
    match = re.search(r"PSNR (\d+\.\d+) dB, L1 (\d+\.\d+) / 255", stdout)
    assert match, stdout
    return float(match.group(1))


def test_upsample_bundled_image_writes_outputs(tmp_path, capsys):
    out, strip = tmp_path / "out.png", tmp_path / "strip.png"
    status = cli.main(["upsample", "--factor", "4", "-o", str(out), "--compare", str(strip)])
    assert status == 0
    printed = capsys.readouterr().out
    assert 20 < _psnr(printed) < 40
    assert "ms per render" in printed
    assert Image.open(out).size == (256, 256)
    assert Image.open(strip).size[0] > 3 * 256


def test_reconstruct_bundled_image(tmp_path, capsys):
    out = tmp_path / "out.png"
    assert cli.main(["reconstruct", "--keep", "0.25", "--seed", "1", "-o", str(out)]) == 0
    assert 20 < _psnr(capsys.readouterr().out) < 45
    assert np.asarray(Image.open(out)).shape == (256, 256, 3)


def test_more_pixels_reconstruct_better(capsys):
    scores = []
    for keep in ("0.02", "0.5"):
        assert cli.main(["reconstruct", "--keep", keep]) == 0
        scores.append(_psnr(capsys.readouterr().out))
    assert scores[0] < scores[1]


def test_image_argument_and_explicit_sigma(tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))).save(grey)
    assert cli.main(["upsample", str(grey), "--factor", "3", "--sigma", "1.5"]) == 0
    printed = capsys.readouterr().out
    assert "48x30 -> 48x30" not in printed and "16x10 -> 48x30" in printed
    assert _psnr(printed) > 30


@pytest.mark.parametrize("argv, status", [
    (["upsample", "--factor", "1"], 2),
    (["upsample", "--factor", "2.5"], 2),
    (["upsample", "--factor", "abc"], 2),
    (["upsample", "--factor", "200"], 2),
    (["reconstruct", "--keep", "0"], 2),
    (["reconstruct", "--keep", "1.5"], 2),
    (["reconstruct", "--keep", "-0.1"], 2),
    (["reconstruct", "--keep", "nan"], 2),
    (["reconstruct", "--sigma", "0"], 2),
    (["reconstruct", "-o", "out.unknown-extension"], 2),
    (["frobnicate"], 2),
    ([], 2),
])
def test_bad_arguments_give_one_line_and_status(argv, status, capsys):
    assert cli.main(argv) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("jax-gmm: error: ")


def test_unreadable_files_give_one_line_and_status_1(tmp_path, capsys):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    for path in (tmp_path / "missing.png", not_an_image, tmp_path):
        assert cli.main(["reconstruct", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot read image" in err


def test_keep_one_uses_every_pixel(capsys):
    assert cli.main(["reconstruct", "--keep", "1"]) == 0
    assert "from 65536 of 65536 pixels" in capsys.readouterr().out


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    assert "upsample" in capsys.readouterr().out


def test_python_dash_m_runs_without_traceback():
    result = subprocess.run([sys.executable, "-m", "jax_gmm", "upsample", "--factor", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--factor" in result.stderr
