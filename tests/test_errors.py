"""One-line error reasons: what a skipped batch item or a failed CLI call prints."""
import pytest

from depthlab.errors import DataError, first_line, one_line


@pytest.mark.parametrize("exc, first, one", [
    (ValueError("bad header\n  at offset 12\n"), "bad header", "ValueError: bad header"),
    (OSError("\n\n  truncated file  \nmore"), "truncated file", "OSError: truncated file"),
    (KeyError(), "KeyError", "KeyError"),
    (DataError("a/b.png", "cannot decode image"), "a/b.png: cannot decode image",
     "DataError: a/b.png: cannot decode image"),
    # torch.onnx colours its messages for a terminal; a one-line reason carries no escape codes
    (RuntimeError("\x1b[96mThis is step 1/3\x1b[0m of exporting"), "This is step 1/3 of exporting",
     "RuntimeError: This is step 1/3 of exporting"),
])
def test_first_line_and_one_line(exc, first, one):
    assert first_line(exc) == first
    assert one_line(exc) == one


def test_first_line_default_for_empty_message():
    assert first_line(RuntimeError(""), default="corrupt") == "corrupt"
    assert first_line(RuntimeError("x"), default="corrupt") == "x"


def test_did_you_mean_lists_close_matches_or_nothing():
    from depthlab.errors import did_you_mean

    assert did_you_mean("fastdeph", ["fastdepth", "unet", "fastdepth_nnconv"], n=1) == "; did you mean: fastdepth?"
    assert did_you_mean("silg", ["silog", "l1", "ssim"]) == "; did you mean: silog, ssim?"  # best first
    assert did_you_mean("zzz", ["silog", "l1"]) == ""


def test_unknown_name_message_and_types():
    from depthlab.errors import DepthlabError, UnknownNameError, unknown_name

    err = unknown_name("dataset", "nyuu", ["kitti", "nyu"])
    assert str(err) == "unknown dataset 'nyuu'; did you mean: nyu? (known: kitti, nyu)"
    assert isinstance(err, (DepthlabError, KeyError, ValueError)) and isinstance(err, UnknownNameError)
    assert str(unknown_name("model", "qq", ["unet"], listed=False, otherwise="; see `depthlab models`")) == \
        "unknown model 'qq'; see `depthlab models`"
    # aliases are matched, canonical names are listed
    assert str(unknown_name("transform", "rezise", ["resize", "Resize"], listed=["Resize"])) == \
        "unknown transform 'rezise'; did you mean: resize, Resize? (known: Resize)"


def test_unknown_names_from_every_registry_read_alike():
    import depthlab
    from depthlab.data.transforms import build_transforms
    from depthlab.viz.colorize import get_cmap

    for call, text in [(lambda: depthlab.create_model("fastdeph"), "unknown model 'fastdeph'; did you mean: fastdepth"),
                       (lambda: depthlab.create_dataset("kiti"), "unknown dataset 'kiti'; did you mean: kitti"),
                       (lambda: depthlab.get_protocol("nyu_eigne"), "unknown protocol 'nyu_eigne'; did you mean: nyu_eigen"),
                       (lambda: get_cmap("magmaa"), "unknown matplotlib colormap 'magmaa'; did you mean: magma"),
                       (lambda: build_transforms(["resise"]), "unknown transform 'resise'; did you mean:")]:
        with pytest.raises(depthlab.errors.DepthlabError) as e:
            call()
        assert str(e.value).startswith(text) and "\n" not in str(e.value)


def test_require_names_the_extra():
    from depthlab.errors import MissingExtraError, require

    assert require("json", "web", "the web app").dumps([1]) == "[1]"
    with pytest.raises(ImportError) as e:
        require("depthlab_no_such_module.sub", "geo", "GeoTIFF support")
    assert isinstance(e.value, MissingExtraError)
    assert str(e.value) == ("GeoTIFF support needs depthlab_no_such_module, which is not installed: "
                            "pip install 'depthlab[geo]'")


