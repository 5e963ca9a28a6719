"""WordNet gloss reader: parsing wndb(5) lines, and the real files when Debian's wordnet-base is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlscience.data.text import load_wordnet_glosses, wordnet_folder
from dlscience.errors import DatasetNotFoundError, InputValidationError, UserError

LINES = """  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00217499 04 n 01 disaster 0 001 @ 00217014 n 0000 | an act that has disastrous consequences{pad}
00217593 04 n 01 kill 1 002 @ 00217014 n 0000 + 00355365 v 0101 | the destruction of an enemy plane; "two kills"{pad}
""".format(pad="  ")  # real lines end in two spaces


def test_parses_gloss_after_the_bar(tmp_path):
    (tmp_path / "data.noun").write_text(LINES)
    (tmp_path / "data.verb").write_text("01234567 29 v 01 run 0 000 | move fast  \n")
    ids, glosses = load_wordnet_glosses(tmp_path, pos="nv")
    assert ids == ["n00217499", "n00217593", "v01234567"]
    assert glosses == [
        "an act that has disastrous consequences",
        'the destruction of an enemy plane; "two kills"',
        "move fast",
    ]


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr("dlscience.data.text.WORDNET_DIRS", ())
    with pytest.raises(DatasetNotFoundError, match="apt-get install wordnet-base"):
        load_wordnet_glosses(tmp_path / "nowhere")


def test_a_named_folder_is_the_only_one_tried(tmp_path, monkeypatch):
    """A folder that is given (or $WNSEARCHDIR) and lacks the files is an error naming it: the default folder
    is not used instead, even when it holds WordNet."""
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    with pytest.raises(
        DatasetNotFoundError, match=f"the WordNet folder {tmp_path / 'nowhere'} does not exist"
    ):
        load_wordnet_glosses(tmp_path / "nowhere")
    (tmp_path / "data.noun").write_text(LINES)
    with pytest.raises(DatasetNotFoundError, match=r"lacks WordNet's data.verb, data.adj, data.adv"):
        load_wordnet_glosses(tmp_path)
    assert load_wordnet_glosses(tmp_path, pos="n")[0] == ["n00217499", "n00217593"]
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError, match=r"\$WNSEARCHDIR .*env does not exist"):
        load_wordnet_glosses()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        wordnet_folder(tmp_path / "file")
    with pytest.raises(InputValidationError, match="pos must be letters among n, v, a, r"):
        load_wordnet_glosses(tmp_path, pos="nx")


def test_non_utf8_file_is_named(tmp_path):
    (tmp_path / "data.noun").write_bytes(LINES.encode() + b"00217600 04 n 01 caf\xe9 0 000 | a caf\xe9  \n")
    with pytest.raises(UserError, match=r"data.noun is not UTF-8 text \(byte 0xe9 at offset \d+\)") as info:
        load_wordnet_glosses(tmp_path, pos="n")
    assert str(tmp_path / "data.noun") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="wordnet-base not installed")
def test_real_wordnet_has_every_synset():
    ids, glosses = load_wordnet_glosses()
    assert len(ids) == len(set(ids)) == 117659  # WordNet 3.0: 82,115 + 13,767 + 18,156 + 3,621 synsets
    assert all(glosses)
