"""WordNet gloss reader: parsing wndb(5) lines, and the real files when Debian's wordnet-base is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlscience.data.text import load_wordnet_glosses
from dlscience.errors import DatasetNotFoundError

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


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="wordnet-base not installed")
def test_real_wordnet_has_every_synset():
    ids, glosses = load_wordnet_glosses()
    assert len(ids) == len(set(ids)) == 117659  # WordNet 3.0: 82,115 + 13,767 + 18,156 + 3,621 synsets
    assert all(glosses)