@pytest.mark.parametrize("raised, user_error", [
    (KeyError("state_dict"), False),          # a bug: traceback, never "error: ..."
    (RuntimeError("shape mismatch"), False),
    (ValueError("too many values to unpack"), False),
    ("unknown_name", True),                   # a user error: one line, exit status 2
    ("input_error", True),
])
def test_cli_prints_user_errors_on_one_line_and_keeps_bugs_tracebacks(monkeypatch, tmp_path, raised, user_error):
    from typer.testing import CliRunner

    import depthlab.export.model
    from depthlab.cli import app
    from depthlab.errors import InputError, unknown_name

    exc = {"unknown_name": lambda: unknown_name("model", "fastdeph", ["fastdepth"]),
           "input_error": lambda: InputError("height 100 must be a positive multiple of 32\n(more detail)")}
    err = exc[raised]() if isinstance(raised, str) else raised

    def export_model(*args, **kwargs):
        raise err

    monkeypatch.setattr(depthlab.export.model, "export_model", export_model)
    res = CliRunner().invoke(app, ["export", "--model", "fastdepth", "--out", str(tmp_path / "m.onnx")])
    if user_error:
        assert res.exit_code == 2
        assert res.output.strip() == f"error: {first_line(err)}"
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    else:
        assert res.exit_code == 1 and res.exception is err and "error:" not in res.output
        import traceback

        assert "export_model" in "".join(traceback.format_exception(*res.exc_info))


def test_cli_bug_traceback_reaches_the_terminal(tmp_path):
    """Through the real entry point: a bug inside a command prints Python's traceback (exit status 1)."""
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    code = ("import sys, depthlab.export.model as m\n"
            "def bug(*a, **k): raise KeyError('state_dict')\n"
            "m.export_model = bug\n"
            "from depthlab.cli import main\n"
            "sys.argv = ['depthlab', 'export', '--model', 'fastdepth', '--out', 'x.onnx']\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": src, "PATH": "", "TERM": "dumb", "_TYPER_STANDARD_TRACEBACK": "1"},
                       timeout=60)
    assert r.returncode == 1 and "Traceback" in r.stderr and "KeyError: 'state_dict'" in r.stderr
    assert "error:" not in r.stderr


def test_create_dataset_reports_the_users_root_and_options_as_user_errors(tmp_path):
    from depthlab.data import create_dataset
    from depthlab.errors import DepthlabError

    with pytest.raises(FileNotFoundError) as e:
        create_dataset("folder", root=tmp_path / "nope")
    assert isinstance(e.value, DepthlabError) and str(e.value) == f"{tmp_path / 'nope'}: dataset folder not found"
    with pytest.raises(TypeError) as e:
        create_dataset("folder", root=tmp_path, typo=1)
    assert isinstance(e.value, DepthlabError)
    assert str(e.value).startswith("data.kwargs: dataset 'folder' has no option 'typo' (its options: depth_scale")
    with pytest.raises(ValueError) as e:
        create_dataset("synthetic", split="nope")
    assert isinstance(e.value, DepthlabError) and str(e.value).startswith("unknown synthetic split 'nope'; choose")


def test_create_dataset_leaves_a_readers_bug_its_own_exception(monkeypatch):
    """Only the readers' own checks are user errors: a plain ValueError / FileNotFoundError from inside a reader
    (a bug, or a library's) is not turned into a DepthlabError."""
    import depthlab.data as data
    from depthlab.errors import DepthlabError

    for exc in (ValueError("a bug"), FileNotFoundError("/tmp/x: internal")):
        def broken(root=None, split="test", transform=None, exc=exc):
            raise exc

        monkeypatch.setattr(data, "resolve_dataset", lambda name: broken)
        with pytest.raises(type(exc)) as e:
            data.create_dataset("anything")
        assert e.value is exc and not isinstance(e.value, DepthlabError)
