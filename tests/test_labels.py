"""Labels that come back into a campaign: import round trips, matching by stem, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryopick.cli.__main__ import main
from cryopick.errors import CryopickError
from cryopick.io.coords import read_coords, write_coords
from cryopick.selftrain.labels import import_labels, read_labels

XY = np.array([[10.5, 20.25], [100.0, 50.0], [300.0, 310.0]])


@pytest.mark.parametrize("fmt", ["star", "box", "csv", "txt"])
def test_import_round_trips_every_format(tmp_path: Path, fmt: str) -> None:
    mic = tmp_path / "mics" / "mic_007.mrc"
    src = write_coords(tmp_path / "picks" / f"mic_007.{fmt}", XY, fmt=fmt, box_size=64)
    (label,) = import_labels(tmp_path / "camp", [src], [mic])
    assert label.path == tmp_path / "camp" / "labels" / "mic_007.star" and label.n_picks == 3
    xy, _ = read_coords(label.path)
    np.testing.assert_allclose(xy, XY, atol=0.01)
    side = json.loads(label.path.with_suffix(".json").read_text())
    assert side["complete"] == "whole" and side["micrograph"] == str(mic) and side["source"] == f"import:{src}"
    assert set(read_labels(tmp_path / "camp")) == {"mic_007"}


def test_a_bad_file_writes_nothing_and_names_itself(tmp_path: Path) -> None:
    mics = [tmp_path / "a.mrc", tmp_path / "b.mrc"]
    good = write_coords(tmp_path / "picks" / "a.star", XY)
    stranger = write_coords(tmp_path / "picks" / "zzz.star", XY)
    with pytest.raises(CryopickError, match="no unlabeled micrograph of the campaign is named zzz") as err:
        import_labels(tmp_path / "camp", [good, stranger], mics)
    assert "zzz.star" in str(err.value)
    assert not (tmp_path / "camp" / "labels").exists()
    (tmp_path / "camp" / "labels").mkdir(parents=True)
    (tmp_path / "camp" / "labels" / "b.star").write_text("data_\n")
    with pytest.raises(CryopickError, match="sidecar"):
        read_labels(tmp_path / "camp")


def test_label_cli_needs_a_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["label", "import", "--campaign", str(tmp_path), str(tmp_path / "x.star")]) == 2
    assert "not a campaign directory" in capsys.readouterr().err
