"""Tests for captioning.text.safe_pickle: pickles that would run code run nothing."""

import io
import pickle

import pytest

from captioning.errors import ConfigError, UnsafeFileError
from captioning.text import safe_load_pickle
from tests.text.helpers import assert_refused, payloads, touch_command


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess.Popen"])
def test_malicious_pickle_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(payloads(marker)[kind], protocol=4))
    message = assert_refused(path, marker)
    assert "refusing to load it" in message and kind.split(".")[-1] in message
    with pytest.raises(UnsafeFileError):
        safe_load_pickle(path)
    assert not marker.exists()


def test_protocol_0_global_names_os_system(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(b"cos\nsystem\n(V" + touch_command(marker).encode() + b"\ntR.")
    message = assert_refused(path, marker, names=["os.system"])
    assert message.startswith(f"{path} names os.system; refusing to load it")


def test_safe_load_pickle_allowed_and_file_objects(tmp_path):
    data = pickle.dumps({"a": [1, 2.5, None, True]}, protocol=4)
    assert safe_load_pickle(io.BytesIO(data)) == {"a": [1, 2.5, None, True]}
    pickled_od = pickle.dumps(__import__("collections").OrderedDict(a=1), protocol=4)
    with pytest.raises(UnsafeFileError, match="collections.OrderedDict"):
        safe_load_pickle(io.BytesIO(pickled_od))
    assert safe_load_pickle(io.BytesIO(pickled_od), allowed={"collections.OrderedDict": dict}) == {
        "a": 1
    }
    with pytest.raises(ConfigError, match="allowed"):
        safe_load_pickle(io.BytesIO(data), allowed=["collections.OrderedDict"])


def test_unreadable_sources_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        safe_load_pickle(tmp_path / "missing.pickle")
    with pytest.raises(ConfigError, match="is a directory"):
        safe_load_pickle(tmp_path)
    with pytest.raises(ConfigError, match="mode 'rb'"):
        safe_load_pickle(io.StringIO("text"))
    with pytest.raises(ConfigError, match="path or a binary file object"):
        safe_load_pickle(42)
