"""Labels that come back into a campaign: import round trips, matching by stem, nothing half-written."""

from __future__ import annotations

import json
from dataclasses import asdict
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


def test_region_labels_keep_their_boxes_and_teach_nothing_outside(sim_data: Path, tmp_path: Path) -> None:
    """A region label: picks outside the box are dropped, the sidecar keeps the box, and the training mask built by
    the campaign's data stage ignores every pixel outside it (particles there were never looked at); the bottom
    strip of the region is held back, and validation scores exactly that strip."""
    from cryopick.config import PreprocessConfig
    from cryopick.distributed.data import StageParams, load_micrographs, load_val_items, validation_specs
    from cryopick.evaluation.metrics import in_strip
    from cryopick.preprocessing.labels import HELD, IGNORE
    from cryopick.selftrain.labels import label_boxes

    mic = sim_data / "micrographs" / "sim_0001.mrc"
    truth, _ = read_coords(sim_data / "coords" / "sim_0001.star")
    box = (0.0, 0.0, 128.0, 128.0)
    (label,) = import_labels(tmp_path / "camp", [sim_data / "coords" / "sim_0001.star"], [mic], boxes=[box])
    inside = (truth[:, 0] < 128) & (truth[:, 1] < 128)
    assert label.boxes == (box,) and label.n_picks == int(inside.sum()) > 0
    assert read_labels(tmp_path / "camp")["sim_0001"].boxes == (box,) and label_boxes(label.path) == (box,)
    params = StageParams(diameter=24.0, preprocess=asdict(PreprocessConfig(bin=2.0)), val_fraction=0.25, pseudo={})
    batch = {"path": np.array([str(mic)]), "kind": np.array(["labeled"]), "label": np.array([str(label.path)]),
             "n_patches": np.array([4]), "hold_back": np.array([True])}
    out = load_micrographs(batch, params=asdict(params))
    mask = out["mask"][0]
    assert (mask[64:, :] == IGNORE).all() and (mask[:, 64:] == IGNORE).all()  # outside the box, binned 2x
    assert (mask[:48, :64] == 1).sum() > 0 and (mask[:48, :64] == 0).sum() > 0  # inside: particles and background
    assert (mask[:48, :64] >= 0).all() and (mask[48:64, :64] == HELD).all()  # the region's bottom quarter: validation
    specs = validation_specs([], [mic], lambda m: label.path, 0.25, {"sim_0001": [box]})
    (item,) = load_val_items([asdict(s) for s in specs], params)
    assert (item.rows, item.cols) == ((48, 64), (0, 64))
    scored = in_strip(item.true_xy, item.rows, item.cols)
    in_strip_truth = inside & (truth[:, 1] >= 96)  # original px: rows 48-64 binned 2x
    assert scored.sum() == in_strip_truth.sum() > 0


def test_regions_add_up_and_a_region_saved_again_replaces_its_picks(tmp_path: Path) -> None:
    from cryopick.selftrain.labels import add_region, write_label

    camp, mic = tmp_path / "camp", tmp_path / "mic_1.mrc"
    a, b = (0.0, 0.0, 100.0, 100.0), (100.0, 0.0, 200.0, 100.0)
    add_region(camp, mic, np.array([[10.0, 10.0], [150.0, 50.0]]), a, "dashboard")  # the pick outside a is dropped
    lab = add_region(camp, mic, np.array([[150.0, 50.0], [160.0, 60.0]]), b, "dashboard")
    assert lab.boxes == (a, b) and lab.n_picks == 3
    lab = add_region(camp, mic, np.array([[20.0, 20.0]]), a, "dashboard")  # a corrected again: its picks replaced
    assert lab.boxes == (a, b)
    assert sorted(read_coords(lab.path)[0].tolist()) == [[20.0, 20.0], [150.0, 50.0], [160.0, 60.0]]
    write_label(camp, tmp_path / "mic_2.mrc", XY, "import")
    with pytest.raises(CryopickError, match="labeled whole already"):
        add_region(camp, tmp_path / "mic_2.mrc", XY, a, "dashboard")


def test_label_cli_imports_a_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    (camp / "campaign.json").write_text(json.dumps({"resolved": {"unlabeled": [str(tmp_path / "mic_1.mrc")]}}))
    src = write_coords(tmp_path / "mic_1.star", XY)
    assert main(["label", "import", "--campaign", str(camp), str(src), "--region", "0,0,200,200"]) == 0
    assert main(["label", "list", "--campaign", str(camp)]) == 0
    out = capsys.readouterr().out
    assert "mic_1\t2 picks\t0,0,200,200" in out and "1 labeled micrograph(s)" in out
    with pytest.raises(SystemExit):
        main(["label", "import", "--campaign", str(camp), str(src), "--region", "5,5,1,1"])
