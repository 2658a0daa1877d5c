"""One-line error reasons: what a skipped batch item or a failed CLI call prints."""
import pytest

from depthlab.errors import DataError, first_line, one_line


@pytest.mark.parametrize("exc, first, one", [
    (ValueError("bad header\n  at offset 12\n"), "bad header", "ValueError: bad header"),
    (OSError("\n\n  truncated file  \nmore"), "truncated file", "OSError: truncated file"),
    (KeyError(), "KeyError", "KeyError"),
    (DataError("a/b.png", "cannot decode image"), "a/b.png: cannot decode image",
     "DataError: a/b.png: cannot decode image"),
])
def test_first_line_and_one_line(exc, first, one):
    assert first_line(exc) == first
    assert one_line(exc) == one


def test_first_line_default_for_empty_message():
    assert first_line(RuntimeError(""), default="corrupt") == "corrupt"
    assert first_line(RuntimeError("x"), default="corrupt") == "x"
