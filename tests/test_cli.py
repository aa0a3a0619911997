"""The jax-gmm command line on the bundled image: outputs, metrics and one-line errors."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jax_gmm
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
    # keep 0.1 as in the test below: the same shapes, compiled once
    assert cli.main(["reconstruct", "--keep", "0.1", "--seed", "1", "-o", str(out)]) == 0
    assert 20 < _psnr(capsys.readouterr().out) < 45
    assert np.asarray(Image.open(out)).shape == (256, 256, 3)


def test_more_pixels_reconstruct_better(capsys):
    scores = []
    for keep in ("0.02", "0.5"):
        assert cli.main(["reconstruct", "--keep", keep, "--plain"]) == 0
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
    assert cli.main(["reconstruct", "--keep", "1", "--plain"]) == 0
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


def _read_back(path):
    return np.asarray(Image.open(path))


def test_16_bit_grey_is_read_at_full_range(tmp_path, capsys):
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))
    source, out = tmp_path / "ramp16.png", tmp_path / "out.png"
    Image.fromarray(ramp).save(source)
    assert Image.open(source).mode.startswith("I")
    assert cli.main(["enlarge", str(source), "--factor", "2", "-o", str(out)]) == 0
    assert "16-bit grey" in capsys.readouterr().out
    enlarged = _read_back(out)
    assert enlarged.shape == (60, 80)  # one channel
    # Clipping 0-65535 to 0-255 would make nearly every pixel white.
    assert enlarged[:, :10].mean() < 40 and enlarged[:, -10:].mean() > 215
    assert np.all(np.diff(enlarged[30].astype(int)[4:-4]) >= 0)


def test_palette_image_is_read_as_its_colours(tmp_path, capsys):
    colours = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    pixels = colours[np.indices((20, 24)).sum(0) // 6 % 2]
    source = tmp_path / "palette.png"
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(source)
    assert Image.open(source).mode == "P"
    out = tmp_path / "out.png"
    assert cli.main(["upsample", str(source), "--factor", "2", "-o", str(out)]) == 0
    assert "8-bit RGB, from a palette" in capsys.readouterr().out
    result = _read_back(out)
    assert result.shape == (20, 24, 3) and result[..., 1].max() < 30  # no green in a red/blue image


def test_greyscale_stays_one_channel(tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))).save(grey)
    out = tmp_path / "out.png"
    assert cli.main(["reconstruct", str(grey), "--keep", "0.5", "-o", str(out)]) == 0
    assert "8-bit grey" in capsys.readouterr().out
    assert _read_back(out).shape == (30, 50)


def test_alpha_is_kept_as_a_channel(tmp_path, capsys):
    pixels = np.zeros((16, 20, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[:, 10:, 3] = 255  # left half transparent
    source, out = tmp_path / "rgba.png", tmp_path / "out.png"
    Image.fromarray(pixels).save(source)
    assert cli.main(["enlarge", str(source), "--factor", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RGB + alpha" in printed and "alpha is kept as a channel" in printed
    result = _read_back(out)
    assert result.shape == (32, 40, 4)
    assert result[:, :15, 3].max() < 20 and result[:, 25:, 3].min() > 235


def test_float_grey_tiff_is_read_as_it_is(tmp_path, capsys):
    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (20, 1))
    source, out = tmp_path / "ramp.tif", tmp_path / "out.png"
    Image.fromarray(ramp, mode="F").save(source)
    assert cli.main(["enlarge", str(source), "--factor", "2", "-o", str(out)]) == 0
    assert "32-bit float grey" in capsys.readouterr().out
    result = _read_back(out).astype(float)  # before: all black, and RGB
    assert result.shape == (40, 80)
    np.testing.assert_allclose(result.reshape(20, 2, 40, 2).mean((1, 3)), ramp * 255, atol=2)


@pytest.mark.parametrize("argv, message", [
    (["reconstruct", "-o", "out.psd"], "Pillow cannot write PSD files"),
    (["reconstruct", "rgba.png", "-o", "out.jpg"], "JPEG cannot hold RGB + alpha images"),
    (["enlarge", "grey_alpha.png", "--factor", "2", "-o", "out.jpg"],
     "JPEG cannot hold grey + alpha images"),
    (["upsample", "--compare", "strip.psd"], "Pillow cannot write PSD files"),
    (["fit", "rgba.png", "-n", "5", "-o", "g.npz", "--render", "out.jpg"],
     "JPEG cannot hold RGB + alpha images"),
])
def test_unwritable_image_formats_are_rejected_before_any_work(argv, message, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(np.zeros((8, 8, 2), np.uint8), mode="LA").save(tmp_path / "grey_alpha.png")
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey_alpha.png", "rgba.png"]


def test_enlarge_by_an_integer_notes_uncovered_pixels(tmp_path, capsys):
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(np.full((6, 8, 3), 120, np.uint8)).save(source)
    argv = ["enlarge", str(source), "--factor", "4", "-o", str(out), "--truncate", "0.1"]
    assert cli.main(argv) == 0
    assert "pixels are beyond 0.1 sigma of every sample and are black" in capsys.readouterr().out
    assert cli.main(argv[:-2]) == 0  # the default truncate reaches every pixel
    assert "note:" not in capsys.readouterr().out


def test_enlarge_by_a_fraction(tmp_path, capsys):
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(np.full((10, 16, 3), 120, np.uint8)).save(source)
    assert cli.main(["enlarge", str(source), "--factor", "2.5", "-o", str(out)]) == 0
    assert "16x10 -> 40x25" in capsys.readouterr().out
    np.testing.assert_allclose(_read_back(out), 120, atol=1)


def test_truncate_option_is_used(capsys):
    assert cli.main(["reconstruct", "--keep", "0.02", "--plain", "--sigma", "1",
                     "--truncate", "1"]) == 0
    assert "beyond 1 sigma" in capsys.readouterr().out


def test_reconstruct_beats_the_plain_mean_and_sigma_needs_plain(capsys):
    scores = []
    for extra in ([], ["--plain"]):
        assert cli.main(["reconstruct", "--keep", "0.1"] + extra) == 0
        printed = capsys.readouterr().out
        assert ("plain mean" in printed) == bool(extra)
        scores.append(_psnr(printed))
    assert scores[0] > scores[1] + 0.5  # measured 27.22 against 26.36 dB
    assert cli.main(["reconstruct", "--sigma", "2"]) == 2
    assert "add --plain" in capsys.readouterr().err


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jax-gmm {jax_gmm.__version__}"


@pytest.mark.parametrize("argv, message", [
    (["reconstruct", "--seed", "-5"], "--seed: must be an integer >= 0"),
    (["reconstruct", "--seed", "x"], "--seed: must be an integer >= 0"),
    (["reconstruct", "--truncate", "0"], "--truncate: must be a positive number"),
    (["upsample", "--truncate", "inf"], "--truncate: must be a positive number"),
    (["enlarge", "in.png", "--factor", "1", "-o", "x.png"], "--factor: must be a number > 1"),
    (["enlarge", "in.png", "--factor", "nan", "-o", "x.png"], "--factor: must be a number > 1"),
    (["enlarge", "in.png", "--factor", "2"], "required: -o/--output"),
    (["enlarge", "--factor", "2", "-o", "x.png"], "required: image"),
    (["enlarge", "in.png", "--factor", "1e6", "-o", "x.png"], "more than"),
    (["reconstruct", "-o", "{tmp}"], "is a directory"),
    (["upsample", "--compare", "{tmp}"], "is a directory"),
    (["enlarge", "in.png", "--factor", "2", "-o", "{tmp}"], "is a directory"),
    (["reconstruct", "-o", "{tmp}/missing/out.png"], "no folder"),
])
def test_each_bad_argument_is_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err
    assert "Traceback" not in captured.err
    assert not any(tmp_path.glob("x.png"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_is_rejected_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert cli.main(["reconstruct", "-o", str(locked / "out.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "permission denied" in captured.err


def test_enlarge_by_an_integer_is_consistent(tmp_path, capsys):
    """Box-downsampling the enlarged image gives the input back (up to the
    8-bit rounding of the written file and the remaining back-projection error)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:24, :32]
    pixels = (127.5 + 100 * np.sin(x / 5.0)[..., None] * np.cos(y / 7.0)[..., None]
              + rng.uniform(-10, 10, (24, 32, 3))).astype(np.uint8)
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(pixels).save(source)
    assert cli.main(["enlarge", str(source), "--factor", "3", "-o", str(out)]) == 0
    assert "consistent" in capsys.readouterr().out
    enlarged = _read_back(out).astype(float)
    assert enlarged.shape == (72, 96, 3)
    back = enlarged.reshape(24, 3, 32, 3, 3).mean((1, 3))
    assert np.abs(back - pixels).mean() < 1.5


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 24 x 32 RGB image, the Gaussians `fit` saved for it and the rendering it wrote."""
    folder = tmp_path_factory.mktemp("fit")
    y, x = np.mgrid[:24, :32]
    pixels = np.stack([x * 8, y * 10, np.where((x - 20) ** 2 + (y - 12) ** 2 < 36, 220, 30)], -1)
    source, gaussians, render = folder / "in.png", folder / "g.npz", folder / "fit.png"
    Image.fromarray(pixels.astype(np.uint8)).save(source)
    argv = ["fit", str(source), "-n", "80", "--steps", "200", "-o", str(gaussians),
            "--render", str(render)]
    return folder, cli.main(argv), gaussians, render


def test_fit_writes_the_documented_npz_and_a_rendering(fitted, capsys):
    folder, status, gaussians, render = fitted
    assert status == 0
    with np.load(gaussians) as saved:
        assert str(saved["format"]) == "jax_gmm.gaussians" and int(saved["version"]) == 1
        assert saved["points"].shape == (80, 2) and saved["values"].shape == (80, 3)
        assert saved["sigma"].shape == (80, 2, 2) and saved["points"].dtype == np.float32
        assert tuple(saved["shape"]) == (24, 32) and float(saved["truncate"]) == 4.0
    original = np.asarray(Image.open(folder / "in.png"), np.float64)
    assert 10 * np.log10(255**2 / np.mean((_read_back(render) - original) ** 2)) > 30


def test_render_at_the_fitted_size_repeats_the_fit(fitted, tmp_path, capsys):
    _, _, gaussians, render = fitted
    out = tmp_path / "same.png"
    assert cli.main(["render", str(gaussians), "-o", str(out)]) == 0
    assert "fitted at 32x24 -> 32x24" in capsys.readouterr().out
    np.testing.assert_array_equal(_read_back(out), _read_back(render))


@pytest.mark.parametrize("option, shape", [(["--scale", "2"], (48, 64, 3)),
                                           (["--size", "48x80"], (48, 80, 3))])
def test_render_at_another_size(fitted, tmp_path, option, shape):
    _, _, gaussians, render = fitted
    out = tmp_path / "out.png"
    assert cli.main(["render", str(gaussians), "-o", str(out), *option]) == 0
    result = _read_back(out)
    assert result.shape == shape
    # Resized back to 24 x 32, it is the rendering at the fitted size.
    back = np.asarray(Image.fromarray(result).resize((32, 24), Image.BOX), float)
    assert np.abs(back - _read_back(render)).mean() < 3


def test_scaled_gaussians_stretch_positions_and_covariances():
    points = np.array([[1.0, 2.0]], np.float32)
    sigma = np.array([[[4.0, 1.0], [1.0, 9.0]]], np.float32)
    scaled_points, scaled_sigma = cli.scaled_gaussians(points, sigma, 2.0, 3.0)
    np.testing.assert_allclose(scaled_points, [[2.0, 6.0]])
    np.testing.assert_allclose(scaled_sigma, [[[16.0, 6.0], [6.0, 81.0]]])
    # Round widths stay round under an even scale and become per-axis otherwise.
    np.testing.assert_allclose(cli.scaled_gaussians(points, np.array([2.0]), 3.0, 3.0)[1], [6.0])
    np.testing.assert_allclose(cli.scaled_gaussians(points, np.array([2.0]), 2.0, 3.0)[1],
                               [[4.0, 6.0]])


def test_isotropic_fit_renders_stretched(tmp_path, capsys):
    source, gaussians, out = tmp_path / "in.png", tmp_path / "g.npz", tmp_path / "out.png"
    Image.fromarray(np.tile(np.arange(0, 240, 10, dtype=np.uint8), (16, 1))).save(source)
    assert cli.main(["fit", str(source), "-n", "30", "--steps", "100", "--isotropic",
                     "-o", str(gaussians)]) == 0
    printed = capsys.readouterr().out
    assert "30 isotropic Gaussians" in printed and "(0.0781 per pixel, 120 numbers)" in printed
    assert _psnr(printed) > 30
    with np.load(gaussians) as saved:
        assert saved["sigma"].shape == (30,) and saved["values"].shape == (30, 1)
    assert cli.main(["render", str(gaussians), "-o", str(out), "--size", "32x24"]) == 0
    result = _read_back(out).astype(int)
    assert result.shape == (32, 24)
    assert np.all(np.diff(result[16, 3:-3]) >= -2)  # still a left-to-right ramp


@pytest.mark.parametrize("argv, status, message", [
    (["fit", "-n", "0", "-o", "g.npz"], 2, "-n: must be an integer >= 1"),
    (["fit", "-n", "x", "-o", "g.npz"], 2, "-n: must be an integer >= 1"),
    (["fit", "-o", "g.npz"], 2, "required: -n"),
    (["fit", "-n", "5"], 2, "required: -o/--output"),
    (["fit", "-n", "100000", "-o", "g.npz"], 2, "more than the 65536 pixels"),
    (["fit", "-n", "5", "-o", "g.png"], 2, "must end in .npz"),
    (["fit", "-n", "5", "-o", "g.npz", "--steps", "-1"], 2, "--steps: must be an integer >= 0"),
    (["fit", "-n", "5", "-o", "g.npz", "--render", "fit.unknown"], 2, "unknown image file extension"),
    (["fit", "-n", "5", "-o", "{tmp}/missing/g.npz"], 2, "no folder"),
    (["render", "missing.npz", "-o", "out.png"], 1, "cannot read Gaussians"),
    (["render", "other.npz", "-o", "out.png"], 1, "not a jax_gmm.gaussians file"),
    (["render", "future.npz", "-o", "out.png"], 1, "format version 2, this jax-gmm reads 1"),
    (["render", "picture.png", "-o", "out.png"], 1, "'picture.png': not a .npz file"),
    (["render", "five.npz", "-o", "out.png"], 1, "values (1, 5) (1 to 4 channels)"),
    (["render", "other.npz", "-o", "out.png", "--scale", "2", "--size", "4x4"], 2,
     "not allowed with argument"),
    (["render", "other.npz", "-o", "out.png", "--size", "0x4"], 2, "--size: must be HEIGHTxWIDTH"),
    (["render", "other.npz", "-o", "out.png", "--size", "4by4"], 2, "--size: must be HEIGHTxWIDTH"),
    (["render", "other.npz", "-o", "out.png", "--scale", "0"], 2, "--scale: must be a positive"),
])
def test_fit_and_render_bad_arguments(argv, status, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "other.npz", points=np.zeros((1, 2)))
    np.savez(tmp_path / "future.npz", format="jax_gmm.gaussians", version=2)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "picture.png")
    np.savez(tmp_path / "five.npz", format="jax_gmm.gaussians", version=1, points=np.ones((1, 2)),
             values=np.ones((1, 5)), sigma=np.ones(1), shape=np.array([4, 4]), truncate=3.0)
    assert cli.main([a.format(tmp=tmp_path) for a in argv]) == status
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert not any(tmp_path.glob("g.npz")) and not any(tmp_path.glob("out.png"))
